"""The request state machine (the handlers that drive it from events are in bot.requests.application_events).

    received ─▶ needs_info ⇄ validated ─▶ approved ─▶ revoked
                     │           │
                     └───────────┴─▶ rejected | withdrawn

Every transition is a function with a guard, shared by the slash-commands, the CLI and the
dashboard: `approve`, `reject`, `needs_info`, `withdraw`, `change_tier`, `revoke`, `recheck`.
Each returns a Result: `done` (it happened), `noop` (it had already happened; nothing changed) or
`refused` (the guard said no; nothing changed, the message says why).

Exactly once. A transition first locks the request (or grant) row — `SELECT … FOR UPDATE` on
PostgreSQL; SQLite's write lock is taken at BEGIN — so two maintainers typing /approve at the
same moment are served one after the other and the second sees "already approved". The approval
also claims the audit key "approve:<request id>" (unique), the grant's app id and domains are
unique in the database, and every GitHub write is safe to repeat: decision comments carry a
marker keyed by the action and request (`post_comment_once`), labels are synced to a target
set, closing an issue twice is harmless. A retried delivery whose first run failed half-way
therefore converges on one grant, one comment, one label change.

Decision comments are new comments (subscribers are notified); the status comment of the
review (bot.requests.review) is then refreshed to show the new state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlmodel import Session, func, select

from bot.access import grants
from bot.core import audit
from bot.core.clock import utcnow
from bot.core.comments import Trusted, marker, render
from bot.core.config import Policy, Tier
from bot.core.models import AccessRequest, AuditEvent, Grant, GrantStatus, RequestState
from bot.intake.router import Context
from bot.requests import upgrades
from bot.requests.labels import desired_labels, issue_label_names, sync_labels
from bot.requests.outcomes import DONE, NOOP, REFUSED, code, quote_block, safe_mention  # noqa: F401 - re-exported

log = logging.getLogger("beekeeper.applications")

SYSTEM = "system"


@dataclass
class Result:
    """The outcome of a transition. `message` is plain text (escape it before showing it in an
    issue); `problems` lists failed checks or conflicts behind a refusal."""

    status: str  # done | noop | refused
    message: str
    request: AccessRequest | None = None
    grant: Grant | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != REFUSED

    @property
    def changed(self) -> bool:
        return self.status == DONE


# --------------------------------------------------------------------------------------------
# Reading requests
# --------------------------------------------------------------------------------------------


def find_request(session: Session, repo: str, number: int) -> AccessRequest | None:
    return session.exec(select(AccessRequest).where(AccessRequest.repo == repo,
                                                    AccessRequest.issue_number == number)).first()


def request_for_issue(ctx: Context, repo: str, issue: dict) -> AccessRequest | None:
    """The request behind an issue. An issue carrying the trigger label that has no request yet
    (its opening event not processed yet) is reviewed first, in a repository the policy serves;
    any other issue is not ours."""
    from bot.core.served import ignore_unserved

    if ignore_unserved(ctx.session, ctx.policy, ctx.app, repo, "a comment"):
        return None  # requests are served only from the repositories the operator named
    request = find_request(ctx.session, repo, int(issue.get("number") or 0))
    if request is None and set(ctx.policy.trigger_labels) & set(issue_label_names(issue)):
        from bot.requests import review

        request = review.review_issue(ctx, repo, issue, reason="command", request=None)  # read just above
    return request


def lock_request(session: Session, request: AccessRequest) -> AccessRequest:
    """Re-read the request under a row lock (held until commit), so concurrent transitions on it
    run one after the other and each sees the state the previous one left."""
    statement = (select(AccessRequest).where(AccessRequest.id == request.id).with_for_update()
                 .execution_options(populate_existing=True))
    return session.exec(statement).one()


def lock_grant(session: Session, grant: Grant) -> Grant:
    statement = (select(Grant).where(Grant.id == grant.id).with_for_update()
                 .execution_options(populate_existing=True))
    return session.exec(statement).one()


_FAIL_STATUSES = {"fail", "failed", "error", "false"}


def failed_checks(request: AccessRequest) -> list[str]:
    """The checks that did not pass, as "name: message" lines (warnings are not failures)."""
    lines = []
    for item in request.check_results or []:
        if not isinstance(item, dict):
            continue
        raw = item.get("status", item.get("outcome", item.get("ok")))
        if raw is False or str(raw).lower() in _FAIL_STATUSES:
            name = str(item.get("label") or item.get("name") or item.get("check") or item.get("id") or "check")
            message = str(item.get("message") or item.get("detail") or "")
            lines.append(f"{name}: {message}" if message else name)
    return lines


def check_problems(request: AccessRequest) -> list[str]:
    """Why the checks do not vouch for this request (empty when they all passed)."""
    failed = failed_checks(request)
    if failed:
        return failed
    if not request.checks_ok:
        if not request.check_results:
            return ["The checks have not run on this request yet."]
        return ["The checks have not passed."]
    return []


def request_domains(request: AccessRequest, policy: Policy) -> list[str]:
    """The domains the grant will hold: those the checks accepted (normalised, as stored in the
    "domains" check result), else the request's values normalised the same way."""
    for item in request.check_results or []:
        if isinstance(item, dict) and item.get("name") == "domains" and (item.get("data") or {}).get("domains"):
            return list(dict.fromkeys(str(d) for d in item["data"]["domains"]))
    from bot.rules.checks import normalize_domain
    from bot.rules.forms import split_list

    raw = (request.values or {}).get("domains") or []
    items = split_list(raw) if isinstance(raw, str) else [str(v) for v in raw]
    found: list[str] = []
    for value in items:
        domain, problem = normalize_domain(value, policy)
        if domain and not problem and domain not in found:
            found.append(domain)
    return found


