"""SQLModel tables: the whole state of Beekeeper lives here.

Every schema change comes with an Alembic migration in bot/core/migrations/versions; a test compares
these models with the migrated schema on SQLite and PostgreSQL so the two never drift.

Times are timezone-aware UTC datetimes (SQLModel's UTCDateTime); `bot.core.clock.utcnow()` makes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from bot.core.clock import utcnow


def _json_column() -> Column:
    return Column(JSON, nullable=False, default=dict)


# --------------------------------------------------------------------------------------------
# Webhook inbox (foundation)
# --------------------------------------------------------------------------------------------


class DeliveryStatus:
    PENDING = "pending"        # stored, not yet tried
    PROCESSING = "processing"  # claimed by a worker until locked_until
    RETRY = "retry"            # a handler failed; tried again at next_attempt_at
    PROCESSED = "processed"
    SKIPPED = "skipped"        # no handler, or sent by our own bot user
    DEAD = "dead"              # failed max_attempts times; payload kept for `deliveries retry`
    ALL = (PENDING, PROCESSING, RETRY, PROCESSED, SKIPPED, DEAD)


class Delivery(SQLModel, table=True):
    __tablename__ = "delivery"
    __table_args__ = (
        # GitHub's delivery GUIDs are unique across GitHub: one row per GUID, whatever the hook.
        UniqueConstraint("delivery_id", name="uq_delivery_delivery_id"),
        # The same signed body under a new GUID is a replay (migration 0003d).
        UniqueConstraint("payload_sha256", name="uq_delivery_payload_sha256"),
        Index("ix_delivery_claim", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    hook_id: int = Field(default=0, sa_type=BigInteger)  # X-GitHub-Hook-ID, for the record
    delivery_id: str = Field(max_length=64)
    # SHA-256 (hex) of the raw body as signed, set by the web intake; NULL for rows stored otherwise.
    payload_sha256: str | None = Field(default=None, max_length=64)
    event: str = Field(max_length=64, index=True)
    action: str | None = Field(default=None, max_length=64)
    installation_id: int | None = Field(default=None, sa_type=BigInteger)
    payload: str = Field(sa_column=Column(Text, nullable=False))  # raw body, exactly as signed
    received_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default=DeliveryStatus.PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    locked_until: datetime | None = None
    locked_by: str | None = Field(default=None, max_length=128)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    processed_at: datetime | None = None


# --------------------------------------------------------------------------------------------
# Requests (issue forms, checks)
# --------------------------------------------------------------------------------------------


class RequestState:
    RECEIVED = "received"
    NEEDS_INFO = "needs_info"
    VALIDATED = "validated"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    REVOKED = "revoked"
    OPEN = (RECEIVED, NEEDS_INFO, VALIDATED)
    ALL = (RECEIVED, NEEDS_INFO, VALIDATED, APPROVED, REJECTED, WITHDRAWN, REVOKED)


class AccessRequest(SQLModel, table=True):
    __tablename__ = "access_request"
    __table_args__ = (UniqueConstraint("repo", "issue_number", name="uq_request_issue"),)

    id: int | None = Field(default=None, primary_key=True)
    repo: str = Field(max_length=200, index=True)  # owner/name
    issue_number: int
    installation_id: int | None = Field(default=None, sa_type=BigInteger)
    applicant_id: int = Field(sa_type=BigInteger, index=True)  # numeric: logins can be renamed
    applicant_login: str = Field(max_length=64)
    title: str = Field(default="", max_length=512)
    state: str = Field(default=RequestState.RECEIVED, max_length=16, index=True)
    requested_tier: str | None = Field(default=None, max_length=32)
    app_name: str | None = Field(default=None, max_length=200)
    referrer: str | None = Field(default=None, max_length=64)
    contact: str | None = Field(default=None, max_length=320)  # never echoed in public
    values: dict[str, Any] = Field(default_factory=dict, sa_column=_json_column())
    check_results: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    checks_ok: bool = False
    # A check flagged something only a maintainer can settle (a conflict with another user's
    # grant, a young account, a tier above the form's maximum): never approve automatically.
    needs_maintainer: bool = False
    body_sha256: str | None = Field(default=None, max_length=64)  # body the checks last saw
    status_comment_id: int | None = Field(default=None, sa_type=BigInteger)
    issue_state: str = Field(default="open", max_length=16)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None
    decided_by: str | None = Field(default=None, max_length=64)
    decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    form_name: str | None = Field(default=None, max_length=64)  # the policy's request form (forms[].name)
    # Upgrades (bot.requests.upgrades): the existing grant an approved request changed (tier, domains)
    # instead of creating a new one. Set on approval only.
    upgrade_grant_id: int | None = Field(default=None, index=True)


# --------------------------------------------------------------------------------------------
# Grants, domains, keys
# --------------------------------------------------------------------------------------------


class GrantStatus:
    ACTIVE = "active"
    REVOKED = "revoked"


class Grant(SQLModel, table=True):
    __tablename__ = "grant"

    id: int | None = Field(default=None, primary_key=True)
    app_id: str = Field(max_length=64, unique=True)  # public referrer name, safe to print
    tier: str = Field(max_length=32)
    status: str = Field(default=GrantStatus.ACTIVE, max_length=16, index=True)
    github_user_id: int = Field(sa_type=BigInteger, index=True)
    github_login: str = Field(max_length=64)
    request_id: int | None = Field(default=None, foreign_key="access_request.id")
    repo: str | None = Field(default=None, max_length=200)
    issue_number: int | None = None
    approved_by: str = Field(max_length=64)
    source: str = Field(default="issue", max_length=16)  # issue | self_service | cli
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    revoke_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # allowlist version that carries this grant's latest change (for deltas and the portal)
    version: int = 0
    # True while a key may be claimed (approval, rotation); the claim flips it off.
    claimable: bool = True
    # Import (bot.ops.grants_io): a free-text note carried over from the platform's old records.
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class GrantDomain(SQLModel, table=True):
    """A domain bound to a grant. Unique across active grants: a DB constraint, not only a check."""

    __tablename__ = "grant_domain"
    __table_args__ = (
        Index(
            "uq_grant_domain_active",
            "domain",
            unique=True,
            postgresql_where=text("active"),
            sqlite_where=text("active"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    grant_id: int = Field(foreign_key="grant.id", index=True)
    # normalised: lowercase punycode, may start with "*.". Indexed for lookups of any row (the
    # partial unique index covers only active ones): conflict checks, the dashboard search.
    domain: str = Field(max_length=253, index=True)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    removed_at: datetime | None = None


class DomainChangeState:
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class DomainChange(SQLModel, table=True):
    """A domain an applicant asked to add, from the portal, to a grant whose tier needs review.

    It waits in the maintainers' queue; approving it adds the domain through bot.access.grants.
    (Removals and changes on auto-approved tiers are applied at once and leave only audit rows.)
    """

    __tablename__ = "domain_change"

    id: int | None = Field(default=None, primary_key=True)
    grant_id: int = Field(foreign_key="grant.id", index=True)
    domain: str = Field(max_length=253)  # normalised like GrantDomain.domain
    state: str = Field(default=DomainChangeState.PENDING, max_length=16, index=True)
    requested_by: str = Field(max_length=64)
    requested_by_id: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None
    decided_by: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class KeyKind:
    SECRET = "secret"  # noqa: S105 - a kind name, not a password
    PUBLISHABLE = "publishable"


class ApiKey(SQLModel, table=True):
    """A credential of a grant. Only its SHA-256 is stored; the plaintext is shown once."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    grant_id: int = Field(foreign_key="grant.id", index=True)
    kind: str = Field(max_length=16)
    sha256: str = Field(max_length=64, unique=True)
    display: str = Field(max_length=32)  # bk_sk_AbC1…wxYz
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = Field(default=None, max_length=200)
    created_by: str | None = Field(default=None, max_length=64)


