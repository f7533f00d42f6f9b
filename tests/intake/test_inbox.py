"""The durable inbox: claims and leases, retries with backoff, dead letters, our own bot's events."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from bot.core.errors import RetryLater
from bot.core.models import Delivery, Installation
from bot.intake import inbox
from bot.intake.router import Router
from bot.intake.worker import Worker
from tests.conftest import HOOK_ID, PG_URL, deliver, issue_event, load_payload
from tests.fakegithub import BOT_USER

LEASE = 60
MAX_ATTEMPTS = 3  # the `settings` fixture's worker_max_attempts


def put(engine, event: str = "issues", payload: dict | None = None, delivery_id: str | None = None,
        hook_id: int = HOOK_ID) -> str:
    """Store a delivery the way the web intake does; returns its delivery id."""
    payload = payload if payload is not None else issue_event("opened", body="hello")
    delivery_id = delivery_id or str(uuid.uuid4())
    with engine.begin() as connection:
        assert inbox.store(connection, inbox.Incoming(
            event=event, action=payload.get("action"), delivery_id=delivery_id, hook_id=hook_id,
            installation_id=(payload.get("installation") or {}).get("id"), payload=json.dumps(payload)))
    return delivery_id


def row(engine, delivery_id: str) -> Delivery:
    with Session(engine) as session:
        return session.exec(select(Delivery).where(Delivery.delivery_id == delivery_id)).one()


@pytest.fixture
def router() -> Router:
    return Router()


@pytest.fixture
def calls() -> list[str]:
    return []


def drain(runtime, router, worker: str = "worker-a") -> int:
    return inbox.drain(runtime.engine, router, runtime.make_context, worker=worker, lease_seconds=LEASE,
                       max_attempts=MAX_ATTEMPTS)


# ---------------------------------------------------------------------------------------------
# storing
# ---------------------------------------------------------------------------------------------


def test_store_is_idempotent_per_delivery_id_whatever_the_hook(db):
    put(db, delivery_id="same")
    with db.begin() as connection:
        again = inbox.Incoming("issues", "opened", "same", HOOK_ID, 1, "{}")
        other_hook = inbox.Incoming("issues", "opened", "same", HOOK_ID + 1, 1, "{}")
        assert inbox.store(connection, again) is False
        assert inbox.store(connection, other_hook) is False  # GUIDs are unique across GitHub
    with Session(db) as session:
        rows = session.exec(select(Delivery).order_by(Delivery.id)).all()
    assert [(r.hook_id, r.delivery_id, r.status, r.attempts) for r in rows] == [(HOOK_ID, "same", "pending", 0)]
    assert json.loads(rows[0].payload)["action"] == "opened"  # the first payload was kept


def test_store_refuses_a_body_already_stored_under_another_delivery_id(db):
    with db.begin() as connection:
        first = inbox.Incoming("issues", "opened", "guid-a", HOOK_ID, 1, '{"a": 1}', payload_sha256="ab" * 32)
        replay = inbox.Incoming("issues", "opened", "guid-b", HOOK_ID, 1, '{"a": 1}', payload_sha256="ab" * 32)
        unhashed = inbox.Incoming("issues", "opened", "guid-c", HOOK_ID, 1, '{"a": 1}')
        assert inbox.store(connection, first) is True
        assert inbox.store(connection, replay) is False
        assert inbox.store(connection, unhashed) is True  # no hash given: only the GUID counts
    with Session(db) as session:
        assert session.exec(select(Delivery.delivery_id).order_by(Delivery.id)).all() == ["guid-a", "guid-c"]


def test_group_commit_refuses_replayed_bodies_in_one_batch_too(db):
    group = inbox.GroupCommit(db)
    items = [inbox.Incoming("issues", "opened", f"g-{n}", HOOK_ID, 1, "{}", payload_sha256="cd" * 32)
             for n in range(3)]
    outcomes = dict(_store_in_threads(group, items))
    assert sorted(outcomes.values(), key=str) == [False, False, True]
    with Session(db) as session:
        assert len(session.exec(select(Delivery)).all()) == 1


def test_store_accepts_a_session_too(session):
    assert inbox.store(session, inbox.Incoming("issues", None, "via-session", 1, None, "{}")) is True
    session.commit()
    assert session.exec(select(Delivery.delivery_id)).all() == ["via-session"]


def _store_in_threads(group: inbox.GroupCommit, items: list[inbox.Incoming]) -> list[tuple[str, object]]:
    """Queue every item while a commit is under way, then let them go: one shared commit.
    Returns (delivery id, what store returned or raised) for each item."""
    results: list[tuple[str, object]] = []

    def store(item: inbox.Incoming) -> None:
        try:
            results.append((item.delivery_id, group.store(item)))
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            results.append((item.delivery_id, exc))

    threads = [threading.Thread(target=store, args=(item,)) for item in items]
    with group.hold_commits():  # a commit in progress
        for thread in threads:
            thread.start()
        queued = group.wait_queued(len(items), timeout=30)
        assert queued, f"only {group.queued()} of {len(items)} deliveries queued"
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    return results


def test_group_commit_stores_concurrent_deliveries_in_one_transaction(db):
    group = inbox.GroupCommit(db)
    items = [inbox.Incoming("issues", "opened", f"batch-{n}", HOOK_ID, 1, "{}") for n in range(6)]
    results = dict(_store_in_threads(group, items))
    assert results == {f"batch-{n}": True for n in range(6)}
    assert group.transactions == 1
    with Session(db) as session:
        assert len(session.exec(select(Delivery)).all()) == 6
    assert group.store(items[0]) is False  # already stored
    assert group.transactions == 2


def test_group_commit_same_delivery_twice_in_one_batch_is_stored_once(db):
    group = inbox.GroupCommit(db)
    twice = inbox.Incoming("issues", "opened", "twin", HOOK_ID, 1, "{}")
    results = _store_in_threads(group, [twice, twice])
    assert sorted(outcome for _, outcome in results) == [False, True]
    with Session(db) as session:
        assert len(session.exec(select(Delivery)).all()) == 1


def test_group_commit_a_bad_delivery_does_not_fail_its_neighbours(db):
    group = inbox.GroupCommit(db)
    good = [inbox.Incoming("issues", "opened", f"good-{n}", HOOK_ID, 1, "{}") for n in range(2)]
    bad = inbox.Incoming("issues", "opened", "bad", 2**70, 1, "{}")  # no BIGINT holds this hook id
    results = dict(_store_in_threads(group, [good[0], bad, good[1]]))
    assert results["good-0"] is True and results["good-1"] is True
    assert isinstance(results["bad"], Exception)
    with Session(db) as session:
        assert sorted(session.exec(select(Delivery.delivery_id)).all()) == ["good-0", "good-1"]


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")
def test_group_commit_survives_a_connection_the_server_closed(db):
    from sqlalchemy import text

    group = inbox.GroupCommit(db)
    assert group.store(inbox.Incoming("issues", "opened", "before", HOOK_ID, 1, "{}"))
    with db.connect() as connection:  # what a PostgreSQL restart does to pooled connections
        connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    assert group.store(inbox.Incoming("issues", "opened", "after", HOOK_ID, 1, "{}")) is True
    with Session(db) as session:
        assert sorted(session.exec(select(Delivery.delivery_id)).all()) == ["after", "before"]


# ---------------------------------------------------------------------------------------------
# claiming and leases
# ---------------------------------------------------------------------------------------------


def test_claim_leases_due_deliveries_once(db, frozen_clock):
    first, second = put(db), put(db)
    ids = inbox.claim(db, "worker-a", LEASE, limit=10)
    assert len(ids) == 2
    assert inbox.claim(db, "worker-b", LEASE) == []  # leased: nobody else gets them
    leased = row(db, first)
    assert leased.status == "processing" and leased.locked_by == "worker-a" and leased.attempts == 1
    assert leased.locked_until == frozen_clock.now() + timedelta(seconds=LEASE)
    assert row(db, second).locked_by == "worker-a"


def test_claim_respects_limit_and_order(db):
    delivery_ids = [put(db) for _ in range(5)]
    first = inbox.claim(db, "w", LEASE, limit=2)
    rest = inbox.claim(db, "w", LEASE, limit=10)
    with Session(db) as session:
        by_pk = {d.id: d.delivery_id for d in session.exec(select(Delivery)).all()}
    assert [by_pk[i] for i in first + rest] == delivery_ids


def test_worker_killed_mid_delivery_is_picked_up_after_the_lease(runtime, router, calls, frozen_clock):
    """Worker A claims and dies (never finishes). Before the lease runs out nobody takes the
    delivery; after it, worker B processes it, and A's late result is thrown away."""
    router.on("issues", "opened")(lambda event, ctx: calls.append(event.delivery_id))
    delivery_id = put(runtime.engine)
    (pk,) = inbox.claim(runtime.engine, "worker-a", LEASE)

    frozen_clock.advance(seconds=LEASE - 1)
    assert drain(runtime, router, "worker-b") == 0
    frozen_clock.advance(seconds=2)
    assert drain(runtime, router, "worker-b") == 1
    done = row(runtime.engine, delivery_id)
    assert (done.status, done.attempts, done.locked_by) == ("processed", 2, "worker-b")
    assert calls == [delivery_id]

    # Worker A wakes up and tries to finish: its lease is gone, so nothing it did is committed.
    def late_handler(event, ctx):
        ctx.session.add(Installation(id=77, account_login="late"))

    late = Router()
    late.on("issues")(late_handler)
    outcome = inbox.process(runtime.engine, pk, "worker-a", late, runtime.make_context, MAX_ATTEMPTS)
    assert outcome == inbox.MISSING  # not leased to A any more: A does not even start
    with Session(runtime.engine) as session:
        assert session.get(Installation, 77) is None


