"""The only module that talks to GitHub, built on PyGithub 2.x.

Which part of PyGithub does what (docs/ARCHITECTURE.md has the table):
- `Auth.AppAuth` makes the app's JWT (RS256, iat 60 s in the past, exp 9 min ahead, iss = app id),
  signed by `_AppKey` with the private key parsed once per process;
  `GithubIntegration` makes the app-level calls (installation tokens, installations, /app).
- Installation access tokens come from `GithubIntegration.get_access_token` and are cached here,
  per installation, until five minutes before they expire (PyGithub's own refresh margin is
  shorter), under a lock shared by the worker's threads.
- One PyGithub `Requester` per installation (auth = that cached token), kept for the process, so
  connections are reused; the worker's threads share it (`_NoDefaultPort` keeps each thread's call
  apart). Lists go through `PaginatedList`; single calls through the requester's
  `requestJsonAndCheck`, which returns GitHub's JSON as it came: the callers keep plain dicts, and
  no call is added (PyGithub's typed objects would fetch `GET /repos/{repo}` or complete themselves
  with a second GET; a request flow makes exactly the calls it made before PyGithub).
- `GithubRetry` (urllib3) for retries, configured to keep our rules:
  - 5xx and broken connections are retried for idempotent methods only; a POST answered 5xx, or
    whose connection broke after it was sent, is NOT re-sent (it may have succeeded). Callers that
    create things (comments) look for them by marker first, see `post_comment_once`. A POST that
    never connected is retried (GitHub cannot have seen it).
  - primary and secondary rate limits are retried for every method (GitHub refused before doing
    anything); a wait over 60 s is not slept in-process: it raises RetryLater so the inbox
    reschedules the delivery (`max_rate_limit_wait`, plus Retry-After headers over 60 s).
  - PyGithub's throttling is off (`seconds_between_requests=None`, `seconds_between_writes=None`):
    the worker paces itself.
- `base_url` = BEEKEEPER_GITHUB_API_URL, so GitHub Enterprise Server and test servers work.
- PyGithub's exceptions are mapped to ours (NotFound, GitHubUnavailable, GitHubError, RetryLater)
  without chaining, so no traceback carries a response's headers.
- Every HTTP response is counted by method and status (`beekeeper_github_api_calls_total`).

Tests pass `sleep=` to record waits instead of sleeping, and mock HTTP with `responses`.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlparse

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github import Auth, GithubIntegration, GithubRetry
from github.GithubException import (
    GithubException,
    RateLimitExceededExceedsMaxWait,
    RateLimitExceededException,
)
from github.GithubObject import NonCompletableGithubObject
from github.HookDelivery import HookDeliverySummary
from github.PaginatedList import PaginatedList
from github.Requester import HTTPRequestsConnectionClass, HTTPSRequestsConnectionClass, Requester, RequestsResponse
from requests.utils import parse_header_links
from urllib3.exceptions import MaxRetryError

from bot.core import metrics
from bot.core.clock import utcnow
from bot.core.errors import RetryLater

log = logging.getLogger("beekeeper.github")

USER_AGENT = "beekeeper-bot"
API_VERSION = "2022-11-28"
MAX_INLINE_WAIT_SECONDS = 60.0  # longer waits go back to the inbox as RetryLater
MAX_TRIES = 4
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})
TIMEOUT_SECONDS = 15
PER_PAGE = 100
JWT_EXPIRY_SECONDS = 9 * 60  # GitHub refuses more than 10 minutes
JWT_ISSUED_AT_SECONDS = -60  # in the past: absorbs clock drift
LABEL_MEMO_SECONDS = 600.0  # ensure_label does not ask again for a label seen this recently


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


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------------------------
# retries: GithubRetry with our rules
# ---------------------------------------------------------------------------------------------


class Retry(GithubRetry):
    """GithubRetry that never re-sends a write answered 5xx, hands long waits to the inbox, sleeps
    through an injectable function, and counts every response it sees.

    The wait happens in `increment` (and `sleep` is a no-op) so that it is the same under urllib3
    and under the `responses` test library, which calls `increment` but never `sleep`.
    """

    def __init__(self, sleep: Callable[[float], None] = time.sleep, **kwargs: Any):
        self._sleep_fn = sleep
        kwargs.setdefault("total", MAX_TRIES - 1)
        kwargs.setdefault("backoff_factor", 1)
        kwargs.setdefault("allowed_methods", IDEMPOTENT)  # 5xx and read errors: never for POST
        kwargs.setdefault("status_forcelist", [429, *range(500, 600)])  # GithubRetry adds 403
        kwargs.setdefault("raise_on_status", False)  # the last answer is returned, then mapped
        kwargs.setdefault("max_rate_limit_wait", MAX_INLINE_WAIT_SECONDS)
        kwargs.setdefault("secondary_rate_wait", MAX_INLINE_WAIT_SECONDS)  # GitHub's advice without a header
        super().__init__(**kwargs)

    def new(self, **kw: Any) -> Retry:
        kw["sleep"] = self._sleep_fn
        return super().new(**kw)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        metrics.GITHUB_CALLS.labels(method=method, status=str(status_code)).inc()  # every response passes here
        if status_code in (403, 429):
            return True  # a rate limit is retried whatever the method; increment decides if it is one
        return super().is_retry(method, status_code, has_retry_after)

    def get_backoff_time(self) -> float:
        failures = len(self.history)
        return 0.0 if failures == 0 else float(min(2 ** (failures - 1), 8))

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if error is not None:
            metrics.GITHUB_CALLS.labels(method=method or "", status="error").inc()
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        wait = retry.get_retry_after(response) if response is not None else None
        if wait is None:
            wait = retry.get_backoff_time()
        limited = response is not None and response.status in (403, 429)
        path = urlparse(url or "").path
        if wait > MAX_INLINE_WAIT_SECONDS:
            raise RetryLater(f"GitHub rate limit on {method} {path}", after=wait)
        if wait > 0:
            log.info("%s on %s %s; waiting %.0f s", "rate limited" if limited else "retrying", method, path, wait)
            self._sleep_fn(wait)
        return retry

    def sleep(self, response=None) -> None:
        """Already waited in `increment`."""


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def _message(data: Any) -> str:
    if isinstance(data, dict):
        return str(data.get("message", ""))[:300]
    return str(data or "")[:300]


def _reset_wait(headers: dict | None) -> float:
    reset = str((headers or {}).get("x-ratelimit-reset") or (headers or {}).get("X-RateLimit-Reset") or "")
    return max(0.0, int(reset) - time.time()) + 1.0 if reset.isdigit() else 60.0


@contextmanager
def _mapped(method: str, path: str):
    """PyGithub's and requests' exceptions as ours; `from None`, so no response headers are chained."""
    try:
        yield
    except RateLimitExceededExceedsMaxWait as exc:
        raise RetryLater(f"GitHub rate limit on {method} {path}", after=exc.wait or 60.0) from None
    except RateLimitExceededException as exc:  # retries exhausted while still limited
        raise RetryLater(f"GitHub rate limit on {method} {path}", after=_reset_wait(exc.headers)) from None
    except GithubException as exc:
        status, message = exc.status or 0, _message(exc.data)
        headers = exc.headers or {}
        out_of_calls = str(headers.get("x-ratelimit-remaining", headers.get("X-RateLimit-Remaining", ""))) == "0"
        if status in (403, 429) and ("rate limit" in message.lower() or out_of_calls):
            raise RetryLater(f"GitHub rate limit on {method} {path}", after=_reset_wait(exc.headers)) from None
        if status == 404:
            raise NotFound(404, message, method, path) from None
        if status >= 500:
            raise GitHubUnavailable(status, message, method, path) from None
        raise GitHubError(status, message, method, path) from None
    except (requests.RequestException, MaxRetryError) as exc:
        raise GitHubUnavailable(0, f"connection failed: {exc.__class__.__name__}", method, path) from None


# ---------------------------------------------------------------------------------------------
# HTTP through a PyGithub requester
# ---------------------------------------------------------------------------------------------


@dataclass
class Response:
    """What `request` returns: the status, headers and body of one answer."""

    status_code: int
    headers: dict[str, Any]
    text: str

    @property
    def content(self) -> bytes:
        return self.text.encode()

    def json(self) -> Any:
        return jsonlib.loads(self.text)

    @property
    def links(self) -> dict[str, dict]:
        header = self.headers.get("link") or self.headers.get("Link") or ""
        return {link.get("rel") or link["url"]: link for link in parse_header_links(header)} if header else {}


class _Raw(NonCompletableGithubObject):
    """A list item kept as GitHub's JSON (`raw_data`), for PaginatedList: never completed by a GET."""

    def _initAttributes(self) -> None:
        pass

    def _useAttributes(self, attributes: Any) -> None:
        pass


