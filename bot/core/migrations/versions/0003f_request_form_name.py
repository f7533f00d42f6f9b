"""the request form an access request was filed with

Revision ID: 0003f
Revises: 0002
Create Date: 2026-12-06 08:10:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003f'
down_revision = '0003g'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_request') as batch:
        batch.add_column(sa.Column('form_name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('access_request') as batch:
        batch.drop_column('form_name')