def app_id_for(request: AccessRequest) -> str | None:
    """The public app id of the grant: the referrer name the applicant chose."""
    value = str(request.referrer or (request.values or {}).get("referrer") or "").strip().lower()
    return value or None


# --------------------------------------------------------------------------------------------
# What the applicant sees
# --------------------------------------------------------------------------------------------

def mention(login: str) -> Trusted:
    return safe_mention(login)


def tier_context(tier: Tier | None) -> dict:
    if tier is None:
        return {"name": "", "description": "", "requests_per_minute": None, "concurrency": None, "daily_quota": None}
    return {"name": tier.name, "description": tier.description, "requests_per_minute": tier.requests_per_minute,
            "concurrency": tier.concurrency, "daily_quota": tier.daily_quota}


def actor_text(actor: str, source: str | None = None) -> Trusted:
    """Who decided, for a comment: "@maria via the dashboard", "@maria", or the policy."""
    if actor == SYSTEM:
        return Trusted("the platform's policy (automatic approval)")
    login = actor.removeprefix("cli:")
    via = {"dashboard": " via the dashboard", "cli": " via the command line"}.get(
        "cli" if (source or "").startswith("cli") or actor.startswith("cli:") else (source or ""), "")
    return Trusted(f"{mention(login)}{via}")


def _decision_key(session: Session, action: str, *, request_id: int | None = None,
                  grant_id: int | None = None) -> str:
    """A marker key for a decision comment that is stable across retries of the same decision
    and new for the next one: the number of earlier decisions of this kind (committed rows)."""
    statement = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
    if request_id is not None:
        statement = statement.where(AuditEvent.request_id == request_id)
    if grant_id is not None:
        statement = statement.where(AuditEvent.grant_id == grant_id)
    count = session.exec(statement).one()
    return f"{action}:{count}"


def _refresh_status(ctx: Context, request: AccessRequest, grant: Grant | None) -> None:
    from bot.requests import review

    review.refresh_status_comment(ctx, request, grant)


