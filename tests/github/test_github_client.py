"""bot.github.client against `responses`: app JWT, installation tokens, retries, rate limits, GHES."""

from __future__ import annotations

import json
import logging
import re
import socket
import socketserver
import threading
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.core import metrics
from bot.core.config import load_settings
from bot.core.errors import RetryLater
from bot.github.client import MAX_TRIES, GitHubApp, GitHubError, GitHubUnavailable, NotFound, _CachedToken
from tests.fakegithub import API, APP_ID, BOT_USER, FakeGitHub

REPO = "acme/access"
OCTOCAT = {"login": "octocat", "id": 583231, "type": "User"}


@pytest.fixture
def issue(fake_github):
    return fake_github.add_issue(REPO, 1, body="hello", user=OCTOCAT)


def public_key(private_pem: str):
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key()


# ---------------------------------------------------------------------------------------------
# app authentication
# ---------------------------------------------------------------------------------------------


def test_app_jwt_claims_verify_with_the_public_key(github, private_key_pem):
    before = int(time.time())
    token = github.app_jwt()
    after = int(time.time())
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, public_key(private_key_pem), algorithms=["RS256"])
    assert claims["iss"] == "424242"
    assert before - 60 <= claims["iat"] <= after - 60  # 60 s in the past: clock drift
    assert claims["exp"] - after <= 600  # GitHub refuses more than 10 minutes
    assert claims["exp"] > after
    someone_else = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, someone_else.public_key(), algorithms=["RS256"])


def test_the_private_key_is_parsed_once_for_every_jwt(github, private_key_pem, monkeypatch):
    """PyJWT parsed (and checked) the PEM for every JWT, ~70 ms of CPU per token fetch."""
    import bot.github.client as github_module

    parsed = []
    load = github_module.serialization.load_pem_private_key
    monkeypatch.setattr(github_module.serialization, "load_pem_private_key",
                        lambda *args, **kwargs: parsed.append(1) or load(*args, **kwargs))
    tokens = [github.app_jwt() for _ in range(3)]
    assert len(parsed) == 1
    for token in tokens:
        assert jwt.decode(token, public_key(private_key_pem), algorithms=["RS256"])["iss"] == "424242"


def test_a_private_key_that_does_not_parse_fails_as_before():
    app = GitHubApp("424242", "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", API)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - PyJWT's own error, whatever it is
        app.app_jwt()
    with pytest.raises(type(caught.value)):
        jwt.encode({"iss": "1"}, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
                   algorithm="RS256")


def test_app_endpoints_are_called_with_the_jwt(github, private_key_pem):
    with responses.RequestsMock() as rsps:
        rsps.get(f"{API}/app", json={"id": APP_ID, "slug": "beekeeper-test"})
        assert github.get_app()["slug"] == "beekeeper-test"
        headers = rsps.calls[0].request.headers
    assert headers["Authorization"].startswith("Bearer ")
    claims = jwt.decode(headers["Authorization"].removeprefix("Bearer "), public_key(private_key_pem),
                        algorithms=["RS256"])
    assert claims["iss"] == "424242"
    assert headers["X-GitHub-Api-Version"] == "2022-11-28"


def test_app_jwt_without_credentials_names_the_settings():
    with pytest.raises(GitHubError, match="BEEKEEPER_GITHUB_APP_ID"):
        GitHubApp(None, None, API).app_jwt()


# ---------------------------------------------------------------------------------------------
# installation tokens
# ---------------------------------------------------------------------------------------------


def test_installation_token_is_fetched_once_and_reused(github, fake_github, issue):
    client = github.for_installation(1)
    client.get_issue(REPO, 1)
    client.get_issue(REPO, 1)
    github.for_installation(1).get_issue(REPO, 1)  # a new client for the same installation: same cache
    assert fake_github.tokens_issued == 1
    assert fake_github.count("POST", r"^/app/installations/1/access_tokens$") == 1