# --------------------------------------------------------------------------------------------
# Audit trail and the allowlist version
# --------------------------------------------------------------------------------------------


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=64)  # GitHub login, "system", or "cli:<user>"
    action: str = Field(max_length=64, index=True)  # e.g. request.approved, grant.revoked, key.claimed
    request_id: int | None = Field(default=None, index=True)
    grant_id: int | None = Field(default=None, index=True)
    subject: str | None = Field(default=None, max_length=200)  # human-readable target
    source: str | None = Field(default=None, max_length=300)  # comment URL, delivery id, "cli", "dashboard"
    details: dict[str, Any] = Field(default_factory=dict, sa_column=_json_column())
    # Keys that make a side effect happen once (e.g. "approve:<request id>"); see bot.core.audit.
    idempotency_key: str | None = Field(default=None, max_length=200, unique=True)


class AllowlistCounter(SQLModel, table=True):
    """One row: the current allowlist version. Bumped with UPDATE … RETURNING so bumps serialise
    (the row lock is held until commit) and versions become visible in increasing order."""

    __tablename__ = "allowlist_counter"

    id: int = Field(default=1, primary_key=True)
    version: int = 0
    # The allowlist epoch (issue 14): `<start seconds>.<random>`, set by `beekeeper allowlist
    # new-epoch` after a restore lowered `version`; gateways accept a lower version only in a newer
    # epoch. None: no epoch started yet (the oldest).
    epoch: str | None = Field(default=None, max_length=32)


