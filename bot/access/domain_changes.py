"""Adding and removing a grant's domains from the portal, with review where the tier needs it.

The choice, for tiers that are not approved automatically (`auto_approve: false`): a domain the
applicant adds does not go live; it becomes a pending `DomainChange` row that waits in the
maintainers' review queue (with an audit row `domain.change_requested`, and a comment on the
grant's issue when it has one), and a maintainer adds it or refuses it from the dashboard.
A domain flagged by the checks (a look-alike) waits for review on any tier.
Removing a domain only narrows access, so it applies at once on every tier.

Every domain is re-checked with bot.rules.checks (syntax, Public Suffix List, conflicts) when asked for
and again when a maintainer approves it; bot.access.grants makes the change (audit + allowlist bump).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlmodel import Session, select

from bot.access import grants
from bot.core import audit
from bot.core.clock import utcnow
from bot.core.comments import Trusted, marker, render
from bot.core.config import Policy
from bot.core.models import DomainChange, DomainChangeState, Grant, GrantDomain
from bot.github.identity import same_person
from bot.rules.checks import ERROR, check_domains

PORTAL = "portal"
DASHBOARD = "dashboard"


class Refused(Exception):
    """The change cannot be made; the message says why, for the person who asked."""


@dataclass
class Result:
    status: str  # "added" | "pending" | "removed" | "approved" | "rejected" | "withdrawn"
    domain: str
    change: DomainChange | None = None


def needs_review(policy: Policy, grant: Grant) -> bool:
    tier = policy.tier(grant.tier)
    return tier is None or not tier.auto_approve


def _checked_domain(session: Session, policy: Policy, grant: Grant, raw: str) -> tuple[str, bool]:
    """(normalised domain, flagged) after the issue form's domain checks; Refused with the reason."""
    results = check_domains(session, [raw], grant.github_user_id, policy)
    errors = [r for r in results if r.status == ERROR]
    if errors:
        raise Refused(" ".join(r.message.rstrip(".") + "." for r in errors))
    domain = next((r.data["domains"][0] for r in results if r.data.get("domains")), None)
    if domain is None:
        raise Refused("Please enter a domain, like app.example.com.")
    return domain, any(r.flag for r in results)


def _pending(session: Session, grant: Grant) -> list[DomainChange]:
    return list(session.exec(select(DomainChange).where(DomainChange.grant_id == grant.id,
                                                        DomainChange.state == DomainChangeState.PENDING)).all())


def request_add(session: Session, policy: Policy, grant: Grant, actor: str, actor_id: int, raw: str) -> Result:
    """The owner asks for one more domain: added now, or queued for review. Refused says why."""
    if grant.status != "active":
        raise Refused("This grant is revoked; its domains can no longer change.")
    domain, flagged = _checked_domain(session, policy, grant, raw)
    current = grants.active_domains(session, grant)
    pending = _pending(session, grant)
    if domain in current:
        raise Refused(f"{domain} is already one of this grant's domains.")
    if domain in {c.domain for c in pending}:
        raise Refused(f"{domain} is already waiting for a maintainer's review.")
    if len(current) + len(pending) >= policy.validation.max_domains:
        raise Refused(f"A grant can have at most {policy.validation.max_domains} domains; remove one first, "
                      "or use a wildcard such as *.example.com.")
    if needs_review(policy, grant) or flagged:
        change = DomainChange(grant_id=grant.id, domain=domain, requested_by=actor, requested_by_id=actor_id,
                              created_at=utcnow())
        session.add(change)
        session.flush()
        audit.record(session, actor, "domain.change_requested", request_id=grant.request_id, grant_id=grant.id,
                     subject=grant.app_id, source=PORTAL,
                     details={"domain": domain, "change_id": change.id, "flagged": flagged})
        return Result("pending", domain, change)
    try:
        grants.add_domain(session, grant, domain, actor, source=PORTAL)
    except grants.GrantConflict as exc:
        raise Refused(str(exc)) from None
    return Result("added", domain)


