"""Who may use which page: every portal and dashboard route × anonymous, the applicant, another
user and a maintainer; then how the maintainer answer is found, cached and scoped."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from bot.core.models import AccessRequest, ApiKey, AuditEvent, DomainChange, Grant, GrantDomain, RequestState
from tests.portal_data import (
    APPLICANT,
    MAINTAINER,
    STRANGER,
    add_issue_for,
    add_people,
    csrf,
    install,
    make_grant,
    make_request,
    read,
    sign_in,
)

REPO = "acme/access"
LOGIN = "login"  # anonymous visitors are sent to sign in
OK = "ok"  # the page, or the action done and a redirect back to the page
MISSING = 404  # somebody else's grant: nothing about it is revealed
FORBIDDEN = 403
POLICY = "policy"  # allowed to ask, and answered with the page saying why not (here: one grant each)

# (method, url template, anonymous, applicant, other user, maintainer)
PORTAL = [
    ("GET", "/me", LOGIN, OK, OK, OK),
    ("GET", "/me/self-service", LOGIN, OK, OK, OK),
    ("POST", "/me/self-service", LOGIN, POLICY, OK, OK),
    ("POST", "/me/grants/{grant}/domains", LOGIN, OK, MISSING, MISSING),
    ("POST", "/me/grants/{grant}/domains/{domain}/remove", LOGIN, OK, MISSING, MISSING),
    ("POST", "/me/grants/{grant}/domain-changes/{change}/withdraw", LOGIN, OK, MISSING, MISSING),
    ("POST", "/me/grants/{grant}/keys/claim", LOGIN, OK, MISSING, MISSING),
    ("POST", "/me/grants/{grant}/keys/rotate", LOGIN, OK, MISSING, MISSING),
    ("POST", "/me/grants/{grant}/keys/{key}/revoke", LOGIN, OK, MISSING, MISSING),
]
DASHBOARD = [
    ("GET", "/admin/"),
    ("GET", "/admin/requests/{request}"),
    ("POST", "/admin/requests/{request}/approve"),
    ("POST", "/admin/requests/{request}/reject"),
    ("POST", "/admin/requests/{request}/needs-info"),
    ("POST", "/admin/domain-changes/{change}/approve"),
    ("POST", "/admin/domain-changes/{change}/reject"),
    ("GET", "/admin/grants"),
    ("GET", "/admin/grants/{grant}"),
    ("POST", "/admin/grants/{grant}/tier"),
    ("POST", "/admin/grants/{grant}/revoke"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/audit.csv"),
    ("GET", "/admin/gateways"),
]
# The platform-wide pages are for the policy's admins, not for a repository's maintainers.
PLATFORM = {"/admin/audit", "/admin/audit.csv", "/admin/gateways"}
MATRIX = PORTAL + [(method, url, LOGIN, FORBIDDEN, FORBIDDEN, FORBIDDEN if url in PLATFORM else OK)
                   for method, url in DASHBOARD]
PEOPLE = {"anonymous": None, "applicant": APPLICANT, "other user": STRANGER, "maintainer": MAINTAINER}
FORM = {"tier": "nectar", "reason": "Because.", "message": "Tell us more.", "domain": "extra.example.com",
        "app_id": "some-app", "domains": ""}
FORM_FOR = {"/me/self-service": {"domains": "some-app.example.com"}}


@pytest.fixture
def world(session, fake_github):
    """The applicant's open request (with its issue) and grant, a domain and a waiting domain."""
    add_people(fake_github)
    install(session)
    request = make_request(session, number=2, domains=["freeaichat.com"])
    add_issue_for(fake_github, request)
    grant = make_grant(session, app_id="granted-app", domains=("granted.example.com",))
    change = DomainChange(grant_id=grant.id, domain="later.example.com", requested_by=APPLICANT["login"],
                          requested_by_id=APPLICANT["id"])
    session.add(change)
    session.commit()
    domain = session.exec(select(GrantDomain)).one()
    key = ApiKey(grant_id=grant.id, kind="secret", sha256="0" * 64, display="bk_sk_0000…0000")
    session.add(key)
    session.commit()
    return {"request": request.id, "grant": grant.id, "change": change.id, "domain": domain.id, "key": key.id}


