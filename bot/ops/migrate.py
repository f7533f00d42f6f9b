"""Schema migrations with Alembic, driven from code so the CLI and `serve` share one path."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).parent.parent / "core" / "migrations"


def alembic_config(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")  # alembic's non-legacy path splitting
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def next_revision_id() -> str:
    """The next numbered revision id ("0004" after "0003..."): ids stay in order in the folder."""
    head = head_revision() or "0000"
    digits = "".join(ch for ch in head if ch.isdigit())[:4] or "0"
    return f"{int(digits) + 1:04d}"


def revision(engine: Engine, message: str, *, autogenerate: bool = True, version_path: str | None = None) -> str:
    """Write a new migration file comparing the models with the database (which must be at head);
    returns its path. `beekeeper db revision -m` and `alembic revision --autogenerate` alike."""
    with engine.begin() as connection:
        config = alembic_config(connection)
        config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
        if version_path:
            locations = os.pathsep.join([str(MIGRATIONS_DIR / "versions"), version_path])
            config.set_main_option("version_locations", locations)
        script = command.revision(config, message=message, autogenerate=autogenerate, rev_id=next_revision_id(),
                                  version_path=version_path)
    scripts = script if isinstance(script, list) else [script]
    return str(scripts[0].path)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to `revision` (SQLite and PostgreSQL alike). When a
    migration ran on a database holding data, the planner statistics are refreshed after it
    (a migration may rewrite or fill whole tables)."""
    from bot.core.db import refresh_statistics

    before = current_revision(engine)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)
    if before is not None and current_revision(engine) != before:
        refresh_statistics(engine)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def pending(engine: Engine) -> bool:
    return current_revision(engine) != head_revision()


def drift(engine: Engine) -> list:
    """Differences between the migrated schema and the models (empty when they agree)."""
    from sqlmodel import SQLModel

    import bot.core.models  # noqa: F401

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)
