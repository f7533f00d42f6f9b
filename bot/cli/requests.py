"""Maintainer commands for a terminal: requests, grants and the audit trail.

    beekeeper requests list [--state STATE]…        beekeeper grants list [--status …] [--tier …]
    beekeeper requests show REQUEST                 beekeeper grants show GRANT
    beekeeper requests approve REQUEST [--tier T] [--force]
    beekeeper requests reject REQUEST --reason …    beekeeper grants set-tier GRANT TIER
    beekeeper requests needs-info REQUEST --message … beekeeper grants revoke GRANT --reason …
    beekeeper audit [--grant GRANT] [--request REQUEST]

Decisions go through the same state machine as the slash-commands (bot.requests.applications), so they
have the same guards, the same audit rows and the same effect on the issue: the applicant gets
the same comment, labels and close. The actor is `cli:<OS user>`, or the GitHub login given with
`--as` (recorded with the OS user as the source).
"""

from __future__ import annotations

import getpass
import json
import re

import click
from sqlalchemy import or_
from sqlmodel import Session, select

from bot.cli import State, pass_state
from bot.core.clock import isoformat
from bot.core.db import session_scope
from bot.core.models import AccessRequest, ApiKey, AuditEvent, Grant, GrantDomain, RequestState

_ISSUE_REF = re.compile(r"^(?P<repo>[^/\s#]+/[^/\s#]+)#(?P<number>\d+)$")


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def actor_and_source(as_login: str | None) -> tuple[str, str]:
    user = os_user()
    if as_login:
        return as_login.strip().lstrip("@")[:64], f"cli:{user}"[:300]
    return f"cli:{user}"[:64], "cli"


def actor_id_for(runtime, ctx, as_login: str | None) -> int | None:
    """The numeric GitHub id of the `--as` login (None without --as), asked of GitHub: the
    self-approval rule compares ids, so a renamed account is still recognised as the owner."""
    from bot.github.client import GitHubError, NotFound

    if not as_login:
        return None
    login = as_login.strip().lstrip("@")
    try:
        gh = ctx.github if ctx.installation_id else None
        if gh is None:
            installations = runtime.github.list_installations()
            if not installations:
                raise click.ClickException("the app is not installed anywhere: cannot look up --as on GitHub")
            gh = runtime.github.for_installation(int(installations[0]["id"]))
        return int(gh.get_user(login)["id"])
    except NotFound:
        raise click.ClickException(f"--as {login}: GitHub knows no such account") from None
    except GitHubError as exc:
        raise click.ClickException(f"--as {login}: GitHub did not answer ({exc.status}); nothing was changed") from None


def _find_request(session: Session, ref: str) -> AccessRequest:
    """A request by id, or by `owner/repo#number`."""
    match = _ISSUE_REF.match(ref.strip())
    if match:
        row = session.exec(select(AccessRequest).where(AccessRequest.repo == match["repo"],
                                                       AccessRequest.issue_number == int(match["number"]))).first()
    else:
        row = session.get(AccessRequest, int(ref)) if ref.strip().isdigit() else None
    if row is None:
        raise click.ClickException(f"no request {ref!r} (give its id or owner/repo#number)")
    return row


def _find_grant(session: Session, ref: str) -> Grant:
    from bot.access.grants import find_grant

    grant = find_grant(session, ref)
    if grant is None:
        raise click.ClickException(f"no grant {ref!r} (give its id or app id)")
    return grant


def _context(runtime, session: Session, request: AccessRequest | None):
    """A handler Context for the request's installation (looked up on GitHub when not stored)."""
    ctx = runtime.make_context(session)
    if request is not None:
        installation_id = request.installation_id
        if installation_id is None:
            installation_id = runtime.github.repo_installation(request.repo)["id"]
        ctx.installation_id = installation_id
    return ctx