class AllowlistChange(SQLModel, table=True):
    """Which grant changed in which version: the source of `?since=` deltas."""

    __tablename__ = "allowlist_change"

    id: int | None = Field(default=None, primary_key=True)
    version: int = Field(index=True)
    grant_id: int = Field(index=True)
    app_id: str = Field(max_length=64)
    change: str = Field(max_length=32)  # created, tier, revoked, key, domain
    at: datetime = Field(default_factory=utcnow)


class Gateway(SQLModel, table=True):
    __tablename__ = "gateway"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    sha256: str = Field(max_length=64, unique=True)
    display: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    last_pull_at: datetime | None = None
    last_version: int | None = None
    pull_count: int = 0


class SigningKey(SQLModel, table=True):
    """Ed25519 keys that sign the allowlist. The private half never leaves the database."""

    __tablename__ = "signing_key"

    id: int | None = Field(default=None, primary_key=True)
    kid: str = Field(max_length=64, unique=True)
    private_pem: str = Field(sa_column=Column(Text, nullable=False))
    public_jwk: dict[str, Any] = Field(default_factory=dict, sa_column=_json_column())
    created_at: datetime = Field(default_factory=utcnow)
    active: bool = True
    retired_at: datetime | None = None  # stays in the JWKS until retired_at + grace


class Installation(SQLModel, table=True):
    """Installations seen through webhooks, so reconcile and doctor know where the app lives."""

    __tablename__ = "installation"

    id: int = Field(primary_key=True, sa_type=BigInteger)  # GitHub's installation id
    account_login: str = Field(max_length=64)
    repositories: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    active: bool = True
    updated_at: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------------------------
# Identity: policy logins resolved to numeric ids (bot.github.identity)
# --------------------------------------------------------------------------------------------


class PolicyLogin(SQLModel, table=True):
    """A login named in the policy, with the numeric id it belonged to when first resolved. The
    id is kept: whoever takes the login over later (a recycled login) is a different person."""

    __tablename__ = "policy_login"

    login: str = Field(primary_key=True, max_length=64)  # lower-cased
    user_id: int = Field(sa_type=BigInteger)
    resolved_at: datetime = Field(default_factory=utcnow)
# Sign-in sessions, the shared session key, self-service serialisation, domain proof (issue 14)
# --------------------------------------------------------------------------------------------