def test_lease_lost_during_the_run_rolls_the_handlers_work_back(runtime, router, frozen_clock):
    """A handler outlives its lease and worker B takes the delivery meanwhile: A commits nothing."""
    delivery_id = put(runtime.engine)
    (pk,) = inbox.claim(runtime.engine, "worker-a", LEASE)
    taken_by_b: list[int] = []

    def slow_handler(event, ctx):
        ctx.session.add(Installation(id=78, account_login="slow"))
        frozen_clock.advance(seconds=LEASE + 1)
        thread = threading.Thread(target=lambda: taken_by_b.extend(inbox.claim(runtime.engine, "worker-b", LEASE)))
        thread.start()
        thread.join()

    router.on("issues", "opened")(slow_handler)
    assert inbox.process(runtime.engine, pk, "worker-a", router, runtime.make_context, MAX_ATTEMPTS) == \
        inbox.LEASE_LOST
    assert taken_by_b == [pk]
    current = row(runtime.engine, delivery_id)
    assert (current.status, current.locked_by, current.attempts) == ("processing", "worker-b", 2)
    with Session(runtime.engine) as session:
        assert session.get(Installation, 78) is None


def test_a_delivery_that_kills_its_worker_every_time_ends_dead(runtime, router, frozen_clock):
    delivery_id = put(runtime.engine)
    for _ in range(MAX_ATTEMPTS):  # claimed, worker dies, lease runs out — three times
        assert len(inbox.claim(runtime.engine, "doomed", LEASE, max_attempts=MAX_ATTEMPTS)) == 1
        frozen_clock.advance(seconds=LEASE + 1)
    assert inbox.claim(runtime.engine, "next", LEASE, max_attempts=MAX_ATTEMPTS) == []
    dead = row(runtime.engine, delivery_id)
    assert dead.status == "dead" and dead.attempts == MAX_ATTEMPTS
    assert "lease expired" in dead.last_error
    assert json.loads(dead.payload)["action"] == "opened"