def _report(result) -> None:
    """Print a transition's Result; a refusal is an error exit (nothing changed)."""
    lines = [result.message, *(f"  - {p}" for p in result.problems)]
    if result.status == "refused":
        raise click.ClickException("refused: " + "\n".join(lines))
    click.echo(("" if result.status == "done" else "nothing to do: ") + "\n".join(lines))


def _decide(state, ref: str, as_login: str | None, decide) -> None:
    """Run `decide(ctx, request, actor, source, actor_id)` on request REF in one transaction (the
    same state machine as the slash-commands), then print its outcome."""
    actor, source = actor_and_source(as_login)
    with session_scope(state.runtime.engine) as session:
        request = _find_request(session, ref)
        ctx = _context(state.runtime, session, request)
        result = decide(ctx, request, actor, source, actor_id_for(state.runtime, ctx, as_login))
    _report(result)


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"


def _request_dict(row: AccessRequest) -> dict:
    return {"id": row.id, "repo": row.repo, "issue": row.issue_number, "state": row.state,
            "requested_tier": row.requested_tier, "applicant": row.applicant_login,
            "applicant_id": row.applicant_id, "app_id": row.referrer, "app_name": row.app_name,
            "checks_ok": row.checks_ok, "created_at": isoformat(row.created_at),
            "updated_at": isoformat(row.updated_at), "decided_by": row.decided_by}


def _grant_dict(grant: Grant, domains: list[str]) -> dict:
    return {"id": grant.id, "app_id": grant.app_id, "tier": grant.tier, "status": grant.status,
            "github_user_id": grant.github_user_id, "github_login": grant.github_login,
            "domains": domains, "request_id": grant.request_id,
            "issue": f"{grant.repo}#{grant.issue_number}" if grant.repo else None,
            "approved_by": grant.approved_by, "source": grant.source, "created_at": isoformat(grant.created_at),
            "updated_at": isoformat(grant.updated_at), "revoked_at": isoformat(grant.revoked_at),
            "revoke_reason": grant.revoke_reason, "version": grant.version}


def _event_dict(event: AuditEvent) -> dict:
    return {"id": event.id, "at": isoformat(event.at), "actor": event.actor, "action": event.action,
            "request_id": event.request_id, "grant_id": event.grant_id, "subject": event.subject,
            "source": event.source, "details": event.details}


STATE_CHOICES = ["open", *RequestState.ALL]
as_option = click.option("--as", "as_login", metavar="LOGIN",
                         help="The GitHub login of the maintainer deciding (default: cli:<OS user>).")


