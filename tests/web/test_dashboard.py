"""The maintainer dashboard: the queue and decisions through the state machine, grants, the
audit trail with its CSV export, gateways."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlmodel import select

from bot.allowlist import gateways
from bot.core import audit
from bot.core.clock import utcnow
from bot.core.models import AccessRequest, AuditEvent, DomainChange, Grant, GrantDomain, RequestState
from tests.portal_data import (
    APPLICANT,
    MAINTAINER,
    STRANGER,
    add_issue_for,
    add_people,
    csrf,
    fetch,
    install,
    make_grant,
    make_request,
    read,
    sign_in,
)

REPO = "acme/access"


@pytest.fixture
def world(session, fake_github):
    add_people(fake_github)
    install(session)
    return fake_github


@pytest.fixture
def maintainer(client, world):
    sign_in(client, MAINTAINER, world)
    return client


@pytest.fixture
def admin(client, world, runtime):
    """The maintainer, named in the policy's `admins` by numeric id: the platform-wide pages."""
    runtime.policy = runtime.policy.model_copy(update={"admins": [MAINTAINER["id"]]})
    sign_in(client, MAINTAINER, world)
    return client


def post(client, url, **data):
    return client.post(url, data={"csrf_token": csrf(client), **data})


def page_of(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


# --- the queue -----------------------------------------------------------------------------------


def test_queue_shows_open_requests_with_checks_age_tier_signals_and_conflicts(maintainer, session, world):
    make_grant(session, owner=STRANGER, app_id="otherapp", domains=("shared.example.com",))
    older = make_request(session, number=3, domains=["shared.example.com"], tier="nectar")
    older.created_at = utcnow() - timedelta(days=4)
    older.app_name = "<b>Loud</b> app"
    session.add(older)
    session.commit()
    make_request(session, number=4, referrer="second-app")
    make_request(session, number=5, state=RequestState.APPROVED, referrer="done-app")
    page = page_of(maintainer, "/admin/")
    assert "acme/access#3" in page and "acme/access#4" in page and "acme/access#5" not in page
    assert page.index("acme/access#3") < page.index("acme/access#4")  # oldest first
    assert "waiting 4 days" in page
    assert "nectar" in page
    assert "2 other requests" in page  # the applicant's other requests
    assert "shared.example.com" in page and "otherapp" in page  # the conflict, and who holds it
    assert "&lt;b&gt;Loud&lt;/b&gt; app" in page and "<b>Loud</b>" not in page
    assert "Show checks" in page


def test_queue_filters_and_pages(maintainer, session, world):
    for number in range(1, 31):
        make_request(session, number=number, referrer=f"app-{number}", tier="seed" if number % 2 else "flower")
    first = page_of(maintainer, "/admin/")
    assert "Page 1 of 2" in first and "acme/access#25<" in first and "acme/access#26<" not in first
    second = page_of(maintainer, "/admin/?page=2")
    assert "acme/access#26<" in second and "acme/access#30<" in second
    seeds = page_of(maintainer, "/admin/?tier=seed")
    assert "15 open requests" in seeds and "acme/access#2<" not in seeds


def test_an_empty_queue_says_so(maintainer, world):
    assert "Nothing waits for a decision." in page_of(maintainer, "/admin/")


# --- decisions -------------------------------------------------------------------------------------


def open_request(session, world, **kwargs) -> AccessRequest:
    request = make_request(session, domains=["freeaichat.com"], **kwargs)
    add_issue_for(world, request)
    return request


def test_approving_from_the_dashboard_runs_the_state_machine_and_comments_in_the_issue(maintainer, session, db,
                                                                                       world):
    request = open_request(session, world, number=21)
    response = post(maintainer, f"/admin/requests/{request.id}/approve", tier="flower")
    assert response.status_code == 302
    [grant] = read(db, select(Grant))
    assert (grant.app_id, grant.tier, grant.approved_by, grant.request_id) == ("freeaichat", "flower",
                                                                               MAINTAINER["login"], request.id)
    assert read(db, select(GrantDomain.domain)) == ["freeaichat.com"]
    assert fetch(db, AccessRequest, request.id).state == RequestState.APPROVED
    approval = [c for c in world.bot_comments(REPO, 21) if "beekeeper:decision:approve" in c["body"]]
    assert len(approval) == 1
    assert f"approved by @{MAINTAINER['login']} via the dashboard" in approval[0]["body"]
    assert {"approved", "tier:flower"} <= set(world.issue_labels(REPO, 21))
    assert world.issues[(REPO, 21)]["state"] == "closed"
    event = read(db, select(AuditEvent).where(AuditEvent.action == "request.approved"))[0]
    assert (event.actor, event.source) == (MAINTAINER["login"], "dashboard")
    page = page_of(maintainer, response.headers["Location"])
    assert "Approved on tier flower" in page
    # a second click changes nothing
    post(maintainer, f"/admin/requests/{request.id}/approve", tier="flower")
    assert len(read(db, select(Grant))) == 1
    assert "already approved" in page_of(maintainer, f"/admin/requests/{request.id}")


def test_failed_checks_need_force(maintainer, session, db, world):
    request = open_request(session, world, number=22, state=RequestState.NEEDS_INFO, checks_ok=False)
    post(maintainer, f"/admin/requests/{request.id}/approve", tier="flower")
    assert read(db, select(Grant)) == []
    assert "The checks did not pass" in page_of(maintainer, f"/admin/requests/{request.id}")
    post(maintainer, f"/admin/requests/{request.id}/approve", tier="flower", force="1")
    assert len(read(db, select(Grant))) == 1


def test_reject_and_needs_info_comment_on_the_issue(maintainer, session, db, world):
    first = open_request(session, world, number=23)
    second = open_request(session, world, number=24, referrer="other-app")
    assert "Please give the applicant a reason" in page_of(
        maintainer, post(maintainer, f"/admin/requests/{first.id}/reject", reason=" ").headers["Location"])
    post(maintainer, f"/admin/requests/{first.id}/reject", reason="We only serve <b>education</b> apps.")
    post(maintainer, f"/admin/requests/{second.id}/needs-info", message="Which domains call the API?")
    assert fetch(db, AccessRequest, first.id).state == RequestState.REJECTED
    assert fetch(db, AccessRequest, second.id).state == RequestState.NEEDS_INFO
    rejected = [c["body"] for c in world.bot_comments(REPO, 23) if "declined" in c["body"]]
    assert rejected and "<b>" not in rejected[0]  # applicant-visible text is escaped by the templates
    assert world.issues[(REPO, 23)]["state"] == "closed"
    assert any("Which domains call the API?" in c["body"] for c in world.bot_comments(REPO, 24))
    assert "needs-info" in world.issue_labels(REPO, 24)


def test_nobody_approves_their_own_request(client, session, db, world):
    world.set_permission(REPO, APPLICANT["login"], "admin")
    request = open_request(session, world, number=25)
    sign_in(client, APPLICANT, world)
    post(client, f"/admin/requests/{request.id}/approve", tier="flower")
    assert read(db, select(Grant)) == []
    assert "Nobody can approve their own request" in page_of(client, f"/admin/requests/{request.id}")


def test_when_github_fails_nothing_changes_and_the_page_says_so(maintainer, session, db, world):
    request = open_request(session, world, number=26)
    world.fail("POST", r"/issues/26/comments$", 502, times=10)
    post(maintainer, f"/admin/requests/{request.id}/approve", tier="flower")
    assert read(db, select(Grant)) == []
    assert fetch(db, AccessRequest, request.id).state == RequestState.VALIDATED
    assert "GitHub did not answer" in page_of(maintainer, f"/admin/requests/{request.id}")


def test_request_page_shows_signals_and_hides_the_contact(maintainer, session, world):
    request = open_request(session, world, number=27)
    page = page_of(maintainer, f"/admin/requests/{request.id}")
    assert "days old" in page  # account age from GitHub
    assert "alice@example.org" not in page
    assert "Approve" in page and "Reject" in page and "Ask for more information" in page


# --- domain reviews ----------------------------------------------------------------------------------


def test_a_waiting_domain_is_added_or_refused_from_the_queue(maintainer, session, db, world):
    request = make_request(session, number=30, state=RequestState.APPROVED)
    add_issue_for(world, request, state="closed")
    grant = make_grant(session, request=request)
    for domain in ("one.example.com", "two.example.com"):
        session.add(DomainChange(grant_id=grant.id, domain=domain, requested_by=APPLICANT["login"],
                                 requested_by_id=APPLICANT["id"]))
    session.commit()
    one, two = read(db, select(DomainChange).order_by(DomainChange.id))
    page = page_of(maintainer, "/admin/")
    assert "one.example.com" in page and "two.example.com" in page
    post(maintainer, f"/admin/domain-changes/{one.id}/approve")
    post(maintainer, f"/admin/domain-changes/{two.id}/reject", reason="Not your domain")
    assert sorted(read(db, select(GrantDomain.domain).where(GrantDomain.active == True))) == [  # noqa: E712
        "freeaichat.com", "one.example.com"]
    assert [fetch(db, DomainChange, c.id).state for c in (one, two)] == ["approved", "rejected"]
    bodies = [c["body"] for c in world.bot_comments(REPO, 30)]
    assert any("approved by @" in b and "via the dashboard" in b and "one.example.com" in b for b in bodies)
    assert any("Not your domain" in b for b in bodies)


# --- grants ------------------------------------------------------------------------------------------


def test_grants_search_by_app_domain_user_and_tier(maintainer, session, world):
    make_grant(session, app_id="alpha", tier="seed", domains=("alpha.example.com",))
    make_grant(session, owner=STRANGER, app_id="beta", tier="flower", domains=("shop.beta.io",))
    for query, found, missing in [("app=alp", "alpha", "beta"), ("domain=beta.io", "beta", "alpha"),
                                  (f"user={STRANGER['login']}", "beta", "alpha"),
                                  (f"user={APPLICANT['id']}", "alpha", "beta"), ("tier=flower", "beta", "alpha")]:
        page = page_of(maintainer, f"/admin/grants?{query}")
        assert f"<code>{found}</code>" in page and f"<code>{missing}</code>" not in page, query
    assert "No grant matches" in page_of(maintainer, "/admin/grants?app=nothing_%")


def test_change_tier_and_revoke_from_the_grant_page(maintainer, session, db, world):
    request = make_request(session, number=40, state=RequestState.APPROVED)
    add_issue_for(world, request, state="closed", labels=["special-access", "approved", "tier:flower"])
    grant = make_grant(session, request=request)
    post(maintainer, f"/admin/grants/{grant.id}/tier", tier="nectar")
    assert fetch(db, Grant, grant.id).tier == "nectar"
    assert "tier:nectar" in world.issue_labels(REPO, 40) and "tier:flower" not in world.issue_labels(REPO, 40)
    post(maintainer, f"/admin/grants/{grant.id}/revoke", reason="Abuse reported")
    revoked = fetch(db, Grant, grant.id)
    assert (revoked.status, revoked.revoke_reason) == ("revoked", "Abuse reported")
    page = page_of(maintainer, f"/admin/grants/{grant.id}")
    assert "grant.tier_changed" in page and "grant.revoked" in page  # the history
    assert "Change tier" not in page  # nothing left to change


# --- audit trail ---------------------------------------------------------------------------------------


def test_audit_trail_filters_pages_and_exports_csv(admin, session, world):
    maintainer = admin
    for n in range(60):
        audit.record(session, "system", "key.claimed", grant_id=1, subject=f"app-{n}")
    audit.record(session, "mallory", "grant.revoked", grant_id=2, subject="=HYPERLINK(\"http://x\")",
                 details={"reason": "-1+1"})
    session.commit()
    first = page_of(maintainer, "/admin/audit")
    assert "Page 1 of 2" in first and "61 rows" in first
    only = page_of(maintainer, "/admin/audit?actor=mallory")
    assert "grant.revoked" in only and "app-5<" not in only
    assert "is not a date" in page_of(maintainer, "/admin/audit?since=yesterday")
    response = maintainer.get("/admin/audit.csv?actor=mallory")
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:4] == ["id", "at", "actor", "action"]
    assert len(rows) == 2 and rows[1][2] == "mallory"
    assert rows[1][6].startswith("'=HYPERLINK")  # a spreadsheet will not run it
    everything = list(csv.reader(io.StringIO(maintainer.get("/admin/audit.csv").get_data(as_text=True))))
    assert len(everything) == 62


# --- gateways ------------------------------------------------------------------------------------------


def test_gateways_show_last_pull_and_version_held(admin, session, db, world):
    maintainer = admin
    assert "No gateway is registered" in page_of(maintainer, "/admin/gateways")
    eu, eu_credential = gateways.add(session, "edge-eu", "bk", "cli:ops")
    us, _ = gateways.add(session, "edge-us", "bk", "cli:ops")
    session.commit()
    recorder = gateways.PullRecorder(db, flush_seconds=0)
    for _ in range(12):
        recorder.record(eu.id, 0)
    make_grant(session)  # bumps the allowlist version past what edge-eu holds
    page = page_of(maintainer, "/admin/gateways")
    assert "edge-eu" in page and eu.display in page and eu_credential not in page
    assert "1 behind" in page and "never" in page  # edge-us never pulled
    assert ">12<" in page


def test_queue_is_for_maintainers_only(client, session, world):
    sign_in(client, STRANGER, world)
    response = client.get("/admin/")
    assert response.status_code == 403
    assert "for the platform" in response.get_data(as_text=True)


