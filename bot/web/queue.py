"""The maintainers' review queue: open requests with what a decision needs at a glance.

For each open request: its check results (as the checks recorded them), its age, the requested
tier, signals about the applicant (other requests, existing grants; account age when the checks
recorded it) and conflicts found now in the database (a requested domain or app id that an
active grant of somebody else holds). Pending domain additions from the portal wait here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from bot.core.clock import utcnow
from bot.core.models import AccessRequest, DomainChange, DomainChangeState, Grant, GrantStatus, RequestState
from bot.web.pagination import Page, paginate


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def age_text(since: datetime, now: datetime | None = None) -> str:
    """"3 days", "5 hours", "12 minutes": how long something has waited, for people."""
    delta = (now or utcnow()) - _aware(since)
    if delta >= timedelta(days=2):
        return f"{delta.days} days"
    hours = int(delta.total_seconds() // 3600)
    if hours >= 2:
        return f"{hours} hours"
    minutes = max(0, int(delta.total_seconds() // 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


@dataclass(frozen=True)
class Conflict:
    kind: str  # "domain" or "app id"
    value: str
    app_id: str
    owner: str


@dataclass(frozen=True)
class CheckLine:
    """One recorded check result, in the shape pages print whatever the checks stored."""

    name: str
    status: str  # ok | warn | fail | info
    message: str


def check_lines(results: list[dict[str, Any]] | None) -> list[CheckLine]:
    lines = []
    for item in results or []:
        if not isinstance(item, dict):
            continue
        name = str(item.get("label") or item.get("name") or item.get("check") or item.get("id") or "check")
        raw = item.get("status", item.get("outcome", item.get("ok")))
        if raw is True:
            status = "ok"
        elif raw is False:
            status = "fail"
        else:
            status = {"pass": "ok", "passed": "ok", "success": "ok", "error": "fail", "failed": "fail",
                      "warning": "warn"}.get(str(raw).lower(), str(raw).lower() or "info")
        message = str(item.get("message") or item.get("detail") or item.get("summary") or "")
        lines.append(CheckLine(name=name, status=status, message=message))
    return lines


def requested_domains(request: AccessRequest) -> list[str]:
    """The domains the request asks for, normalised the way grants store them (invalid ones,
    which the checks already report, are left out)."""
    from bot.rules.checks import normalize_domain
    from bot.rules.forms import split_list

    raw = (request.values or {}).get("domains") or []
    if isinstance(raw, str):
        raw = split_list(raw)
    found = []
    for value in raw:
        domain, _problem = normalize_domain(str(value))
        if domain and domain not in found:
            found.append(domain)
    return found


def conflicts_for(session: Session, owner_id: int, domains: list[str], app_id: str | None) -> list[Conflict]:
    """Domains (wildcards included, by bot.rules.checks' rules) and the app id that an active grant of
    another account holds right now: checks run when the issue changed, this is live."""
    from bot.rules.checks import domain_conflicts, referrer_grant

    found: list[Conflict] = []
    for domain in domains:
        for held, grant in domain_conflicts(session, domain, owner_id):
            found.append(Conflict("domain", domain if held.domain == domain else f"{domain} (as {held.domain})",
                                  grant.app_id, grant.github_login))
    if app_id:
        grant = referrer_grant(session, app_id.lower())
        if grant is not None and grant.github_user_id != owner_id:
            found.append(Conflict("app id", app_id.lower(), grant.app_id, grant.github_login))
    return found


@dataclass
class QueueItem:
    request: AccessRequest
    age: str
    checks: list[CheckLine]
    other_requests: list[AccessRequest]
    existing_grants: list[Grant]
    conflicts: list[Conflict]
    signals: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_checks(self) -> list[CheckLine]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def needs_force(self) -> bool:
        """Approving needs "approve despite failed checks" (the state machine's rule: the checks
        must have run and passed), or the maintainer should see the conflicts first."""
        return bool(not self.request.checks_ok or self.failed_checks or self.conflicts)

    @property
    def warnings(self) -> list[CheckLine]:
        return [c for c in self.checks if c.status == "warn"]


def queue_item(session: Session, request: AccessRequest) -> QueueItem:
    others = session.exec(
        select(AccessRequest).where(AccessRequest.applicant_id == request.applicant_id,
                                    AccessRequest.id != request.id).order_by(AccessRequest.created_at.desc())
    ).all()
    grants = session.exec(
        select(Grant).where(Grant.github_user_id == request.applicant_id, Grant.status == GrantStatus.ACTIVE)
    ).all()
    return QueueItem(
        request=request,
        age=age_text(request.created_at),
        checks=check_lines(request.check_results),
        other_requests=list(others),
        existing_grants=list(grants),
        conflicts=conflicts_for(session, request.applicant_id, requested_domains(request), request.referrer),
    )


def open_requests_query(repos: list[str] | None = None, tier: str = "", state: str = ""):
    """Open requests, oldest first (the longest wait is decided first)."""
    statement = select(AccessRequest).where(AccessRequest.state.in_(RequestState.OPEN))
    if repos is not None:
        statement = statement.where(AccessRequest.repo.in_(repos))
    if tier:
        statement = statement.where(AccessRequest.requested_tier == tier)
    if state in RequestState.OPEN:
        statement = statement.where(AccessRequest.state == state)
    return statement.order_by(AccessRequest.created_at, AccessRequest.id)


def review_queue(session: Session, page: int, *, repos: list[str] | None = None, tier: str = "",
                 state: str = "") -> Page:
    """One page of the queue with each request's signals."""
    rows = paginate(session, open_requests_query(repos, tier, state), page)
    return Page(items=[queue_item(session, r) for r in rows.items], number=rows.number,
                per_page=rows.per_page, total=rows.total)


@dataclass
class PendingDomain:
    change: DomainChange
    grant: Grant
    age: str
    conflicts: list[Conflict]


def pending_domain_changes(session: Session) -> list[PendingDomain]:
    rows = session.exec(
        select(DomainChange, Grant).join(Grant, Grant.id == DomainChange.grant_id)
        .where(DomainChange.state == DomainChangeState.PENDING).order_by(DomainChange.created_at)
    ).all()
    return [PendingDomain(change=c, grant=g, age=age_text(c.created_at),
                          conflicts=conflicts_for(session, g.github_user_id, [c.domain], None))
            for c, g in rows]
