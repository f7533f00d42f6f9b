"""Several workers against one database never process a delivery twice.

On PostgreSQL the claim selects rows `FOR UPDATE SKIP LOCKED`; each worker here has its own
engine (its own connections), exactly as separate `beekeeper worker` processes would.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from bot.core.db import make_engine
from bot.core.models import Delivery
from bot.intake import inbox
from bot.intake.router import Router
from bot.intake.runtime import Runtime
from bot.intake.worker import Worker
from tests.conftest import PG_URL, issue_event


def fill_inbox(engine, count: int) -> list[str]:
    payload = json.dumps(issue_event("opened", body="load"))
    ids = [f"delivery-{n:04d}" for n in range(count)]
    with engine.begin() as connection:
        for delivery_id in ids:
            inbox.store(connection, inbox.Incoming("issues", "opened", delivery_id, 1, 1, payload))
    return ids


def drain_with_two_workers(db, database_url, settings, policy, github, count: int) -> tuple[Counter, Counter]:
    ids = fill_inbox(db, count)
    invocations: Counter = Counter()
    by_worker: Counter = Counter()
    lock = threading.Lock()
    router = Router()

    @router.on("issues", "opened")
    def handler(event, ctx):
        with lock:
            invocations[event.delivery_id] += 1
            # a pooled worker (PostgreSQL's default) runs handlers in threads named "<worker>-task_N"
            by_worker[threading.current_thread().name.partition("-task")[0]] += 1
        time.sleep(0.001)  # let the other worker in: handlers do I/O in real life

    engines = [make_engine(database_url) for _ in range(2)]
    workers = [Worker(Runtime(settings=settings, policy=policy, engine=engine, github=github),
                      name=f"worker-{n}", router=router, batch=5) for n, engine in enumerate(engines)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(worker: Worker) -> None:
        start.wait()
        try:
            while worker.run_once():
                pass
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,), name=w.name) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for engine in engines:
        engine.dispose()
    assert not errors, errors
    assert set(invocations) == set(ids)
    return invocations, by_worker


def assert_each_processed_once(db, invocations: Counter, by_worker: Counter, count: int) -> None:
    assert [d for d, n in invocations.items() if n != 1] == []  # exactly once, every one
    assert sum(by_worker.values()) == count
    assert set(by_worker) == {"worker-0", "worker-1"}, by_worker  # both workers took part
    with Session(db) as session:
        outcome = dict(session.exec(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
        attempts = set(session.exec(select(Delivery.attempts)).all())
        holders = dict(session.exec(select(Delivery.locked_by, func.count()).group_by(Delivery.locked_by)).all())
    assert outcome == {"processed": count}
    assert attempts == {1}  # nobody claimed a delivery that another worker held
    assert holders == dict(by_worker)  # the lease holder is the worker whose handler ran


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")
def test_two_workers_on_postgresql_drain_500_deliveries_each_exactly_once(db, database_url, settings, policy, github):
    invocations, by_worker = drain_with_two_workers(db, database_url, settings, policy, github, 500)
    assert_each_processed_once(db, invocations, by_worker, 500)


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")
def test_concurrent_claims_on_postgresql_are_disjoint(db, database_url):
    fill_inbox(db, 200)
    engines = [make_engine(database_url) for _ in range(4)]
    claimed: dict[int, list[int]] = {}
    start = threading.Barrier(4)

    def claim_all(n: int) -> None:
        start.wait()
        mine: list[int] = []
        while batch := inbox.claim(engines[n], f"claimer-{n}", 60, limit=7):
            mine += batch
        claimed[n] = mine

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    everything = [pk for batch in claimed.values() for pk in batch]
    assert len(everything) == len(set(everything)) == 200


def test_two_workers_on_the_test_database_drain_each_delivery_once(db, database_url, settings, policy, github):
    """The same guarantee on whichever database this run uses (SQLite: its write lock)."""
    invocations, by_worker = drain_with_two_workers(db, database_url, settings, policy, github, 60)
    assert [d for d, n in invocations.items() if n != 1] == []
    assert sum(by_worker.values()) == 60


def test_a_stopped_worker_hands_its_batch_to_the_next_one_at_once(db, database_url, settings, policy, github):
    """Worker A is stopped (SIGTERM's handler calls stop()) in the middle of its first delivery:
    it finishes that one, releases the other nine of its batch and its loop returns; worker B then
    takes them at once — the lease (10 minutes) never runs out in this test — each on attempt 1."""
    from dataclasses import replace

    ids = fill_inbox(db, 20)
    long_lease = replace(settings, worker_lease_seconds=600)
    in_hand = threading.Event()
    let_go = threading.Event()
    handled: list[tuple[str, str]] = []
    router = Router()

    @router.on("issues", "opened")
    def handler(event, ctx):
        name = threading.current_thread().name.partition("-task")[0]  # a pooled worker's thread
        handled.append((name, event.delivery_id))
        if name == "worker-a":
            in_hand.set()
            assert let_go.wait(30), "the test never let worker A finish"

    engines = [make_engine(database_url) for _ in range(2)]
    a, b = (Worker(Runtime(settings=long_lease, policy=policy, engine=engine, github=github), name=f"worker-{n}",
                   router=router, batch=10) for n, engine in zip("ab", engines, strict=True))
    thread = threading.Thread(target=a.run_forever, name="worker-a")
    thread.start()
    try:
        assert in_hand.wait(30), "worker A never started a delivery"
        a.stop()  # what the SIGTERM handler does
        let_go.set()
        thread.join(30)
        assert not thread.is_alive()
        with Session(db) as session:
            rows = {d.delivery_id: d for d in session.exec(select(Delivery)).all()}
        assert [d for d, row in rows.items() if row.status == "processed"] == [ids[0]]  # only the one in hand
        assert all(rows[d].status == "pending" and rows[d].attempts == 0 and rows[d].locked_by is None
                   for d in ids[1:])  # nine released, ten never claimed: all simply due
        assert b.run_once() == 19
    finally:
        let_go.set()
        for engine in engines:
            engine.dispose()
    assert [d for _, d in handled] == ids  # each exactly once, in order
    with Session(db) as session:
        rows = session.exec(select(Delivery)).all()
    assert {(r.status, r.attempts) for r in rows} == {("processed", 1)}
    assert {r.locked_by for r in rows} == {"worker-a", "worker-b"}
