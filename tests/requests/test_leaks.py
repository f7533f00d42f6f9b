"""Leak response: a live key posted in any issue or comment is revoked at once; the author and
the owner are told without the key being repeated."""

from __future__ import annotations

import base64

import pytest
from sqlmodel import Session, select

from beekeeper_gateway import keyformat
from bot.access import keys
from bot.allowlist import versioning
from bot.core.models import ApiKey, AuditEvent, Delivery, DeliveryStatus, Gateway, Grant, KeyKind
from bot.intake import inbox
from tests.conftest import REPO, comment_event, deliver, issue_event
from tests.key_helpers import approved_grant, claim_now
from tests.request_helpers import APPLICANT, STRANGER, add_people, post_comment

OTHER_ISSUE = 42


@pytest.fixture
def claimed(session, fake_github):
    add_people(fake_github)
    grant = approved_grant(session, fake_github)
    return grant, claim_now(session, grant)


def other_issue(fake, user=STRANGER) -> dict:
    """An ordinary issue (not a request: no label) in the same repository."""
    fake.add_issue(REPO, OTHER_ISSUE, body="The API returns 500 for me.", user=dict(user), labels=[], title="Bug")
    return issue_event("opened", body="The API returns 500 for me.", number=OTHER_ISSUE, user=dict(user), labels=[],
                       title="Bug")


def notices(fake, number=OTHER_ISSUE) -> list[str]:
    return [c["body"] for c in fake.bot_comments(REPO, number) if "beekeeper:leak" in c["body"]]


def assert_no_key_material(body: str, *plaintexts: str) -> None:
    assert not keyformat.pattern("bk").search(body)
    for key in plaintexts:
        assert key not in body and key[6:-6] not in body and keyformat.display(key) not in body
        assert key[6:16] not in body and key[-10:] not in body


def current_version(runtime) -> int:
    with Session(runtime.engine) as s:  # a short session: an open one would hold SQLite's write lock
        return versioning.current_version(s)


def valid(runtime, key: str) -> bool:
    with Session(runtime.engine) as s:
        return keys.is_key_valid(s, key)


def test_a_leaked_secret_key_is_revoked_and_the_reply_does_not_contain_it(client, worker, fake_github, runtime,
                                                                          claimed):
    grant, plain = claimed
    secret = plain[KeyKind.SECRET]
    version = current_version(runtime)
    comment_id, _ = post_comment(client, worker, fake_github, other_issue(fake_github), STRANGER,
                                 f"I tried with my key:\n\n```\ncurl -H 'Authorization: Bearer {secret}' …\n```")

    assert not valid(runtime, secret)
    assert valid(runtime, plain[KeyKind.PUBLISHABLE])  # publishable keys are public by design
    [notice] = notices(fake_github)
    assert "@sam-stranger" in notice and "@alice-dev" in notice  # the author and the key's owner
    assert "`freeaichat`" in notice and f"{runtime.settings.public_url}/claim/freeaichat" in notice
    assert "revoked" in notice and "Editing it is not enough" in notice
    assert_no_key_material(notice, secret, plain[KeyKind.PUBLISHABLE])
    with Session(runtime.engine) as s:
        key = keys.find_key(s, secret)
        assert key.revoke_reason.startswith("leaked in ") and f"issuecomment-{comment_id}" in key.revoke_reason
        leaked = s.exec(select(AuditEvent).where(AuditEvent.action == "key.leaked")).one()
        assert leaked.idempotency_key == f"leak:{key.id}" and leaked.grant_id == grant.id
        assert leaked.details["author"] == STRANGER["login"] and leaked.details["location"] == f"comment:{comment_id}"
        assert secret not in str(leaked.details)
        assert versioning.current_version(s) == version + 1


def test_the_owner_posting_their_own_key_is_mentioned_once(client, worker, fake_github, runtime, claimed):
    _, plain = claimed
    post_comment(client, worker, fake_github, other_issue(fake_github, APPLICANT), APPLICANT,
                 f"is this right? {plain[KeyKind.SECRET]}")
    [notice] = notices(fake_github)
    assert notice.count("@alice-dev") == 1 and "Get a new key at" in notice
    assert not valid(runtime, plain[KeyKind.SECRET])


