"""A repository's admin is a maintainer of that repository only (issue 14, item 4), tried as an
attacker would: eve administers acme/playground, a repository of the same organisation that the
app's org-wide installation covers; she files a request with a sock-puppet there and approves it
at the top tier, and in the dashboard she reads and changes what belongs to acme/access.
"""

from __future__ import annotations

import logging

import pytest
from flask import jsonify
from sqlmodel import select

from bot.core import audit
from bot.core.models import AccessRequest, DomainChange, DomainChangeState, Grant, GrantDomain, RequestState
from bot.ops import doctor
from bot.web.web_permissions import visible_repositories
from tests.conftest import REPO, comment_event, deliver, issue_event
from tests.portal_data import APPLICANT, MAINTAINER, csrf, install, make_grant, make_request, read, sign_in
from tests.request_helpers import add_issue_for, add_people, form_body

PLAYGROUND = "acme/playground"
EVE = {"login": "eve-admin", "id": 8800, "type": "User"}
PUPPET = {"login": "sock-puppet", "id": 8801, "type": "User"}


@pytest.fixture
def org_wide(fake_github):
    """The app installed on the whole organisation: acme/access (the request form) and acme/playground,
    which eve administers."""
    add_people(fake_github)
    fake_github.add_user(EVE["login"], EVE["id"], created_at="2012-01-01T00:00:00Z")
    fake_github.add_user(PUPPET["login"], PUPPET["id"], created_at="2012-01-01T00:00:00Z")
    fake_github.set_permission(PLAYGROUND, EVE["login"], "admin")
    fake_github.installation_repos = [REPO, PLAYGROUND]
    return fake_github


def _name(runtime, *repos: str) -> None:
    runtime.policy = runtime.policy.model_copy(update={"repositories": list(repos)})


def _puppet_request_approved_by_eve(client, worker, fake) -> None:
    """The sock-puppet opens a request in acme/playground; eve approves it at the top tier."""
    body = form_body(referrer="puppet-app", domains="puppet.example.net", tier="flower")
    fake.add_issue(PLAYGROUND, 1, body=body, user=dict(PUPPET), labels=["special-access"])
    opened = issue_event("opened", body=body, number=1, user=dict(PUPPET), repo=PLAYGROUND)
    assert deliver(client, "issues", opened).status_code == 202
    worker.run_once()
    stored = fake.add_comment(PLAYGROUND, 1, "/approve nectar --force", dict(EVE))
    comment = comment_event("created", body="/approve nectar --force", issue_payload=opened, user=dict(EVE),
                            comment_id=stored["id"])
    assert deliver(client, "issue_comment", comment).status_code == 202
    worker.run_once()


# --- the worker: only the repositories the operator named ---------------------------------------------


def test_an_org_wide_installation_with_no_repositories_named_serves_none(client, worker, db, org_wide, caplog):
    caplog.set_level(logging.INFO, logger="beekeeper.served")
    _puppet_request_approved_by_eve(client, worker, org_wide)
    assert read(db, select(Grant)) == []
    assert read(db, select(AccessRequest)) == []
    assert org_wide.bot_comments(PLAYGROUND, 1) == []
    assert "ignoring an issue event from acme/playground" in caplog.text


def test_requests_come_only_from_the_named_repositories(client, worker, db, runtime, org_wide, caplog):
    _name(runtime, REPO)
    caplog.set_level(logging.INFO, logger="beekeeper.served")
    _puppet_request_approved_by_eve(client, worker, org_wide)
    assert read(db, select(Grant)) == [] and read(db, select(AccessRequest)) == []
    assert "ignoring an issue event from acme/playground" in caplog.text
    # The named repository is served as before.
    body = form_body()
    org_wide.add_issue(REPO, 5, body=body, user=dict(APPLICANT), labels=["special-access"])
    assert deliver(client, "issues", issue_event("opened", body=body, number=5, user=dict(APPLICANT))
                   ).status_code == 202
    worker.run_once()
    assert read(db, select(AccessRequest.repo)) == [REPO]


