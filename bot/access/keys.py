"""A grant's credentials: issued at claim time, stored as hashes, rotated, revoked, checked.

The plaintext of a key exists in exactly one place: the `IssuedKey` that `claim()` returns to
the page that shows it once. The database keeps the SHA-256 of the whole key, a display form
(`bk_sk_AbC1…wxYz`), the kind, the grant and the created / expires / revoked times (bot.core.models.ApiKey).
The format itself (checksum, regex) is beekeeper_gateway.keyformat, shared with the gateway client.

Life of a grant's keys:

- approval leaves the grant `claimable`; its owner (numeric GitHub id) claims once: a secret key
  and a publishable key are made together and shown once; `claimable` goes off;
- rotation (`/rotate`, the claim page, `beekeeper keys rotate`) makes the grant claimable again
  and gives every live key an expiry `policy.keys.rotation_grace_hours` ahead (0 = at once), so a
  running app keeps working until it has the new key;
- revocation (one key, or every key of a grant) is immediate; a leaked key is revoked this way.

Every change writes an audit row and bumps the allowlist version (change "key"), so gateways
learn about it with the next pull. Nothing here knows Flask; the web pages, the `/rotate`
command, the leak handler and the CLI all call these functions with a database session.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from sqlmodel import Session, select

from beekeeper_gateway import keyformat
from bot.allowlist import versioning
from bot.core import audit
from bot.core.clock import utcnow
from bot.core.models import ApiKey, Grant, GrantStatus, KeyKind

# What a claim hands out, and the short kind each has in the key format.
CLAIM_KINDS = (KeyKind.SECRET, KeyKind.PUBLISHABLE)
FORMAT_KIND = {KeyKind.SECRET: "sk", KeyKind.PUBLISHABLE: "pk"}
MODEL_KIND = {short: kind for kind, short in FORMAT_KIND.items()}

ACTIVE, EXPIRING, EXPIRED, REVOKED = "active", "expiring", "expired", "revoked"
DONE, NOOP, REFUSED = "done", "noop", "refused"


class ClaimRefused(Exception):
    """A claim that may not happen; `reason` is one of the constants below."""

    NOT_OWNER = "not_owner"
    NOT_ACTIVE = "not_active"
    ALREADY_CLAIMED = "already_claimed"

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class IssuedKey:
    """A key just made. `plaintext` is for the one response that shows it, nothing else (it is
    left out of repr() so that a stray log line or traceback cannot print it)."""

    key: ApiKey
    plaintext: str = field(repr=False)

    @property
    def kind(self) -> str:
        return self.key.kind


@dataclass
class Rotation:
    """What `rotate()` did: `done`, `noop` (nothing to change) or `refused`, and why."""

    status: str
    message: str
    expires_at: datetime | None = None
    keys: list[ApiKey] = field(default_factory=list)  # the keys that now expire

    @property
    def changed(self) -> bool:
        return self.status == DONE


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def aware(value: datetime | None) -> datetime | None:
    """Datetimes read back from SQLite are naive; they are UTC (bot.core.clock)."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def key_state(key: ApiKey, now: datetime | None = None) -> str:
    """active, expiring (inside a rotation grace period), expired or revoked."""
    now = now or utcnow()
    if key.revoked_at is not None:
        return REVOKED
    if key.expires_at is not None:
        return EXPIRED if aware(key.expires_at) <= now else EXPIRING
    return ACTIVE


def is_live(key: ApiKey, now: datetime | None = None) -> bool:
    return key_state(key, now) in (ACTIVE, EXPIRING)


def keys_of(session: Session, grant: Grant) -> list[ApiKey]:
    """Every key the grant ever had, newest first."""
    statement = select(ApiKey).where(ApiKey.grant_id == grant.id).order_by(ApiKey.created_at.desc(),
                                                                           ApiKey.id.desc())
    return list(session.exec(statement).all())


def live_keys(session: Session, grant: Grant, now: datetime | None = None) -> list[ApiKey]:
    """The keys that work now (not revoked, not past their expiry), newest first."""
    now = now or utcnow()
    return [k for k in keys_of(session, grant) if is_live(k, now)]


