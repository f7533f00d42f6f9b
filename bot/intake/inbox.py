"""The durable inbox: storing deliveries, claiming them, retries with backoff, dead letters.

The web intake stores through `GroupCommit` (several concurrent deliveries per commit, each
request answered only after its commit); workers call `claim()` and `process()`. A claim is a lease:
the row is marked `processing` until `locked_until`, so a worker killed mid-delivery leaves the
row to be claimed again once the lease runs out. Leases are short (30 s by default): a
`Heartbeat` renews them while the worker processes its batch, and a worker asked to stop
`release()`s the deliveries it claimed but did not start, so they are due again at once. On
PostgreSQL candidate rows are selected `FOR UPDATE SKIP LOCKED`, so several workers never take
the same delivery at once; on SQLite the database-wide write lock (BEGIN IMMEDIATE, see bot.core.db)
does the same.

A successful run commits the handlers' database work and the `processed` status in one
transaction, guarded by the lease: a worker that lost its lease commits nothing. No failure
path deletes a payload.

On PostgreSQL, storing, releasing or re-queueing (an operator's retry) a delivery also sends
`NOTIFY beekeeper_inbox` (the web intake: right after its commit, see `_Notifier`; the others:
in their transaction); waiting workers LISTEN on it (bot.intake.wakeup) and claim at once
instead of at their next poll.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, case, exc, func, or_, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from bot.core import logs, metrics
from bot.core.clock import utcnow
from bot.core.db import dedicated_connection, reader, session_scope, sqlite_begin_immediate
from bot.core.errors import RetryLater
from bot.core.models import Delivery, DeliveryStatus
from bot.intake.router import Context, Event, Router

log = logging.getLogger("beekeeper.inbox")

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 3600.0
MAX_ERROR_LENGTH = 4000
LEASE_LOST = "lease_lost"
MISSING = "missing"

# The channel workers LISTEN on. PostgreSQL delivers a notification when (and only if) its
# transaction commits, so a woken worker always finds the row. The payload is empty: identical
# notifications within one transaction reach listeners once, so a batch of 100 rows wakes them once.
CHANNEL = "beekeeper_inbox"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")


def notify_workers(connection: Connection | Session) -> None:
    """Wake the listening workers when this transaction commits (PostgreSQL; nothing on SQLite,
    whose workers are woken in process or poll)."""
    bind = connection if isinstance(connection, Connection) else connection.get_bind()
    if bind.dialect.name == "postgresql":
        connection.execute(_NOTIFY)


@dataclass
class Incoming:
    event: str
    action: str | None
    delivery_id: str
    hook_id: int
    installation_id: int | None
    payload: str
    # SHA-256 (hex) of the signed raw body (the web intake sets it): a body already stored under
    # another GUID is a replay and is not stored again. None: no such check.
    payload_sha256: str | None = None


class DeliveryBusy(Exception):
    """`retry_now` refused: a worker holds a live lease on the delivery."""


class _LeaseLost(Exception):
    """Our lease ran out and another worker took the delivery: commit nothing."""


# --------------------------------------------------------------------------------------------
# storing (web process)
# --------------------------------------------------------------------------------------------


_INSERTS: dict[str, object] = {}


def _insert_statement(dialect: str):
    """`INSERT … ON CONFLICT DO NOTHING RETURNING id`, built once per dialect: the values travel
    as bound parameters, so SQLAlchemy's compiled cache is hit. Either unique key (the delivery
    GUID, the body's SHA-256) makes the row a duplicate."""
    statement = _INSERTS.get(dialect)
    if statement is None:
        if dialect == "postgresql":
            # pg_notify per stored row (none for a duplicate), in the insert's own transaction.
            returning = (Delivery.id, func.pg_notify(CHANNEL, ""))
            insert = postgresql.insert
        else:
            returning, insert = (Delivery.id,), sqlite.insert
        statement = _INSERTS[dialect] = (
            insert(Delivery)
            .on_conflict_do_nothing()
            .returning(*returning)
        )
    return statement


