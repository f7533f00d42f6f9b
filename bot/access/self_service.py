"""Self-service: a signed-in applicant creates a grant on the self-service tier without an issue.

Allowed only when the policy's `self_service.enabled` is on, a self-service tier exists (the
policy's `self_service.tier`, else the lowest auto-approved tier), and the account passes the
applicant checks of bot.rules.checks with nothing flagged: old enough and no active grant (so one
self-service grant per account; anything more goes through the issue form, where a maintainer
can look). An open issue request does not block it: that request is for another app, and the
maintainer deciding it sees the self-service grant among the applicant's signals. The app id
and domains go through the same checks as the issue form; a flagged domain (a look-alike)
needs a maintainer, so it is refused here too.

Two requests of one account at once (ten parallel POSTs) must not both pass the "no active grant"
check: `create` first locks the account's `self_service_owner` row (inserted if absent, then
SELECT … FOR UPDATE on PostgreSQL; SQLite transactions already hold the write lock from BEGIN
IMMEDIATE), so the second request waits, then sees the first one's grant.

Domains need proof of control on tiers whose `domain_proof` is not `none` (bot.access.domain_proof): the
grant is created without them and each waits as a pending proof the owner verifies in the portal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from bot.access import domain_proof, grants
from bot.core.clock import utcnow
from bot.core.config import Policy, Tier
from bot.core.models import DomainProof, Grant, SelfServiceOwner
from bot.rules.checks import ERROR, OK, check_applicant, check_domains, check_referrer

SOURCE = "portal"  # what audit rows point at
ORIGIN = "self_service"  # Grant.source
OTHER_REQUEST = "other request"  # bot.rules.checks.check_applicant's name for another open request


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
    proofs: list[DomainProof] = field(default_factory=list)  # domains waiting for proof of control


def _problem(result) -> str:
    hint = f" {result.hint}" if result.hint else ""
    return f"{result.name.capitalize()}: {result.message.rstrip('.')}.{hint}"


def lock_owner(session: Session, user_id: int) -> SelfServiceOwner:
    """The account's self-service row, locked until the transaction ends (insert if absent first,
    so there is always a row to lock: a racing insert waits for ours and then does nothing)."""
    table = SelfServiceOwner.__table__
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(table).values(github_user_id=user_id, grants_created=0, updated_at=utcnow())
                    .on_conflict_do_nothing())
    statement = select(SelfServiceOwner).where(SelfServiceOwner.github_user_id == user_id).with_for_update()
    return session.exec(statement.execution_options(populate_existing=True)).one()


def create(session: Session, gh, policy: Policy, user_id: int, login: str, app_id: str, domains: str) -> Outcome:
    """Check everything again and create the grant, or say what to fix. Never raises on input."""
    owner = lock_owner(session, user_id)  # before any check: a parallel request of this account waits here
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
    to_prove = normalized if domain_proof.proof_required(allowed.tier) else []
    for domain in to_prove:
        if not domain_proof.methods_for(allowed.tier, domain):
            problems.append(f"Domains: {domain} is a wildcard, which needs a DNS record on "
                            f"{domain_proof.record_name(domain)}; this tier accepts only the file proof. "
                            "List the host names instead.")
    if problems:
        return Outcome(problems=problems)
    try:
        grant = grants.create_grant(
            session, None, allowed.tier.name, login, app_id=referrer.data["referrer"],
            domains=[d for d in normalized if d not in to_prove],
            source=SOURCE, origin=ORIGIN, github_user_id=user_id, github_login=login)
    except grants.GrantConflict as exc:
        return Outcome(problems=[str(exc)])
    proofs = [domain_proof.open_proof(session, grant, user_id, domain, login) for domain in to_prove]
    owner.grants_created += 1
    owner.updated_at = utcnow()
    session.add(owner)
    return Outcome(grant=grant, proofs=proofs)
