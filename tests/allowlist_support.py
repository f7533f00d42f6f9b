"""Helpers for the allowlist tests: grants and keys made as rows (the way bot.access.grants and bot.access.keys
leave them, version bumped), gateways, and a `responses` bridge that serves the Flask app to the
gateway client over its real HTTP session."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

import responses
from sqlmodel import Session, select

from beekeeper_gateway import keyformat
from bot.allowlist import gateways, versioning
from bot.core.clock import utcnow
from bot.core.models import ApiKey, Grant, GrantDomain, GrantStatus

BOT = "http://bot.test"
ALLOWLIST_URL = f"{BOT}/v1/allowlist"


@dataclass
class MadeGrant:
    grant: Grant
    keys: dict[str, str] = field(default_factory=dict)  # kind ("secret"/"publishable") -> plaintext
    rows: dict[str, ApiKey] = field(default_factory=dict)


def make_grant(session: Session, app_id: str, *, tier: str = "seed", domains=(), kinds=("secret", "publishable"),
               prefix: str = "bk", user_id: int = 1, key_expires_at: datetime | None = None,
               commit: bool = True) -> MadeGrant:
    grant = Grant(app_id=app_id, tier=tier, github_user_id=user_id, github_login=f"user{user_id}",
                  approved_by="maintainer")
    session.add(grant)
    session.flush()
    for domain in domains:
        session.add(GrantDomain(grant_id=grant.id, domain=domain))
    made = MadeGrant(grant)
    for kind in kinds:
        plaintext = keyformat.generate(prefix, "sk" if kind == "secret" else "pk")
        row = ApiKey(grant_id=grant.id, kind=kind, sha256=keyformat.sha256_hex(plaintext),
                     display=keyformat.display(plaintext), expires_at=key_expires_at)
        session.add(row)
        made.keys[kind], made.rows[kind] = plaintext, row
    session.flush()
    versioning.bump(session, grant, "created")
    if commit:
        session.commit()
    return made


def revoke_key(session: Session, row: ApiKey) -> int:
    """What revoking a key does to the rows: marked revoked, allowlist version bumped."""
    row.revoked_at = utcnow()
    row.revoke_reason = "test"
    session.add(row)
    version = versioning.bump(session, session.get(Grant, row.grant_id), "key")
    session.commit()
    return version


def revoke_grant(session: Session, grant: Grant) -> int:
    now = utcnow()
    grant.status, grant.revoked_at = GrantStatus.REVOKED, now
    for key in session.exec(select(ApiKey).where(ApiKey.grant_id == grant.id)).all():
        key.revoked_at = key.revoked_at or now
        session.add(key)
    for domain in session.exec(select(GrantDomain).where(GrantDomain.grant_id == grant.id)).all():
        domain.active, domain.removed_at = False, now
        session.add(domain)
    version = versioning.bump(session, grant, "revoked")
    session.commit()
    return version


def set_tier(session: Session, grant: Grant, tier: str) -> int:
    grant.tier = tier
    version = versioning.bump(session, grant, "tier")
    session.commit()
    return version


def add_gateway(session: Session, name: str = "edge-1", prefix: str = "bk") -> str:
    _, credential = gateways.add(session, name, prefix, "test")
    session.commit()
    return credential


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


class AppBridge:
    """Answers every request to http://bot.test through the Flask test client, so the gateway
    client's real requests.Session talks to the real app. `override` may replace an answer
    (a tampered, replayed or failing response); `requests` records what the client sent."""

    def __init__(self, app, rsps: responses.RequestsMock):
        self.client = app.test_client()
        self.requests: list = []
        self.override = None
        rsps.add_callback(responses.GET, re.compile(re.escape(BOT) + r"/.*"), callback=self._forward)

    def _forward(self, request):
        self.requests.append(request)
        if self.override is not None:
            answer = self.override(request)
            if answer is not None:
                return answer
        parts = urlsplit(request.url)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "accept-encoding"}
        response = self.client.get(parts.path, query_string=parts.query, headers=headers)
        out_headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length",)}
        return response.status_code, out_headers, response.get_data()
