"""one delivery per GUID, replayed bodies refused, the app's webhook id

GitHub's delivery GUIDs are unique across GitHub, so the inbox keys on the GUID alone (it keyed
on (hook id, GUID), which stored the same delivery again under another `X-GitHub-Hook-ID`).
Rows stored twice that way are the same delivery: the first one is kept, later copies are
removed. `payload_sha256` holds the SHA-256 of the raw signed body, unique, so an old body
resent under a new GUID is not stored again; it is filled for the first row of each body
already stored. `app_webhook` remembers the app's hook id (learned from its signed ping).

Revision ID: 0003d
Revises: 0002
Create Date: 2026-12-06 08:30:00
"""
import hashlib

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003d'
down_revision = '0003s'
branch_labels = None
depends_on = None


def _hash_sql(bind) -> str:
    if bind.dialect.name == "postgresql":
        return "encode(sha256(convert_to(payload, 'UTF8')), 'hex')"
    bind.connection.driver_connection.create_function(
        "beekeeper_sha256", 1, lambda text: hashlib.sha256(text.encode("utf-8")).hexdigest(), deterministic=True)
    return "beekeeper_sha256(payload)"


def upgrade() -> None:
    bind = op.get_bind()
    op.execute("DELETE FROM delivery WHERE id NOT IN (SELECT min(id) FROM delivery GROUP BY delivery_id)")
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payload_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.drop_constraint('uq_delivery_hook_delivery', type_='unique')
        batch_op.create_unique_constraint('uq_delivery_delivery_id', ['delivery_id'])
        batch_op.create_unique_constraint('uq_delivery_payload_sha256', ['payload_sha256'])
    digest = _hash_sql(bind)
    op.execute(f"UPDATE delivery SET payload_sha256 = {digest} "  # noqa: S608 - constant SQL
               f"WHERE id IN (SELECT min(id) FROM delivery GROUP BY {digest})")
    op.create_table('app_webhook',
    sa.Column('app_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hook_id', sa.BigInteger(), nullable=False),
    sa.Column('recorded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('app_id')
    )


def downgrade() -> None:
    op.drop_table('app_webhook')
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_constraint('uq_delivery_payload_sha256', type_='unique')
        batch_op.drop_constraint('uq_delivery_delivery_id', type_='unique')
        batch_op.create_unique_constraint('uq_delivery_hook_delivery', ['hook_id', 'delivery_id'])
        batch_op.drop_column('payload_sha256')
