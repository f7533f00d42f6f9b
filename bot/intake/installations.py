"""Handlers that keep the Installation table in step with where the app is installed."""

from __future__ import annotations

from bot.core.clock import utcnow
from bot.core.models import Installation
from bot.intake.router import Context, Event, router


def _repo_names(repos: list[dict] | None) -> list[str]:
    return sorted({r["full_name"] for r in repos or [] if r.get("full_name")})


@router.on("installation", "created", "deleted", "suspend", "unsuspend", "new_permissions_accepted")
def track_installation(event: Event, ctx: Context) -> None:
    data = event.payload.get("installation") or {}
    if "id" not in data:
        return
    row = ctx.session.get(Installation, data["id"]) or Installation(
        id=data["id"], account_login=(data.get("account") or {}).get("login", "")
    )
    if event.action == "created":
        row.repositories = _repo_names(event.payload.get("repositories"))
    row.active = event.action not in ("deleted", "suspend")
    row.updated_at = utcnow()
    ctx.session.add(row)


@router.on("installation_repositories", "added", "removed")
def track_installation_repositories(event: Event, ctx: Context) -> None:
    data = event.payload.get("installation") or {}
    if "id" not in data:
        return
    row = ctx.session.get(Installation, data["id"]) or Installation(
        id=data["id"], account_login=(data.get("account") or {}).get("login", "")
    )
    repos = set(row.repositories or [])
    repos |= set(_repo_names(event.payload.get("repositories_added")))
    repos -= set(_repo_names(event.payload.get("repositories_removed")))
    row.repositories = sorted(repos)
    row.updated_at = utcnow()
    ctx.session.add(row)
