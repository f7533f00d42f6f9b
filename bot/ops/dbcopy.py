"""`beekeeper db copy`: move every table to a new database (growing out of SQLite).

The target is migrated to the current schema first and must hold no data (the one seeded
allowlist counter row aside). Rows are copied table by table in foreign-key order, all in ONE
target transaction, read from one consistent snapshot of the source. Before committing, each
table's row count and a SHA-256 over its rows (in primary-key order, values in a canonical form)
are computed on both sides; any difference rolls the whole copy back. PostgreSQL sequences are
then set past the highest copied id so new rows do not collide.

Stop the web and worker processes first: rows written after the snapshot would not be copied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import Table, func, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from bot.core.config import normalize_database_url
from bot.core.db import is_sqlite, make_engine, refresh_statistics
from bot.ops import migrate

# Rows the initial migration inserts itself: present in a freshly migrated, "empty" database.
SEEDED_ROWS = {"allowlist_counter": [{"id": 1, "version": 0, "epoch": None}]}  # epoch: migration 0003g


class CopyError(Exception):
    """The copy was refused or failed verification; the target was left unchanged."""


@dataclass
class TableCopy:
    name: str
    rows: int
    checksum: str


@dataclass
class CopyResult:
    target: str  # the URL without its password
    tables: list[TableCopy] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables)


def tables() -> list[Table]:
    """Every Beekeeper table, parents before children."""
    import bot.core.models  # noqa: F401 - registers the tables on the metadata

    return list(SQLModel.metadata.sorted_tables)


# --------------------------------------------------------------------------------------------
# canonical rows and checksums
# --------------------------------------------------------------------------------------------


def canonical(value):
    """A JSON-able form that is the same whichever database the value came from."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


class TableHash:
    """Row count and SHA-256 of a table's rows fed in primary-key order."""

    def __init__(self) -> None:
        self.rows = 0
        self._hash = hashlib.sha256()

    def add(self, row: Iterable) -> None:
        line = json.dumps([canonical(v) for v in row], sort_keys=True, separators=(",", ":"), default=str)
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.rows += 1

    @property
    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _ordered(table: Table):
    # Per statement, not per connection: a connection-wide yield_per would turn the inserts
    # that follow into server-side cursors on PostgreSQL.
    return select(table).order_by(*table.primary_key.columns)


def table_hash(conn: Connection, table: Table, batch: int = 1000) -> TableHash:
    digest = TableHash()
    with conn.execute(_ordered(table).execution_options(yield_per=batch)) as result:
        for row in result:
            digest.add(row)
    return digest


# --------------------------------------------------------------------------------------------
# refusing what must not be copied
# --------------------------------------------------------------------------------------------


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _same_database(source: Engine, target_url: str) -> bool:
    a, b = source.url, make_url(target_url)
    return (a.get_backend_name(), a.host, a.port, a.database) == (b.get_backend_name(), b.host, b.port, b.database)


def _prepare_target(target: Engine) -> None:
    """Migrate the target to the current schema; refuse a database that holds something else."""
    try:
        current = migrate.current_revision(target)
        existing = set(inspect(target).get_table_names())
    except SQLAlchemyError as exc:
        raise CopyError(f"cannot connect to the target: {str(exc).splitlines()[0][:300]}") from None
    ours = {t.name for t in tables()}
    if current is None and existing - {"alembic_version"}:
        foreign = sorted(existing - {"alembic_version"})[:5]
        raise CopyError(f"the target already has tables ({', '.join(foreign)}) that Beekeeper did not create; "
                        "copy into a new, empty database")
    if current is not None and current != migrate.head_revision():
        raise CopyError(f"the target's schema is at {current}, not {migrate.head_revision()}; "
                        "copy into a new, empty database")
    migrate.upgrade(target)
    missing = ours - set(inspect(target).get_table_names())
    if missing:  # pragma: no cover - the migration creates every table
        raise CopyError(f"the target lacks tables after migrating: {sorted(missing)}")


