"""Identity is the numeric GitHub id (issue 14, items 2 and 3), tried as an attacker would:

- a maintainer who renamed their account (same id, new login) approves their own request,
  forces it, or raises their own grant's tier — from the dashboard, the CLI and the issue;
- a maintainer approves, in the dashboard, a domain for a grant they own;
- somebody takes over a login the policy names (a recycled login) and acts as a maintainer.
Every attempt must be refused and change nothing.
"""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from sqlmodel import select

from bot.access import domain_changes
from bot.cli import State, main
from bot.core.config import load_policy
from bot.core.models import AccessRequest, DomainChange, DomainChangeState, Grant, PolicyLogin, RequestState
from bot.requests.commands import MAINTAINER as MAINTAINER_ROLE
from bot.requests.commands import resolve_role
from tests.conftest import REPO, issue_event
from tests.portal_data import csrf, install, make_grant, read, sign_in
from tests.request_helpers import (
    MAINTAINER,
    MAINTAINER_2,
    add_issue_for,
    add_people,
    make_request,
    post_comment,
)

RENAMED = {"login": "maria-renamed", "id": MAINTAINER["id"], "type": "User"}  # same person, new login


@pytest.fixture
def world(session, fake_github):
    add_people(fake_github)
    install(session)
    return fake_github


def rename_maria(fake) -> None:
    """maria-maint renames her account: GitHub keeps her id and her permission follows her."""
    fake.rename_user(MAINTAINER["login"], RENAMED["login"])
    fake.set_permission(REPO, RENAMED["login"], "write")
    fake.permissions.pop((REPO, MAINTAINER["login"]), None)


def own_request(session, fake, **kwargs) -> AccessRequest:
    """A request maria-maint filed under her old login."""
    request = make_request(session, applicant=MAINTAINER, **kwargs)
    add_issue_for(fake, request)
    return request


def own_grant(session, fake) -> Grant:
    request = own_request(session, fake, state=RequestState.APPROVED)
    return make_grant(session, owner=MAINTAINER, request=request, tier="flower")


def post(client, url, **data):
    return client.post(url, data={"csrf_token": csrf(client), **data}, follow_redirects=True)


# --- item 2: a renamed maintainer, in the dashboard ----------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_renamed_maintainer_cannot_approve_their_own_request_in_the_dashboard(client, session, db, world,
                                                                              force):
    request = own_request(session, world)
    rename_maria(world)
    sign_in(client, RENAMED, world)
    page = post(client, f"/admin/requests/{request.id}/approve", tier="nectar", force="1" if force else "")
    assert page.status_code == 200
    assert "own request" in page.get_data(as_text=True)
    assert read(db, select(Grant)) == []
    assert read(db, select(AccessRequest.state)) == [RequestState.VALIDATED]


def test_the_request_page_offers_no_approval_of_ones_own_request(client, session, world):
    request = own_request(session, world)
    rename_maria(world)
    sign_in(client, RENAMED, world)
    page = client.get(f"/admin/requests/{request.id}").get_data(as_text=True)
    assert "your own request" in page and f"/admin/requests/{request.id}/approve" not in page
    sign_in(client, MAINTAINER_2, world)
    assert f"/admin/requests/{request.id}/approve" in client.get(f"/admin/requests/{request.id}").get_data(as_text=True)


def test_a_renamed_maintainer_cannot_raise_their_own_grant_in_the_dashboard(client, session, db, world):
    grant = own_grant(session, world)
    rename_maria(world)
    sign_in(client, RENAMED, world)
    page = post(client, f"/admin/grants/{grant.id}/tier", tier="nectar")
    assert "own grant" in page.get_data(as_text=True)
    assert read(db, select(Grant.tier)) == ["flower"]


def test_another_maintainer_still_decides_on_it(client, session, db, world):
    request = own_request(session, world)
    rename_maria(world)
    sign_in(client, MAINTAINER_2, world)
    post(client, f"/admin/requests/{request.id}/approve", tier="flower")
    assert read(db, select(Grant.github_user_id)) == [MAINTAINER["id"]]


def test_someone_who_took_over_the_old_login_is_not_the_applicant(client, session, db, world, fake_github):
    """The other way round: the applicant renamed, a maintainer now holds the old login."""
    request = make_request(session, applicant={"login": "old-name", "id": 5555})
    add_issue_for(world, request)
    world.add_user("old-name", 6300)  # a maintainer who registered the free login
    world.set_permission(REPO, "old-name", "write")
    sign_in(client, {"login": "old-name", "id": 6300}, world)
    post(client, f"/admin/requests/{request.id}/approve", tier="flower")
    assert read(db, select(Grant.github_user_id)) == [5555]


# --- item 3: domain changes on one's own grant ----------------------------------------------------------


def _waiting_domain(session, grant) -> DomainChange:
    change = DomainChange(grant_id=grant.id, domain="more.example.com", requested_by=MAINTAINER["login"],
                          requested_by_id=MAINTAINER["id"])
    session.add(change)
    session.commit()
    return change


@pytest.mark.parametrize("renamed", [False, True])
def test_a_maintainer_cannot_approve_a_domain_for_their_own_grant(client, session, db, world, renamed):
    grant = own_grant(session, world)
    change = _waiting_domain(session, grant)
    who = MAINTAINER
    if renamed:
        rename_maria(world)
        who = RENAMED
    sign_in(client, who, world)
    page = post(client, f"/admin/domain-changes/{change.id}/approve")
    assert "own grant" in page.get_data(as_text=True)
    assert read(db, select(DomainChange.state)) == [DomainChangeState.PENDING]
    # Another maintainer may.
    sign_in(client, MAINTAINER_2, world)
    post(client, f"/admin/domain-changes/{change.id}/approve")
    assert read(db, select(DomainChange.state)) == [DomainChangeState.APPROVED]