class SessionGeneration(SQLModel, table=True):
    """Per-user session generation (bot.access.sessions). A session cookie carries the generation it was
    issued at; logout and key changes bump it, so an older cookie is treated as signed out."""

    __tablename__ = "session_generation"

    github_user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    generation: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class InstanceSecret(SQLModel, table=True):
    """Secrets Beekeeper generates for itself and shares between processes, e.g. the session
    key when BEEKEEPER_SECRET_KEY is unset. Written once (insert if absent), then only read."""

    __tablename__ = "instance_secret"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class SelfServiceOwner(SQLModel, table=True):
    """One row per account that used self-service, locked (FOR UPDATE) while a self-service
    grant is made, so two requests of one account queue instead of both passing the checks."""

    __tablename__ = "self_service_owner"

    github_user_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    grants_created: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class DomainProofState:
    PENDING = "pending"      # waiting for the DNS record or the file
    VERIFIED = "verified"    # proven; the domain went into the grant (or its review)
    WITHDRAWN = "withdrawn"  # the owner gave up on it


class DomainProof(SQLModel, table=True):
    """A domain an applicant asked for on a tier that needs proof of control (bot.access.domain_proof).
    It enters the grant only once the DNS TXT record or the well-known file shows `token`."""

    __tablename__ = "domain_proof"

    id: int | None = Field(default=None, primary_key=True)
    grant_id: int = Field(foreign_key="grant.id", index=True)
    github_user_id: int = Field(sa_type=BigInteger, index=True)
    domain: str = Field(max_length=253)  # normalised like GrantDomain.domain, may start with "*."
    token: str = Field(max_length=64)
    state: str = Field(default=DomainProofState.PENDING, max_length=16, index=True)
    method: str | None = Field(default=None, max_length=8)  # dns | http, once verified
    created_at: datetime = Field(default_factory=utcnow)
    checked_at: datetime | None = None
    verified_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
class AppWebhook(SQLModel, table=True):
    """The app's own webhook (a GitHub App has exactly one), learned from its signed `ping`:
    deliveries from any other hook id are refused by the intake (migration 0003d)."""

    __tablename__ = "app_webhook"

    app_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    hook_id: int = Field(sa_type=BigInteger)
    recorded_at: datetime = Field(default_factory=utcnow)
# Dashboard overview (issue 20): hourly gateway pulls, indexes for the overview's aggregates
# --------------------------------------------------------------------------------------------


class GatewayPullHour(SQLModel, table=True):
    """Pulls of one gateway in one clock hour (UTC), and the highest version it held then.

    Written with the gateway row's pull figures (bot.allowlist.gateways.PullRecorder.flush); rows older
    than PULL_HOURS_KEPT_DAYS are deleted as new hours start. Feeds the overview's pulls per hour."""

    __tablename__ = "gateway_pull_hour"

    gateway_id: int = Field(primary_key=True)
    hour: datetime = Field(primary_key=True, index=True)  # truncated to the hour
    pulls: int = 0
    version: int | None = None


# The overview groups rows by week, day or hour over a recent window: these indexes let each
# query read only the window, most from the index alone (bot.web.overview; benchmarks/dashboard.py).
_audit, _request, _grant, _delivery = (AuditEvent.__table__.c, AccessRequest.__table__.c, Grant.__table__.c,
                                       Delivery.__table__.c)
Index("ix_audit_event_action_at", _audit.action, _audit.at, _audit.request_id, _audit.grant_id)
Index("ix_access_request_created_state_repo", _request.created_at, _request.state, _request.repo)
Index("ix_grant_status_tier_repo", _grant.status, _grant.tier, _grant.repo)
Index("ix_grant_created_tier_status_repo", _grant.created_at, _grant.tier, _grant.status, _grant.repo)
Index("ix_grant_revoked_at", _grant.revoked_at)
Index("ix_delivery_received_status_attempts", _delivery.received_at, _delivery.status, _delivery.attempts)
Index("ix_allowlist_change_at", AllowlistChange.__table__.c.at)
