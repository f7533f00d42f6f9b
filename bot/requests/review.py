"""Reviewing a request issue: parse the form, run the checks, keep the request row, the one
status comment and the labels in step.

`review_issue` is what the issue handlers call on opened / edited / reopened / labeled;
`refresh_status_comment` re-renders the comment from stored results after a maintainer's
decision (approve, reject, revoke, withdraw) without checking again.

State rules: an open request (received, needs_info, validated) is checked again on every call;
a reopened issue is checked again unless its request was approved or revoked (a rejected or
withdrawn request goes back to validation). Decided requests keep their state, and their
status comment shows it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from sqlmodel import Session, select

from bot.core import audit, comments
from bot.core.clock import utcnow
from bot.core.config import Form, Policy, form_key
from bot.core.models import AccessRequest, Grant, RequestState
from bot.requests import upgrades
from bot.requests.labels import desired_labels, issue_label_names, sync_labels
from bot.rules.checks import ERROR, OK, WARNING, CheckReport, CheckResult, run_checks
from bot.rules.forms import FormSchema, ParsedForm, load_form_schema, parse_issue_body, select_form

log = logging.getLogger("beekeeper.review")

ACTOR = "system"
MAX_STORED_TEXT = 8000  # longest string kept per value in the request row
MAX_STORED_ITEMS = 100  # longest list kept per value
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_REF = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#[0-9]+$")
ICONS = {OK: "✅", ERROR: "❌", WARNING: "⚠️"}


def _should_recheck(request: AccessRequest, reason: str) -> bool:
    if request.state in RequestState.OPEN:
        return True
    return reason == "reopened" and request.state in (RequestState.REJECTED, RequestState.WITHDRAWN)


def locked_request(session: Session, repo: str, number: int) -> AccessRequest | None:
    """The issue's request row, locked (PostgreSQL) so concurrent deliveries for one issue queue."""
    return session.exec(
        select(AccessRequest).where(AccessRequest.repo == repo, AccessRequest.issue_number == number)
        .with_for_update()
    ).first()


def _update_from_issue(request: AccessRequest, issue: dict, user: dict) -> None:
    request.title = _text(issue.get("title"), 512)
    request.issue_state = str(issue.get("state") or "open")[:16]
    request.applicant_login = _text(user.get("login", request.applicant_login), 64)
    request.updated_at = utcnow()


def reviewed_key(repo: str, number: int) -> tuple:
    """The Context.extras key under which the issue handler leaves the request it just reviewed,
    for the handlers that run after it on the same delivery (they read it instead of the row)."""
    return ("reviewed request", repo, number)


def _text(value: Any, limit: int) -> str:
    """A string for a database column: NUL removed (PostgreSQL refuses it), cut to `limit`."""
    return str(value or "").replace("\x00", "")[:limit]


def _capped(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value, MAX_STORED_TEXT)
    if isinstance(value, list):
        return [_capped(v) for v in value[:MAX_STORED_ITEMS]]
    return value


def body_sha256(body: str | None) -> str:
    return hashlib.sha256((body or "").encode("utf-8", "surrogatepass")).hexdigest()


def _store_results(request: AccessRequest, issue: dict, parsed: ParsedForm, report: CheckReport) -> None:
    values = parsed.values
    normalized = report.normalized
    request.values = {role: _capped(value) for role, value in values.items()}
    if "domain_or_referrer" in values and "domains" not in values:
        # The hosts sorted out of a "domain or referrer" field, where the rest of Beekeeper looks.
        request.values["domains"] = _capped(list(normalized.get("domains") or []))
    request.check_results = [r.to_dict() for r in report.results]
    request.checks_ok = report.ok
    request.needs_maintainer = report.needs_maintainer
    request.body_sha256 = body_sha256(issue.get("body"))
    request.app_name = _text(" ".join(str(values.get("app_name") or "").split()), 200) or None
    request.requested_tier = normalized.get("tier")
    request.referrer = normalized.get("referrer")
    contact = normalized.get("contact") or str(values.get("contact") or "").strip() or None
    request.contact = _text(contact, 320) or None


def _set_state(session: Session, request: AccessRequest, state: str, reason: str) -> None:
    if request.state == state:
        return
    previous = request.state
    request.state = state
    # Written with the request's other changes at the next flush (one round trip, not two).
    audit.record(session, ACTOR, f"request.{state}", request_id=request.id,
                 subject=f"{request.repo}#{request.issue_number}",
                 details={"from": previous, "event": reason}, flush=False)