def store(connection: Connection | Session, incoming: Incoming) -> bool:
    """Insert the delivery; False when this delivery id (or, when given, this body) is already stored.

    One statement: no savepoint, no exception path for the common redelivery case, and no
    race between two web processes. Takes a Connection (the web intake, lightest) or a Session.
    """
    bind = connection if isinstance(connection, Connection) else connection.get_bind()
    now = utcnow()
    row = connection.execute(_insert_statement(bind.dialect.name), {
        "hook_id": incoming.hook_id,
        "delivery_id": incoming.delivery_id,
        "event": incoming.event,
        "action": incoming.action,
        "installation_id": incoming.installation_id,
        "payload": incoming.payload,
        "payload_sha256": incoming.payload_sha256,
        "received_at": now,
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
    }).first()
    return row is not None


@dataclass
class _Waiting:
    incoming: Incoming
    done: bool = False
    stored: bool = False
    error: BaseException | None = None


_COLUMNS = ("hook_id", "delivery_id", "event", "action", "installation_id", "payload", "payload_sha256",
            "received_at", "status", "attempts", "next_attempt_at")


class _BatchInsert:
    """One multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING` on a pooled DBAPI connection.

    The intake's hot path skips SQLAlchemy's per-statement machinery (compiling, result
    objects, transaction events), which measured as a quarter of a delivery's CPU time; the
    SQL is the statement `store()` issues (without its pg_notify: see `_Notifier`), and times
    go through the column type's own bind processor so they are stored exactly as the ORM
    stores them.
    """

    MAX_ROWS = 100

    def __init__(self, engine: Engine):
        from bot.core.db import intake_engine

        self.engine = intake_engine(engine)
        dialect = self.engine.dialect
        self.sqlite = dialect.name == "sqlite"
        self.pid = os.getpid()
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self.row_sql = "(" + ", ".join([mark] * len(_COLUMNS)) + ")"
        self.head_sql = f"INSERT INTO delivery ({', '.join(_COLUMNS)}) VALUES "  # noqa: S608 - constants
        self.tail_sql = " ON CONFLICT DO NOTHING RETURNING delivery_id"  # any unique key: a duplicate
        time_type = Delivery.__table__.c.received_at.type.dialect_impl(dialect)
        self.to_db_time = time_type.bind_processor(dialect) or (lambda value: value)
        self.dbapi_error = dialect.loaded_dbapi.Error

    def __call__(self, items: list[Incoming]) -> list[bool]:
        """Insert and commit; for each item, True if stored now, False if it already was."""
        now = self.to_db_time(utcnow())
        params: list = []
        for item in items:
            params += [item.hook_id, item.delivery_id, item.event, item.action, item.installation_id, item.payload,
                       item.payload_sha256, now, DeliveryStatus.PENDING, 0, now]
        sql = self.head_sql + ", ".join([self.row_sql] * len(items)) + self.tail_sql
        try:
            inserted = self._execute(sql, params)
        except self.dbapi_error as error:
            # The same exception classes as everywhere else (sqlalchemy.exc.OperationalError…),
            # without the parameters: they hold whole payloads.
            raise exc.DBAPIError.instance(sql, None, error, self.dbapi_error, hide_parameters=True,
                                          dialect=self.engine.dialect) from error
        outcomes, seen = [], set()
        for item in items:
            key = item.delivery_id
            outcomes.append(key in inserted and key not in seen)  # the same delivery twice in one batch
            seen.add(key)
        return outcomes

    def _execute(self, sql: str, params: list) -> set[str]:
        if self.pid != os.getpid():  # forked (gunicorn --preload): the parent's connections are not ours
            self.engine.dispose(close=False)
            self.pid = os.getpid()
        for attempt in (1, 2):
            pooled = self.engine.raw_connection()
            connection = pooled.driver_connection
            try:
                if self.sqlite:
                    sqlite_begin_immediate(connection)
                cursor = connection.cursor()
                try:
                    cursor.execute(sql, params)  # PostgreSQL: autocommit, this statement is the transaction
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
                connection.commit()  # SQLite: ends BEGIN IMMEDIATE; PostgreSQL (autocommit): nothing to do
                return {delivery_id for (delivery_id,) in rows}
            except BaseException as error:
                broken = _discard_if_broken(pooled, connection)
                if broken and attempt == 1 and isinstance(error, self.dbapi_error):
                    continue  # a connection the server closed (restart, idle timeout): once more, fresh
                raise
            finally:
                pooled.close()  # back to the pool (or gone, if invalidated)
        raise AssertionError("unreachable")  # pragma: no cover


def _discard_if_broken(pooled, connection) -> bool:
    """Roll back; a connection that cannot even do that is dropped from the pool."""
    try:
        connection.rollback()
    except Exception:  # noqa: BLE001 - the connection is unusable, whatever the reason
        pooled.invalidate()
        return True
    return bool(getattr(connection, "closed", False) or getattr(connection, "broken", False))


