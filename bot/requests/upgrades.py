"""Upgrades, downgrades and domain additions of existing grants.

A request for an app its applicant already holds is not a new grant: it changes the existing
one. The request is matched to the grant by the owner's **numeric** GitHub id (logins can be
renamed) and the app id it names — or, when the applicant left the app id for Beekeeper to
propose, by a domain the grant already holds. Someone else's app id or domain stays a
conflict (worded without naming the holder: maintainers see who in the dashboard).

- The checks (bot.rules.checks.run_checks) call `annotate`: the report gets an "upgrade" result at
  the top ("Upgrade of demo-app: flower → nectar; domains: +api.demo-app.org") with the current
  grant, the app id is not reported as "taken" or "already yours", the applicant's existing
  access to that grant is not a warning, and what the grant already has (its domains) is not
  checked again. A request that changes nothing is an error.
- `/approve` (bot.requests.applications.approve) calls `approve_upgrade`: the grant keeps its id and its
  keys; its tier changes and the new domains are added (one audit row per change, one allowlist
  bump for all of them); the new issue is closed with a comment linking the grant's issue,
  which gets a comment linking back (and is closed if it was still open); both issues' labels
  show the new tier. `/reject` does nothing to the grant. A downgrade is the same path.
- `apply_changes` is the one place that changes a grant's tier and adds domains in one step;
  the portal's self-service upgrade and `beekeeper grants import` use it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bot.access import grants
from bot.allowlist import versioning
from bot.core import audit
from bot.core.clock import utcnow
from bot.core.config import Policy
from bot.core.models import AccessRequest, Grant, GrantDomain, GrantStatus, RequestState

if TYPE_CHECKING:
    from bot.intake.router import Context
    from bot.rules.checks import CheckReport

UPGRADE = "upgrade"  # the CheckResult name of the report's upgrade section
UP, DOWN, DOMAINS, NONE = "upgrade", "downgrade", "domains", "none"


# --------------------------------------------------------------------------------------------
# Which grant a request changes
# --------------------------------------------------------------------------------------------


def find_target(session: Session, owner_id: int, app_id: str | None, domains: list[str] | None = None, *,
                by_domain: bool = True) -> Grant | None:
    """The active grant of `owner_id` this request is about: the one with this app id, else
    (with `by_domain`) the first one holding one of `domains`. None when the app id belongs to
    somebody else or to a revoked grant: that is a conflict or a new app, never an upgrade."""
    if app_id:
        holder = grants.app_id_holder(session, app_id)
        if holder is not None:
            if holder.github_user_id == owner_id and holder.status == GrantStatus.ACTIVE:
                return holder
            return None
    wanted = sorted({d for d in domains or [] if d})
    if not by_domain or not wanted:
        return None
    return session.exec(
        select(Grant).join(GrantDomain, GrantDomain.grant_id == Grant.id)
        .where(GrantDomain.domain.in_(wanted), GrantDomain.active == True,  # noqa: E712
               Grant.github_user_id == owner_id, Grant.status == GrantStatus.ACTIVE)
        .order_by(Grant.id)
    ).first()


@dataclass
class Change:
    """What a request would change on a grant."""

    grant: Grant
    from_tier: str
    to_tier: str
    current: list[str]  # the grant's active domains now
    added: list[str] = field(default_factory=list)

    @property
    def tier_changes(self) -> bool:
        return self.from_tier != self.to_tier

    def direction(self, policy: Policy) -> str:
        if self.tier_changes:
            old, new = policy.tier(self.from_tier), policy.tier(self.to_tier)
            if old is not None and new is not None and new.rank < old.rank:
                return DOWN
            return UP
        return DOMAINS if self.added else NONE

    def summary(self, policy: Policy) -> str:
        """"Upgrade of demo-app: flower → nectar; domains: +api.demo-app.org" (plain text)."""
        return summary_text(self.direction(policy), self.grant.app_id, self.from_tier, self.to_tier, self.added)

    def summary_markdown(self, policy: Policy):
        return summary_markdown(self.direction(policy), self.grant.app_id, self.from_tier, self.to_tier, self.added)


_TITLES = {UP: "Upgrade", DOWN: "Downgrade", DOMAINS: "More domains", NONE: "No change"}


def summary_text(direction: str, app_id: str, from_tier: str, to_tier: str, added: list[str]) -> str:
    parts = [f"{from_tier} → {to_tier}" if from_tier != to_tier else f"tier {to_tier} (unchanged)"]
    if added:
        parts.append("domains: " + ", ".join(f"+{d}" for d in added))
    return f"{_TITLES.get(direction, 'Change')} of {app_id}: " + "; ".join(parts)


def summary_markdown(direction: str, app_id: str, from_tier: str, to_tier: str, added: list[str], *,
                     nothing: bool = False):
    """The same sentence for a comment: app id, tiers and domains as code, everything else escaped."""
    from bot.core.comments import Trusted
    from bot.requests.outcomes import code

    parts = [f"{code(from_tier)} → {code(to_tier)}" if from_tier != to_tier else f"tier {code(to_tier)} (unchanged)"]
    if added:
        parts.append("domains: " + ", ".join(f"+{code(d)}" for d in added))
    tail = ": this request changes nothing" if nothing else ""
    return Trusted(f"{_TITLES.get(direction, 'Change')} of {code(app_id)}: " + "; ".join(parts) + tail)


def plan(session: Session, grant: Grant, tier: str | None, domains: list[str] | None) -> Change:
    current = grants.active_domains(session, grant)
    added = [d for d in dict.fromkeys(domains or []) if d and d not in current]
    return Change(grant, grant.tier, (tier or grant.tier), current, added)


def linked_requests(session: Session, grant: Grant) -> list[AccessRequest]:
    """The approved requests behind a grant: the one that created it and the upgrades."""
    rows = session.exec(select(AccessRequest).where(AccessRequest.upgrade_grant_id == grant.id)
                        .order_by(AccessRequest.id)).all()
    first = session.get(AccessRequest, grant.request_id) if grant.request_id else None
    return ([first] if first is not None else []) + [r for r in rows if first is None or r.id != first.id]


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def annotate(session: Session, report: CheckReport, policy: Policy, applicant_id: int) -> CheckReport:
    """Turn the report of a request for an app the applicant already holds into an upgrade
    report (see the module's docstring). Other reports are returned unchanged."""
    from bot.rules.checks import ERROR, OK, CheckResult

    normalized = report.normalized
    if not normalized:
        return report
    referrer = normalized.get("referrer")
    proposed = bool(normalized.get("referrer_proposed"))
    target = find_target(session, applicant_id, None if proposed else referrer, normalized.get("domains") or [],
                         by_domain=proposed or not referrer)
    if target is None and proposed and referrer:
        target = find_target(session, applicant_id, referrer, by_domain=False)
    if target is None:
        return report
    change = plan(session, target, normalized.get("tier"), normalized.get("domains") or [])
    kept = set(change.current)
    results: list[CheckResult] = []
    for result in report.results:
        data = result.data or {}
        if result.name == "app id" and result.status != ERROR:
            result = CheckResult(OK, "app id", f"{target.app_id}: yours, this request changes it",
                                 data={"referrer": target.app_id, "proposed": False, "grant_id": target.id})
        elif result.name == "existing access" and data.get("grant_id") == target.id:
            continue  # the grant this request is about
        elif (result.name == "domains" and data.get("domain") in kept and result.status != ERROR
              and not result.conflict):
            continue  # the grant has this domain already: not checked again
        results.append(result)
    age_days = max(0, (utcnow() - _aware(target.created_at)).days) if target.created_at else None
    data: dict[str, Any] = {
        "grant_id": target.id, "app_id": target.app_id, "from": change.from_tier, "to": change.to_tier,
        "direction": change.direction(policy), "added": change.added, "domains": change.current,
        "created_at": _aware(target.created_at).isoformat() if target.created_at else None, "age_days": age_days,
        "live_keys": _live_keys(session, target),
    }
    ref = f"{target.repo}#{target.issue_number}" if target.repo and target.issue_number else None
    # Nothing to change (same tier, no new domain) is an error, unless the tier itself is missing
    # or wrong: the tier check says so already.
    data["nothing"] = change.direction(policy) == NONE and bool(normalized.get("tier"))
    if data["nothing"]:
        summary = CheckResult(ERROR, UPGRADE, change.summary(policy) + ": this request changes nothing",
                              "Ask for another tier or add a domain, or withdraw this request with /withdraw.",
                              ref=ref, data=data)
    else:
        summary = CheckResult(OK, UPGRADE, change.summary(policy), ref=ref, data=data)
    report.results = [summary, *results]
    normalized["referrer"] = target.app_id
    normalized["referrer_proposed"] = False
    normalized["upgrade_of"] = target.id
    return report


def _live_keys(session: Session, grant: Grant) -> int:
    """How many keys of the grant work now (Beekeeper does not see request traffic: gateways do)."""
    from sqlalchemy import func

    from bot.core.models import ApiKey

    now = utcnow()
    return int(session.exec(select(func.count()).select_from(ApiKey).where(
        ApiKey.grant_id == grant.id, ApiKey.revoked_at == None,  # noqa: E711
        (ApiKey.expires_at == None) | (ApiKey.expires_at > now))).one())  # noqa: E711


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def status_view(results: list) -> tuple[dict | None, list]:
    """For the status comment: the upgrade section (or None) and the other results."""
    found = next((r for r in results if r.name == UPGRADE), None)
    if found is None:
        return None, results
    data = found.data or {}
    since = None
    if data.get("created_at"):
        since = str(data["created_at"])[:10]
        if data.get("age_days") is not None:
            since += f" ({data['age_days']} days ago)"
    import re

    from bot.core.comments import Trusted
    from bot.requests.outcomes import code

    ref = found.ref if found.ref and re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#[0-9]+", found.ref) else None
    view = {
        "title": summary_markdown(str(data.get("direction")), str(data.get("app_id")), str(data.get("from")),
                                  str(data.get("to")), [str(d) for d in data.get("added") or []],
                                  nothing=bool(data.get("nothing"))),
        "ok": found.status != "error",
        "app_id": code(str(data.get("app_id"))),
        "tier": code(str(data.get("from"))),
        "domains": [code(str(d)) for d in data.get("domains") or []],
        "since": since,
        "live_keys": data.get("live_keys"),
        "ref": Trusted(ref) if ref else None,
        "hint": found.hint if found.status == "error" else None,
    }
    return view, [r for r in results if r is not found]


# --------------------------------------------------------------------------------------------
# Conflicts, worded for the public
# --------------------------------------------------------------------------------------------


def public_conflicts(session: Session, owner_id: int | None, app_id: str | None, domains: list[str], *,
                     exclude_grant_id: int | None = None) -> list[str]:
    """Why a grant with this app id and these domains cannot be made or changed, worded for a
    public issue: the holder is never named (maintainers see it in the dashboard)."""
    from bot.rules.checks import domain_conflicts

    problems = []
    if app_id:
        holder = grants.app_id_holder(session, app_id)
        if holder is not None and holder.id != exclude_grant_id:
            if holder.github_user_id != owner_id:
                problems.append(f"The app id {app_id} belongs to another GitHub account's app: only its owner can "
                                "ask to change it, and app ids are never reused. Maintainers see who holds it in "
                                "the dashboard.")
            elif holder.status != GrantStatus.ACTIVE:
                problems.append(f"The app id {app_id} was used by a grant that is now {holder.status}; app ids are "
                                "never reused: choose another one.")
    seen = set()
    for domain in domains:
        holders = grants.domain_holders(session, [domain], exclude_grant_id=exclude_grant_id)
        others = [g for g in holders.values() if g.github_user_id != owner_id]
        if owner_id is not None:
            others += [g for _, g in domain_conflicts(session, domain, owner_id) if g.id != exclude_grant_id]
        if others and domain not in seen:
            seen.add(domain)
            problems.append(f"The domain {domain} is already in another GitHub account's active grant. "
                            "Maintainers see which in the dashboard.")
        elif holders and domain not in seen:
            seen.add(domain)
            held = next(iter(holders.values()))
            problems.append(f"The domain {domain} is already in your grant {held.app_id}: remove it there first, "
                            "or ask for it on that app.")
    return problems


# --------------------------------------------------------------------------------------------
# Changing the grant
# --------------------------------------------------------------------------------------------


def apply_changes(session: Session, grant: Grant, *, tier: str | None, add_domains: list[str], actor: str,
                  source: str | None, request_id: int | None = None, details: dict | None = None) -> list[str]:
    """Move an active grant to `tier` and bind `add_domains` in one step: an audit row per change,
    one allowlist version for all of them; keys stay as they are. Returns what changed
    ("tier", "domain:<name>"…). Raises grants.GrantConflict when a domain is held by another
    grant (nothing changed then) and grants.GrantNotActive for a revoked grant."""
    if grant.status != GrantStatus.ACTIVE:
        raise grants.GrantNotActive(f"grant #{grant.id} ({grant.app_id}) is {grant.status}")
    current = set(grants.active_domains(session, grant))
    added = [d for d in dict.fromkeys(d.strip().lower() for d in add_domains if d and d.strip()) if d not in current]
    problems = public_conflicts(session, grant.github_user_id, None, added, exclude_grant_id=grant.id)
    if problems:
        raise grants.GrantConflict(" ".join(problems), kind="domain", values=added)
    changed: list[str] = []
    extra = dict(details or {})
    now = utcnow()
    try:
        with session.begin_nested():
            for domain in added:
                session.add(GrantDomain(grant_id=grant.id, domain=domain, active=True, created_at=now))
            session.flush()
    except IntegrityError:
        raise grants.GrantConflict(f"A domain ({', '.join(added)}) was just taken by another grant.", kind="race",
                                   values=added) from None
    if tier and tier != grant.tier:
        previous = grant.tier
        grant.tier = tier
        session.add(grant)
        audit.record(session, actor[:64], "grant.tier_changed", request_id=request_id or grant.request_id,
                     grant_id=grant.id, subject=grant.app_id, source=source,
                     details={"from": previous, "to": tier, **extra})
        changed.append("tier")
    for domain in added:
        audit.record(session, actor[:64], "grant.domain_added", request_id=request_id or grant.request_id,
                     grant_id=grant.id, subject=grant.app_id, source=source, details={"domain": domain, **extra})
        changed.append(f"domain:{domain}")
    if changed:
        versioning.bump(session, grant, "tier" if "tier" in changed else "domain")
    return changed


def sync_linked_labels(ctx: Context, grant: Grant, published: AccessRequest | None) -> None:
    """After a tier change published on one issue (/tier), the grant's other issues' labels
    follow the new tier too."""
    from bot.requests.labels import desired_labels, issue_label_names, sync_labels

    others = [r for r in linked_requests(ctx.session, grant)
              if (published is None or r.id != published.id) and r.state == RequestState.APPROVED]
    if not others:
        return  # no GitHub call (a grant without issues may be changed where no installation is known)
    gh = ctx.github
    for other in others:
        issue = gh.get_issue(other.repo, other.issue_number)
        sync_labels(gh, ctx.policy, other.repo, other.issue_number, issue_label_names(issue),
                    desired_labels(ctx.policy, RequestState.APPROVED, grant.tier))


# --------------------------------------------------------------------------------------------
# Self-service: an owner moves their grant to a higher automatic tier at once
# --------------------------------------------------------------------------------------------


class Refused(Exception):
    """A self-service upgrade was refused; the message says why (for the page)."""


def self_service_tiers(policy: Policy, grant: Grant) -> list:
    """The automatic tiers above the grant's tier, which its owner may move to without review."""
    current = policy.tier(grant.tier)
    if grant.status != GrantStatus.ACTIVE or current is None or not policy.self_service.enabled:
        return []
    return [t for t in sorted(policy.tiers, key=lambda t: t.rank) if t.auto_approve and t.rank > current.rank]


def self_service_upgrade(session: Session, policy: Policy, grant: Grant, owner_id: int, tier: str, actor: str, *,
                         source: str) -> list[str]:
    """Move the owner's grant to an automatic tier above its own; Refused otherwise."""
    if grant.github_user_id != owner_id:
        raise Refused("There is no such grant among yours.")
    wanted = policy.tier(tier)
    if wanted is None or wanted.name not in {t.name for t in self_service_tiers(policy, grant)}:
        raise Refused("That tier needs a maintainer's review: use “Request an upgrade” to ask for it.")
    return apply_changes(session, grant, tier=wanted.name, add_domains=[], actor=actor, source=source,
                         details={"self_service": True})
