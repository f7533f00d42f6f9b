"""Sign in with GitHub: the OAuth web flow against the fake GitHub (behind `responses`)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from urllib.parse import parse_qs, urlparse

import pytest
from flask import Blueprint

from bot import create_app
from bot.web.auth import current_user, login_required, safe_next
from tests.fakegithub import API, WEB
from tests.key_helpers import csrf_of, oauth_sign_in
from tests.request_helpers import APPLICANT, add_people


@pytest.fixture(autouse=True)
def people(fake_github):
    add_people(fake_github)


def session_of(client) -> dict:
    with client.session_transaction() as s:
        return dict(s)


def token_requests(fake) -> list:
    return [body for method, path, body in fake.calls if path == "/login/oauth/access_token"]


def test_login_sends_the_browser_to_githubs_authorize_page(client, settings):
    response = client.get("/auth/login?next=/claim/freeaichat")
    assert response.status_code == 302
    target = urlparse(response.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{WEB}/login/oauth/authorize"
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert query["client_id"] == settings.github_client_id
    assert query["redirect_uri"] == f"{settings.public_url}/auth/callback"
    assert len(query["state"]) >= 32
    stored = session_of(client)["_oauth"]
    assert {k: stored[k] for k in ("state", "next")} == {"state": query["state"], "next": "/claim/freeaichat"}
    # PKCE (RFC 7636, S256): the challenge goes to GitHub, the verifier stays in the signed session.
    assert query["code_challenge_method"] == "S256"
    digest = hashlib.sha256(stored["verifier"].encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert stored["verifier"] not in response.headers["Location"]


def test_the_code_exchange_sends_the_pkce_verifier(client, fake_github):
    response = oauth_sign_in(client, fake_github, APPLICANT)
    assert response.status_code == 302
    [exchange] = token_requests(fake_github)
    assert len(exchange["code_verifier"]) >= 43


def test_a_code_bound_to_another_challenge_is_refused(client, fake_github):
    """A code intercepted from someone else's sign-in is useless without their verifier."""
    fake_github.oauth_codes["stolen"] = APPLICANT["login"]
    start = client.get("/auth/login")
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    fake_github.oauth_challenges["stolen"] = "challenge-of-the-victims-sign-in"
    response = client.get("/auth/callback", query_string={"code": "stolen", "state": state})
    assert response.status_code == 400
    assert "user" not in session_of(client)


def test_callback_signs_the_user_in_and_goes_back(client, fake_github):
    response = oauth_sign_in(client, fake_github, APPLICANT, next_path="/claim/freeaichat?x=1")
    assert response.status_code == 302 and response.headers["Location"] == "/claim/freeaichat?x=1"
    stored = session_of(client)
    assert stored["user"] == {"id": APPLICANT["id"], "login": APPLICANT["login"],
                              "avatar_url": f"https://avatars.githubusercontent.com/u/{APPLICANT['id']}?v=4"}
    assert "_oauth" not in stored  # the state is used once
    [exchange] = token_requests(fake_github)
    assert exchange["code"] == "code123" and exchange["client_secret"] == "test-client-secret"
    assert fake_github.count("GET", r"^/user$") == 1
    # The user's GitHub token is used once and dropped: not in the session.
    assert not any("ghu_" in str(v) for v in stored.values())


def test_a_wrong_state_is_refused_before_github_is_asked(client, fake_github):
    fake_github.oauth_codes["code123"] = APPLICANT["login"]
    client.get("/auth/login?next=/me")
    response = client.get("/auth/callback?code=code123&state=forged-state")
    assert response.status_code == 400
    assert "not started from this page" in response.get_data(as_text=True)
    assert "user" not in session_of(client)
    assert token_requests(fake_github) == []


def test_a_callback_without_a_login_started_here_is_refused(client, fake_github):
    fake_github.oauth_codes["code123"] = APPLICANT["login"]
    response = client.get("/auth/callback?code=code123&state=whatever")
    assert response.status_code == 400 and "user" not in session_of(client)
    assert token_requests(fake_github) == []


def test_a_replayed_callback_is_refused(client, fake_github):
    first = client.get("/auth/login")
    state = parse_qs(urlparse(first.headers["Location"]).query)["state"][0]
    fake_github.oauth_codes["code123"] = APPLICANT["login"]
    assert client.get(f"/auth/callback?code=code123&state={state}").status_code == 302
    with client.session_transaction() as s:
        s.pop("user")
    assert client.get(f"/auth/callback?code=code123&state={state}").status_code == 400


