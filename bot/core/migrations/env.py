"""Alembic environment: runs on the connection bot.ops.migrate hands over; run by the `alembic`
command (alembic.ini at the top), it connects to BEEKEEPER_DATABASE_URL itself."""

from alembic import context
from sqlmodel import SQLModel

import bot.core.models  # noqa: F401 - registers every table on SQLModel.metadata

target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # the `alembic` command line: the bot's own database setting
        from bot.core.config import load_settings
        from bot.core.db import get_engine

        with get_engine(load_settings().database_url).begin() as connection:
            _run(connection)
        return
    _run(connection)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch ALTERs
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():  # pragma: no cover - we always migrate a live database
    raise SystemExit("offline migrations are not supported; run `beekeeper db upgrade`")
run_migrations_online()
