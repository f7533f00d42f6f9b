"""The events that drive the request state machine (bot.requests.applications).

- `issue_comment.created`: slash-commands (bot.requests.commands). Only new comments: an edit must never
  turn old text into a decision.
- `issues.closed` by the applicant: the request is withdrawn.
- `issues.opened/edited/reopened/labeled`: policy auto-approval of what the review validated.

This module is imported only by bot.intake.handlers, after bot.requests.issue_events, so on the same event the
review's handler is registered — and runs — first; auto-approval then reads the row it stored
in the same session. (Services such as the dashboard import bot.requests.applications, never this.)
"""

from __future__ import annotations

from bot.core.models import RequestState
from bot.intake.router import Context, Event, router
from bot.requests import commands
from bot.requests.applications import find_request, maybe_auto_approve, withdraw
from bot.requests.review import reviewed_key


@router.on("issue_comment", "created")
def handle_command_comment(event: Event, ctx: Context) -> None:
    """Slash-commands. Only new comments: an edit must never turn old text into a decision."""
    commands.run_comment(ctx, event)


@router.on("issues", "closed")
def withdraw_when_author_closes(event: Event, ctx: Context) -> None:
    """The applicant closing their own open request withdraws it. Closes by our bot (after a
    decision) or by maintainers are not withdrawals."""
    issue = event.payload.get("issue") or {}
    if not event.repo or not issue.get("number"):
        return
    request = find_request(ctx.session, event.repo, int(issue["number"]))
    if request is None:
        return
    request.issue_state = "closed"
    ctx.session.add(request)
    sender = event.sender
    if sender.get("type") == "Bot" or int(sender.get("id") or 0) != request.applicant_id:
        return
    if request.state not in RequestState.OPEN:
        return
    withdraw(ctx, request, sender.get("login") or request.applicant_login, source=f"delivery:{event.delivery_id}")


@router.on("issues", "opened", "edited", "reopened", "labeled")
def auto_approve(event: Event, ctx: Context) -> None:
    """Runs after the review handler (bot.requests.issue_events) in the same session: approves what the
    policy approves by itself."""
    issue = event.payload.get("issue") or {}
    if not event.repo or not issue.get("number") or "pull_request" in issue:
        return
    number = int(issue["number"])
    # The review handler, which ran just before in this session, leaves the row it stored.
    request = ctx.extras.get(reviewed_key(event.repo, number)) or find_request(ctx.session, event.repo, number)
    if request is not None:
        maybe_auto_approve(ctx, request, source=f"delivery:{event.delivery_id}")
