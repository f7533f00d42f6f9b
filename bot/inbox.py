"""The durable inbox: storing deliveries, claiming them, retries with backoff, dead letters.

The web process only calls `store()`; workers call `claim()` and `process()`. A claim is a lease:
the row is marked `processing` until `locked_until`, so a worker killed mid-delivery leaves the
row to be claimed again once the lease runs out. On PostgreSQL candidate rows are selected
`FOR UPDATE SKIP LOCKED`, so several workers never take the same delivery at once; on SQLite
the database-wide write lock does the same. No failure path deletes a payload.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bot import metrics
from bot.clock import utcnow
from bot.db import session_scope
from bot.errors import RetryLater
from bot.models import Delivery, DeliveryStatus
from bot.router import Context, Event, Router

log = logging.getLogger("beekeeper.inbox")

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 3600.0


@dataclass
class Incoming:
    event: str
    action: str | None
    delivery_id: str
    hook_id: int
    installation_id: int | None
    payload: str


def store(session: Session, incoming: Incoming) -> bool:
    """Insert the delivery; False when this (hook id, delivery id) is already stored."""
    row = Delivery(
        hook_id=incoming.hook_id,
        delivery_id=incoming.delivery_id,
        event=incoming.event,
        action=incoming.action,
        installation_id=incoming.installation_id,
        payload=incoming.payload,
        received_at=utcnow(),
        next_attempt_at=utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def backoff_seconds(attempts: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [base·2^(n-1)/2, base·2^(n-1)], capped."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _claimable(now):
    return or_(
        and_(Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRY]), Delivery.next_attempt_at <= now),
        and_(Delivery.status == DeliveryStatus.PROCESSING, Delivery.locked_until < now),
    )


def claim(engine: Engine, worker: str, lease_seconds: int, limit: int = 10) -> list[int]:
    """Lease up to `limit` due deliveries to `worker`; returns their ids, oldest first."""
    now = utcnow()
    with session_scope(engine) as session:
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
        result = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), _claimable(now))
            .values(
                status=DeliveryStatus.PROCESSING,
                locked_until=now + timedelta(seconds=lease_seconds),
                locked_by=worker,
                attempts=Delivery.attempts + 1,
            )
            .returning(Delivery.id)
        )
        return sorted(result.scalars().all())


def _is_own_bot(event: Event, ctx: Context) -> bool:
    sender = event.sender
    if sender.get("type") != "Bot":
        return False
    slug = ctx.app.slug_if_known()
    return slug is not None and sender.get("login") == f"{slug}[bot]"


def _finish(engine: Engine, delivery_id: int, worker: str, **values) -> bool:
    """Write the outcome, unless the lease was lost to another worker (then change nothing)."""
    with session_scope(engine) as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.locked_by == worker,
                   Delivery.status == DeliveryStatus.PROCESSING)
            .values(locked_until=None, **values)
        )
        return result.rowcount == 1


def process(engine: Engine, delivery_id: int, worker: str, router: Router, make_context, max_attempts: int) -> str:
    """Run the handlers of one leased delivery and record the outcome; returns the new status.

    `make_context(session, event)` builds the handler Context. The handlers' database work is
    committed together with nothing else; the delivery's status is written in its own
    transaction afterwards so a failing handler's partial work is rolled back.
    """
    with Session(engine, expire_on_commit=False) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None:
            return "missing"
        event = Event.from_delivery(delivery)
        attempts = delivery.attempts
    started = time.perf_counter()
    status, error, retry_after = DeliveryStatus.PROCESSED, None, None
    try:
        with session_scope(engine) as session:
            ctx = make_context(session, event)
            if _is_own_bot(event, ctx):
                status = DeliveryStatus.SKIPPED
            elif router.dispatch(event, ctx) == 0:
                status = DeliveryStatus.SKIPPED
    except RetryLater as exc:
        status, error, retry_after = DeliveryStatus.RETRY, f"RetryLater: {exc}", exc.after
    except Exception as exc:  # noqa: BLE001 - any handler failure is retried, never lost
        status, error = DeliveryStatus.RETRY, f"{type(exc).__name__}: {exc}"
        log.warning("delivery=%s event=%s.%s attempt=%d failed: %s", event.delivery_id, event.name,
                    event.action, attempts, error, exc_info=log.isEnabledFor(logging.DEBUG))
    duration = time.perf_counter() - started
    metrics.HANDLER_DURATION.labels(event=event.name).observe(duration)

    now = utcnow()
    if status == DeliveryStatus.RETRY:
        if attempts >= max_attempts:
            status = DeliveryStatus.DEAD
            _finish(engine, delivery_id, worker, status=status, last_error=(error or "")[:4000])
            metrics.DELIVERIES_DEAD.labels(event=event.name).inc()
            log.error("delivery=%s event=%s.%s dead after %d attempts: %s", event.delivery_id, event.name,
                      event.action, attempts, error)
            return status
        delay = max(retry_after or 0.0, backoff_seconds(attempts))
        _finish(engine, delivery_id, worker, status=status, last_error=(error or "")[:4000],
                next_attempt_at=now + timedelta(seconds=delay))
        metrics.DELIVERIES_FAILED.labels(event=event.name).inc()
        return status
    _finish(engine, delivery_id, worker, status=status, processed_at=now, last_error=None)
    metrics.DELIVERIES_PROCESSED.labels(event=event.name, outcome=status).inc()
    log.info("delivery=%s event=%s.%s %s in %.0f ms", event.delivery_id, event.name, event.action, status,
             duration * 1000)
    return status


def drain(engine: Engine, router: Router, make_context, *, worker: str, lease_seconds: int, max_attempts: int,
          batch: int = 10) -> int:
    """Process every due delivery until none is left; returns how many were processed."""
    done = 0
    while True:
        ids = claim(engine, worker, lease_seconds, limit=batch)
        if not ids:
            return done
        for delivery_id in ids:
            process(engine, delivery_id, worker, router, make_context, max_attempts)
            done += 1


def retry_now(session: Session, delivery_pk: int) -> Delivery | None:
    """Put a dead, retrying or finished delivery back in the queue (the `deliveries retry` command)."""
    row = session.get(Delivery, delivery_pk)
    if row is None:
        return None
    row.status = DeliveryStatus.PENDING
    row.attempts = 0
    row.next_attempt_at = utcnow()
    row.locked_until = None
    row.locked_by = None
    session.add(row)
    return row
