"""The only module that talks to GitHub.

- App authentication: a JWT signed RS256 (iat 60 s in the past, exp 9 min ahead, iss = app id).
- Installation access tokens, cached per installation until five minutes before they expire.
- The base URL comes from BEEKEEPER_GITHUB_API_URL, so GitHub Enterprise Server and test servers work.
- Retries: 5xx on idempotent requests, primary rate limits (wait for X-RateLimit-Reset) and
  secondary rate limits (honour Retry-After) on every request, because GitHub refused those before
  doing anything. A POST answered 5xx is NOT re-sent: it may have succeeded. Callers that create
  things (comments) look for them by marker first, see `post_comment_once`.
- Long waits are not slept in-process: they raise RetryLater so the inbox reschedules the delivery.

Tests pass `sleep=` to record waits instead of sleeping, and mock HTTP with `responses`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import jwt
import requests
from urllib3.exceptions import NewConnectionError

from bot import metrics
from bot.clock import utcnow
from bot.errors import RetryLater

log = logging.getLogger("beekeeper.github")

USER_AGENT = "beekeeper-bot"
API_VERSION = "2022-11-28"
MAX_INLINE_WAIT_SECONDS = 60.0  # longer waits go back to the inbox as RetryLater
MAX_TRIES = 4
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})


class GitHubError(Exception):
    def __init__(self, status: int, message: str, method: str = "", path: str = ""):
        super().__init__(f"GitHub {method} {path} -> {status}: {message}")
        self.status = status
        self.method = method
        self.path = path


class NotFound(GitHubError):
    pass


class GitHubUnavailable(GitHubError):
    """5xx after retries, or a 5xx on a write that must not be blindly re-sent."""


def _message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", ""))[:300]
    except ValueError:
        return response.text[:300]


def _never_sent(exc: requests.RequestException) -> bool:
    """True when no connection was made, so GitHub cannot have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Transport:
    """HTTP with GitHub's retry rules. Shared by the app and installation clients."""

    def __init__(self, api_url: str, *, sleep: Callable[[float], None] = time.sleep,
                 session: requests.Session | None = None, timeout: float = 15.0):
        self.api_url = api_url.rstrip("/")
        self.sleep = sleep
        self.http = session or requests.Session()
        self.timeout = timeout

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.api_url}/{path.lstrip('/')}"

    def _wait_for(self, response: requests.Response) -> float | None:
        """Seconds to wait before retrying a rate-limited response; None if not rate limited."""
        if response.status_code not in (403, 429):
            return None
        retry_after = response.headers.get("Retry-After")
        if retry_after is not None:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                return 60.0
        if response.headers.get("X-RateLimit-Remaining") == "0":
            reset = response.headers.get("X-RateLimit-Reset")
            if reset and reset.isdigit():
                return max(0.0, int(reset) - time.time()) + 1.0
            return 60.0
        if "secondary rate limit" in _message(response).lower():
            return 60.0  # GitHub's advice when no header says how long
        return None

    def request(self, method: str, path: str, *, token: str | None, json: Any = None,
                params: dict | None = None, accept: str = "application/vnd.github+json") -> requests.Response:
        method = method.upper()
        headers = {"Accept": accept, "User-Agent": USER_AGENT, "X-GitHub-Api-Version": API_VERSION}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = self.url(path)
        for attempt in range(1, MAX_TRIES + 1):
            try:
                response = self.http.request(method, url, headers=headers, json=json, params=params,
                                             timeout=self.timeout)
            except requests.RequestException as exc:
                metrics.GITHUB_CALLS.labels(method=method, status="error").inc()
                # Retry when the request is idempotent or provably never reached GitHub; a write
                # whose connection broke after sending may have succeeded, so it is not re-sent.
                if attempt < MAX_TRIES and (method in IDEMPOTENT or _never_sent(exc)):
                    self.sleep(min(2 ** attempt, 10))
                    continue
                raise GitHubUnavailable(0, f"connection failed: {exc.__class__.__name__}", method, path) from None
            metrics.GITHUB_CALLS.labels(method=method, status=str(response.status_code)).inc()
            wait = self._wait_for(response)
            if wait is not None:
                if wait > MAX_INLINE_WAIT_SECONDS or attempt == MAX_TRIES:
                    raise RetryLater(f"GitHub rate limit on {method} {path}", after=wait)
                log.info("rate limited on %s %s; waiting %.0f s", method, path, wait)
                self.sleep(wait)
                continue
            if response.status_code >= 500:
                if method in IDEMPOTENT and attempt < MAX_TRIES:
                    self.sleep(min(2 ** (attempt - 1), 8))
                    continue
                raise GitHubUnavailable(response.status_code, _message(response), method, path)
            if response.status_code == 404:
                raise NotFound(404, _message(response), method, path)
            if response.status_code >= 400:
                raise GitHubError(response.status_code, _message(response), method, path)
            return response
        raise GitHubUnavailable(0, "retries exhausted", method, path)  # pragma: no cover - loop returns