class _Notifier:
    """Sends the intake's NOTIFY after its commits, from a thread of its own (PostgreSQL).

    Not in the insert's transaction: a transaction that notifies holds a database-wide lock
    from its commit until its WAL is flushed, so concurrent inserts (several web processes)
    would flush one after the other instead of together. Measured with 8 connections inserting
    single deliveries: 2 532 inserts/s plain, 979/s with pg_notify in the insert, 2 068/s with a
    separate notifying statement (benchmarks/README.md, worker_burst). Here the notification is
    its own short transaction whose commit does not wait for the disk (it needs no durability),
    sent after the deliveries committed, so a woken worker finds them; the commits that happen
    while one is being sent share the next. A notification that cannot be sent (database away)
    is dropped: the workers' poll finds the deliveries. The thread has a connection of its own,
    not one of the intake's pool (whose retry after a restart counts on one pooled connection).
    """

    SQL = f"SELECT set_config('synchronous_commit', 'off', true), pg_notify('{CHANNEL}', '')"
    APPLICATION_NAME = "beekeeper intake notifier"

    def __init__(self, engine: Engine):
        self.engine = engine
        self.sent = 0
        self._due = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None

    def poke(self) -> None:
        """A delivery was committed: notify soon (returns at once)."""
        self._due.set()
        if self._pid != os.getpid():  # first use in this process (gunicorn forks its workers)
            with self._lock:
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    threading.Thread(target=self._run, name="beekeeper-inbox-notify", daemon=True).start()

    def _run(self) -> None:
        connection, failed = None, False
        while True:
            self._due.wait()
            self._due.clear()
            for attempt in (1, 2):  # a connection the server closed (restart): once more, fresh
                try:
                    if connection is None:
                        connection = dedicated_connection(self.engine, self.APPLICATION_NAME)
                    connection.execute(self.SQL)
                except Exception as exc:  # noqa: BLE001 - the workers poll; the next delivery notifies again
                    if connection is not None:
                        with contextlib.suppress(Exception):  # broken already: nothing to release
                            connection.close()
                        connection = None
                    if attempt == 2 and not failed:
                        log.warning("could not notify the workers (%s: %.200s); they will find the deliveries "
                                    "at their next poll", type(exc).__name__, exc)
                    failed = failed or attempt == 2
                else:
                    self.sent += 1
                    failed = False
                    break


_notifiers: dict[str, _Notifier] = {}
_notifiers_lock = threading.Lock()


def _notifier_for(engine: Engine) -> _Notifier:
    """One per database and process, shared by every GroupCommit on it."""
    key = engine.url.render_as_string(hide_password=False)
    with _notifiers_lock:
        notifier = _notifiers.get(key)
        if notifier is None:
            notifier = _notifiers[key] = _Notifier(engine)
        return notifier