def current_secret_key(session: Session, grant: Grant, now: datetime | None = None) -> ApiKey | None:
    """The newest live secret key: what the claim page shows as "your key" (display form only)."""
    return next((k for k in live_keys(session, grant, now) if k.kind == KeyKind.SECRET), None)


def find_key(session: Session, plaintext: str) -> ApiKey | None:
    """The stored key with this plaintext, or None. The checksum is verified first, so a
    mistyped or invented string costs no database lookup."""
    if not keyformat.parse(plaintext or ""):
        return None
    return session.exec(select(ApiKey).where(ApiKey.sha256 == keyformat.sha256_hex(plaintext))).first()


def is_key_valid(session: Session, plaintext: str, now: datetime | None = None) -> bool:
    """True when `plaintext` is a live key of an active grant at `now` (default: the clock)."""
    key = find_key(session, plaintext)
    if key is None or not is_live(key, now or utcnow()):
        return False
    grant = session.get(Grant, key.grant_id)
    return grant is not None and grant.status == GrantStatus.ACTIVE


def claim_path(app_id: str) -> str:
    return f"/claim/{quote(app_id, safe='')}"


def claim_url(public_url: str, app_id: str) -> str:
    """Where the owner claims the grant's key (the approval comment links here)."""
    return public_url.rstrip("/") + claim_path(app_id)


# --------------------------------------------------------------------------------------------
# Changing
# --------------------------------------------------------------------------------------------


def lock_grant(session: Session, grant: Grant) -> Grant:
    """Re-read the grant under a row lock held until commit (SELECT … FOR UPDATE on PostgreSQL;
    SQLite's write lock is taken at BEGIN), so two claims or rotations run one after the other."""
    statement = (select(Grant).where(Grant.id == grant.id).with_for_update()
                 .execution_options(populate_existing=True))
    return session.exec(statement).one()


def _new_key(session: Session, grant: Grant, kind: str, prefix: str, created_by: str | None) -> IssuedKey:
    plaintext = keyformat.generate(prefix, FORMAT_KIND[kind])
    row = ApiKey(grant_id=grant.id, kind=kind, sha256=keyformat.sha256_hex(plaintext),
                 display=keyformat.display(plaintext), created_at=utcnow(),
                 created_by=(created_by or None) and created_by[:64])
    session.add(row)
    return IssuedKey(row, plaintext)


def claim(session: Session, grant: Grant, user_id: int, *, prefix: str, actor: str | None = None,
          source: str | None = None) -> list[IssuedKey]:
    """The owner claims the grant's keys: a secret and a publishable key, returned once.

    Raises ClaimRefused when `user_id` does not own the grant, the grant is not active, or the
    key was already claimed (a second claim needs a rotation first).
    """
    grant = lock_grant(session, grant)
    if grant.github_user_id != user_id:
        raise ClaimRefused(ClaimRefused.NOT_OWNER, "Only the GitHub account the grant belongs to can claim its key.")
    if grant.status != GrantStatus.ACTIVE:
        raise ClaimRefused(ClaimRefused.NOT_ACTIVE, f"Grant {grant.app_id} is {grant.status}; it has no key to claim.")
    if not grant.claimable:
        raise ClaimRefused(ClaimRefused.ALREADY_CLAIMED,
                           "This key was already claimed. Rotate it to get a new one.")
    actor = actor or grant.github_login
    issued = [_new_key(session, grant, kind, prefix, actor) for kind in CLAIM_KINDS]
    grant.claimable = False
    session.add(grant)
    session.flush()
    audit.record(session, actor[:64], "key.claimed", request_id=grant.request_id, grant_id=grant.id,
                 subject=grant.app_id, source=source,
                 details={"keys": [{"id": i.key.id, "kind": i.kind, "display": i.key.display} for i in issued]})
    versioning.bump(session, grant, "key")
    return issued