def test_a_stop_request_finishes_the_delivery_in_hand_and_releases_the_rest(runtime, router, frozen_clock):
    """Graceful stop (SIGTERM): the handler running finishes; the four other deliveries of the
    batch are given back at once, uncounted, and another worker takes them without waiting."""
    delivery_ids = [put(runtime.engine) for _ in range(5)]
    stop = threading.Event()
    seen: list[tuple[str, str]] = []

    def handler(event, ctx):
        seen.append((event.delivery_id, "a" if not stop.is_set() else "late"))
        stop.set()  # SIGTERM arrives while the first delivery is processed

    router.on("issues", "opened")(handler)
    done = inbox.drain(runtime.engine, router, runtime.make_context, worker="worker-a", lease_seconds=LEASE,
                       max_attempts=MAX_ATTEMPTS, batch=5, should_stop=stop.is_set)
    assert done == 1 and seen == [(delivery_ids[0], "a")]
    first = row(runtime.engine, delivery_ids[0])
    assert (first.status, first.attempts, first.locked_by) == ("processed", 1, "worker-a")
    for delivery_id in delivery_ids[1:]:
        released = row(runtime.engine, delivery_id)
        assert (released.status, released.attempts, released.locked_by, released.locked_until) == (
            "pending", 0, None, None)
    # no time passes: the other worker does not wait for any lease
    assert drain(runtime, router, "worker-b") == 4
    for delivery_id in delivery_ids[1:]:
        finished = row(runtime.engine, delivery_id)
        assert (finished.status, finished.attempts, finished.locked_by) == ("processed", 1, "worker-b")