def register(main: click.Group) -> None:
    # ---- requests ---------------------------------------------------------------------------

    @main.group("requests")
    def requests_group() -> None:
        """Special-access requests: list, show and decide."""

    @requests_group.command("list")
    @click.option("--state", "states", multiple=True, type=click.Choice(STATE_CHOICES),
                  help="Only these states (repeatable); open = received, needs_info and validated.")
    @click.option("--repo", default=None, help="Only this owner/repo.")
    @click.option("--limit", default=100, show_default=True, type=int)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    @pass_state
    def requests_list(state, states: tuple[str, ...], repo: str | None, limit: int, as_json: bool) -> None:
        """List requests, oldest open first."""
        wanted = {s for name in states for s in (RequestState.OPEN if name == "open" else (name,))}
        query = select(AccessRequest).order_by(AccessRequest.created_at, AccessRequest.id).limit(limit)
        if wanted:
            query = query.where(AccessRequest.state.in_(sorted(wanted)))
        if repo:
            query = query.where(AccessRequest.repo == repo)
        with Session(state.runtime.engine) as session:
            rows = session.exec(query).all()
        if as_json:
            for row in rows:
                click.echo(json.dumps(_request_dict(row)))
            return
        if not rows:
            click.echo("no requests")
            return
        for row in rows:
            issue = f"{row.repo}#{row.issue_number}"
            click.echo(f"{row.id:>5}  {issue:<28} {row.state:<10} {row.requested_tier or '-':<8} "
                       f"{row.applicant_login:<20} {row.referrer or '-':<20} {_when(row.updated_at)}")

    @requests_group.command("show")
    @click.argument("ref", metavar="REQUEST")
    @pass_state
    def requests_show(state, ref: str) -> None:
        """One request (by id or owner/repo#number) with its check results."""
        with Session(state.runtime.engine) as session:
            row = _find_request(session, ref)
            click.echo(json.dumps({**_request_dict(row), "checks": row.check_results}, indent=2, default=str))

    @requests_group.command("approve")
    @click.argument("ref", metavar="REQUEST")
    @click.option("--tier", default=None, help="Tier to grant (default: the one requested).")
    @click.option("--force", is_flag=True, help="Approve although checks failed.")
    @as_option
    @pass_state
    def requests_approve(state, ref: str, tier: str | None, force: bool, as_login: str | None) -> None:
        """Approve a request: grant, comment, labels, close — as /approve does."""
        from bot.requests import applications

        _decide(state, ref, as_login, lambda ctx, request, actor, source, actor_id: applications.approve(
            ctx, request, actor, tier=tier, force=force, source=source, actor_id=actor_id))

    @requests_group.command("reject")
    @click.argument("ref", metavar="REQUEST")
    @click.option("--reason", required=True, help="Shown to the applicant.")
    @as_option
    @pass_state
    def requests_reject(state, ref: str, reason: str, as_login: str | None) -> None:
        """Decline a request and close its issue as not planned."""
        from bot.requests import applications

        _decide(state, ref, as_login, lambda ctx, request, actor, source, _id: applications.reject(
            ctx, request, actor, reason, source=source))

    @requests_group.command("needs-info")
    @click.argument("ref", metavar="REQUEST")
    @click.option("--message", required=True, help="What the applicant should add or change.")
    @as_option
    @pass_state
    def requests_needs_info(state, ref: str, message: str, as_login: str | None) -> None:
        """Ask the applicant for changes (the issue stays open)."""
        from bot.requests import applications

        _decide(state, ref, as_login, lambda ctx, request, actor, source, _id: applications.needs_info(
            ctx, request, actor, message, source=source))

    # ---- grants -----------------------------------------------------------------------------

    @main.group("grants")
    def grants_group() -> None:
        """Grants: list, show, change tier, revoke."""

    @grants_group.command("list")
    @click.option("--status", type=click.Choice(["active", "revoked", "all"]), default="active", show_default=True)
    @click.option("--tier", default=None)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    @pass_state
    def grants_list(state, status: str, tier: str | None, as_json: bool) -> None:
        """List grants, newest first."""
        from bot.access.grants import active_domains

        query = select(Grant).order_by(Grant.id.desc())
        if status != "all":
            query = query.where(Grant.status == status)
        if tier:
            query = query.where(Grant.tier == tier.lower())
        with Session(state.runtime.engine) as session:
            rows = [(g, active_domains(session, g)) for g in session.exec(query).all()]
        if as_json:
            for grant, domains in rows:
                click.echo(json.dumps(_grant_dict(grant, domains)))
            return
        if not rows:
            click.echo("no grants")
            return
        for grant, domains in rows:
            click.echo(f"{grant.id:>5}  {grant.app_id:<24} {grant.tier:<8} {grant.status:<8} "
                       f"{grant.github_login:<20} {', '.join(domains) or '-'}")

    @grants_group.command("show")
    @click.argument("ref", metavar="GRANT")
    @pass_state
    def grants_show(state, ref: str) -> None:
        """One grant (by id or app id): domains, keys (masked), recent audit rows."""
        with Session(state.runtime.engine) as session:
            grant = _find_grant(session, ref)
            domains = session.exec(select(GrantDomain).where(GrantDomain.grant_id == grant.id)
                                   .order_by(GrantDomain.id)).all()
            keys = session.exec(select(ApiKey).where(ApiKey.grant_id == grant.id).order_by(ApiKey.id)).all()
            data = _grant_dict(grant, [d.domain for d in domains if d.active])
            data["removed_domains"] = [d.domain for d in domains if not d.active]
            data["keys"] = [{"kind": k.kind, "display": k.display, "created_at": isoformat(k.created_at),
                             "revoked_at": isoformat(k.revoked_at)} for k in keys]
            tier = state.runtime.policy.tier(grant.tier)
            data["limits"] = tier.limits() if tier else None
        click.echo(json.dumps(data, indent=2, default=str))

    @grants_group.command("set-tier")
    @click.argument("ref", metavar="GRANT")
    @click.argument("tier")
    @as_option
    @pass_state
    def grants_set_tier(state, ref: str, tier: str, as_login: str | None) -> None:
        """Move a grant to another tier (comments on its issue, moves the tier label)."""
        from bot.requests import applications

        actor, source = actor_and_source(as_login)
        with session_scope(state.runtime.engine) as session:
            grant = _find_grant(session, ref)
            request = session.get(AccessRequest, grant.request_id) if grant.request_id else None
            ctx = _context(state.runtime, session, request)
            result = applications.change_tier(ctx, grant, actor, tier, source=source,
                                              actor_id=actor_id_for(state.runtime, ctx, as_login))
        _report(result)

    @grants_group.command("revoke")
    @click.argument("ref", metavar="GRANT")
    @click.option("--reason", required=True, help="Shown to the applicant.")
    @as_option
    @pass_state
    def grants_revoke(state, ref: str, reason: str, as_login: str | None) -> None:
        """Revoke a grant: its keys and domains stop working; the issue is told why."""
        from bot.requests import applications

        actor, source = actor_and_source(as_login)
        with session_scope(state.runtime.engine) as session:
            grant = _find_grant(session, ref)
            request = session.get(AccessRequest, grant.request_id) if grant.request_id else None
            result = applications.revoke(_context(state.runtime, session, request), grant, actor, reason,
                                         source=source)
        _report(result)

    # ---- audit ------------------------------------------------------------------------------

    @main.group("audit", invoke_without_command=True)
    @click.option("--grant", "grant_ref", default=None, metavar="GRANT", help="Only rows about this grant.")
    @click.option("--request", "request_ref", default=None, metavar="REQUEST", help="Only rows about this request.")
    @click.option("--action", default=None, help="Only this action, e.g. grant.revoked (a trailing * matches a "
                  "prefix: request.*).")
    @click.option("--limit", default=50, show_default=True, type=int)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    @click.pass_context
    def audit_group(click_ctx: click.Context, grant_ref: str | None, request_ref: str | None, action: str | None,
                    limit: int, as_json: bool) -> None:
        """The audit trail, newest first: who did what, when, from which comment or delivery."""
        if click_ctx.invoked_subcommand is not None:
            return
        state = click_ctx.ensure_object(State)
        query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        with Session(state.runtime.engine) as session:
            if grant_ref:
                grant = _find_grant(session, grant_ref)
                about = [AuditEvent.grant_id == grant.id]
                if grant.request_id:
                    about.append(AuditEvent.request_id == grant.request_id)
                query = query.where(or_(*about))
            if request_ref:
                query = query.where(AuditEvent.request_id == _find_request(session, request_ref).id)
            if action:
                query = query.where(AuditEvent.action.startswith(action[:-1]) if action.endswith("*")
                                    else AuditEvent.action == action)
            rows = session.exec(query).all()
        if as_json:
            for event in rows:
                click.echo(json.dumps(_event_dict(event), default=str))
            return
        if not rows:
            click.echo("no audit rows")
            return
        for event in rows:
            target = event.subject or (f"grant {event.grant_id}" if event.grant_id else "-")
            click.echo(f"{event.at:%Y-%m-%d %H:%M:%S}  {event.actor:<20} {event.action:<24} {target:<28} "
                       f"{event.source or '-'}")

