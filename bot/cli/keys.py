"""`beekeeper keys`: list, rotate and revoke a grant's keys from a terminal.

    beekeeper keys list [GRANT] [--all] [--json]
    beekeeper keys rotate GRANT [--grace-hours H] [--no-comment] [--as LOGIN]
    beekeeper keys revoke KEY_ID… --reason TEXT [--as LOGIN]
    beekeeper keys revoke --grant GRANT --reason TEXT [--no-comment] [--as LOGIN]

Keys are shown by id and display form only; Beekeeper cannot print a key (it keeps hashes).
A rotation makes a new key claimable by the grant's owner on the claim page. Grant-level
changes (rotate, revoke --grant) comment on the grant's issue, never with key material.
"""

from __future__ import annotations

import json

import click
from sqlmodel import Session, select

from bot.access import keys
from bot.access.grants import find_grant
from bot.cli import pass_state
from bot.cli.requests import actor_and_source
from bot.core.clock import isoformat, utcnow
from bot.core.comments import Trusted, marker, render
from bot.core.db import session_scope
from bot.core.errors import RetryLater
from bot.core.models import ApiKey, Grant
from bot.github.client import GitHubError

as_option = click.option("--as", "as_login", metavar="LOGIN",
                         help="The GitHub login of the maintainer acting (default: cli:<OS user>).")
no_comment_option = click.option("--no-comment", is_flag=True, help="Do not comment on the grant's issue.")


def _grant(session: Session, ref: str) -> Grant:
    grant = find_grant(session, ref)
    if grant is None:
        raise click.ClickException(f"no grant {ref!r} (give its id or app id)")
    return grant


def _key_dict(key: ApiKey, grant: Grant | None) -> dict:
    return {"id": key.id, "grant_id": key.grant_id, "app_id": grant.app_id if grant else None, "kind": key.kind,
            "display": key.display, "state": keys.key_state(key), "created_at": isoformat(key.created_at),
            "expires_at": isoformat(key.expires_at), "revoked_at": isoformat(key.revoked_at),
            "revoke_reason": key.revoke_reason}


def tell_issue(runtime, grant: Grant, kind: str, body_for) -> None:
    """Comment on the grant's issue (if it has one). The change is already committed, so a
    failure here is reported and costs only the comment."""
    if not grant.repo or not grant.issue_number:
        return
    from bot.requests.permissions import PermissionUnknown, installation_for

    try:
        with Session(runtime.engine) as session:
            installation_id = installation_for(session, runtime.github, grant.repo)
        hidden = marker(kind, f"g{grant.id}:v{grant.version}")
        gh = runtime.github.for_installation(installation_id)
        gh.post_comment_once(grant.repo, grant.issue_number, hidden, body_for(hidden))
    except (GitHubError, RetryLater, PermissionUnknown) as exc:
        click.echo(f"warning: could not comment on {grant.repo}#{grant.issue_number}: {exc}", err=True)