class GroupCommit:
    """Stores the web intake's deliveries, several per transaction when they arrive together.

    Every request still returns only after the transaction holding its delivery committed, so
    a 202 keeps meaning "on disk". What is shared is the commit: while one thread commits, the
    deliveries that arrive queue up, and the next thread to take the commit lock commits all of
    them at once, one fsync (and, on SQLite, one turn of the database's single write lock)
    for the lot. Without concurrency it is exactly one transaction per delivery.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._insert = _BatchInsert(engine)
        # PostgreSQL: wakes the listening workers once deliveries are committed.
        self._notifier = None if self._insert.sqlite else _notifier_for(engine)
        self._queue: list[_Waiting] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self.transactions = 0  # how many commits carried the deliveries (for tests and curiosity)
        self.queue_changed = threading.Condition(self._queue_lock)  # notified when a delivery queues

    def queued(self) -> int:
        """Deliveries waiting for the next commit."""
        with self._queue_lock:
            return len(self._queue)

    def wait_queued(self, count: int, timeout: float) -> bool:
        """Until at least `count` deliveries wait for a commit; False when `timeout` ran out first."""
        with self.queue_changed:
            return self.queue_changed.wait_for(lambda: len(self._queue) >= count, timeout=timeout)

    def hold_commits(self):
        """Hold the commit lock (as a commit in progress does): deliveries queue up meanwhile.
        A context manager, for tests that need several deliveries in one commit."""
        return self._commit_lock

    def store(self, incoming: Incoming) -> bool:
        """Like `store()`, committed: True when stored, False for a delivery already stored."""
        waiting = _Waiting(incoming)
        with self._queue_lock:
            self._queue.append(waiting)
            self.queue_changed.notify_all()
        with self._commit_lock:
            if not waiting.done:  # nobody committed it while we waited for the lock: commit the queue
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                for start in range(0, len(batch), _BatchInsert.MAX_ROWS):
                    self._commit(batch[start:start + _BatchInsert.MAX_ROWS])
        if waiting.error is not None:
            raise waiting.error
        return waiting.stored

    def _commit(self, batch: list[_Waiting]) -> None:
        try:
            self.transactions += 1
            outcomes = self._insert([item.incoming for item in batch])
        except Exception as error:  # noqa: BLE001 - handed to each waiting request
            if len(batch) > 1:  # one bad delivery must not fail its neighbours: one by one
                for item in batch:
                    self._commit([item])
                return
            batch[0].error, batch[0].done = error, True
            return
        if self._notifier is not None and any(outcomes):  # a duplicate alone wakes nobody
            self._notifier.poke()
        for item, stored in zip(batch, outcomes, strict=True):
            item.stored, item.done = stored, True


# --------------------------------------------------------------------------------------------
# claiming (workers)
# --------------------------------------------------------------------------------------------


def backoff_seconds(attempts: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: uniform in [c/2, c] where c = base·2^(n-1), capped."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def worker_name() -> str:
    """Unique per Worker, so a lease names exactly one holder (even two workers in a process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _claimable(now):
    return or_(
        and_(Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRY]), Delivery.next_attempt_at <= now),
        and_(Delivery.status == DeliveryStatus.PROCESSING, Delivery.locked_until < now),
    )


def _bury_abandoned(session: Session, now, max_attempts: int) -> None:
    """Deliveries whose lease ran out on their last attempt are dead, not claimed again: a
    payload that kills the worker every time must not take the worker down forever."""
    rows = session.execute(
        update(Delivery)
        .where(Delivery.status == DeliveryStatus.PROCESSING, Delivery.locked_until < now,
               Delivery.attempts >= max_attempts)
        .values(status=DeliveryStatus.DEAD, locked_until=None,
                last_error="lease expired: the worker stopped during the last attempt")
        .returning(Delivery.delivery_id, Delivery.event, Delivery.attempts)
    ).all()
    for delivery_id, event, attempts in rows:
        metrics.DELIVERIES_DEAD.labels(event=event).inc()
        log.error("delivery=%s event=%s dead after %d attempts: lease expired", delivery_id, event, attempts)


def claim(engine: Engine, worker: str, lease_seconds: int, limit: int = 10,
          max_attempts: int | None = None) -> list[int]:
    """Lease up to `limit` due deliveries to `worker`; returns their ids, oldest first.

    Each claim counts as an attempt, so a delivery whose worker died mid-run is dead once
    `max_attempts` is used up (when given) instead of being claimed forever.
    """
    return [pk for pk, _ in _claim(engine, worker, lease_seconds, limit, max_attempts)]


def _claim(engine: Engine, worker: str, lease_seconds: int, limit: int, max_attempts: int | None,
           order_keys: bool = False) -> list[tuple[int, tuple | None]]:
    """`claim`, each id with its `order_key` when asked (read by the claiming UPDATE itself, so
    grouping a batch costs no transaction of its own)."""
    now = utcnow()
    with session_scope(engine) as session:
        if max_attempts is not None:
            _bury_abandoned(session, now, max_attempts)
        ids = session.exec(
            select(Delivery.id)
            .where(_claimable(now))
            .order_by(Delivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not ids:
            return []
        # The WHERE repeats the claimable condition so that, even without row locks, a row
        # another worker leased in the meantime is not taken twice.
        returned = (Delivery.id, Delivery.event, Delivery.installation_id, Delivery.payload) if order_keys \
            else (Delivery.id,)
        rows = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), _claimable(now))
            .values(
                status=DeliveryStatus.PROCESSING,
                locked_until=now + timedelta(seconds=lease_seconds),
                locked_by=worker,
                attempts=Delivery.attempts + 1,
            )
            .returning(*returned)
        ).all()
    if not order_keys:
        return sorted((row[0], None) for row in rows)
    return sorted((pk, _order_key_of(pk, event, installation_id, payload))
                  for pk, event, installation_id, payload in rows)