def rotate(session: Session, grant: Grant, actor: str, *, grace_hours: float, source: str | None = None,
           now: datetime | None = None) -> Rotation:
    """Make a new key claimable; every live key keeps working `grace_hours` longer, then expires.

    A grant with no working key (never claimed, or all revoked or expired) just becomes
    claimable. A second rotation before the new key is claimed changes nothing, except that a
    shorter grace period shortens the old keys' expiry (never lengthens it).
    """
    grant = lock_grant(session, grant)
    if grant.status != GrantStatus.ACTIVE:
        return Rotation(REFUSED, f"Grant {grant.app_id} is {grant.status}: its keys cannot be rotated.")
    now = now or utcnow()
    expires_at = now + timedelta(hours=grace_hours)
    live = live_keys(session, grant, now)
    if not live:
        if grant.claimable:
            return Rotation(NOOP, f"Grant {grant.app_id} has no key in use yet: its key is waiting to be claimed.")
        grant.claimable = True
        session.add(grant)
        audit.record(session, actor[:64], "key.rotated", request_id=grant.request_id, grant_id=grant.id,
                     subject=grant.app_id, source=source, details={"grace_hours": grace_hours, "keys": []})
        versioning.bump(session, grant, "key")
        return Rotation(DONE, f"Grant {grant.app_id} had no working key; a new one can be claimed.")
    shortened = [k for k in live if k.expires_at is None or aware(k.expires_at) > expires_at]
    if grant.claimable and not shortened:
        return Rotation(NOOP, f"A new key for {grant.app_id} is already waiting to be claimed.",
                        min(aware(k.expires_at) for k in live), live)
    for key in shortened:
        key.expires_at = expires_at
        session.add(key)
    grant.claimable = True
    session.add(grant)
    session.flush()
    audit.record(session, actor[:64], "key.rotated", request_id=grant.request_id, grant_id=grant.id,
                 subject=grant.app_id, source=source,
                 details={"grace_hours": grace_hours, "expires_at": expires_at.isoformat(),
                          "keys": [{"id": k.id, "kind": k.kind, "display": k.display} for k in shortened]})
    versioning.bump(session, grant, "key")
    return Rotation(DONE, f"Rotated the keys of {grant.app_id}: a new key can be claimed.", expires_at, live)


def revoke_key(session: Session, key: ApiKey, actor: str, reason: str, *, source: str | None = None,
               bump: bool = True) -> bool:
    """Revoke one key at once; False when it was already revoked. `bump=False` lets a caller
    revoking several keys of one grant bump the allowlist version once."""
    if key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    key.revoke_reason = reason[:200]
    session.add(key)
    grant = session.get(Grant, key.grant_id)
    audit.record(session, actor[:64], "key.revoked", request_id=grant.request_id if grant else None,
                 grant_id=key.grant_id, subject=grant.app_id if grant else None, source=source,
                 details={"key_id": key.id, "kind": key.kind, "display": key.display, "reason": reason[:500]})
    if bump and grant is not None:
        versioning.bump(session, grant, "key")
    return True


def revoke_grant_keys(session: Session, grant: Grant, actor: str, reason: str, *,
                      source: str | None = None) -> list[ApiKey]:
    """Revoke every not-yet-revoked key of the grant (one allowlist version for all of them).
    The grant stays active: its owner can rotate to claim a new key (revoke the grant to end access)."""
    grant = lock_grant(session, grant)
    revoked = [k for k in keys_of(session, grant)
               if revoke_key(session, k, actor, reason, source=source, bump=False)]
    if revoked:
        versioning.bump(session, grant, "key")
    return revoked


# --------------------------------------------------------------------------------------------
# What an issue comment may say about keys (never key material)
# --------------------------------------------------------------------------------------------

_SAFE_APP_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def app_id_code(app_id: str):
    """The app id in backticks when it is a plain slug (it always is for grants from the issue
    form), else escaped text."""
    from bot.core.comments import Trusted, escape_user_text

    if _SAFE_APP_ID.match(app_id or ""):
        return Trusted(f"`{app_id}`")
    return Trusted(escape_user_text(app_id))


def claim_link(public_url: str, app_id: str):
    """A markdown link to the claim page (the URL is ours; the app id is percent-encoded)."""
    from bot.core.comments import Trusted

    return Trusted(f"[{claim_url(public_url, app_id)}]({claim_url(public_url, app_id)})")


def utc_text(value: datetime | None) -> str:
    return aware(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "—"
