"""What one GitHub account has: its requests and grants with domains, keys and limits.

Read-only; used by the portal's "My access" page and the dashboard's grant page. Rows are
matched on the numeric GitHub user id, never the login (logins can be renamed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, select

from bot.access import keys
from bot.allowlist.versioning import current_version
from bot.core.config import Policy, Tier
from bot.core.models import AccessRequest, ApiKey, DomainChange, DomainChangeState, Grant, GrantDomain, GrantStatus


@dataclass
class GrantView:
    grant: Grant
    tier: Tier | None
    domains: list[GrantDomain]
    keys: list[ApiKey]
    pending_domains: list[DomainChange] = field(default_factory=list)
    request: AccessRequest | None = None

    @property
    def active(self) -> bool:
        return self.grant.status == GrantStatus.ACTIVE

    @property
    def live_keys(self) -> list[ApiKey]:
        return [k for k in self.keys if keys.is_live(k)]

    @property
    def last_rotated(self) -> datetime | None:
        """When the newest key replaced an older one (None while the grant has had one key)."""
        return self.keys[0].created_at if len(self.keys) > 1 else None


def grant_view(session: Session, policy: Policy, grant: Grant) -> GrantView:
    domains = session.exec(
        select(GrantDomain).where(GrantDomain.grant_id == grant.id, GrantDomain.active == True)  # noqa: E712
        .order_by(GrantDomain.domain)
    ).all()
    pending = session.exec(
        select(DomainChange).where(DomainChange.grant_id == grant.id, DomainChange.state == DomainChangeState.PENDING)
        .order_by(DomainChange.created_at)
    ).all()
    request = session.get(AccessRequest, grant.request_id) if grant.request_id else None
    return GrantView(grant=grant, tier=policy.tier(grant.tier), domains=list(domains),
                     keys=keys.keys_of(session, grant), pending_domains=list(pending), request=request)


@dataclass
class MyAccess:
    requests: list[AccessRequest]
    grants: list[GrantView]
    allowlist_version: int

    @property
    def empty(self) -> bool:
        return not self.requests and not self.grants


def my_access(session: Session, policy: Policy, user_id: int) -> MyAccess:
    requests = session.exec(
        select(AccessRequest).where(AccessRequest.applicant_id == user_id)
        .order_by(AccessRequest.created_at.desc(), AccessRequest.id.desc())
    ).all()
    grants = session.exec(
        select(Grant).where(Grant.github_user_id == user_id)
        .order_by(Grant.status, Grant.created_at.desc(), Grant.id.desc())
    ).all()
    return MyAccess(requests=list(requests), grants=[grant_view(session, policy, g) for g in grants],
                    allowlist_version=current_version(session))


def owned_grant(session: Session, grant_id: int, user_id: int) -> Grant | None:
    """The grant if `user_id` owns it; None otherwise (the caller answers 404, revealing nothing)."""
    grant = session.get(Grant, grant_id)
    return grant if grant is not None and grant.github_user_id == user_id else None
