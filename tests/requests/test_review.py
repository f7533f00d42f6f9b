"""bot.requests.review: the request row, the one status comment and the labels, called as a service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from bot.core import comments
from bot.core.models import AccessRequest, AuditEvent, Grant, RequestState
from bot.intake.router import Event
from bot.requests.review import body_sha256, refresh_status_comment, review_issue
from tests.conftest import INSTALLATION_ID, REPO
from tests.fakegithub import BOT_USER
from tests.rules.test_forms import GOOD_ANSWERS, body

ALICE = {"login": "alice", "id": 1001, "type": "User"}
OLD = (datetime.now(UTC) - timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def ctx(runtime, session, fake_github):
    fake_github.add_user("alice", ALICE["id"], created_at=OLD)
    event = Event(name="issues", action="opened", payload={}, delivery_id="d", installation_id=INSTALLATION_ID)
    return runtime.make_context(session, event)


def file_issue(fake_github, text: str, number: int = 1, labels=("special-access",)) -> dict:
    """The issue as it exists on GitHub (and as a webhook would carry it)."""
    return fake_github.add_issue(REPO, number, body=text, user=dict(ALICE), labels=list(labels))


def edit_issue(issue: dict, text: str) -> dict:
    issue["body"] = text
    return issue


def status_comments(fake_github, number: int = 1) -> list[dict]:
    return [c for c in fake_github.bot_comments(REPO, number) if comments.STATUS_MARKER in c["body"]]


def test_a_good_request_is_validated_with_one_comment_and_a_label(ctx, session, fake_github):
    issue = file_issue(fake_github, body())
    request = review_issue(ctx, REPO, issue, reason="opened")
    assert request.state == RequestState.VALIDATED and request.checks_ok and not request.needs_maintainer
    assert (request.applicant_id, request.applicant_login) == (1001, "alice")
    assert request.values["app_name"] == "Free AI Chat" and request.referrer == "freeaichat"
    assert request.requested_tier == "seed" and request.contact == "dev@freeaichat.com"
    assert request.body_sha256 == body_sha256(body())
    assert request.check_results and all(r["status"] == "ok" for r in request.check_results)
    [comment] = status_comments(fake_github)
    assert request.status_comment_id == comment["id"]
    assert "All checks passed" in comment["body"] and "dev@freeaichat.com" not in comment["body"]
    assert "validated" in fake_github.issue_labels(REPO, 1)
    created = [body for method, path, body in fake_github.calls if (method, path) == ("POST", f"/repos/{REPO}/labels")]
    assert created == [{"name": "validated", "color": "0e8a16",
                        "description": "Every check passed; waiting for a maintainer"}]  # created in the repo


def test_needs_info_then_fixed_updates_the_same_comment_and_labels(ctx, session, fake_github):
    issue = file_issue(fake_github, body({**GOOD_ANSWERS, "domains": "localhost", "app-name": "gg"}))
    request = review_issue(ctx, REPO, issue, reason="opened")
    assert request.state == RequestState.NEEDS_INFO and not request.checks_ok
    first = status_comments(fake_github)[0]
    assert "Changes needed" in first["body"] and "2 points marked ❌" in first["body"]
    assert "needs-info" in fake_github.issue_labels(REPO, 1)

    request = review_issue(ctx, REPO, edit_issue(issue, body()), reason="edited")
    assert request.state == RequestState.VALIDATED
    [comment] = status_comments(fake_github)
    assert comment["id"] == first["id"] and "All checks passed" in comment["body"]
    labels = fake_github.issue_labels(REPO, 1)
    assert "validated" in labels and "needs-info" not in labels and "special-access" in labels


def test_state_changes_are_audited(ctx, session, fake_github):
    issue = file_issue(fake_github, body({**GOOD_ANSWERS, "app-name": "asdf"}))
    review_issue(ctx, REPO, issue, reason="opened")
    review_issue(ctx, REPO, edit_issue(issue, body()), reason="edited")
    actions = [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()]
    assert actions == ["request.received", "request.needs_info", "request.validated"]


def test_a_user_comment_with_the_marker_is_never_edited(ctx, session, fake_github):
    issue = file_issue(fake_github, body())
    fake = fake_github.add_comment(REPO, 1, f"{comments.STATUS_MARKER}\nI approve myself", dict(ALICE))
    review_issue(ctx, REPO, issue, reason="opened")
    review_issue(ctx, REPO, edit_issue(issue, body({**GOOD_ANSWERS, "tier": "flower"})), reason="edited")
    assert fake_github.comments[fake["id"]]["body"] == f"{comments.STATUS_MARKER}\nI approve myself"
    assert len(status_comments(fake_github)) == 1


def test_a_deleted_status_comment_is_posted_again(ctx, session, fake_github):
    issue = file_issue(fake_github, body())
    request = review_issue(ctx, REPO, issue, reason="opened")
    del fake_github.comments[request.status_comment_id]
    request = review_issue(ctx, REPO, issue, reason="edited")
    [comment] = status_comments(fake_github)
    assert request.status_comment_id == comment["id"]


def test_flagged_request_is_validated_but_needs_a_maintainer(ctx, session, fake_github):
    issue = file_issue(fake_github, body({**GOOD_ANSWERS, "tier": "nectar"}))
    request = review_issue(ctx, REPO, issue, reason="opened")
    assert request.state == RequestState.VALIDATED and request.needs_maintainer
    assert "marked ⚠️" in status_comments(fake_github)[0]["body"]


def test_free_text_issue_gets_the_list_of_fields(ctx, session, fake_github):
    issue = file_issue(fake_github, "Hello, I would like access for my app please.")
    request = review_issue(ctx, REPO, issue, reason="labeled")
    assert request.state == RequestState.NEEDS_INFO and request.values == {}
    text = status_comments(fake_github)[0]["body"]
    assert "not made from the request form" in text
    assert f"https://github.com/{REPO}/issues/new?template=special-access.yml" in text
    assert "### App name" in text and "### Contact e-mail" in text


def _decide(session, request: AccessRequest, state: str, **fields) -> None:
    request.state = state
    for key, value in fields.items():
        setattr(request, key, value)
    session.add(request)
    session.flush()


def test_approved_requests_keep_their_state_on_edit(ctx, session, fake_github):
    issue = file_issue(fake_github, body())
    request = review_issue(ctx, REPO, issue, reason="opened")
    session.add(Grant(app_id="freeaichat", tier="flower", github_user_id=1001, github_login="alice",
                      request_id=request.id, approved_by="maint"))
    _decide(session, request, RequestState.APPROVED, decided_by="maint")
    results_before = request.check_results
    request = review_issue(ctx, REPO, edit_issue(issue, body({**GOOD_ANSWERS, "app-name": "gg"})), reason="edited")
    assert request.state == RequestState.APPROVED and request.check_results == results_before
    text = status_comments(fake_github)[0]["body"]
    assert "Approved" in text and "tier **flower**" in text and "app id **freeaichat**" in text
    labels = fake_github.issue_labels(REPO, 1)
    assert "approved" in labels and "tier:flower" in labels and "validated" not in labels


@pytest.mark.parametrize("state", [RequestState.REJECTED, RequestState.WITHDRAWN])
def test_reopening_a_rejected_or_withdrawn_request_checks_it_again(ctx, session, fake_github, state):
    issue = file_issue(fake_github, body())
    request = review_issue(ctx, REPO, issue, reason="opened")
    _decide(session, request, state, decided_by="maint", decision_reason="no")
    request = review_issue(ctx, REPO, issue, reason="edited")
    assert request.state == state  # an edit alone does not reopen it
    request = review_issue(ctx, REPO, issue, reason="reopened")
    assert request.state == RequestState.VALIDATED and request.decision_reason is None
    assert "All checks passed" in status_comments(fake_github)[0]["body"]


@pytest.mark.parametrize("state", [RequestState.APPROVED, RequestState.REVOKED])
def test_reopening_an_approved_or_revoked_request_keeps_it(ctx, session, fake_github, state):
    issue = file_issue(fake_github, body())
    request = review_issue(ctx, REPO, issue, reason="opened")
    _decide(session, request, state)
    assert review_issue(ctx, REPO, issue, reason="reopened").state == state


@pytest.mark.parametrize("state, fields, expected", [
    (RequestState.APPROVED, {}, ["### ✅ Approved", "tier **nectar**", "app id **freeaichat**",
                                 "<details><summary>Checks at the last review</summary>"]),
    (RequestState.REJECTED, {"decided_by": "maint", "decision_reason": "Not a real app @everyone"},
     ["### ❌ Declined", "declined by maint", "Reason: Not a real app @\u2060everyone"]),
    (RequestState.WITHDRAWN, {}, ["### ↩️ Withdrawn", "Reopen the issue"]),
    (RequestState.REVOKED, {"decision_reason": "abuse"}, ["### ⛔ Access revoked", "app id **freeaichat**",
                                                          "Reason: abuse"]),
])
def test_refresh_shows_the_current_state_without_checking_again(ctx, session, fake_github, state, fields, expected):
    issue = file_issue(fake_github, body())
    request = review_issue(ctx, REPO, issue, reason="opened")
    calls_before = fake_github.count("GET", r"/user/")
    grant = Grant(app_id="freeaichat", tier="nectar", github_user_id=1001, github_login="alice",
                  request_id=request.id, approved_by="maint")
    session.add(grant)
    _decide(session, request, state, **fields)
    refresh_status_comment(ctx, request, grant if state == RequestState.APPROVED else None)
    [comment] = status_comments(fake_github)
    for text in expected:
        assert text in comment["body"]
    assert fake_github.count("GET", r"/user/") == calls_before  # no re-check (no account lookup)


def test_duplicate_request_is_closed_when_the_policy_says_so(ctx, session, fake_github):
    ctx.policy = ctx.policy.model_copy(update={"validation": ctx.policy.validation.model_copy(
        update={"close_duplicates": True})})
    first = review_issue(ctx, REPO, file_issue(fake_github, body(), number=1), reason="opened")
    second = review_issue(ctx, REPO, file_issue(fake_github, body(), number=2), reason="opened")
    assert first.state == RequestState.VALIDATED
    assert second.state == RequestState.WITHDRAWN and second.decision_reason == f"duplicate of {REPO}#1"
    assert fake_github.issues[(REPO, 2)]["state"] == "closed"
    assert fake_github.issues[(REPO, 2)]["state_reason"] == "not_planned"
    assert f"duplicate of {REPO}\\#1" in status_comments(fake_github, 2)[0]["body"]
    assert fake_github.issues[(REPO, 1)]["state"] == "open"


def test_duplicates_are_only_linked_by_default(ctx, session, fake_github):
    review_issue(ctx, REPO, file_issue(fake_github, body(), number=1), reason="opened")
    second = review_issue(ctx, REPO, file_issue(fake_github, body(), number=2), reason="opened")
    assert second.state == RequestState.VALIDATED and second.needs_maintainer
    text = status_comments(fake_github, 2)[0]["body"]
    assert f"({REPO}#1)" in text  # a plain reference: GitHub links it


def test_contact_is_stored_but_never_in_the_comment(ctx, session, fake_github):
    issue = file_issue(fake_github, body({**GOOD_ANSWERS, "contact": "Secret.Person@Example.org"}))
    request = review_issue(ctx, REPO, issue, reason="opened")
    assert request.contact == "Secret.Person@example.org"
    text = status_comments(fake_github)[0]["body"].lower()
    assert "secret" not in text and "example.org" not in text and "example\\.org" not in text


def test_invalid_contact_is_stored_as_typed_but_not_shown(ctx, session, fake_github):
    issue = file_issue(fake_github, body({**GOOD_ANSWERS, "contact": "private-name at example"}))
    request = review_issue(ctx, REPO, issue, reason="opened")
    assert request.contact == "private-name at example" and request.state == RequestState.NEEDS_INFO
    assert "private" not in status_comments(fake_github)[0]["body"].replace("stored privately", "")


def test_dns_resolver_comes_from_the_context(ctx, session, fake_github):
    ctx.policy = ctx.policy.model_copy(update={"validation": ctx.policy.validation.model_copy(
        update={"dns_check": True})})
    asked: list[str] = []
    ctx.extras["dns_resolver"] = lambda host: asked.append(host) or False
    review_issue(ctx, REPO, file_issue(fake_github, body()), reason="opened")
    assert asked == ["freeaichat.com", "freeaichat.com"]
    assert "does not resolve" in status_comments(fake_github)[0]["body"]


def test_the_bot_comment_is_authored_by_the_app(ctx, session, fake_github):
    review_issue(ctx, REPO, file_issue(fake_github, body()), reason="opened")
    assert status_comments(fake_github)[0]["user"]["login"] == BOT_USER["login"]


def test_a_missing_required_section_is_one_error_and_counted_once(ctx, session, fake_github):
    without_contact = "\r\n\r\n".join(
        ("### " + part if i else part) for i, part in enumerate(
            p for p in body().split("\r\n\r\n### ") if not p.startswith("Contact e-mail")))
    issue = file_issue(fake_github, without_contact)
    request = review_issue(ctx, REPO, issue, reason="opened")
    errors = [r for r in request.check_results if r["status"] == "error"]
    assert [r["name"] for r in errors] == ["form"] and '"Contact e-mail" field is missing' in errors[0]["message"]
    text = status_comments(fake_github)[0]["body"]
    assert "fix the 1 point marked ❌" in text and text.count("\n- ❌") == 1
    # Informational lines sit in the folded details, after the checks.
    assert text.index("<details><summary>Details</summary>") > text.index("**App name**")