def _refuse_non_empty(conn: Connection) -> None:
    for table in tables():
        count = conn.execute(select(func.count()).select_from(table)).scalar_one()
        seeded = SEEDED_ROWS.get(table.name, [])
        if count == 0:
            continue
        if count == len(seeded):
            rows = [dict(r._mapping) for r in conn.execute(_ordered(table))]
            if rows == seeded:
                continue
        raise CopyError(f"the target is not empty: table {table.name} has {count} row(s). "
                        "`db copy` only writes into a new database, so nothing is ever overwritten")


# --------------------------------------------------------------------------------------------
# the copy
# --------------------------------------------------------------------------------------------


def _copy_table(source: Connection, target: Connection, table: Table, batch: int) -> TableHash:
    digest = TableHash()
    with source.execute(_ordered(table).execution_options(yield_per=batch)) as result:
        columns = list(result.keys())
        for chunk in result.partitions(batch):
            for row in chunk:
                digest.add(row)
            target.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in chunk])
    return digest


def _reset_sequences(conn: Connection) -> None:
    """Move each PostgreSQL id sequence past the copied ids (explicit ids do not advance it)."""
    for table in tables():
        for column in table.primary_key.columns:
            quoted = conn.dialect.identifier_preparer.quote(table.name)
            sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                    {"t": quoted, "c": column.name}).scalar()
            if sequence is None:
                continue
            highest = conn.execute(select(func.max(column))).scalar()
            conn.execute(text("SELECT setval(:s, :v, :called)"),
                         {"s": sequence, "v": highest or 1, "called": highest is not None})


def copy_database(source: Engine, target_url: str, *, batch: int = 1000,
                  progress: Callable[[str], None] | None = None) -> CopyResult:
    """Copy every table of `source` into the empty database at `target_url`, verified."""
    say = progress or (lambda _message: None)
    target_url = normalize_database_url(target_url.strip())
    if not target_url.startswith(("postgresql", "sqlite")):
        raise CopyError("--to must be a postgresql://user:password@host/database URL")
    if _same_database(source, target_url):
        raise CopyError("the target is the current database")
    if migrate.pending(source):
        raise CopyError("the current database is not at the latest schema: run `beekeeper db upgrade` first")
    target = make_engine(target_url)
    result = CopyResult(target=_redacted(target_url))
    try:
        _prepare_target(target)
        read_options = {} if is_sqlite(source) else {"isolation_level": "REPEATABLE READ"}
        with source.connect().execution_options(**read_options) as src, src.begin():
            with target.begin() as dst:
                _refuse_non_empty(dst)
                for table in tables():
                    for seeded in SEEDED_ROWS.get(table.name, []):
                        dst.execute(table.delete().where(*(table.c[k] == v for k, v in seeded.items())))
                    copied = _copy_table(src, dst, table, batch)
                    check = table_hash(dst, table, batch)
                    if (check.rows, check.hexdigest) != (copied.rows, copied.hexdigest):
                        raise CopyError(f"verification failed for {table.name}: source {copied.rows} rows "
                                        f"{copied.hexdigest[:12]}, target {check.rows} rows {check.hexdigest[:12]}; "
                                        "nothing was committed")
                    say(f"{table.name}: {copied.rows} rows")
                    result.tables.append(TableCopy(table.name, copied.rows, copied.hexdigest))
                if target.dialect.name == "postgresql":
                    _reset_sequences(dst)
        try:  # a bulk load: the planner must not see empty tables (issue 18)
            refresh_statistics(target)
        except SQLAlchemyError as exc:  # the copy is committed and verified; statistics come later
            say(f"copied, but the planner statistics could not be refreshed ({type(exc).__name__}): run ANALYZE")
    except SQLAlchemyError as exc:
        raise CopyError(f"copy failed, nothing was committed: {str(exc).splitlines()[0][:300]}") from exc
    finally:
        target.dispose()
    return result
