"""Who may run which command: the permission matrix, asked of the fake GitHub over HTTP."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from bot.core.config import load_policy
from bot.core.models import AccessRequest, Grant, RequestState
from bot.requests.commands import APPLICANT, COMMANDS, MAINTAINER, commands_for, permission_refusal, resolve_role
from tests.conftest import REPO, issue_event
from tests.request_helpers import APPLICANT as ALICE
from tests.request_helpers import add_issue_for, add_people, make_request, post_comment


@pytest.fixture
def gh(fake_github, github):
    add_people(fake_github)
    return github.for_installation(1)


@pytest.fixture
def request_row(session):
    return make_request(session)


def policy_with(tmp_path, **maintainers):
    path = tmp_path / "policy.yml"
    import yaml

    path.write_text(yaml.safe_dump({"maintainers": maintainers}))
    return load_policy(path)


@pytest.mark.parametrize("permission, is_maintainer", [
    ("admin", True), ("maintain", True), ("write", True), ("triage", False), ("read", False), ("none", False),
])
def test_repository_permission_decides_who_is_a_maintainer(gh, fake_github, policy, request_row, permission,
                                                           is_maintainer):
    fake_github.add_user("pat", 8100)
    if permission != "none":
        fake_github.set_permission(REPO, "pat", permission)
    roles = resolve_role(gh, REPO, "pat", 8100, False, request_row, policy)
    assert (MAINTAINER in roles) is is_maintainer
    assert APPLICANT not in roles
    assert (permission_refusal(COMMANDS["approve"], roles, policy) is None) is is_maintainer


def test_a_user_unknown_to_github_has_no_role(gh, policy, request_row):
    assert resolve_role(gh, REPO, "ghost-user", 999999, False, request_row, policy) == set()


def test_policy_users_are_maintainers_case_insensitively(gh, fake_github, session, request_row, tmp_path):
    fake_github.add_user("Outside-Reviewer", 8200)
    policy = policy_with(tmp_path, users=["outside-reviewer"])
    assert resolve_role(gh, REPO, "Outside-Reviewer", 8200, False, request_row, policy,
                        session=session) == {MAINTAINER}


def test_team_members_are_maintainers(gh, fake_github, request_row, tmp_path):
    fake_github.add_user("teammate", 8300)
    fake_github.add_user("not-in-team", 8301)
    fake_github.team_members[("acme", "api-reviewers")] = {"teammate"}
    policy = policy_with(tmp_path, teams=["acme/api-reviewers"])
    assert resolve_role(gh, REPO, "teammate", 8300, False, request_row, policy) == {MAINTAINER}
    assert resolve_role(gh, REPO, "not-in-team", 8301, False, request_row, policy) == set()


def test_the_applicant_is_known_by_numeric_id_not_login(gh, fake_github, policy, request_row):
    assert resolve_role(gh, REPO, ALICE["login"], ALICE["id"], False, request_row, policy) == {APPLICANT}
    # Someone who took the applicant's old login is not the applicant.
    fake_github.add_user("renamed-alice", 5999)
    assert resolve_role(gh, REPO, ALICE["login"], 5999, False, request_row, policy) == set()


def test_bots_have_no_role_whatever_their_permission(gh, fake_github, policy, request_row):
    fake_github.add_user("helper[bot]", 8400, type_="Bot")
    fake_github.set_permission(REPO, "helper[bot]", "admin")
    assert resolve_role(gh, REPO, "helper[bot]", 8400, True, request_row, policy) == set()


def test_applicant_who_is_also_maintainer_cannot_grant_themselves_access(gh, fake_github, policy, request_row):
    fake_github.set_permission(REPO, ALICE["login"], "admin")
    roles = resolve_role(gh, REPO, ALICE["login"], ALICE["id"], False, request_row, policy)
    assert roles == {MAINTAINER, APPLICANT}
    assert "own request" in permission_refusal(COMMANDS["approve"], roles, policy)
    assert "own request" in permission_refusal(COMMANDS["tier"], roles, policy)
    # Everything that grants nothing stays allowed.
    for name in ("reject", "needs-info", "revoke", "recheck", "withdraw", "help"):
        assert permission_refusal(COMMANDS[name], roles, policy) is None, name


def test_self_approval_can_be_allowed_by_policy(gh, fake_github, request_row, tmp_path):
    policy = policy_with(tmp_path, forbid_self_approval=False)
    fake_github.set_permission(REPO, ALICE["login"], "write")
    roles = resolve_role(gh, REPO, ALICE["login"], ALICE["id"], False, request_row, policy)
    assert permission_refusal(COMMANDS["approve"], roles, policy) is None


@pytest.mark.parametrize("name, maintainer, applicant, nobody", [
    ("approve", True, False, False),
    ("reject", True, False, False),
    ("needs-info", True, False, False),
    ("tier", True, False, False),
    ("revoke", True, False, False),
    ("recheck", True, True, False),
    ("withdraw", False, True, False),
    ("help", True, True, False),
])
def test_command_matrix(policy, name, maintainer, applicant, nobody):
    spec = COMMANDS[name]
    assert (permission_refusal(spec, {MAINTAINER}, policy) is None) is maintainer
    assert (permission_refusal(spec, {APPLICANT}, policy) is None) is applicant
    assert (permission_refusal(spec, set(), policy) is None) is nobody


def test_help_lists_only_what_the_person_may_use(policy):
    from bot.intake.handlers import load_handlers

    load_handlers()  # every command module registered, as in the worker
    applicant = {s.name for s in commands_for({APPLICANT}, policy)}
    assert {"recheck", "withdraw", "help"} <= applicant
    assert not {"approve", "reject", "tier", "revoke", "needs-info"} & applicant
    maintainer = {s.name for s in commands_for({MAINTAINER}, policy)}
    assert {"approve", "reject", "tier", "revoke"} <= maintainer and "withdraw" not in maintainer


# ---- through the webhook: a refused command changes nothing and says why ---------------------


@pytest.mark.parametrize("permission", ["triage", "read"])
def test_a_non_maintainer_approval_is_refused_politely_and_changes_nothing(client, worker, runtime, fake_github,
                                                                           session, permission):
    add_people(fake_github)
    fake_github.add_user("trina", 8500)
    fake_github.set_permission(REPO, "trina", permission)
    request = make_request(session)
    add_issue_for(fake_github, request)
    comment_id = _comment_with_fake(client, worker, fake_github, request, {"login": "trina", "id": 8500,
                                                                          "type": "User"}, "/approve")
    with Session(runtime.engine) as s:
        assert s.exec(select(Grant)).all() == []
        assert s.get(AccessRequest, request.id).state == RequestState.VALIDATED
    [reply] = [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:reply" in c["body"]]
    assert "Only maintainers" in reply["body"] and "@trina" in reply["body"]
    assert fake_github.comments[comment_id]["reactions"] == {"eyes": 1, "confused": 1}


def test_a_bot_comment_is_ignored_entirely(client, worker, fake_github, session):
    add_people(fake_github)
    request = make_request(session)
    add_issue_for(fake_github, request)
    comment_id = _comment_with_fake(client, worker, fake_github, request,
                                    {"login": "dependabot[bot]", "id": 49699333, "type": "Bot"}, "/approve")
    assert fake_github.bot_comments(REPO, 1) == []
    assert fake_github.comments[comment_id]["reactions"] == {}


def test_applicant_admin_cannot_approve_own_request_through_the_webhook(client, worker, runtime, fake_github,
                                                                        session):
    add_people(fake_github)
    fake_github.set_permission(REPO, ALICE["login"], "admin")
    request = make_request(session)
    add_issue_for(fake_github, request)
    _comment_with_fake(client, worker, fake_github, request, dict(ALICE), "/approve flower")
    with Session(runtime.engine) as s:
        assert s.exec(select(Grant)).all() == []
    [reply] = fake_github.bot_comments(REPO, 1)
    assert "own request" in reply["body"]


def _comment_with_fake(client, worker, fake, request, user, body):
    issue = issue_event("opened", body="", user=dict(ALICE), number=request.issue_number)
    return post_comment(client, worker, fake, issue, user, body)[0]
