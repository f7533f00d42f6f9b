"""A worker processing several deliveries at once (issue 18 item 6): deliveries of one issue
never overlap and keep their order, deliveries of different issues run side by side, and a
graceful stop finishes what is in hand and releases the rest. Every wait has a timeout and
every overlap is proven by events, never by timing."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter, defaultdict

import pytest
from sqlmodel import Session, select

from bot.core.db import make_engine
from bot.core.models import Delivery
from bot.intake import inbox
from bot.intake.router import Router
from bot.intake.runtime import Runtime
from bot.intake.worker import Worker, default_concurrency
from tests.conftest import issue_event

LEASE = 60
WAIT = 30  # seconds: only ever reached when the code under test is wrong


def put(engine, number: int, note: str = "") -> str:
    payload = issue_event("opened", body=note or "hello", number=number)
    delivery_id = f"issue{number}-{note or uuid.uuid4().hex[:6]}"
    with engine.begin() as connection:
        assert inbox.store(connection, inbox.Incoming("issues", "opened", delivery_id, 1, 1, json.dumps(payload)))
    return delivery_id


def rows(engine) -> dict[str, Delivery]:
    with Session(engine) as session:
        return {d.delivery_id: d for d in session.exec(select(Delivery)).all()}


def drain(runtime, router, *, concurrency: int, worker: str = "pool", batch: int = 10, should_stop=None) -> int:
    return inbox.drain(runtime.engine, router, runtime.make_context, worker=worker, lease_seconds=LEASE,
                       max_attempts=3, batch=batch, concurrency=concurrency, should_stop=should_stop,
                       heartbeat_seconds=1.0)


class Tracker:
    """Records handler starts and ends per issue, and the most that ever ran at once."""

    def __init__(self):
        self.lock = threading.Condition()
        self.running: Counter = Counter()
        self.most_per_issue = 0
        self.most_overall = 0
        self.order: dict[int, list[str]] = defaultdict(list)
        self.finished: list[str] = []

    def start(self, event) -> int:
        number = event.payload["issue"]["number"]
        with self.lock:
            self.running[number] += 1
            self.most_per_issue = max(self.most_per_issue, self.running[number])
            self.most_overall = max(self.most_overall, sum(self.running.values()))
            self.order[number].append(event.delivery_id)
            self.lock.notify_all()
        return number

    def end(self, event, number: int) -> None:
        with self.lock:
            self.running[number] -= 1
            self.finished.append(event.delivery_id)
            self.lock.notify_all()

    def wait(self, predicate, what: str) -> None:
        with self.lock:
            assert self.lock.wait_for(predicate, timeout=WAIT), what


def test_deliveries_of_one_issue_never_overlap_and_keep_their_order(runtime):
    """Issue 1's first delivery waits until issues 2 and 3 are done (and they wait until it
    started): the pool had free threads all along, yet issue 1's second and third deliveries
    only started after its first ended."""
    first = put(runtime.engine, 1, "a")
    others = [put(runtime.engine, 2, "b"), put(runtime.engine, 3, "c")]
    later = [put(runtime.engine, 1, "d"), put(runtime.engine, 1, "e")]
    tracker = Tracker()
    router = Router()

    @router.on("issues", "opened")
    def handler(event, ctx):
        number = tracker.start(event)
        if event.delivery_id == first:
            tracker.wait(lambda: all(d in tracker.finished for d in others), "issues 2 and 3 never ran alongside")
        elif number != 1:  # issues 2 and 3 start only once issue 1's first delivery runs: they overlap it
            tracker.wait(lambda: first in tracker.order[1], "issue 1's first delivery never started")
        tracker.end(event, number)

    assert drain(runtime, router, concurrency=4) == 5
    assert tracker.order[1] == [first, *later]  # in the order they were stored
    assert tracker.most_per_issue == 1
    assert tracker.most_overall >= 2
    assert {row.status for row in rows(runtime.engine).values()} == {"processed"}


def test_deliveries_of_different_issues_run_at_once(runtime):
    """Four issues, concurrency 4: every handler waits at a barrier for all four, which only
    opens if they all run at the same time (a sequential worker breaks it and the deliveries fail)."""
    ids = [put(runtime.engine, number) for number in range(1, 5)]
    together = threading.Barrier(4, timeout=WAIT)
    met: list[str] = []
    router = Router()

    @router.on("issues", "opened")
    def handler(event, ctx):
        together.wait()
        met.append(event.delivery_id)

    assert drain(runtime, router, concurrency=4) == 4
    assert sorted(met) == sorted(ids)
    assert {(row.status, row.attempts) for row in rows(runtime.engine).values()} == {("processed", 1)}


def test_a_later_claim_joins_the_queue_of_an_issue_still_running(runtime):
    """batch 2: issue 1's third delivery is claimed only while its first still runs; it waits
    for the first two instead of overtaking them."""
    ids = [put(runtime.engine, 1, note) for note in "abc"]
    tracker = Tracker()
    router = Router()

    @router.on("issues", "opened")
    def handler(event, ctx):
        number = tracker.start(event)
        tracker.end(event, number)

    assert drain(runtime, router, concurrency=2, batch=2) == 3
    assert tracker.order[1] == ids
    assert tracker.most_per_issue == 1


def test_a_stop_finishes_the_deliveries_in_hand_and_releases_the_rest(runtime):
    """Two threads, each holding a delivery of its own issue, when the stop comes: both
    finish; the other three of the batch (one of a running issue, two never started) are
    released at once and uncounted, and the next worker processes them in order."""
    a1, b1 = put(runtime.engine, 1, "a1"), put(runtime.engine, 2, "b1")
    a2, c1, a3 = put(runtime.engine, 1, "a2"), put(runtime.engine, 3, "c1"), put(runtime.engine, 1, "a3")
    stop = threading.Event()
    let_go = threading.Event()
    tracker = Tracker()
    router = Router()

    @router.on("issues", "opened")
    def handler(event, ctx):
        number = tracker.start(event)
        assert let_go.wait(WAIT), "the test never let the deliveries finish"
        tracker.end(event, number)

    result: list = []
    thread = threading.Thread(target=lambda: result.append(drain(runtime, router, concurrency=2,
                                                                 should_stop=stop.is_set)))
    thread.start()
    try:
        tracker.wait(lambda: sum(tracker.running.values()) == 2, "two deliveries never ran at once")
        stop.set()
        let_go.set()
        thread.join(WAIT)
    finally:
        let_go.set()
    assert not thread.is_alive() and result == [2]
    stored = rows(runtime.engine)
    assert {d for d, row in stored.items() if row.status == "processed"} == {a1, b1}
    for delivery_id in (a2, c1, a3):
        row = stored[delivery_id]
        assert (row.status, row.attempts, row.locked_by, row.locked_until) == ("pending", 0, None, None)
    assert drain(runtime, router, concurrency=2, worker="next") == 3
    assert tracker.order[1] == [a1, a2, a3]
    assert {(row.status, row.attempts) for row in rows(runtime.engine).values()} == {("processed", 1)}


def test_a_failing_delivery_is_retried_and_does_not_stop_its_neighbours(runtime, frozen_clock):
    ids = [put(runtime.engine, number) for number in (1, 2, 3)]
    router = Router()

    @router.on("issues", "opened")
    def handler(event, ctx):
        if event.payload["issue"]["number"] == 2:
            raise RuntimeError("GitHub down")

    assert drain(runtime, router, concurrency=3) == 3
    stored = rows(runtime.engine)
    assert [stored[d].status for d in ids] == ["processed", "retry", "processed"]
    assert stored[ids[1]].last_error.startswith("RuntimeError")


def test_two_pooled_workers_process_each_delivery_exactly_once(db, database_url, settings, policy, github):
    """Two workers with three threads each, 60 deliveries over 12 issues."""
    ids = [put(db, number % 12 + 1, f"n{number}") for number in range(60)]
    seen: Counter = Counter()
    tracker = Tracker()
    router = Router()

    @router.on("issues", "opened")
    def handler(event, ctx):
        number = tracker.start(event)
        with tracker.lock:
            seen[event.delivery_id] += 1
        tracker.end(event, number)

    engines = [make_engine(database_url) for _ in range(2)]
    workers = [Worker(Runtime(settings=settings, policy=policy, engine=engine, github=github), name=f"w{n}",
                      router=router, batch=5, concurrency=3) for n, engine in enumerate(engines)]
    start = threading.Barrier(2, timeout=WAIT)
    errors: list[BaseException] = []

    def run(worker: Worker) -> None:
        start.wait()
        try:
            while worker.run_once():
                pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for engine in engines:
        engine.dispose()
    assert not errors, errors
    assert seen == Counter({d: 1 for d in ids})
    assert {(row.status, row.attempts) for row in rows(db).values()} == {("processed", 1)}


def test_order_keys_follow_the_issue_then_the_repository_then_the_installation():
    issue = issue_event("opened", body="x", number=7)
    repo_id = issue["repository"]["id"]
    assert inbox.order_key("issues", 1, json.dumps(issue)) == ("issue", repo_id, 7)
    comment = {"action": "created", "issue": {"number": 7}, "comment": {"id": 3}, "repository": {"id": repo_id}}
    assert inbox.order_key("issue_comment", 1, comment) == ("issue", repo_id, 7)
    pull = {"action": "opened", "number": 7, "pull_request": {"number": 7}, "repository": {"id": repo_id}}
    assert inbox.order_key("pull_request", 1, pull) == ("issue", repo_id, 7)
    check = {"check_run": {"pull_requests": [{"number": 9}]}, "repository": {"id": repo_id}}
    assert inbox.order_key("check_run", 1, check) == ("issue", repo_id, 9)
    assert inbox.order_key("push", 1, {"ref": "refs/heads/main", "repository": {"id": repo_id}}) == (
        "repository", repo_id)
    assert inbox.order_key("installation", 5, {"action": "created"}) == ("installation", 5)
    assert inbox.order_key("installation", 5, "[1, 2]") == ("installation", 5)


def test_default_concurrency_is_eight_on_postgresql_one_on_sqlite(runtime, settings):
    from dataclasses import replace

    from bot.core.config import load_settings

    expected = 1 if runtime.engine.dialect.name == "sqlite" else 8
    assert default_concurrency(runtime) == expected
    runtime.settings = replace(settings, worker_concurrency=6)
    assert default_concurrency(runtime) == 6
    assert load_settings({"BEEKEEPER_WORKER_CONCURRENCY": "3"}).worker_concurrency == 3
    assert load_settings({}).worker_concurrency is None
    with pytest.raises(ValueError, match="at least 1"):
        Worker(runtime, name="w", router=Router(), concurrency=0)
