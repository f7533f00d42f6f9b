"""Self-service: a signed-in applicant creates a grant on the self-service tier without an issue.

Allowed only when the policy's `self_service.enabled` is on, a self-service tier exists (the
policy's `self_service.tier`, else the lowest auto-approved tier), and the account passes the
applicant checks of bot.checks with nothing flagged: old enough and no active grant (so one
self-service grant per account; anything more goes through the issue form, where a maintainer
can look). An open issue request does not block it: that request is for another app, and the
maintainer deciding it sees the self-service grant among the applicant's signals. The app id
and domains go through the same checks as the issue form; a flagged domain (a look-alike)
needs a maintainer, so it is refused here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session

from bot import grants
from bot.checks import ERROR, OK, check_applicant, check_domains, check_referrer
from bot.config import Policy, Tier
from bot.models import Grant

SOURCE = "portal"  # what audit rows point at
ORIGIN = "self_service"  # Grant.source
OTHER_REQUEST = "other request"  # bot.checks.check_applicant's name for another open request


@dataclass
class Eligibility:
    tier: Tier | None
    reasons: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.tier is not None and not self.reasons


def eligibility(session: Session, gh, policy: Policy, user_id: int, login: str) -> Eligibility:
    """Whether this account may self-serve now, and if not, why (sentences for the page).
    `gh` is an installation client for the account-age lookup (None: the age cannot be checked)."""
    tier = policy.self_service_tier
    if not policy.self_service.enabled:
        return Eligibility(tier, ["Self-service is switched off on this platform."])
    if tier is None:
        return Eligibility(None, ["No tier is offered for self-service on this platform."])
    reasons = []
    if gh is None:
        reasons.append("Your GitHub account could not be checked right now; try again later.")
    for result in check_applicant(gh, session, login, user_id, None, policy):
        if result.name == OTHER_REQUEST:
            continue  # an open issue request is for another app: it does not block this one
        if result.status != OK or result.flag:
            reasons.append(_problem(result))
    return Eligibility(tier, reasons)


@dataclass
class Outcome:
    grant: Grant | None = None
    problems: list[str] = field(default_factory=list)
    ineligible: bool = False  # the account may not self-serve (problems say why); not a form error


def _problem(result) -> str:
    hint = f" {result.hint}" if result.hint else ""
    return f"{result.name.capitalize()}: {result.message.rstrip('.')}.{hint}"


def create(session: Session, gh, policy: Policy, user_id: int, login: str, app_id: str, domains: str) -> Outcome:
    """Check everything again and create the grant, or say what to fix. Never raises on input."""
    allowed = eligibility(session, gh, policy, user_id, login)
    if not allowed.allowed:
        return Outcome(problems=allowed.reasons, ineligible=True)
    if not (app_id or "").strip():
        return Outcome(problems=["App id: please choose one, e.g. freeaichat."])
    problems = []
    referrer = check_referrer(session, app_id, None, user_id, policy)
    if referrer.status == ERROR or referrer.conflict:
        problems.append(_problem(referrer))
    domain_results = check_domains(session, domains, user_id, policy)
    for result in domain_results:
        if result.status == ERROR or result.flag or result.conflict:
            problems.append(_problem(result))
    if problems:
        return Outcome(problems=problems)
    normalized = next((r.data["domains"] for r in domain_results if "domains" in r.data), [])
    try:
        grant = grants.create_grant(
            session, None, allowed.tier.name, login, app_id=referrer.data["referrer"], domains=normalized,
            source=SOURCE, origin=ORIGIN, github_user_id=user_id, github_login=login)
    except grants.GrantConflict as exc:
        return Outcome(problems=[str(exc)])
    return Outcome(grant=grant)