def register(main: click.Group) -> None:
    @main.group("keys")
    def keys_group() -> None:
        """Grant keys: list, rotate, revoke (never shown: only hashes are kept)."""

    @keys_group.command("list")
    @click.argument("ref", metavar="[GRANT]", required=False)
    @click.option("--all", "show_all", is_flag=True, help="Include revoked and expired keys.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    @pass_state
    def keys_list(state, ref: str | None, show_all: bool, as_json: bool) -> None:
        """Keys of one grant (by id or app id) or of every grant, newest first."""
        with Session(state.runtime.engine) as session:
            query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
            if ref:
                query = query.where(ApiKey.grant_id == _grant(session, ref).id)
            now = utcnow()
            rows = [k for k in session.exec(query).all() if show_all or keys.is_live(k, now)]
            grant_ids = sorted({k.grant_id for k in rows})
            grants = {g.id: g for g in session.exec(select(Grant).where(Grant.id.in_(grant_ids)))}
        if as_json:
            for key in rows:
                click.echo(json.dumps(_key_dict(key, grants.get(key.grant_id))))
            return
        if not rows:
            click.echo("no keys")
            return
        for key in rows:
            data = _key_dict(key, grants.get(key.grant_id))
            click.echo(f"{key.id:>5}  {data['app_id'] or '-':<24} {key.kind:<11} {key.display:<20} {data['state']:<8} "
                       f"created {data['created_at']}  expires {data['expires_at'] or '-'}")

    @keys_group.command("rotate")
    @click.argument("ref", metavar="GRANT")
    @click.option("--grace-hours", type=click.FloatRange(min=0), default=None,
                  help="How long the current keys keep working (default: policy keys.rotation_grace_hours; "
                       "0 = stop at once).")
    @no_comment_option
    @as_option
    @pass_state
    def keys_rotate(state, ref: str, grace_hours: float | None, no_comment: bool, as_login: str | None) -> None:
        """Make a new key claimable by the grant's owner; current keys expire after the grace period."""
        from bot.requests.key_commands import rotation_notice

        runtime = state.runtime
        actor, source = actor_and_source(as_login)
        grace = runtime.policy.keys.rotation_grace_hours if grace_hours is None else grace_hours
        with session_scope(runtime.engine) as session:
            grant = _grant(session, ref)
            rotation = keys.rotate(session, grant, actor, grace_hours=grace, source=source)
        if rotation.status == keys.REFUSED:
            raise click.ClickException("refused: " + rotation.message)
        claim_at = keys.claim_url(runtime.settings.public_url, grant.app_id)
        if rotation.status == keys.NOOP:
            click.echo(f"nothing to do: {rotation.message} Claim page: {claim_at}")
            return
        expiry = f"; current keys work until {keys.utc_text(rotation.expires_at)}" if rotation.keys else ""
        click.echo(f"{rotation.message}{expiry}. The owner ({grant.github_login}) claims the new key at {claim_at}")
        if not no_comment:
            tell_issue(runtime, grant, "keys-rotated", lambda hidden: rotation_notice(
                grant, rotation, public_url=runtime.settings.public_url, actor=None, grace_hours=grace,
                marker=hidden, mention=_mention(grant)))

    @keys_group.command("revoke")
    @click.argument("key_ids", metavar="[KEY_ID]...", nargs=-1, type=int)
    @click.option("--grant", "grant_ref", default=None, metavar="GRANT", help="Revoke every key of this grant.")
    @click.option("--reason", required=True, help="Recorded in the audit trail (and shown in the issue with --grant).")
    @no_comment_option
    @as_option
    @pass_state
    def keys_revoke(state, key_ids: tuple[int, ...], grant_ref: str | None, reason: str, no_comment: bool,
                    as_login: str | None) -> None:
        """Revoke keys at once: some by id, or all of a grant with --grant."""
        if bool(key_ids) == bool(grant_ref):
            raise click.UsageError("give key ids or --grant GRANT (one of the two)")
        runtime = state.runtime
        actor, source = actor_and_source(as_login)
        with session_scope(runtime.engine) as session:
            if grant_ref:
                grant = _grant(session, grant_ref)
                revoked = keys.revoke_grant_keys(session, grant, actor, reason, source=source)
            else:
                rows = [session.get(ApiKey, key_id) for key_id in key_ids]
                missing = [str(i) for i, row in zip(key_ids, rows, strict=True) if row is None]
                if missing:
                    raise click.ClickException(f"no key with id {', '.join(missing)}")
                revoked = [row for row in rows if keys.revoke_key(session, row, actor, reason, source=source)]
        if not revoked:
            click.echo("nothing to do: those keys were already revoked")
            return
        for key in revoked:
            click.echo(f"revoked key {key.id} ({key.display})")
        if grant_ref and not no_comment:
            from bot.requests.applications import quote_block

            tell_issue(runtime, grant, "keys-revoked", lambda hidden: render(
                "keys_revoked.md", marker=Trusted(hidden), mention=_mention(grant), actor=actor,
                app_id=keys.app_id_code(grant.app_id), reason=quote_block(reason),
                claim_link=keys.claim_link(runtime.settings.public_url, grant.app_id)))


def _mention(grant: Grant):
    from bot.requests.outcomes import safe_mention

    return safe_mention(grant.github_login)
