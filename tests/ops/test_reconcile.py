"""`beekeeper reconcile`: open request issues converge whatever events were missed; twice = once."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func
from sqlmodel import Session, select

from bot.cli import State, main
from bot.core.comments import STATUS_MARKER
from bot.core.config import load_policy
from bot.core.models import AccessRequest, AuditEvent, Grant, RequestState
from bot.intake.worker import Worker
from bot.ops import reconcile
from bot.rules.forms import bundled_schema, render_issue_body
from tests.conftest import PG_URL, REPO, deliver, issue_event
from tests.request_helpers import APPLICANT, add_people, make_request

WRITES = ("POST", "PATCH", "PUT", "DELETE")


def body_for(n: int, *, tier: str = "flower", description: str | None = None) -> str:
    """A valid form body for request n (its own app id and domain)."""
    schema = bundled_schema()
    terms = next(f for f in schema.fields if f.id == "terms")
    return render_issue_body(schema, {
        "app-name": f"Chat Helper {n}", "homepage": f"https://chathelper{n}.io",
        "description": description or "A chat front-end for students that calls the API from our server.",
        "domains": f"chathelper{n}.io", "referrer": f"chathelper{n}", "contact": f"owner{n}@chathelper{n}.io",
        "tier": tier, "terms": list(terms.options)})


def applicant(fake, n: int) -> dict:
    """Request n's applicant: their own (old) account, so no check links the requests."""
    login = f"dev-{n}"
    if login not in fake.users:
        fake.add_user(login, 8000 + n, created_at="2016-01-01T00:00:00Z")
    return {"login": login, "id": 8000 + n, "type": "User"}


def open_issue(fake, n: int, **kwargs) -> dict:
    """An issue filed from the form (GitHub applied the trigger label), not delivered to us."""
    return fake.add_issue(REPO, n, body=body_for(n, **kwargs), user=applicant(fake, n), labels=["special-access"],
                          title=f"Special access: Chat Helper {n}")


def delivered(fake, client, worker, n: int, **kwargs) -> dict:
    """An issue opened and processed the normal way (webhook → worker)."""
    issue = open_issue(fake, n, **kwargs)
    payload = issue_event("opened", body=issue["body"], number=n, user=issue["user"])
    assert deliver(client, "issues", payload).status_code == 202
    worker.run_once()
    return issue


def writes(fake) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in fake.calls if m in WRITES and "/access_tokens" not in p]


def status_comments(fake, n: int) -> list[dict]:
    return [c for c in fake.bot_comments(REPO, n) if STATUS_MARKER in c["body"]]


def request_row(engine, n: int) -> AccessRequest:
    with Session(engine) as s:
        return s.exec(select(AccessRequest).where(AccessRequest.issue_number == n)).one()


@pytest.fixture
def people(fake_github):
    add_people(fake_github)
    return fake_github


def test_a_request_that_was_never_delivered_is_reviewed(people, runtime):
    open_issue(people, 1)
    report = reconcile.reconcile(runtime)
    assert report.as_dict()["actions"] == {"review": ["acme/access#1"]}
    assert report.repos == ["acme/access"] and not report.errors
    assert len(status_comments(people, 1)) == 1
    assert request_row(runtime.engine, 1).state == RequestState.VALIDATED
    assert set(people.issue_labels(REPO, 1)) == {"special-access", "validated"}


def test_an_auto_approved_tier_is_approved_and_closed(people, runtime):
    open_issue(people, 1, tier="seed")
    reconcile.reconcile(runtime)
    assert request_row(runtime.engine, 1).state == RequestState.APPROVED
    assert people.issues[(REPO, 1)]["state"] == "closed"
    assert {"approved", "tier:seed"} <= set(people.issue_labels(REPO, 1))