# --------------------------------------------------------------------------------------------
# processing (workers)
# --------------------------------------------------------------------------------------------


def _is_own_bot(event: Event, ctx: Context) -> bool:
    """True for events our own bot user caused (its comments, labels…): answering them loops.

    Only a Bot sender costs anything: its login is compared with ours, which is fetched from
    GitHub (GET /app) once per process the first time a bot sender appears.
    """
    sender = event.sender
    if sender.get("type") != "Bot":
        return False
    own = ctx.app.own_bot_login()
    return own is not None and sender.get("login") == own


def _finish(session: Session, delivery_pk: int, worker: str, **values) -> bool:
    """Write the outcome, unless the lease was lost to another worker (then change nothing)."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_pk, Delivery.locked_by == worker,
               Delivery.status == DeliveryStatus.PROCESSING)
        .values(locked_until=None, **values)
    )
    return result.rowcount == 1


def _leased_event(session: Session, delivery_pk: int, worker: str) -> tuple[Event, int] | None:
    """The delivery as an Event, if `worker` still holds its lease.

    PostgreSQL: read in the handler's own transaction (one connection, one BEGIN/COMMIT per
    delivery, not two). SQLite: in a read-only transaction of its own, as every transaction on
    the main engine starts by taking the database's single write lock: the handler's would
    then hold it from the start even when its handlers write nothing, and run deliveries one
    at a time."""
    if session.get_bind().dialect.name == "sqlite":
        with Session(reader(session.get_bind())) as own:
            return _read_leased(own, delivery_pk, worker)
    return _read_leased(session, delivery_pk, worker)


def _read_leased(session: Session, delivery_pk: int, worker: str) -> tuple[Event, int] | None:
    row = session.execute(
        select(Delivery.event, Delivery.action, Delivery.payload, Delivery.delivery_id, Delivery.hook_id,
               Delivery.installation_id, Delivery.attempts)
        .where(Delivery.id == delivery_pk, Delivery.status == DeliveryStatus.PROCESSING,
               Delivery.locked_by == worker)
    ).first()
    if row is None:
        return None
    return Event.from_delivery(row), row.attempts


def process(engine: Engine, delivery_pk: int, worker: str, router: Router, make_context,
            max_attempts: int) -> str:
    """Run the handlers of one leased delivery and record the outcome; returns the new status.

    `make_context(session, event)` builds the handler Context. The handlers run and the new
    status is written in one transaction (on PostgreSQL the delivery is read in it too, see
    `_leased_event`), which commits on success; on
    failure the handlers' work is rolled back and the retry (or death) is written in a
    transaction of its own. A failure to read the delivery (the database away) is raised to the
    caller, as before: nothing ran, so there is nothing to record.
    """
    with Session(engine, expire_on_commit=False) as session:
        leased = _leased_event(session, delivery_pk, worker)
        if leased is None:
            return MISSING
        event, attempts = leased
        logs.set_fields(logs.event_fields(event))  # every line logged while it runs names the delivery
        label = f"delivery={event.delivery_id} event={event.name}.{event.action or '-'}"
        started = time.perf_counter()
        error, retry_after = None, None
        try:
            status, note = _run_handlers(session, event, router, make_context)
            if not _finish(session, delivery_pk, worker, status=status, processed_at=utcnow(), last_error=None):
                raise _LeaseLost
            session.commit()
        except _LeaseLost:
            session.rollback()
            log.warning("%s attempt=%d: lease lost to another worker; its work was rolled back", label, attempts)
            return LEASE_LOST
        except RetryLater as exc:
            session.rollback()
            error, retry_after = f"RetryLater: {exc}", exc.after
        except Exception as exc:  # noqa: BLE001 - any handler failure is retried, never lost
            session.rollback()
            error = f"{type(exc).__name__}: {exc}"
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s attempt=%d traceback", label, attempts, exc_info=True)
    duration = time.perf_counter() - started
    metrics.HANDLER_DURATION.labels(event=event.name).observe(duration)
    if error is None:
        metrics.DELIVERIES_PROCESSED.labels(event=event.name, outcome=status).inc()
        log.info("%s %s%s in %.0f ms (attempt %d)", label, status, f" ({note})" if note else "", duration * 1000,
                 attempts)
        return status
    return _record_failure(engine, delivery_pk, worker, event, label, attempts, max_attempts, error, retry_after)


def _run_handlers(session: Session, event: Event, router: Router, make_context) -> tuple[str, str]:
    """The delivery's status and a note for the log."""
    ctx = make_context(session, event)
    if _is_own_bot(event, ctx):
        return DeliveryStatus.SKIPPED, "sent by our own bot"
    if router.dispatch(event, ctx) == 0:
        return DeliveryStatus.SKIPPED, "no handler"
    return DeliveryStatus.PROCESSED, ""


