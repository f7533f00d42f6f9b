"""delivery payloads compressed with lz4 on PostgreSQL

PostgreSQL compresses a text value over ~2 KB when it stores it (TOAST), with pglz by
default. A webhook payload is ~10 KB, so every delivery the intake stores is compressed on the
server; pglz cost ~0.37 ms of server CPU per delivery here, lz4 ~0.19 ms for the same size on
disk. Only new values use it (nothing is rewritten). SQLite does not compress: no change.
A dump of such a database restores onto a server without lz4 with
`pg_restore --no-toast-compression`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 22:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def _lz4_available(bind) -> bool:
    """PostgreSQL 14+ built with lz4 lists it among default_toast_compression's values."""
    return bool(bind.execute(sa.text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")).scalar())


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and _lz4_available(bind):
        # The ALTER needs a brief exclusive lock on delivery; rather than queue behind a long
        # transaction (and make the intake queue behind it), give up and let it be re-run.
        op.execute("SET LOCAL lock_timeout = '10s'")
        op.execute("ALTER TABLE delivery ALTER COLUMN payload SET COMPRESSION lz4")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and _lz4_available(bind):
        op.execute("ALTER TABLE delivery ALTER COLUMN payload SET COMPRESSION DEFAULT")
