"""Issue 18: the gateway client's compact index (one _Grant and one entries tuple per grant, a _Key
only for a key that needs one, digests decoded in one call, full documents read straight into
new indexes). The decisions are the decision table's (test_gateway_decisions.py); these tests
cover the paths of the index itself: an app id listed twice, a tier change in a delta, format 1
referrer names, malformed digests, and that nothing of the parsed document is kept."""

from __future__ import annotations

import base64
import hashlib
import time

import orjson
import pytest

from beekeeper_gateway import client as gateway
from beekeeper_gateway import keyformat
from beekeeper_gateway.client import _Grant, _Key, _Snapshot

COLUMNS = {"grants": ["app_id", "tier", "version", "domains", "keys"],
           "keys": ["sha256", "kind", "expires_at", "revoked_at"], "removed": ["app_id", "status", "version"]}
KEYS: dict[str, str] = {}  # (app id, kind) → a key, made once per name


def _key(app_id: str, kind: str) -> str:
    return KEYS.setdefault(f"{app_id}/{kind}", keyformat.generate("bk", "pk" if kind == "publishable" else "sk"))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _b64(key: str) -> str:
    return base64.urlsafe_b64encode(_digest(key)).rstrip(b"=").decode()


def _doc(rows: list, version: int = 1, since: int | None = None, removed: tuple = (), limits: dict | None = None):
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    doc = {"schema": 1, "format": 2, "columns": COLUMNS, "version": version, "generated_at": "2020-01-01T00:00:00Z",
           "expires_at": expires, "key_prefix": "bk",
           "tiers": {"seed": {"rank": 1, "limits": limits or {"requests_per_minute": 60}}},
           "grants": rows, "removed": [[app_id, "revoked", version] for app_id in removed]}
    if since is not None:
        doc["since"] = since
    # Through JSON bytes and orjson, as the client reads a document.
    return orjson.loads(orjson.dumps(doc))


def _row(app_id: str, domains: list[str], revoked: bool = False) -> list:
    return [app_id, "seed", 1, domains, [[_b64(_key(app_id, "secret")), "secret", None,
                                          "2020-01-01T00:00:00Z" if revoked else None],
                                         [_b64(_key(app_id, "publishable")), "publishable", None, None]]]


def _decide(snapshot: _Snapshot, key: str | None = None, origin: str | None = None) -> str:
    client = gateway.AllowlistClient("https://bot.example/v1/allowlist", jwks={"keys": []})
    client._state = snapshot
    return client.check(key=key, origin=origin).reason


def test_an_app_id_listed_twice_keeps_only_the_last_row():
    snapshot = _Snapshot(_doc([_row("alpha", ["old.example.com"]), _row("beta", ["beta.example.com"]),
                               _row("alpha", ["new.example.com"])]))
    assert len(snapshot.grants) == 2 and snapshot.key_count == 4 and len(snapshot.by_hash) == 4
    assert _decide(snapshot, origin="https://new.example.com") == "origin"
    assert _decide(snapshot, origin="https://old.example.com") == "unknown origin"
    assert _decide(snapshot, key=_key("alpha", "secret")) == "secret key"


def test_a_tier_change_rebuilds_every_grant_and_keeps_each_keys_state():
    first = _Snapshot(_doc([_row("alpha", ["alpha.example.com", "*.alpha.example.net"], revoked=True),
                            _row("beta", ["beta.example.com"])]))
    assert _decide(first, key=_key("beta", "secret")) == "secret key"
    second = _Snapshot(_doc([], version=2, since=1, limits={"requests_per_minute": 5}), base=first)
    assert second.grants is not first.grants and second.by_hash is not first.by_hash  # new indexes …
    assert first.grants["beta"].allow("secret key").limits["requests_per_minute"] == 60  # … the old ones intact
    client = gateway.AllowlistClient("https://bot.example/v1/allowlist", jwks={"keys": []})
    client._state = second
    assert client.check(key=_key("beta", "secret")).limits["requests_per_minute"] == 5
    assert client.check(key=_key("alpha", "secret")).reason == "key revoked"
    assert client.check(key=_key("alpha", "publishable"), origin="https://www.alpha.example.net").reason \
        == "publishable key"
    assert client.check(key=_key("alpha", "publishable"), origin="https://alpha.example.net").reason \
        == "origin not allowed for this grant"
    assert len(second.by_hash) == 4 and second.key_count == 4