def publish(ctx: Context, request: AccessRequest, *, key: str, template: str, labels_for: tuple[str, str | None],
            close_reason: str | None = None, grant: Grant | None = None, **template_context) -> None:
    """Tell the applicant: a decision comment (once per key), labels, close, status comment."""
    gh = ctx.github
    repo, number = request.repo, request.issue_number
    # The marker is scoped by the comment's issue, never by a database id: a failed transaction
    # that already posted the comment may give the request or grant a new id on its retry.
    body = render(template, marker=Trusted(marker("decision", key)), mention=mention(request.applicant_login),
                  **template_context)
    gh.post_comment_once(repo, number, marker("decision", key), body)
    # The issue as read just before the decision (bot.requests.issue_events.recheck_if_edited), used once;
    # else one GET for its current labels and state.
    issue = ctx.extras.pop(("issue", repo, number), None) or gh.get_issue(repo, number)
    state, tier = labels_for
    sync_labels(gh, ctx.policy, repo, number, issue_label_names(issue), desired_labels(ctx.policy, state, tier))
    if close_reason and issue.get("state") != "closed":
        gh.close_issue(repo, number, close_reason)
        request.issue_state = "closed"
    elif issue.get("state") in ("open", "closed"):
        request.issue_state = issue["state"]
    _refresh_status(ctx, request, grant)


def _decide(request: AccessRequest, state: str, actor: str, reason: str | None = None) -> None:
    now = utcnow()
    request.state = state
    request.decided_at = now
    request.decided_by = actor[:64]
    request.decision_reason = reason
    request.updated_at = now


def _self_decision(policy: Policy, actor: str, actor_id: int | None, owner_id: int | None,
                   owner_login: str | None) -> bool:
    """The actor decides on their own request or grant. Compared by numeric GitHub id: a renamed
    maintainer is still the owner, and someone who took over the owner's old login is not.
    Only a caller that does not know the actor's id (legacy) falls back to the login."""
    if not policy.maintainers.forbid_self_approval or actor == SYSTEM:
        return False
    from bot.github.identity import same_person

    if actor_id is not None:
        return same_person(actor_id, owner_id)
    return actor.lower() == (owner_login or "").lower()


def _closed_state_refusal(request: AccessRequest) -> Result | None:
    if request.state in (RequestState.REJECTED, RequestState.WITHDRAWN):
        return Result(REFUSED, f"This request is {request.state}. Reopen the issue to have it reviewed again.",
                      request)
    if request.state == RequestState.REVOKED:
        return Result(REFUSED, "This request's grant was revoked. A new request is needed for new access.", request)
    return None


# --------------------------------------------------------------------------------------------
# Transitions
# --------------------------------------------------------------------------------------------


