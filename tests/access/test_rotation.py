"""Rotation with a grace period: the service with an injectable clock, the /rotate command and
`beekeeper keys`."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlmodel import Session, select

from bot.access import keys
from bot.allowlist import versioning
from bot.cli import State, main
from bot.core.clock import utcnow
from bot.core.config import load_policy
from bot.core.models import ApiKey, AuditEvent, Grant, KeyKind
from tests.conftest import REPO, issue_event
from tests.key_helpers import approved_grant, claim_now, make_grant
from tests.request_helpers import APPLICANT, MAINTAINER, STRANGER, add_people, post_comment

KEY = re.compile(r"\bbk_(?:sk|pk)_[0-9A-Za-z]{36}\b")


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------


def test_old_key_works_inside_the_grace_period_and_not_after(session, frozen_clock):
    grant = make_grant(session)
    old = claim_now(session, grant)[KeyKind.SECRET]
    version = versioning.current_version(session)

    rotation = keys.rotate(session, grant, "alice-dev", grace_hours=24, source="test")
    session.commit()
    assert rotation.status == keys.DONE
    assert keys.aware(rotation.expires_at) == frozen_clock.now() + timedelta(hours=24)
    assert session.get(Grant, grant.id).claimable is True
    assert versioning.current_version(session) == version + 1

    frozen_clock.advance(hours=12)
    new = claim_now(session, grant)[KeyKind.SECRET]
    assert keys.is_key_valid(session, old) and keys.is_key_valid(session, new)

    frozen_clock.advance(hours=11, minutes=59, seconds=59)  # 1 s before the end of the grace period
    assert keys.is_key_valid(session, old)
    frozen_clock.advance(seconds=1)
    assert not keys.is_key_valid(session, old) and keys.is_key_valid(session, new)
    rotated = session.exec(select(AuditEvent).where(AuditEvent.action == "key.rotated")).one()
    assert rotated.actor == "alice-dev" and rotated.details["grace_hours"] == 24


def test_zero_grace_stops_the_old_key_at_once(session, frozen_clock):
    grant = make_grant(session)
    old = claim_now(session, grant)[KeyKind.SECRET]
    keys.rotate(session, grant, "maria-maint", grace_hours=0)
    session.commit()
    assert not keys.is_key_valid(session, old)


def test_rotating_twice_before_claiming_changes_nothing_but_may_shorten(session, frozen_clock):
    grant = make_grant(session)
    claim_now(session, grant)
    first = keys.rotate(session, grant, "alice-dev", grace_hours=24)
    version = versioning.current_version(session)
    again = keys.rotate(session, grant, "alice-dev", grace_hours=24)
    assert again.status == keys.NOOP and "already waiting" in again.message
    assert versioning.current_version(session) == version
    sooner = keys.rotate(session, grant, "maria-maint", grace_hours=1)  # "it leaked: stop it sooner"
    assert sooner.status == keys.DONE and keys.aware(sooner.expires_at) < keys.aware(first.expires_at)
    later = keys.rotate(session, grant, "alice-dev", grace_hours=48)  # never lengthened
    assert later.status == keys.NOOP


def test_rotating_a_grant_with_no_key_in_use(session):
    grant = make_grant(session)
    assert keys.rotate(session, grant, "alice-dev", grace_hours=24).status == keys.NOOP  # not claimed yet
    claim_now(session, grant)
    keys.revoke_grant_keys(session, grant, "maria-maint", "compromised")
    rotation = keys.rotate(session, grant, "alice-dev", grace_hours=24)
    assert rotation.status == keys.DONE and session.get(Grant, grant.id).claimable


def test_a_revoked_grant_cannot_rotate(session):
    from bot.access import grants

    grant = make_grant(session)
    grants.revoke_grant(session, grant, "maria-maint", "abuse", source="test")
    assert keys.rotate(session, grant, "alice-dev", grace_hours=24).status == keys.REFUSED


# --------------------------------------------------------------------------------------------
# /rotate
# --------------------------------------------------------------------------------------------


@pytest.fixture
def approved(session, fake_github):
    add_people(fake_github)
    grant = approved_grant(session, fake_github)
    plain = claim_now(session, grant)
    return grant, plain


def request_issue_payload() -> dict:
    return issue_event("closed", body="", number=1, user=dict(APPLICANT), labels=["special-access", "approved"],
                       state="closed")


def replies(fake) -> list[str]:
    return [c["body"] for c in fake.bot_comments(REPO, 1) if "beekeeper:reply" in c["body"]]


@pytest.mark.parametrize("person", [APPLICANT, MAINTAINER])
def test_rotate_command_by_the_applicant_or_a_maintainer(client, worker, fake_github, runtime, approved, person):
    grant, plain = approved
    post_comment(client, worker, fake_github, request_issue_payload(), person, "/rotate")
    [reply] = replies(fake_github)
    assert f"{runtime.settings.public_url}/claim/freeaichat" in reply
    assert "keeps working until" in reply and "(24 hours from now)" in reply
    assert not KEY.search(reply) and all(k not in reply and k[6:-6] not in reply for k in plain.values())
    if person is MAINTAINER:
        assert "@alice-dev, claim the new key" in reply  # the owner is told, not only the maintainer
    with Session(runtime.engine) as s:
        assert s.get(Grant, grant.id).claimable
        assert keys.is_key_valid(s, plain[KeyKind.SECRET])
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "key.rotated")).one()
        assert event.actor == person["login"] and "#issuecomment-" in event.source
    with Session(runtime.engine) as s:
        assert not keys.is_key_valid(s, plain[KeyKind.SECRET], now=utcnow() + timedelta(hours=24, seconds=1))


def test_rotate_now(client, worker, fake_github, runtime, approved):
    _, plain = approved
    post_comment(client, worker, fake_github, request_issue_payload(), APPLICANT, "/rotate --now")
    [reply] = replies(fake_github)
    assert "stopped working at once" in reply
    with Session(runtime.engine) as s:
        assert not keys.is_key_valid(s, plain[KeyKind.SECRET])


def test_rotate_is_refused_for_anybody_else_and_on_requests_without_a_grant(client, worker, fake_github, runtime,
                                                                           approved):
    _, plain = approved
    post_comment(client, worker, fake_github, request_issue_payload(), STRANGER, "/rotate")
    [reply] = replies(fake_github)
    assert "was not run" in reply and "maintainers of this repository and the applicant" in reply
    with Session(runtime.engine) as s:
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "key.rotated")).all() == []
        assert not s.exec(select(Grant)).one().claimable


def test_rotate_on_a_request_without_a_grant(client, worker, fake_github, runtime, session):
    from tests.request_helpers import open_issue

    add_people(fake_github)
    issue = open_issue(client, worker, fake_github)
    post_comment(client, worker, fake_github, issue, APPLICANT, "/rotate")
    [reply] = replies(fake_github)
    assert "has no grant yet" in reply


def test_rotate_takes_no_other_argument(client, worker, fake_github, approved):
    post_comment(client, worker, fake_github, request_issue_payload(), APPLICANT, "/rotate bk_sk_whatever")
    [reply] = replies(fake_github)
    assert "takes no arguments" in reply


def test_the_grace_period_comes_from_the_policy(tmp_path, session, frozen_clock):
    path = tmp_path / "policy.yml"
    path.write_text("keys:\n  rotation_grace_hours: 2\n")
    policy = load_policy(path)
    grant = make_grant(session)
    old = claim_now(session, grant)[KeyKind.SECRET]
    keys.rotate(session, grant, "alice-dev", grace_hours=policy.keys.rotation_grace_hours)
    session.commit()
    frozen_clock.advance(hours=1, minutes=59)
    assert keys.is_key_valid(session, old)
    frozen_clock.advance(minutes=1)
    assert not keys.is_key_valid(session, old)


# --------------------------------------------------------------------------------------------
# beekeeper keys
# --------------------------------------------------------------------------------------------


@pytest.fixture
def cli(runtime):
    state = State()
    state._runtime = runtime

    def run(*args: str, ok: bool = True):
        result = CliRunner().invoke(main, list(args), obj=state, catch_exceptions=False)
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    return run


def test_cli_list_shows_display_forms_only(cli, approved):
    _, plain = approved
    out = cli("keys", "list", "freeaichat")
    assert all(k not in out for k in plain.values())
    assert keys.keyformat.display(plain[KeyKind.SECRET]) in out and "active" in out
    rows = [json.loads(line) for line in cli("keys", "list", "--json").splitlines()]
    assert {r["kind"] for r in rows} == {"secret", "publishable"} and all(r["app_id"] == "freeaichat" for r in rows)
    cli("keys", "list", "nosuch", ok=False)


def test_cli_rotate_comments_on_the_issue(cli, approved, fake_github, runtime, frozen_clock):
    _, plain = approved
    out = cli("keys", "rotate", "freeaichat", "--grace-hours", "1", "--as", "maria-maint")
    assert "/claim/freeaichat" in out and all(k not in out for k in plain.values())
    [comment] = [c["body"] for c in fake_github.bot_comments(REPO, 1) if "beekeeper:keys-rotated" in c["body"]]
    assert "@alice-dev" in comment and "/claim/freeaichat" in comment and "(1 hours from now)" in comment
    assert not KEY.search(comment)
    assert "nothing to do" in cli("keys", "rotate", "freeaichat")
    frozen_clock.advance(hours=1)
    with Session(runtime.engine) as s:
        assert not keys.is_key_valid(s, plain[KeyKind.SECRET])


def test_cli_revoke_one_key_or_all_keys_of_a_grant(cli, approved, fake_github, runtime):
    _, plain = approved
    with Session(runtime.engine) as s:
        secret = keys.find_key(s, plain[KeyKind.SECRET])
    version = _version(runtime)
    out = cli("keys", "revoke", str(secret.id), "--reason", "asked by the owner")
    assert f"revoked key {secret.id}" in out and _version(runtime) == version + 1
    assert [c for c in fake_github.bot_comments(REPO, 1) if "keys-revoked" in c["body"]] == []  # key-level: quiet

    out = cli("keys", "revoke", "--grant", "freeaichat", "--reason", "Abuse reported.")
    assert "revoked key" in out and _version(runtime) == version + 2
    [comment] = [c["body"] for c in fake_github.bot_comments(REPO, 1) if "keys-revoked" in c["body"]]
    assert "@alice-dev" in comment and "Abuse reported" in comment and not KEY.search(comment)
    with Session(runtime.engine) as s:
        assert not any(keys.is_key_valid(s, k) for k in plain.values())
        assert len(s.exec(select(ApiKey).where(ApiKey.revoked_at.is_not(None))).all()) == 2
    assert "nothing to do" in cli("keys", "revoke", "--grant", "freeaichat", "--reason", "again")
    cli("keys", "revoke", "--reason", "no target", ok=False)
    cli("keys", "revoke", "999", "--reason", "unknown", ok=False)


def _version(runtime) -> int:
    with Session(runtime.engine) as s:
        return versioning.current_version(s)
