"""The maintainers' story end to end: signed webhooks into /webhook, the worker drains the inbox,
and the fake GitHub and the database show what came out."""

from __future__ import annotations

import copy
import json

import pytest
from sqlmodel import Session, select

from bot.core.models import AccessRequest, AuditEvent, Delivery, Grant, GrantDomain, RequestState
from tests.conftest import REPO, deliver, issue_event
from tests.fakegithub import BOT_USER
from tests.request_helpers import (
    APPLICANT,
    MAINTAINER,
    MAINTAINER_2,
    STRANGER,
    add_people,
    form_body,
    open_issue,
    post_comment,
)


@pytest.fixture(autouse=True)
def people(fake_github):
    add_people(fake_github)


def request_row(runtime, number: int = 1) -> AccessRequest:
    with Session(runtime.engine) as s:
        return s.exec(select(AccessRequest).where(AccessRequest.issue_number == number)).one()


def grants(runtime) -> list[Grant]:
    with Session(runtime.engine) as s:
        return list(s.exec(select(Grant)).all())


def decision_comments(fake, kind: str, number: int = 1) -> list[dict]:
    return [c for c in fake.bot_comments(REPO, number) if f"beekeeper:decision:{kind}" in c["body"]]


def github_writes(fake) -> int:
    return sum(1 for method, _, _ in fake.calls if method in ("POST", "PATCH", "PUT", "DELETE"))