def state(db) -> tuple:
    """Everything an action could change, to check that a refused one changed nothing."""
    return (read(db, select(func.count()).select_from(AuditEvent)),
            read(db, select(Grant.status, Grant.tier).order_by(Grant.id)),
            read(db, select(AccessRequest.state).order_by(AccessRequest.id)),
            read(db, select(DomainChange.state).order_by(DomainChange.id)),
            read(db, select(GrantDomain.active).order_by(GrantDomain.id)),
            read(db, select(ApiKey.revoked_at, ApiKey.expires_at).order_by(ApiKey.id)),
            read(db, select(func.count()).select_from(ApiKey)))


# What each allowed action must have done (beyond "something changed").
DONE = {
    "/me/self-service": lambda db, w: read(db, select(func.count()).select_from(Grant))[0] == 2,
    "/me/grants/{grant}/domains": lambda db, w: "extra.example.com" in read(
        db, select(DomainChange.domain)) or "extra.example.com" in read(db, select(GrantDomain.domain)),
    "/me/grants/{grant}/domains/{domain}/remove": lambda db, w: read(
        db, select(GrantDomain.active).where(GrantDomain.id == w["domain"])) == [False],
    "/me/grants/{grant}/domain-changes/{change}/withdraw": lambda db, w: read(
        db, select(DomainChange.state).where(DomainChange.id == w["change"])) != ["pending"],
    "/me/grants/{grant}/keys/claim": lambda db, w: read(db, select(func.count()).select_from(ApiKey))[0] > 1,
    "/me/grants/{grant}/keys/rotate": lambda db, w: read(
        db, select(ApiKey.expires_at).where(ApiKey.id == w["key"]))[0] is not None,
    "/me/grants/{grant}/keys/{key}/revoke": lambda db, w: read(
        db, select(ApiKey.revoked_at).where(ApiKey.id == w["key"]))[0] is not None,
    "/admin/requests/{request}/approve": lambda db, w: read(
        db, select(AccessRequest.state).where(AccessRequest.id == w["request"])) == [RequestState.APPROVED],
    "/admin/requests/{request}/reject": lambda db, w: read(
        db, select(AccessRequest.state).where(AccessRequest.id == w["request"])) == [RequestState.REJECTED],
    "/admin/requests/{request}/needs-info": lambda db, w: read(
        db, select(AccessRequest.state).where(AccessRequest.id == w["request"])) == [RequestState.NEEDS_INFO],
    "/admin/domain-changes/{change}/approve": lambda db, w: read(
        db, select(DomainChange.state).where(DomainChange.id == w["change"])) == ["approved"],
    "/admin/domain-changes/{change}/reject": lambda db, w: read(
        db, select(DomainChange.state).where(DomainChange.id == w["change"])) == ["rejected"],
    "/admin/grants/{grant}/tier": lambda db, w: read(db, select(Grant.tier).where(Grant.id == w["grant"])) == [
        "nectar"],
    "/admin/grants/{grant}/revoke": lambda db, w: read(
        db, select(Grant.status).where(Grant.id == w["grant"])) == ["revoked"],
}


@pytest.mark.parametrize("who", list(PEOPLE))
@pytest.mark.parametrize("method, url, expected", [(m, u, tuple(e)) for m, u, *e in MATRIX],
                         ids=[f"{m} {u}" for m, u, *_ in MATRIX])
def test_route_permissions(client, db, world, method, url, expected, who, fake_github):
    person = PEOPLE[who]
    expect = dict(zip(PEOPLE, expected, strict=True))[who]
    if person is not None:
        sign_in(client, person, fake_github)
    token = csrf(client)
    before = state(db)
    path = url.format(**world)
    if method == "GET":
        response = client.get(path)
    else:
        response = client.post(path, data={"csrf_token": token, **FORM, **FORM_FOR.get(url, {})})
    if expect == LOGIN:
        assert response.status_code == 302 and "/login?next=" in response.headers["Location"]
    elif expect == OK and method == "GET":
        assert response.status_code == 200, response.status_code
    elif expect == POLICY:
        assert response.status_code == 200 and "/login" not in response.headers.get("Location", "")
    elif expect == OK:  # an allowed action: done (the database shows it), then a page or back to one
        assert response.status_code in (200, 302), response.status_code
        if response.status_code == 302:
            assert "/login" not in response.headers["Location"]
        after = state(db)
        assert after != before, f"{method} {url} was allowed but did nothing"
        assert DONE[url](db, world), f"{method} {url} did not do what it says"
    else:
        assert response.status_code == expect
        assert "granted-app" not in response.get_data(as_text=True)
    if expect != OK:
        assert state(db) == before, "a refused request changed something"


