"""The grant lifecycle: create, change tier, revoke, add and remove domains. Nothing is deleted.

A grant is bound to the applicant's numeric GitHub user id (logins can be renamed). Its public
app id is unique among all grants, ever; each domain is unique among active grants — enforced
by the database (a unique index on grant.app_id and a partial unique index on active
grant_domain rows), so two approvals racing in two workers cannot both win. The checks below
exist only to give a clear message; an IntegrityError from the database says the same thing.

Every change writes an audit row (who, what, when, from which comment or delivery) and bumps the
allowlist version so gateways see it (bot.allowlist.versioning).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bot.access import sessions
from bot.allowlist import versioning
from bot.core import audit
from bot.core.clock import utcnow
from bot.core.models import AccessRequest, ApiKey, Grant, GrantDomain, GrantStatus


class GrantConflict(Exception):
    """An app id or a domain is already taken; the message names it and who holds it."""

    def __init__(self, message: str, *, kind: str, values: Iterable[str] = ()):
        super().__init__(message)
        self.kind = kind  # "app_id" | "domain"
        self.values = list(values)


class GrantNotActive(Exception):
    """A change that needs an active grant was asked of a revoked one."""


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def find_grant(session: Session, ref: str | int) -> Grant | None:
    """A grant by numeric id or by app id."""
    text = str(ref).strip()
    if text.isdigit():
        grant = session.get(Grant, int(text))
        if grant is not None:
            return grant
    return session.exec(select(Grant).where(Grant.app_id == text.lower())).first()


def grant_for_request(session: Session, request: AccessRequest) -> Grant | None:
    """The grant an approved request produced (the newest, should there ever be several)."""
    if request.id is None:
        return None
    grant = session.exec(select(Grant).where(Grant.request_id == request.id).order_by(Grant.id.desc())).first()
    if grant is None and request.upgrade_grant_id is not None:
        grant = session.get(Grant, request.upgrade_grant_id)  # an approved upgrade changed this grant
    return grant


def active_domains(session: Session, grant: Grant) -> list[str]:
    rows = session.exec(
        select(GrantDomain.domain).where(GrantDomain.grant_id == grant.id, GrantDomain.active == True)  # noqa: E712
        .order_by(GrantDomain.id)
    ).all()
    return list(rows)


def domain_holders(session: Session, domains: Iterable[str], *, exclude_grant_id: int | None = None
                   ) -> dict[str, Grant]:
    """Which active grant holds each of `domains` now (domains nobody holds are left out)."""
    wanted = sorted({d for d in domains if d})
    if not wanted:
        return {}
    statement = (
        select(GrantDomain, Grant).join(Grant, Grant.id == GrantDomain.grant_id)
        .where(GrantDomain.domain.in_(wanted), GrantDomain.active == True)  # noqa: E712
    )
    holders = {}
    for row, grant in session.exec(statement).all():
        if grant.id != exclude_grant_id:
            holders[row.domain] = grant
    return holders


def app_id_holder(session: Session, app_id: str) -> Grant | None:
    return session.exec(select(Grant).where(Grant.app_id == app_id.lower())).first()


def conflicts(session: Session, app_id: str | None, domains: Iterable[str], *,
              exclude_grant_id: int | None = None) -> list[str]:
    """Human-readable reasons a grant with this app id and these domains cannot be created."""
    problems = []
    if app_id:
        holder = app_id_holder(session, app_id)
        if holder is not None and holder.id != exclude_grant_id:
            problems.append(f"The app id {app_id} already belongs to grant #{holder.id} ({holder.github_login}, "
                            f"{holder.status}); app ids are never reused.")
    for domain, holder in sorted(domain_holders(session, domains, exclude_grant_id=exclude_grant_id).items()):
        problems.append(f"The domain {domain} is already in active grant #{holder.id} ({holder.app_id}).")
    return problems


# --------------------------------------------------------------------------------------------
# Changing
# --------------------------------------------------------------------------------------------


def _grant_origin(source: str | None) -> str:
    if source and source.startswith("cli"):
        return "cli"
    return "issue"


def create_grant(session: Session, request: AccessRequest | None, tier: str, approver: str, *, app_id: str,
                 domains: Iterable[str], source: str | None, origin: str | None = None,
                 github_user_id: int | None = None, github_login: str | None = None) -> Grant:
    """A new active grant for the request's applicant. Raises GrantConflict when the app id or a
    domain is taken (checked first for a clear message, and enforced by the database for races).

    `source` is what the audit row points at (comment URL, delivery id, "cli"); `origin` is the
    kind stored on the grant (issue, self_service, cli). Without a request (self-service) the
    owner is given by `github_user_id` and `github_login`.
    """
    app_id = app_id.strip().lower()
    domains = list(dict.fromkeys(d.strip().lower() for d in domains if d and d.strip()))
    problems = conflicts(session, app_id, domains)
    if problems:
        kind = "app_id" if problems[0].startswith("The app id") else "domain"
        raise GrantConflict(" ".join(problems), kind=kind, values=[app_id] if kind == "app_id" else domains)
    owner_id = request.applicant_id if request is not None else github_user_id
    owner_login = request.applicant_login if request is not None else github_login
    if owner_id is None or not owner_login:
        raise ValueError("a grant needs its owner's GitHub id and login")
    now = utcnow()
    grant = Grant(
        app_id=app_id, tier=tier, status=GrantStatus.ACTIVE, github_user_id=owner_id, github_login=owner_login,
        request_id=request.id if request is not None else None,
        repo=request.repo if request is not None else None,
        issue_number=request.issue_number if request is not None else None,
        approved_by=approver[:64], source=origin or _grant_origin(source), created_at=now, updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(grant)
            session.flush()
            for domain in domains:
                session.add(GrantDomain(grant_id=grant.id, domain=domain, active=True, created_at=now))
            session.flush()
    except IntegrityError:
        # Another transaction took the app id or a domain between our check and our insert.
        raise GrantConflict(
            f"The app id {app_id} or one of the domains ({', '.join(domains) or 'none'}) was just taken by "
            "another grant.", kind="race", values=[app_id, *domains]) from None
    audit.record(session, approver, "grant.created", request_id=grant.request_id, grant_id=grant.id,
                 subject=app_id, source=source, details={"tier": tier, "domains": domains, "app_id": app_id})
    versioning.bump(session, grant, "created")
    return grant


def _require_active(grant: Grant) -> None:
    if grant.status != GrantStatus.ACTIVE:
        raise GrantNotActive(f"grant #{grant.id} ({grant.app_id}) is {grant.status}")


def set_tier(session: Session, grant: Grant, tier: str, actor: str, *, source: str | None) -> str:
    """Move an active grant to `tier`; returns the previous tier."""
    _require_active(grant)
    previous = grant.tier
    grant.tier = tier
    session.add(grant)
    audit.record(session, actor, "grant.tier_changed", request_id=grant.request_id, grant_id=grant.id,
                 subject=grant.app_id, source=source, details={"from": previous, "to": tier})
    versioning.bump(session, grant, "tier")
    return previous


def revoke_grant(session: Session, grant: Grant, actor: str, reason: str, *, source: str | None) -> Grant:
    """Revoke the grant, its live keys and its domains (rows stay, marked revoked or inactive), so
    the domains are free for another grant and no key of the grant works even outside the allowlist."""
    _require_active(grant)
    now = utcnow()
    grant.status = GrantStatus.REVOKED
    grant.revoked_at = now
    grant.revoke_reason = reason
    grant.claimable = False
    session.add(grant)
    for row in session.exec(select(GrantDomain).where(GrantDomain.grant_id == grant.id,
                                                      GrantDomain.active == True)).all():  # noqa: E712
        row.active = False
        row.removed_at = now
        session.add(row)
    for key in session.exec(select(ApiKey).where(ApiKey.grant_id == grant.id, ApiKey.revoked_at == None)).all():  # noqa: E711
        key.revoked_at = now
        key.revoke_reason = "grant revoked"
        session.add(key)
    audit.record(session, actor, "grant.revoked", request_id=grant.request_id, grant_id=grant.id,
                 subject=grant.app_id, source=source, details={"reason": reason})
    # The owner's rights changed: portal sessions signed in before the revocation end with it.
    sessions.end_sessions(session, grant.github_user_id)
    versioning.bump(session, grant, "revoked")
    return grant


def add_domain(session: Session, grant: Grant, domain: str, actor: str, *, source: str | None) -> GrantDomain:
    """Bind one more (normalised) domain to an active grant; GrantConflict when another holds it."""
    _require_active(grant)
    domain = domain.strip().lower()
    holder = domain_holders(session, [domain]).get(domain)
    if holder is not None:
        if holder.id == grant.id:
            raise GrantConflict(f"The domain {domain} is already in this grant.", kind="domain", values=[domain])
        raise GrantConflict(f"The domain {domain} is already in active grant #{holder.id} ({holder.app_id}).",
                            kind="domain", values=[domain])
    row = GrantDomain(grant_id=grant.id, domain=domain, active=True, created_at=utcnow())
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise GrantConflict(f"The domain {domain} was just taken by another grant.", kind="race",
                            values=[domain]) from None
    audit.record(session, actor, "grant.domain_added", request_id=grant.request_id, grant_id=grant.id,
                 subject=grant.app_id, source=source, details={"domain": domain})
    versioning.bump(session, grant, "domain")
    return row


def remove_domain(session: Session, grant: Grant, domain: str, actor: str, *, source: str | None) -> bool:
    """Unbind a domain (the row stays, inactive); False when the grant did not have it."""
    domain = domain.strip().lower()
    row = session.exec(select(GrantDomain).where(GrantDomain.grant_id == grant.id, GrantDomain.domain == domain,
                                                 GrantDomain.active == True)).first()  # noqa: E712
    if row is None:
        return False
    row.active = False
    row.removed_at = utcnow()
    session.add(row)
    audit.record(session, actor, "grant.domain_removed", request_id=grant.request_id, grant_id=grant.id,
                 subject=grant.app_id, source=source, details={"domain": domain})
    versioning.bump(session, grant, "domain")
    return True