def _record_failure(engine: Engine, delivery_pk: int, worker: str, event: Event, label: str, attempts: int,
                    max_attempts: int, error: str, retry_after: float | None) -> str:
    error = error[:MAX_ERROR_LENGTH]
    with session_scope(engine) as session:
        if attempts >= max_attempts:
            if not _finish(session, delivery_pk, worker, status=DeliveryStatus.DEAD, last_error=error):
                return LEASE_LOST
            metrics.DELIVERIES_DEAD.labels(event=event.name).inc()
            log.error("%s dead after %d attempts: %s", label, attempts, error)
            return DeliveryStatus.DEAD
        delay = max(retry_after or 0.0, backoff_seconds(attempts))
        if not _finish(session, delivery_pk, worker, status=DeliveryStatus.RETRY, last_error=error,
                       next_attempt_at=utcnow() + timedelta(seconds=delay)):
            return LEASE_LOST
    metrics.DELIVERIES_FAILED.labels(event=event.name).inc()
    log.warning("%s attempt=%d/%d failed, retry in %.0f s: %s", label, attempts, max_attempts, delay, error)
    return DeliveryStatus.RETRY


def renew(engine: Engine, worker: str, lease_seconds: int) -> int:
    """Heartbeat: push the lease of every delivery `worker` holds to now + `lease_seconds`.

    Only leases still held are renewed (`locked_by` is the worker and the row is processing);
    a delivery another worker took meanwhile is left alone. Returns how many were renewed.
    """
    now = utcnow()
    with session_scope(engine) as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.locked_by == worker, Delivery.status == DeliveryStatus.PROCESSING)
            .values(locked_until=now + timedelta(seconds=lease_seconds))
        )
        return result.rowcount or 0


def release(engine: Engine, worker: str, ids: list[int] | None = None) -> int:
    """Give back deliveries `worker` claimed but did not start (graceful stop): due at once for
    any worker, and the claim does not count as an attempt. Returns how many were released."""
    now = utcnow()
    condition = [Delivery.locked_by == worker, Delivery.status == DeliveryStatus.PROCESSING]
    if ids is not None:
        if not ids:
            return 0
        condition.append(Delivery.id.in_(ids))
    with session_scope(engine) as session:
        result = session.execute(
            update(Delivery)
            .where(*condition)
            .values(status=case((Delivery.attempts <= 1, DeliveryStatus.PENDING), else_=DeliveryStatus.RETRY),
                    attempts=case((Delivery.attempts > 0, Delivery.attempts - 1), else_=0),
                    next_attempt_at=now, locked_until=None, locked_by=None)
        )
        released = result.rowcount or 0
        if released:
            notify_workers(session)  # due now: the other workers need not wait for their poll
    if released:
        log.info("worker %s released %d claimed deliveries it will not process", worker, released)
    return released


