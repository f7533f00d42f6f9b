"""The maintainer dashboard under /admin: review queue, grants, audit trail, gateways.

Who: maintainers only (bot.web.web_permissions.maintainer_required on every view). A maintainer of
some repositories sees and acts on those repositories' requests and grants alone (lists are
filtered, every page and action re-checks `require_scope_for`); the audit trail, its export and
the gateways are the platform's, for the policy's `admins` (`admin_required`). Nobody decides on
their own request or grant (compared by numeric id: approve, force, tier, domain approval). Decisions call the
same state machine as the slash-commands (bot.requests.applications) with the maintainer as the actor
and `source="dashboard"`, so the issue gets the same decision comment, labels and close, and the
audit trail says where the decision came from. Nothing here changes state by itself.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from sqlmodel import Session, select

from bot.access import domain_changes
from bot.access.grants import grant_for_request
from bot.access.holdings import grant_view
from bot.allowlist import gateways as gateways_service
from bot.allowlist.versioning import current_version
from bot.core.clock import utcnow
from bot.core.db import session_scope
from bot.core.errors import RetryLater
from bot.core.models import AccessRequest, AllowlistChange, AuditEvent, DomainChange, Grant, RequestState
from bot.github.client import GitHubError
from bot.intake.router import Context
from bot.requests import applications
from bot.requests.permissions import PermissionUnknown, installation_for
from bot.web import audit_export, page_format
from bot.web import overview as overview_service
from bot.web.charts import overview_charts
from bot.web.pagination import page_number, paginate
from bot.web.queue import pending_domain_changes, queue_item, review_queue
from bot.web.search import AuditFilter, GrantFilter, audit_actions, audit_query, grants_query
from bot.web.shared import guard_pages
from bot.web.web_permissions import (
    admin_required,
    current_scope,
    maintainer_required,
    require_scope_for,
    runtime,
    signed_in_user,
    visible_repositories,
)

bp = Blueprint("dashboard", __name__, url_prefix="/admin")
page_format.register(bp)

SOURCE = "dashboard"
TEXT_LIMIT = 2000
GITHUB_DOWN = ("GitHub did not answer, so nothing was changed. Try again in a minute; if it keeps failing, "
               "the slash-command in the issue does the same.")


guard_pages(bp)


def _common() -> dict:
    rt = runtime()
    return {"policy": rt.policy, "github_url": rt.settings.github_url, "maintainer": signed_in_user().login,
            "platform_admin": current_scope().admin}


def _text(name: str) -> str:
    return (request.form.get(name) or "").strip()[:TEXT_LIMIT]


def _context(db: Session, repo: str | None, installation_id: int | None) -> Context:
    """A handler-style Context for the state machine, acting as the installation of `repo`."""
    rt = runtime()
    if installation_id is None and repo:
        installation_id = installation_for(db, rt.github, repo)
    return Context(session=db, settings=rt.settings, policy=rt.policy, app=rt.github,
                   installation_id=installation_id)


def _flash_result(result) -> None:
    text = result.message
    if result.problems:
        text += " " + " ".join(p.rstrip(".") + "." for p in result.problems)
    flash(text, "success" if result.status == applications.DONE else ("error" if not result.ok else "info"))


# --------------------------------------------------------------------------------------------
# The review queue and one request
# --------------------------------------------------------------------------------------------


@bp.get("/")
@maintainer_required
def queue():
    rt = runtime()
    scope = current_scope()
    filters = {k: v for k, v in {"tier": request.args.get("tier", "").strip(),
                                 "state": request.args.get("state", "").strip()}.items() if v}
    with Session(rt.engine) as db:
        page = review_queue(db, page_number(request.args.get("page")), repos=scope.visible_repositories(),
                            tier=filters.get("tier", ""), state=filters.get("state", ""))
        changes = [p for p in pending_domain_changes(db) if scope.covers(p.grant.repo)]
    return render_template("pages/admin_queue.html", queue=page, filters=filters, domain_changes=changes,
                           **_common())


def _shown(value) -> str:
    """A parsed form value as text for the page (Jinja escapes it)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_shown(v)}" for k, v in value.items())
    return str(value)


def _account_age_days(db: Session, req: AccessRequest) -> int | None:
    """The applicant's account age from GitHub (by numeric id), or None when it cannot be had."""
    try:
        user = _context(db, req.repo, req.installation_id).github.get_user_by_id(req.applicant_id)
        created = datetime.fromisoformat(str(user["created_at"]).replace("Z", "+00:00"))
    except (GitHubError, RetryLater, PermissionUnknown, KeyError, ValueError, TypeError):
        return None
    return (utcnow() - created).days


