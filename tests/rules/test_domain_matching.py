"""The host-matching rules of beekeeper_gateway, as a table: exact host, or a subdomain under a declared
leading wildcard; never a substring, a prefix or a suffix without the dot."""

from __future__ import annotations

import json
import time

import pytest
import responses

from beekeeper_gateway import AllowlistClient, host_matches, host_of, keyformat
from bot.allowlist import signing

URL = "https://static.example.org/allowlist.jws"
DOMAINS = ["example.com", "*.apps.example.org", "xn--bcher-kva.example.net"]

# (Origin or Referer value, allowed?)
CASES = [
    ("https://example.com", True),
    ("http://example.com", True),
    ("https://EXAMPLE.com", True),
    ("https://example.com:8443", True),
    ("https://example.com.", True),
    ("https://example.com/some/page?x=1#top", True),  # a Referer URL
    ("example.com", True),  # a bare host
    ("https://www.example.com", False),  # no wildcard declared for example.com
    ("https://evil-example.com", False),
    ("https://notexample.com", False),
    ("https://example.com.evil.io", False),
    ("https://example.co", False),
    ("https://example.com@evil.io", False),  # userinfo: the host is evil.io
    ("https://evil.io/?u=https://example.com", False),
    ("https://evil.io#example.com", False),
    ("https://evil.io\\@example.com", False),
    ("https://example.com:notaport", False),
    ("ftp://example.com", False),
    ("null", False),
    ("", False),
    ("https://[::1]", False),
    ("https://a.apps.example.org", True),
    ("https://a.b.apps.example.org", True),  # a wildcard covers every depth below it
    ("https://apps.example.org", False),  # …but not the host it is declared on
    ("https://evilapps.example.org", False),
    ("https://a.apps.example.org.evil.io", False),
    ("https://apps-example.org", False),
    ("https://*.apps.example.org", False),  # a literal asterisk is no host
    ("https://bücher.example.net", True),  # IDN → punycode
    ("https://xn--bcher-kva.example.net", True),
    ("https://bucher.example.net", False),
]


def signed_document(grants: list[dict]) -> tuple[bytes, dict]:
    """A document as the bot would sign it, with a key made here (no database needed)."""
    pem, jwk = signing.new_key_material()
    now = int(time.time())
    doc = {"schema": 1, "version": 1, "generated_at": "2020-01-01T00:00:00Z",
           "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)), "key_prefix": "bk",
           "tiers": {"seed": {"rank": 1, "limits": {"requests_per_minute": 60, "concurrency": 2, "daily_quota": 10}}},
           "grants": grants}
    key = signing.SigningKey(kid=jwk["kid"], private_pem=pem, public_jwk=jwk)
    return signing.sign(json.dumps(doc).encode(), key), {"keys": [jwk]}


@pytest.fixture(scope="module")
def loaded():
    """A client holding one grant with DOMAINS, loaded from a published (static) signed copy."""
    publishable = keyformat.generate("bk", "pk")
    token, jwks = signed_document([{
        "app_id": "alpha", "tier": "seed", "status": "active", "version": 1, "domains": DOMAINS,
        "referrers": ["alpha"],
        "keys": [{"id": 1, "kind": "publishable", "sha256": keyformat.sha256_hex(publishable), "expires_at": None}],
    }])
    with responses.RequestsMock() as rsps:
        rsps.get(URL, body=token, content_type="application/jose")
        client = AllowlistClient(URL, None, jwks=jwks)
        client.poll()
    return client, publishable


@pytest.mark.parametrize("origin, allowed", CASES)
def test_origin_alone(loaded, origin, allowed):
    client, _ = loaded
    assert client.check(origin=origin).allowed is allowed


@pytest.mark.parametrize("origin, allowed", CASES)
def test_publishable_key(loaded, origin, allowed):
    client, key = loaded
    decision = client.check(key=key, origin=origin or None)
    assert decision.allowed is allowed, decision.reason


@pytest.mark.parametrize("origin, allowed", CASES)
def test_referrer_name(loaded, origin, allowed):
    client, _ = loaded
    assert client.check(referrer="alpha", origin=origin or None).allowed is allowed


@pytest.mark.parametrize("origin, allowed", CASES)
def test_pure_function_agrees(origin, allowed):
    host = host_of(origin) if origin else None
    assert (host is not None and host_matches(host, DOMAINS)) is allowed


def test_wildcard_and_exact_declared_together():
    assert host_matches("example.com", ["example.com", "*.example.com"])
    assert host_matches("www.example.com", ["example.com", "*.example.com"])
    assert not host_matches("example.com", ["*.example.com"])


def _grant(app_id: str, domains: list[str], version: int) -> dict:
    return {"app_id": app_id, "tier": "seed", "status": "active", "version": version, "domains": domains,
            "referrers": [app_id], "keys": []}


def test_wildcard_lookup_covers_every_depth_after_deltas():
    """The suffix walk stops at the fewest labels any wildcard base has; a delta that adds a
    shallower base (or removes the shallowest) must still match exactly as before."""
    from beekeeper_gateway.client import _Snapshot

    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    base = {"schema": 1, "version": 1, "generated_at": "2020-01-01T00:00:00Z", "expires_at": expires,
            "key_prefix": "bk", "tiers": {"seed": {"rank": 1, "limits": {}}},
            "grants": [_grant("deep", ["*.deep.apps.example.com"], 1)]}
    full = _Snapshot(base)
    assert full.grant_for_host("x.deep.apps.example.com").app_id == "deep"
    assert full.grant_for_host("deep.apps.example.com") is None
    assert full.grant_for_host("x.apps.example.com") is None

    delta = {**base, "version": 2, "since": 1, "grants": [_grant("shallow", ["*.example.org"], 2)]}
    second = _Snapshot(delta, base=full)
    assert second.grant_for_host("a.b.c.example.org").app_id == "shallow"
    assert second.grant_for_host("www.example.org").app_id == "shallow"
    assert second.grant_for_host("x.deep.apps.example.com").app_id == "deep"

    removal = {**base, "version": 3, "since": 2, "grants": [], "removed": [{"app_id": "deep"}]}
    third = _Snapshot(removal, base=second)
    assert third.grant_for_host("x.deep.apps.example.com") is None
    assert third.grant_for_host("www.example.org").app_id == "shallow"


def test_wildcard_hits_are_remembered_per_snapshot_and_bounded(monkeypatch):
    from beekeeper_gateway import client as gateway

    monkeypatch.setattr(gateway, "WILDCARD_HITS_MAX", 2)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    doc = {"schema": 1, "version": 1, "generated_at": "2020-01-01T00:00:00Z", "expires_at": expires,
           "key_prefix": "bk", "tiers": {"seed": {"rank": 1, "limits": {}}},
           "grants": [_grant("alpha", ["*.example.com"], 1)]}
    snapshot = gateway._Snapshot(doc)
    for name in ("a", "b", "c", "d", "e"):
        assert snapshot.grant_for_host(f"{name}.example.com").app_id == "alpha"
        assert len(snapshot.wildcard_hits) <= 2
    assert snapshot.grant_for_host("a.example.org") is None
    assert "a.example.org" not in snapshot.wildcard_hits  # misses are not remembered
    moved = gateway._Snapshot({**doc, "version": 2, "since": 1, "grants": [_grant("beta", ["*.example.com"], 2)],
                               "removed": [{"app_id": "alpha"}]}, base=snapshot)
    assert moved.wildcard_hits == {}  # a new snapshot remembers nothing of the old one
    assert moved.grant_for_host("e.example.com").app_id == "beta"