@dataclass
class _CachedToken:
    token: str
    expires_at: datetime


class GitHubApp:
    """The app's identity: JWTs, installation tokens, app-level endpoints."""

    TOKEN_REFRESH_MARGIN = timedelta(minutes=5)

    def __init__(self, app_id: str | None, private_key: str | None, api_url: str, *,
                 sleep: Callable[[float], None] = time.sleep, session: requests.Session | None = None):
        self.app_id = app_id
        self.private_key = private_key
        self.transport = Transport(api_url, sleep=sleep, session=session)
        self._tokens: dict[int, _CachedToken] = {}
        self._lock = threading.Lock()
        self._slug: str | None = None

    @classmethod
    def from_settings(cls, settings, **kwargs) -> GitHubApp:
        return cls(settings.github_app_id, settings.github_private_key, settings.github_api_url, **kwargs)

    # --- authentication -------------------------------------------------------------------

    def app_jwt(self) -> str:
        if not (self.app_id and self.private_key):
            raise GitHubError(0, "BEEKEEPER_GITHUB_APP_ID and BEEKEEPER_GITHUB_PRIVATE_KEY are not configured")
        now = int(time.time())
        # iat in the past absorbs clock drift; exp stays under GitHub's 10-minute maximum.
        claims = {"iat": now - 60, "exp": now + 9 * 60, "iss": str(self.app_id)}
        return jwt.encode(claims, self.private_key, algorithm="RS256")

    def app_request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.transport.request(method, path, token=self.app_jwt(), **kwargs)

    def installation_token(self, installation_id: int) -> str:
        with self._lock:
            cached = self._tokens.get(installation_id)
            if cached and cached.expires_at - self.TOKEN_REFRESH_MARGIN > utcnow():
                return cached.token
        data = self.app_request("POST", f"/app/installations/{installation_id}/access_tokens").json()
        token = _CachedToken(data["token"], _parse_time(data["expires_at"]))
        with self._lock:
            self._tokens[installation_id] = token
        return token.token

    def for_installation(self, installation_id: int) -> InstallationClient:
        return InstallationClient(self, installation_id)

    # --- app-level endpoints ----------------------------------------------------------------

    def get_app(self) -> dict:
        data = self.app_request("GET", "/app").json()
        self._slug = data.get("slug")
        return data

    def slug_if_known(self) -> str | None:
        """The app slug if already fetched (no API call)."""
        return self._slug

    @property
    def configured(self) -> bool:
        """True when the app id and private key are set, so app-authenticated calls can be made."""
        return bool(self.app_id and self.private_key)

    def own_bot_login(self) -> str | None:
        """`<slug>[bot]`, the login our own events carry; GET /app once, on first need.

        None when the app is not configured (then nothing we do can have caused an event).
        A failing GET /app raises, so the caller retries rather than risk answering itself.
        """
        if self._slug is None and not self.configured:
            return None
        return self.bot_login()

    def slug(self) -> str:
        if self._slug is None:
            self.get_app()
        return self._slug or ""

    def bot_login(self) -> str:
        return f"{self.slug()}[bot]"

    def list_installations(self) -> list[dict]:
        return list(self._paginate_app("/app/installations"))

    def repo_installation(self, repo: str) -> dict:
        return self.app_request("GET", f"/repos/{repo}/installation").json()

    def hook_deliveries(self, since: datetime) -> Iterator[dict]:
        """The app's webhook deliveries, newest first, until one older than `since`."""
        for item in self._paginate_app("/app/hook/deliveries", params={"per_page": 100}):
            if _parse_time(item["delivered_at"]) < since:
                return
            yield item

    def redeliver(self, delivery_id: int) -> None:
        self.app_request("POST", f"/app/hook/deliveries/{delivery_id}/attempts")

    def hook_config(self) -> dict:
        return self.app_request("GET", "/app/hook/config").json()

    def _paginate_app(self, path: str, params: dict | None = None) -> Iterator[dict]:
        url: str | None = path
        params = dict(params or {"per_page": 100})
        while url:
            response = self.app_request("GET", url, params=params)
            data = response.json()
            yield from (data if isinstance(data, list) else data.get("installations", []))
            url = response.links.get("next", {}).get("url")
            params = None  # the next link carries the query