class Heartbeat:
    """A thread that renews a worker's leases every `interval` seconds while it runs, so a lease
    can be short (a crashed worker's deliveries are taken over quickly) and a long delivery
    still keeps its lease. A failed renewal (database away) is logged and tried again."""

    def __init__(self, engine: Engine, worker: str, lease_seconds: int, interval: float | None = None):
        self.engine, self.worker, self.lease_seconds = engine, worker, lease_seconds
        self.interval = interval if interval is not None else max(0.05, lease_seconds / 3)
        self.beats = 0
        self.beaten = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait_beats(self, count: int, timeout: float) -> bool:
        """Until `count` renewals were done since start; False when `timeout` ran out first."""
        with self.beaten:
            return self.beaten.wait_for(lambda: self.beats >= count, timeout=timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                renew(self.engine, self.worker, self.lease_seconds)
                with self.beaten:
                    self.beats += 1
                    self.beaten.notify_all()
            except Exception as exc:  # noqa: BLE001 - next beat tries again; the lease may run out
                log.warning("lease heartbeat of %s failed (%s: %.200s)", self.worker, type(exc).__name__, exc)

    def __enter__(self) -> Heartbeat:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"lease-heartbeat-{self.worker}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval))
            self._thread = None


def drain(engine: Engine, router: Router, make_context, *, worker: str, lease_seconds: int, max_attempts: int,
          batch: int = 10, should_stop: Callable[[], bool] | None = None,
          heartbeat_seconds: float | None = None, concurrency: int = 1) -> int:
    """Process every due delivery until none is left (or `should_stop()`); returns how many.

    With `heartbeat_seconds`, a Heartbeat renews the leases while the batch is processed. On a
    stop request the delivery in hand is finished and the rest of the batch is released at once
    (not left to run out its lease). With `concurrency` > 1, up to that many deliveries run at
    once, those of one issue still one after the other (`drain_concurrently`).
    """
    if concurrency > 1:
        return drain_concurrently(engine, router, make_context, worker=worker, lease_seconds=lease_seconds,
                                  max_attempts=max_attempts, batch=batch, should_stop=should_stop,
                                  heartbeat_seconds=heartbeat_seconds, concurrency=concurrency)
    done = 0
    while not (should_stop and should_stop()):
        ids = claim(engine, worker, lease_seconds, limit=batch, max_attempts=max_attempts)
        if not ids:
            return done
        pending = list(ids)
        beat = Heartbeat(engine, worker, lease_seconds, heartbeat_seconds) if heartbeat_seconds else None
        try:
            if beat is not None:
                beat.__enter__()
            while pending:
                if should_stop and should_stop():
                    break
                process(engine, pending[0], worker, router, make_context, max_attempts)
                logs.set_fields(None)
                pending.pop(0)
                done += 1
        finally:
            if beat is not None:
                beat.__exit__(None, None, None)
            if pending:
                try:
                    release(engine, worker, pending)
                except Exception as exc:  # noqa: BLE001 - then the leases run out (short) instead
                    log.warning("could not release %d deliveries of %s (%s: %.200s); their leases will run out",
                                len(pending), worker, type(exc).__name__, exc)
    return done


# --------------------------------------------------------------------------------------------
# several deliveries at once (workers)
# --------------------------------------------------------------------------------------------


def order_key(event: str, installation_id: int | None, payload: str | dict) -> tuple:
    """What a delivery must stay in order with: deliveries with the same key never run at once
    and run in the order they were stored (by row id).

    An issue or pull request (the issue's comments, edits, labels, its checks' pull request):
    that issue. Any other event about a repository: the repository's other non-issue events.
    Anything else (installation events…): the installation's other such events.
    """
    data = json.loads(payload) if isinstance(payload, str) else payload
    if not isinstance(data, dict):
        return ("installation", installation_id)
    repo = data.get("repository") if isinstance(data.get("repository"), dict) else {}
    repo_id = repo.get("id") or repo.get("full_name")
    number = None
    for field_name in ("issue", "pull_request"):
        item = data.get(field_name)
        if isinstance(item, dict) and item.get("number") is not None:
            number = item["number"]
            break
    if number is None and event in ("pull_request", "pull_request_review", "pull_request_review_comment"):
        number = data.get("number")
    if number is None:
        for field_name in ("check_run", "check_suite"):
            item = data.get(field_name)
            pulls = item.get("pull_requests") if isinstance(item, dict) else None
            if pulls and isinstance(pulls[0], dict) and pulls[0].get("number") is not None:
                number = pulls[0]["number"]
                break
    if repo_id is None:
        return ("installation", installation_id)
    if number is None:
        return ("repository", repo_id)
    return ("issue", repo_id, number)  # issues and pull requests share one number space per repository


def _order_key_of(pk: int, event: str, installation_id: int | None, payload: str) -> tuple:
    try:
        return order_key(event, installation_id, payload)
    except ValueError:  # not JSON: process() records the failure; nothing to keep in order with
        return ("delivery", pk)


def drain_concurrently(engine: Engine, router: Router, make_context, *, worker: str, lease_seconds: int,
                       max_attempts: int, concurrency: int, batch: int = 10,
                       should_stop: Callable[[], bool] | None = None,
                       heartbeat_seconds: float | None = None) -> int:
    """`drain` with up to `concurrency` deliveries processed at once, in a thread pool.

    The claimed deliveries are grouped by `order_key`: one task per group runs that group's
    deliveries one after the other, in row order, and a delivery claimed while its group is
    still running joins the end of that group's queue, so two deliveries of one issue never
    overlap and never swap (within this worker; several worker processes order nothing, as
    before). At most max(batch, concurrency) deliveries are held at a time; each `process()`
    opens its own sessions. A stop request (or a failure that escapes `process`, e.g. the
    database going away) lets every running delivery finish, then releases the rest.
    """
    stop_requested = should_stop or (lambda: False)
    halt = threading.Event()
    changed = threading.Condition()
    groups: dict[tuple, deque[int]] = {}  # key -> claimed ids not started yet, for each queued or running group
    unstarted: list[int] = []
    failures: list[BaseException] = []
    counts = {"in_hand": 0, "done": 0}
    hold = max(batch, concurrency)

    def stopping() -> bool:
        return halt.is_set() or stop_requested()

    def run_group(key: tuple) -> None:
        while True:
            with changed:
                queue = groups[key]
                if queue and stopping():
                    unstarted.extend(queue)
                    counts["in_hand"] -= len(queue)
                    queue.clear()
                if not queue:
                    del groups[key]
                    changed.notify_all()
                    return
                pk = queue.popleft()
            try:
                process(engine, pk, worker, router, make_context, max_attempts)
            except BaseException as error:  # noqa: BLE001 - handed to the caller of drain, after the others finish
                with changed:
                    failures.append(error)
                    unstarted.append(pk)
                    halt.set()
            else:
                with changed:
                    counts["done"] += 1
            with changed:
                counts["in_hand"] -= 1
                changed.notify_all()

    beat = Heartbeat(engine, worker, lease_seconds, heartbeat_seconds) if heartbeat_seconds else None
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{worker}-task")
    try:
        if beat is not None:
            beat.__enter__()
        while True:
            with changed:
                changed.wait_for(lambda: stopping() or counts["in_hand"] < hold)
                if stopping():
                    break
                room, finished = hold - counts["in_hand"], counts["done"]
            claimed = _claim(engine, worker, lease_seconds, room, max_attempts, order_keys=True)
            if not claimed:
                with changed:
                    if counts["in_hand"] == 0:
                        break
                    # Nothing due now: once a running delivery finishes, look again (a
                    # delivery stored meanwhile, or everything done).
                    changed.wait_for(lambda seen=finished: stopping() or counts["done"] != seen
                                     or counts["in_hand"] == 0)
                continue
            start: list[tuple] = []
            with changed:
                counts["in_hand"] += len(claimed)
                for pk, key in claimed:
                    if key in groups:
                        groups[key].append(pk)
                    else:
                        groups[key] = deque([pk])
                        start.append(key)
            for key in start:
                pool.submit(run_group, key)
    except BaseException:
        halt.set()
        raise
    finally:
        pool.shutdown(wait=True)  # every running delivery finishes; queued groups give their ids back
        if beat is not None:
            beat.__exit__(None, None, None)
        leftover = unstarted + [pk for queue in groups.values() for pk in queue]
        if leftover:
            try:
                release(engine, worker, sorted(leftover))
            except Exception as exc:  # noqa: BLE001 - then the leases run out (short) instead
                log.warning("could not release %d deliveries of %s (%s: %.200s); their leases will run out",
                            len(leftover), worker, type(exc).__name__, exc)
    if failures:
        raise failures[0]
    return counts["done"]


# --------------------------------------------------------------------------------------------
# operator actions
# --------------------------------------------------------------------------------------------


def retry_now(session: Session, delivery_pk: int) -> Delivery | None:
    """Put a dead, retrying or finished delivery back in the queue (`beekeeper deliveries retry`).

    Attempts restart from zero; the last error stays until the next run. A delivery a worker is
    processing right now is refused (DeliveryBusy) so it never runs twice at once.
    """
    row = session.get(Delivery, delivery_pk)
    if row is None:
        return None
    now = utcnow()
    if row.status == DeliveryStatus.PROCESSING and row.locked_until and row.locked_until >= now:
        raise DeliveryBusy(f"delivery {delivery_pk} is being processed by {row.locked_by} "
                           f"(lease until {row.locked_until:%Y-%m-%d %H:%M:%S} UTC)")
    row.status = DeliveryStatus.PENDING
    row.attempts = 0
    row.next_attempt_at = now
    row.locked_until = None
    row.locked_by = None
    session.add(row)
    notify_workers(session)  # at the caller's commit
    return row
