"""`beekeeper doctor`: is this installation healthy, and if not, what exactly to do about it.

Each check returns Findings: what was found, and — when something is wrong — a fix in plain
words (which setting, which page, which command). Checks that need something an earlier check
found missing are skipped rather than failing twice for one cause. Nothing here changes state,
except creating missing labels when asked (`fix_labels=True`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from urllib.parse import urlparse

import yaml
from sqlalchemy import func, text
from sqlmodel import Session, select

from bot.core.clock import utcnow
from bot.core.db import is_sqlite
from bot.core.models import Delivery, DeliveryStatus
from bot.github.client import GitHubError, GitHubUnavailable
from bot.ops import migrate
from bot.requests.labels import label_spec, managed_labels

log = logging.getLogger("beekeeper.doctor")

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
PERMISSION_LEVELS = {"none": 0, "read": 1, "write": 2, "admin": 3}
STUCK_AFTER = timedelta(minutes=5)  # a due delivery older than this means no worker is draining
RECENT_DELIVERIES = 20  # how many of GitHub's latest deliveries the webhook check looks at


@dataclass
class Finding:
    check: str
    status: str  # ok | warn | fail | skip
    message: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, status: str, message: str, fix: str = "") -> Finding:
        finding = Finding(check, status, message, fix)
        self.findings.append(finding)
        return finding

    @property
    def ok(self) -> bool:
        return not any(f.status == FAIL for f in self.findings)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for f in self.findings if f.status == s) for s in (OK, WARN, FAIL, SKIP)}


# --------------------------------------------------------------------------------------------
# what the app should have: app.yml
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    permissions: dict[str, str]
    events: list[str]


def expected_from_manifest() -> Expected:
    """The permissions and events app.yml asks for (the working directory's copy wins)."""
    from bot.web.setup import manifest_path

    try:
        data = yaml.safe_load(manifest_path().read_text()) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    return Expected(permissions=dict(data.get("default_permissions") or {"issues": "write", "metadata": "read"}),
                    events=list(data.get("default_events") or ["issues", "issue_comment"]))


def missing_permissions(have: dict | None, want: dict[str, str]) -> list[str]:
    """`name: level` for each permission in `want` that `have` grants at a lower level."""
    have = have or {}
    return [f"{name}: {level}" for name, level in sorted(want.items())
            if PERMISSION_LEVELS.get(have.get(name, "none"), 0) < PERMISSION_LEVELS.get(level, 0)]


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


def check_settings(report: Report, settings) -> None:
    missing = settings.missing_github_settings()
    if missing:
        report.add("settings", FAIL, f"missing: {', '.join(missing)}",
                   "Run `beekeeper serve` and open http://localhost:8000/setup to register the GitHub App from "
                   "app.yml (it writes them to .env), or copy them from the app's settings page into .env.")
    else:
        report.add("settings", OK, f"GitHub App {settings.github_app_id} configured")
    host = urlparse(settings.public_url).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1"):
        report.add("public URL", WARN, f"BEEKEEPER_PUBLIC_URL is {settings.public_url}: GitHub cannot reach it",
                   "Set BEEKEEPER_PUBLIC_URL to the address GitHub and applicants use (https://…), or a tunnel's.")
    elif not settings.public_url.startswith("https://"):
        report.add("public URL", WARN, f"BEEKEEPER_PUBLIC_URL {settings.public_url} is plain HTTP",
                   "Serve Beekeeper over HTTPS (behind a TLS proxy) and set BEEKEEPER_PUBLIC_URL to the https:// URL.")
    else:
        report.add("public URL", OK, settings.public_url)
    if settings.webhook_secret and len(settings.webhook_secret.get_secret_value()) < 16:
        report.add("webhook secret", WARN, "BEEKEEPER_WEBHOOK_SECRET is shorter than 16 characters",
                   "Use a long random value (`python -c 'import secrets; print(secrets.token_hex(32))'`) here "
                   "and on the app's settings page (Webhook secret).")
    if not settings.oauth_configured:
        report.add("sign-in", WARN, "BEEKEEPER_GITHUB_CLIENT_ID / _SECRET are not set: applicants cannot sign in "
                   "to claim keys", "Copy the Client ID and a new client secret from the app's settings page.")
    if settings.secret_key_generated:
        report.add("secret key", OK, "BEEKEEPER_SECRET_KEY is not set: every process shares one key generated "
                   "once and kept in the database",
                   "Set BEEKEEPER_SECRET_KEY only to manage the key yourself (the same value on every web process).")


def check_database(report: Report, runtime) -> bool:
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = migrate.current_revision(runtime.engine), migrate.head_revision()
    except Exception as exc:  # noqa: BLE001 - any failure here is the finding
        report.add("database", FAIL, f"cannot connect: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                   "Check BEEKEEPER_DATABASE_URL (host, port, user, password, database name) and that the "
                   "database server is running and reachable from here.")
        return False
    if current != head:
        report.add("database", FAIL, f"schema at {current or 'empty'}, code expects {head}",
                   "Run `beekeeper db upgrade` (back up first), then restart the web and worker processes.")
        return False
    kind = "SQLite" if is_sqlite(runtime.engine) else runtime.engine.dialect.name
    report.add("database", OK, f"{kind} reachable, schema up to date ({head})")
    if is_sqlite(runtime.engine):
        report.add("database", OK, "SQLite suits one `beekeeper serve`; for several processes move to PostgreSQL "
                   "with `beekeeper db copy --to postgresql://…` (docs/operations.md)")
    return True


def check_deliveries(report: Report, runtime) -> None:
    now = utcnow()
    with Session(runtime.engine) as session:
        last = session.exec(select(Delivery).order_by(Delivery.received_at.desc()).limit(1)).first()
        dead = session.exec(select(func.count()).select_from(Delivery)
                            .where(Delivery.status == DeliveryStatus.DEAD)).one()
        stuck = session.exec(select(func.count()).select_from(Delivery).where(
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRY]),
            Delivery.next_attempt_at < now - STUCK_AFTER)).one()
    if last is None:
        report.add("deliveries", WARN, "no webhook delivery received yet",
                   "Open or edit an issue in an installed repository; if nothing arrives, see the webhook check "
                   "and the app's Advanced tab on GitHub (Recent Deliveries) for the error.")
    else:
        age = now - last.received_at
        report.add("deliveries", OK, f"last delivery {_ago(age)} ago ({last.event}.{last.action or '-'}, "
                   f"{last.status})")
    if stuck:
        report.add("worker", FAIL, f"{stuck} deliveries have waited more than {int(STUCK_AFTER.total_seconds() // 60)}"
                   " minutes", "Start a worker: `beekeeper worker` (or `beekeeper serve` without --no-worker).")
    if dead:
        report.add("deliveries", WARN, f"{dead} dead deliveries (failed every retry)",
                   "Read their errors with `beekeeper deliveries list --status dead`, fix the cause, then "
                   "`beekeeper deliveries retry ID` for each.")