def test_release_gives_back_only_the_workers_own_leases_and_keeps_earlier_attempts(runtime, router, frozen_clock):
    failing = put(runtime.engine)
    router.on("issues", "opened")(lambda event, ctx: (_ for _ in ()).throw(RuntimeError("GitHub down")))
    assert drain(runtime, router) == 1  # failed once: waiting for a retry
    other = put(runtime.engine)
    frozen_clock.advance(hours=1)
    mine = inbox.claim(runtime.engine, "worker-a", LEASE, limit=1)
    theirs = inbox.claim(runtime.engine, "worker-b", LEASE, limit=1)
    assert len(mine) == len(theirs) == 1 and row(runtime.engine, failing).attempts == 2
    assert inbox.release(runtime.engine, "worker-a") == 1
    back = row(runtime.engine, failing)
    assert (back.status, back.attempts, back.locked_by, back.next_attempt_at) == (
        "retry", 1, None, frozen_clock.now())
    assert back.last_error.startswith("RuntimeError")
    held = row(runtime.engine, other)
    assert (held.status, held.locked_by, held.attempts) == ("processing", "worker-b", 1)


def test_heartbeat_keeps_a_long_delivery_leased_and_stops_with_the_worker(db, frozen_clock):
    """While the heartbeat runs, the lease never runs out however long the delivery takes; once
    it stops (the worker died), the delivery is free one lease later."""
    delivery_id = put(db)
    (pk,) = inbox.claim(db, "worker-a", LEASE)
    with inbox.Heartbeat(db, "worker-a", LEASE, interval=0.01) as beat:
        for round_ in range(1, 4):  # three whole leases go by
            frozen_clock.advance(seconds=LEASE - 1)
            assert beat.wait_beats(beat.beats + 2, timeout=30), "no heartbeat"
            assert row(db, delivery_id).locked_until == frozen_clock.now() + timedelta(seconds=LEASE), round_
            assert inbox.claim(db, "worker-b", LEASE) == []
    frozen_clock.advance(seconds=LEASE - 1)
    assert inbox.claim(db, "worker-b", LEASE) == []
    frozen_clock.advance(seconds=2)
    assert inbox.claim(db, "worker-b", LEASE) == [pk]
    taken = row(db, delivery_id)
    assert (taken.locked_by, taken.attempts) == ("worker-b", 2)
    assert inbox.renew(db, "worker-a", LEASE) == 0  # the old holder renews nothing it lost


def test_leases_are_short_by_default_and_renewed_three_times_per_lease():
    from bot.core.config import load_settings
    from bot.intake.worker import heartbeat_interval

    assert load_settings({}).worker_lease_seconds == 30
    assert load_settings({"BEEKEEPER_WORKER_LEASE_SECONDS": "12"}).worker_lease_seconds == 12
    assert heartbeat_interval(30) == 10


# ---------------------------------------------------------------------------------------------
# processing, retries, dead letters
# ---------------------------------------------------------------------------------------------


def test_handler_failing_twice_then_succeeding_is_processed_once(runtime, router, frozen_clock):
    outcomes = iter([RuntimeError("GitHub hiccup"), ValueError("still not"), None])
    committed: list[int] = []

    @router.on("issues", "opened")
    def flaky(event, ctx):
        ctx.session.add(Installation(id=len(committed) + 100, account_login="x"))
        error = next(outcomes)
        if error:
            raise error
        committed.append(1)

    delivery_id = put(runtime.engine)
    assert drain(runtime, router) == 1
    failed = row(runtime.engine, delivery_id)
    assert (failed.status, failed.attempts, failed.last_error) == ("retry", 1, "RuntimeError: GitHub hiccup")
    first_delay = (failed.next_attempt_at - frozen_clock.now()).total_seconds()
    assert inbox.BACKOFF_BASE_SECONDS / 2 <= first_delay <= inbox.BACKOFF_BASE_SECONDS

    assert drain(runtime, router) == 0  # not due yet
    frozen_clock.advance(seconds=first_delay)
    assert drain(runtime, router) == 1
    failed = row(runtime.engine, delivery_id)
    assert (failed.status, failed.attempts, failed.last_error) == ("retry", 2, "ValueError: still not")
    second_delay = (failed.next_attempt_at - frozen_clock.now()).total_seconds()
    assert inbox.BACKOFF_BASE_SECONDS <= second_delay <= 2 * inbox.BACKOFF_BASE_SECONDS  # exponential

    frozen_clock.advance(seconds=second_delay)
    assert drain(runtime, router) == 1
    done = row(runtime.engine, delivery_id)
    assert (done.status, done.attempts, done.last_error, done.locked_until) == ("processed", 3, None, None)
    assert done.processed_at == frozen_clock.now()
    assert committed == [1]
    with Session(runtime.engine) as session:  # the failed attempts' writes were rolled back
        assert [i.id for i in session.exec(select(Installation)).all()] == [100]

    frozen_clock.advance(days=1)
    assert drain(runtime, router) == 0  # processed means done