def test_a_lone_installed_repository_is_served_without_naming_it(client, worker, db, fake_github):
    add_people(fake_github)  # the default installation covers acme/access only
    body = form_body()
    fake_github.add_issue(REPO, 1, body=body, user=dict(APPLICANT), labels=["special-access"])
    deliver(client, "issues", issue_event("opened", body=body, number=1, user=dict(APPLICANT)))
    worker.run_once()
    assert read(db, select(AccessRequest.state)) == [RequestState.VALIDATED]


# --- the dashboard: a maintainer's rights hold where they hold the permission ------------------------------


@pytest.fixture
def two_repos(session, runtime, org_wide):
    """Both repositories named; a request, a grant and a waiting domain in each; a self-service grant."""
    install(session, (REPO, PLAYGROUND))
    _name(runtime, REPO, PLAYGROUND)
    access_request = make_request(session, number=2, referrer="access-app", domains=["access.example.com"])
    add_issue_for(org_wide, access_request)
    access_grant = make_grant(session, app_id="access-grant", domains=("granted.example.com",))
    access_grant.repo, access_grant.issue_number = REPO, 9
    session.add(access_grant)
    play_grant = make_grant(session, owner=PUPPET, app_id="playground-grant", domains=("play.example.net",))
    play_grant.repo, play_grant.issue_number = PLAYGROUND, 3
    session.add(play_grant)
    self_service = make_grant(session, owner=PUPPET, app_id="selfserve-grant", domains=("self.example.org",))
    change = DomainChange(grant_id=access_grant.id, domain="more.example.com", requested_by=APPLICANT["login"],
                          requested_by_id=APPLICANT["id"])
    session.add(change)
    session.commit()
    audit.record(session, "maria-maint", "grant.tier_changed", grant_id=access_grant.id, subject="access-grant")
    session.commit()
    return {"request": access_request.id, "grant": access_grant.id, "play": play_grant.id,
            "self": self_service.id, "change": change.id}


def post(client, url, **data):
    return client.post(url, data={"csrf_token": csrf(client), **data})


def test_a_repository_admin_sees_and_acts_on_their_repository_alone(client, db, two_repos, org_wide):
    sign_in(client, EVE, org_wide)
    grants_page = client.get("/admin/grants").get_data(as_text=True)
    assert "playground-grant" in grants_page
    assert "access-grant" not in grants_page and "selfserve-grant" not in grants_page
    assert "acme/access#2" not in client.get("/admin/").get_data(as_text=True)
    assert "more.example.com" not in client.get("/admin/").get_data(as_text=True)
    for url in (f"/admin/grants/{two_repos['grant']}", f"/admin/grants/{two_repos['self']}",
                f"/admin/requests/{two_repos['request']}"):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "access-grant" not in response.get_data(as_text=True)
    before = (read(db, select(Grant.id, Grant.tier, Grant.status).order_by(Grant.id)),
              read(db, select(DomainChange.state)), read(db, select(GrantDomain.domain).order_by(GrantDomain.id)),
              read(db, select(AccessRequest.state)))
    assert post(client, f"/admin/grants/{two_repos['grant']}/tier", tier="nectar").status_code == 403
    assert post(client, f"/admin/grants/{two_repos['self']}/tier", tier="nectar").status_code == 403
    assert post(client, f"/admin/grants/{two_repos['grant']}/revoke", reason="mine now").status_code == 403
    assert post(client, f"/admin/domain-changes/{two_repos['change']}/approve").status_code == 403
    assert post(client, f"/admin/requests/{two_repos['request']}/approve", tier="nectar").status_code == 403
    after = (read(db, select(Grant.id, Grant.tier, Grant.status).order_by(Grant.id)),
             read(db, select(DomainChange.state)), read(db, select(GrantDomain.domain).order_by(GrantDomain.id)),
             read(db, select(AccessRequest.state)))
    assert after == before
    assert read(db, select(DomainChange.state)) == [DomainChangeState.PENDING]
    # Her own repository's grant is hers to handle.
    assert client.get(f"/admin/grants/{two_repos['play']}").status_code == 200


