"""Helpers of the gateway distribution's tests: signing keys and allowlist documents made here with
cryptography's Ed25519 (no bot), a fake clock, and the conformance vectors of the repository.

Nothing here imports `bot`: these tests run with only beekeeper-gateway[test] installed."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from beekeeper_gateway import DOCUMENT_TYPE, jwk_thumbprint, keyformat

# The shared cross-language vectors (written by conformance/generate.py; the JS client runs them too).
VECTORS_PATH = Path(__file__).resolve().parents[2] / "conformance" / "v1.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

BASE = "https://beekeeper.test"
URL = f"{BASE}/v1/allowlist"
JWKS_URL = f"{BASE}/.well-known/jwks.json"
NOW = 1_800_000_000.0  # the clock every test starts at (2027-01-15)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Signer:
    """An Ed25519 signing key with its public JWK (kid = RFC 7638 thumbprint, as the bot names it)."""

    def __init__(self):
        self.private = Ed25519PrivateKey.generate()
        self.jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519",
                                    "x": b64url(self.private.public_key().public_bytes_raw())}
        self.jwk["kid"] = self.thumbprint = jwk_thumbprint(self.jwk)

    def compact(self, doc: dict, *, typ: str = DOCUMENT_TYPE) -> bytes:
        """Format 1: a compact JWS of the document."""
        header = b64url(json.dumps({"alg": "EdDSA", "kid": self.jwk["kid"], "typ": typ}).encode())
        payload = b64url(json.dumps(doc).encode())
        signature = b64url(self.private.sign(f"{header}.{payload}".encode()))
        return f"{header}.{payload}.{signature}".encode()

    def detached(self, body: bytes) -> str:
        """Format 2: the detached JWS (RFC 7797, unencoded payload) over the plain bytes."""
        header = b64url(json.dumps({"alg": "EdDSA", "kid": self.jwk["kid"], "typ": DOCUMENT_TYPE, "b64": False,
                                    "crit": ["b64"]}).encode())
        return f"{header}..{b64url(self.private.sign(header.encode() + b'.' + body))}"


def api_key(kind: str = "sk", label: str = "") -> str:
    """A well-formed key (valid checksum); deterministic per label so a test can name it."""
    digest = hashlib.sha256(f"{kind} {label}".encode()).digest()
    body = f"bk_{kind}_" + "".join(keyformat.BASE62[b % 62] for b in digest[:keyformat.RANDOM_LENGTH])
    return body + keyformat.checksum(body)


def grant(app_id: str, version: int, domains=(), *, secret: str | None = None, publishable: str | None = None,
          revoked: str | None = None, tier: str = "seed") -> dict:
    keys = []
    if secret:
        keys.append({"id": 1, "kind": "secret", "sha256": keyformat.sha256_hex(secret), "expires_at": None})
    if publishable:
        keys.append({"id": 2, "kind": "publishable", "sha256": keyformat.sha256_hex(publishable), "expires_at": None})
    if revoked:
        keys.append({"id": 3, "kind": "secret", "sha256": keyformat.sha256_hex(revoked), "expires_at": None,
                     "revoked_at": iso(NOW - 60)})
    return {"app_id": app_id, "tier": tier, "status": "active", "version": version, "domains": list(domains),
            "referrers": [app_id], "keys": keys}


def document(version: int, grants: list[dict], *, since: int | None = None, removed=(), epoch: str = "1790000000.ab",
             generated: float = NOW - 60, ttl: float = 3600) -> dict:
    """A format 1 allowlist document (the bot's schema 1), a delta when `since` is given."""
    doc = {"schema": 1, "version": version, "epoch": epoch, "generated_at": iso(generated),
           "expires_at": iso(generated + ttl), "key_prefix": "bk",
           "tiers": {"seed": {"rank": 1, "limits": {"requests_per_minute": 60}}}, "grants": grants}
    if since is not None:
        doc["since"] = since
        doc["removed"] = [{"app_id": app_id, "status": "revoked", "version": version} for app_id in removed]
    return doc


def format2(doc: dict) -> bytes:
    """The same document in format 2: grants and keys as rows under `columns`, digests base64url."""
    columns = {"grants": ["app_id", "tier", "version", "domains", "keys"],
               "keys": ["sha256", "kind", "expires_at", "revoked_at"], "removed": ["app_id", "status", "version"]}
    rows = [[g["app_id"], g["tier"], g["version"], g["domains"],
             [[b64url(bytes.fromhex(k["sha256"])), k["kind"], k["expires_at"], k.get("revoked_at")]
              for k in g["keys"]]] for g in doc["grants"]]
    out = {k: v for k, v in doc.items() if k not in ("grants", "removed")}
    out.update(format=2, columns=columns, grants=rows)
    if "removed" in doc:
        out["removed"] = [[r["app_id"], r["status"], r["version"]] for r in doc["removed"]]
    return json.dumps(out, separators=(",", ":")).encode()


class VectorSession:
    """A stand-in for requests.Session answering the conformance document it is given."""

    class _Answer:
        def __init__(self, body: str, signature: str | None):
            self.status_code, self.content, self.headers = 200, body.encode(), {}
            if signature is not None:
                self.headers[VECTORS["format2"]["signature_header"]] = signature

    def __init__(self):
        self.body, self.signature = "", None

    def get(self, url, params=None, headers=None, timeout=None):
        assert url == URL, url  # the JWKS is pinned (jwks=): never fetched
        return self._Answer(self.body, self.signature)

    def serve(self, name: str, fmt: int = 1) -> None:
        if fmt == 2:
            entry = VECTORS["format2"]["documents"][name]
            self.body, self.signature = entry["body"], entry["signature"]
        else:
            self.body, self.signature = VECTORS["documents"][name], None
