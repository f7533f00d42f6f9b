"""Ed25519 signing keys: kid as RFC 7638 thumbprint, automatic first key, rotation with grace."""

from __future__ import annotations

import jwt
from sqlmodel import select

from bot.allowlist import signing
from bot.core.models import AuditEvent, SigningKey


def verify(token: bytes, jwks: dict) -> bytes:
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    return jwt.api_jws.decode(token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"])


def test_kid_is_the_rfc7638_thumbprint():
    # RFC 8037, appendix A.3: the thumbprint of the example Ed25519 public key.
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert signing.thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_new_key_publishes_only_the_public_half():
    pem, jwk = signing.new_key_material()
    assert "PRIVATE KEY" in pem
    assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"} and "d" not in jwk
    assert jwk["kid"] == signing.thumbprint(jwk)


def test_first_key_is_created_once_on_first_need(session):
    first = signing.ensure_key(session)
    session.commit()
    assert signing.ensure_key(session).kid == first.kid
    assert len(session.exec(select(SigningKey)).all()) == 1
    assert session.exec(select(AuditEvent).where(AuditEvent.action == "signing_key.created")).one().subject == first.kid


def test_generate_is_idempotent(session):
    key, created = signing.generate(session, "cli:ops")
    again, created_again = signing.generate(session, "cli:ops")
    assert created and not created_again and again.kid == key.kid


def test_signed_payload_verifies_with_the_jwks_and_not_when_tampered(session, policy):
    key = signing.ensure_key(session)
    token = signing.sign(b'{"version":1}', key)
    jwks = signing.jwks(session, policy)
    assert verify(token, jwks) == b'{"version":1}'
    header, payload, signature = token.split(b".")
    forged = header + b"." + jwt.utils.base64url_encode(b'{"version":9}') + b"." + signature
    try:
        verify(forged, jwks)
    except jwt.InvalidSignatureError:
        pass
    else:
        raise AssertionError("a tampered payload verified")


def test_rotation_keeps_the_old_key_published_for_the_grace_period(session, policy, frozen_clock):
    old = signing.ensure_key(session)
    before = signing.sign(b"signed before", old)
    new, retired = signing.rotate(session, "cli:ops")
    session.commit()
    assert [k.kid for k in retired] == [old.kid] and signing.current_key(session).kid == new.kid
    after = signing.sign(b"signed after", signing.current_key(session))
    jwks = signing.jwks(session, policy)
    assert {k["kid"] for k in jwks["keys"]} == {old.kid, new.kid}
    assert verify(before, jwks) == b"signed before" and verify(after, jwks) == b"signed after"

    grace = policy.allowlist.signing_key_grace_hours
    frozen_clock.advance(hours=grace, seconds=-1)
    assert {k["kid"] for k in signing.jwks(session, policy)["keys"]} == {old.kid, new.kid}
    frozen_clock.advance(seconds=2)
    assert [k["kid"] for k in signing.jwks(session, policy)["keys"]] == [new.kid]
    assert session.exec(select(AuditEvent).where(AuditEvent.action == "signing_key.rotated")).one()


def test_jwks_endpoint_serves_published_keys_with_short_caching(client, session, policy, frozen_clock):
    body = client.get("/.well-known/jwks.json")
    assert body.status_code == 200 and len(body.get_json()["keys"]) == 1  # created on first need
    first = body.get_json()["keys"][0]["kid"]
    signing.rotate(session, "test")
    session.commit()
    response = client.get("/.well-known/jwks.json")
    assert [k["kid"] for k in response.get_json()["keys"]][1] == first
    assert response.headers["Cache-Control"] == "public, max-age=60"
    assert client.get("/.well-known/jwks.json", headers={"If-None-Match": response.headers["ETag"]}).status_code == 304
    frozen_clock.advance(hours=policy.allowlist.signing_key_grace_hours + 1)
    assert len(client.get("/.well-known/jwks.json").get_json()["keys"]) == 1


def test_a_prepared_key_is_published_but_signs_only_after_rotate(session, policy):
    first = signing.ensure_key(session)
    prepared, created = signing.prepare(session, "cli:ops")
    again, created_again = signing.prepare(session, "cli:ops")
    session.commit()
    assert created and not created_again and again.kid == prepared.kid != first.kid
    assert signing.current_kid(session) == first.kid  # still signing with the first key
    assert {k["kid"] for k in signing.jwks(session, policy)["keys"]} == {first.kid, prepared.kid}
    assert session.exec(select(AuditEvent).where(AuditEvent.action == "signing_key.prepared")).one().subject == \
        prepared.kid

    new, retired = signing.rotate(session, "cli:ops")
    session.commit()
    assert new.kid == prepared.kid and [k.kid for k in retired] == [first.kid]
    assert signing.current_kid(session) == prepared.kid and signing.prepared_key(session) is None
    assert {k["kid"] for k in signing.jwks(session, policy)["keys"]} == {first.kid, prepared.kid}  # grace
    newer, _ = signing.rotate(session, "cli:ops")  # nothing prepared: a new key, as before
    assert newer.kid not in (first.kid, prepared.kid)