def test_an_expired_or_invalid_code_is_refused(client, fake_github):
    start = client.get("/auth/login?next=/claim/freeaichat")
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    response = client.get(f"/auth/callback?code=expired-code&state={state}")  # GitHub: bad_verification_code
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "expired" in page and 'href="/auth/login?next=/claim/freeaichat"' in page  # a way to start over
    assert "user" not in session_of(client)
    assert fake_github.count("GET", r"^/user$") == 0


def test_declined_authorization(client, fake_github):
    start = client.get("/auth/login")
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    response = client.get(f"/auth/callback?error=access_denied&state={state}")
    assert response.status_code == 403 and "user" not in session_of(client)


def test_github_refusing_the_user_lookup(client, fake_github):
    fake_github.fail("GET", r"^/user$", 401, body={"message": "Bad credentials"})
    start = client.get("/auth/login")
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    fake_github.oauth_codes["code123"] = APPLICANT["login"]
    response = client.get(f"/auth/callback?code=code123&state={state}")
    assert response.status_code == 502 and "user" not in session_of(client)


@pytest.mark.parametrize("target, expected", [
    ("/claim/x", "/claim/x"), ("/me?tab=keys", "/me?tab=keys"), (None, "/"), ("", "/"),
    ("https://evil.example/", "/"), ("//evil.example/x", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("/ok\r\nSet-Cookie: x=1", "/"), ("evil.example", "/"),
])
def test_next_never_leaves_the_site(target, expected):
    assert safe_next(target) == expected


def test_an_open_redirect_through_login_is_impossible(client, fake_github):
    response = oauth_sign_in(client, fake_github, APPLICANT, next_path="//evil.example/phish")
    assert response.headers["Location"] == "/"


def test_logout_needs_a_post_with_the_csrf_token(client, fake_github):
    oauth_sign_in(client, fake_github, APPLICANT)
    assert client.get("/auth/logout").status_code == 405
    assert client.post("/auth/logout").status_code == 400
    assert session_of(client)["user"]["login"] == APPLICANT["login"]
    # The page header carries the sign-out form with the session's token.
    token = csrf_of(client.get("/claim/freeaichat").get_data(as_text=True))
    response = client.post("/auth/logout", data={"csrf_token": token})
    assert response.status_code == 302 and "user" not in session_of(client)


def test_login_when_signed_in_goes_straight_back(client, fake_github):
    oauth_sign_in(client, fake_github, APPLICANT)
    response = client.get("/auth/login?next=/claim/freeaichat")
    assert response.headers["Location"] == "/claim/freeaichat"
    assert len(token_requests(fake_github)) == 1


def test_without_oauth_settings_sign_in_says_what_is_missing(runtime):
    runtime.settings = dataclasses.replace(runtime.settings, github_client_id=None, github_client_secret=None)
    app = create_app(runtime)
    response = app.test_client().get("/auth/login")
    assert response.status_code == 503 and "BEEKEEPER_GITHUB_CLIENT_ID" in response.get_data(as_text=True)


def test_enterprise_urls_are_used(runtime, fake_github):
    """The authorize and token URLs follow BEEKEEPER_GITHUB_URL, /user BEEKEEPER_GITHUB_API_URL."""
    import responses

    runtime.settings = dataclasses.replace(runtime.settings, github_url="https://ghe.example",
                                           github_api_url="https://ghe.example/api/v3")
    client = create_app(runtime).test_client()
    start = client.get("/auth/login")
    assert start.headers["Location"].startswith("https://ghe.example/login/oauth/authorize?")
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    with responses.RequestsMock() as ghe:
        ghe.add(responses.POST, "https://ghe.example/login/oauth/access_token", json={"access_token": "ghu_e"})
        ghe.add(responses.GET, "https://ghe.example/api/v3/user", json={"id": 42, "login": "ent", "avatar_url": ""})
        assert client.get(f"/auth/callback?code=c&state={state}").status_code == 302
        assert ghe.calls[1].request.headers["Authorization"] == "Bearer ghu_e"
    assert session_of(client)["user"]["id"] == 42
    assert API not in start.headers["Location"]


def test_session_cookie_flags(runtime, fake_github):
    runtime.settings = dataclasses.replace(runtime.settings, public_url="https://keys.example")
    client = create_app(runtime).test_client()
    cookie = client.get("/auth/login").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_session_cookie_on_plain_http_for_local_runs(client):
    cookie = client.get("/auth/login").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_login_required_and_current_user(app, fake_github):
    probe = Blueprint("probe", __name__)

    @probe.get("/probe")
    @login_required
    def view():
        return current_user()["login"]

    app.register_blueprint(probe)
    client = app.test_client()
    response = client.get("/probe?x=1")
    assert response.status_code == 302 and response.headers["Location"] == "/auth/login?next=/probe?x%3D1"
    oauth_sign_in(client, fake_github, APPLICANT)
    assert client.get("/probe").get_data(as_text=True) == APPLICANT["login"]