def approve(ctx: Context, request: AccessRequest, actor: str, *, tier: str | None = None, force: bool = False,
            source: str, actor_id: int | None = None) -> Result:
    """Approve: create the grant, tell the applicant, label and close the issue.

    Needs `force` when the checks failed (they are listed). A taken app id or domain cannot be
    forced: the database would refuse the grant anyway.
    """
    session, policy = ctx.session, ctx.policy
    request = lock_request(session, request)
    if request.state == RequestState.APPROVED:
        grant = grants.grant_for_request(session, request)
        where = f" (grant {grant.app_id}, tier {grant.tier})" if grant else ""
        return Result(NOOP, f"This request is already approved{where}.", request, grant)
    refusal = _closed_state_refusal(request)
    if refusal:
        return refusal
    if _self_decision(policy, actor, actor_id, request.applicant_id, request.applicant_login):
        return Result(REFUSED, "Nobody can approve their own request: another maintainer has to decide.", request)
    # (issue 15) A maintainer approves what the issue says now, not an older reviewed body.
    from bot.requests.issue_events import recheck_if_edited

    if actor != SYSTEM and recheck_if_edited(ctx, request):
        return Result(REFUSED, "The issue was edited since it was last checked. I checked it again (see the "
                      "status comment): read it, then approve again.", lock_request(session, request))
    tier_name = (tier or request.requested_tier or "").strip().lower()
    tier_obj = policy.tier(tier_name)
    if tier_obj is None:
        known = ", ".join(policy.tier_names)
        if not tier_name:
            return Result(REFUSED, f"The request names no tier. Say which: /approve <tier> (tiers: {known}).", request)
        return Result(REFUSED, f"There is no tier called {tier_name}. Tiers: {known}.", request)
    app_id = app_id_for(request)
    if not app_id:
        return Result(REFUSED, "The request has no app id (referrer name) yet; ask the applicant to add one with "
                      "/needs-info.", request)
    domains = request_domains(request, policy)
    problems = check_problems(request)
    if problems and not force:
        return Result(REFUSED, "The checks did not pass. Fix them with the applicant (/needs-info), or approve "
                      "anyway with /approve --force.", request, problems=problems)
    target = upgrades.find_target(session, request.applicant_id, app_id, domains,
                                  by_domain=not (request.values or {}).get("referrer"))
    if target is not None:  # the applicant's own app: change that grant (upgrade, downgrade, domains)
        return approve_upgrade(ctx, request, target, tier_obj, domains, actor, source=source,
                                        problems=problems)
    taken = upgrades.public_conflicts(session, request.applicant_id, app_id, domains)
    if taken:
        return Result(REFUSED, "The grant cannot be created: its app id or a domain is taken (--force cannot "
                      "change that).", request, problems=taken)
    try:
        with session.begin_nested():
            # The audit key is claimed in the same savepoint as the grant, so a refusal below
            # leaves no claim behind, and a second approval (another worker) cannot claim again.
            if not audit.claim_once(session, f"approve:{request.id}", actor[:64], "request.approved",
                                    request_id=request.id, subject=f"{request.repo}#{request.issue_number}",
                                    source=source, details={"tier": tier_obj.name, "forced": bool(problems),
                                                            "problems": problems}):
                return Result(NOOP, "This request is already approved.", request)
            grant = grants.create_grant(session, request, tier_obj.name, actor, app_id=app_id, domains=domains,
                                        source=source)
    except grants.GrantConflict as exc:
        return Result(REFUSED, "The grant cannot be created.", request, problems=[str(exc)])
    _decide(request, RequestState.APPROVED, actor)
    session.add(request)
    session.flush()
    publish(ctx, request, key="approve", template="approved.md",
            labels_for=(RequestState.APPROVED, tier_obj.name), close_reason="completed", grant=grant,
            tier=tier_context(tier_obj), app_id=code(grant.app_id), domains=[code(d) for d in domains],
            approver=actor_text(actor, source), automatic=actor == SYSTEM, forced=bool(problems),
            public_url=Trusted(ctx.settings.public_url), app_id_value=Trusted(grant.app_id))
    return Result(DONE, f"Approved on tier {tier_obj.name}: grant #{grant.id} ({grant.app_id}).", request, grant)


def reject(ctx: Context, request: AccessRequest, actor: str, reason: str, *, source: str) -> Result:
    """Decline an open request: comment with the reason, label, close as not planned."""
    session = ctx.session
    request = lock_request(session, request)
    if request.state == RequestState.REJECTED:
        return Result(NOOP, "This request is already rejected.", request)
    if request.state == RequestState.APPROVED:
        return Result(REFUSED, "This request is approved. To take access away, use /revoke <reason>.", request)
    refusal = _closed_state_refusal(request)
    if refusal:
        return refusal
    key = _decision_key(session, "request.rejected", request_id=request.id)
    audit.record(session, actor[:64], "request.rejected", request_id=request.id,
                 subject=f"{request.repo}#{request.issue_number}", source=source, details={"reason": reason})
    _decide(request, RequestState.REJECTED, actor, reason)
    session.add(request)
    session.flush()
    publish(ctx, request, key=key, template="rejected.md", labels_for=(RequestState.REJECTED, None),
            close_reason="not_planned", reason=quote_block(reason), approver=actor_text(actor, source))
    return Result(DONE, "Rejected.", request)


