"""Database engine and sessions: SQLite by default, PostgreSQL for deployments.

Nothing here knows about Flask, so the web app, the worker and the CLI share it.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool
from sqlmodel import Session, create_engine

_engines: dict[str, Engine] = {}


def is_sqlite(url_or_engine: str | Engine) -> bool:
    url = url_or_engine if isinstance(url_or_engine, str) else str(url_or_engine.url)
    return url.startswith("sqlite")


SQLITE_WRITE_LOCK_TIMEOUT = 30.0  # seconds a transaction waits for SQLite's write lock


def _tune_sqlite(dbapi_connection, _record) -> None:
    # WAL lets readers and the writer work at once. synchronous=FULL fsyncs the WAL at every
    # commit, so a delivery answered 202 survives a power cut, not only a process crash.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")  # switching to WAL may wait for another process
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Every transaction starts with BEGIN IMMEDIATE (below), which waits for the lock itself;
    # inside one, no statement can meet a lock, so SQLite's own busy handler is not needed.
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.close()


class _WriteLock:
    """SQLite has one writer at a time. Within a process, writers queue on a threading lock
    (handed over at once when the holder commits); across processes they retry BEGIN
    IMMEDIATE every 0.1-2 ms. SQLite's own busy handler sleeps 1, 2, 5, 10… ms between tries,
    which turned a lock held for a fraction of a millisecond into tens of milliseconds of
    waiting under concurrent webhook intake."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


_write_locks: dict[str, _WriteLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock_for(path: str) -> _WriteLock:
    with _write_locks_guard:
        return _write_locks.setdefault(str(Path(path).absolute()), _WriteLock())


class _SQLiteConnection(sqlite3.Connection):
    """Releases the process's write lock once COMMIT or ROLLBACK has really happened."""

    write_lock: _WriteLock
    holds_write_lock = False

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()

    def _release(self) -> None:
        if self.holds_write_lock:
            self.holds_write_lock = False
            self.write_lock.lock.release()


READ_ONLY = "beekeeper_read_only"


def reader(engine: Engine) -> Engine:
    """The same engine for work that only reads (health checks, metrics, listings).

    On SQLite its transactions start with a plain BEGIN and never wait for the write lock, so a
    long handler transaction cannot stall /readyz or a scrape. Writing through it is a bug.
    """
    return engine.execution_options(**{READ_ONLY: True})


def _sqlite_begin_immediate(conn) -> None:
    """Take SQLite's write lock at BEGIN, so two writers queue instead of deadlocking on upgrade."""
    if conn.get_execution_options().get(READ_ONLY):
        conn.connection.dbapi_connection.execute("BEGIN")  # WAL readers never wait
        return
    try:
        sqlite_begin_immediate(conn.connection.dbapi_connection)
    except sqlite3.OperationalError as error:
        raise exc.OperationalError("BEGIN IMMEDIATE", (), error) from error


def sqlite_begin_immediate(dbapi_connection) -> None:
    """BEGIN IMMEDIATE on a raw sqlite3 connection: the process's write lock, then SQLite's."""
    deadline = time.monotonic() + SQLITE_WRITE_LOCK_TIMEOUT
    if isinstance(dbapi_connection, _SQLiteConnection) and not dbapi_connection.holds_write_lock:
        if not dbapi_connection.write_lock.lock.acquire(timeout=SQLITE_WRITE_LOCK_TIMEOUT):
            raise sqlite3.OperationalError("database is locked")
        dbapi_connection.holds_write_lock = True
    delay = 0.0001
    while True:
        try:
            dbapi_connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if ("locked" not in str(error) and "busy" not in str(error)) or time.monotonic() >= deadline:
                if isinstance(dbapi_connection, _SQLiteConnection):
                    dbapi_connection._release()
                raise
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.002)


def make_engine(url: str) -> Engine:
    """A new engine for `url`, with the settings each backend needs."""
    if is_sqlite(url):
        path = url.split("sqlite:///", 1)[-1] if "sqlite:///" in url else ""
        connect_args = {"check_same_thread": False, "timeout": 30, "isolation_level": None}
        pool: dict = {}
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            connect_args["factory"] = type("SQLiteConnection", (_SQLiteConnection,),
                                           {"write_lock": _write_lock_for(path)})
            # Pooled, not opened per request: closing the last connection to a WAL database
            # checkpoints and removes the WAL, which costs a millisecond or more every time.
            pool = {"poolclass": QueuePool, "pool_size": 8, "max_overflow": 16}
        engine = create_engine(url, connect_args=connect_args, **pool)
        event.listen(engine, "connect", _tune_sqlite)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    # connect_timeout: an unreachable server fails /readyz and the worker loop in seconds, not minutes.
    # Up to 15 connections: a worker at its default concurrency (8 on PostgreSQL) uses C + 2 = 10
    # (its deliveries, the heartbeat, the claiming loop), which leaves room for the web threads
    # of `beekeeper serve`'s process; only 5 are kept open when idle. pool_pre_ping stays: it
    # costs one round trip per checkout (~0.1 ms of CPU, one checkout per delivery) and keeps a
    # database restart from failing the first statement of every pooled connection.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=1800,
                         connect_args={"connect_timeout": 5})