def test_running_twice_changes_nothing_the_second_time(people, runtime, client, worker):
    """Every kind of drift at once, then a second run: no GitHub write, no database change."""
    open_issue(people, 1)  # never delivered
    delivered(people, client, worker, 2)  # body edited without an event
    people.issues[(REPO, 2)]["body"] = body_for(2, description="too short")
    delivered(people, client, worker, 3)  # status comment deleted
    people.comments.pop(status_comments(people, 3)[0]["id"])
    delivered(people, client, worker, 4, tier="seed")  # approved, then reopened by someone
    people.issues[(REPO, 4)]["state"] = "open"
    delivered(people, client, worker, 5)  # labels changed by hand
    people.issues[(REPO, 5)]["labels"] = [people._label(REPO, "special-access"), people._label(REPO, "approved")]
    delivered(people, client, worker, 6)  # nothing wrong

    first = reconcile.reconcile(runtime)
    assert first.as_dict()["actions"] == {
        "close": ["acme/access#4"], "labels": ["acme/access#5"], "recheck": ["acme/access#2"],
        "review": ["acme/access#1", "acme/access#3"]}
    assert first.issues == 6 and not first.errors

    people.calls.clear()
    with Session(runtime.engine) as s:
        audit_rows = s.exec(select(func.count()).select_from(AuditEvent)).one()
        rows = [r.model_dump() for r in s.exec(select(AccessRequest).order_by(AccessRequest.id)).all()]
    second = reconcile.reconcile(runtime)
    assert second.changed == 0 and not second.errors
    assert writes(people) == []
    with Session(runtime.engine) as s:
        assert s.exec(select(func.count()).select_from(AuditEvent)).one() == audit_rows
        assert [r.model_dump() for r in s.exec(select(AccessRequest).order_by(AccessRequest.id)).all()] == rows
    for n in range(1, 7):
        assert len(status_comments(people, n)) == 1, n


def test_an_edited_body_is_checked_again(people, runtime, client, worker):
    delivered(people, client, worker, 1)
    comment = dict(status_comments(people, 1)[0])  # a copy: the fake edits its own in place
    people.issues[(REPO, 1)]["body"] = body_for(1, description="too short")
    reconcile.reconcile(runtime)
    assert request_row(runtime.engine, 1).state == RequestState.NEEDS_INFO
    (after,) = status_comments(people, 1)
    assert after["id"] == comment["id"] and after["body"] != comment["body"]  # edited in place
    assert set(people.issue_labels(REPO, 1)) == {"special-access", "needs-info"}


def test_a_deleted_status_comment_is_posted_again(people, runtime, client, worker):
    delivered(people, client, worker, 1)
    people.comments.pop(status_comments(people, 1)[0]["id"])
    reconcile.reconcile(runtime)
    (comment,) = status_comments(people, 1)
    assert request_row(runtime.engine, 1).status_comment_id == comment["id"]


def test_an_approved_request_whose_issue_is_open_is_closed(people, runtime, client, worker):
    delivered(people, client, worker, 1, tier="seed")
    people.issues[(REPO, 1)]["state"] = "open"
    people.calls.clear()
    report = reconcile.reconcile(runtime)
    assert report.as_dict()["actions"] == {"close": ["acme/access#1"]}
    assert people.issues[(REPO, 1)]["state"] == "closed"
    assert people.issues[(REPO, 1)]["state_reason"] == "completed"
    assert writes(people) == [("PATCH", "/repos/acme/access/issues/1")]
    with Session(runtime.engine) as s:
        assert len(s.exec(select(Grant)).all()) == 1  # closing never grants twice


def test_an_approved_request_without_its_status_comment_gets_it_back_and_is_closed(people, runtime, client, worker):
    delivered(people, client, worker, 1, tier="seed")
    people.issues[(REPO, 1)]["state"] = "open"
    people.comments.pop(status_comments(people, 1)[0]["id"])
    report = reconcile.reconcile(runtime)
    assert report.as_dict()["actions"] == {"close": ["acme/access#1"], "review": ["acme/access#1"]}
    (comment,) = status_comments(people, 1)
    assert "approved" in comment["body"].lower()
    assert people.issues[(REPO, 1)]["state"] == "closed"
    assert request_row(runtime.engine, 1).state == RequestState.APPROVED


