"""A stateful fake of the GitHub REST API at the HTTP boundary.

One core (`FakeGitHub.handle`) answers requests with GitHub's real payload shapes and keeps
state (issues, comments, labels, permissions, users, files, hook deliveries, OAuth codes).
Two adapters expose it:
- `install(responses_mock)` for in-process tests with the `responses` library;
- `wsgi_app()` for live-server tests (gunicorn, Playwright) through a local HTTP server.

Failures are injected with `fail(method, path_regex, status, times=1, headers=None)`.
Every call is recorded in `calls` as (method, path, json_body) for assertions.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlparse

API = "https://api.github.com"
WEB = "https://github.com"
APP_SLUG = "beekeeper-test"
APP_ID = 424242
BOT_USER = {"login": f"{APP_SLUG}[bot]", "id": 9900001, "type": "Bot", "node_id": "BOT_kgDOB",
            "html_url": f"https://github.com/apps/{APP_SLUG}"}


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def user_payload(login: str, user_id: int, *, type_: str = "User", created_at: str = "2015-01-01T00:00:00Z") -> dict:
    return {
        "login": login, "id": user_id, "node_id": f"U_{user_id}", "type": type_, "site_admin": False,
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "html_url": f"https://github.com/{login}", "url": f"{API}/users/{login}",
        "created_at": created_at, "name": login.title(), "public_repos": 3, "followers": 1,
    }


@dataclass
class Failure:
    method: str
    pattern: re.Pattern
    status: int
    times: int
    headers: dict[str, str]
    body: dict


@dataclass
class FakeGitHub:
    api_url: str = API
    web_url: str = WEB
    users: dict[str, dict] = field(default_factory=dict)  # login -> user payload
    permissions: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, login) -> role
    team_members: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (org, team) -> logins
    issues: dict[tuple[str, int], dict] = field(default_factory=dict)
    comments: dict[int, dict] = field(default_factory=dict)  # id -> comment (+ "_repo", "_issue")
    labels: dict[str, dict[str, dict]] = field(default_factory=dict)  # repo -> name -> label
    files: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, path) -> text
    hook_deliveries: list[dict] = field(default_factory=list)
    redelivered: list[int] = field(default_factory=list)
    oauth_codes: dict[str, str] = field(default_factory=dict)  # code -> login
    oauth_tokens: dict[str, str] = field(default_factory=dict)  # token -> login
    oauth_challenges: dict[str, str] = field(default_factory=dict)  # code -> PKCE S256 code_challenge
    # Who is "signed in at GitHub" in a live test's browser: GET /login/oauth/authorize grants at
    # once as this login and redirects back with a fresh code (None: nobody, the page refuses).
    browser_login: str | None = None
    # App manifest flow: code -> the credentials POST /app-manifests/{code}/conversions returns.
    manifest_codes: dict[str, dict] = field(default_factory=dict)
    manifest_conversion_auth: list[str | None] = field(default_factory=list)  # Authorization header of each
    # The app's webhook configuration (GET /app/hook/config); GitHub masks the secret.
    hook_config: dict = field(default_factory=lambda: {"content_type": "json", "insecure_ssl": "0",
                                                       "url": "http://localhost:8000/webhook",
                                                       "secret": "********"})
    # The one installation (id 1): what it grants, and the repositories it covers.
    installation: dict = field(default_factory=lambda: {
        "id": 1, "app_id": APP_ID, "app_slug": APP_SLUG, "target_type": "Organization",
        "account": {"login": "acme", "id": 7000001, "type": "Organization"},
        "repository_selection": "selected",
        "permissions": {"issues": "write", "metadata": "read", "members": "read", "contents": "read"},
        "events": ["issues", "issue_comment"], "suspended_at": None})
    installation_repos: list[str] = field(default_factory=lambda: ["acme/access"])
    uninstalled_repos: set[str] = field(default_factory=set)  # GET /repos/{repo}/installation -> 404
    tokens_issued: int = 0
    token_ttl: timedelta = timedelta(hours=1)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1_000_000))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # ---- state helpers ----------------------------------------------------------------------

    def add_user(self, login: str, user_id: int, **kwargs) -> dict:
        self.users[login] = user_payload(login, user_id, **kwargs)
        return self.users[login]

    def _user_by_login(self, login: str):
        """GET /users/{login}: logins are case-insensitive on GitHub."""
        found = self.users.get(login) or next((u for k, u in self.users.items() if k.lower() == login.lower()), None)
        return found or (404, {"message": "Not Found"})

    def rename_user(self, old: str, new: str) -> dict:
        """The account keeps its numeric id under a new login (GitHub's rename)."""
        user = self.users.pop(old)
        self.users[new] = user_payload(new, user["id"], created_at=user.get("created_at") or "2015-01-01T00:00:00Z")
        return self.users[new]

    def set_permission(self, repo: str, login: str, role: str) -> None:
        self.permissions[(repo, login)] = role

    def add_issue(self, repo: str, number: int, *, body: str, user: dict, title: str = "Special access request",
                  labels: list[str] = (), state: str = "open") -> dict:
        issue = {
            "url": f"{self.api_url}/repos/{repo}/issues/{number}",
            "html_url": f"{self.web_url}/{repo}/issues/{number}",
            "id": 5_000_000 + number, "node_id": f"I_{number}", "number": number, "title": title,
            "user": user, "labels": [self._label(repo, name) for name in labels], "state": state,
            "state_reason": None, "locked": False, "comments": 0, "created_at": _now(), "updated_at": _now(),
            "closed_at": None, "author_association": "NONE", "body": body,
        }
        self.issues[(repo, number)] = issue
        return issue

    def add_comment(self, repo: str, number: int, body: str, user: dict) -> dict:
        with self._lock:
            cid = next(self._ids)
            comment = {
                "id": cid, "node_id": f"IC_{cid}", "body": body, "user": user,
                "url": f"{self.api_url}/repos/{repo}/issues/comments/{cid}",
                "html_url": f"{self.web_url}/{repo}/issues/{number}#issuecomment-{cid}",
                "issue_url": f"{self.api_url}/repos/{repo}/issues/{number}",
                "created_at": _now(), "updated_at": _now(), "author_association": "NONE",
                "reactions": {}, "_repo": repo, "_issue": number,
            }
            self.comments[cid] = comment
            return comment

    def comments_on(self, repo: str, number: int) -> list[dict]:
        return [c for c in self.comments.values() if c["_repo"] == repo and c["_issue"] == number]

    def bot_comments(self, repo: str, number: int) -> list[dict]:
        return [c for c in self.comments_on(repo, number) if c["user"]["login"] == BOT_USER["login"]]

    def issue_labels(self, repo: str, number: int) -> list[str]:
        return [label["name"] for label in self.issues[(repo, number)]["labels"]]

    def fail(self, method: str, path_regex: str, status: int, times: int = 1, headers: dict | None = None,
             body: dict | None = None) -> None:
        self.failures.append(Failure(method.upper(), re.compile(path_regex), status, times, headers or {},
                                     body or {"message": "Server Error"}))

    def count(self, method: str, path_regex: str) -> int:
        pattern = re.compile(path_regex)
        return sum(1 for m, p, _ in self.calls if m == method.upper() and pattern.search(p))

    def _label(self, repo: str, name: str) -> dict:
        repo_labels = self.labels.setdefault(repo, {})
        if name not in repo_labels:
            repo_labels[name] = {"id": next(self._ids), "name": name, "color": "ededed", "default": False,
                                 "description": "", "url": f"{self.api_url}/repos/{repo}/labels/{name}"}
        return repo_labels[name]

    # ---- the request handler ------------------------------------------------------------------

    def handle(self, method: str, url: str, body: bytes | str | None, headers: dict) -> tuple[int, dict, Any]:
        parsed = urlparse(url)
        path = unquote(parsed.path)
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        payload = None
        if body:
            text = body.decode() if isinstance(body, bytes) else body
            try:
                payload = json.loads(text)
            except ValueError:
                payload = {k: v[0] for k, v in parse_qs(text).items()}
        with self._lock:
            self.calls.append((method.upper(), path, payload))
            for failure in self.failures:
                if failure.times > 0 and failure.method == method.upper() and failure.pattern.search(path):
                    failure.times -= 1
                    return failure.status, failure.headers, failure.body
            if url.startswith(self.web_url) and not url.startswith(self.api_url):
                return self._web(method.upper(), path, payload or query)
            api_path = url[len(self.api_url):].split("?")[0] if url.startswith(self.api_url) else path
            return self._api(method.upper(), unquote(api_path), query, payload, headers)

    def _web(self, method: str, path: str, data: dict) -> tuple[int, dict, Any]:
        if method == "GET" and path == "/login/oauth/authorize":
            return self._authorize(data)
        if method == "POST" and path == "/login/oauth/access_token":
            login = self.oauth_codes.pop(data.get("code", ""), None)
            challenge = self.oauth_challenges.pop(data.get("code", ""), None)
            if login is not None and challenge is not None and challenge != _s256(data.get("code_verifier", "")):
                login = None  # GitHub refuses a verifier that does not match the sign-in's challenge
            if login is None:
                return 200, {}, {"error": "bad_verification_code",
                                 "error_description": "The code passed is incorrect or expired."}
            token = f"ghu_fake{next(self._ids)}"
            self.oauth_tokens[token] = login
            return 200, {}, {"access_token": token, "token_type": "bearer", "scope": ""}
        return 404, {}, {"message": "Not Found"}

    def _authorize(self, query: dict) -> tuple[int, dict, Any]:
        """GitHub's authorize page for a browser signed in as `browser_login`, with the app already
        authorised: straight back to redirect_uri with a one-time code and the caller's state."""
        login, redirect_uri = self.browser_login, query.get("redirect_uri")
        if not login or login not in self.users or not redirect_uri or not query.get("client_id"):
            return 403, {}, {"message": "nobody is signed in at the fake GitHub (set browser_login)"}
        code = f"fakecode{next(self._ids)}"
        self.oauth_codes[code] = login
        if query.get("code_challenge"):
            self.oauth_challenges[code] = query["code_challenge"]
        params = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        separator = "&" if "?" in redirect_uri else "?"
        return 302, {"Location": f"{redirect_uri}{separator}{urlencode(params)}"}, ""

    def _api(self, method: str, path: str, query: dict, data: Any, headers: dict) -> tuple[int, dict, Any]:
        routes = [
            ("POST", r"/app/installations/(\d+)/access_tokens", self._access_token),
            ("GET", r"/app", lambda m: {"id": APP_ID, "slug": APP_SLUG, "name": "Beekeeper Test",
                                        "owner": {"login": "acme"}, "events": ["issues", "issue_comment"],
                                        "permissions": {"issues": "write", "metadata": "read",
                                                        "members": "read", "contents": "read"}}),
            ("GET", r"/app/hook/deliveries", lambda m: self._hook_deliveries(query)),
            ("GET", r"/app/hook/config", lambda m: self.hook_config),
            ("GET", r"/app/installations", lambda m: self._page([self.installation], query, "/app/installations")),
            ("GET", r"/installation/repositories", lambda m: self._installation_repositories()),
            ("POST", r"/app-manifests/([^/]+)/conversions", lambda m: self._convert_manifest(m[1], headers)),
            ("POST", r"/app/hook/deliveries/(\d+)/attempts", self._redeliver),
            ("GET", r"/user", lambda m: self._oauth_user(headers)),
            ("GET", r"/users/([^/]+)", lambda m: self._user_by_login(m[1])),
            ("GET", r"/user/(\d+)", self._user_by_id),
            ("GET", r"/repos/([^/]+/[^/]+)/installation", lambda m: self._repo_installation(m[1])),
            ("GET", r"/repos/([^/]+/[^/]+)/issues", lambda m: self._list_issues(m[1], query)),
            ("GET", r"/repos/([^/]+/[^/]+)/issues/(\d+)", lambda m: self._issue(m[1], int(m[2]))),
            ("PATCH", r"/repos/([^/]+/[^/]+)/issues/(\d+)", lambda m: self._patch_issue(m[1], int(m[2]), data)),
            ("GET", r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments",
             lambda m: self._page([self._public(c) for c in self.comments_on(m[1], int(m[2]))], query, m[0])),
            ("POST", r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments",
             lambda m: (201, self._public(self.add_comment(m[1], int(m[2]), data["body"], BOT_USER)))),
            ("GET", r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)", lambda m: self._get_comment(m[1], int(m[2]))),
            ("PATCH", r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)", lambda m: self._edit_comment(int(m[2]), data)),
            ("POST", r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)/reactions",
             lambda m: self._react(int(m[2]), data)),
            ("POST", r"/repos/([^/]+/[^/]+)/issues/(\d+)/labels", lambda m: self._add_labels(m[1], int(m[2]), data)),
            ("DELETE", r"/repos/([^/]+/[^/]+)/issues/(\d+)/labels/(.+)",
             lambda m: self._remove_label(m[1], int(m[2]), m[3])),
            ("GET", r"/repos/([^/]+/[^/]+)/labels/(.+)",
             lambda m: self.labels.get(m[1], {}).get(m[2]) or (404, {"message": "Not Found"})),
            ("POST", r"/repos/([^/]+/[^/]+)/labels", lambda m: (201, self._label(m[1], data["name"]))),
            ("GET", r"/repos/([^/]+/[^/]+)/collaborators/([^/]+)/permission",
             lambda m: self._permission(m[1], m[2])),
            ("GET", r"/orgs/([^/]+)/teams/([^/]+)/memberships/([^/]+)", self._membership),
            ("GET", r"/repos/([^/]+/[^/]+)/contents/(.+)", lambda m: self._file(m[1], m[2])),
        ]
        for route_method, pattern, func in routes:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                result = func(match)
                if isinstance(result, tuple) and len(result) == 3:
                    return result
                if isinstance(result, tuple):
                    return result[0], {}, result[1]
                return 200, {}, result
        return 404, {}, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}

    # ---- endpoint bodies ------------------------------------------------------------------------

    def _access_token(self, match) -> tuple[int, dict]:
        self.tokens_issued += 1
        expires = datetime.now(UTC) + self.token_ttl
        return 201, {"token": f"ghs_fake{self.tokens_issued:08d}",
                     "expires_at": expires.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                     "permissions": {"issues": "write", "metadata": "read"}, "repository_selection": "all"}

    def _oauth_user(self, headers: dict):
        auth = headers.get("Authorization", "")
        login = self.oauth_tokens.get(auth.removeprefix("Bearer ").removeprefix("token ").strip())
        if login is None or login not in self.users:
            return 401, {"message": "Bad credentials"}
        return self.users[login]

    def _user_by_id(self, match):
        for user in self.users.values():
            if user["id"] == int(match[1]):
                return user
        return 404, {"message": "Not Found"}

    def _public(self, comment: dict) -> dict:
        return {k: v for k, v in comment.items() if not k.startswith("_")}

    def _page(self, items: list, query: dict, path: str):
        per_page = int(query.get("per_page", 30))
        page = int(query.get("page", 1))
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            next_query = urlencode({**query, "page": page + 1, "per_page": per_page})
            headers["Link"] = f'<{self.api_url}{path}?{next_query}>; rel="next"'
        return 200, headers, chunk

    def _list_issues(self, repo: str, query: dict):
        wanted = set(filter(None, query.get("labels", "").split(",")))
        state = query.get("state", "open")
        items = [
            i for (r, _), i in sorted(self.issues.items()) if r == repo
            and (state == "all" or i["state"] == state)
            and wanted <= {label["name"] for label in i["labels"]}
        ]
        return self._page(items, query, f"/repos/{repo}/issues")

    def _issue(self, repo: str, number: int):
        return self.issues.get((repo, number)) or (404, {"message": "Not Found"})

    def _patch_issue(self, repo: str, number: int, data: dict):
        issue = self.issues.get((repo, number))
        if issue is None:
            return 404, {"message": "Not Found"}
        if "state" in data:
            issue["state"] = data["state"]
            issue["state_reason"] = data.get("state_reason") if data["state"] == "closed" else "reopened"
            issue["closed_at"] = _now() if data["state"] == "closed" else None
        for key in ("title", "body"):
            if key in data:
                issue[key] = data[key]
        issue["updated_at"] = _now()
        return issue

    def _get_comment(self, repo: str, cid: int):
        comment = self.comments.get(cid)
        if comment is None or comment["_repo"] != repo:
            return 404, {"message": "Not Found"}
        return self._public(comment)

    def _edit_comment(self, cid: int, data: dict):
        comment = self.comments.get(cid)
        if comment is None:
            return 404, {"message": "Not Found"}
        if comment["user"]["login"] != BOT_USER["login"]:
            return 403, {"message": "Resource not accessible by integration"}
        comment["body"] = data["body"]
        comment["updated_at"] = _now()
        return self._public(comment)

    def _react(self, cid: int, data: dict):
        comment = self.comments.get(cid)
        if comment is None:
            return 404, {"message": "Not Found"}
        comment["reactions"][data["content"]] = comment["reactions"].get(data["content"], 0) + 1
        return 201, {"id": next(self._ids), "content": data["content"], "user": BOT_USER}

    def _add_labels(self, repo: str, number: int, data: dict):
        issue = self.issues.get((repo, number))
        if issue is None:
            return 404, {"message": "Not Found"}
        have = {label["name"] for label in issue["labels"]}
        for name in data.get("labels", []):
            if name not in have:
                issue["labels"].append(self._label(repo, name))
                have.add(name)
        return issue["labels"]

    def _remove_label(self, repo: str, number: int, name: str):
        issue = self.issues.get((repo, number))
        if issue is None or name not in {label["name"] for label in issue["labels"]}:
            return 404, {"message": "Label does not exist"}
        issue["labels"] = [label for label in issue["labels"] if label["name"] != name]
        return issue["labels"]

    def _permission(self, repo: str, login: str):
        if login not in self.users:
            return 404, {"message": "Not Found"}
        role = self.permissions.get((repo, login), "read")
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        return {"permission": legacy, "role_name": role, "user": self.users[login]}

    def _membership(self, match):
        if match[3] in self.team_members.get((match[1], match[2]), set()):
            return {"state": "active", "role": "member", "url": ""}
        return 404, {"message": "Not Found"}

    def _file(self, repo: str, path: str):
        text = self.files.get((repo, path))
        if text is None:
            return 404, {"message": "Not Found"}
        return 200, {"Content-Type": "application/vnd.github.raw+json"}, text

    def _hook_deliveries(self, query: dict):
        items = sorted(self.hook_deliveries, key=lambda d: d["delivered_at"], reverse=True)
        return self._page(items, query, "/app/hook/deliveries")

    def _repo_installation(self, repo: str):
        if repo in self.uninstalled_repos:
            return 404, {"message": "Not Found"}
        return {**self.installation, "id": 1, "app_id": APP_ID}

    def _installation_repositories(self):
        repos = [{"id": 8_000_000 + i, "full_name": name, "name": name.split("/")[1], "private": False}
                 for i, name in enumerate(self.installation_repos)]
        return {"total_count": len(repos), "repository_selection": "selected", "repositories": repos}

    def _convert_manifest(self, code: str, headers: dict):
        self.manifest_conversion_auth.append(headers.get("Authorization"))  # GitHub wants none
        app = self.manifest_codes.pop(code, None)
        if app is None:
            return 404, {"message": "Not Found"}
        return 201, app

    def _redeliver(self, match):
        self.redelivered.append(int(match[1]))
        return 202, {}

    # ---- adapters ---------------------------------------------------------------------------------

    def install(self, rsps) -> None:
        """Route every request to the API and web hosts through this fake (responses library)."""

        def callback(request):
            status, headers, body = self.handle(request.method, request.url, request.body, dict(request.headers))
            text = body if isinstance(body, str) else json.dumps(body)
            headers = {"Content-Type": "application/json; charset=utf-8", **headers}
            return status, headers, text

        for host in {self.api_url, self.web_url}:
            for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
                rsps.add_callback(method, re.compile(re.escape(host) + r"/.*"), callback=callback)

    def wsgi_app(self):
        """A WSGI app serving this fake: mount it at the API URL and the web URL of a live test."""

        def app(environ, start_response):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            query = environ.get("QUERY_STRING", "")
            host = f"{environ['wsgi.url_scheme']}://{environ['HTTP_HOST']}"
            prefix = environ.get("SCRIPT_NAME", "")
            url = f"{host}{prefix}{environ.get('PATH_INFO', '')}" + (f"?{query}" if query else "")
            headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
            status, extra, payload = self.handle(environ["REQUEST_METHOD"], url, body, headers)
            text = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            reason = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 302: "Found",
                      401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 422: "Unprocessable Entity",
                      429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway"}.get(status, "")
            start_response(f"{status} {reason}", [("Content-Type", "application/json"), *extra.items()])
            return [text]

        return app