_UNREAD = object()  # review_issue's `request` when the caller has not read the row


def review_issue(ctx, repo: str, issue: dict, *, reason: str, request: AccessRequest | None = _UNREAD
                 ) -> AccessRequest:
    """Parse + check + store the request, then upsert the status comment and sync labels.

    `request`: the issue's row (or None: there is none) when the caller has already read it
    with `locked_request` in this transaction; otherwise it is read (and locked) here."""
    session, policy = ctx.session, ctx.policy
    gh = ctx.github
    number = int(issue["number"])
    user = issue.get("user") or {}
    if request is _UNREAD:
        request = locked_request(session, repo, number)
    created = request is None
    if created:
        request = AccessRequest(repo=repo, issue_number=number, installation_id=ctx.installation_id,
                                applicant_id=int(user["id"]), applicant_login=str(user.get("login", ""))[:64],
                                state=RequestState.RECEIVED)
        _update_from_issue(request, issue, user)  # in the INSERT: no UPDATE right after it
        session.add(request)
        session.flush()  # its id: the checks leave this request out of "other requests"
        audit.record(session, ACTOR, "request.received", request_id=request.id, subject=f"{repo}#{number}",
                     details={"event": reason}, flush=False)
    else:
        _update_from_issue(request, issue, user)

    spec, schema, labelled = select_form(gh, repo, policy, issue)
    if _should_recheck(request, reason):
        request.form_name = form_key(spec)[:64]
        parsed = parse_issue_body(issue.get("body"), schema, policy, spec=spec, labelled=labelled)
        # The checks read grants and *other* requests only: this request's pending changes need
        # not be written before them, and are written once, with the results, below.
        with session.no_autoflush:
            report = run_checks(session, parsed, policy, schema=schema, applicant_id=request.applicant_id,
                                applicant_login=request.applicant_login, gh=gh, request_id=request.id,
                                resolver=ctx.extras.get("dns_resolver"), spec=spec)
            # A request for an app the applicant already holds is an upgrade (issue 13).
            report = upgrades.annotate(session, report, policy, request.applicant_id)
        _store_results(request, issue, parsed, report)
        if request.state not in RequestState.OPEN:  # a reopened rejected/withdrawn request
            request.decided_at = request.decided_by = request.decision_reason = None
        _set_state(session, request, RequestState.VALIDATED if report.ok else RequestState.NEEDS_INFO, reason)
        if policy.validation.close_duplicates and request.issue_state == "open":
            _close_if_duplicate(ctx, request, report)
    session.add(request)
    session.flush()
    # A request made by this review has no grant (a grant names an existing request): not looked up.
    _publish(ctx, request, schema=schema, current_labels=issue_label_names(issue), spec=spec, has_grant=not created)
    session.flush()
    return request


def _close_if_duplicate(ctx, request: AccessRequest, report: CheckReport) -> None:
    """With `validation.close_duplicates`, a newer open request by the same applicant is closed
    (as not planned) and marked withdrawn; the status comment points at the older one."""
    older = next((r for r in report.results if r.data.get("duplicate_of")), None)
    if older is None:
        return
    request.decision_reason = f"duplicate of {older.ref}" if older.ref else "duplicate request"
    request.decided_by = ACTOR
    request.decided_at = utcnow()
    _set_state(ctx.session, request, RequestState.WITHDRAWN, "duplicate")
    ctx.session.flush()  # the rows first: a write the database refuses fails before the issue is closed
    ctx.github.close_issue(request.repo, request.issue_number, "not_planned")
    request.issue_state = "closed"


def _grant_of(session: Session, request: AccessRequest) -> Grant | None:
    from bot.access.grants import grant_for_request

    return grant_for_request(session, request)


def refresh_status_comment(ctx, request: AccessRequest, grant: Grant | None = None) -> None:
    """Re-render the status comment from the stored results and the current state (no re-check)."""
    spec = request_form(ctx.policy, request)
    schema = load_form_schema(ctx.github, request.repo, ctx.policy, spec=spec)
    _upsert_status(ctx, request, schema, grant or _grant_of(ctx.session, request), spec)
    ctx.session.add(request)
    ctx.session.flush()


def request_form(policy: Policy, request: AccessRequest) -> Form:
    """The policy's form a request was filed with (the first form for older rows)."""
    return policy.form_named(request.form_name) or policy.default_form