def test_the_service_refuses_a_domain_for_the_actors_own_grant_by_id(session, policy, world):
    grant = own_grant(session, world)
    change = _waiting_domain(session, grant)
    with pytest.raises(domain_changes.Refused, match="own grant"):
        domain_changes.approve(session, policy, change, "any-login-at-all", actor_id=MAINTAINER["id"])
    assert change.state == DomainChangeState.PENDING


# --- the CLI with --as ---------------------------------------------------------------------------------


@pytest.fixture
def cli(runtime, world):
    state = State()
    state._runtime = runtime

    def run(*args: str):
        return CliRunner().invoke(main, list(args), obj=state, catch_exceptions=False)

    return run


def test_cli_as_a_renamed_maintainer_cannot_approve_their_own_request(cli, session, db, world):
    request = own_request(session, world)
    rename_maria(world)
    result = cli("requests", "approve", str(request.id), "--force", "--as", RENAMED["login"])
    assert result.exit_code == 1 and "own request" in result.output
    assert read(db, select(Grant)) == []


def test_cli_as_a_renamed_maintainer_cannot_raise_their_own_grant(cli, session, db, world):
    grant = own_grant(session, world)
    rename_maria(world)
    result = cli("grants", "set-tier", grant.app_id, "nectar", "--as", RENAMED["login"])
    assert result.exit_code == 1 and "own grant" in result.output
    assert read(db, select(Grant.tier)) == ["flower"]


def test_cli_as_an_unknown_login_changes_nothing(cli, session, db, world):
    request = own_request(session, world)
    result = cli("requests", "approve", str(request.id), "--as", "nobody-of-that-name")
    assert result.exit_code == 1 and "no such account" in result.output
    assert read(db, select(Grant)) == []


# --- in the issue ----------------------------------------------------------------------------------------


def test_a_renamed_maintainer_cannot_tier_their_own_grant_from_the_issue(client, worker, session, db, world):
    grant = own_grant(session, world)
    rename_maria(world)
    issue = issue_event("opened", body="", user=dict(MAINTAINER), number=grant.issue_number)
    post_comment(client, worker, world, issue, RENAMED, "/tier nectar")
    assert read(db, select(Grant.tier)) == ["flower"]
    [reply] = [c for c in world.bot_comments(REPO, grant.issue_number) if "beekeeper:reply" in c["body"]]
    assert "own request" in reply["body"]


# --- policy logins: resolved once, remembered ------------------------------------------------------------


def _policy(tmp_path, **data):
    path = tmp_path / "policy.yml"
    path.write_text(yaml.safe_dump(data))
    return load_policy(path)


def test_a_recycled_policy_login_does_not_inherit_maintainer_rights(session, db, world, github, tmp_path):
    policy = _policy(tmp_path, maintainers={"users": ["outside-reviewer"]})
    world.add_user("outside-reviewer", 8200)
    request = make_request(session)
    client = github.for_installation(1)
    assert resolve_role(client, REPO, "outside-reviewer", 8200, False, request, policy,
                        session=session) == {MAINTAINER_ROLE}
    session.commit()
    assert read(db, select(PolicyLogin.login, PolicyLogin.user_id)) == [("outside-reviewer", 8200)]
    # The reviewer renames; a stranger registers the freed login.
    world.rename_user("outside-reviewer", "reviewer-elsewhere")
    world.add_user("outside-reviewer", 9300)
    assert resolve_role(client, REPO, "outside-reviewer", 9300, False, request, policy, session=session) == set()
    # The reviewer, under the new login, still is one.
    assert resolve_role(client, REPO, "reviewer-elsewhere", 8200, False, request, policy,
                        session=session) == {MAINTAINER_ROLE}


def test_policy_users_may_be_numeric_ids(session, world, github, tmp_path):
    policy = _policy(tmp_path, maintainers={"users": [8200]})
    world.add_user("whoever-now", 8200)
    client = github.for_installation(1)
    before = world.count("GET", r"/users/")
    assert resolve_role(client, REPO, "whoever-now", 8200, False, None, policy, session=session) == {MAINTAINER_ROLE}
    assert resolve_role(client, REPO, "someone-else", 8201, False, None, policy, session=session) == set()
    assert world.count("GET", r"/users/") == before  # an id needs no lookup


def test_a_recycled_policy_login_gets_no_dashboard(client, session, world, runtime, tmp_path):
    runtime.policy = _policy(tmp_path, maintainers={"users": ["outside-reviewer"]})
    world.add_user("outside-reviewer", 8200)
    sign_in(client, {"login": "outside-reviewer", "id": 8200}, world)
    assert client.get("/admin/").status_code == 200  # resolved and remembered here
    world.rename_user("outside-reviewer", "reviewer-elsewhere")
    world.add_user("outside-reviewer", 9300)
    sign_in(client, {"login": "outside-reviewer", "id": 9300}, world)
    assert client.get("/admin/").status_code == 403
    sign_in(client, {"login": "reviewer-elsewhere", "id": 8200}, world)
    assert client.get("/admin/").status_code == 200


def test_admins_are_ids_or_teams_never_logins(tmp_path):
    from bot.core.config import ConfigError

    with pytest.raises(ConfigError, match="admins"):
        _policy(tmp_path, admins=["maria-maint"])
    assert _policy(tmp_path, admins=[6001, "acme/platform"]).admins == [6001, "acme/platform"]
