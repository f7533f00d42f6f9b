"""Reconcile: bring every open request issue to where it should be, whatever events were missed.

Webhooks get lost (the web was down longer than GitHub's delivery history, the app was installed
on a repository that already had open requests, someone deleted the status comment). Reconcile
lists the open issues carrying the trigger label and, for each, does what the missed events
would have done — through the same services the handlers use:

- no request, or its status comment is gone          → review it (and auto-approve, as `opened` does)
- an open request whose body changed since its check → review it again (as `edited` does)
- a rejected or withdrawn request whose issue is open → review it again (as `reopened` does)
- an approved request whose issue is still open      → close it (as the approval does)
- managed labels that differ from the request state  → set them

Idempotent: every step compares first and writes only on a difference, so a second run in a row
makes no GitHub write and no database change. Each issue is its own transaction; one failing
issue is reported and the others still converge. The worker runs it every
`reconcile_interval_minutes` (policy); on PostgreSQL an advisory lock lets only one process of
the deployment run it at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlmodel import Session, select

from bot.core import audit
from bot.core.db import is_sqlite
from bot.core.models import AccessRequest, Grant, RequestState
from bot.github.client import NotFound
from bot.intake.router import Context
from bot.requests.applications import find_request, maybe_auto_approve
from bot.requests.labels import desired_labels, issue_label_names, managed_labels, sync_labels
from bot.requests.review import body_sha256, review_issue

log = logging.getLogger("beekeeper.reconcile")

ACTOR = "system"
ADVISORY_LOCK_KEY = 0x6265656B  # "beek": one reconcile at a time per PostgreSQL database

# What reconcile does to an issue (the report counts them by name).
REVIEW, RECHECK, REOPENED, CLOSE, LABELS = "review", "recheck", "reopened", "close", "labels"


@dataclass
class ReconcileReport:
    repos: list[str] = field(default_factory=list)
    issues: int = 0
    actions: dict[str, list[str]] = field(default_factory=dict)  # action -> ["owner/name#12", …]
    errors: list[str] = field(default_factory=list)
    skipped: bool = False  # another process holds the reconcile lock

    def note(self, action: str, ref: str) -> None:
        self.actions.setdefault(action, []).append(ref)

    @property
    def changed(self) -> int:
        return sum(len(refs) for refs in self.actions.values())

    def as_dict(self) -> dict:
        return {"repos": self.repos, "issues": self.issues, "changed": self.changed,
                "actions": {k: sorted(v) for k, v in sorted(self.actions.items())}, "errors": self.errors,
                "skipped": self.skipped}


# --------------------------------------------------------------------------------------------
# deciding
# --------------------------------------------------------------------------------------------


def _grant_tier(session: Session, request: AccessRequest) -> str | None:
    grant = session.exec(select(Grant).where(Grant.request_id == request.id).order_by(Grant.id.desc())).first()
    return grant.tier if grant is not None else None


def plan(ctx: Context, repo: str, issue: dict) -> list[str]:
    """What this open issue needs, in order; empty when it is where it should be."""
    request = find_request(ctx.session, repo, int(issue["number"]))
    if request is None:
        return [REVIEW]  # reviewing may approve it automatically, which closes it
    if request.state in (RequestState.REJECTED, RequestState.WITHDRAWN):
        return [REOPENED]  # its decision closed the issue; someone reopened it since
    close = [CLOSE] if request.state == RequestState.APPROVED else []
    if request.status_comment_id is None or ctx.github.get_comment(repo, request.status_comment_id) is None:
        return [REVIEW, *close]  # the review re-creates the comment and sets the labels
    if request.state in RequestState.OPEN and request.body_sha256 != body_sha256(issue.get("body")):
        return [RECHECK]
    return ([LABELS] if _labels_drift(ctx, request, issue) else []) + close


def _wanted_labels(ctx: Context, request: AccessRequest) -> set[str]:
    return desired_labels(ctx.policy, request.state, _grant_tier(ctx.session, request))


def _labels_drift(ctx: Context, request: AccessRequest, issue: dict) -> bool:
    have = set(issue_label_names(issue)) & managed_labels(ctx.policy)
    return have != _wanted_labels(ctx, request)


# --------------------------------------------------------------------------------------------
# acting
# --------------------------------------------------------------------------------------------


def _apply(ctx: Context, repo: str, issue: dict, steps: list[str]) -> None:
    number = int(issue["number"])
    request = None
    closed_by_review = False  # an automatic approval during the review closes the issue itself
    for step in steps:
        if step in (REVIEW, RECHECK, REOPENED):
            request = review_issue(ctx, repo, issue, reason="reopened" if step == REOPENED else "reconcile")
            maybe_auto_approve(ctx, request, source="reconcile")
            closed_by_review = request.issue_state == "closed"
        elif step == LABELS:
            request = find_request(ctx.session, repo, number)
            sync_labels(ctx.github, ctx.policy, repo, number, issue_label_names(issue), _wanted_labels(ctx, request))
        elif step == CLOSE:
            request = find_request(ctx.session, repo, number)
            if not closed_by_review:
                ctx.github.close_issue(repo, number, "completed")
            request.issue_state = "closed"
            ctx.session.add(request)
    if request is not None:
        audit.record(ctx.session, ACTOR, "request.reconciled", request_id=request.id, subject=f"{repo}#{number}",
                     source="reconcile", details={"steps": steps})


def _trigger_issues(gh, repo: str, triggers: list[str]):
    """Open issues carrying any request form's trigger label, each once."""
    seen: set[int] = set()
    for trigger in triggers:
        for issue in gh.list_issues(repo, labels=trigger, state="open"):
            if issue["number"] not in seen:
                seen.add(issue["number"])
                yield issue