def needs_info(ctx: Context, request: AccessRequest, actor: str, message: str, *, source: str) -> Result:
    """Ask the applicant for changes: comment, label needs-info; the issue stays open."""
    session = ctx.session
    request = lock_request(session, request)
    if request.state == RequestState.APPROVED:
        return Result(REFUSED, "This request is already approved; there is nothing left to ask for.", request)
    refusal = _closed_state_refusal(request)
    if refusal:
        return refusal
    key = _decision_key(session, "request.needs_info", request_id=request.id)
    audit.record(session, actor[:64], "request.needs_info", request_id=request.id,
                 subject=f"{request.repo}#{request.issue_number}", source=source, details={"message": message})
    request.state = RequestState.NEEDS_INFO
    request.decision_reason = message
    request.updated_at = utcnow()
    session.add(request)
    session.flush()
    publish(ctx, request, key=key, template="needs_info.md", labels_for=(RequestState.NEEDS_INFO, None),
            message=quote_block(message), approver=actor_text(actor, source))
    return Result(DONE, "Asked the applicant for more information.", request)


def withdraw(ctx: Context, request: AccessRequest, actor: str, *, source: str) -> Result:
    """The applicant cancels an open request (with /withdraw, or by closing the issue)."""
    session = ctx.session
    request = lock_request(session, request)
    if request.state == RequestState.WITHDRAWN:
        return Result(NOOP, "This request is already withdrawn.", request)
    if request.state == RequestState.APPROVED:
        return Result(REFUSED, "This request is already approved. If you no longer need the access, ask a "
                      "maintainer to revoke it.", request)
    if request.state in (RequestState.REJECTED, RequestState.REVOKED):
        return Result(REFUSED, f"This request is {request.state}; there is nothing to withdraw.", request)
    key = _decision_key(session, "request.withdrawn", request_id=request.id)
    audit.record(session, actor[:64], "request.withdrawn", request_id=request.id,
                 subject=f"{request.repo}#{request.issue_number}", source=source)
    _decide(request, RequestState.WITHDRAWN, actor)
    session.add(request)
    session.flush()
    publish(ctx, request, key=key, template="withdrawn.md", labels_for=(RequestState.WITHDRAWN, None),
            close_reason="not_planned")
    return Result(DONE, "Withdrawn.", request)


def _request_of(session: Session, grant: Grant) -> AccessRequest | None:
    return session.get(AccessRequest, grant.request_id) if grant.request_id else None


def change_tier(ctx: Context, grant: Grant, actor: str, tier: str, *, source: str,
                actor_id: int | None = None) -> Result:
    """Move an active grant to another tier; the issue's tier label follows."""
    session, policy = ctx.session, ctx.policy
    grant = lock_grant(session, grant)
    request = _request_of(session, grant)
    tier_obj = policy.tier(tier)
    if tier_obj is None:
        return Result(REFUSED, f"There is no tier called {tier.strip().lower()}. Tiers: "
                      f"{', '.join(policy.tier_names)}.", request, grant)
    if grant.status != GrantStatus.ACTIVE:
        return Result(REFUSED, f"Grant {grant.app_id} is {grant.status}; its tier cannot change.", request, grant)
    if grant.tier == tier_obj.name:
        return Result(NOOP, f"Grant {grant.app_id} is already on tier {tier_obj.name}.", request, grant)
    if _self_decision(policy, actor, actor_id, grant.github_user_id, grant.github_login):
        return Result(REFUSED, "Nobody can change the tier of their own grant: another maintainer has to.",
                      request, grant)
    key = _decision_key(session, "grant.tier_changed", grant_id=grant.id)
    previous = grants.set_tier(session, grant, tier_obj.name, actor, source=source)
    if request is not None:
        publish(ctx, request, key=key, template="tier_changed.md", labels_for=(RequestState.APPROVED, tier_obj.name),
                grant=grant, tier=tier_context(tier_obj), previous=previous, app_id=code(grant.app_id),
                approver=actor_text(actor, source))
    upgrades.sync_linked_labels(ctx, grant, request)  # issues of earlier upgrades show the new tier too
    return Result(DONE, f"Grant {grant.app_id} moved from tier {previous} to {tier_obj.name}.", request, grant)


