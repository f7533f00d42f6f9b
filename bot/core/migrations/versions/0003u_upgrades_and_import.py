"""upgrades and grant import: access_request.upgrade_grant_id, grant.note

An approved upgrade request changes an existing grant instead of creating one; the request
remembers which (upgrade_grant_id). Imported grants keep the note of the platform's old records.
Both columns are nullable: nothing is rewritten.

Revision ID: 0003u
Revises: 0002
Create Date: 2026-12-06 08:15:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003u'
down_revision = '0003f'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("access_request", sa.Column("upgrade_grant_id", sa.Integer(), nullable=True))
    op.create_index("ix_access_request_upgrade_grant_id", "access_request", ["upgrade_grant_id"])
    op.add_column("grant", sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grant") as batch:
        batch.drop_column("note")
    op.drop_index("ix_access_request_upgrade_grant_id", table_name="access_request")
    with op.batch_alter_table("access_request") as batch:
        batch.drop_column("upgrade_grant_id")
