"""Ed25519 keys that sign the allowlist, and the JWKS that publishes their public halves.

The private key is stored as PEM in the `signing_key` table and never leaves the database; the
public half is published at `/.well-known/jwks.json`. A key's `kid` is its RFC 7638 JWK
thumbprint, so anyone can recompute it from the public key.

A gateway may pin the keys it trusts (beekeeper_gateway `trusted_keys`, by thumbprint). For those,
`prepare` makes the next key ahead of time: published in the JWKS, not signing, its thumbprint
printed by `beekeeper signing-keys list`, so gateways pin it before `rotate` makes it the signer.

Rotation makes the prepared key (else a new one) the signer at once and keeps the old one in the JWKS for
`policy.allowlist.signing_key_grace_hours`, so a gateway that fetched the JWKS before the
rotation still verifies documents signed after it (it refetches the JWKS on an unknown kid), and
a document signed by the old key before the rotation keeps verifying until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt import api_jws
from sqlalchemy import func
from sqlmodel import Session, select

from bot.core import audit
from bot.core.clock import utcnow
from bot.core.config import Policy
from bot.core.models import SigningKey

ALGORITHM = "EdDSA"
# The JWS `typ` of an allowlist document: a gateway refuses anything else signed by the same key.
DOCUMENT_TYPE = "beekeeper-allowlist+json"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint of an OKP key: SHA-256 of its required members in canonical JSON."""
    canonical = json.dumps({"crv": public_jwk["crv"], "kty": public_jwk["kty"], "x": public_jwk["x"]},
                           separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def new_key_material() -> tuple[str, dict[str, Any]]:
    """A fresh Ed25519 key: (private PEM, public JWK with kid, use and alg)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    jwk.update(kid=thumbprint(jwk), use="sig", alg=ALGORITHM)
    return pem, jwk


def _create(session: Session, actor: str, action: str, idempotency_key: str | None = None,
            active: bool = True) -> SigningKey | None:
    """Insert a new key (active, or prepared: `active=False` and never retired) with its audit
    row; None when `idempotency_key` was already used."""
    pem, jwk = new_key_material()
    if idempotency_key is not None:
        if not audit.claim_once(session, idempotency_key, actor, action, subject=jwk["kid"]):
            return None
    else:
        audit.record(session, actor, action, subject=jwk["kid"])
    key = SigningKey(kid=jwk["kid"], private_pem=pem, public_jwk=jwk, created_at=utcnow(), active=active)
    session.add(key)
    session.flush()
    return key


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def current_key(session: Session) -> SigningKey | None:
    """The signer: the newest active key (several are active only after a race on first use)."""
    return session.exec(select(SigningKey).where(SigningKey.active == True)  # noqa: E712
                        .order_by(SigningKey.id.desc())).first()


def current_kid(session: Session) -> str | None:
    return session.exec(select(SigningKey.kid).where(SigningKey.active == True)  # noqa: E712
                        .order_by(SigningKey.id.desc())).first()


def prepared_key(session: Session) -> SigningKey | None:
    """The next signer made by `prepare`: published, not active, never retired."""
    return session.exec(select(SigningKey).where(SigningKey.active == False,  # noqa: E712
                                                 SigningKey.retired_at == None)  # noqa: E711
                        .order_by(SigningKey.id.desc())).first()


def is_prepared(key: SigningKey) -> bool:
    return not key.active and key.retired_at is None


def published_keys(session: Session, policy: Policy, now: datetime | None = None) -> list[SigningKey]:
    """Active keys, the prepared next key, and retired keys still inside their grace period,
    newest first."""
    now = now or utcnow()
    grace = timedelta(hours=policy.allowlist.signing_key_grace_hours)
    rows = session.exec(select(SigningKey).order_by(SigningKey.id.desc())).all()
    return [k for k in rows
            if k.active or k.retired_at is None or _aware(k.retired_at) + grace > now]


def jwks(session: Session, policy: Policy, now: datetime | None = None) -> dict[str, Any]:
    """The JSON Web Key Set served at /.well-known/jwks.json (public halves only)."""
    return {"keys": [dict(k.public_jwk) for k in published_keys(session, policy, now)]}


def _aware(value: datetime) -> datetime:
    # SQLite gives naive datetimes back; every stored time is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Creating and rotating
# --------------------------------------------------------------------------------------------


def ensure_key(session: Session, actor: str = "system") -> SigningKey:
    """The current signer, creating the first key on first need.

    Two processes may both find no key; the audit row's unique idempotency key lets only one of
    them create it, and the other reads the winner's key after it committed.
    """
    key = current_key(session)
    if key is not None:
        return key
    generation = session.exec(select(func.count()).select_from(SigningKey)).one()
    created = _create(session, actor, "signing_key.created", idempotency_key=f"signing-key:auto:{generation}")
    if created is not None:
        return created
    key = current_key(session)
    if key is None:
        raise RuntimeError("another process is creating the first signing key; try again")
    return key


def generate(session: Session, actor: str) -> tuple[SigningKey, bool]:
    """`beekeeper signing-keys generate`: (the signer, True if it was created now)."""
    existing = current_key(session)
    if existing is not None:
        return existing, False
    return _create(session, actor, "signing_key.created"), True


def prepare(session: Session, actor: str) -> tuple[SigningKey, bool]:
    """`beekeeper signing-keys prepare`: the next signer, published now but not signing until
    `rotate`, so gateways that pin keys can pin its thumbprint first: (the key, True if created now)."""
    existing = prepared_key(session)
    if existing is not None:
        return existing, False
    return _create(session, actor, "signing_key.prepared", active=False), True


def rotate(session: Session, actor: str) -> tuple[SigningKey, list[SigningKey]]:
    """Retire every active key and make the prepared key (else a new one) the signer:
    (new signer, retired keys)."""
    now = utcnow()
    retired = list(session.exec(select(SigningKey).where(SigningKey.active == True)).all())  # noqa: E712
    for key in retired:
        key.active = False
        key.retired_at = now
        session.add(key)
    new = prepared_key(session)
    if new is None:
        new = _create(session, actor, "signing_key.rotated")
    else:
        new.active = True
        session.add(new)
        audit.record(session, actor, "signing_key.rotated", subject=new.kid)
        session.flush()
    return new, retired


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _private_key(kid: str, pem: str) -> Ed25519PrivateKey:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def sign(payload: bytes, key: SigningKey) -> bytes:
    """`payload` as a compact JWS (EdDSA over Ed25519) whose header names the key's kid."""
    token = api_jws.encode(payload, _private_key(key.kid, key.private_pem), algorithm=ALGORITHM,
                           headers={"kid": key.kid, "typ": DOCUMENT_TYPE})
    return token.encode()


# Format 2 (bot.allowlist.serving): the document travels as plain JSON bytes, and the signature as a
# detached JWS with an unencoded payload (RFC 7797: `b64: false`, marked critical), so a gateway
# verifies the bytes it received without base64-decoding tens of megabytes.
DETACHED_HEADER = "X-Allowlist-Signature"


def sign_detached(payload: bytes, key: SigningKey) -> bytes:
    """`<base64url protected header>..<base64url signature>` over `header_b64 + "." + payload`."""
    header = json.dumps({"alg": ALGORITHM, "kid": key.kid, "typ": DOCUMENT_TYPE, "b64": False, "crit": ["b64"]},
                        separators=(",", ":")).encode()
    header_b64 = _b64url(header).encode()
    signature = _private_key(key.kid, key.private_pem).sign(header_b64 + b"." + payload)
    return header_b64 + b".." + _b64url(signature).encode()
