"""allowlist epoch: an id in the counter row, sent in every document

A gateway refuses a document whose version is lower than the highest it has seen (a rollback).
After a database restore the version really does go down; the operator then starts a new epoch
(`beekeeper allowlist new-epoch`) and gateways accept the lower version in the newer epoch, from
a document signed by a key they trust. An epoch is `<start seconds>.<random hex>`, ordered by its
start; a database that never started one has none (NULL), the oldest epoch of all. (Left NULL
here so a freshly migrated database stays "empty" for `beekeeper db copy`.)

Revision ID: 0003g
Revises: 0002
Create Date: 2026-12-06 08:10:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003g'
down_revision = '0003i'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('allowlist_counter', schema=None) as batch_op:
        batch_op.add_column(sa.Column('epoch', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('allowlist_counter', schema=None) as batch_op:
        batch_op.drop_column('epoch')