class InstallationClient:
    """Calls made as one installation (issues, comments, labels, permissions)."""

    def __init__(self, app: GitHubApp, installation_id: int):
        self.app = app
        self.installation_id = installation_id

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        token = self.app.installation_token(self.installation_id)
        return self.app.transport.request(method, path, token=token, **kwargs)

    def json(self, method: str, path: str, **kwargs) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def paginate(self, path: str, params: dict | None = None) -> Iterator[dict]:
        url: str | None = path
        params = {"per_page": 100, **(params or {})}
        while url:
            response = self.request("GET", url, params=params)
            yield from response.json()
            url = response.links.get("next", {}).get("url")
            params = None

    # --- issues ------------------------------------------------------------------------------

    def get_issue(self, repo: str, number: int) -> dict:
        return self.json("GET", f"/repos/{repo}/issues/{number}")

    def list_issues(self, repo: str, *, labels: str | None = None, state: str = "open") -> Iterator[dict]:
        params = {"state": state}
        if labels:
            params["labels"] = labels
        # The issues endpoint also lists pull requests; they are never requests.
        return (i for i in self.paginate(f"/repos/{repo}/issues", params) if "pull_request" not in i)

    def close_issue(self, repo: str, number: int, reason: str = "completed") -> dict:
        return self.json("PATCH", f"/repos/{repo}/issues/{number}", json={"state": "closed", "state_reason": reason})

    def reopen_issue(self, repo: str, number: int) -> dict:
        return self.json("PATCH", f"/repos/{repo}/issues/{number}", json={"state": "open"})

    # --- comments ----------------------------------------------------------------------------

    def list_comments(self, repo: str, number: int) -> Iterator[dict]:
        return self.paginate(f"/repos/{repo}/issues/{number}/comments")

    def create_comment(self, repo: str, number: int, body: str) -> dict:
        return self.json("POST", f"/repos/{repo}/issues/{number}/comments", json={"body": body})

    def get_comment(self, repo: str, comment_id: int) -> dict | None:
        """One issue comment by id, or None when it was deleted."""
        try:
            return self.json("GET", f"/repos/{repo}/issues/comments/{comment_id}")
        except NotFound:
            return None

    def update_comment(self, repo: str, comment_id: int, body: str) -> dict:
        return self.json("PATCH", f"/repos/{repo}/issues/comments/{comment_id}", json={"body": body})

    def find_bot_comment(self, repo: str, number: int, marker: str) -> dict | None:
        """Our own comment carrying `marker`. Authorship is checked too: a user who pastes the
        marker into their comment must not be able to make the bot edit or trust it."""
        bot_login = self.app.bot_login()
        for comment in self.list_comments(repo, number):
            user = comment.get("user") or {}
            if marker in (comment.get("body") or "") and user.get("login") == bot_login and user.get("type") == "Bot":
                return comment
        return None

    def post_comment_once(self, repo: str, number: int, marker: str, body: str) -> dict:
        """Create a comment unless ours with this marker exists (safe to call again after a failure)."""
        existing = self.find_bot_comment(repo, number, marker)
        if existing:
            return existing
        return self.create_comment(repo, number, body)

    def upsert_comment(self, repo: str, number: int, marker: str, body: str,
                       comment_id: int | None = None) -> dict:
        """Edit our marker comment in place (found by id or marker), or create it."""
        if comment_id:
            try:
                return self.update_comment(repo, comment_id, body)
            except NotFound:
                pass  # deleted by someone: look again / create
        existing = self.find_bot_comment(repo, number, marker)
        if existing:
            if existing.get("body") == body:
                return existing
            return self.update_comment(repo, existing["id"], body)
        return self.create_comment(repo, number, body)

    def add_reaction(self, repo: str, comment_id: int, content: str) -> None:
        self.request("POST", f"/repos/{repo}/issues/comments/{comment_id}/reactions", json={"content": content})

    # --- labels ------------------------------------------------------------------------------

    def add_labels(self, repo: str, number: int, labels: list[str]) -> None:
        if labels:
            self.request("POST", f"/repos/{repo}/issues/{number}/labels", json={"labels": labels})

    def remove_label(self, repo: str, number: int, label: str) -> None:
        try:
            self.request("DELETE", f"/repos/{repo}/issues/{number}/labels/{quote(label, safe='')}")
        except NotFound:
            pass  # already gone: the outcome we wanted

    def label_exists(self, repo: str, name: str) -> bool:
        try:
            self.request("GET", f"/repos/{repo}/labels/{quote(name, safe='')}")
        except NotFound:
            return False
        return True

    def ensure_label(self, repo: str, name: str, color: str = "ededed", description: str = "") -> None:
        try:
            self.request("GET", f"/repos/{repo}/labels/{quote(name, safe='')}")
        except NotFound:
            try:
                self.request("POST", f"/repos/{repo}/labels",
                             json={"name": name, "color": color, "description": description[:100]})
            except GitHubError as exc:
                if exc.status != 422:  # 422: created meanwhile by another worker
                    raise

    # --- people and permissions --------------------------------------------------------------

    def permission(self, repo: str, username: str) -> str:
        """admin, maintain, write, triage, read or none."""
        try:
            data = self.json("GET", f"/repos/{repo}/collaborators/{quote(username, safe='')}/permission")
        except NotFound:
            return "none"
        return data.get("role_name") or data.get("permission") or "none"

    def is_team_member(self, org: str, team_slug: str, username: str) -> bool:
        try:
            data = self.json("GET", f"/orgs/{org}/teams/{team_slug}/memberships/{quote(username, safe='')}")
        except NotFound:
            return False
        return data.get("state") == "active"

    def get_user(self, login: str) -> dict:
        return self.json("GET", f"/users/{quote(login, safe='')}")

    def get_user_by_id(self, user_id: int) -> dict:
        return self.json("GET", f"/user/{user_id}")

    # --- the installation itself -------------------------------------------------------------

    def list_repositories(self) -> list[str]:
        """owner/name of every repository this installation can see."""
        names: list[str] = []
        url: str | None = "/installation/repositories"
        params: dict | None = {"per_page": 100}
        while url:
            response = self.request("GET", url, params=params)
            names += [r["full_name"] for r in response.json().get("repositories", [])]
            url = response.links.get("next", {}).get("url")
            params = None
        return names

    # --- contents ----------------------------------------------------------------------------

    def get_file(self, repo: str, path: str, ref: str | None = None) -> str | None:
        """A file's text at `ref` (default branch when None), or None when it does not exist."""
        try:
            response = self.request("GET", f"/repos/{repo}/contents/{quote(path)}",
                                    params={"ref": ref} if ref else None, accept="application/vnd.github.raw+json")
        except NotFound:
            return None
        return response.text


def convert_manifest(api_url: str, code: str, *, session: requests.Session | None = None) -> dict:
    """Exchange the code GitHub returns after an app is created from a manifest for the app's
    credentials (id, slug, pem, webhook_secret, client_id, client_secret, html_url).

    Unauthenticated by design: the one-time code is the credential. Never retried (a code is
    single-use, so a POST that may have succeeded must not be sent twice).
    """
    path = f"/app-manifests/{quote(code, safe='')}/conversions"
    return Transport(api_url, session=session).request("POST", path, token=None).json()


def oauth_user(api_url: str, access_token: str, *, session: requests.Session | None = None) -> dict:
    """The signed-in user (GET /user with a user-to-server token)."""
    return Transport(api_url, session=session).request("GET", "/user", token=access_token).json()