def revoke(ctx: Context, grant: Grant, actor: str, reason: str, *, source: str) -> Result:
    """Revoke an active grant: its keys and domains stop working; the request becomes revoked."""
    session = ctx.session
    grant = lock_grant(session, grant)
    request = _request_of(session, grant)
    if grant.status == GrantStatus.REVOKED:
        return Result(NOOP, f"Grant {grant.app_id} is already revoked.", request, grant)
    grants.revoke_grant(session, grant, actor, reason, source=source)
    if request is not None:
        request = lock_request(session, request)
        _decide(request, RequestState.REVOKED, actor, reason)
        session.add(request)
        session.flush()
        publish(ctx, request, key="revoke", template="revoked.md",
                labels_for=(RequestState.REVOKED, None), grant=grant, reason=quote_block(reason),
                app_id=code(grant.app_id), approver=actor_text(actor, source))
    return Result(DONE, f"Grant {grant.app_id} revoked.", request, grant)


def recheck(ctx: Context, request: AccessRequest, actor: str) -> Result:
    """Run the checks again on an open request (the review posts the new status)."""
    from bot.requests import review

    session = ctx.session
    request = lock_request(session, request)
    if request.state == RequestState.APPROVED:
        return Result(REFUSED, "This request is already approved; its checks are not run again.", request)
    refusal = _closed_state_refusal(request)
    if refusal:
        return refusal
    issue = ctx.github.get_issue(request.repo, request.issue_number)
    request = review.review_issue(ctx, request.repo, issue, reason="recheck")
    audit.record(session, actor[:64], "request.rechecked", request_id=request.id,
                 subject=f"{request.repo}#{request.issue_number}", details={"state": request.state})
    maybe_auto_approve(ctx, request, source=f"recheck by {actor}"[:300])
    return Result(DONE, f"Checked again: the request is {request.state}.", request)


def auto_approve_tier(policy: Policy, request: AccessRequest) -> Tier | None:
    tier = policy.tier(request.requested_tier)
    return tier if tier is not None and tier.auto_approve else None


def maybe_auto_approve(ctx: Context, request: AccessRequest, *, source: str) -> Result | None:
    """Approve a validated request for a tier the policy approves automatically (actor `system`).

    Never when the checks flagged something for a maintainer (`needs_maintainer`: a conflict, a
    young account, a look-alike domain…), nor for a request a maintainer rejected or revoked
    before: reopening the issue must not get around them.
    """
    if request.state != RequestState.VALIDATED or not request.checks_ok or request.needs_maintainer:
        return None
    tier = auto_approve_tier(ctx.policy, request)
    if tier is None:
        return None
    overruled = ctx.session.exec(select(AuditEvent.id).where(
        AuditEvent.request_id == request.id,
        AuditEvent.action.in_(["request.rejected", "grant.revoked"]))).first()
    if overruled is not None:
        return None
    result = approve(ctx, request, SYSTEM, tier=tier.name, source=source)
    if result.status == REFUSED:
        log.info("auto-approval of %s#%s refused: %s %s", request.repo, request.issue_number, result.message,
                 result.problems)
    return result


