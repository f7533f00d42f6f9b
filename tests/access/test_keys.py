"""bot.access.keys: issuing at claim time, hash-only storage, validity, revocation, audit and versions."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session, select

from beekeeper_gateway import keyformat
from bot.access import grants, keys
from bot.allowlist import versioning
from bot.core.models import ApiKey, AuditEvent, Grant, KeyKind
from tests.key_helpers import claim_now, make_grant, rows_containing
from tests.request_helpers import APPLICANT, STRANGER


def audit_actions(session) -> list[str]:
    return [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()]


def test_claim_issues_a_secret_and_a_publishable_key_stored_as_hashes(session):
    grant = make_grant(session)
    version = versioning.current_version(session)
    plain = claim_now(session, grant)

    assert set(plain) == {KeyKind.SECRET, KeyKind.PUBLISHABLE}
    assert keyformat.parse(plain[KeyKind.SECRET]) == ("bk", "sk")
    assert keyformat.parse(plain[KeyKind.PUBLISHABLE]) == ("bk", "pk")
    rows = {k.kind: k for k in session.exec(select(ApiKey)).all()}
    for kind, key in plain.items():
        assert rows[kind].sha256 == keyformat.sha256_hex(key)
        assert rows[kind].display == keyformat.display(key)
        assert (rows[kind].grant_id, rows[kind].expires_at, rows[kind].revoked_at) == (grant.id, None, None)
        assert rows[kind].created_by == APPLICANT["login"]
    assert session.get(Grant, grant.id).claimable is False
    assert versioning.current_version(session) == version + 1 == session.get(Grant, grant.id).version
    claimed = session.exec(select(AuditEvent).where(AuditEvent.action == "key.claimed")).one()
    assert claimed.grant_id == grant.id and claimed.actor == APPLICANT["login"]
    assert {k["display"] for k in claimed.details["keys"]} == {rows[k].display for k in rows}


def test_only_hashes_reach_the_database(session, db):
    plain = claim_now(session, make_grant(session))
    for key in plain.values():
        assert rows_containing(db, key) == []
        assert rows_containing(db, key[6:-6]) == []  # not even the random part
        assert rows_containing(db, keyformat.sha256_hex(key)) == [("api_key", "sha256")]


def test_issued_keys_do_not_print_their_plaintext(session):
    grant = make_grant(session)
    issued = keys.claim(session, grant, APPLICANT["id"], prefix="bk")
    assert all(i.plaintext not in repr(i) for i in issued)


@pytest.mark.parametrize("case", ["stranger", "revoked", "twice"])
def test_claims_that_are_refused(session, case):
    grant = make_grant(session)
    user = APPLICANT
    expected = keys.ClaimRefused.ALREADY_CLAIMED
    if case == "stranger":
        user, expected = STRANGER, keys.ClaimRefused.NOT_OWNER
    elif case == "revoked":
        grants.revoke_grant(session, grant, "maria-maint", "abuse", source="test")
        session.commit()
        expected = keys.ClaimRefused.NOT_ACTIVE
    else:
        claim_now(session, grant)
    count = len(session.exec(select(ApiKey)).all())
    with pytest.raises(keys.ClaimRefused) as refused:
        keys.claim(session, grant, user["id"], prefix="bk")
    assert refused.value.reason == expected
    session.rollback()
    assert len(session.exec(select(ApiKey)).all()) == count


def test_two_claims_at_the_same_moment_make_one_set_of_keys(db, session):
    grant = make_grant(session)
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def claim():
        barrier.wait()
        with Session(db, expire_on_commit=False) as s:
            try:
                keys.claim(s, s.get(Grant, grant.id), APPLICANT["id"], prefix="bk")
                s.commit()
                outcomes.append("claimed")
            except keys.ClaimRefused as exc:
                s.rollback()
                outcomes.append(exc.reason)

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == [keys.ClaimRefused.ALREADY_CLAIMED, "claimed"]
    with Session(db) as s:
        assert len(s.exec(select(ApiKey)).all()) == 2


def test_is_key_valid(session):
    grant = make_grant(session)
    plain = claim_now(session, grant)
    secret = plain[KeyKind.SECRET]
    assert keys.is_key_valid(session, secret) and keys.is_key_valid(session, plain[KeyKind.PUBLISHABLE])
    assert not keys.is_key_valid(session, keyformat.generate("bk", "sk"))  # well formed, unknown
    assert not keys.is_key_valid(session, secret[:-1] + ("0" if secret[-1] != "0" else "1"))  # bad checksum
    assert not keys.is_key_valid(session, "") and not keys.is_key_valid(session, "bk_sk_nope")
    assert keys.find_key(session, secret).kind == KeyKind.SECRET
    grants.revoke_grant(session, grant, "maria-maint", "abuse", source="test")
    session.commit()
    assert not keys.is_key_valid(session, secret)


def test_revoking_a_key_bumps_the_allowlist_version_and_is_audited(session):
    grant = make_grant(session)
    plain = claim_now(session, grant)
    key = keys.find_key(session, plain[KeyKind.SECRET])
    version = versioning.current_version(session)

    assert keys.revoke_key(session, key, "maria-maint", "asked by the owner", source="test") is True
    session.commit()
    assert versioning.current_version(session) == version + 1 == session.get(Grant, grant.id).version
    assert not keys.is_key_valid(session, plain[KeyKind.SECRET])
    assert keys.is_key_valid(session, plain[KeyKind.PUBLISHABLE])  # only that key
    revoked = session.exec(select(AuditEvent).where(AuditEvent.action == "key.revoked")).one()
    assert revoked.details["key_id"] == key.id and revoked.details["reason"] == "asked by the owner"
    assert revoked.actor == "maria-maint" and revoked.grant_id == grant.id

    assert keys.revoke_key(session, key, "maria-maint", "again") is False  # nothing changes twice
    assert versioning.current_version(session) == version + 1


def test_revoking_all_keys_of_a_grant_is_one_version(session):
    grant = make_grant(session)
    plain = claim_now(session, grant)
    version = versioning.current_version(session)
    revoked = keys.revoke_grant_keys(session, grant, "maria-maint", "compromised", source="cli")
    session.commit()
    assert len(revoked) == 2 and versioning.current_version(session) == version + 1
    assert not any(keys.is_key_valid(session, k) for k in plain.values())
    assert session.get(Grant, grant.id).status == "active"  # the grant stays; its owner can rotate
    assert keys.revoke_grant_keys(session, grant, "maria-maint", "again") == []
    assert versioning.current_version(session) == version + 1


def test_key_states(session, frozen_clock):
    grant = make_grant(session)
    claim_now(session, grant)
    key = session.exec(select(ApiKey).where(ApiKey.kind == KeyKind.SECRET)).one()
    assert keys.key_state(key) == keys.ACTIVE
    keys.rotate(session, grant, "alice-dev", grace_hours=1)
    assert keys.key_state(key) == keys.EXPIRING
    frozen_clock.advance(hours=1)
    assert keys.key_state(key) == keys.EXPIRED and not keys.is_live(key)
    keys.revoke_key(session, key, "x", "y")
    assert keys.key_state(key) == keys.REVOKED


def test_claim_url_encodes_the_app_id():
    assert keys.claim_url("https://bk.example/", "freeaichat") == "https://bk.example/claim/freeaichat"
    assert keys.claim_url("https://bk.example", "a/b?c") == "https://bk.example/claim/a%2Fb%3Fc"