@bp.get("/requests/<int:request_id>")
@maintainer_required
def request_detail(request_id: int):
    rt = runtime()
    with Session(rt.engine) as db:
        req = db.get(AccessRequest, request_id)
        if req is None:
            abort(404, description="There is no such request.")
        require_scope_for(req.repo)
        item = queue_item(db, req)
        history = db.exec(select(AuditEvent).where(AuditEvent.request_id == req.id)
                          .order_by(AuditEvent.at, AuditEvent.id)).all()
        grant = grant_for_request(db, req)
        values = [(k, _shown(v)) for k, v in (req.values or {}).items()
                  if k != "contact" and v not in (None, "", [])]  # the contact is private
        account_age = _account_age_days(db, req)
    own = rt.policy.maintainers.forbid_self_approval and req.applicant_id == signed_in_user().id
    return render_template("pages/admin_request.html", item=item, history=history, grant=grant, values=values,
                           account_age=account_age, open_states=RequestState.OPEN, own_request=own, **_common())


def _decide_request(request_id: int, decide) -> Response:
    """Load the request, check scope, run `decide(ctx, req, actor)` in one transaction."""
    rt = runtime()
    actor = signed_in_user().login
    try:
        with session_scope(rt.engine) as db:
            req = db.get(AccessRequest, request_id)
            if req is None:
                abort(404, description="There is no such request.")
            require_scope_for(req.repo)
            result = decide(_context(db, req.repo, req.installation_id), req, actor)
            _flash_result(result)
    except (GitHubError, RetryLater, PermissionUnknown):
        flash(GITHUB_DOWN, "error")
    return redirect(url_for("dashboard.request_detail", request_id=request_id))


@bp.post("/requests/<int:request_id>/approve")
@maintainer_required
def approve(request_id: int):
    tier = _text("tier") or None
    force = request.form.get("force") == "1"
    actor_id = signed_in_user().id
    return _decide_request(request_id, lambda ctx, req, actor: applications.approve(
        ctx, req, actor, tier=tier, force=force, source=SOURCE, actor_id=actor_id))


@bp.post("/requests/<int:request_id>/reject")
@maintainer_required
def reject(request_id: int):
    reason = _text("reason")
    if not reason:
        flash("Please give the applicant a reason: it is shown in the issue.", "error")
        return redirect(url_for("dashboard.request_detail", request_id=request_id) + "#decide")
    return _decide_request(request_id, lambda ctx, req, actor: applications.reject(
        ctx, req, actor, reason, source=SOURCE))


@bp.post("/requests/<int:request_id>/needs-info")
@maintainer_required
def needs_info(request_id: int):
    message = _text("message")
    if not message:
        flash("Please say what the applicant should change or add.", "error")
        return redirect(url_for("dashboard.request_detail", request_id=request_id) + "#decide")
    return _decide_request(request_id, lambda ctx, req, actor: applications.needs_info(
        ctx, req, actor, message, source=SOURCE))


# --------------------------------------------------------------------------------------------
# Pending domain additions (from the portal)
# --------------------------------------------------------------------------------------------


def _decide_domain(change_id: int, decide) -> Response:
    rt = runtime()
    actor = signed_in_user().login
    try:
        with session_scope(rt.engine) as db:
            change = db.get(DomainChange, change_id)
            if change is None:
                abort(404, description="There is no such domain request.")
            grant = db.get(Grant, change.grant_id)
            require_scope_for(grant.repo)
            result = decide(db, change, actor)
            comment = domain_changes.issue_comment(grant, result, actor)
            if comment is not None:
                _context(db, grant.repo, None).github.post_comment_once(grant.repo, grant.issue_number, *comment)
            flash(f"{result.domain}: {result.status}.", "success")
    except domain_changes.Refused as exc:
        flash(str(exc), "error")
    except (GitHubError, RetryLater, PermissionUnknown):
        flash(GITHUB_DOWN, "error")
    return redirect(url_for("dashboard.queue"))


@bp.post("/domain-changes/<int:change_id>/approve")
@maintainer_required
def approve_domain(change_id: int):
    policy = runtime().policy
    actor_id = signed_in_user().id
    return _decide_domain(change_id, lambda db, change, actor: domain_changes.approve(
        db, policy, change, actor, actor_id=actor_id))


@bp.post("/domain-changes/<int:change_id>/reject")
@maintainer_required
def reject_domain(change_id: int):
    reason = _text("reason")
    return _decide_domain(change_id, lambda db, change, actor: domain_changes.reject(db, change, actor, reason))


# --------------------------------------------------------------------------------------------
# Grants
# --------------------------------------------------------------------------------------------


@bp.get("/grants")
@maintainer_required
def grants():
    f = GrantFilter.from_args(request.args)
    statement = grants_query(f)
    repos = current_scope().visible_repositories()
    if repos is not None:  # a repository's maintainer sees the grants made from its requests only
        statement = statement.where(Grant.repo.in_(repos))
    with Session(runtime().engine) as db:
        results = paginate(db, statement, page_number(request.args.get("page")))
    return render_template("pages/admin_grants.html", results=results, filters=f, active_filters=f.active_filters,
                           **_common())