class _NoDefaultPort:
    """PyGithub's connection, with the URL written as GitHub documents it: PyGithub always adds the
    port (https://api.github.com:443/...), which the server ignores but URL-keyed tools (the
    `responses` mocks, egress proxies' allowlists, logs) see as a different URL.

    Safe to share between threads: PyGithub keeps one connection object per Requester and hands
    it a call in two steps, `request()` (which stored the verb, URL, headers and body on the
    object) then `getresponse()`. The worker's threads share an installation's Requester, so one
    thread's `request()` could land between another's two steps and both would send the second
    call (one call lost, one made twice, each answer handed to the wrong caller). The call is
    kept per thread instead; the requests Session under it pools connections for every thread."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._calls = threading.local()
        # What requests would read from the environment on every call (proxies for this host,
        # a CA bundle), read once: it walked os.environ twice per call, ~0.4 ms of CPU per GitHub
        # call. A connection object serves one host, and a process's environment does not change.
        url = f"{self.protocol}://{self.host}:{self.port}/"
        self.session.proxies.update(requests.utils.get_environ_proxies(url))
        if self.verify is True:
            self.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self.session.trust_env = False

    def request(self, verb: str, url: str, input: Any, headers: dict[str, str], stream: bool = False) -> None:
        self._calls.pending = (verb, url, input, headers)

    def getresponse(self) -> RequestsResponse:
        verb, path, body, headers = self._calls.pending
        self._calls.pending = None
        port = "" if self.port == {"https": 443, "http": 80}[self.protocol] else f":{self.port}"
        url = f"{self.protocol}://{self.host}{port}{path}"
        return RequestsResponse(getattr(self.session, verb.lower())(
            url, headers=headers, data=body, timeout=self.timeout, verify=self.verify, allow_redirects=False))


class _HTTPSConnection(_NoDefaultPort, HTTPSRequestsConnectionClass):
    pass


class _HTTPConnection(_NoDefaultPort, HTTPRequestsConnectionClass):
    pass


# PyGithub picks its connection classes from these class attributes (its `injectConnectionClasses`
# would also turn connection reuse off). Every PyGithub client in this process is made here.
Requester._Requester__httpsConnectionClass = _HTTPSConnection
Requester._Requester__httpConnectionClass = _HTTPConnection


def _requester(auth: Auth.Auth | None, api_url: str, retry: Retry) -> Requester:
    return Requester(
        auth=auth, base_url=api_url.rstrip("/"), timeout=TIMEOUT_SECONDS, user_agent=USER_AGENT, per_page=PER_PAGE,
        verify=True, retry=retry, pool_size=None,
        seconds_between_requests=None, seconds_between_writes=None,  # throttling off: the worker paces itself
        lazy=True, api_version=API_VERSION,
    )


def _request(requester: Requester, method: str, path: str, *, json: Any = None, params: dict | None = None,
             accept: str = "application/vnd.github+json") -> Response:
    method = method.upper()
    with _mapped(method, path):
        status, headers, text = requester.requestJson(method, path, params, {"Accept": accept}, json)
        if status >= 400:
            try:
                data = jsonlib.loads(text) if text else None
            except ValueError:
                data = {"message": text[:300]}
            raise Requester.createException(status, headers, data)
    return Response(status, headers, text if isinstance(text, str) else "")


def _json(response: Response) -> Any:
    return response.json() if response.text else None


class _InstallationToken(Auth.Auth):
    """PyGithub auth that takes the installation token from our cache on every request."""

    def __init__(self, app: GitHubApp, installation_id: int):
        self._app = app
        self._installation_id = installation_id

    @property
    def token_type(self) -> str:
        return "Bearer"

    @property
    def token(self) -> str:
        return self._app.installation_token(self._installation_id)


class _Bearer(Auth.Token):
    """A user-to-server token, sent as GitHub documents it (`Bearer`; PyGithub's Token says `token`)."""

    @property
    def token_type(self) -> str:
        return "Bearer"


class _AppKey:
    """Signs the app's JWTs (RS256, as PyGithub's AppAuth does) with the private key parsed once.

    Given the PEM text, PyJWT parses and checks the RSA key for every JWT: ~70 ms of CPU each
    time, paid by every installation token fetch and every app-level call. A key that does not
    parse is handed to PyJWT as text, so it fails as it did before."""

    def __init__(self, pem: str):
        self._pem = pem
        self._key: Any = None

    def sign(self, payload: dict) -> str:
        key = self._key
        if key is None:
            try:
                key = serialization.load_pem_private_key(self._pem.encode(), password=None)
            except (ValueError, TypeError):
                key = None
            if isinstance(key, rsa.RSAPrivateKey):
                self._key = key
            else:
                key = self._pem
        return jwt.encode(payload, key=key, algorithm="RS256")


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
        self.api_url = api_url.rstrip("/")
        self.retry = Retry(sleep=sleep)
        self._auth = Auth.AppAuth(int(app_id), sign_func=_AppKey(private_key).sign, jwt_expiry=JWT_EXPIRY_SECONDS,
                                  jwt_issued_at=JWT_ISSUED_AT_SECONDS) if self.configured else None
        self._integration = GithubIntegration(
            auth=self._auth, base_url=self.api_url, timeout=TIMEOUT_SECONDS, user_agent=USER_AGENT,
            per_page=PER_PAGE, retry=self.retry, seconds_between_requests=None, seconds_between_writes=None,
            lazy=True, api_version=API_VERSION,
        ) if self._auth else None
        self._tokens: dict[int, _CachedToken] = {}
        self._requesters: dict[int, Requester] = {}
        self._labels: dict[tuple[str, str], float] = {}  # (repo, label) -> seen to exist until (monotonic)
        self._lock = threading.Lock()
        self._slug: str | None = None

    @classmethod
    def from_settings(cls, settings, **kwargs) -> GitHubApp:
        return cls(settings.github_app_id, _secret(settings.github_private_key), settings.github_api_url, **kwargs)

    # --- authentication -------------------------------------------------------------------

    def _app_requester(self) -> Requester:
        if self._integration is None:
            raise GitHubError(0, "BEEKEEPER_GITHUB_APP_ID and BEEKEEPER_GITHUB_PRIVATE_KEY are not configured")
        return self._integration.requester

    def app_jwt(self) -> str:
        if self._auth is None:
            raise GitHubError(0, "BEEKEEPER_GITHUB_APP_ID and BEEKEEPER_GITHUB_PRIVATE_KEY are not configured")
        return self._auth.token

    def app_request(self, method: str, path: str, **kwargs) -> Response:
        return _request(self._app_requester(), method, path, **kwargs)

    def installation_token(self, installation_id: int) -> str:
        with self._lock:
            cached = self._tokens.get(installation_id)
            if cached and cached.expires_at - self.TOKEN_REFRESH_MARGIN > utcnow():
                return cached.token
        path = f"/app/installations/{installation_id}/access_tokens"
        self._app_requester()  # raises when not configured
        with _mapped("POST", path):
            granted = self._integration.get_access_token(installation_id)
            token = _CachedToken(granted.token, granted.expires_at)
        with self._lock:
            self._tokens[installation_id] = token
        return token.token

    def requester_for(self, installation_id: int) -> Requester:
        """The installation's PyGithub requester (one per installation, kept: connections are reused)."""
        with self._lock:
            requester = self._requesters.get(installation_id)
            if requester is None:
                requester = _requester(_InstallationToken(self, installation_id), self.api_url, self.retry)
                self._requesters[installation_id] = requester
            return requester

    def for_installation(self, installation_id: int) -> InstallationClient:
        return InstallationClient(self, installation_id)

    # --- labels known to exist (ensure_label) ------------------------------------------------

    def label_known(self, repo: str, name: str) -> bool:
        with self._lock:
            until = self._labels.get((repo.lower(), name.lower()))
        return until is not None and until > time.monotonic()

    def remember_label(self, repo: str, name: str) -> None:
        """Seen to exist. If it is deleted meanwhile, adding it to an issue recreates it (GitHub
        creates a missing label then, in the default colour) until the memo runs out."""
        with self._lock:
            if len(self._labels) >= 4096:  # many repositories: start again rather than grow
                self._labels.clear()
            self._labels[(repo.lower(), name.lower())] = time.monotonic() + LABEL_MEMO_SECONDS

    def forget_label(self, repo: str, name: str) -> None:
        with self._lock:
            self._labels.pop((repo.lower(), name.lower()), None)

    # --- app-level endpoints ----------------------------------------------------------------

    def get_app(self) -> dict:
        data = _json(self.app_request("GET", "/app"))
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
        self._app_requester()
        with _mapped("GET", "/app/installations"):
            return [i.raw_data for i in self._integration.get_installations()]

    def repo_installation(self, repo: str) -> dict:
        owner, _, name = repo.partition("/")
        self._app_requester()
        with _mapped("GET", f"/repos/{repo}/installation"):
            return self._integration.get_repo_installation(owner, name).raw_data

    def hook_deliveries(self, since: datetime) -> Iterator[dict]:
        """The app's webhook deliveries, newest first, until one older than `since`."""
        deliveries = PaginatedList(HookDeliverySummary, self._app_requester(), "/app/hook/deliveries",
                                   {"per_page": PER_PAGE})
        with _mapped("GET", "/app/hook/deliveries"):
            for item in deliveries:
                if _parse_time(item.raw_data["delivered_at"]) < since:
                    return
                yield item.raw_data

    def redeliver(self, delivery_id: int) -> None:
        self.app_request("POST", f"/app/hook/deliveries/{delivery_id}/attempts")

    def hook_config(self) -> dict:
        return _json(self.app_request("GET", "/app/hook/config"))


class InstallationClient:
    """Calls made as one installation (issues, comments, labels, permissions)."""

    def __init__(self, app: GitHubApp, installation_id: int):
        self.app = app
        self.installation_id = installation_id

    @property
    def requester(self) -> Requester:
        return self.app.requester_for(self.installation_id)

    def request(self, method: str, path: str, **kwargs) -> Response:
        return _request(self.requester, method, path, **kwargs)

    def json(self, method: str, path: str, **kwargs) -> Any:
        return _json(self.request(method, path, **kwargs))

    def paginate(self, path: str, params: dict | None = None, *, list_item: str | None = None) -> Iterator[dict]:
        """Every item of a listing (PyGithub's PaginatedList follows the Link headers)."""
        pages = PaginatedList(_Raw, self.requester, path, {"per_page": PER_PAGE, **(params or {})},
                              **({"list_item": list_item} if list_item else {}))
        with _mapped("GET", path):
            for item in pages:
                yield item.raw_data

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
            self.app.forget_label(repo, name)
            return False
        self.app.remember_label(repo, name)
        return True

    def ensure_label(self, repo: str, name: str, color: str = "ededed", description: str = "") -> None:
        """Create the label unless it exists. A label seen or created by this process in the last
        LABEL_MEMO_SECONDS is not asked for again: every review adding a label made this GET."""
        if self.app.label_known(repo, name):
            return
        try:
            self.request("GET", f"/repos/{repo}/labels/{quote(name, safe='')}")
        except NotFound:
            try:
                self.request("POST", f"/repos/{repo}/labels",
                             json={"name": name, "color": color, "description": description[:100]})
            except GitHubError as exc:
                if exc.status != 422:  # 422: created meanwhile by another worker
                    raise
        self.app.remember_label(repo, name)

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
        return self.json("GET", f"/user/{int(user_id)}")

    # --- the installation itself -------------------------------------------------------------

    def list_repositories(self) -> list[str]:
        """owner/name of every repository this installation can see."""
        return [r["full_name"] for r in self.paginate("/installation/repositories", list_item="repositories")]

    # --- contents ----------------------------------------------------------------------------

    def get_file(self, repo: str, path: str, ref: str | None = None) -> str | None:
        """A file's text at `ref` (default branch when None), or None when it does not exist."""
        try:
            response = self.request("GET", f"/repos/{repo}/contents/{quote(path)}",
                                    params={"ref": ref} if ref else None, accept="application/vnd.github.raw+json")
        except NotFound:
            return None
        return response.text


def _secret(value: Any) -> str | None:
    """A setting's plain value (pydantic's SecretStr or a str)."""
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else str(value)


def convert_manifest(api_url: str, code: str, *, session: requests.Session | None = None) -> dict:
    """Exchange the code GitHub returns after an app is created from a manifest for the app's
    credentials (id, slug, pem, webhook_secret, client_id, client_secret, html_url).

    Unauthenticated by design: the one-time code is the credential. Never retried (a code is
    single-use, so a POST that may have succeeded must not be sent twice).
    """
    path = f"/app-manifests/{quote(code, safe='')}/conversions"
    return _json(_request(_requester(None, api_url, Retry(total=0)), "POST", path))


def oauth_user(api_url: str, access_token: str, *, session: requests.Session | None = None) -> dict:
    """The signed-in user (GET /user with a user-to-server token)."""
    return _json(_request(_requester(_Bearer(access_token), api_url, Retry()), "GET", "/user"))


def exchange_oauth_code(web_url: str, *, client_id: str, client_secret: str, code: str, redirect_uri: str,
                        code_verifier: str | None = None) -> dict:
    """POST /login/oauth/access_token on the web host (PKCE: the verifier proves this server
    started the sign-in). GitHub answers 200 with an `error` for a bad code. Not retried: a code
    works once."""
    body = {"client_id": client_id, "client_secret": client_secret, "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        body["code_verifier"] = code_verifier
    response = _request(_requester(None, web_url, Retry(total=0)), "POST", "/login/oauth/access_token",
                        json=body, accept="application/json")
    return response.json()
