"""Polling a served, signed allowlist through `responses`: the documents are signed here with
Ed25519 (cryptography), as the bot signs them, and answered as the bot's /v1/allowlist answers
(full list, ETag/304, deltas, 410, format 2 with a detached signature, zstd)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import zstandard
from gw_support import JWKS_URL, NOW, URL, Clock, Signer, api_key, document, format2, grant

from beekeeper_gateway import (
    ACCEPT,
    NOT_MODIFIED,
    SIGNATURE_HEADER,
    UPDATED,
    AllowlistClient,
    AuthError,
    DocumentError,
    ExpiredDocumentError,
    FetchError,
    RollbackError,
    SignatureError,
    UntrustedKeyError,
    keyformat,
)

GATEWAY_KEY = api_key("gw", "the gateway")
SHOP_SECRET, SHOP_PUBLISHABLE = api_key("sk", "shop"), api_key("pk", "shop")
NEW_SECRET, REVOKED = api_key("sk", "new"), api_key("sk", "revoked")
SHOP = grant("shop", 1, ["shop.example", "*.shop.example"], secret=SHOP_SECRET, publishable=SHOP_PUBLISHABLE,
             revoked=REVOKED)


class Bot:
    """Answers GET /v1/allowlist with what a test put in `answers` (by the `since` asked for, None:
    the full list) and the JWKS of `signers`; records every request."""

    def __init__(self, rsps, *signers: Signer):
        self.signers = list(signers)
        self.answers: dict[int | None, tuple[int, dict, bytes]] = {}
        self.requests = []
        rsps.add_callback("GET", URL, callback=self._allowlist)
        rsps.add_callback("GET", JWKS_URL, callback=self._jwks)

    def full(self, body: bytes, status: int = 200, **headers) -> None:
        self.answers[None] = (status, headers, body)

    def delta(self, since: int, body: bytes, status: int = 200, **headers) -> None:
        self.answers[since] = (status, headers, body)

    def _allowlist(self, request):
        self.requests.append(request)
        since = parse_qs(urlsplit(request.url).query).get("since")
        status, headers, body = self.answers.get(int(since[0]) if since else None, (404, {}, b""))
        if request.headers.get("If-None-Match") and request.headers["If-None-Match"] == headers.get("ETag"):
            return 304, {"ETag": headers["ETag"]}, b""
        return status, headers, body

    def _jwks(self, request):
        self.requests.append(request)
        return 200, {"Content-Type": "application/json"}, json.dumps({"keys": [s.jwk for s in self.signers]})


@pytest.fixture
def signer():
    return Signer()


@pytest.fixture
def bot(rsps, signer):
    return Bot(rsps, signer)


def _client(clock=None, **kwargs) -> AllowlistClient:
    return AllowlistClient(URL, GATEWAY_KEY, clock=clock or Clock(), **kwargs)


def test_a_signed_document_loads_and_answers_check(bot, signer):
    bot.full(signer.compact(document(1, [SHOP])), ETag='"v1"')
    client = _client()
    assert client.check(key=SHOP_SECRET).reason == "allowlist not loaded"
    assert client.poll() == UPDATED
    assert (client.version, client.grant_count) == (1, 1)
    first = bot.requests[0]
    assert first.headers["Authorization"] == f"Bearer {GATEWAY_KEY}" and first.headers["Accept"] == ACCEPT
    assert any(r.url == JWKS_URL for r in bot.requests)  # the kid was unknown: the JWKS was fetched
    decision = client.check(key=SHOP_SECRET)
    assert (decision.allowed, decision.app_id, decision.tier, dict(decision.limits)) == \
        (True, "shop", "seed", {"requests_per_minute": 60})
    assert client.check(key=SHOP_PUBLISHABLE, origin="https://app.shop.example").allowed
    assert client.check(key=SHOP_PUBLISHABLE, origin="https://evil-shop.example").reason == \
        "origin not allowed for this grant"
    assert client.check(key=REVOKED).reason == "key revoked"
    assert client.check(key=NEW_SECRET).reason == "unknown key"


def test_an_unchanged_list_answers_304_and_a_delta_changes_only_what_it_names(bot, signer):
    bot.full(signer.compact(document(1, [SHOP])), ETag='"v1"')
    client = _client()
    assert client.poll() == UPDATED
    bot.delta(1, b"", status=304)
    assert client.poll() == NOT_MODIFIED
    again = bot.requests[-1]
    assert again.headers["If-None-Match"] == '"v1"' and "since=1" in again.url
    newapp = grant("newapp", 2, ["new.example"], secret=NEW_SECRET)
    bot.delta(1, signer.compact(document(2, [newapp], since=1, removed=["shop"])), ETag='"v2"')
    assert client.poll() == UPDATED
    assert client.version == 2
    assert client.check(key=NEW_SECRET).app_id == "newapp"
    assert client.check(key=SHOP_SECRET).reason == "unknown key"


def test_a_delta_no_longer_kept_answers_410_and_the_full_list_is_pulled(bot, signer):
    bot.full(signer.compact(document(1, [SHOP])))
    client = _client()
    client.poll()
    bot.delta(1, b"", status=410)
    bot.full(signer.compact(document(3, [SHOP, grant("newapp", 3, secret=NEW_SECRET)])))
    assert client.poll() == UPDATED and client.version == 3
    assert client.check(key=NEW_SECRET).allowed


def test_format_2_with_its_detached_signature_and_zstd(bot, signer):
    body = format2(document(4, [SHOP]))
    bot.full(zstandard.ZstdCompressor().compress(body), **{SIGNATURE_HEADER: signer.detached(body),
                                                             "Content-Encoding": "zstd"})
    client = _client()
    assert client.poll() == UPDATED and client.version == 4
    assert client.check(key=SHOP_PUBLISHABLE, referer="https://shop.example/checkout").app_id == "shop"
    tampered = body.replace(b"shop.example", b"evil.example", 1)
    bot.full(tampered, **{SIGNATURE_HEADER: signer.detached(body)})
    with pytest.raises(SignatureError):
        _client().poll()


def test_a_tampered_or_foreign_document_is_refused_and_the_held_one_stays(bot, signer):
    bot.full(signer.compact(document(1, [SHOP])))
    client = _client()
    client.poll()
    header, payload, signature = signer.compact(document(2, [SHOP])).split(b".")
    forged = signer.compact(document(2, [grant("shop", 2, ["evil.example"], publishable=SHOP_PUBLISHABLE)]))
    bot.delta(1, b".".join([header, forged.split(b".")[1], signature]))
    with pytest.raises(SignatureError):
        client.poll()
    bot.delta(1, Signer().compact(document(2, [SHOP])))  # a key the JWKS does not publish
    with pytest.raises(SignatureError):
        client.poll()
    bot.delta(1, signer.compact(document(2, [SHOP]), typ="JWT"))  # signed by the key, but not an allowlist
    with pytest.raises(SignatureError):
        client.poll()
    assert client.version == 1 and client.check(key=SHOP_SECRET).allowed
    assert isinstance(client.last_error, SignatureError)


def test_a_refused_credential_and_a_failing_server(bot, signer):
    bot.full(b"", status=401)
    with pytest.raises(AuthError):
        _client().poll()
    bot.full(b"", status=502)
    with pytest.raises(FetchError):
        _client().poll()
    with pytest.raises(ValueError):
        AllowlistClient(URL, keyformat.generate("bk", "sk"))  # a secret key is not a gateway credential


def test_expiry_fails_closed(bot, signer):
    clock = Clock()
    bot.full(signer.compact(document(1, [SHOP], ttl=600)))
    client = _client(clock)
    client.poll()
    clock.now = NOW + 600
    assert client.check(key=SHOP_SECRET).reason == "allowlist expired"
    bot.delta(1, signer.compact(document(1, [SHOP], ttl=600)))
    with pytest.raises(ExpiredDocumentError):  # the server still answers the old list
        client.poll()
    assert not client.is_fresh()


def test_a_rollback_is_refused_also_after_a_restart_with_a_state_file(bot, signer, tmp_path):
    state = tmp_path / "allowlist-state.json"
    bot.full(signer.compact(document(5, [SHOP])))
    client = _client(state_file=state)
    client.poll()
    assert json.loads(state.read_text())["version"] == 5
    bot.full(signer.compact(document(4, [SHOP])))
    restarted = _client(state_file=state)
    with pytest.raises(RollbackError):
        restarted.poll()
    assert restarted.check(key=SHOP_SECRET).reason == "allowlist not loaded"
    assert _client().poll() == UPDATED  # without the state file nothing remembers version 5


def test_trusted_keys_pin_the_signing_key(rsps, signer):
    other = Signer()
    bot = Bot(rsps, signer, other)  # the JWKS publishes both
    bot.full(other.compact(document(1, [SHOP])))
    with pytest.raises(UntrustedKeyError):
        _client(trusted_keys=[signer.thumbprint]).poll()
    bot.full(signer.compact(document(1, [SHOP])))
    assert _client(trusted_keys=[signer.thumbprint]).poll() == UPDATED
    pinned = {k: signer.jwk[k] for k in ("kty", "crv", "x")}  # a pinned JWK needs no JWKS at all
    assert _client(trusted_keys=[pinned]).poll() == UPDATED


def test_a_rotated_signing_key_is_fetched_once_from_the_jwks(bot, signer):
    bot.full(signer.compact(document(1, [SHOP])))
    client = _client()
    client.poll()
    rotated = Signer()
    bot.signers.append(rotated)
    bot.delta(1, rotated.compact(document(2, [SHOP], since=1)))
    assert client.poll() == UPDATED and client.version == 2
    assert sum(r.url == JWKS_URL for r in bot.requests) == 2


def test_a_delta_that_does_not_follow_is_refused(bot, signer):
    bot.full(signer.compact(document(3, [SHOP])))
    client = _client()
    client.poll()
    bot.delta(3, signer.compact(document(6, [SHOP], since=5)))
    with pytest.raises(DocumentError):
        client.poll()
    assert client.version == 3
