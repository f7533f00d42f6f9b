"""policy_login: logins named in the policy, with the numeric id they were first resolved to

Revision ID: 0003i
Revises: 0002
Create Date: 2026-12-06 08:10:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003i'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('policy_login',
    sa.Column('login', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('resolved_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('login')
    )


def downgrade() -> None:
    op.drop_table('policy_login')