def _ago(delta: timedelta) -> str:
    seconds = int(max(0, delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def check_app(report: Report, runtime, expected: Expected) -> dict | None:
    settings, github = runtime.settings, runtime.github
    try:
        app = github.get_app()
    except GitHubUnavailable as exc:
        report.add("GitHub", FAIL, f"cannot reach {settings.github_api_url}: {exc}",
                   "Check this machine's network and BEEKEEPER_GITHUB_API_URL "
                   "(https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server).")
        return None
    except GitHubError as exc:
        report.add("app key", FAIL, f"GitHub refused the app's token ({exc.status}): the private key does not belong "
                   f"to app {settings.github_app_id}, or that id is wrong",
                   "On the app's settings page check the App ID, generate a new private key, and set "
                   "BEEKEEPER_GITHUB_PRIVATE_KEY_PATH (or _PRIVATE_KEY) to it. Check this machine's clock too.")
        return None
    if str(app.get("id")) != str(settings.github_app_id):
        report.add("app key", FAIL, f"the key belongs to app {app.get('id')}, not {settings.github_app_id}",
                   f"Set BEEKEEPER_GITHUB_APP_ID={app.get('id')} or use app {settings.github_app_id}'s key.")
        return None
    report.add("app key", OK, f"private key matches app {app.get('slug')} (id {app.get('id')})")
    lacking = missing_permissions(app.get("permissions"), expected.permissions)
    events = sorted(set(expected.events) - set(app.get("events") or []))
    if lacking or events:
        report.add("app settings", FAIL, _lacks(lacking, events),
                   f"On {_app_settings_url(settings, app)} (Permissions & events) grant them, then accept the new "
                   "permissions on each installation.")
    return app


def _lacks(permissions: list[str], events: list[str]) -> str:
    parts = []
    if permissions:
        parts.append("permissions " + ", ".join(permissions))
    if events:
        parts.append("events " + ", ".join(events))
    return "lacks " + " and ".join(parts)


def _app_settings_url(settings, app: dict) -> str:
    owner = (app.get("owner") or {})
    base = settings.github_url
    if owner.get("type") == "Organization":
        return f"{base}/organizations/{owner.get('login')}/settings/apps/{app.get('slug')}"
    return f"{base}/settings/apps/{app.get('slug')}"


def _install_url(settings, app: dict) -> str:
    return (app.get("html_url") or f"{settings.github_url}/apps/{app.get('slug')}").rstrip("/") + "/installations/new"


def _installed_repositories(github) -> list[str]:
    repos: set[str] = set()
    for installation in github.list_installations():
        if not installation.get("suspended_at"):
            repos.update(github.for_installation(int(installation["id"])).list_repositories())
    return sorted(repos)


def check_repositories(report: Report, runtime) -> bool:
    """Requests are served only from repositories the operator named (bot.core.served): an empty
    `repositories` with more than one repository installed serves none of them. False then."""
    named = runtime.policy.repositories
    if named:
        report.add("repositories", OK, f"requests are served from {', '.join(named)} (the policy's `repositories`)")
        return True
    installed = _installed_repositories(runtime.github)
    if len(installed) > 1:
        shown = ", ".join(installed[:5]) + (f" and {len(installed) - 5} more" if len(installed) > 5 else "")
        report.add("repositories", FAIL,
                   f"the policy names no `repositories` and the app is installed on {len(installed)} repositories "
                   f"({shown}): requests are served from none of them",
                   "Name the repositories that hold the request form in the policy file (BEEKEEPER_POLICY), e.g. "
                   f"`repositories: [{installed[0]}]`. Only those are served, and only their maintainers decide.")
        return False
    if installed:
        report.add("repositories", OK, f"requests are served from {installed[0]}, the only repository the app is "
                   f"installed on (write `repositories: [{installed[0]}]` in the policy to keep it so)")
    return True


def check_policy_logins(report: Report, runtime) -> None:
    """`maintainers.users` given as logins: print the numeric ids to paste instead (a login can be
    renamed and taken over; bot.github.identity keeps the id it first resolved)."""
    from sqlmodel import Session as DbSession

    from bot.github.identity import policy_logins, remembered_ids

    logins = policy_logins(runtime.policy.maintainers.users)
    if not logins:
        return
    installations = [i for i in runtime.github.list_installations() if not i.get("suspended_at")]
    if not installations:
        return
    gh = runtime.github.for_installation(int(installations[0]["id"]))
    with DbSession(runtime.engine) as session:
        remembered = remembered_ids(session, logins)
    paste, moved, unknown = [], [], []
    for entry in runtime.policy.maintainers.users:
        if isinstance(entry, int):
            paste.append(str(entry))
            continue
        try:
            current = int(gh.get_user(entry)["id"])
        except GitHubError as exc:
            if exc.status != 404:
                raise
            current = None
        first = remembered.get(entry)
        if first is not None and current is not None and first != current:
            moved.append(f"{entry} was id {first} and now belongs to id {current}")
        if first is None and current is None:
            unknown.append(entry)
        else:
            paste.append(f"{first if first is not None else current}")
    users = f"`users: [{', '.join(paste)}]`"
    if moved:
        report.add("maintainers", WARN, "a login the policy names changed hands: " + "; ".join(moved) +
                   " (the first id keeps the rights)", f"Write numeric ids in `maintainers.users`: {users}")
    if unknown:
        report.add("maintainers", WARN, f"`maintainers.users` names logins GitHub does not know: {', '.join(unknown)}",
                   "Remove them, or write the person's numeric id.")
    if not moved:
        report.add("maintainers", WARN, f"`maintainers.users` names people by login ({', '.join(logins)})",
                   f"Write their numeric ids instead, which a rename or a recycled login cannot change: {users}")


def check_installations(report: Report, runtime, app: dict, expected: Expected) -> dict[str, int]:
    from bot.ops.reconcile import served_repositories

    settings, github = runtime.settings, runtime.github
    repos, not_installed = served_repositories(runtime)
    for repo in not_installed:
        report.add("installation", FAIL, f"the app is not installed on {repo}",
                   f"Install it: {_install_url(settings, app)} (choose {repo}), or remove {repo} from the policy's "
                   "`repositories`.")
    if not runtime.policy.repositories and not repos:
        report.add("installation", FAIL, "the app is not installed on any repository",
                   f"Install it on the repository that holds the request form: {_install_url(settings, app)}")
        return {}
    seen: set[int] = set()
    for repo, installation_id in sorted(repos.items()):
        if installation_id in seen:
            continue
        seen.add(installation_id)
        installation = github.repo_installation(repo)
        account = (installation.get("account") or {}).get("login", repo.split("/")[0])
        where = installation.get("html_url") or f"{settings.github_url}/settings/installations/{installation_id}"
        if installation.get("suspended_at"):
            report.add("installation", FAIL, f"the installation on {account} is suspended",
                       f"Unsuspend it at {where}.")
            continue
        lacking = missing_permissions(installation.get("permissions"), expected.permissions)
        events = sorted(set(expected.events) - set(installation.get("events") or []))
        if lacking or events:
            report.add("installation", FAIL, f"the installation on {account} {_lacks(lacking, events)}",
                       f"An owner of {account} must accept the app's new permissions at {where} (GitHub asks "
                       "after the app's permissions change).")
        else:
            names = sorted(r for r, i in repos.items() if i == installation_id)
            report.add("installation", OK, f"installed on {account} ({', '.join(names)}) with the permissions and "
                       "events app.yml asks for")
    return repos


def check_webhook(report: Report, runtime) -> None:
    settings, github = runtime.settings, runtime.github
    expected_url = f"{settings.public_url}/webhook"
    try:
        config = github.hook_config()
    except GitHubError as exc:
        report.add("webhook", FAIL, f"cannot read the app's webhook settings ({exc.status})",
                   "Check that the app has a webhook: the app's settings page, General, Webhook (Active).")
        return
    url = (config.get("url") or "").rstrip("/")
    if not url:
        report.add("webhook", FAIL, "the app has no webhook URL: GitHub sends no events",
                   f"On the app's settings page set Webhook URL to {expected_url} and tick Active.")
    elif url != expected_url:
        report.add("webhook", FAIL, f"GitHub sends events to {url}, but this deployment answers at {expected_url}",
                   f"Change the app's Webhook URL to {expected_url}, or set BEEKEEPER_PUBLIC_URL to "
                   f"{url.removesuffix('/webhook')} if that is this deployment.")
    else:
        report.add("webhook", OK, f"GitHub sends events to {url}")
    if config.get("content_type") not in (None, "json"):
        report.add("webhook", FAIL, f"the webhook sends {config.get('content_type')} bodies",
                   "Set Content type to application/json on the app's settings page (Webhook).")
    if str(config.get("insecure_ssl", "0")) != "0":
        report.add("webhook", WARN, "SSL verification is off for the webhook",
                   "Enable SSL verification on the app's settings page once the certificate is valid.")
    if not config.get("secret"):
        report.add("webhook secret", FAIL, "the app's webhook has no secret: Beekeeper refuses every delivery",
                   "Set the app's Webhook secret to the value of BEEKEEPER_WEBHOOK_SECRET.")
        return
    _check_recent_deliveries(report, github)


def _check_recent_deliveries(report: Report, github) -> None:
    """GitHub keeps each delivery's response: 401s mean the two secrets differ."""
    try:
        recent = []
        for item in github.hook_deliveries(utcnow() - timedelta(days=3)):
            recent.append(item)
            if len(recent) >= RECENT_DELIVERIES:
                break
    except GitHubError as exc:
        report.add("webhook secret", WARN, f"cannot read recent deliveries ({exc.status})", "")
        return
    if not recent:
        report.add("webhook secret", OK, "a secret is set (no delivery in the last 3 days to test it with)")
        return
    codes = [int(item.get("status_code") or 0) for item in recent]
    refused = sum(1 for c in codes if c == 401)
    unrecovered = _unrecovered_failures(recent)
    failed = len(unrecovered)
    if codes[0] == 401:
        report.add("webhook secret", FAIL, f"{refused} of the last {len(codes)} deliveries were refused as wrongly "
                   "signed: GitHub's webhook secret differs from BEEKEEPER_WEBHOOK_SECRET",
                   "Set the same value in both (the app's settings page, Webhook secret), restart, then run "
                   "`beekeeper redeliver` to recover the refused deliveries.")
    elif failed:
        statuses = sorted({int(item.get("status_code") or 0) for item in unrecovered})
        guids = ", ".join(str(item.get("guid")) for item in unrecovered[:3]) + (" …" if failed > 3 else "")
        report.add("webhook", WARN, f"{failed} of the last {len(codes)} deliveries failed and were not delivered "
                   f"since (status {', '.join(str(c) for c in statuses)}; GUID {guids})",
                   "Run `beekeeper redeliver --since 3d` to have GitHub send them again (and keep it in cron). "
                   "If they fail again, the status says why: 5xx or 0 = the web or its database was down or "
                   "unreachable from GitHub (check /readyz, the proxy and BEEKEEPER_PUBLIC_URL), 413 = larger than "
                   "BEEKEEPER_MAX_WEBHOOK_BYTES, 400 = not a webhook Beekeeper understands (see the web log "
                   "for that GUID).")
    else:
        recovered = sum(1 for c in codes if not 200 <= c < 300)
        note = f" ({recovered} failed first and were redelivered since)" if recovered else ""
        report.add("webhook secret", OK, f"the last {len(codes)} deliveries were accepted{note}")


def _unrecovered_failures(recent: list[dict]) -> list[dict]:
    """Failed deliveries (newest first, one per GUID) with no later successful delivery of the same
    GUID: a failure `beekeeper redeliver` already made good is not a current problem."""
    def when(item: dict) -> str:
        return str(item.get("delivered_at") or "")

    succeeded: dict[str, str] = {}
    for item in recent:
        if 200 <= int(item.get("status_code") or 0) < 300 and item.get("guid"):
            guid = str(item["guid"])
            succeeded[guid] = max(succeeded.get(guid, ""), when(item))
    failures, seen = [], set()
    for item in recent:  # one entry per GUID: its newest failed attempt
        guid = str(item.get("guid") or item.get("id"))
        if 200 <= int(item.get("status_code") or 0) < 300 or guid in seen:
            continue
        seen.add(guid)
        if succeeded.get(guid, "") < when(item) or guid not in succeeded:
            failures.append(item)
    return failures


def check_form(report: Report, runtime, repo: str, gh) -> None:
    """Every request form of the policy, as the repository has it."""
    for spec in runtime.policy.request_forms:
        check_one_form(report, runtime.policy, spec, repo, gh)


def form_findings(policy, spec, schema, where: str) -> list[tuple[str, str, str]]:
    """(status, message, fix) for one form's template against its policy entry: a required role
    without its field is a FAIL (said here and once in the log, never in applicants' reports)."""
    from bot.core.config import form_key

    key = f"forms[{form_key(spec)}]" if policy.forms else "form"
    ids = {f.id for f in schema.fields}
    roles = spec.role_map
    findings = []
    required_missing = sorted(f"{role} (id: {roles.get(role, '—')})" for role in spec.required_roles
                              if roles.get(role) not in ids and not (role == "tier" and spec.fixed_tier))
    optional_missing = sorted(f"{role} (id: {fid})" for role, fid in roles.items()
                              if role not in spec.required_roles and fid not in ids)
    if required_missing:
        findings.append((FAIL, f"{where} lacks fields the policy requires: {', '.join(required_missing)}",
                         f"Add fields with those ids to the form, or map the roles to your form's ids in "
                         f"`{key}.roles` (or take them out of `{key}.required_roles`)."))
    else:
        findings.append((OK, f"{where} has every required field", ""))
    if optional_missing:
        findings.append((WARN, f"{where} has no field for {', '.join(optional_missing)}: those roles are "
                         "never checked", f"Add the fields, or drop the roles from `{key}.roles` (set them to "
                         "null) so the policy says what the form holds."))
    if "tier" not in roles or roles["tier"] not in ids:
        if spec.fixed_tier:
            findings.append((OK, f"{where} has no tier field; every request asks for {spec.fixed_tier} "
                             f"(`{key}.fixed_tier`)", ""))
        else:
            findings.append((FAIL, f"{where} has no tier field and the policy names no fixed tier: requests "
                             "from it cannot be approved without naming a tier", f"Set `{key}.fixed_tier` to the "
                             "tier this form is for, or add a tier dropdown and map `tier` to it."))
    for field_id in spec.aliases:
        if field_id not in ids:
            findings.append((WARN, f"{where} has no field {field_id!r} for the aliases in `{key}.aliases`",
                             "Key the old labels by the id of the field they belonged to."))
    missing_labels = [label for label in spec.labels if label not in schema.labels]
    if missing_labels:
        findings.append((WARN, f"{where} does not apply the label {missing_labels[0]!r}",
                         f"Add `labels: [\"{missing_labels[0]}\"]` to the form so its issues are seen as requests"
                         + (f" (or give titles the prefix {spec.title_prefix!r})." if spec.title_prefix else ".")))
    return findings


def check_one_form(report: Report, policy, spec, repo: str, gh) -> None:
    from bot.rules.forms import FormTemplateError, parse_form_template

    path = spec.template_path
    bundled = "the bundled form (.github/ISSUE_TEMPLATE/special-access.yml in Beekeeper)"
    try:
        form_text = gh.get_file(repo, path)
    except GitHubError as exc:
        if exc.status != 403:
            raise
        report.add("issue form", WARN, f"the app may not read {repo}:{path} (403); Beekeeper parses requests with "
                   "its fallback form instead", "Grant the app `contents: read` (app settings, Permissions) if your "
                   "form differs from the bundled one.")
        return
    if form_text is None:
        report.add("issue form", FAIL, f"{repo} has no {path}: applicants have no request form",
                   f"Copy {bundled} to {path} in {repo} on the default branch, and adapt its wording.")
        return
    try:
        schema = parse_form_template(form_text, source=f"{repo}:{path}")
    except FormTemplateError as exc:
        report.add("issue form", FAIL, f"{repo}:{path} is not a usable issue form: {str(exc).splitlines()[0][:200]} "
                   "(Beekeeper falls back to its bundled form)",
                   f"Fix the YAML (compare with {bundled}); GitHub shows the error on the New issue page too.")
        return
    for status, message, fix in form_findings(policy, spec, schema, f"{repo}:{path}"):
        report.add("issue form", status, message, fix)


def check_labels(report: Report, runtime, repo: str, gh, *, fix: bool = False) -> None:
    policy = runtime.policy
    triggers = policy.trigger_labels
    wanted = [*triggers, *sorted(managed_labels(policy))]
    missing = [name for name in wanted if not gh.label_exists(repo, name)]
    if fix and missing:
        for name in missing:
            colour, description = label_spec(policy, name)
            gh.ensure_label(repo, name, colour, description)
        report.add("labels", OK, f"{repo}: created {', '.join(missing)}")
        return
    for trigger in [t for t in triggers if t in missing]:
        report.add("labels", FAIL, f"{repo} has no label {trigger!r}: issues from the form arrive without it and are "
                   "not treated as requests", "Run `beekeeper doctor --fix-labels`, or create the label on GitHub.")
    others = [name for name in missing if name not in triggers]
    if others:
        report.add("labels", WARN, f"{repo} lacks {', '.join(others)} (created when first used)",
                   "Run `beekeeper doctor --fix-labels` to create them now with their colours and descriptions.")
    if not missing:
        report.add("labels", OK, f"{repo} has every label Beekeeper uses")


# --------------------------------------------------------------------------------------------
# running them
# --------------------------------------------------------------------------------------------


def _guarded(report: Report, name: str, check: Callable, *args, **kwargs):
    """Run one check; an unexpected error becomes a finding instead of ending the doctor."""
    try:
        return check(report, *args, **kwargs)
    except GitHubError as exc:
        report.add(name, FAIL, f"GitHub answered {exc.status}: {exc}", "Run `beekeeper doctor` again; if it "
                   "persists, check https://www.githubstatus.com and the app's permissions.")
    except Exception as exc:  # noqa: BLE001 - the doctor reports, it does not crash
        log.debug("check %s failed", name, exc_info=True)
        report.add(name, FAIL, f"{type(exc).__name__}: {exc}", "")
    return None


def run(runtime, *, repos: list[str] | None = None, fix_labels: bool = False) -> Report:
    """Every check, in the order a person would fix things."""
    report = Report()
    expected = expected_from_manifest()
    check_settings(report, runtime.settings)
    database_ok = _guarded(report, "database", check_database, runtime)
    if database_ok:
        _guarded(report, "deliveries", check_deliveries, runtime)
    if not runtime.settings.github_app_id or not runtime.settings.github_private_key:
        report.add("GitHub", SKIP, "GitHub checks skipped until the app is configured")
        return report
    app = _guarded(report, "app key", check_app, runtime, expected)
    if app is None:
        report.add("GitHub", SKIP, "installation, webhook, form and label checks need a working app key")
        return report
    _guarded(report, "webhook", check_webhook, runtime)
    _guarded(report, "maintainers", check_policy_logins, runtime)
    if _guarded(report, "repositories", check_repositories, runtime) is False:
        report.add("installation", SKIP, "installation, form and label checks wait for the served repositories")
        return report
    targets = _guarded(report, "installation", check_installations, runtime, app, expected) or {}
    if repos:
        targets = {r: i for r, i in targets.items() if r in repos}
    for repo, installation_id in sorted(targets.items()):
        gh = runtime.github.for_installation(installation_id)
        _guarded(report, "issue form", check_form, runtime, repo, gh)
        _guarded(report, "labels", check_labels, runtime, repo, gh, fix=fix_labels)
    return report


def render_text(report: Report) -> Iterator[str]:
    marks = {OK: "  ok ", WARN: "WARN ", FAIL: "FAIL ", SKIP: "skip "}
    for finding in report.findings:
        yield f"{marks[finding.status]} {finding.check:<15} {finding.message}"
        if finding.fix and finding.status in (WARN, FAIL):
            yield f"{'':6}{'':<15} fix: {finding.fix}"
    counts = report.counts()
    yield f"{counts[FAIL]} problem(s), {counts[WARN]} warning(s), {counts[OK]} ok"

