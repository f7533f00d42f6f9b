"""Exactly once under real concurrency: two workers, each with its own engine (its own
connections), drain the same inbox at the same moment on PostgreSQL.

The race the maintainers cause — two of them typing /approve on one issue within a second — must
give one grant, one approval comment and one label change; the same comment delivered twice
(a replayed job) must be handled once even when both copies run at the same time.
"""

from __future__ import annotations

import json
import threading

import pytest
from sqlmodel import Session, select

from bot.core.db import make_engine
from bot.core.models import AccessRequest, Delivery, Grant, RequestState
from bot.github.client import GitHubApp
from bot.intake import inbox
from bot.intake.handlers import load_handlers
from bot.intake.router import router
from bot.intake.runtime import Runtime
from tests.conftest import PG_URL, REPO
from tests.request_helpers import MAINTAINER, MAINTAINER_2, add_people, open_issue, post_comment

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not PG_URL, reason="needs BEEKEEPER_TEST_DATABASE_URL (PostgreSQL)")]

ISSUES = (1, 2, 3)


def drain_concurrently(runtime: Runtime, workers: int = 2) -> None:
    """`workers` threads, each with its own engine and GitHub client, start draining together."""
    load_handlers()
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        engine = make_engine(runtime.settings.database_url)
        own = Runtime(settings=runtime.settings, policy=runtime.policy, engine=engine,
                      github=GitHubApp.from_settings(runtime.settings, sleep=lambda _s: None))
        try:
            barrier.wait(timeout=10)
            inbox.drain(engine, router, own.make_context, worker=f"racer-{index}", lease_seconds=60,
                        max_attempts=3, batch=1)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    with Session(runtime.engine) as s:
        statuses = {d.status for d in s.exec(select(Delivery)).all()}
    assert statuses == {"processed"}, statuses


def approval_label_writes(fake, number: int) -> int:
    return sum(1 for method, path, body in fake.calls
               if method == "POST" and path == f"/repos/{REPO}/issues/{number}/labels"
               and "approved" in (body or {}).get("labels", []))


def test_two_maintainers_approving_at_once_give_one_grant(client, worker, runtime, fake_github):
    add_people(fake_github)
    issues = {n: open_issue(client, worker, fake_github, number=n,
                            body=None if n == 1 else _body(n)) for n in ISSUES}
    for n, issue in issues.items():  # two /approve comments per issue, stored side by side
        post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve", run=False)
        post_comment(client, worker, fake_github, issue, MAINTAINER_2, "/approve", run=False)

    drain_concurrently(runtime)

    with Session(runtime.engine) as s:
        for n in ISSUES:
            request = s.exec(select(AccessRequest).where(AccessRequest.issue_number == n)).one()
            assert request.state == RequestState.APPROVED
            assert len(s.exec(select(Grant).where(Grant.request_id == request.id)).all()) == 1
    for n in ISSUES:
        approvals = [c for c in fake_github.bot_comments(REPO, n) if "beekeeper:decision:approve" in c["body"]]
        assert len(approvals) == 1, n
        assert approval_label_writes(fake_github, n) == 1, n
        replies = [c for c in fake_github.bot_comments(REPO, n) if "beekeeper:reply" in c["body"]]
        assert len(replies) == 1 and "already approved" in replies[0]["body"]


def test_one_comment_delivered_twice_at_once_is_handled_once(client, worker, runtime, fake_github):
    add_people(fake_github)
    issue = open_issue(client, worker, fake_github)
    body = "/needs-info Please tell us about your traffic."
    comment_id, payload = post_comment(client, worker, fake_github, issue, MAINTAINER, body,
                                       delivery_id="dup-a", run=False)
    from tests.conftest import deliver

    # The very same body under a new GUID is refused as a replay; the same comment in other
    # bytes (another serialisation) is a second delivery, and both are drained at once.
    assert deliver(client, "issue_comment", payload, delivery_id="dup-b").status_code == 200
    reworded = json.dumps(payload, indent=2).encode()
    assert deliver(client, "issue_comment", reworded, delivery_id="dup-c").status_code == 202

    drain_concurrently(runtime)

    asks = [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:decision:request.needs_info" in c["body"]]
    assert len(asks) == 1
    assert fake_github.comments[comment_id]["reactions"] == {"eyes": 1, "+1": 1}


def _body(n: int) -> str:
    from tests.request_helpers import form_body

    return form_body(referrer=f"app{n}x", domains=f"app{n}.freeaichat.io", app_name=f"Chat number {n}")


def test_two_grants_racing_for_one_domain_meet_the_database_constraint(runtime, session):
    """The first grant has flushed but not committed its domain when the second checks: the check
    cannot see it, so only the unique index stops the second — as a clear GrantConflict."""
    from bot.access import grants
    from tests.request_helpers import make_request

    first_request = make_request(session, number=1, referrer="first", domains=["race.io"])
    second_request = make_request(session, number=2, referrer="second", domains=["race.io"])
    flushed = threading.Event()
    outcome: dict[str, str] = {}

    def first() -> None:
        engine = make_engine(runtime.settings.database_url)
        with Session(engine) as s:
            grants.create_grant(s, s.get(AccessRequest, first_request.id), "seed", "a", app_id="first",
                                domains=["race.io"], source="t")
            flushed.set()
            # Commit only once PostgreSQL shows the second insert waiting on the index entry (no
            # sleep that assumes it got there).
            assert _wait_for_lock_waiter(engine, timeout=30), "the second insert never waited on the first"
            s.commit()
            outcome["first"] = "committed"
        engine.dispose()

    def second() -> None:
        flushed.wait(10)
        engine = make_engine(runtime.settings.database_url)
        with Session(engine) as s:
            try:
                grants.create_grant(s, s.get(AccessRequest, second_request.id), "seed", "b", app_id="second",
                                    domains=["race.io"], source="t")
                s.commit()
                outcome["second"] = "committed"
            except grants.GrantConflict as exc:
                outcome["second"] = exc.kind
                outcome["message"] = str(exc)
        engine.dispose()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcome["first"] == "committed" and outcome["second"] == "race"
    assert "race.io" in outcome["message"]
    session.expire_all()
    assert [g.app_id for g in session.exec(select(Grant)).all()] == ["first"]


def _wait_for_lock_waiter(engine, timeout: float) -> bool:
    """Until another session of this database waits on a lock (pg_stat_activity), or timeout."""
    import time

    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")).scalar_one()
            connection.rollback()  # a fresh snapshot of pg_stat_activity next time
            if waiting:
                return True
            time.sleep(0.01)
    return False
