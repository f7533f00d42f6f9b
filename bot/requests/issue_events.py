"""Issue events that (re)check a special-access request: opened, edited, reopened, labeled.

- edited: only when the body changed (`changes.body` in the payload); a title edit alone does
  not re-check.
- labeled: only when the trigger label is added (a request filed without it, or labelled later
  by a maintainer).
- An issue without a trigger label is ignored, unless its body clearly comes from a request
  form (or its title has the form's prefix and the body one of its headings): then the form's
  label is added and the request reviewed. With `free_text_requests.reply`, a new unlabelled
  issue that reads like an access request gets one comment pointing to the form (bot.requests.free_text).

Closing (withdrawal) and auto-approval belong to the application state machine, whose handlers
run after these on the same events, in the same database session.

Freshness: deliveries are not processed in the order they were sent (several workers, retries),
so a payload's body may be older than one already reviewed. The review therefore acts on the
issue as it is now: an `edited` event, or any event whose body differs from the one last
reviewed, fetches the issue (one GET) and reviews that. Two quick edits then converge on the
latest body whichever delivery finishes last.
"""

from __future__ import annotations

import logging

from bot.core.models import AccessRequest
from bot.github.client import NotFound
from bot.intake.router import Context, Event, router
from bot.requests import free_text
from bot.requests import labels as label_service
from bot.requests.review import body_sha256, locked_request, review_issue, reviewed_key
from bot.rules.forms import parse_issue_body, select_form

log = logging.getLogger("beekeeper.issue_events")


def _served(repo: str | None, ctx: Context) -> bool:
    from bot.core.served import ignore_unserved

    return not ignore_unserved(ctx.session, ctx.policy, ctx.app, repo, "an issue event")


def _body_changed(event: Event) -> bool:
    return "body" in (event.payload.get("changes") or {})


def _form_without_label(ctx: Context, repo: str, issue: dict):
    """The form an unlabelled issue was made from (its title prefix and one recognised heading,
    or most of the form's headings), else None."""
    spec, schema, titled = select_form(ctx.github, repo, ctx.policy, issue)
    parsed = parse_issue_body(issue.get("body"), schema, ctx.policy, spec=spec, labelled=titled)
    return spec if parsed.from_form else None


def _already_reviewed(request: AccessRequest | None, issue: dict) -> bool:
    """An issue opened from the form sends `opened` and `labeled` together: the second one finds
    the body already checked and does nothing."""
    return request is not None and request.body_sha256 == body_sha256(issue.get("body"))


def _add_trigger_label(ctx: Context, repo: str, issue: dict, trigger: str) -> None:
    colour, description = label_service.label_spec(ctx.policy, trigger)
    ctx.github.ensure_label(repo, trigger, colour, description)
    ctx.github.add_labels(repo, int(issue["number"]), [trigger])
    issue.setdefault("labels", []).append({"name": trigger})


@router.on("issues", "opened", "edited", "reopened", "labeled")
def review_request_issue(event: Event, ctx: Context) -> None:
    issue = event.payload.get("issue") or {}
    repo = event.repo
    if not issue.get("number") or "pull_request" in issue or not _served(repo, ctx):
        return
    if event.action == "edited" and not _body_changed(event):
        return
    triggers = ctx.policy.trigger_labels
    if event.action == "labeled" and (event.payload.get("label") or {}).get("name") not in triggers:
        return
    # Read once (and locked, so concurrent deliveries for one issue queue) for every decision
    # below and for the review itself.
    request = locked_request(ctx.session, repo, int(issue["number"]))
    if event.action == "labeled":
        if _already_reviewed(request, issue):
            return
    elif not set(triggers) & set(label_service.issue_label_names(issue)):
        # A maintainer who took the label off a known request meant it: only new issues get it back.
        if request is not None:
            return
        spec = _form_without_label(ctx, repo, issue)
        if spec is None:
            if event.action == "opened":
                free_text.maybe_point_to_form(ctx, repo, issue)
            return
        trigger = spec.labels[0]
        log.info("issue %s#%s looks like a request form without the %r label: adding it", repo,
                 issue["number"], trigger)
        _add_trigger_label(ctx, repo, issue, trigger)
    if _may_be_stale(event, request, issue):
        current = current_issue(ctx, repo, int(issue["number"]))
        if current is None:
            log.info("issue %s#%s no longer exists (deleted or transferred): not reviewed", repo, issue["number"])
            return
        issue = current
    try:
        with ctx.session.begin_nested():  # a vanished issue leaves no half-made request behind
            request = review_issue(ctx, repo, issue, reason=event.action or "", request=request)
        # For the handlers that run next on this event in this session (auto-approval): the row
        # as it now is, without reading it again.
        ctx.extras[reviewed_key(repo, int(issue["number"]))] = request
    except NotFound:
        if _issue_exists(ctx, repo, int(issue["number"])):
            raise
        log.info("issue %s#%s no longer exists (deleted or transferred): not reviewed", repo, issue["number"])


def _issue_exists(ctx: Context, repo: str, number: int) -> bool:
    try:
        ctx.github.get_issue(repo, number)
    except NotFound:
        return False
    return True


def _may_be_stale(event: Event, request: AccessRequest | None, issue: dict) -> bool:
    """An edit (another may have followed it), or a body other than the one last reviewed."""
    if event.action == "edited":
        return True
    return request is not None and request.body_sha256 != body_sha256(issue.get("body"))


def current_issue(ctx: Context, repo: str, number: int) -> dict | None:
    """The issue as GitHub has it now (one GET), or None when it no longer exists."""
    try:
        issue = ctx.github.get_issue(repo, number)
    except NotFound:
        return None
    return issue if isinstance(issue, dict) and issue.get("number") else None


def recheck_if_edited(ctx: Context, request: AccessRequest) -> bool:
    """Before a maintainer's decision: True when the issue's body is not the one last reviewed
    (an edit whose delivery is not processed yet, or is processed out of order). The request is
    then reviewed again on the current body (status comment and labels updated), so the decision
    can be made on what the issue says now. A vanished issue is not checked here (publishing the
    decision will fail on it)."""
    if not request.body_sha256:
        return False
    issue = current_issue(ctx, request.repo, request.issue_number)
    if issue is None or body_sha256(issue.get("body")) == request.body_sha256:
        # Unchanged: the decision's publish step may use this read instead of a second GET
        # (nothing of ours changes the issue's labels or state in between).
        if issue is not None:
            ctx.extras[("issue", request.repo, request.issue_number)] = issue
        return False
    log.info("issue %s#%s was edited since its last review: reviewing it again before the decision",
             request.repo, request.issue_number)
    review_issue(ctx, request.repo, issue, reason="edited")
    return True