def test_threads_sharing_an_installation_each_get_their_own_answer(github, fake_github, monkeypatch):
    """PyGithub hands a call to the installation's one connection object in two steps, request()
    then getresponse(); the worker's threads share it. Another thread's whole call made between
    one thread's two steps must not replace that thread's call (before the fix, both sent the
    second call: one call lost, one made twice, an answer handed to the wrong caller)."""
    import bot.github.client as github_module

    fake_github.add_user("alice-dev", 5001)
    fake_github.add_user("bob-dev", 5002)
    client = github.for_installation(1)
    client.get_user("alice-dev")  # the token is fetched before the race, so each thread makes one call
    first_between_steps, second_done = threading.Event(), threading.Event()
    original = github_module._NoDefaultPort.getresponse

    def getresponse(self):
        if threading.current_thread().name == "first" and not first_between_steps.is_set():
            first_between_steps.set()  # request() done, getresponse() not yet: let the other call run
            assert second_done.wait(10)
        return original(self)

    monkeypatch.setattr(github_module._NoDefaultPort, "getresponse", getresponse)
    answers: dict[str, str] = {}

    def first():
        answers["first"] = client.get_user("alice-dev")["login"]

    def second():
        assert first_between_steps.wait(10)
        try:
            answers["second"] = client.get_user("bob-dev")["login"]
        finally:
            second_done.set()

    mark = len(fake_github.calls)
    threads = [threading.Thread(target=first, name="first"), threading.Thread(target=second, name="second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert answers == {"first": "alice-dev", "second": "bob-dev"}
    assert sorted(path for _, path, _ in fake_github.calls[mark:]) == ["/users/alice-dev", "/users/bob-dev"]


def test_a_label_seen_recently_is_not_asked_for_again(github, fake_github, monkeypatch):
    """Every review that adds a label ensured it exists with a GET; a label this process saw or
    created within LABEL_MEMO_SECONDS is taken as existing. A label found missing is forgotten."""
    import bot.github.client as github_module

    now = [1000.0]
    monkeypatch.setattr(github_module.time, "monotonic", lambda: now[0])
    client = github.for_installation(1)

    def label_calls():
        return [(m, p) for m, p, _ in fake_github.calls if "/labels" in p and "/issues/" not in p]

    client.ensure_label(REPO, "validated", "0e8a16", "Every check passed")
    assert label_calls() == [("GET", f"/repos/{REPO}/labels/validated"), ("POST", f"/repos/{REPO}/labels")]
    client.ensure_label(REPO, "validated", "0e8a16", "Every check passed")
    github.for_installation(2).ensure_label(REPO.upper(), "Validated")  # names compare without case
    assert len(label_calls()) == 2  # no call: seen to exist a moment ago
    now[0] += github_module.LABEL_MEMO_SECONDS + 1
    client.ensure_label(REPO, "validated")
    assert label_calls()[2:] == [("GET", f"/repos/{REPO}/labels/validated")]  # asked again once the memo ran out

    del fake_github.labels[REPO]["validated"]  # deleted on GitHub
    assert client.label_exists(REPO, "validated") is False  # doctor's question forgets it
    client.ensure_label(REPO, "validated", "0e8a16", "Every check passed")
    assert label_calls()[-2:] == [("GET", f"/repos/{REPO}/labels/validated"), ("POST", f"/repos/{REPO}/labels")]
    assert "validated" in fake_github.labels[REPO]


def test_proxies_and_ca_bundle_from_the_environment_still_apply(private_key_pem, monkeypatch):
    """requests read them from the environment on every call; now once per connection. Same
    outcome: the API host's proxy and the CA bundle are used, a no_proxy host goes direct."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "ghe.internal")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/company.pem")
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with responses.RequestsMock() as rsps:
        for host in ("api.github.com", "ghe.internal"):
            rsps.post(f"https://{host}/app/installations/1/access_tokens", status=201,
                      json={"token": "ghs_x", "expires_at": expires})
            rsps.get(f"https://{host}/users/octocat", json=OCTOCAT)
        GitHubApp("424242", private_key_pem, "https://api.github.com").for_installation(1).get_user("octocat")
        GitHubApp("424242", private_key_pem, "https://ghe.internal").for_installation(1).get_user("octocat")
        sent = [(call.request.url, call.request.req_kwargs) for call in rsps.calls]
    assert [url for url, _ in sent] == [
        "https://api.github.com/app/installations/1/access_tokens", "https://api.github.com/users/octocat",
        "https://ghe.internal/app/installations/1/access_tokens", "https://ghe.internal/users/octocat"]
    for url, kwargs in sent:
        assert kwargs["verify"] == "/etc/ssl/certs/company.pem"
        expected = None if "ghe.internal" in url else "http://proxy.internal:3128"
        assert kwargs["proxies"].get("https") == expected, url


def test_installation_requests_carry_the_installation_token(github):
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with responses.RequestsMock() as rsps:
        rsps.post(f"{API}/app/installations/7/access_tokens", status=201,
                  json={"token": "ghs_installation7", "expires_at": expires})
        rsps.get(f"{API}/repos/{REPO}/issues/1", json={"number": 1})
        github.for_installation(7).get_issue(REPO, 1)
        assert rsps.calls[1].request.headers["Authorization"] == "Bearer ghs_installation7"
        assert rsps.calls[0].request.headers["Authorization"] != "Bearer ghs_installation7"  # the JWT


def test_each_installation_has_its_own_token(github, fake_github, issue):
    github.for_installation(1).get_issue(REPO, 1)
    github.for_installation(2).get_issue(REPO, 1)
    assert fake_github.tokens_issued == 2


def test_installation_token_is_refreshed_shortly_before_it_expires(github, fake_github, issue, frozen_clock):
    client = github.for_installation(1)
    client.get_issue(REPO, 1)
    frozen_clock.advance(minutes=54)  # the fake's tokens live one hour; 6 minutes left
    client.get_issue(REPO, 1)
    assert fake_github.tokens_issued == 1
    fake_github.token_ttl = timedelta(hours=2)  # the fake dates tokens by the real clock, not the frozen one
    frozen_clock.advance(minutes=2)  # under five minutes left: refreshed before GitHub would refuse it
    client.get_issue(REPO, 1)
    assert fake_github.tokens_issued == 2
    frozen_clock.advance(minutes=2)
    client.get_issue(REPO, 1)
    assert fake_github.tokens_issued == 2  # the new token is reused in turn


# ---------------------------------------------------------------------------------------------
# retries
# ---------------------------------------------------------------------------------------------


def test_502_then_200_is_retried(github, fake_github, issue, sleeps):
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", 502, times=1)
    assert github.for_installation(1).get_issue(REPO, 1)["number"] == 1
    assert fake_github.count("GET", rf"^/repos/{REPO}/issues/1$") == 2
    assert sleeps == [1]


def test_persistent_5xx_gives_up_after_max_tries(github, fake_github, issue, sleeps):
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", 503, times=100)
    with pytest.raises(GitHubUnavailable) as caught:
        github.for_installation(1).get_issue(REPO, 1)
    assert caught.value.status == 503
    assert fake_github.count("GET", rf"^/repos/{REPO}/issues/1$") == MAX_TRIES
    assert sleeps == [1, 2, 4]


def test_a_post_answered_5xx_is_not_sent_again(github, fake_github, issue, sleeps):
    fake_github.fail("POST", rf"^/repos/{REPO}/issues/1/comments$", 502, times=1)
    with pytest.raises(GitHubUnavailable):
        github.for_installation(1).create_comment(REPO, 1, "hello")
    assert fake_github.count("POST", rf"^/repos/{REPO}/issues/1/comments$") == 1
    assert sleeps == []


def test_post_comment_once_after_an_ambiguous_failure_does_not_duplicate(github, fake_github, issue):
    """The comment landed but the answer was lost: the retry finds it by its marker."""
    client = github.for_installation(1)
    fake_github.add_comment(REPO, 1, "<!-- beekeeper:status -->\nChecks passed", BOT_USER)
    result = client.post_comment_once(REPO, 1, "<!-- beekeeper:status -->", "<!-- beekeeper:status -->\nnew")
    assert result["body"].endswith("Checks passed")
    assert fake_github.count("POST", r"/comments$") == 0
    # A user pasting our marker does not count as our comment.
    fake_github.add_comment(REPO, 1, "<!-- beekeeper:other -->", OCTOCAT)
    client.post_comment_once(REPO, 1, "<!-- beekeeper:other -->", "<!-- beekeeper:other -->\nours")
    assert fake_github.count("POST", r"/comments$") == 1


class _ScriptedServer(socketserver.ThreadingTCPServer):
    """A real HTTP server on 127.0.0.1 (`responses` raises a mocked connection error without going
    through urllib3's retries, so broken connections are tested on real sockets). Installation
    tokens are always granted; every other request takes the next action of `script`: "drop"
    closes the connection after reading the request (no answer), "ok" answers 200/201."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: list[str]):
        self.script = list(script)
        self.seen: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ScriptedHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length[1]):
            body += self.request.recv(65536)
        method, path = head.decode().split(" ")[:2]
        self.server.seen.append((method, path))
        if path.endswith("/access_tokens"):
            expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            return self._answer(201, {"token": "ghs_scripted", "expires_at": expires})
        if self.server.script.pop(0) == "drop":
            return  # the connection closes without an answer
        self._answer(201 if method == "POST" else 200, {"id": 1, "body": "ok"} if method == "POST" else [])

    def _answer(self, status: int, payload) -> None:
        text = json.dumps(payload).encode()
        self.request.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n".encode() + text)


@pytest.fixture
def scripted(private_key_pem, sleeps):
    servers = []

    def start(script):
        server = _ScriptedServer(script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, GitHubApp("424242", private_key_pem, server.url, sleep=sleeps.append).for_installation(1)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_read_whose_connection_broke_is_retried(scripted, sleeps):
    server, client = scripted(["drop", "ok"])
    assert list(client.list_comments(REPO, 1)) == []
    assert [p for m, p in server.seen if m == "GET"] == [f"/repos/{REPO}/issues/1/comments?per_page=100"] * 2
    assert sleeps == [1.0]


def test_a_write_whose_connection_broke_after_sending_is_not_sent_again(scripted, sleeps):
    """It may have succeeded: the caller looks for it by marker instead (post_comment_once)."""
    server, client = scripted(["drop", "ok"])
    with pytest.raises(GitHubUnavailable) as caught:
        client.create_comment(REPO, 1, "once")
    assert caught.value.status == 0
    assert [m for m, _ in server.seen].count("POST") == 2  # the token, and the comment once
    assert sleeps == []


def test_a_write_that_never_connected_is_sent_again(private_key_pem, sleeps):
    """Connection refused: GitHub cannot have seen it, so retrying is safe (then given up)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = GitHubApp("424242", private_key_pem, f"http://127.0.0.1:{port}", sleep=sleeps.append)
    app._tokens[1] = _CachedToken("ghs_x", datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(GitHubUnavailable):
        app.for_installation(1).create_comment(REPO, 1, "refused")
    assert sleeps == [1.0, 2.0, 4.0]  # MAX_TRIES attempts


# ---------------------------------------------------------------------------------------------
# rate limits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_honours_retry_after(github, fake_github, issue, sleeps, status):
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", status, times=1, headers={"Retry-After": "7"},
                     body={"message": "You have exceeded a secondary rate limit."})
    assert github.for_installation(1).get_issue(REPO, 1)["number"] == 1
    assert sleeps == [7.0]


def test_secondary_rate_limit_on_a_post_is_retried_because_github_did_nothing(github, fake_github, issue, sleeps):
    fake_github.fail("POST", rf"^/repos/{REPO}/issues/1/comments$", 403, times=1, headers={"Retry-After": "2"},
                     body={"message": "You have exceeded a secondary rate limit."})
    github.for_installation(1).create_comment(REPO, 1, "hello")
    assert sleeps == [2.0]
    assert len(fake_github.comments_on(REPO, 1)) == 1


def test_secondary_rate_limit_without_header_waits_a_minute(github, fake_github, issue, sleeps):
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", 403, times=1,
                     body={"message": "You have exceeded a secondary rate limit. Please wait a few minutes."})
    github.for_installation(1).get_issue(REPO, 1)
    assert sleeps == [60.0]


def test_primary_rate_limit_waits_for_the_reset(github, fake_github, issue, sleeps):
    reset = int(time.time()) + 5
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", 403, times=1,
                     headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
                     body={"message": "API rate limit exceeded for installation ID 1."})
    assert github.for_installation(1).get_issue(REPO, 1)["number"] == 1
    (waited,) = sleeps
    assert 4 <= waited <= 7  # until the reset, plus a second of margin


def test_a_long_rate_limit_wait_goes_back_to_the_inbox(github, fake_github, issue, sleeps):
    reset = int(time.time()) + 1800
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", 403, times=1,
                     headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})
    with pytest.raises(RetryLater) as caught:
        github.for_installation(1).get_issue(REPO, 1)
    assert 1790 <= caught.value.after <= 1810
    assert sleeps == []  # a worker never sleeps half an hour holding a lease


def test_a_plain_403_is_an_error_not_a_retry(github, fake_github, issue, sleeps):
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", 403, times=1,
                     body={"message": "Resource not accessible by integration"})
    with pytest.raises(GitHubError) as caught:
        github.for_installation(1).get_issue(REPO, 1)
    assert caught.value.status == 403 and "not accessible" in str(caught.value)
    assert sleeps == []


def test_404_and_422_are_reported(github, fake_github):
    client = github.for_installation(1)
    with pytest.raises(NotFound):
        client.get_issue(REPO, 404)
    fake_github.fail("POST", r"/labels$", 422, times=1, body={"message": "Validation Failed"})
    with pytest.raises(GitHubError) as caught:
        client.request("POST", f"/repos/{REPO}/labels", json={"name": "x"})
    assert caught.value.status == 422


def test_api_calls_are_counted_by_status(github, fake_github, issue):
    def value(method, status):
        return metrics.REGISTRY.get_sample_value("beekeeper_github_api_calls_total",
                                                 {"method": method, "status": status}) or 0.0

    before_ok, before_502 = value("GET", "200"), value("GET", "502")
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", 502, times=1)
    github.for_installation(1).get_issue(REPO, 1)
    assert value("GET", "200") == before_ok + 1
    assert value("GET", "502") == before_502 + 1


# ---------------------------------------------------------------------------------------------
# GitHub Enterprise Server, pagination, the app's own identity
# ---------------------------------------------------------------------------------------------


def test_github_enterprise_server_base_url_is_used(private_key_pem, sleeps):
    ghes_api = "https://ghe.example.test/api/v3"
    settings = load_settings({"BEEKEEPER_GITHUB_API_URL": ghes_api + "/", "BEEKEEPER_GITHUB_APP_ID": "42",
                              "BEEKEEPER_GITHUB_PRIVATE_KEY": private_key_pem,
                              "BEEKEEPER_GITHUB_URL": "https://ghe.example.test"})
    app = GitHubApp.from_settings(settings, sleep=sleeps.append)
    fake = FakeGitHub(api_url=ghes_api, web_url="https://ghe.example.test")
    fake.add_issue(REPO, 1, body="on GHES", user=OCTOCAT)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        assert app.for_installation(1).get_issue(REPO, 1)["body"] == "on GHES"
        assert app.get_app()["slug"]
        urls = [call.request.url for call in rsps.calls]
    assert urls == [f"{ghes_api}/app/installations/1/access_tokens", f"{ghes_api}/repos/{REPO}/issues/1",
                    f"{ghes_api}/app"]


def test_hook_deliveries_are_paginated_and_stop_at_since(github, fake_github):
    now = datetime.now(UTC).replace(microsecond=0)
    fake_github.hook_deliveries = [
        {"id": n, "guid": f"g-{n}", "delivered_at": (now - timedelta(minutes=n)).isoformat().replace("+00:00", "Z"),
         "status_code": 200, "event": "issues", "action": "opened", "redelivery": False}
        for n in range(250)
    ]
    items = list(github.hook_deliveries(now - timedelta(minutes=209, seconds=30)))
    assert [i["id"] for i in items] == list(range(210))
    assert fake_github.count("GET", r"^/app/hook/deliveries$") == 3  # 100 + 100 + the page with the cut-off


def test_own_bot_login_is_fetched_once(github, fake_github):
    assert github.slug_if_known() is None
    assert github.own_bot_login() == BOT_USER["login"]
    assert github.own_bot_login() == BOT_USER["login"]
    assert fake_github.count("GET", r"^/app$") == 1


def test_own_bot_login_is_none_without_credentials(fake_github):
    assert GitHubApp(None, None, API).own_bot_login() is None
    assert fake_github.calls == []


def test_no_token_or_jwt_is_ever_logged(github, fake_github, issue, caplog, sleeps):
    caplog.set_level(logging.DEBUG)
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", 403, times=1, headers={"Retry-After": "1"})
    fake_github.fail("POST", rf"^/repos/{REPO}/issues/1/comments$", 500, times=1)
    client = github.for_installation(1)
    client.get_issue(REPO, 1)
    with pytest.raises(GitHubUnavailable) as caught:
        client.create_comment(REPO, 1, "x")
    logging.getLogger("beekeeper.test").error("failed: %s", caught.value)
    token = github._tokens[1].token
    assert token and token not in caplog.text and token not in str(caught.value)
    assert "eyJ" not in caplog.text  # no JWT
    assert "rate limited" in caplog.text  # the wait itself is logged


def test_a_retry_after_over_a_minute_goes_back_to_the_inbox(github, fake_github, issue, sleeps):
    fake_github.fail("POST", rf"^/repos/{REPO}/issues/1/comments$", 403, times=1, headers={"Retry-After": "600"},
                     body={"message": "You have exceeded a secondary rate limit."})
    with pytest.raises(RetryLater) as caught:
        github.for_installation(1).create_comment(REPO, 1, "hello")
    assert caught.value.after == 600
    assert sleeps == [] and fake_github.comments_on(REPO, 1) == []
    assert fake_github.count("POST", rf"^/repos/{REPO}/issues/1/comments$") == 1


def test_a_header_only_primary_limit_goes_back_to_the_inbox(github, fake_github, issue, sleeps):
    """X-RateLimit-Remaining: 0 without GitHub's usual message is still a rate limit, not an error."""
    reset = int(time.time()) + 120
    fake_github.fail("GET", rf"^/repos/{REPO}/issues/1$", 403, times=1,
                     headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})
    with pytest.raises(RetryLater) as caught:
        github.for_installation(1).get_issue(REPO, 1)
    assert 110 <= caught.value.after <= 130


def test_pygithub_throttling_is_off_and_requesters_are_kept_per_installation(github, fake_github, issue):
    client = github.for_installation(1)
    requester = client.requester
    assert requester._Requester__seconds_between_requests is None
    assert requester._Requester__seconds_between_writes is None
    assert github.for_installation(1).requester is requester  # connections are reused
    assert github.for_installation(2).requester is not requester
