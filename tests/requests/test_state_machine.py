"""Every transition of the request state machine, and every refused one (which changes nothing)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from bot.allowlist import versioning
from bot.core.models import AccessRequest, AuditEvent, Grant, GrantDomain, GrantStatus, RequestState
from bot.requests import applications as apps
from tests.conftest import REPO
from tests.request_helpers import APPLICANT, MAINTAINER, add_issue_for, add_people, form_body, make_request

SOURCE = "https://github.com/acme/access/issues/1#issuecomment-1"


@pytest.fixture
def ctx(runtime, session, fake_github):
    add_people(fake_github)
    context = runtime.make_context(session)
    context.installation_id = 1
    return context


@pytest.fixture
def validated(session, fake_github):
    request = make_request(session)
    add_issue_for(fake_github, request)
    return request


def decisions(fake, kind: str = "") -> list[dict]:
    return [c for c in fake.bot_comments(REPO, 1) if f"beekeeper:decision:{kind}" in c["body"]]


def snapshot(session, fake):
    """Everything a refused transition must leave as it was."""
    session.expire_all()
    rows = [(r.state, r.decided_by) for r in session.exec(select(AccessRequest)).all()]
    return (rows, len(session.exec(select(Grant)).all()), versioning.current_version(session),
            len(fake.comments), sorted(fake.issue_labels(REPO, 1)), fake.issues[(REPO, 1)]["state"])


# ---- approve ----------------------------------------------------------------------------------


def test_approve_creates_the_grant_and_tells_the_applicant(ctx, session, fake_github, validated):
    version_before = versioning.current_version(session)
    result = apps.approve(ctx, validated, MAINTAINER["login"], source=SOURCE)
    session.commit()
    assert result.status == "done" and result.changed
    grant = session.exec(select(Grant)).one()
    assert (grant.tier, grant.app_id, grant.github_user_id, grant.github_login, grant.approved_by) == (
        "flower", "freeaichat", APPLICANT["id"], APPLICANT["login"], MAINTAINER["login"])
    assert (grant.request_id, grant.repo, grant.issue_number, grant.status) == (validated.id, REPO, 1, "active")
    assert [d.domain for d in session.exec(select(GrantDomain)).all()] == ["freeaichat.io"]
    assert session.get(AccessRequest, validated.id).state == RequestState.APPROVED
    assert versioning.current_version(session) == version_before + 1 == grant.version

    [comment] = decisions(fake_github, "approve")
    body = comment["body"]
    assert "@alice-dev" in body and "`freeaichat`" in body and "`freeaichat.io`" in body
    assert "300 requests per minute" in body and "8 requests at the same time" in body
    assert "secret key will follow" in body
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["approved", "special-access", "tier:flower"]
    issue = fake_github.issues[(REPO, 1)]
    assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
    [status] = [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:status" in c["body"]]
    assert "Approved" in status["body"]

    actions = {e.action: e for e in session.exec(select(AuditEvent)).all()}
    assert actions["request.approved"].idempotency_key == f"approve:{validated.id}"
    assert actions["request.approved"].source == SOURCE
    assert actions["grant.created"].grant_id == grant.id and actions["grant.created"].actor == MAINTAINER["login"]


def test_approve_with_a_named_tier(ctx, session, validated):
    result = apps.approve(ctx, validated, MAINTAINER["login"], tier="Nectar", source=SOURCE)
    assert result.status == "done" and result.grant.tier == "nectar"


def test_approving_twice_is_a_noop(ctx, session, fake_github, validated):
    apps.approve(ctx, validated, MAINTAINER["login"], source=SOURCE)
    session.commit()
    before = snapshot(session, fake_github)
    again = apps.approve(ctx, validated, "mo-maint", tier="nectar", source=SOURCE)
    assert again.status == "noop" and "already approved" in again.message and again.ok
    assert snapshot(session, fake_github) == before


@pytest.mark.parametrize("state", [RequestState.NEEDS_INFO, RequestState.RECEIVED])
def test_approving_unchecked_or_failing_requests_needs_force(ctx, session, fake_github, state):
    request = make_request(session, state=state, check_results=[] if state == RequestState.RECEIVED else None)
    add_issue_for(fake_github, request, labels=["special-access", "needs-info"])
    before = snapshot(session, fake_github)
    refused = apps.approve(ctx, request, MAINTAINER["login"], source=SOURCE)
    assert refused.status == "refused" and "--force" in refused.message and refused.problems
    if state == RequestState.NEEDS_INFO:
        assert refused.problems == ["app id: freeaichat is already taken by another app"]
    session.commit()
    assert snapshot(session, fake_github) == before

    forced = apps.approve(ctx, request, MAINTAINER["login"], force=True, source=SOURCE)
    session.commit()
    assert forced.status == "done"
    approved = session.exec(select(AuditEvent).where(AuditEvent.action == "request.approved")).one()
    assert approved.details["forced"] is True and approved.details["problems"] == refused.problems
    assert "although some checks did not pass" in decisions(fake_github, "approve")[0]["body"]
    assert "needs-info" not in fake_github.issue_labels(REPO, 1)


@pytest.mark.parametrize("tier, requested, expected", [
    ("gold", "flower", "There is no tier called gold"),
    (None, None, "names no tier"),
])
def test_approve_refuses_unknown_or_missing_tiers(ctx, session, fake_github, tier, requested, expected):
    request = make_request(session, tier=requested)
    add_issue_for(fake_github, request)
    before = snapshot(session, fake_github)
    result = apps.approve(ctx, request, MAINTAINER["login"], tier=tier, source=SOURCE)
    assert result.status == "refused" and expected in result.message and "seed, flower, nectar" in result.message
    session.commit()
    assert snapshot(session, fake_github) == before


@pytest.mark.parametrize("state", [RequestState.REJECTED, RequestState.WITHDRAWN, RequestState.REVOKED])
def test_approve_refuses_closed_requests(ctx, session, fake_github, state):
    request = make_request(session, state=state, checks_ok=True)
    add_issue_for(fake_github, request, state="closed")
    before = snapshot(session, fake_github)
    result = apps.approve(ctx, request, MAINTAINER["login"], force=True, source=SOURCE)
    assert result.status == "refused"
    session.commit()
    assert snapshot(session, fake_github) == before


def test_nobody_approves_their_own_request(ctx, session, fake_github, validated):
    before = snapshot(session, fake_github)
    result = apps.approve(ctx, validated, APPLICANT["login"].upper(), force=True, source="cli")
    assert result.status == "refused" and "own request" in result.message
    session.commit()
    assert snapshot(session, fake_github) == before


def test_approve_without_app_id_is_refused(ctx, session, fake_github):
    request = make_request(session, referrer=None)
    add_issue_for(fake_github, request)
    assert apps.approve(ctx, request, MAINTAINER["login"], source=SOURCE).status == "refused"


def _other_grant(ctx, session, fake_github, *, number=2, referrer="otherapp", domains=("freeaichat.io",)):
    other = make_request(session, number=number, referrer=referrer, domains=list(domains),
                         applicant={"login": "bob", "id": 5002})
    fake_github.add_issue(REPO, number, body=form_body(), user={"login": "bob", "id": 5002, "type": "User"},
                          labels=["special-access"])
    assert apps.approve(ctx, other, MAINTAINER["login"], source=SOURCE).status == "done"
    session.commit()
    return session.exec(select(Grant).where(Grant.request_id == other.id)).one()


def test_a_domain_held_by_an_active_grant_cannot_be_forced(ctx, session, fake_github, validated):
    other = _other_grant(ctx, session, fake_github)
    before = snapshot(session, fake_github)
    result = apps.approve(ctx, validated, MAINTAINER["login"], force=True, source=SOURCE)
    assert result.status == "refused"
    assert any("freeaichat.io" in p and "another GitHub account" in p for p in result.problems)
    assert not any("otherapp" in p or "bob" in p for p in result.problems)  # the holder is not named in public
    session.commit()
    assert snapshot(session, fake_github) == before
    # No claim was left behind: once the other grant is revoked the approval goes through.
    assert apps.revoke(ctx, other, MAINTAINER["login"], "moved", source=SOURCE).status == "done"
    assert apps.approve(ctx, validated, MAINTAINER["login"], source=SOURCE).status == "done"


def test_an_app_id_is_never_reused(ctx, session, fake_github, validated):
    other = _other_grant(ctx, session, fake_github, referrer="freeaichat", domains=("other.io",))
    apps.revoke(ctx, other, MAINTAINER["login"], "abuse", source=SOURCE)
    result = apps.approve(ctx, validated, MAINTAINER["login"], force=True, source=SOURCE)
    assert result.status == "refused" and any("never reused" in p for p in result.problems)


# ---- reject, needs-info, withdraw -------------------------------------------------------------


def test_reject_comments_labels_and_closes_as_not_planned(ctx, session, fake_github, validated):
    reason = "Scraping is not allowed. @everyone <script>alert(1)</script>"
    result = apps.reject(ctx, validated, MAINTAINER["login"], reason, source=SOURCE)
    session.commit()
    assert result.status == "done"
    row = session.get(AccessRequest, validated.id)
    assert (row.state, row.decided_by, row.decision_reason) == ("rejected", MAINTAINER["login"], reason)
    [comment] = decisions(fake_github, "request.rejected")
    assert "Scraping is not allowed" in comment["body"]
    assert "<script>" not in comment["body"] and "@everyone" not in comment["body"]
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["rejected", "special-access"]
    issue = fake_github.issues[(REPO, 1)]
    assert (issue["state"], issue["state_reason"]) == ("closed", "not_planned")
    assert session.exec(select(Grant)).all() == []


def test_reject_twice_is_a_noop_and_an_approved_request_is_revoked_not_rejected(ctx, session, fake_github,
                                                                               validated):
    apps.reject(ctx, validated, MAINTAINER["login"], "no", source=SOURCE)
    session.commit()
    before = snapshot(session, fake_github)
    assert apps.reject(ctx, validated, MAINTAINER["login"], "no again", source=SOURCE).status == "noop"
    assert snapshot(session, fake_github) == before

    other = make_request(session, number=2, referrer="otherapp", domains=["o-app.io"])
    fake_github.add_issue(REPO, 2, body=form_body(), user=dict(APPLICANT), labels=["special-access"])
    apps.approve(ctx, other, MAINTAINER["login"], source=SOURCE)
    refused = apps.reject(ctx, other, MAINTAINER["login"], "changed my mind", source=SOURCE)
    assert refused.status == "refused" and "/revoke" in refused.message
    assert session.get(AccessRequest, other.id).state == RequestState.APPROVED


def test_needs_info_labels_and_keeps_the_issue_open(ctx, session, fake_github, validated):
    first = apps.needs_info(ctx, validated, MAINTAINER["login"], "Please add your homepage.", source=SOURCE)
    second = apps.needs_info(ctx, validated, MAINTAINER["login"], "And the repository.", source=SOURCE)
    session.commit()
    assert first.status == second.status == "done"
    assert session.get(AccessRequest, validated.id).state == RequestState.NEEDS_INFO
    bodies = [c["body"] for c in decisions(fake_github, "request.needs_info")]
    assert len(bodies) == 2 and "homepage" in bodies[0] and "repository" in bodies[1]
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["needs-info", "special-access"]
    assert fake_github.issues[(REPO, 1)]["state"] == "open"


@pytest.mark.parametrize("state", [RequestState.APPROVED, RequestState.REJECTED, RequestState.WITHDRAWN])
def test_needs_info_refused_on_decided_requests(ctx, session, fake_github, state):
    request = make_request(session, state=state, checks_ok=True)
    add_issue_for(fake_github, request, state="closed")
    before = snapshot(session, fake_github)
    assert apps.needs_info(ctx, request, MAINTAINER["login"], "more", source=SOURCE).status == "refused"
    session.commit()
    assert snapshot(session, fake_github) == before


def test_withdraw_closes_and_cannot_undo_an_approval(ctx, session, fake_github, validated):
    result = apps.withdraw(ctx, validated, APPLICANT["login"], source=SOURCE)
    session.commit()
    assert result.status == "done"
    assert session.get(AccessRequest, validated.id).state == RequestState.WITHDRAWN
    assert fake_github.issues[(REPO, 1)]["state_reason"] == "not_planned"
    assert fake_github.issue_labels(REPO, 1) == ["special-access"]
    assert len(decisions(fake_github, "request.withdrawn")) == 1
    assert apps.withdraw(ctx, validated, APPLICANT["login"], source=SOURCE).status == "noop"

    approved = make_request(session, number=2, state=RequestState.APPROVED, checks_ok=True)
    assert apps.withdraw(ctx, approved, APPLICANT["login"], source=SOURCE).status == "refused"
    rejected = make_request(session, number=3, state=RequestState.REJECTED, checks_ok=True)
    assert apps.withdraw(ctx, rejected, APPLICANT["login"], source=SOURCE).status == "refused"


# ---- tier and revoke --------------------------------------------------------------------------


@pytest.fixture
def grant(ctx, session, validated):
    result = apps.approve(ctx, validated, MAINTAINER["login"], source=SOURCE)
    session.commit()
    return result.grant


def test_change_tier_moves_the_label_and_bumps_the_version(ctx, session, fake_github, grant):
    version = versioning.current_version(session)
    result = apps.change_tier(ctx, grant, "mo-maint", "nectar", source=SOURCE)
    session.commit()
    assert result.status == "done" and session.get(Grant, grant.id).tier == "nectar"
    assert versioning.current_version(session) == version + 1
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["approved", "special-access", "tier:nectar"]
    [comment] = decisions(fake_github, "grant.tier_changed")
    assert "flower → nectar" in comment["body"] and "1200 requests per minute" in comment["body"]
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "grant.tier_changed")).one()
    assert event.details == {"from": "flower", "to": "nectar"} and event.actor == "mo-maint"

    # A second change gets its own comment (a new marker), not a silent edit of the first.
    assert apps.change_tier(ctx, grant, "mo-maint", "seed", source=SOURCE).status == "done"
    assert len(decisions(fake_github, "grant.tier_changed")) == 2
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["approved", "special-access", "tier:seed"]


def test_change_tier_refusals(ctx, session, fake_github, grant):
    before = snapshot(session, fake_github)
    assert apps.change_tier(ctx, grant, "mo-maint", "flower", source=SOURCE).status == "noop"
    assert apps.change_tier(ctx, grant, "mo-maint", "platinum", source=SOURCE).status == "refused"
    own = apps.change_tier(ctx, grant, APPLICANT["login"], "nectar", source=SOURCE)
    assert own.status == "refused" and "own grant" in own.message
    session.commit()
    assert snapshot(session, fake_github) == before
    apps.revoke(ctx, grant, "mo-maint", "abuse", source=SOURCE)
    assert apps.change_tier(ctx, grant, "mo-maint", "nectar", source=SOURCE).status == "refused"


def test_revoke_frees_the_domains_and_keeps_the_rows(ctx, session, fake_github, grant):
    result = apps.revoke(ctx, grant, "mo-maint", "Terms violated", source=SOURCE)
    session.commit()
    assert result.status == "done"
    row = session.get(Grant, grant.id)
    assert (row.status, row.revoke_reason) == (GrantStatus.REVOKED, "Terms violated") and row.revoked_at
    [domain] = session.exec(select(GrantDomain)).all()
    assert domain.active is False and domain.removed_at is not None
    assert session.get(AccessRequest, grant.request_id).state == RequestState.REVOKED
    assert fake_github.issue_labels(REPO, 1) == ["special-access"]
    [comment] = decisions(fake_github, "revoke")
    assert "Terms violated" in comment["body"]
    before = snapshot(session, fake_github)
    assert apps.revoke(ctx, grant, "mo-maint", "again", source=SOURCE).status == "noop"
    assert snapshot(session, fake_github) == before


# ---- recheck and auto-approval ------------------------------------------------------------------


def test_recheck_runs_the_review_again(ctx, session, fake_github):
    request = make_request(session, state=RequestState.NEEDS_INFO)
    fake_github.add_issue(REPO, 1, body=form_body(tier="flower"), user=dict(APPLICANT),
                          labels=["special-access", "needs-info"])
    result = apps.recheck(ctx, request, APPLICANT["login"])
    session.commit()
    assert result.status == "done" and "validated" in result.message
    assert session.get(AccessRequest, request.id).state == RequestState.VALIDATED
    assert session.exec(select(Grant)).all() == []  # flower is not approved automatically


def test_recheck_refused_once_decided(ctx, session, fake_github, grant):
    request = session.get(AccessRequest, grant.request_id)
    assert apps.recheck(ctx, request, APPLICANT["login"]).status == "refused"


def test_auto_approval_only_for_clean_validated_auto_tiers(ctx, session, fake_github):
    flagged = make_request(session, number=1, tier="seed", needs_maintainer=True)
    flower = make_request(session, number=2, tier="flower", referrer="flowerapp", domains=[])
    seed = make_request(session, number=3, tier="seed", referrer="seedapp", domains=["seedapp.io"])
    for number in (1, 2, 3):
        fake_github.add_issue(REPO, number, body=form_body(), user=dict(APPLICANT), labels=["special-access"])
    assert apps.maybe_auto_approve(ctx, flagged, source="d-1") is None
    assert apps.maybe_auto_approve(ctx, flower, source="d-2") is None
    result = apps.maybe_auto_approve(ctx, seed, source="d-3")
    assert result.status == "done" and result.grant.approved_by == "system" and result.grant.tier == "seed"
    assert "automatically" in fake_github.bot_comments(REPO, 3)[0]["body"]


def test_auto_approval_never_overrules_a_rejection(ctx, session, fake_github):
    request = make_request(session, tier="seed")
    add_issue_for(fake_github, request)
    apps.reject(ctx, request, MAINTAINER["login"], "spam", source=SOURCE)
    request.state = RequestState.VALIDATED  # as the review leaves it when the issue is reopened
    session.commit()
    assert apps.maybe_auto_approve(ctx, request, source="d-9") is None