def test_strings_that_are_not_live_secret_keys_change_nothing(client, worker, fake_github, runtime, claimed):
    _, plain = claimed
    secret = plain[KeyKind.SECRET]
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")  # checksum fails
    unknown = keyformat.generate("bk", "sk")  # well formed, not ours
    body = f"{forged} {unknown} {plain[KeyKind.PUBLISHABLE]} bk_sk_short"
    version = current_version(runtime)
    post_comment(client, worker, fake_github, other_issue(fake_github), STRANGER, body)
    assert valid(runtime, secret) and valid(runtime, plain[KeyKind.PUBLISHABLE])
    assert notices(fake_github) == []
    with Session(runtime.engine) as s:
        assert versioning.current_version(s) == version
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "key.leaked")).all() == []


def test_an_already_revoked_key_is_not_reported_again(client, worker, fake_github, runtime, claimed):
    grant, plain = claimed
    with Session(runtime.engine) as s:
        keys.revoke_grant_keys(s, s.get(Grant, grant.id), "maria-maint", "compromised")
        s.commit()
    post_comment(client, worker, fake_github, other_issue(fake_github), STRANGER, plain[KeyKind.SECRET])
    assert notices(fake_github) == []


def test_a_key_inside_its_rotation_grace_period_is_revoked_too(client, worker, fake_github, runtime, claimed):
    grant, plain = claimed
    with Session(runtime.engine) as s:
        keys.rotate(s, s.get(Grant, grant.id), "alice-dev", grace_hours=24)
        s.commit()
    post_comment(client, worker, fake_github, other_issue(fake_github), STRANGER, plain[KeyKind.SECRET])
    assert not valid(runtime, plain[KeyKind.SECRET]) and len(notices(fake_github)) == 1


def test_a_redelivered_leak_is_reported_once(client, worker, fake_github, runtime, claimed):
    _, plain = claimed
    _, payload = post_comment(client, worker, fake_github, other_issue(fake_github), STRANGER,
                              plain[KeyKind.SECRET], delivery_id="leak-1")
    deliver(client, "issue_comment", payload, delivery_id="leak-2")  # GitHub sends it again, new id
    worker.run_once()
    assert len(notices(fake_github)) == 1
    with Session(runtime.engine) as s:
        assert len(s.exec(select(AuditEvent).where(AuditEvent.action == "key.revoked")).all()) == 1


def test_a_github_outage_delays_the_notice_never_the_revocation(client, worker, fake_github, runtime, claimed):
    _, plain = claimed
    fake_github.fail("POST", rf"/issues/{OTHER_ISSUE}/comments$", 502, times=1)
    post_comment(client, worker, fake_github, other_issue(fake_github), STRANGER, plain[KeyKind.SECRET])

    assert not valid(runtime, plain[KeyKind.SECRET])  # revoked and committed although the handler failed
    assert notices(fake_github) == []
    with Session(runtime.engine) as s:
        delivery = s.exec(select(Delivery).where(Delivery.event == "issue_comment")).one()
        assert delivery.status == DeliveryStatus.RETRY
        inbox.retry_now(s, delivery.id)  # the backoff has passed
        s.commit()
    worker.run_once()
    [notice] = notices(fake_github)
    assert "@alice-dev" in notice
    with Session(runtime.engine) as s:
        assert len(s.exec(select(AuditEvent).where(AuditEvent.action == "key.revoked")).all()) == 1


def test_a_key_added_by_editing_a_comment(client, worker, fake_github, runtime, claimed):
    _, plain = claimed
    issue = other_issue(fake_github)
    comment_id, _ = post_comment(client, worker, fake_github, issue, STRANGER, "my key is below")
    edited = comment_event("edited", body=f"my key is below {plain[KeyKind.SECRET]}", issue_payload=issue,
                           user=dict(STRANGER), comment_id=comment_id)
    deliver(client, "issue_comment", edited)
    worker.run_once()
    assert not valid(runtime, plain[KeyKind.SECRET]) and len(notices(fake_github)) == 1


