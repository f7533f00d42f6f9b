"""`beekeeper requests|grants|audit`: the same state machine as the slash-commands, from a terminal."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from bot.cli import State, main
from bot.core.models import AccessRequest, AuditEvent, Grant, RequestState
from tests.conftest import REPO
from tests.request_helpers import APPLICANT, add_issue_for, add_people, make_request


@pytest.fixture
def cli(runtime, fake_github):
    add_people(fake_github)
    state = State()
    state._runtime = runtime

    def run(*args: str, ok: bool = True):
        result = CliRunner().invoke(main, list(args), obj=state, catch_exceptions=False)
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    return run


@pytest.fixture
def validated(session, fake_github):
    request = make_request(session)
    add_issue_for(fake_github, request)
    return request


def test_requests_list_filters_by_state(cli, session, validated):
    make_request(session, number=2, state=RequestState.REJECTED, referrer="other", checks_ok=True)
    out = cli("requests", "list", "--state", "open")
    assert f"{REPO}#1" in out and f"{REPO}#2" not in out
    assert f"{REPO}#2" in cli("requests", "list", "--state", "rejected")
    rows = [json.loads(line) for line in cli("requests", "list", "--json").splitlines()]
    assert [(r["issue"], r["state"]) for r in rows] == [(1, "validated"), (2, "rejected")]
    assert cli("requests", "list", "--state", "approved") == "no requests\n"


def test_requests_show_by_issue_reference(cli, validated):
    data = json.loads(cli("requests", "show", f"{REPO}#1"))
    assert data["id"] == validated.id and data["checks"]
    cli("requests", "show", "acme/access#99", ok=False)


def test_approve_from_the_cli_comments_on_the_issue(cli, runtime, fake_github, validated, monkeypatch):
    monkeypatch.setenv("USER", "ops-oliver")
    monkeypatch.setenv("LOGNAME", "ops-oliver")
    out = cli("requests", "approve", str(validated.id), "--tier", "nectar")
    assert "Approved on tier nectar" in out
    with Session(runtime.engine) as s:
        grant = s.exec(select(Grant)).one()
        assert (grant.tier, grant.approved_by, grant.source) == ("nectar", "cli:ops-oliver", "cli")
    [comment] = [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:decision:approve" in c["body"]]
    assert "tier nectar" in comment["body"]
    assert fake_github.issues[(REPO, 1)]["state"] == "closed"
    # Twice: nothing to do, exit 0.
    assert "already approved" in cli("requests", "approve", str(validated.id))


def test_refusals_exit_non_zero_and_change_nothing(cli, runtime, session, fake_github):
    request = make_request(session, state=RequestState.NEEDS_INFO)
    add_issue_for(fake_github, request)
    out = cli("requests", "approve", str(request.id), ok=False)
    assert "refused" in out and "--force" in out and "app id" in out
    out = cli("requests", "approve", str(request.id), "--as", APPLICANT["login"], "--force", ok=False)
    assert "own request" in out
    with Session(runtime.engine) as s:
        assert s.exec(select(Grant)).all() == []
    assert fake_github.bot_comments(REPO, 1) == []


def test_reject_and_needs_info_as_a_named_maintainer(cli, runtime, fake_github, validated):
    cli("requests", "needs-info", str(validated.id), "--message", "Which domains?", "--as", "maria-maint")
    cli("requests", "reject", f"{REPO}#1", "--reason", "No reply in a month.", "--as", "@maria-maint")
    with Session(runtime.engine) as s:
        row = s.get(AccessRequest, validated.id)
        assert (row.state, row.decided_by, row.decision_reason) == ("rejected", "maria-maint", "No reply in a month.")
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "request.rejected")).one()
        assert event.actor == "maria-maint" and event.source.startswith("cli:")
    assert fake_github.issues[(REPO, 1)]["state_reason"] == "not_planned"


def test_grants_list_show_set_tier_revoke(cli, runtime, fake_github, validated):
    cli("requests", "approve", str(validated.id), "--as", "maria-maint")
    out = cli("grants", "list")
    assert "freeaichat" in out and "flower" in out and "freeaichat.io" in out
    shown = json.loads(cli("grants", "show", "freeaichat"))
    assert shown["limits"]["requests_per_minute"] == 300 and shown["domains"] == ["freeaichat.io"]

    assert "moved from tier flower to nectar" in cli("grants", "set-tier", "freeaichat", "nectar", "--as", "mo-maint")
    assert sorted(fake_github.issue_labels(REPO, 1)) == ["approved", "special-access", "tier:nectar"]
    cli("grants", "set-tier", "freeaichat", "platinum", ok=False)

    cli("grants", "revoke", str(shown["id"]), "--reason", "Leaked key", "--as", "mo-maint")
    assert cli("grants", "list") == "no grants\n"
    assert "freeaichat" in cli("grants", "list", "--status", "revoked")
    assert json.loads(cli("grants", "show", "freeaichat"))["removed_domains"] == ["freeaichat.io"]
    revoked = [c for c in fake_github.bot_comments(REPO, 1) if "beekeeper:decision:revoke" in c["body"]]
    assert len(revoked) == 1 and "Leaked key" in revoked[0]["body"]
    assert "already revoked" in cli("grants", "revoke", "freeaichat", "--reason", "again")
    cli("grants", "show", "nope", ok=False)


def test_audit_for_a_grant(cli, validated):
    cli("requests", "approve", str(validated.id), "--as", "maria-maint")
    cli("grants", "set-tier", "freeaichat", "seed", "--as", "mo-maint")
    rows = [json.loads(line) for line in cli("audit", "--grant", "freeaichat", "--json").splitlines()]
    actions = [r["action"] for r in rows]
    assert actions[:3] == ["grant.tier_changed", "grant.created", "request.approved"]
    assert rows[0]["actor"] == "mo-maint" and rows[0]["details"] == {"from": "flower", "to": "seed"}
    assert "grant.tier_changed" in cli("audit", "--action", "grant.*")
    assert "request.approved" not in cli("audit", "--action", "grant.*")