def test_posts_without_the_csrf_token_change_nothing(client, db, world, fake_github):
    sign_in(client, MAINTAINER, fake_github)
    csrf(client)
    before = state(db)
    for _method, url in [d for d in DASHBOARD if d[0] == "POST"]:
        assert client.post(url.format(**world), data=FORM).status_code == 400
    assert state(db) == before


# --- how the maintainer answer is found ----------------------------------------------------------------


def permission_calls(fake) -> int:
    return fake.count("GET", r"/collaborators/.+/permission$")


def test_the_answer_is_cached_in_the_session_and_asked_again_after_a_while(client, world, fake_github, frozen_clock):
    sign_in(client, MAINTAINER, fake_github)
    assert client.get("/admin/").status_code == 200
    calls = permission_calls(fake_github)
    assert calls >= 1
    fake_github.set_permission(REPO, MAINTAINER["login"], "read")  # removed on GitHub
    assert client.get("/admin/grants").status_code == 200  # still cached
    assert permission_calls(fake_github) == calls
    frozen_clock.advance(seconds=301)
    assert client.get("/admin/grants").status_code == 403
    assert permission_calls(fake_github) > calls


def test_another_sign_in_in_the_same_browser_is_asked_afresh(client, world, fake_github):
    sign_in(client, MAINTAINER, fake_github)
    assert client.get("/admin/").status_code == 200
    sign_in(client, STRANGER, fake_github)
    assert client.get("/admin/").status_code == 403


@pytest.mark.parametrize("role, allowed", [("admin", True), ("maintain", True), ("write", True),
                                           ("triage", False), ("read", False)])
def test_repository_permission_decides(client, world, fake_github, role, allowed):
    fake_github.set_permission(REPO, STRANGER["login"], role)
    sign_in(client, STRANGER, fake_github)
    assert client.get("/admin/").status_code == (200 if allowed else 403)


def test_policy_users_and_teams_are_maintainers(client, world, fake_github, runtime, tmp_path):
    from bot.core.config import load_policy

    path = tmp_path / "policy.yml"
    path.write_text("maintainers:\n  users: [SAM-STRANGER]\n  teams: [acme/reviewers]\n")
    runtime.policy = load_policy(path)
    sign_in(client, STRANGER, fake_github)
    assert client.get("/admin/").status_code == 200
    fake_github.team_members[("acme", "reviewers")] = {APPLICANT["login"]}
    sign_in(client, APPLICANT, fake_github)
    assert client.get("/admin/").status_code == 200


def test_github_failing_is_neither_yes_nor_no(client, world, fake_github):
    fake_github.fail("GET", r"/collaborators/.+/permission$", 502, times=20)
    sign_in(client, MAINTAINER, fake_github)
    response = client.get("/admin/")
    assert response.status_code == 503
    assert "GitHub did not answer" in response.get_data(as_text=True)


def test_a_maintainer_of_one_repository_cannot_decide_in_another(client, session, db, world, fake_github,
                                                                 runtime):
    install_other = make_request(session, number=3, repo="acme/other", referrer="other-app")
    add_issue_for(fake_github, install_other)
    from bot.core.models import Installation

    row = session.get(Installation, 1)
    row.repositories = [REPO, "acme/other"]
    session.add(row)
    session.commit()
    runtime.policy = runtime.policy.model_copy(update={"repositories": [REPO, "acme/other"]})
    sign_in(client, MAINTAINER, fake_github)  # write on acme/access only
    page = client.get("/admin/").get_data(as_text=True)
    assert "acme/access#2" in page and "acme/other#3" not in page
    response = client.post(f"/admin/requests/{install_other.id}/approve",
                           data={"csrf_token": csrf(client), "tier": "flower"})
    assert response.status_code == 403
    assert read(db, select(AccessRequest.state).where(AccessRequest.id == install_other.id)) == [
        RequestState.VALIDATED]


def test_the_dashboard_link_shows_for_maintainers_only(client, world, fake_github):
    sign_in(client, MAINTAINER, fake_github)
    assert ">Dashboard</a>" in client.get("/me").get_data(as_text=True)
    sign_in(client, STRANGER, fake_github)
    assert ">Dashboard</a>" not in client.get("/me").get_data(as_text=True)