def reconcile_repo(runtime, repo: str, installation_id: int, report: ReconcileReport, *,
                   dry_run: bool = False) -> None:
    gh = runtime.github.for_installation(installation_id)
    for issue in _trigger_issues(gh, repo, runtime.policy.trigger_labels):
        report.issues += 1
        ref = f"{repo}#{issue['number']}"
        session = Session(runtime.engine, expire_on_commit=False)
        try:
            ctx = Context(session=session, settings=runtime.settings, policy=runtime.policy, app=runtime.github,
                          installation_id=installation_id)
            steps = plan(ctx, repo, issue)
            if steps and not dry_run:
                _apply(ctx, repo, issue, steps)
                session.commit()
            for step in steps:
                report.note(step, ref)
            if steps:
                log.info("reconcile %s: %s%s", ref, ", ".join(steps), " (dry run)" if dry_run else "")
        except Exception as exc:  # noqa: BLE001 - one broken issue must not stop the others
            session.rollback()
            report.errors.append(f"{ref}: {type(exc).__name__}: {str(exc)[:300]}")
            log.warning("reconcile %s failed: %s: %s", ref, type(exc).__name__, exc)
        finally:
            session.close()


def served_repositories(runtime, repos: list[str] | None = None) -> tuple[dict[str, int], list[str]]:
    """(owner/name → installation id, repositories without the app) for the repositories served:
    `repos` if given, else the policy's `repositories`, else the only repository of the
    (unsuspended) installations — none when there are several (see bot.core.served)."""
    github = runtime.github
    wanted = repos or runtime.policy.repositories
    found: dict[str, int] = {}
    missing: list[str] = []
    if wanted:
        for repo in wanted:
            try:
                found[repo] = int(github.repo_installation(repo)["id"])
            except NotFound:
                missing.append(repo)
        return found, missing
    for installation in github.list_installations():
        if installation.get("suspended_at"):
            continue
        for repo in github.for_installation(installation["id"]).list_repositories():
            found[repo] = int(installation["id"])
    if len(found) > 1:  # bot.core.served: with no repositories named, only a lone installed one is served
        log.warning("the policy names no repositories and the app is installed on %d: serving none (set "
                    "`repositories` in the policy)", len(found))
        return {}, missing
    return found, missing


@contextmanager
def _only_one_at_a_time(engine) -> Iterator[bool]:
    """True when this process may reconcile now (PostgreSQL advisory lock; SQLite: always)."""
    if is_sqlite(engine):
        yield True
        return
    with engine.connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}).scalar()
        conn.commit()
        try:
            yield bool(got)
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
                conn.commit()


def reconcile(runtime, *, repos: list[str] | None = None, dry_run: bool = False,
              progress: Callable[[str, int, int], None] | None = None) -> ReconcileReport:
    """Reconcile every served repository (or only `repos`); see the module docstring.
    `progress(repo, done, total)` is called after each repository (the CLI's progress bar)."""
    report = ReconcileReport()
    with _only_one_at_a_time(runtime.engine) as allowed:
        if not allowed:
            report.skipped = True
            log.info("reconcile skipped: another process is reconciling")
            return report
        targets, not_installed = served_repositories(runtime, repos)
        report.errors += [f"{repo}: the app is not installed on this repository" for repo in not_installed]
        for done, (repo, installation_id) in enumerate(sorted(targets.items()), start=1):
            report.repos.append(repo)
            reconcile_repo(runtime, repo, installation_id, report, dry_run=dry_run)
            if progress is not None:
                progress(repo, done, len(targets))
    return report


# --------------------------------------------------------------------------------------------
# the worker's periodic job
# --------------------------------------------------------------------------------------------


def periodic_reconcile(runtime) -> None:
    report = reconcile(runtime)
    if report.changed or report.errors:
        log.info("periodic reconcile: %s", report.as_dict())


def schedule(runtime) -> bool:
    """Register the periodic reconcile on this Runtime (once) when the policy asks for it."""
    minutes = runtime.policy.reconcile_interval_minutes
    if minutes <= 0 or not runtime.settings.github_app_configured:
        return False
    if any(job is periodic_reconcile for _, job in runtime.periodic):
        return True
    runtime.periodic.append((minutes * 60.0, periodic_reconcile))
    return True
