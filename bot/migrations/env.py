"""Alembic environment: runs on the connection bot.migrate hands over (no alembic.ini needed)."""

from alembic import context
from sqlmodel import SQLModel

import bot.models  # noqa: F401 - registers every table on SQLModel.metadata

target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
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
