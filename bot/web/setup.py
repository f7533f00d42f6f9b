"""First run: register the GitHub App from its manifest (app.yml), the way Probot does.

While no app credentials are configured, `/setup` shows one button that posts app.yml, with its
URLs pointed at this deployment, to GitHub's "new app from manifest" form. GitHub creates the app
and redirects the browser back to `/setup/callback?code=…&state=…`; the code is exchanged
(`POST /app-manifests/{code}/conversions`) for the app id, private key, webhook secret and OAuth
client, which are written to `.env` (mode 0600) or, when that cannot be written, shown once.

Who may use it: the page exists only while no credentials are configured, and answers only the
local machine (loopback address, no proxy headers) unless the setup token that `beekeeper serve`
prints on its console is supplied. The `state` sent to GitHub is signed with that token and
expires, so a callback can only complete a registration this page started. No session cookie is
involved: the browser may come back on another host name than it left from.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import yaml
from flask import Blueprint, abort, current_app, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from bot.core.local_requests import is_local_request
from bot.core.resources import app_manifest_path
from bot.github.client import GitHubError, convert_manifest
from bot.web.shared import credentials_configured, no_store  # noqa: F401 - credentials_configured: read as setup.credentials_configured

log = logging.getLogger("beekeeper.setup")

bp = Blueprint("setup", __name__, url_prefix="/setup")

STATE_MAX_AGE_SECONDS = 3600
ORG_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
REPO_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
POLICY_FILE_NAME = "beekeeper-policy.yml"
APP_NAME_MAX_LENGTH = 34  # GitHub's limit for app names

# Per process: `beekeeper serve` creates the token before gunicorn forks its one worker, so the
# token printed on the console is the one the worker checks.
_token: str | None = None
_lock = threading.Lock()


def _app_state() -> dict:
    """Per Flask app: states already used, and the app registered here (public fields only)."""
    return current_app.extensions.setdefault("beekeeper.setup", {"used_states": set(), "registered": None})


# --------------------------------------------------------------------------------------------
# token, state, access
# --------------------------------------------------------------------------------------------


def setup_token() -> str:
    """The secret a remote browser must supply (`/setup?token=…`); created on first use."""
    global _token
    with _lock:
        if _token is None:
            _token = secrets.token_urlsafe(24)
        return _token


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::")  # noqa: S104 - names, not a bind


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the interface
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


def remote_setup_base(settings, host: str, port: int) -> str | None:
    """A base URL another machine can open, or None when there is none: BEEKEEPER_PUBLIC_URL when
    it names a real host; else this machine's address when the server listens on every interface
    (or on that address); nothing when it listens on loopback only."""
    public = settings.public_url.rstrip("/")
    if (urlsplit(public).hostname or "") not in LOOPBACK_NAMES:
        return public
    if host in ("127.0.0.1", "::1", "localhost"):
        return None
    address = _outward_address() if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    if not address:
        return None
    return f"http://{f'[{address}]' if ':' in address else address}:{port}"


def announce(settings, host: str, port: int) -> str:
    """The console lines `beekeeper serve` prints while the app is not registered."""
    local = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0', '::', '::1') else host}:{port}/setup"  # noqa: S104
    remote = remote_setup_base(settings, host, port)
    if remote is None:
        return (f"Register the GitHub App: open {local} on this machine.\n"
                f"(It listens on {host} only, so no other machine can reach it; to set it up from elsewhere, "
                "run `beekeeper serve --host 0.0.0.0` or set BEEKEEPER_PUBLIC_URL.)")
    return (f"Register the GitHub App: open {local} on this machine,\n"
            f"or from another machine: {remote}/setup?token={setup_token()}\n"
            "(the token is a secret; the setup page closes once credentials are configured)")


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(setup_token(), salt="beekeeper-setup-state")


def new_state(repository: str | None = None) -> str:
    """A signed, expiring state for GitHub's round trip; it carries the repository the operator
    set Beekeeper up for, so the callback can name it in the policy."""
    return _serializer().dumps({"n": secrets.token_urlsafe(16), "repo": repository})


def _consume(state: str) -> dict | None:
    """The state's contents, once, for a state this process issued less than an hour ago."""
    try:
        data = _serializer().loads(state or "", max_age=STATE_MAX_AGE_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        data = {"n": data, "repo": None}
    used = _app_state()["used_states"]
    with _lock:
        if data.get("n") in used:
            return None
        used.add(data.get("n"))
    return data


def consume_state(state: str) -> bool:
    """True once for a state this process issued less than an hour ago."""
    return _consume(state) is not None


def _token_supplied() -> bool:
    sent = request.args.get("token") or request.form.get("token") or ""
    return bool(sent) and hmac.compare_digest(sent, setup_token())


@bp.before_request
def _only_while_unconfigured_and_trusted():
    settings = current_app.config["BEEKEEPER_SETTINGS"]
    if request.endpoint == "setup.installed":
        return None  # a static thank-you page GitHub sends people to after installing
    if credentials_configured(settings):
        abort(404)
    if request.endpoint == "setup.callback":
        return None  # guarded by the signed state, which only the trusted page hands out
    if not (is_local_request(request.remote_addr, request.headers) or _token_supplied()):
        abort(403, description="The setup page answers this machine only. Use the link with the setup token "
                               "that `beekeeper serve` printed on its console.")
    return None


# --------------------------------------------------------------------------------------------
# the manifest
# --------------------------------------------------------------------------------------------


def manifest_path() -> Path:
    """app.yml in the working directory (an operator's copy wins), else the one in the checkout."""
    for candidate in (Path.cwd() / "app.yml", app_manifest_path()):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("app.yml not found in the working directory")


def build_manifest(base: dict, *, public_url: str, return_url: str, name: str | None = None) -> dict:
    """app.yml with every URL pointed at this deployment.

    `return_url` is where GitHub sends the browser with the code: the host the operator is
    browsing on (localhost during a first run), which may differ from the public URL that
    GitHub's webhooks and OAuth redirects use.
    """
    manifest = dict(base)
    public_url = public_url.rstrip("/")
    manifest["url"] = public_url
    manifest["hook_attributes"] = {**(base.get("hook_attributes") or {}), "url": f"{public_url}/webhook"}
    manifest["redirect_url"] = return_url
    manifest["callback_urls"] = [f"{public_url}/auth/callback"]
    manifest["setup_url"] = f"{public_url}/setup/installed"
    if name:
        manifest["name"] = name
    return manifest


def new_app_url(github_url: str, org: str | None, state: str) -> str:
    """GitHub's create-from-manifest form, for a personal account or an organisation."""
    base = github_url.rstrip("/")
    path = f"/organizations/{quote(org)}/settings/apps/new" if org else "/settings/apps/new"
    return f"{base}{path}?{urlencode({'state': state})}"


# --------------------------------------------------------------------------------------------
# writing the credentials
# --------------------------------------------------------------------------------------------


def credentials_env(app: dict, *, add_secret_key: bool) -> dict[str, str]:
    """The settings a registered app gives us, as BEEKEEPER_* environment values."""
    values = {
        "BEEKEEPER_GITHUB_APP_ID": str(app["id"]),
        "BEEKEEPER_GITHUB_PRIVATE_KEY": app["pem"].strip() + "\n",
        "BEEKEEPER_WEBHOOK_SECRET": app["webhook_secret"],
        "BEEKEEPER_GITHUB_CLIENT_ID": app["client_id"],
        "BEEKEEPER_GITHUB_CLIENT_SECRET": app["client_secret"],
    }
    if add_secret_key:  # without it, sign-in sessions would not survive a restart
        values["BEEKEEPER_SECRET_KEY"] = secrets.token_urlsafe(32)
    return values


def dotenv_line(key: str, value: str) -> str:
    """KEY="value" with the escapes python-dotenv decodes (newlines become \\n: one line per key)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")
    return f'{key}="{escaped}"'


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Set `values` in the .env at `path`, keeping its other lines; the file ends up mode 0600.

    Written to a private temporary file in the same directory and renamed over the old one, so
    the secrets are never readable by others, not even for a moment. Raises OSError.
    """
    kept: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines():
            key = line.split("=", 1)[0].strip().removeprefix("export ").strip()
            if key not in values:
                kept.append(line)
    lines = [*kept, "# GitHub App registered by `beekeeper serve` (setup page)",
             *(dotenv_line(k, v) for k, v in values.items())]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".env.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_policy_repository(path: Path, repository: str) -> None:
    """Name `repository` in the policy file at `path` (created, or its `repositories` replaced):
    requests are served only from the repositories the policy names (bot.core.served)."""
    data: dict = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text()) or {}
        data = loaded if isinstance(loaded, dict) else {}
    data["repositories"] = [repository]
    header = ("# Beekeeper's policy (written by the setup page). Requests are served only from the\n"
              "# repositories listed here; see bot/core/policy.default.yml for every other key.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))


def dotenv_path() -> Path:
    """Where settings are read from at start-up (bot.core.config reads .env in the working directory)."""
    return Path(current_app.config.get("BEEKEEPER_DOTENV_PATH") or Path.cwd() / ".env")


# --------------------------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------------------------


def _page(template: str, status: int = 200, **context):
    response = current_app.make_response((render_template(template, **context), status))
    return no_store(response)


@bp.get("/")
def start():
    settings = current_app.config["BEEKEEPER_SETTINGS"]
    if _app_state()["registered"] is not None:
        return _already_registered()
    org = (request.args.get("org") or "").strip() or None
    name = (request.args.get("name") or "").strip()[:APP_NAME_MAX_LENGTH] or None
    repository = (request.args.get("repo") or "").strip().strip("/") or None
    error = None
    if org and not ORG_PATTERN.fullmatch(org):
        error, org = f"“{org}” is not an organisation login.", None
    if repository and (not REPO_PATTERN.fullmatch(repository) or repository.split("/")[1] in (".", "..")):
        error, repository = f"“{repository}” is not a repository (owner/name).", None
    try:
        base = yaml.safe_load(manifest_path().read_text())
    except (OSError, yaml.YAMLError) as exc:
        return _page("pages/setup.html", 500, error=f"Cannot read app.yml: {exc}", manifest_json=None)
    manifest = build_manifest(base, public_url=settings.public_url, name=name,
                              return_url=url_for("setup.callback", _external=True))
    return _page(
        "pages/setup.html",
        error=error,
        org=org,
        name=manifest["name"],
        token=request.args.get("token") if _token_supplied() else None,
        repository=repository,
        action=new_app_url(settings.github_url, org, new_state(repository)),
        manifest=manifest,
        manifest_json=json.dumps(manifest),
        public_url=settings.public_url,
        github_url=settings.github_url,
    )


@bp.get("/callback")
def callback():
    settings = current_app.config["BEEKEEPER_SETTINGS"]
    if _app_state()["registered"] is not None:
        return _already_registered()
    code = request.args.get("code", "")
    state = _consume(request.args.get("state", "")) if code else None
    if state is None:
        return _page("pages/setup.html", 400, manifest_json=None,
                     error="This link expired or did not come from this setup page. Start again from /setup.")
    try:
        app = convert_manifest(settings.github_api_url, code)
    except GitHubError as exc:
        log.error("app manifest conversion failed: %s", exc)
        return _page("pages/setup.html", 502, manifest_json=None,
                     error=f"GitHub did not hand over the new app's credentials ({exc.status}). The code is valid "
                           "for one hour and once only: start again from /setup.")
    values = credentials_env(app, add_secret_key=settings.secret_key_generated)
    target = dotenv_path()
    written_to, shown = None, {}
    repository, policy_written, policy_hint = state.get("repo"), None, None
    if repository:
        policy_written, policy_hint = _name_repository(settings, target, repository, values)
    try:
        write_env_file(target, values)
        written_to = str(target)
    except OSError as exc:
        log.warning("cannot write %s (%s); showing the credentials on the setup page instead", target, exc.strerror)
        shown = values
    public = {"id": app.get("id"), "slug": app.get("slug"), "name": app.get("name"), "html_url": app.get("html_url")}
    _app_state()["registered"] = public
    log.info("GitHub App %s (id %s) registered%s", public["slug"], public["id"],
             f"; credentials written to {written_to}" if written_to else "; credentials shown on the setup page")
    return _page("pages/setup_done.html", app=public, written_to=written_to, shown=shown,
                 install_url=install_url(public), repository=repository, policy_written=policy_written,
                 policy_hint=policy_hint)


def _name_repository(settings, env_target: Path, repository: str, values: dict[str, str]):
    """(policy file written, hint) for the repository the app was set up for. Without an operator's
    policy file, a small one next to .env names it (and BEEKEEPER_POLICY points at it); an
    operator's own file is never edited: the page says what to add."""
    if settings.policy_path:
        return None, f"Add `repositories: [{repository}]` to your policy file {settings.policy_path}."
    policy_path = env_target.parent / POLICY_FILE_NAME
    try:
        write_policy_repository(policy_path, repository)
    except OSError as exc:
        log.warning("cannot write %s (%s)", policy_path, exc.strerror)
        return None, (f"Write `repositories: [{repository}]` into a policy file and point BEEKEEPER_POLICY at it.")
    values["BEEKEEPER_POLICY"] = str(policy_path.absolute())
    return str(policy_path), None


def install_url(app: dict) -> str:
    """Where the owner installs the new app on their repositories."""
    return f"{(app.get('html_url') or '').rstrip('/')}/installations/new"


def _already_registered():
    """Registered by this process, not yet restarted: say so, show nothing secret again."""
    app = _app_state()["registered"]
    return _page("pages/setup_done.html", app=app, written_to=None, shown={}, install_url=install_url(app),
                 again=True)


@bp.get("/installed")
def installed():
    return render_template("pages/setup_installed.html",
                           setup_action=request.args.get("setup_action", "install"))