def remove(session: Session, grant: Grant, domain_id: int, actor: str) -> Result:
    """The owner drops a domain (applies at once: it only narrows access)."""
    row = session.get(GrantDomain, domain_id)
    if row is None or row.grant_id != grant.id or not row.active:
        raise Refused("That domain is not part of this grant (any more).")
    grants.remove_domain(session, grant, row.domain, actor, source=PORTAL)
    return Result("removed", row.domain)


def _decide(session: Session, change: DomainChange, state: str, actor: str, reason: str | None = None) -> None:
    if change.state != DomainChangeState.PENDING:
        raise Refused(f"This domain request was already {change.state}.")
    change.state = state
    change.decided_at = utcnow()
    change.decided_by = actor
    change.reason = reason
    session.add(change)


def approve(session: Session, policy: Policy, change: DomainChange, actor: str, *, source: str = DASHBOARD,
            actor_id: int | None = None) -> Result:
    """A maintainer adds the waiting domain, after checking it again. Nobody approves a domain
    for their own grant (by numeric id, under the policy's maintainers.forbid_self_approval)."""
    grant = session.get(Grant, change.grant_id)
    if grant is None or grant.status != "active":
        raise Refused("The grant is revoked; the domain cannot be added.")
    if policy.maintainers.forbid_self_approval and (
            same_person(actor_id, grant.github_user_id) or same_person(actor_id, change.requested_by_id)
            or (actor_id is None and actor.lower() == (grant.github_login or "").lower())):
        raise Refused("Nobody can approve a domain for their own grant: another maintainer has to decide.")
    domain, _ = _checked_domain(session, policy, grant, change.domain)
    _decide(session, change, DomainChangeState.APPROVED, actor)
    try:
        grants.add_domain(session, grant, domain, actor, source=source)
    except grants.GrantConflict as exc:
        raise Refused(str(exc)) from None
    audit.record(session, actor, "domain.change_approved", request_id=grant.request_id, grant_id=grant.id,
                 subject=grant.app_id, source=source, details={"domain": domain, "change_id": change.id})
    return Result("approved", domain, change)


def reject(session: Session, change: DomainChange, actor: str, reason: str, *, source: str = DASHBOARD) -> Result:
    grant = session.get(Grant, change.grant_id)
    _decide(session, change, DomainChangeState.REJECTED, actor, reason or None)
    audit.record(session, actor, "domain.change_rejected", request_id=grant.request_id if grant else None,
                 grant_id=change.grant_id, subject=grant.app_id if grant else None, source=source,
                 details={"domain": change.domain, "change_id": change.id, "reason": reason})
    return Result("rejected", change.domain, change)


def withdraw(session: Session, change: DomainChange, actor: str) -> Result:
    _decide(session, change, DomainChangeState.WITHDRAWN, actor)
    audit.record(session, actor, "domain.change_withdrawn", grant_id=change.grant_id, source=PORTAL,
                 details={"domain": change.domain, "change_id": change.id})
    return Result("withdrawn", change.domain, change)


_PLAIN = re.compile(r"^[a-z0-9*.-]{1,253}$")


def _plain(name: str) -> str:
    """Normalised domains and app ids hold only [a-z0-9*.-]: printed as they are (inside a code
    span a backslash escape would show). Anything else is escaped as applicant text."""
    return Trusted(name) if _PLAIN.match(name or "") else name


def issue_comment(grant: Grant, result: Result, actor: str) -> tuple[str, str] | None:
    """(marker, body) of the comment that tells the grant's issue about a domain change, or None
    when the grant has no issue or the change needs no word there."""
    if not (grant.repo and grant.issue_number) or result.change is None:
        return None
    key = f"{result.change.id}:{result.status}"
    body = render("portal_domain_change.md", marker=Trusted(marker("domain-change", key)),
                  status=result.status, domain=_plain(result.domain), app_id=_plain(grant.app_id),
                  actor=actor, reason=result.change.reason or "")
    return marker("domain-change", key), body