def test_labels_drifting_from_the_state_are_set_back(people, runtime, client, worker):
    delivered(people, client, worker, 1)
    people.issues[(REPO, 1)]["labels"] = [people._label(REPO, "special-access"), people._label(REPO, "rejected"),
                                          people._label(REPO, "good first issue")]
    reconcile.reconcile(runtime)
    # managed labels follow the state; labels Beekeeper does not manage are left alone
    assert set(people.issue_labels(REPO, 1)) == {"special-access", "validated", "good first issue"}


def test_a_rejected_request_reopened_while_we_were_away_is_reviewed_again(people, runtime, session):
    request = make_request(session, number=1, state=RequestState.REJECTED)
    people.add_issue(REPO, 1, body=body_for(1), user=dict(APPLICANT), labels=["special-access", "rejected"])
    reconcile.reconcile(runtime)
    assert request_row(runtime.engine, request.issue_number).state == RequestState.VALIDATED
    assert set(people.issue_labels(REPO, 1)) == {"special-access", "validated"}


def test_one_failing_issue_does_not_stop_the_others(people, runtime):
    for n in (1, 2, 3):
        open_issue(people, n)
    people.fail("POST", r"/issues/2/comments$", 422, times=1, body={"message": "Validation Failed"})
    report = reconcile.reconcile(runtime)
    assert [e.split(":")[0] for e in report.errors] == ["acme/access#2"]
    assert len(status_comments(people, 1)) == len(status_comments(people, 3)) == 1
    with Session(runtime.engine) as s:  # the failed issue's transaction was rolled back
        assert s.exec(select(AccessRequest).where(AccessRequest.issue_number == 2)).first() is None
    assert reconcile.reconcile(runtime).as_dict()["actions"] == {"review": ["acme/access#2"]}


def test_a_dry_run_only_says_what_it_would_do(people, runtime):
    open_issue(people, 1)
    report = reconcile.reconcile(runtime, dry_run=True)
    assert report.as_dict()["actions"] == {"review": ["acme/access#1"]}
    assert writes(people) == [] and status_comments(people, 1) == []


def test_only_issues_with_the_trigger_label_are_touched(people, runtime):
    people.add_issue(REPO, 9, body="Bug: the docs have a typo", user=dict(APPLICANT), labels=["bug"])
    assert reconcile.reconcile(runtime).issues == 0
    assert writes(people) == []


def test_the_command(people, runtime):
    open_issue(people, 1)
    state = State()
    state._runtime = runtime
    result = CliRunner().invoke(main, ["reconcile", "--repo", REPO], obj=state)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["actions"] == {"review": ["acme/access#1"]}
    people.uninstalled_repos.add("acme/elsewhere")
    result = CliRunner().invoke(main, ["reconcile", "--repo", "acme/elsewhere"], obj=state)
    assert result.exit_code == 1 and "not installed" in result.output


def test_the_worker_runs_it_periodically_when_the_policy_says_so(people, runtime, tmp_path):
    off = tmp_path / "off.yml"
    off.write_text("reconcile_interval_minutes: 0\n")
    assert not reconcile.schedule(dataclasses.replace(runtime, policy=load_policy(off), periodic=[]))
    assert reconcile.schedule(runtime) and reconcile.schedule(runtime)  # registered once
    assert runtime.periodic == [(3600.0, reconcile.periodic_reconcile)]
    open_issue(people, 1)
    worker = Worker(runtime, name="periodic-test")
    worker.run_periodic()
    assert len(status_comments(people, 1)) == 1
    worker.run_periodic()  # not due again for an hour
    assert people.count("GET", r"/repos/acme/access/issues$") == 1


@pytest.mark.skipif(not PG_URL, reason="the advisory lock is PostgreSQL's")
def test_only_one_process_reconciles_at_a_time(people, runtime):
    from sqlalchemy import text

    open_issue(people, 1)
    with runtime.engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": reconcile.ADVISORY_LOCK_KEY})
        report = reconcile.reconcile(runtime)
        other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": reconcile.ADVISORY_LOCK_KEY})
    assert report.skipped and writes(people) == []
    assert not reconcile.reconcile(runtime).skipped