def test_a_key_in_an_issue_body(client, worker, fake_github, runtime, claimed):
    _, plain = claimed
    body = f"Steps to reproduce: call with {plain[KeyKind.SECRET]}"
    fake_github.add_issue(REPO, OTHER_ISSUE, body=body, user=dict(STRANGER), labels=[])
    deliver(client, "issues", issue_event("opened", body=body, number=OTHER_ISSUE, user=dict(STRANGER), labels=[]))
    worker.run_once()
    assert not valid(runtime, plain[KeyKind.SECRET])
    [notice] = notices(fake_github)
    assert "this issue's text" in notice
    assert_no_key_material(notice, plain[KeyKind.SECRET])


def test_a_leaked_gateway_credential_is_revoked(client, worker, fake_github, runtime, session):
    add_people(fake_github)
    credential = keyformat.generate("bk", "gw")
    session.add(Gateway(name="edge-1", sha256=keyformat.sha256_hex(credential), display=keyformat.display(credential)))
    session.commit()
    post_comment(client, worker, fake_github, other_issue(fake_github), STRANGER, f"gateway token {credential}")
    with Session(runtime.engine) as s:
        assert s.exec(select(Gateway)).one().revoked_at is not None
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "gateway.revoked")).one().subject == "edge-1"
    [notice] = notices(fake_github)
    assert "gateway credential" in notice
    assert_no_key_material(notice, credential)


def test_several_keys_in_one_comment(client, worker, fake_github, runtime, claimed, session):
    _, plain = claimed
    from tests.key_helpers import make_grant

    other = make_grant(session, owner=STRANGER, app_id="otherapp", domains=("other.example.com",))
    other_plain = claim_now(session, other, owner=STRANGER)
    post_comment(client, worker, fake_github, other_issue(fake_github, APPLICANT), APPLICANT,
                 f"{plain[KeyKind.SECRET]} and {other_plain[KeyKind.SECRET]}")
    [notice] = notices(fake_github)
    assert "2 live secret keys" in notice and "`freeaichat`" in notice and "`otherapp`" in notice
    assert "@sam-stranger, get a new key" in notice
    assert not valid(runtime, plain[KeyKind.SECRET]) and not valid(runtime, other_plain[KeyKind.SECRET])
    with Session(runtime.engine) as s:
        assert len(s.exec(select(ApiKey).where(ApiKey.revoked_at.is_not(None))).all()) == 2


def test_on_an_edit_the_editor_is_told(client, worker, fake_github, runtime, claimed):
    from tests.request_helpers import MAINTAINER

    _, plain = claimed
    body = f"Repro (edited by a maintainer): {plain[KeyKind.SECRET]}"
    fake_github.add_issue(REPO, OTHER_ISSUE, body=body, user=dict(STRANGER), labels=[])
    deliver(client, "issues", issue_event("edited", body=body, number=OTHER_ISSUE, user=dict(STRANGER), labels=[],
                                          sender=dict(MAINTAINER), changes={"body": {"from": "Repro"}}))
    worker.run_once()
    [notice] = notices(fake_github)
    assert "@maria-maint" in notice and "@sam-stranger" not in notice
    assert not valid(runtime, plain[KeyKind.SECRET])


# --- keys written so that a plain pattern misses them (issue 14 item 12) --------------------------

HIDDEN_FORMS = {
    "glued to a name": lambda key: f"MY_KEY_{key}",
    "split over two lines": lambda key: f"my key:\n{key[:19]}\n{key[19:]}",
    "HTML entities": lambda key: "".join(f"&#x{ord(c):x};" for c in key[:2]) + key[2:],
    "zero-width characters": lambda key: "\u200b".join(key[:12]) + "\u2060" + key[12:],
    "base64": lambda key: "in base64: " + base64.b64encode(key.encode()).decode(),
    "without its prefix": lambda key: f"token={key[6:]}",
}


@pytest.mark.parametrize("form", list(HIDDEN_FORMS))
def test_a_hidden_secret_key_is_found_and_revoked(client, worker, fake_github, runtime, claimed, form):
    _, plain = claimed
    secret = plain[KeyKind.SECRET]
    text = HIDDEN_FORMS[form](secret)
    assert keyformat.find_candidates(text, "bk") == []  # the plain pattern misses it
    post_comment(client, worker, fake_github, other_issue(fake_github), STRANGER, text)
    assert not valid(runtime, secret)
    [notice] = notices(fake_github)
    assert_no_key_material(notice, secret)