@bp.get("/grants/<int:grant_id>")
@maintainer_required
def grant_detail(grant_id: int):
    rt = runtime()
    with Session(rt.engine) as db:
        grant = db.get(Grant, grant_id)
        if grant is None:
            abort(404, description="There is no such grant.")
        require_scope_for(grant.repo)
        view = grant_view(db, rt.policy, grant)
        history = db.exec(select(AuditEvent).where(AuditEvent.grant_id == grant.id)
                          .order_by(AuditEvent.at, AuditEvent.id)).all()
        versions = db.exec(select(AllowlistChange).where(AllowlistChange.grant_id == grant.id)
                           .order_by(AllowlistChange.version)).all()
    return render_template("pages/admin_grant.html", view=view, history=history, versions=versions,
                           may_act=current_scope().covers(grant.repo), **_common())


def _change_grant(grant_id: int, change) -> Response:
    rt = runtime()
    actor = signed_in_user().login
    try:
        with session_scope(rt.engine) as db:
            grant = db.get(Grant, grant_id)
            if grant is None:
                abort(404, description="There is no such grant.")
            require_scope_for(grant.repo)
            request_row = db.get(AccessRequest, grant.request_id) if grant.request_id else None
            ctx = _context(db, grant.repo, request_row.installation_id if request_row else None)
            _flash_result(change(ctx, grant, actor))
    except (GitHubError, RetryLater, PermissionUnknown):
        flash(GITHUB_DOWN, "error")
    return redirect(url_for("dashboard.grant_detail", grant_id=grant_id))


@bp.post("/grants/<int:grant_id>/tier")
@maintainer_required
def change_tier(grant_id: int):
    tier = _text("tier")
    actor_id = signed_in_user().id
    return _change_grant(grant_id, lambda ctx, grant, actor: applications.change_tier(
        ctx, grant, actor, tier, source=SOURCE, actor_id=actor_id))


@bp.post("/grants/<int:grant_id>/revoke")
@maintainer_required
def revoke(grant_id: int):
    reason = _text("reason")
    if not reason:
        flash("Please give a reason for the revocation: it is recorded and shown in the issue.", "error")
        return redirect(url_for("dashboard.grant_detail", grant_id=grant_id))
    return _change_grant(grant_id, lambda ctx, grant, actor: applications.revoke(
        ctx, grant, actor, reason, source=SOURCE))


# --------------------------------------------------------------------------------------------
# Audit trail and gateways
# --------------------------------------------------------------------------------------------


@bp.get("/audit")
@admin_required
def audit():
    f = AuditFilter.from_args(request.args)
    with Session(runtime().engine) as db:
        events = paginate(db, audit_query(f), page_number(request.args.get("page")), per_page=50)
        actions = audit_actions(db)
    return render_template("pages/admin_audit.html", events=events, filters=f, active_filters=f.active_filters,
                           problems=f.problems(), actions=actions, **_common())


@bp.get("/audit.csv")
@admin_required
def audit_csv():
    f = AuditFilter.from_args(request.args)
    engine = runtime().engine

    def generate():
        with Session(engine) as db:
            yield from audit_export.csv_lines(db, audit_query(f))

    filename = f"beekeeper-audit-{datetime.now(UTC):%Y%m%d-%H%M%S}.csv"
    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "no-store"})


@bp.get("/gateways")
@admin_required
def gateways():
    """The registered gateway credentials with their pull figures (bot.allowlist.gateways writes those in
    batches, at most `allowlist.pull_stats_flush_seconds` behind)."""
    with Session(runtime().engine) as db:
        rows = gateways_service.list_gateways(db)
        version = current_version(db)
    return render_template("pages/admin_gateways.html", gateways=rows, current_version=version, **_common())


# --------------------------------------------------------------------------------------------
# Overview: the figures over time, drawn (bot.web.overview, bot.web.charts)
# --------------------------------------------------------------------------------------------


def _overview_repositories() -> list[str] | None:
    """The repositories whose figures the signed-in maintainer may see (None: all of them)."""
    return visible_repositories()


def _overview_figures() -> dict:
    rt = runtime()
    with Session(rt.engine) as db:
        return overview_service.overview(db, rt.policy, _overview_repositories())


@bp.get("/overview")
@maintainer_required
def overview():
    figures = _overview_figures()
    return render_template("pages/admin_overview.html", figures=figures, charts=overview_charts(figures),
                           **_common())


@bp.get("/overview.json")
@maintainer_required
def overview_json():
    response = jsonify(_overview_figures())
    response.headers["Cache-Control"] = "no-store"
    return response