def test_opened_validated_approved_closed(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    assert request_row(runtime).state == RequestState.VALIDATED
    assert "validated" in fake_github.issue_labels(REPO, 1)

    comment_id, _ = post_comment(client, worker, fake_github, issue, MAINTAINER, "LGTM!\n\n/approve flower")

    [grant] = grants(runtime)
    assert (grant.tier, grant.app_id, grant.github_user_id, grant.approved_by) == (
        "flower", "freeaichat", APPLICANT["id"], MAINTAINER["login"])
    with Session(runtime.engine) as s:
        assert sorted(d.domain for d in s.exec(select(GrantDomain)).all()) == ["app.freeaichat.io", "freeaichat.io"]
        approved = s.exec(select(AuditEvent).where(AuditEvent.action == "request.approved")).one()
        assert approved.source.endswith(f"#issuecomment-{comment_id}")
    assert request_row(runtime).state == RequestState.APPROVED
    [approval] = decision_comments(fake_github, "approve")
    assert "@alice-dev" in approval["body"] and "tier flower" in approval["body"]
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["approved", "special-access", "tier:flower"]
    assert fake_github.issues[(REPO, 1)]["state_reason"] == "completed"
    assert fake_github.comments[comment_id]["reactions"] == {"eyes": 1, "+1": 1}
    [status] = [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:status" in c["body"]]
    assert "Approved" in status["body"]


def test_redelivered_approval_changes_nothing(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    comment_id, payload = post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve",
                                       delivery_id="approve-1")
    comments_before, writes_before = len(fake_github.comments), github_writes(fake_github)

    # GitHub redelivers with the same delivery id: the inbox already has it.
    assert deliver(client, "issue_comment", payload, delivery_id="approve-1").status_code == 200
    # The same signed body resent under a new delivery id is a replay: not stored again.
    assert deliver(client, "issue_comment", payload, delivery_id="approve-1-replay").status_code == 200
    # The same comment in other bytes (another hook's serialisation, a replayed job) is stored,
    # and handled once: the comment id was already processed.
    reworded = json.dumps(payload, indent=2).encode()
    assert deliver(client, "issue_comment", reworded, delivery_id="approve-1-other").status_code == 202
    assert worker.run_once() == 1

    assert len(grants(runtime)) == 1
    assert len(fake_github.comments) == comments_before
    assert github_writes(fake_github) == writes_before
    assert fake_github.comments[comment_id]["reactions"] == {"eyes": 1, "+1": 1}


def test_a_second_approve_says_already_approved(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve")
    second, _ = post_comment(client, worker, fake_github, issue, MAINTAINER_2, "/approve nectar")
    assert [g.tier for g in grants(runtime)] == ["flower"]
    assert len(decision_comments(fake_github, "approve")) == 1
    [reply] = [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:reply" in c["body"]]
    assert "already approved" in reply["body"]
    assert fake_github.comments[second]["reactions"] == {"eyes": 1, "+1": 1}


def test_a_failure_half_way_is_retried_without_doubling(client, worker, runtime, fake_github, frozen_clock):
    issue = open_issue(client, worker, fake_github)
    fake_github.fail("PATCH", r"/issues/1$", 500, times=4)  # closing the issue fails every try
    post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve")
    assert grants(runtime) == []  # rolled back
    assert len(decision_comments(fake_github, "approve")) == 1  # but the comment was posted
    with Session(runtime.engine) as s:
        assert s.exec(select(Delivery).where(Delivery.event == "issue_comment")).one().status == "retry"

    frozen_clock.advance(hours=2)
    assert worker.run_once() == 1
    assert len(grants(runtime)) == 1
    assert len(decision_comments(fake_github, "approve")) == 1
    assert fake_github.issues[(REPO, 1)]["state"] == "closed"


def test_reject(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    post_comment(client, worker, fake_github, issue, MAINTAINER, "/reject This API is not for scraping.")
    row = request_row(runtime)
    assert (row.state, row.decision_reason) == (RequestState.REJECTED, "This API is not for scraping.")
    [comment] = decision_comments(fake_github, "request.rejected")
    assert "not for scraping" in comment["body"]
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["rejected", "special-access"]
    assert fake_github.issues[(REPO, 1)]["state_reason"] == "not_planned"
    assert grants(runtime) == []


def test_reject_without_reason_is_refused(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    comment_id, _ = post_comment(client, worker, fake_github, issue, MAINTAINER, "/reject")
    assert request_row(runtime).state == RequestState.VALIDATED
    assert fake_github.comments[comment_id]["reactions"] == {"eyes": 1, "confused": 1}


def test_needs_info_then_tier_then_revoke(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    post_comment(client, worker, fake_github, issue, MAINTAINER, "/needs-info What is the homepage for?")
    assert request_row(runtime).state == RequestState.NEEDS_INFO
    assert "needs-info" in fake_github.issue_labels(REPO, 1)

    post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve")
    post_comment(client, worker, fake_github, issue, MAINTAINER_2, "/tier nectar")
    [grant] = grants(runtime)
    assert grant.tier == "nectar"
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["approved", "special-access", "tier:nectar"]
    assert len(decision_comments(fake_github, "grant.tier_changed")) == 1

    post_comment(client, worker, fake_github, issue, MAINTAINER, "/revoke Keys were published in a repo.")
    [grant] = grants(runtime)
    assert grant.status == "revoked" and grant.revoke_reason == "Keys were published in a repo."
    assert request_row(runtime).state == RequestState.REVOKED
    assert fake_github.issue_labels(REPO, 1) == ["special-access"]
    assert len(decision_comments(fake_github, "revoke")) == 1


def test_several_commands_in_one_comment_run_in_order(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    comment_id, _ = post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve\n/tier nectar\n/lgtm")
    [grant] = grants(runtime)
    assert grant.tier == "nectar"
    [reply] = [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:reply" in c["body"]]
    assert "/lgtm" in reply["body"] and "/approve" not in reply["body"]
    assert fake_github.comments[comment_id]["reactions"] == {"eyes": 1, "confused": 1}


def test_edited_comments_never_run_commands(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    _, payload = post_comment(client, worker, fake_github, issue, MAINTAINER, "Looks fine to me")
    edited = copy.deepcopy(payload)
    edited["action"] = "edited"
    edited["comment"]["body"] = "/approve"
    edited["changes"] = {"body": {"from": "Looks fine to me"}}
    assert deliver(client, "issue_comment", edited).status_code == 202
    worker.run_once()
    assert grants(runtime) == [] and request_row(runtime).state == RequestState.VALIDATED


def test_applicant_withdraws_with_a_command(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    post_comment(client, worker, fake_github, issue, APPLICANT, "/withdraw")
    assert request_row(runtime).state == RequestState.WITHDRAWN
    assert fake_github.issues[(REPO, 1)]["state"] == "closed"


def _close(client, worker, fake, sender: dict, number: int = 1):
    fake.issues[(REPO, number)]["state"] = "closed"
    payload = issue_event("closed", body=form_body(), number=number, user=dict(APPLICANT), state="closed",
                          sender=dict(sender))
    assert deliver(client, "issues", payload).status_code == 202
    worker.run_once()


def test_only_the_author_closing_the_issue_withdraws(client, worker, runtime, fake_github):
    open_issue(client, worker, fake_github)
    _close(client, worker, fake_github, BOT_USER)  # our own bot (e.g. after a decision)
    _close(client, worker, fake_github, MAINTAINER)
    _close(client, worker, fake_github, STRANGER)
    assert request_row(runtime).state == RequestState.VALIDATED
    _close(client, worker, fake_github, APPLICANT)
    assert request_row(runtime).state == RequestState.WITHDRAWN
    assert len(decision_comments(fake_github, "request.withdrawn")) == 1


def test_the_bots_own_close_after_approval_does_not_withdraw(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve")
    _close(client, worker, fake_github, APPLICANT)  # even the author: approved is not open any more
    assert request_row(runtime).state == RequestState.APPROVED


def test_seed_is_approved_automatically(client, worker, runtime, fake_github):
    open_issue(client, worker, fake_github, body=form_body(tier="seed"))
    [grant] = grants(runtime)
    assert (grant.tier, grant.approved_by, grant.app_id) == ("seed", "system", "freeaichat")
    assert request_row(runtime).state == RequestState.APPROVED
    [approval] = decision_comments(fake_github, "approve")
    assert "automatically" in approval["body"]
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["approved", "special-access", "tier:seed"]
    assert fake_github.issues[(REPO, 1)]["state"] == "closed"

    # The `labeled` event GitHub sends with a form-created issue finds the work done.
    writes = github_writes(fake_github)
    labeled = issue_event("labeled", body=form_body(tier="seed"), labels=["special-access"], user=dict(APPLICANT))
    labeled["label"] = {"name": "special-access"}
    assert deliver(client, "issues", labeled).status_code == 202
    worker.run_once()
    assert len(grants(runtime)) == 1 and github_writes(fake_github) == writes


def test_flower_waits_for_a_maintainer(client, worker, runtime, fake_github):
    open_issue(client, worker, fake_github, body=form_body(tier="flower"))
    assert grants(runtime) == [] and request_row(runtime).state == RequestState.VALIDATED


def test_comments_on_other_issues_are_ignored(client, worker, runtime, fake_github):
    fake_github.add_issue(REPO, 9, body="Bug report", user=dict(STRANGER), labels=["bug"])
    issue = issue_event("opened", body="Bug report", number=9, user=dict(STRANGER), labels=["bug"])
    comment_id, _ = post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve")
    assert fake_github.bot_comments(REPO, 9) == []
    assert fake_github.comments[comment_id]["reactions"] == {}


def test_auto_approval_runs_after_the_review(worker):
    from bot.intake.router import router

    names = [h.__name__ for h in router.handlers_for("issues", "opened")]
    assert names.index("review_request_issue") < names.index("auto_approve")


def test_a_command_comment_deleted_before_it_is_read_still_counts(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github)
    comment_id, _ = post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve", run=False)
    del fake_github.comments[comment_id]  # reactions on it now answer 404
    worker.run_once()
    assert len(grants(runtime)) == 1
    with Session(runtime.engine) as s:
        assert {d.status for d in s.exec(select(Delivery)).all()} == {"processed"}


def test_a_command_before_the_opening_event_reviews_the_issue_first(client, worker, runtime, fake_github):
    """The comment's delivery overtook the issue's: the request is reviewed, then approved."""
    fake_github.add_issue(REPO, 1, body=form_body(), user=dict(APPLICANT), labels=["special-access"])
    issue = issue_event("opened", body=form_body(), user=dict(APPLICANT))
    post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve")
    assert request_row(runtime).state == RequestState.APPROVED and len(grants(runtime)) == 1


def test_failing_checks_are_listed_and_force_approves_anyway(client, worker, runtime, fake_github):
    issue = open_issue(client, worker, fake_github, body=form_body(domains="freeaichat.io\n192.168.0.1"))
    assert request_row(runtime).state == RequestState.NEEDS_INFO
    refused, _ = post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve")
    [reply] = [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:reply" in c["body"]]
    assert "--force" in reply["body"].replace("\\", "") and "192.168.0.1" in reply["body"].replace("\\", "")
    assert grants(runtime) == [] and fake_github.comments[refused]["reactions"]["confused"] == 1

    post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve --force")
    [grant] = grants(runtime)
    with Session(runtime.engine) as s:
        assert [d.domain for d in s.exec(select(GrantDomain)).all()] == ["freeaichat.io"]  # only what passed
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "request.approved")).one().details["forced"]