def approve_upgrade(ctx: Context, request: AccessRequest, grant: Grant, tier_obj, domains: list[str], actor: str,
                    *, source: str, problems: list[str]):
    """The approval of an upgrade request (approve calls it once its guards passed): change the
    grant, close and link both issues."""
    session, policy = ctx.session, ctx.policy
    grant = lock_grant(session, grant)
    if grant.status != GrantStatus.ACTIVE or grant.github_user_id != request.applicant_id:
        return Result(REFUSED, "The grant this request would change is not an active grant of the "
                           "applicant any more.", request, grant)
    change = upgrades.plan(session, grant, tier_obj.name, domains)
    direction = change.direction(policy)
    summary = change.summary(policy)
    details = {"upgrade_of": grant.id, "from": change.from_tier, "to": change.to_tier, "added": change.added,
               "direction": direction}
    try:
        with session.begin_nested():
            if not audit.claim_once(session, f"approve:{request.id}", actor[:64], "request.approved",
                                    request_id=request.id, grant_id=grant.id,
                                    subject=f"{request.repo}#{request.issue_number}", source=source,
                                    details={"tier": tier_obj.name, "forced": bool(problems), "problems": problems,
                                             **details}):
                return Result(NOOP, "This request is already approved.", request, grant)
            upgrades.apply_changes(session, grant, tier=tier_obj.name, add_domains=change.added, actor=actor,
                                   source=source, request_id=request.id,
                                   details={"request": f"{request.repo}#{request.issue_number}"})
    except (grants.GrantConflict, grants.GrantNotActive) as exc:
        return Result(REFUSED, "The grant cannot be changed.", request, grant, problems=[str(exc)])
    _decide(request, RequestState.APPROVED, actor)
    request.upgrade_grant_id = grant.id
    session.add(request)
    session.flush()
    old_ref = _issue_ref(grant.repo, grant.issue_number, request.repo)
    new_ref = _issue_ref(request.repo, request.issue_number, grant.repo)
    publish(ctx, request, key="approve", template="upgraded.md",
                 labels_for=(RequestState.APPROVED, tier_obj.name), close_reason="completed", grant=grant,
                 tier=tier_context(tier_obj), summary=change.summary_markdown(policy), direction=direction,
                 app_id=code(grant.app_id), added=[code(d) for d in change.added],
                 domains=[code(d) for d in grants.active_domains(session, grant)],
                 approver=actor_text(actor, source), other_ref=Trusted(old_ref) if old_ref else None,
                 automatic=actor == SYSTEM)
    _tell_other_issues(ctx, grant, request, tier_obj, change.summary_markdown(policy), new_ref)
    return Result(DONE, f"{summary}: grant #{grant.id} changed.", request, grant)


def _issue_ref(repo: str | None, number: int | None, here: str | None) -> str | None:
    """"#12" in the same repository, "owner/repo#12" in another (GitHub links both)."""
    if not repo or not number:
        return None
    return f"#{number}" if repo == here else f"{repo}#{number}"


def _tell_other_issues(ctx: Context, grant: Grant, request: AccessRequest, tier_obj, summary,
                       new_ref: str | None) -> None:
    """The grant's other issues (the one that created it, earlier upgrades): a comment linking
    the new one, labels with the new tier, closed if still open."""
    gh = ctx.github
    for other in upgrades.linked_requests(ctx.session, grant):
        if other.id == request.id or other.state != RequestState.APPROVED:
            continue
        key = f"upgraded-by:{request.repo}#{request.issue_number}"
        body = render("upgrade_linked.md", marker=Trusted(marker("decision", key)),
                      mention=mention(other.applicant_login), summary=summary,
                      other_ref=Trusted(new_ref) if new_ref else None, tier=tier_context(tier_obj),
                      app_id=code(grant.app_id))
        gh.post_comment_once(other.repo, other.issue_number, marker("decision", key), body)
        issue = gh.get_issue(other.repo, other.issue_number)
        sync_labels(gh, ctx.policy, other.repo, other.issue_number, issue_label_names(issue),
                    desired_labels(ctx.policy, RequestState.APPROVED, tier_obj.name))
        if issue.get("state") != "closed":
            gh.close_issue(other.repo, other.issue_number, "completed")
        other.issue_state = "closed"
        ctx.session.add(other)
