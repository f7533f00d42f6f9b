"""Writes conformance/v1.json: the vectors every Beekeeper gateway client is held to.

    python conformance/generate.py          # rewrite conformance/v1.json
    python conformance/generate.py --check  # exit 1 if the committed file differs

The Python client (beekeeper_gateway.AllowlistClient) runs every vector in
tests/gateway/test_gateway_conformance.py, which also checks that the committed file is exactly what this
script writes now; the JavaScript client (clients/js) runs the same file with `node --test`. So a
rule changed on either side fails the other side's tests until both agree.

Deterministic: fixed timestamps, a fixed Ed25519 test key (its private half is in the file: it
signs nothing but these vectors), fixed API keys; Ed25519 signatures are deterministic.

The expected decisions are written here by hand (the request rows of beekeeper_gateway.DECISION_TABLE,
plus the host cases below); they are not computed by running a client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beekeeper_gateway import DECISION_GRANTS, DECISION_TABLE, DOCUMENT_TYPE, HTTP_STATUS, REASONS, keyformat  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "v1.json"
VECTORS_VERSION = 1

NOW = "2026-05-01T12:30:00Z"  # the clock every request case is checked at
NOW_SECONDS = 1777638600  # = NOW
EXPIRED_CLOCK = NOW_SECONDS + 10 * 86400  # "expired": the fresh document held, the clock past it
GENERATED, EXPIRES = "2026-05-01T12:00:00Z", "2026-05-01T13:00:00Z"
EPOCH = "1777000000.c0ffee"
NEWER_EPOCH = "1777500000.beef"
OLDER_EPOCH = "1776000000.dead"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signing_key(label: str) -> tuple[Ed25519PrivateKey, dict]:
    private = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())
    raw = private.public_key().public_bytes_raw()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True)
    jwk["kid"] = _b64url(hashlib.sha256(canonical.encode()).digest())  # RFC 7638, as bot.allowlist.signing
    return private, jwk


TRUSTED, TRUSTED_JWK = _signing_key("beekeeper conformance signing key 1")
OTHER, OTHER_JWK = _signing_key("beekeeper conformance signing key 2")


def _api_key(label: str, kind: str = "sk") -> str:
    digest = hashlib.sha256(label.encode()).digest()
    body = "bk_" + kind + "_" + "".join(keyformat.BASE62[b % 62] for b in digest[:keyformat.RANDOM_LENGTH])
    return body + keyformat.checksum(body)


KEYS = {
    "secret": _api_key("shop secret"),
    "publishable": _api_key("shop publishable", "pk"),
    "revoked": _api_key("revoked secret"),
    "expired": _api_key("expired secret"),
    "unknown": _api_key("in no grant"),
    "victim-secret": _api_key("victim secret"),
    "victim-publishable": _api_key("victim publishable", "pk"),
    "idn-publishable": _api_key("idn publishable", "pk"),
    "new-secret": _api_key("newapp secret"),
}
good = KEYS["secret"]
KEYS["malformed"] = good[:-1] + ("1" if good[-1] == "0" else "0")  # a wrong checksum
KEYS["short"] = good[:-2]  # the wrong length
KEYS["non-ascii"] = good[:-7] + "é" + good[-6:]

TIERS = {"seed": {"rank": 1, "limits": {"requests_per_minute": 60, "concurrency": 2, "daily_quota": 10000}}}


def _key(name: str, kid: int, kind: str = "secret", expires_at: str | None = None, revoked_at: str | None = None):
    entry = {"id": kid, "kind": kind, "sha256": keyformat.sha256_hex(KEYS[name]), "expires_at": expires_at}
    if revoked_at:
        entry["revoked_at"] = revoked_at
    return entry


def _grant(app_id: str, version: int, domains, keys, tier: str = "seed"):
    return {"app_id": app_id, "tier": tier, "status": "active", "version": version, "domains": list(domains),
            "referrers": [app_id], "keys": keys}


GRANTS = [
    _grant("shop", 4, DECISION_GRANTS["shop"], [_key("secret", 1), _key("publishable", 2, "publishable")]),
    _grant("victim", 5, DECISION_GRANTS["victim"],
           [_key("victim-secret", 3), _key("victim-publishable", 4, "publishable")]),
    _grant("shop-revoked", 6, (), [_key("revoked", 5, revoked_at="2026-05-01T11:00:00Z")]),
    _grant("shop-expiring", 7, (), [_key("expired", 6, expires_at="2026-05-01T12:20:00Z")]),
    _grant("idn", 8, ("xn--bcher-kva.example",), [_key("idn-publishable", 7, "publishable")]),
    _grant("orphan", 9, ("orphan.example",), [], tier="gone"),  # a tier the document does not list
]
NEWAPP = _grant("newapp", 12, ("new.example",), [_key("new-secret", 8)])


def _document(version: int, *, since: int | None = None, epoch: str | None = EPOCH, grants=None, removed=None,
              generated: str = GENERATED, expires: str = EXPIRES) -> dict:
    doc = {"schema": 1, "version": version, "generated_at": generated, "expires_at": expires, "key_prefix": "bk",
           "tiers": TIERS, "grants": GRANTS if grants is None else grants}
    if epoch is not None:
        doc["epoch"] = epoch
    if since is not None:
        doc["since"] = since
        doc["removed"] = removed or []
    return doc


def _sign(doc: dict, key: Ed25519PrivateKey = TRUSTED, jwk: dict = TRUSTED_JWK, *, typ: str = DOCUMENT_TYPE,
          alg: str = "EdDSA") -> str:
    header = _b64url(json.dumps({"alg": alg, "kid": jwk["kid"], "typ": typ}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())
    return f"{header}.{payload}.{_b64url(key.sign(f'{header}.{payload}'.encode()))}"


def _tampered() -> str:
    header, _, signature = _sign(_document(10)).split(".")
    doc = _document(10)
    doc["grants"] = [dict(GRANTS[0], domains=["evil.example"])] + GRANTS[1:]
    payload = _b64url(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode())
    return f"{header}.{payload}.{signature}"


DOCUMENTS = {
    "full-v10": _sign(_document(10)),
    "full-v10-later": _sign(_document(10, generated="2026-05-01T12:25:00Z", expires="2026-05-01T13:25:00Z")),
    "full-v9": _sign(_document(9)),
    "full-v11-expired": _sign(_document(11, generated="2026-05-01T11:00:00Z", expires="2026-05-01T12:00:00Z")),
    "delta-v12-since-10": _sign(_document(12, since=10, grants=[NEWAPP],
                                          removed=[{"app_id": "victim", "status": "revoked", "version": 11}])),
    "delta-v12-since-11": _sign(_document(12, since=11, grants=[NEWAPP])),
    "full-v10-wrong-typ": _sign(_document(10), typ="JWT"),
    "full-v10-wrong-alg": _sign(_document(10), alg="HS256"),
    "full-v10-tampered": _tampered(),
    "full-v10-unknown-kid": _sign(_document(10), OTHER, OTHER_JWK),
    "full-v10-not-a-jws": "not.a-jws",
    "full-v3-newer-epoch": _sign(_document(3, epoch=NEWER_EPOCH, generated="2026-05-01T12:10:00Z")),
    "full-v20-older-epoch": _sign(_document(20, epoch=OLDER_EPOCH)),
}

# ------------------------------------------------------------------------------------------------
# Request cases. Keys: names in KEYS ("" = none). Read against the full-v10 document at NOW.
# ------------------------------------------------------------------------------------------------

SHOP, SHOP_PAGE = "https://shop.example", "https://shop.example/checkout"


def _row(key, app_id, origin, referer, grant, reason, why="", document="fresh", group="hosts"):
    return {"group": group, "document": document, "key": key, "app_id": app_id, "origin": origin,
            "referer": referer, "grant": grant, "reason": reason, "http": int(HTTP_STATUS[reason][:3]), "why": why}


HOST_ROWS = [
    # exact and wildcard
    _row("", "", "https://a.b.shop.example", "", "shop", "origin", "any depth under *.shop.example"),
    _row("", "", "https://SHOP.Example", "", "shop", "origin", "hosts are lowercased"),
    _row("", "", " https://shop.example ", "", "shop", "origin", "surrounding spaces are ignored"),
    _row("", "", "shop.example", "", "shop", "origin", "a bare host name"),
    _row("", "", "http://shop.example", "", "shop", "origin", "http or https"),
    # look-alikes
    _row("", "", "https://evil-shop.example", "", None, "unknown origin", "never a substring"),
    _row("", "", "https://shop.example.evil.io", "", None, "unknown origin", "never a prefix"),
    _row("", "", "https://xshop.example", "", None, "unknown origin", "a wildcard needs a dot"),
    _row("", "", "https://victim-shop.com.evil.io", "", None, "unknown origin", "never a prefix"),
    _row("publishable", "", "https://evil-shop.example", "", None, "origin not allowed for this grant",
         "look-alike with a publishable key"),
    _row("publishable", "", "https://shop.example.evil.io", "", None, "origin not allowed for this grant"),
    _row("publishable", "", "", "https://shop.example.evil.io/checkout", None, "origin not allowed for this grant"),
    # userinfo
    _row("", "", "https://shop.example@evil.io", "", None, "unknown origin", "the host is after the @"),
    _row("publishable", "", "", "https://shop.example@evil.io/", None, "origin not allowed for this grant",
         "the host is after the @"),
    _row("", "", "https://evil.io@shop.example", "", "shop", "origin", "userinfo is not the host"),
    _row("", "", "https://shop.example\\@evil.io", "", "shop", "origin", "a backslash ends the host"),
    # port
    _row("", "", "https://shop.example:8443", "", "shop", "origin", "the port is ignored"),
    _row("publishable", "", "https://app.shop.example:443", "", "shop", "publishable key"),
    _row("", "", "https://shop.example:", "", None, "unknown origin", "an empty port is no host"),
    _row("", "", "https://shop.example:80x", "", None, "unknown origin", "a port must be digits"),
    # trailing dot
    _row("", "", "https://shop.example.", "", "shop", "origin", "a trailing dot is dropped"),
    _row("publishable", "", "https://app.shop.example.:8080", "", "shop", "publishable key"),
    # punycode
    _row("idn-publishable", "", "https://xn--bcher-kva.example", "", "idn", "publishable key", "punycode"),
    _row("idn-publishable", "", "https://bücher.example", "", "idn", "publishable key", "IDNA-encoded"),
    _row("", "", "https://BÜCHER.example", "", "idn", "origin", "IDNA-encoded, lowercased"),
    _row("", "idn", "https://bücher.example", "", "idn", "referrer"),
    _row("", "", "https://bucher.example", "", None, "unknown origin", "not the same name"),
    # not a host
    _row("", "", "ftp://shop.example", "", None, "unknown origin", "http(s) only"),
    _row("", "", "javascript://shop.example", "", None, "unknown origin", "http(s) only"),
    _row("", "", "https://[::1]", "", None, "unknown origin", "IP literals never match"),
    _row("", "", "https://shop..example", "", None, "unknown origin", "an empty label"),
    _row("", "", "https://-shop.example", "", None, "unknown origin", "a label cannot start with -"),
    _row("publishable", "", "file:///etc/passwd", "", None, "origin required", "no host at all"),
    # ?referrer= (an app id) URL values: a name, never a URL
    _row("", "https://shop.example/", "", "", None, "unknown referrer", "a URL is not an app id"),
    _row("", "https://shop.example/", SHOP, "", None, "unknown referrer", "a URL is not an app id"),
    _row("", "shop.example", SHOP, "", None, "unknown referrer", "a host is not an app id"),
    _row("", " shop", SHOP, "", None, "unknown referrer", "no trimming"),
    _row("publishable", "https://shop.example/", "", "", None, "origin required", "the query is never a Referer"),
    _row("victim-publishable", "victim", SHOP, "", None, "origin not allowed for this grant",
         "a key decides alone"),
    # keys
    _row("short", "", SHOP, "", None, "malformed key", "the wrong length"),
    _row("non-ascii", "", SHOP, "", None, "malformed key", "keys are ASCII"),
    _row("victim-secret", "", SHOP, "", "victim", "secret key", "a secret key counts for its own grant"),
    _row("victim-publishable", "", "https://victim-shop.com", "", "victim", "publishable key"),
    _row("", "orphan", "https://orphan.example", "", None, "tier not in the allowlist",
         "an inconsistent document"),
]

TABLE_ROWS = [
    _row(r.key, r.app_id, r.origin, r.referer, r.grant, r.reason, r.why, r.document, group="decision-table")
    for r in DECISION_TABLE
]

# After a delta: victim removed, newapp added.
AFTER_DELTA_ROWS = [
    _row("victim-secret", "", "", "", None, "unknown key", "removed by the delta", group="after-delta"),
    _row("", "", "https://victim-shop.com", "", None, "unknown origin", "removed by the delta", group="after-delta"),
    _row("new-secret", "", "", "", "newapp", "secret key", "added by the delta", group="after-delta"),
    _row("", "", "https://new.example", "", "newapp", "origin", "added by the delta", group="after-delta"),
    _row("secret", "", "", "", "shop", "secret key", "kept from the full document", group="after-delta"),
]

# ------------------------------------------------------------------------------------------------
# Document sequences. Each client starts empty with the `jwks` given (pinned: never fetched) and,
# when given, `trusted_keys`; every step loads one document at `clock` (default NOW) and expects
# "updated", "not-modified" or an error: "signature", "untrusted-key", "rollback", "expired",
# "document". `version`/`epoch`: what the client holds after the step. `requests` are then checked.
# ------------------------------------------------------------------------------------------------


def _step(document: str, expect: str, version, epoch=EPOCH, clock: int = NOW_SECONDS):
    return {"document": document, "expect": expect, "clock": clock, "version": version, "epoch": epoch}


JWKS = {"keys": [dict(TRUSTED_JWK, use="sig", alg="EdDSA")]}
JWKS_BOTH = {"keys": [dict(TRUSTED_JWK, use="sig", alg="EdDSA"), dict(OTHER_JWK, use="sig", alg="EdDSA")]}

SEQUENCES = [
    {"name": "full", "jwks": JWKS, "steps": [_step("full-v10", "updated", 10)]},
    {"name": "the same version again adds nothing", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v10", "not-modified", 10)]},
    {"name": "the same version, fresher", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v10-later", "updated", 10)]},
    {"name": "delta", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("delta-v12-since-10", "updated", 12)],
     "requests": AFTER_DELTA_ROWS},
    {"name": "a delta with nothing held", "jwks": JWKS, "steps": [_step("delta-v12-since-10", "document", None, None)]},
    {"name": "a delta that does not follow", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("delta-v12-since-11", "document", 10)]},
    {"name": "expired", "jwks": JWKS, "steps": [_step("full-v11-expired", "expired", None, None)]},
    {"name": "expired after a fresh one: the fresh one stays", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v11-expired", "expired", 10)]},
    {"name": "rolled back", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v9", "rollback", 10)]},
    {"name": "wrong typ", "jwks": JWKS, "steps": [_step("full-v10-wrong-typ", "signature", None, None)]},
    {"name": "wrong alg", "jwks": JWKS, "steps": [_step("full-v10-wrong-alg", "signature", None, None)]},
    {"name": "tampered", "jwks": JWKS, "steps": [_step("full-v10-tampered", "signature", None, None)]},
    {"name": "not a JWS", "jwks": JWKS, "steps": [_step("full-v10-not-a-jws", "signature", None, None)]},
    {"name": "unknown kid", "jwks": JWKS, "steps": [_step("full-v10-unknown-kid", "signature", None, None)]},
    {"name": "in the JWKS but not pinned", "jwks": JWKS_BOTH, "trusted_keys": [TRUSTED_JWK["kid"]],
     "steps": [_step("full-v10-unknown-kid", "untrusted-key", None, None), _step("full-v10", "updated", 10)]},
    {"name": "pinned as a JWK, no JWKS", "jwks": {"keys": []},
     "trusted_keys": [{k: TRUSTED_JWK[k] for k in ("kty", "crv", "x")}],
     "steps": [_step("full-v10", "updated", 10)]},
    {"name": "a newer epoch may start lower; the replaced epoch is refused", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v3-newer-epoch", "updated", 3, NEWER_EPOCH),
               _step("full-v10", "rollback", 3, NEWER_EPOCH)]},
    {"name": "an older epoch is refused", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v20-older-epoch", "rollback", 10)]},
]


# ------------------------------------------------------------------------------------------------
# Format 2 (bot.allowlist.serving, issue 18): the document as plain JSON bytes (grants as rows under
# `columns`, digests as base64url of the raw 32 bytes, no key ids, no referrers) and the signature
# detached (RFC 7797, `b64: false`, in the X-Allowlist-Signature response header). Each document
# is {"body": the exact bytes as UTF-8 text, "signature": the header value or null (not sent)}.
# Same key, grants and timestamps as format 1; the sequences run exactly like format 1's, except
# that each step loads `body` with its `signature`.
# ------------------------------------------------------------------------------------------------

COLUMNS_V2 = {"grants": ["app_id", "tier", "version", "domains", "keys"],
              "keys": ["sha256", "kind", "expires_at", "revoked_at"],
              "removed": ["app_id", "status", "version"]}
# The same columns in another order: a client reads the header, not fixed positions.
COLUMNS_V2_REORDERED = {"grants": ["keys", "domains", "version", "tier", "app_id"],
                        "keys": ["revoked_at", "expires_at", "kind", "sha256"],
                        "removed": ["version", "status", "app_id"]}


def _rows(entries: list[dict], table: str, columns: dict) -> list[list]:
    names = columns[table]
    rows = []
    for entry in entries:
        if table == "grants":
            entry = dict(entry, keys=_rows(entry["keys"], "keys", columns))
        elif table == "keys":
            entry = dict(entry, sha256=_b64url(bytes.fromhex(entry["sha256"])), revoked_at=entry.get("revoked_at"))
        rows.append([entry[name] for name in names])
    return rows


def _document_v2(version: int, *, columns: dict = COLUMNS_V2, **kwargs) -> dict:
    doc = _document(version, **kwargs)
    doc["format"] = 2
    doc["columns"] = columns
    doc["grants"] = _rows(doc["grants"], "grants", columns)
    if "removed" in doc:
        doc["removed"] = _rows(doc["removed"], "removed", columns)
    return doc


def _body(doc: dict) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _detached_header(key: Ed25519PrivateKey = TRUSTED, jwk: dict = TRUSTED_JWK, **fields) -> dict:
    header = {"alg": "EdDSA", "kid": jwk["kid"], "typ": DOCUMENT_TYPE, "b64": False, "crit": ["b64"]}
    header.update(fields)
    return {k: v for k, v in header.items() if v is not None}


def _sign_detached(body: str, key: Ed25519PrivateKey = TRUSTED, jwk: dict = TRUSTED_JWK, **fields) -> str:
    header = _b64url(json.dumps(_detached_header(key, jwk, **fields), separators=(",", ":")).encode())
    return f"{header}..{_b64url(key.sign(header.encode() + b'.' + body.encode()))}"


def _v2(doc: dict, key: Ed25519PrivateKey = TRUSTED, jwk: dict = TRUSTED_JWK, **fields) -> dict:
    body = _body(doc)
    return {"body": body, "signature": _sign_detached(body, key, jwk, **fields)}


def _documents_v2() -> dict:
    full = _v2(_document_v2(10))
    tampered_doc = _document_v2(10)
    tampered_doc["grants"][0][3] = ["evil.example"]  # shop's domains
    header_b64, _, signature = full["signature"].partition("..")
    bad_digest = _document_v2(10)
    bad_digest["grants"][0][4][0][0] = bad_digest["grants"][0][4][0][0][:-2]  # 31 bytes
    delta = dict(since=10, grants=[NEWAPP], removed=[{"app_id": "victim", "status": "revoked", "version": 11}])
    return {
        "full-v10": full,
        "full-v10-later": _v2(_document_v2(10, generated="2026-05-01T12:25:00Z", expires="2026-05-01T13:25:00Z")),
        "full-v10-columns-reordered": _v2(_document_v2(10, columns=COLUMNS_V2_REORDERED)),
        "full-v9": _v2(_document_v2(9)),
        "full-v11-expired": _v2(_document_v2(11, generated="2026-05-01T11:00:00Z", expires="2026-05-01T12:00:00Z")),
        "delta-v12-since-10": _v2(_document_v2(12, **delta)),
        "delta-v12-since-10-columns-reordered": _v2(_document_v2(12, columns=COLUMNS_V2_REORDERED, **delta)),
        "delta-v12-since-11": _v2(_document_v2(12, since=11, grants=[NEWAPP])),
        "full-v10-tampered": {"body": _body(tampered_doc), "signature": full["signature"]},
        "full-v10-signature-missing": {"body": full["body"], "signature": None},
        "full-v10-signature-garbage": {"body": full["body"], "signature": "not a detached JWS"},
        "full-v10-signature-not-detached": {
            "body": full["body"], "signature": f"{header_b64}.{_b64url(full['body'].encode())}.{signature}"},
        "full-v10-signature-truncated": {"body": full["body"], "signature": f"{header_b64}..{signature[:-4]}"},
        "full-v10-signature-of-another-body": {"body": full["body"],
                                               "signature": _v2(_document_v2(9))["signature"]},
        "full-v10-wrong-typ": _v2(_document_v2(10), typ="JWT"),
        "full-v10-wrong-alg": _v2(_document_v2(10), alg="HS256"),
        "full-v10-b64-true": _v2(_document_v2(10), b64=True),
        "full-v10-b64-not-critical": _v2(_document_v2(10), crit=None),
        "full-v10-unknown-kid": _v2(_document_v2(10), OTHER, OTHER_JWK),
        "full-v10-bad-digest": _v2(bad_digest),
        "full-v3-newer-epoch": _v2(_document_v2(3, epoch=NEWER_EPOCH, generated="2026-05-01T12:10:00Z")),
        "full-v20-older-epoch": _v2(_document_v2(20, epoch=OLDER_EPOCH)),
    }


DOCUMENTS_V2 = _documents_v2()

SEQUENCES_V2 = [
    {"name": "full", "jwks": JWKS, "steps": [_step("full-v10", "updated", 10)]},
    {"name": "columns in another order", "jwks": JWKS, "steps": [_step("full-v10-columns-reordered", "updated", 10)],
     "requests": [dict(row, group="columns-reordered") for row in AFTER_DELTA_ROWS[-1:]]},
    {"name": "the same version again adds nothing", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v10", "not-modified", 10)]},
    {"name": "the same version, fresher", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v10-later", "updated", 10)]},
    {"name": "delta", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("delta-v12-since-10", "updated", 12)],
     "requests": AFTER_DELTA_ROWS},
    {"name": "delta, columns in another order", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("delta-v12-since-10-columns-reordered", "updated", 12)],
     "requests": AFTER_DELTA_ROWS},
    {"name": "a format 2 delta on a format 1 document", "jwks": JWKS, "first_format1": "full-v10",
     "steps": [_step("delta-v12-since-10", "updated", 12)], "requests": AFTER_DELTA_ROWS},
    {"name": "a delta with nothing held", "jwks": JWKS, "steps": [_step("delta-v12-since-10", "document", None, None)]},
    {"name": "a delta that does not follow", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("delta-v12-since-11", "document", 10)]},
    {"name": "expired", "jwks": JWKS, "steps": [_step("full-v11-expired", "expired", None, None)]},
    {"name": "expired after a fresh one: the fresh one stays", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v11-expired", "expired", 10)]},
    {"name": "rolled back", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v9", "rollback", 10)]},
    {"name": "tampered payload", "jwks": JWKS, "steps": [_step("full-v10-tampered", "signature", None, None)]},
    {"name": "signature header missing", "jwks": JWKS,
     "steps": [_step("full-v10-signature-missing", "signature", None, None)]},
    {"name": "signature header not a JWS", "jwks": JWKS,
     "steps": [_step("full-v10-signature-garbage", "signature", None, None)]},
    {"name": "signature header carries a payload", "jwks": JWKS,
     "steps": [_step("full-v10-signature-not-detached", "signature", None, None)]},
    {"name": "signature truncated", "jwks": JWKS,
     "steps": [_step("full-v10-signature-truncated", "signature", None, None)]},
    {"name": "the signature of another body", "jwks": JWKS,
     "steps": [_step("full-v10-signature-of-another-body", "signature", None, None)]},
    {"name": "wrong typ", "jwks": JWKS, "steps": [_step("full-v10-wrong-typ", "signature", None, None)]},
    {"name": "wrong alg", "jwks": JWKS, "steps": [_step("full-v10-wrong-alg", "signature", None, None)]},
    {"name": "b64 true", "jwks": JWKS, "steps": [_step("full-v10-b64-true", "signature", None, None)]},
    {"name": "b64 not marked critical", "jwks": JWKS,
     "steps": [_step("full-v10-b64-not-critical", "signature", None, None)]},
    {"name": "unknown kid", "jwks": JWKS, "steps": [_step("full-v10-unknown-kid", "signature", None, None)]},
    {"name": "in the JWKS but not pinned", "jwks": JWKS_BOTH, "trusted_keys": [TRUSTED_JWK["kid"]],
     "steps": [_step("full-v10-unknown-kid", "untrusted-key", None, None), _step("full-v10", "updated", 10)]},
    {"name": "a digest that is not 32 bytes", "jwks": JWKS,
     "steps": [_step("full-v10-bad-digest", "document", None, None)]},
    {"name": "a newer epoch may start lower; the replaced epoch is refused", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v3-newer-epoch", "updated", 3, NEWER_EPOCH),
               _step("full-v10", "rollback", 3, NEWER_EPOCH)]},
    {"name": "an older epoch is refused", "jwks": JWKS,
     "steps": [_step("full-v10", "updated", 10), _step("full-v20-older-epoch", "rollback", 10)]},
]


def build() -> dict:
    return {
        "format": "beekeeper-gateway-conformance",
        "vectors_version": VECTORS_VERSION,
        "generator": "conformance/generate.py",
        "document_type": DOCUMENT_TYPE,
        "now": NOW, "now_seconds": NOW_SECONDS, "expired_clock": EXPIRED_CLOCK,
        "signing_keys": {
            "note": "test keys: they sign these vectors and nothing else",
            "trusted": dict(TRUSTED_JWK, d=_b64url(TRUSTED.private_bytes_raw())),
            "other": dict(OTHER_JWK, d=_b64url(OTHER.private_bytes_raw())),
        },
        "jwks": JWKS,
        "keys": KEYS,
        "reasons": list(REASONS),
        "http_status": {reason: int(status[:3]) for reason, status in HTTP_STATUS.items()},
        "grants": {app: list(domains) for app, domains in DECISION_GRANTS.items()},
        "documents": DOCUMENTS,
        "fresh_document": "full-v10",
        "requests": TABLE_ROWS + HOST_ROWS,
        "sequences": SEQUENCES,
        "format2": {
            "note": "format 2 documents: load `body` (its UTF-8 bytes, exactly) with `signature` as the "
                    "X-Allowlist-Signature header (null: not sent); request rows as above, against fresh_document",
            "signature_header": "X-Allowlist-Signature",
            "content_type": "application/vnd.beekeeper.allowlist+json; format=2",
            "columns": COLUMNS_V2,
            "documents": DOCUMENTS_V2,
            "fresh_document": "full-v10",
            "sequences": SEQUENCES_V2,
        },
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python conformance/generate.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
