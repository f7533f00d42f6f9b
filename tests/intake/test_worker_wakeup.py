"""Workers are woken by PostgreSQL notifications, not only by their poll (issue 18, the burst row).

Each worker here polls every 30 s; a delivery stored while it waits must be processed well
before that (10 s is the deadline given, far below the poll), which only a notification can do.
Every wait is on an Event or a Condition: nothing assumes another thread has got somewhere.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid

import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session

from bot.core.clock import utcnow
from bot.core.db import session_scope
from bot.core.models import Delivery, DeliveryStatus
from bot.intake import inbox
from bot.intake.router import Router
from bot.intake.runtime import Runtime
from bot.intake.wakeup import APPLICATION_NAME
from bot.intake.worker import Worker
from tests.conftest import PG_URL, issue_event

LONG_POLL = 30.0
DEADLINE = 10.0  # far below LONG_POLL: met only when something other than the poll woke the worker

def incoming(delivery_id: str | None = None) -> inbox.Incoming:
    delivery_id = delivery_id or f"wake-{uuid.uuid4().hex[:12]}"
    return inbox.Incoming("issues", "opened", delivery_id, 1, 1, json.dumps(issue_event("opened", body="wake")))


class Handled:
    """A router whose `issues.opened` handler records each delivery id and signals it."""

    def __init__(self):
        self.router = Router()
        self.lock = threading.Lock()
        self.events: dict[str, threading.Event] = {}

        @self.router.on("issues", "opened")
        def handler(event, ctx):
            self.event_for(event.delivery_id).set()

    def event_for(self, delivery_id: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(delivery_id, threading.Event())

    def wait(self, delivery_id: str, timeout: float) -> bool:
        return self.event_for(delivery_id).wait(timeout)


@pytest.fixture
def handled() -> Handled:
    return Handled()


@pytest.fixture
def running_worker(db, settings, policy, github, handled):
    """A running worker polling every 30 s, listening, and idle (only a wake-up gets it going)."""
    runtime = Runtime(settings=dataclasses.replace(settings, worker_poll_seconds=LONG_POLL), policy=policy,
                      engine=db, github=github)
    worker = Worker(runtime, name="wakeup-worker", router=handled.router)
    thread = worker.start_thread()
    try:
        assert worker.listener is not None
        assert worker.listener.wait_connects(1, DEADLINE), "the listener never listened"
        assert worker.wait_idle(DEADLINE), "the worker never went idle"
        yield worker
    finally:
        worker.stop()
        thread.join(DEADLINE)
    assert not thread.is_alive()
    assert not worker.listener.running()  # closed on graceful stop


def test_only_a_postgresql_worker_listens(runtime):
    worker = Worker(runtime, name="w", router=Router())
    assert (worker.listener is not None) == (runtime.engine.dialect.name == "postgresql")


def _listen(database_url: str) -> psycopg.Connection:
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    connection = psycopg.connect(conninfo, autocommit=True)
    connection.execute(f"LISTEN {inbox.CHANNEL}")
    return connection


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")
@pytest.mark.parametrize("how", ["intake", "store", "release", "retry_now"])
def test_a_transaction_that_makes_a_delivery_due_notifies_the_workers(db, database_url, how):
    if how in ("release", "retry_now"):  # a claimed delivery first, stored before listening
        inbox.GroupCommit(db).store(incoming())
        (pk,) = inbox.claim(db, "holder", 60)
    with _listen(database_url) as listener:
        if how == "intake":  # the web intake's path (GroupCommit → one multi-row INSERT)
            assert inbox.GroupCommit(db).store(incoming())
        elif how == "store":
            with session_scope(db) as session:
                assert inbox.store(session, incoming())
        elif how == "release":
            assert inbox.release(db, "holder", [pk]) == 1
        else:
            with session_scope(db) as session:
                session.execute(text("UPDATE delivery SET locked_until = now() - interval '1 hour'"))
            with session_scope(db) as session:
                assert inbox.retry_now(session, pk) is not None
        received = list(listener.notifies(timeout=DEADLINE, stop_after=1))
    assert [n.channel for n in received] == [inbox.CHANNEL]


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")
def test_a_stored_delivery_wakes_a_worker_with_a_long_poll(db, running_worker, handled):
    item = incoming()
    assert inbox.GroupCommit(db).store(item)  # exactly what POST /webhook does
    assert handled.wait(item.delivery_id, DEADLINE), "the worker was not woken by the notification"


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")
def test_without_a_notification_the_poll_still_finds_the_delivery(db, settings, policy, github, handled):
    runtime = Runtime(settings=dataclasses.replace(settings, worker_poll_seconds=0.2), policy=policy,
                      engine=db, github=github)
    worker = Worker(runtime, name="polling-worker", router=handled.router)
    thread = worker.start_thread()
    try:
        assert worker.listener.wait_connects(1, DEADLINE)
        assert worker.wait_idle(DEADLINE)
        item = incoming()
        now = utcnow()
        with Session(db) as session:  # a plain ORM insert: no NOTIFY, as if the notification were lost
            session.add(Delivery(hook_id=1, delivery_id=item.delivery_id, event=item.event, action=item.action,
                                 installation_id=1, payload=item.payload, received_at=now,
                                 status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now))
            session.commit()
        assert handled.wait(item.delivery_id, DEADLINE)
    finally:
        worker.stop()
        thread.join(DEADLINE)
    assert not thread.is_alive()


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")
def test_the_listener_and_the_notifier_reconnect_after_their_connections_are_killed(db, running_worker, handled):
    """What a database restart does to both ends: each reconnects by itself, no process restarts."""
    listener = running_worker.listener
    group = inbox.GroupCommit(db)
    first = incoming()
    assert group.store(first)  # the intake's notifier now has its connection open
    assert handled.wait(first.delivery_id, DEADLINE)
    assert running_worker.wait_idle(DEADLINE)
    with db.connect() as connection:
        killed = connection.execute(text(
            "SELECT application_name FROM pg_stat_activity WHERE application_name IN (:listener, :notifier) "
            "AND datname = current_database() AND pg_terminate_backend(pid)"),
            {"listener": APPLICATION_NAME, "notifier": inbox._Notifier.APPLICATION_NAME}).scalars().all()
    assert sorted(killed) == sorted([APPLICATION_NAME, inbox._Notifier.APPLICATION_NAME])
    assert listener.wait_connects(2, DEADLINE * 3), "the listener did not reconnect"
    assert running_worker.wait_idle(DEADLINE)
    item = incoming()
    assert group.store(item)
    assert handled.wait(item.delivery_id, DEADLINE), "the worker was not woken after the reconnections"
