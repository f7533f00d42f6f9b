"""beekeeper_gateway.AllowlistClient against the real app (served through `responses`): polling with
ETag and since, JWS verification, refusal of tampered, rolled-back and expired documents,
failing closed, key decisions, and the WSGI middleware."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.test import Client
from werkzeug.wrappers import Response

from beekeeper_gateway import (
    NOT_MODIFIED,
    UPDATED,
    AllowlistClient,
    AllowlistMiddleware,
    AuthError,
    ExpiredDocumentError,
    FetchError,
    RollbackError,
    SignatureError,
    checksum_ok,
    keyformat,
)
from bot.allowlist import signing
from tests.allowlist_support import (
    ALLOWLIST_URL,
    bearer,
    make_grant,
    revoke_grant,
    revoke_key,
    set_tier,
)


def test_poll_loads_the_list_and_check_answers_from_it(session, make_client, bridge):
    alpha = make_grant(session, "alpha", tier="flower", domains=["alpha.example.com"])
    client = make_client()
    assert client.check(key=alpha.keys["secret"]).reason == "allowlist not loaded"
    assert client.poll() == UPDATED
    assert client.version == 1 and client.grant_count == 1

    decision = client.check(key=alpha.keys["secret"])
    assert decision.allowed and decision.app_id == "alpha" and decision.tier == "flower"
    assert decision.limits["requests_per_minute"] == 300 and decision.reason == "secret key"
    assert client.check(key=keyformat.generate("bk", "sk")).reason == "unknown key"
    wrong_checksum = alpha.keys["secret"][:-1] + ("1" if alpha.keys["secret"][-1] == "0" else "0")
    assert client.check(key=wrong_checksum).reason == "malformed key"
    assert client.check(key="bk_sk_short").reason == "malformed key"
    assert client.check().reason == "no key, referrer or origin"
    sent = next(r for r in bridge.requests if "/v1/allowlist" in r.url)
    # format 2 asked for first, format 1 (a compact JWS) accepted from an older bot
    assert sent.headers["Accept"] == "application/vnd.beekeeper.allowlist+json;format=2, application/jose;q=0.5"
    assert sent.headers["Authorization"].startswith("Bearer bk_gw_")


def test_polls_with_etag_and_since_and_applies_deltas(session, make_client, bridge):
    alpha = make_grant(session, "alpha", domains=["alpha.example.com"])
    beta = make_grant(session, "beta")
    client = make_client()
    client.poll()
    assert client.poll() == NOT_MODIFIED
    sent = bridge.requests[-1]
    assert "since=2" in sent.url and sent.headers["If-None-Match"].startswith('"2-')

    revoke_key(session, alpha.rows["secret"])
    revoke_grant(session, beta.grant)
    gamma = make_grant(session, "gamma")
    set_tier(session, alpha.grant, "nectar")
    assert client.poll() == UPDATED and client.version == 6
    assert "since=2" in bridge.requests[-1].url
    assert client.check(key=alpha.keys["secret"]).reason == "key revoked"
    assert client.check(key=beta.keys["secret"]).reason == "unknown key"
    assert client.check(key=gamma.keys["secret"]).allowed
    assert client.check(key=alpha.keys["publishable"], origin="https://alpha.example.com").tier == "nectar"


def test_publishable_key_needs_a_matching_origin(session, make_client):
    alpha = make_grant(session, "alpha", domains=["alpha.example.com", "*.alpha.example.net"])
    client = make_client()
    client.poll()
    key = alpha.keys["publishable"]
    assert client.check(key=key).reason == "origin required"
    assert client.check(key=key, origin="https://alpha.example.com").reason == "publishable key"
    assert client.check(key=key, origin="https://app.alpha.example.net").allowed
    assert client.check(key=key, referer="https://alpha.example.com/page").allowed  # the Referer header
    # an app id is never a Referer (issue 14): a URL there proves nothing
    assert client.check(key=key, referrer="https://alpha.example.com/page").reason == "origin required"
    assert client.check(key=key, origin="https://evil-alpha.example.com").reason == "origin not allowed for this grant"
    assert client.check(key=alpha.keys["secret"], origin="https://anything.example.org").allowed  # server-side key


def test_origin_and_referrer_name_without_a_key(session, make_client):
    make_grant(session, "alpha", tier="flower", domains=["alpha.example.com"])
    client = make_client()
    client.poll()
    assert client.check(origin="https://alpha.example.com").reason == "origin"
    assert client.check(origin="https://beta.example.com").reason == "unknown origin"
    assert client.check(referrer="alpha", origin="https://alpha.example.com").reason == "referrer"
    assert client.check(referrer="alpha").reason == "origin required"
    assert client.check(referrer="alpha", origin="https://evil.example").reason == "origin not allowed for this grant"
    assert client.check(referrer="nobody", origin="https://alpha.example.com").reason == "unknown referrer"
    assert client.check(referrer="https://alpha.example.com/").reason == "unknown referrer"
    assert client.check(referrer="alpha", referer="https://alpha.example.com/p").reason == "referrer"


def test_expired_key_is_refused_with_its_reason(session, make_client, frozen_clock):
    alpha = make_grant(session, "alpha", key_expires_at=frozen_clock.now() + timedelta(minutes=10))
    client = make_client()
    client.poll()
    assert client.check(key=alpha.keys["secret"]).allowed
    frozen_clock.advance(minutes=10)
    assert client.check(key=alpha.keys["secret"]).reason == "key expired"


# --- documents that must be refused ----------------------------------------------------------------


def test_tampered_document_is_refused_and_the_held_one_kept(session, make_client, bridge, credential):
    alpha = make_grant(session, "alpha")
    client = make_client()
    client.poll()
    revoke_key(session, alpha.rows["secret"])

    def tamper(request):
        if "/v1/allowlist" not in request.url:
            return None
        token = bridge.client.get("/v1/allowlist.jws", headers=bearer(credential)).get_data()
        header, payload, signature = token.split(b".")
        doc = json.loads(jwt.utils.base64url_decode(payload))
        doc["grants"][0]["keys"][0].pop("revoked_at")  # un-revoke the key
        forged = jwt.utils.base64url_encode(json.dumps(doc).encode())
        return 200, {"Content-Type": "application/jose"}, header + b"." + forged + b"." + signature

    bridge.override = tamper
    with pytest.raises(SignatureError):
        client.poll()
    assert client.version == 1 and isinstance(client.last_error, SignatureError)


def test_document_signed_by_an_unpublished_key_is_refused(session, make_client, bridge):
    make_grant(session, "alpha")
    client = make_client()
    client.poll()
    make_grant(session, "beta")
    impostor = signing.SigningKey(kid="impostor", private_pem=signing.new_key_material()[0])
    real_kid = bridge.client.get("/.well-known/jwks.json").get_json()["keys"][0]["kid"]

    def sign_with_impostor(request):
        if "/v1/allowlist" not in request.url:
            return None
        plain = bridge.client.get("/v1/allowlist", headers={"Authorization": request.headers["Authorization"]})
        token = signing.sign(plain.get_data(), impostor).decode()
        # claim the real kid: the signature must still fail
        header = jwt.utils.base64url_encode(json.dumps({"alg": "EdDSA", "kid": real_kid,
                                                        "typ": "beekeeper-allowlist+json"}).encode()).decode()
        return 200, {}, header + token[token.index("."):]

    bridge.override = sign_with_impostor
    with pytest.raises(SignatureError):
        client.poll()
    assert client.version == 1


def test_unsigned_or_mistyped_documents_are_refused(session, make_client, bridge):
    make_grant(session, "alpha")
    client = make_client()
    unsigned = jwt.api_jws.encode(b'{"version": 99}', None, algorithm="none")
    bridge.override = lambda request: (200, {}, unsigned) if "/v1/allowlist" in request.url else None
    with pytest.raises(SignatureError):
        client.poll()
    assert client.version is None


def test_rollback_to_an_older_version_is_refused(session, make_client, bridge, credential):
    alpha = make_grant(session, "alpha")
    client = make_client()
    client.poll()
    old_token = bridge.client.get("/v1/allowlist.jws", headers=bearer(credential)).get_data()
    revoke_key(session, alpha.rows["secret"])
    client.poll()
    assert client.version == 2 and client.check(key=alpha.keys["secret"]).reason == "key revoked"

    bridge.override = lambda request: (200, {}, old_token) if "/v1/allowlist" in request.url else None
    with pytest.raises(RollbackError):
        client.poll()
    assert client.version == 2 and client.check(key=alpha.keys["secret"]).reason == "key revoked"


def test_expired_document_is_refused_and_the_client_fails_closed(session, make_client, bridge, frozen_clock, policy,
                                                                credential):
    alpha = make_grant(session, "alpha")
    client = make_client()
    client.poll()
    old_token = bridge.client.get("/v1/allowlist.jws", headers=bearer(credential)).get_data()
    assert client.check(key=alpha.keys["secret"]).allowed

    frozen_clock.advance(seconds=policy.allowlist.ttl_seconds)  # past the held document's expires_at
    bridge.override = lambda request: (503, {}, b"down")  # the bot is unreachable
    with pytest.raises(FetchError):
        client.poll()
    assert client.check(key=alpha.keys["secret"]).reason == "allowlist expired"
    assert client.check(origin="https://alpha.example.com").reason == "allowlist expired"

    bridge.override = lambda request: (200, {}, old_token) if "/v1/allowlist" in request.url else None
    client_new = make_client()
    with pytest.raises(ExpiredDocumentError):
        client_new.poll()
    assert client_new.check(key=alpha.keys["secret"]).reason == "allowlist not loaded"

    bridge.override = None  # the bot is back: a fresh document restores service
    assert client.poll() == UPDATED and client.check(key=alpha.keys["secret"]).allowed


def test_revoked_gateway_credential_raises_auth_error(session, make_client, credential):
    from bot.allowlist import gateways

    make_grant(session, "alpha")
    client = make_client()
    client.poll()
    gateways.revoke(session, "edge-1", "test")
    session.commit()
    with pytest.raises(AuthError):
        client.poll()
    assert client.version == 1  # still serving what it holds until it expires


# --- signing-key rotation and 410 ------------------------------------------------------------------


def test_rotation_is_followed_through_the_jwks(session, make_client, bridge):
    alpha = make_grant(session, "alpha")
    client = make_client()
    client.poll()
    jwks_fetches = sum("jwks" in r.url for r in bridge.requests)
    signing.rotate(session, "test")
    session.commit()
    revoke_key(session, alpha.rows["secret"])
    assert client.poll() == UPDATED
    assert sum("jwks" in r.url for r in bridge.requests) == jwks_fetches + 1
    assert client.check(key=alpha.keys["secret"]).reason == "key revoked"


def test_pinned_jwks_refuses_a_key_it_does_not_pin(session, make_client, bridge):
    make_grant(session, "alpha")
    pinned = bridge.client.get("/.well-known/jwks.json").get_json()
    client = make_client(jwks=pinned)
    client.poll()
    signing.rotate(session, "test")
    session.commit()
    make_grant(session, "beta")
    with pytest.raises(SignatureError, match="no published key"):
        client.poll()
    assert not any("jwks" in r.url for r in bridge.requests[-1:])


def test_delta_gone_falls_back_to_the_full_list(session, make_client, bridge, db, settings, github, policy):
    from bot import create_app
    from bot.intake.runtime import Runtime

    short = policy.model_copy(update={"allowlist": policy.allowlist.model_copy(update={"delta_history": 1})})
    bridge.client = create_app(Runtime(settings=settings, policy=short, engine=db, github=github)).test_client()
    alpha = make_grant(session, "alpha")
    client = make_client()
    client.poll()
    for tier in ("flower", "nectar"):
        set_tier(session, alpha.grant, tier)
    assert client.poll() == UPDATED and client.version == 3
    statuses = [r.url for r in bridge.requests if "/v1/allowlist" in r.url]
    assert "since=1" in statuses[-2] and "since" not in statuses[-1]
    assert client.check(key=alpha.keys["secret"]).tier == "nectar"


# --- the middleware --------------------------------------------------------------------------------


def test_wsgi_middleware_enforces_the_allowlist(session, make_client, frozen_clock, policy):
    alpha = make_grant(session, "alpha", domains=["alpha.example.com"])
    client = make_client()

    def api(environ, start_response):
        decision = environ["beekeeper.decision"]
        return Response(json.dumps({"app": decision.app_id, "tier": decision.tier}),
                        mimetype="application/json")(environ, start_response)

    http = Client(AllowlistMiddleware(api, client))
    assert http.get("/v1/x", headers={"Authorization": f"Bearer {alpha.keys['secret']}"}).status_code == 503
    client.poll()
    ok = http.get("/v1/x", headers={"Authorization": f"Bearer {alpha.keys['secret']}"})
    assert ok.status_code == 200 and ok.json == {"app": "alpha", "tier": "seed"}
    assert http.get("/v1/x", headers={"X-API-Key": alpha.keys["publishable"],
                                      "Origin": "https://alpha.example.com"}).status_code == 200
    refused = http.get("/v1/x", headers={"X-API-Key": alpha.keys["publishable"], "Origin": "https://evil.io"})
    assert refused.status_code == 403 and refused.json["reason"] == "origin not allowed for this grant"
    assert http.get("/v1/x").status_code == 401
    assert http.get("/v1/x?referrer=alpha", headers={"Referer": "https://alpha.example.com/p"}).status_code == 200
    frozen_clock.advance(seconds=policy.allowlist.ttl_seconds)
    assert http.get("/v1/x", headers={"Authorization": f"Bearer {alpha.keys['secret']}"}).status_code == 503


# --- the library itself ----------------------------------------------------------------------------


def test_gateway_client_imports_without_flask():
    code = "import sys, beekeeper_gateway; assert 'flask' not in sys.modules and 'sqlalchemy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_constructor_refuses_a_credential_that_is_not_a_gateway_credential():
    with pytest.raises(ValueError):
        AllowlistClient(ALLOWLIST_URL, keyformat.generate("bk", "sk"))


@given(st.sampled_from(["sk", "pk"]), st.text(alphabet=keyformat.BASE62, min_size=36, max_size=36))
def test_fast_checksum_agrees_with_keyformat(kind, tail):
    candidate = f"bk_{kind}_{tail}"
    assert checksum_ok(candidate.encode()) == (keyformat.parse(candidate) is not None)
    body = candidate[:-6]
    valid = body + keyformat.checksum(body)
    assert checksum_ok(valid.encode()) and keyformat.parse(valid) is not None


@given(st.sampled_from(["sk", "pk"]), st.integers(min_value=0, max_value=41), st.sampled_from(keyformat.BASE62))
def test_fast_checksum_agrees_with_keyformat_on_mutated_keys(kind, position, char):
    key = keyformat.generate("bk", kind)
    mutated = key[:position] + char + key[position + 1:]
    if position >= 6:  # the prefix and kind stay well formed
        assert checksum_ok(mutated.encode()) == (keyformat.parse(mutated) is not None)
    assert checksum_ok(key.encode())


# --- the key digest memo ------------------------------------------------------------------------


def test_a_remembered_key_is_still_refused_once_revoked(session, make_client):
    alpha = make_grant(session, "alpha", domains=["alpha.example.com"])
    client = make_client()
    client.poll()
    secret, publishable = alpha.keys["secret"], alpha.keys["publishable"]
    assert client.check(key=secret).allowed  # its digest is remembered from here on
    assert client.check(key=publishable, origin="https://alpha.example.com").allowed
    assert secret in client._digests and publishable in client._digests

    revoke_key(session, alpha.rows["secret"])
    revoke_key(session, alpha.rows["publishable"])
    assert client.poll() == UPDATED
    assert client.check(key=secret).reason == "key revoked"
    assert client.check(key=publishable, origin="https://alpha.example.com").reason == "key revoked"


def test_the_memo_gives_the_same_decisions_as_no_memo(session, make_client, frozen_clock):
    alpha = make_grant(session, "alpha", domains=["alpha.example.com"])
    expiring = make_grant(session, "beta", key_expires_at=frozen_clock.now() + timedelta(minutes=5))
    remembering, plain = make_client(), make_client(key_cache_size=0)
    remembering.poll()
    plain.poll()
    good = alpha.keys["secret"]
    candidates = [good, alpha.keys["publishable"], expiring.keys["secret"], keyformat.generate("bk", "sk"),
                  good[:-1] + ("1" if good[-1] == "0" else "0"),  # wrong checksum
                  good[:-1] + "é",  # right length, not ASCII
                  good + "0", "", "bk_sk_"]
    origins = [None, "https://alpha.example.com", "https://evil.example.com"]
    for _ in range(2):  # the second pass answers remembered keys from the memo
        for key in candidates:
            for origin in origins:
                assert remembering.check(key=key, origin=origin) == plain.check(key=key, origin=origin), (key, origin)
        frozen_clock.advance(minutes=10)  # beta's key expires between the passes
    assert plain._digests == {}
    assert remembering.check(key=expiring.keys["secret"]).reason == "key expired"


def test_the_memo_is_bounded(session, make_client):
    make_grant(session, "alpha")
    client = make_client(key_cache_size=3)
    client.poll()
    for _ in range(10):
        assert client.check(key=keyformat.generate("bk", "sk")).reason == "unknown key"
        assert len(client._digests) <= 3
    with pytest.raises(ValueError):
        make_client(key_cache_size=-1)


def test_a_publishable_key_is_refused_from_a_domain_its_grant_no_longer_has(session, make_client):
    from sqlmodel import select

    from bot.allowlist import versioning
    from bot.core.models import GrantDomain

    alpha = make_grant(session, "alpha", domains=["alpha.example.com", "beta.example.com"])
    client = make_client()
    client.poll()
    key = alpha.keys["publishable"]
    for _ in range(2):  # the second answer comes from the snapshot's memo
        assert client.check(key=key, origin="https://beta.example.com").allowed
    assert client._state.publishable_hits

    row = session.exec(select(GrantDomain).where(GrantDomain.domain == "beta.example.com")).one()
    session.delete(row)
    versioning.bump(session, alpha.grant, "domain")
    session.commit()
    assert client.poll() == UPDATED
    assert client.check(key=key, origin="https://beta.example.com").reason == "origin not allowed for this grant"
    assert client.check(key=key, origin="https://alpha.example.com").allowed


def test_an_expiring_publishable_key_is_refused_once_expired_after_repeated_use(session, make_client, frozen_clock):
    alpha = make_grant(session, "alpha", domains=["alpha.example.com"],
                       key_expires_at=frozen_clock.now() + timedelta(minutes=5))
    client = make_client()
    client.poll()
    key, origin = alpha.keys["publishable"], "https://alpha.example.com"
    for _ in range(3):
        assert client.check(key=key, origin=origin).allowed
    frozen_clock.advance(minutes=10)
    assert client.check(key=key, origin=origin).reason == "key expired"