def test_a_delta_forgets_the_entries_of_a_replaced_or_removed_grant():
    first = _Snapshot(_doc([_row("alpha", ["alpha.example.com", "*.alpha.example.net"]),
                            _row("beta", ["beta.example.com"])]))
    second = _Snapshot(_doc([_row("alpha", ["alpha.example.org"])], version=2, since=1, removed=("beta",)),
                       base=first)
    assert second.by_hash is first.by_hash  # in place
    assert set(second.by_origin) == {"https://alpha.example.org"} and second.by_suffix == {}
    assert len(second.by_hash) == 2 and second.key_count == 2 and list(second.grants) == ["alpha"]
    assert _decide(second, key=_key("beta", "secret")) == "unknown key"


def test_format_1_referrer_names_other_than_the_app_id():
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    doc = {"schema": 1, "version": 1, "generated_at": "2020-01-01T00:00:00Z", "expires_at": expires,
           "key_prefix": "bk", "tiers": {"seed": {"rank": 1, "limits": {}}},
           "grants": [{"app_id": "alpha", "tier": "seed", "version": 1, "domains": ["alpha.example.com"],
                       "referrers": ["alpha-web"], "keys": []},
                      {"app_id": "beta", "tier": "seed", "version": 1, "domains": ["beta.example.com"],
                       "referrers": ["beta"], "keys": [{"id": 1, "kind": "secret",
                                                         "sha256": _digest(_key("beta", "secret")).hex()}]}]}
    snapshot = _Snapshot(doc)
    assert snapshot.grant_named("alpha-web").app_id == "alpha"
    assert snapshot.grant_named("alpha") is None  # not one of its names
    assert snapshot.grant_named("beta").app_id == "beta" and snapshot.grants["beta"].names is None
    assert _decide(snapshot, key=_key("beta", "secret")) == "secret key"


@pytest.mark.parametrize("digest", ["", "A" * 42, "A" * 44, "A" * 42 + "=", "A" * 42 + "+", 43, "é" * 43])
def test_a_malformed_digest_is_refused(digest):
    row = _row("alpha", ["alpha.example.com"])
    row[4][1][0] = digest
    with pytest.raises((ValueError, TypeError)):
        _Snapshot(_doc([row]))


def test_digests_are_decoded_exactly():
    keys = [keyformat.generate("bk", "sk") for _ in range(50)]
    assert gateway._b64url_digests([_b64(k) for k in keys]) == [_digest(k) for k in keys]
    assert gateway._hex_digests([_digest(k).hex() for k in keys]) == [_digest(k) for k in keys]


def test_the_index_keeps_no_object_of_the_parsed_document():
    """One string of the parsed document kept by the index would keep that document's memory
    resident (issue 18: RSS after loading 100 000 grants)."""
    doc = _doc([_row(f"app{i}", [f"app{i}.example.com", f"*.app{i}.example.net"]) for i in range(20)])
    parsed = {id(value) for row in doc["grants"] for value in (row[0], *row[3], *(key[0] for key in row[4]))}
    snapshot = _Snapshot(doc)
    kept = [*snapshot.grants, *snapshot.by_hash, *snapshot.by_origin, *snapshot.by_suffix]
    for grant in snapshot.grants.values():
        kept += [grant.app_id, *grant.entries]
    assert not parsed.intersection(map(id, kept))
    assert all(type(grant) is _Grant for grant in snapshot.grants.values())
    keys = [entry for entry in snapshot.by_hash.values() if type(entry) is _Key]
    assert len(keys) == 20 and all(key.publishable for key in keys)  # only the publishable keys need one