def _publish(ctx, request: AccessRequest, *, schema: FormSchema, current_labels: list[str],
             spec: Form | None = None, has_grant: bool = True) -> None:
    grant = _grant_of(ctx.session, request) if has_grant else None
    _upsert_status(ctx, request, schema, grant, spec)
    tier = grant.tier if grant is not None else None
    sync_labels(ctx.github, ctx.policy, request.repo, request.issue_number, current_labels,
                desired_labels(ctx.policy, request.state, tier))


def _upsert_status(ctx, request: AccessRequest, schema: FormSchema, grant: Grant | None,
                   spec: Form | None = None) -> None:
    body = render_status(request, ctx.policy, schema, grant=grant, github_url=ctx.settings.github_url, spec=spec)
    comment = ctx.github.upsert_comment(request.repo, request.issue_number, comments.STATUS_MARKER, body,
                                        comment_id=request.status_comment_id)
    if comment and comment.get("id"):
        request.status_comment_id = int(comment["id"])


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _display_name(name: str) -> str:
    return name[:1].upper() + name[1:]


def _result_view(result: CheckResult) -> dict[str, Any]:
    return {
        "icon": comments.Trusted(ICONS.get(result.status, "•")),
        "name": _display_name(result.name),
        "message": result.message,
        "hint": result.hint if result.status != OK else None,
        # An issue reference we made ("owner/repo#12"): printed as is so GitHub links it.
        "ref": comments.Trusted(result.ref) if result.ref and _REF.match(result.ref) else None,
    }


def _safe_label(label: str) -> comments.Trusted:
    """A field label from the repository's own form, for the skeleton code block."""
    text = " ".join(re.sub(r"[`~\x00-\x1f\x7f]", "", label).split())
    return comments.Trusted(text[:100])


def _section(title: str | None, results: list[CheckResult], *, folded: bool = False,
             hints: bool = True) -> dict[str, Any]:
    views = [_result_view(r) for r in results]
    if not hints:
        for view in views:
            view["hint"] = None
    return {"title": title, "results": views, "folded": folded}


def status_sections(results: list[CheckResult], *, hints: bool = True) -> list[dict[str, Any]]:
    """The report's sections, in order: the checks, then "Details" (informational ✅ lines,
    folded). Each is {"title", "results", "folded"}; a feature with its own part of the report
    appends a section (see `render_status(extra_sections=…)`)."""
    main = [r for r in results if not (r.info and r.status == OK)]
    details = [r for r in results if r.info and r.status == OK]
    sections = [_section(None, main, hints=hints)]
    if details:
        sections.append(_section("Details", details, folded=True, hints=False))
    return sections


def render_status(request: AccessRequest, policy: Policy, schema: FormSchema, *, grant: Grant | None = None,
                  github_url: str = "https://github.com", spec: Form | None = None,
                  extra_sections: list[dict[str, Any]] | None = None) -> str:
    """The status comment's markdown for a request (its hidden marker first). Every word naming
    the form comes from the policy or the form's own `name`."""
    spec = spec or request_form(policy, request)
    results = [CheckResult.from_dict(r) for r in request.check_results or []]
    upgrade, results = upgrades.status_view(results)  # an upgrade request: its own section at the top
    not_from_form = any(r.name == "form" and r.data.get("fields") for r in results)
    form_link = None
    if _REPO.match(request.repo or ""):
        form_link = comments.Trusted(
            f"{github_url.rstrip('/')}/{request.repo}/issues/new?template={spec.template_name}")
    # For a free-text issue the skeleton below the heading says it better than the hints.
    sections = status_sections(results, hints=not not_from_form) + list(extra_sections or [])
    return comments.render(
        "status.md",
        marker=comments.Trusted(comments.STATUS_MARKER),
        state=request.state,
        sections=sections,
        errors=sum(r.status == ERROR for r in results),
        needs_maintainer=request.needs_maintainer,
        not_from_form=not_from_form,
        skeleton=[_safe_label(f.label) for f in schema.fields] if not_from_form else [],
        form_link=form_link,
        form_name=schema.display_name,
        contact_visible="contact" in schema.roles_present(policy, spec),
        referrer=request.referrer,
        requested_tier=request.requested_tier,
        grant_tier=grant.tier if grant is not None else None,
        app_id=grant.app_id if grant is not None else request.referrer,
        decision_reason=request.decision_reason,
        decided_by=request.decided_by,
        upgrade=upgrade,
    )