def intake_engine(engine: Engine) -> Engine:
    """The engine the webhook intake writes with.

    PostgreSQL: a sibling of `engine` in autocommit mode and without pre-ping, so storing a
    batch of deliveries is one round trip: a single INSERT statement is its own transaction,
    durable when it returns (no BEGIN, no COMMIT, no ping; the intake retries a connection the
    server closed by itself). SQLite: `engine` itself (connections share the write lock).
    """
    if is_sqlite(engine):
        return engine
    key = "intake:" + engine.url.render_as_string(hide_password=False)
    sibling = _engines.get(key)
    if sibling is None:
        sibling = _engines[key] = create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_pre_ping=False,
                                                pool_size=5, max_overflow=5, pool_recycle=1800,
                                                connect_args={"connect_timeout": 5})
    return sibling


def dedicated_connection(engine: Engine, application_name: str, **options):
    """A PostgreSQL DBAPI (psycopg) connection of its own, outside the engine's pool, in
    autocommit mode, with the engine's connection arguments (for a connection held for a long
    time, like a LISTEN, or used by one thread only). `application_name` shows in
    pg_stat_activity."""
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    cparams = {**cparams, "connect_timeout": 5, **options, "autocommit": True, "application_name": application_name}
    return dialect.loaded_dbapi.connect(*cargs, **cparams)


def get_engine(url: str) -> Engine:
    """One engine per URL per process (engines hold the connection pool)."""
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = make_engine(url)
    return engine


def dispose_engines() -> None:
    """Forget pooled connections, e.g. in a gunicorn worker after fork."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# --------------------------------------------------------------------------------------------
# Planner statistics after bulk changes (issue 18)
# --------------------------------------------------------------------------------------------

STATISTICS_INTERVAL_SECONDS = 3600.0  # the worker refreshes them this often (schedule_statistics)


def refresh_statistics(bind) -> None:
    """Refresh the query planner's statistics after a bulk change: an import, `db copy`, a
    migration, and hourly from the worker. Without them a freshly loaded PostgreSQL database
    plans every query as if its tables were empty (the allowlist delta at 100 000 grants: 41-47
    ms of full scans instead of ~3 ms) until autovacuum gets round to it.

    PostgreSQL: `ANALYZE` (every table, sampled). SQLite: `PRAGMA optimize=0x10002` (analyse every
    table whose statistics are missing or stale) from SQLite 3.46; older versions would skip the
    tables this connection has not queried, so they run `ANALYZE`. Both under
    `PRAGMA analysis_limit=1000`, which samples each index (milliseconds, not a full scan).

    `bind`: an Engine (its own transaction, committed), a Connection or a Session (runs in
    theirs; the caller commits)."""
    from sqlalchemy.engine import Connection
    from sqlmodel import Session

    if isinstance(bind, Session):
        _refresh_statistics(bind.connection())
    elif isinstance(bind, Connection):
        _refresh_statistics(bind)
    else:
        with bind.begin() as connection:
            _refresh_statistics(connection)


def _refresh_statistics(connection) -> None:
    from sqlalchemy import text

    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA analysis_limit=1000")
        if sqlite3.sqlite_version_info >= (3, 46, 0):
            connection.exec_driver_sql("PRAGMA optimize=0x10002")
        else:
            connection.exec_driver_sql("ANALYZE")
    else:
        connection.execute(text("ANALYZE"))


def statistics_job(runtime) -> None:
    """The worker's periodic job (schedule_statistics): refresh_statistics on the runtime's engine."""
    refresh_statistics(runtime.engine)


def schedule_statistics(runtime) -> None:
    """Register statistics_job with the worker's periodic jobs (`runtime.periodic`), once."""
    if not any(job is statistics_job for _, job in runtime.periodic):
        runtime.periodic.append((STATISTICS_INTERVAL_SECONDS, statistics_job))