def test_with_several_repositories_installed_and_none_named_nobody_is_a_repository_maintainer(
        client, session, org_wide):
    install(session, (REPO, PLAYGROUND))
    sign_in(client, EVE, org_wide)
    assert client.get("/admin/").status_code == 403
    assert client.get("/admin/grants").status_code == 403


PLATFORM_PAGES = ["/admin/audit", "/admin/audit.csv", "/admin/gateways"]


@pytest.mark.parametrize("page", PLATFORM_PAGES)
def test_platform_pages_are_for_the_policys_admins(client, session, runtime, fake_github, page):
    add_people(fake_github)
    install(session)
    audit.record(session, "maria-maint", "grant.revoked", subject="secret-app")
    session.commit()
    sign_in(client, MAINTAINER, fake_github)  # write on the only repository: a maintainer of everything else
    assert client.get("/admin/grants").status_code == 200
    response = client.get(page)
    assert response.status_code == 403
    assert "secret-app" not in response.get_data(as_text=True)
    runtime.policy = runtime.policy.model_copy(update={"admins": [MAINTAINER["id"]]})
    sign_in(client, MAINTAINER, fake_github)
    assert client.get(page).status_code == 200


def test_admins_may_be_a_team(client, session, runtime, fake_github):
    add_people(fake_github)
    install(session)
    runtime.policy = runtime.policy.model_copy(update={"admins": ["acme/platform"]})
    fake_github.team_members[("acme", "platform")] = {APPLICANT["login"]}
    sign_in(client, APPLICANT, fake_github)  # no permission on any repository, but on the team
    for page in PLATFORM_PAGES:
        assert client.get(page).status_code == 200, page
    fake_github.team_members[("acme", "platform")] = set()
    sign_in(client, APPLICANT, fake_github)
    assert client.get("/admin/gateways").status_code == 403


def test_the_platform_links_show_for_admins_only(client, session, runtime, fake_github):
    add_people(fake_github)
    install(session)
    sign_in(client, MAINTAINER, fake_github)
    page = client.get("/admin/").get_data(as_text=True)
    assert "/admin/gateways" not in page and "/admin/audit" not in page


def test_visible_repositories_names_what_a_maintainer_may_see(app, client, two_repos, org_wide, runtime):
    app.add_url_rule("/_test/visible", "visible", lambda: jsonify(visible_repositories()))
    assert client.get("/_test/visible").get_json() == []  # signed out
    sign_in(client, EVE, org_wide)
    assert client.get("/_test/visible").get_json() == [PLAYGROUND]
    runtime.policy = runtime.policy.model_copy(update={"admins": [EVE["id"]]})
    sign_in(client, EVE, org_wide)
    assert client.get("/_test/visible").get_json() is None  # a platform admin: everything


# --- doctor ----------------------------------------------------------------------------------------------


def test_doctor_fails_when_several_repositories_are_installed_and_none_named(runtime, org_wide):
    report = doctor.run(runtime)
    [finding] = [f for f in report.findings if f.check == "repositories"]
    assert finding.status == doctor.FAIL
    assert "installed on 2 repositories" in finding.message and "repositories: [acme/access]" in finding.fix
    assert not report.ok


def test_doctor_is_content_with_named_repositories_or_a_lone_one(runtime, org_wide, fake_github):
    _name(runtime, REPO)
    [finding] = [f for f in doctor.run(runtime).findings if f.check == "repositories"]
    assert finding.status == doctor.OK and REPO in finding.message
    _name(runtime)
    fake_github.installation_repos = [REPO]
    [finding] = [f for f in doctor.run(runtime).findings if f.check == "repositories"]
    assert finding.status == doctor.OK and "the only repository" in finding.message


def test_doctor_prints_the_ids_of_policy_logins(runtime, fake_github):
    add_people(fake_github)
    runtime.policy = runtime.policy.model_copy(update={
        "maintainers": runtime.policy.maintainers.model_copy(update={"users": ["maria-maint", 1234]})})
    [finding] = [f for f in doctor.run(runtime).findings if f.check == "maintainers"]
    assert finding.status == doctor.WARN and "maria-maint" in finding.message
    assert "users: [6001, 1234]" in finding.fix