def test_handler_that_always_fails_is_dead_after_max_attempts_with_payload_kept(runtime, router, frozen_clock):
    @router.on("issues")
    def broken(event, ctx):
        raise KeyError("labels")

    delivery_id = put(runtime.engine)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert drain(runtime, router) == 1
        assert row(runtime.engine, delivery_id).attempts == attempt
        frozen_clock.advance(hours=2)
    dead = row(runtime.engine, delivery_id)
    assert dead.status == "dead"
    assert dead.last_error == "KeyError: 'labels'"
    assert json.loads(dead.payload) == issue_event("opened", body="hello")
    assert drain(runtime, router) == 0  # never claimed again by itself


def test_retry_later_chooses_the_next_attempt_time(runtime, router, frozen_clock):
    router.on("issues")(lambda event, ctx: (_ for _ in ()).throw(RetryLater("rate limited", after=900)))
    delivery_id = put(runtime.engine)
    drain(runtime, router)
    waiting = row(runtime.engine, delivery_id)
    assert waiting.status == "retry" and waiting.last_error.startswith("RetryLater: rate limited")
    assert waiting.next_attempt_at >= frozen_clock.now() + timedelta(seconds=900)


def test_backoff_is_exponential_with_jitter_and_capped():
    import random

    rng = random.Random(7)
    for attempts in range(1, 15):
        ceiling = min(inbox.BACKOFF_MAX_SECONDS, inbox.BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
        samples = {inbox.backoff_seconds(attempts, rng) for _ in range(20)}
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len(samples) > 1  # jitter: two workers retrying the same hiccup do not align


def test_event_without_handlers_is_skipped(runtime, router):
    delivery_id = put(runtime.engine, event="star", payload={"action": "created", "sender": {"login": "u"}})
    assert drain(runtime, router) == 1
    assert row(runtime.engine, delivery_id).status == "skipped"


def test_handlers_get_the_event_and_a_context(runtime, router, calls):
    seen = {}

    @router.on("installation", "created")
    def handler(event, ctx):
        seen.update(name=event.name, action=event.action, installation=ctx.installation_id,
                    repo=event.repo, policy=ctx.policy is runtime.policy, session=ctx.session is not None)

    put(runtime.engine, event="installation", payload=load_payload("installation.created"))
    drain(runtime, router)
    assert seen == {"name": "installation", "action": "created",
                    "installation": load_payload("installation.created")["installation"]["id"],
                    "repo": None, "policy": True, "session": True}


# ---------------------------------------------------------------------------------------------
# our own bot's events
# ---------------------------------------------------------------------------------------------


def test_events_from_our_own_bot_are_recorded_and_skipped(runtime, router, calls, fake_github):
    router.on("issue_comment", "created")(lambda event, ctx: calls.append(event.delivery_id))
    payload = issue_event("opened", body="x")
    ours = {**load_payload("issue_comment.created"), "sender": BOT_USER, "installation": payload["installation"]}
    ours_too = {**ours}
    other_bot = {**ours, "sender": {**BOT_USER, "login": "dependabot[bot]", "id": 49699333}}
    person = {**ours, "sender": {"login": "octocat", "id": 1, "type": "User"}}
    ids = {name: put(runtime.engine, "issue_comment", body)
           for name, body in [("ours", ours), ("ours_too", ours_too), ("other_bot", other_bot), ("person", person)]}

    drain(runtime, router)
    assert row(runtime.engine, ids["ours"]).status == "skipped"
    assert row(runtime.engine, ids["ours_too"]).status == "skipped"
    assert row(runtime.engine, ids["other_bot"]).status == "processed"
    assert row(runtime.engine, ids["person"]).status == "processed"
    assert sorted(calls) == sorted([ids["other_bot"], ids["person"]])
    assert fake_github.count("GET", r"^/app$") == 1  # the slug is fetched once, lazily


def test_human_senders_cost_no_api_call(runtime, router, calls, fake_github):
    router.on("issues")(lambda event, ctx: calls.append(event.delivery_id))
    put(runtime.engine)
    drain(runtime, router)
    assert len(calls) == 1
    assert fake_github.calls == []


def test_when_the_slug_cannot_be_fetched_the_delivery_is_retried(runtime, router, calls, fake_github):
    router.on("issue_comment")(lambda event, ctx: calls.append(event.delivery_id))
    fake_github.fail("GET", r"^/app$", 503, times=10)
    delivery_id = put(runtime.engine, "issue_comment", {**load_payload("issue_comment.created"), "sender": BOT_USER})
    drain(runtime, router)
    assert calls == []
    assert row(runtime.engine, delivery_id).status == "retry"
    assert "503" in row(runtime.engine, delivery_id).last_error


def test_without_app_credentials_bot_senders_are_handled(runtime, router, calls, settings, fake_github):
    from dataclasses import replace

    from bot.github.client import GitHubApp
    from bot.intake.runtime import Runtime

    bare = Runtime(settings=replace(settings, github_app_id=None, github_private_key=None), policy=runtime.policy,
                   engine=runtime.engine, github=GitHubApp(None, None, settings.github_api_url))
    router.on("issue_comment")(lambda event, ctx: calls.append(event.delivery_id))
    put(bare.engine, "issue_comment", {**load_payload("issue_comment.created"), "sender": BOT_USER})
    drain(bare, router)
    assert len(calls) == 1
    assert fake_github.calls == []


# ---------------------------------------------------------------------------------------------
# operator retry, the worker loop
# ---------------------------------------------------------------------------------------------


def test_retry_now_requeues_a_dead_delivery(runtime, router, frozen_clock, session):
    router.on("issues")(lambda event, ctx: 1 / 0)
    delivery_id = put(runtime.engine)
    for _ in range(MAX_ATTEMPTS):
        drain(runtime, router)
        frozen_clock.advance(hours=2)
    dead = row(runtime.engine, delivery_id)
    assert dead.status == "dead"

    requeued = inbox.retry_now(session, dead.id)
    session.commit()
    assert (requeued.status, requeued.attempts) == ("pending", 0)
    assert requeued.last_error == "ZeroDivisionError: division by zero"  # kept until the next run
    assert inbox.retry_now(session, 999_999) is None


def test_retry_now_refuses_a_delivery_under_a_live_lease(runtime, session, frozen_clock):
    put(runtime.engine)
    (pk,) = inbox.claim(runtime.engine, "busy-worker", LEASE)
    with pytest.raises(inbox.DeliveryBusy, match="busy-worker"):
        inbox.retry_now(session, pk)
    session.rollback()
    frozen_clock.advance(seconds=LEASE + 1)
    assert inbox.retry_now(session, pk).status == "pending"  # the lease ran out: fair game


def test_drain_stops_when_asked(runtime, router):
    for _ in range(3):
        put(runtime.engine)
    stop_after_one = iter([False, False, True])
    done = inbox.drain(runtime.engine, router, runtime.make_context, worker="w", lease_seconds=LEASE,
                       max_attempts=MAX_ATTEMPTS, batch=10, should_stop=lambda: next(stop_after_one, True))
    assert done == 1


def test_worker_thread_is_woken_by_a_stored_delivery(runtime, app, router, calls):
    """The embedded layout (`beekeeper serve`): the web intake wakes the in-process worker."""
    from dataclasses import replace

    processed = threading.Event()
    router.on("issues", "opened")(lambda event, ctx: (calls.append(event.delivery_id), processed.set()))
    runtime.settings = replace(runtime.settings, worker_poll_seconds=30)  # only a wake-up can be this fast
    runtime.wake = threading.Event()
    worker = Worker(runtime, name="embedded", router=router)
    thread = worker.start_thread()
    try:
        response = deliver(app.test_client(), "issues", issue_event("opened", body="hi"), delivery_id="wake-me")
        assert response.status_code == 202
        assert processed.wait(10)
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert calls == ["wake-me"]


def test_worker_runs_periodic_jobs_at_their_interval(runtime, router):
    runs: list[int] = []
    runtime.periodic = [(3600, lambda rt: runs.append(1)), (3600, lambda rt: 1 / 0)]
    worker = Worker(runtime, name="w", router=router)
    worker.run_periodic()
    worker.run_periodic()  # within the interval: not again; the failing job did not stop the other
    assert runs == [1]
