"""Sign in with GitHub: the GitHub App's user-to-server OAuth web flow.

    GET  /auth/login?next=/claim/freeaichat  → GitHub's authorize page (with a fresh `state`)
    GET  /auth/callback?code=…&state=…       → code exchanged, GET /user, signed in, back to `next`
    POST /auth/logout                        → signed out (a form with the CSRF token)

`state` is a random value kept in the signed session cookie and checked (constant time) when
GitHub sends the browser back, so nobody can sign a visitor in to an account of their choosing
(login CSRF); it is used once. `next` must be a path on this site (no open redirect).

Only who the visitor is stays in the session: {"id": numeric GitHub id, "login", "avatar_url"}, and
the user's session generation (`_gen`, bot.access.sessions) at sign-in. Every request compares it with the
database: logout bumps the generation, so a cookie replayed after logout (or copied from another
device) is treated as signed out.
The user access token is used for that one GET /user and then dropped: it is never stored, never
logged. The authorize and token URLs are under BEEKEEPER_GITHUB_URL and the user lookup under
BEEKEEPER_GITHUB_API_URL, so GitHub Enterprise Server and a local fake work the same way.

`current_user()` and `login_required` are what other pages use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from functools import wraps
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from sqlmodel import Session

from bot.access import sessions
from bot.core.db import reader, session_scope
from bot.core.errors import RetryLater
from bot.github.client import GitHubError, exchange_oauth_code, oauth_user
from bot.web.csrf import check_csrf

log = logging.getLogger("beekeeper.auth")

bp = Blueprint("auth", __name__, url_prefix="/auth")

USER_KEY = "user"
STATE_KEY = "_oauth"
GENERATION_KEY = "_gen"  # the user's session generation when this session was issued


class OAuthRefused(Exception):
    """GitHub did not accept the code (expired, used, or not issued to this app)."""


# --------------------------------------------------------------------------------------------
# What other pages use
# --------------------------------------------------------------------------------------------


def current_user() -> dict | None:
    """The signed-in GitHub user as {"id", "login", "avatar_url"}, or None. A session issued at an
    older generation than the database's (a logout or key change since) counts as signed out."""
    user = session.get(USER_KEY)
    if not (isinstance(user, dict) and isinstance(user.get("id"), int) and user.get("login")):
        return None
    issued = session.get(GENERATION_KEY)
    checked = g.get("_bk_session_checked")
    if checked is None or checked[0] != (user["id"], issued):
        with Session(reader(_runtime().engine)) as db:
            current = sessions.generation(db, user["id"])
        checked = g._bk_session_checked = ((user["id"], issued), isinstance(issued, int) and issued == current)
    if not checked[1]:
        session.pop(USER_KEY, None)
        session.pop(GENERATION_KEY, None)
        return None
    return user


def renew_session(user_id: int) -> None:
    """End every other session of this user and keep the current one (after a key change)."""
    with session_scope(_runtime().engine) as db:
        session[GENERATION_KEY] = sessions.end_sessions(db, user_id)
    g.pop("_bk_session_checked", None)


def login_url(next_path: str | None = None) -> str:
    """The sign-in address that brings the visitor back to `next_path` (default: this page)."""
    if next_path is None:
        next_path = request.full_path if request.query_string else request.path
    return url_for("auth.login", next=next_path)


def login_required(view):
    """Anonymous visitors are sent to sign in with GitHub and brought back afterwards."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if current_user() is None:
            return redirect(login_url())
        return view(*args, **kwargs)

    return wrapped


def safe_next(value: str | None) -> str:
    """`value` when it is a path on this site, else "/". Refuses absolute and scheme-relative
    URLs (`//evil.example`, `/\\evil.example`) and control characters."""
    value = (value or "").strip()
    if not value.startswith("/") or value.startswith(("//", "/\\")) or "\\" in value:
        return "/"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


# --------------------------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------------------------


def _runtime():
    return current_app.extensions["beekeeper"]


def callback_url(settings) -> str:
    """The callback registered with the app (bot.web.setup writes `<public url>/auth/callback`)."""
    return f"{settings.public_url.rstrip('/')}/auth/callback"


def exchange_code(settings, code: str, code_verifier: str | None = None) -> str:
    """The user access token for an authorization code (PKCE: with the verifier whose challenge the
    sign-in sent). GitHub answers 200 with an `error` for a bad or expired code or a verifier that
    does not match; that raises OAuthRefused. Not retried: a code works once."""
    try:
        data = exchange_oauth_code(settings.github_url, client_id=settings.github_client_id,
                                   client_secret=_plain(settings.github_client_secret), code=code,
                                   redirect_uri=callback_url(settings), code_verifier=code_verifier)
    except ValueError:
        raise OAuthRefused("GitHub's answer was not JSON") from None
    token = data.get("access_token") if isinstance(data, dict) else None
    if not token:
        raise OAuthRefused(str((data or {}).get("error") if isinstance(data, dict) else "") or "no access token")
    return token


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, code_challenge) for PKCE with S256 (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)  # 64 characters, within RFC 7636's 43..128
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _plain(value) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else value


def _problem(status: int, title: str, message: str, next_path: str = "/"):
    """An error page with a way to start over (a fresh sign-in back to where the visitor was going)."""
    retry = url_for("auth.login", next=next_path) if _runtime().settings.oauth_configured else None
    return render_template("pages/auth_error.html", title=title, message=message, retry_url=retry), status


@bp.before_request
def _csrf() -> None:
    check_csrf()


@bp.get("/login")
def login():
    settings = _runtime().settings
    target = safe_next(request.args.get("next"))
    if current_user() is not None:
        return redirect(target)
    if not settings.oauth_configured:
        return _problem(503, "Sign-in is not set up",
                        "Signing in with GitHub needs BEEKEEPER_GITHUB_CLIENT_ID and BEEKEEPER_GITHUB_CLIENT_SECRET "
                        "(the GitHub App's client id and a client secret). Ask the platform's operators.")
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    session[STATE_KEY] = {"state": state, "next": target, "verifier": verifier}
    params = {"client_id": settings.github_client_id, "redirect_uri": callback_url(settings), "state": state,
              "allow_signup": "false", "code_challenge": challenge, "code_challenge_method": "S256"}
    return redirect(f"{settings.github_url}/login/oauth/authorize?{urlencode(params)}")


@bp.get("/callback")
def callback():
    settings = _runtime().settings
    pending = session.pop(STATE_KEY, None)  # used once, whatever happens next
    pending = pending if isinstance(pending, dict) else {}
    sent = request.args.get("state", "")
    expected = str(pending.get("state") or "")
    target = safe_next(pending.get("next"))
    if not expected or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        return _problem(400, "Sign-in did not complete",
                        "This sign-in was not started from this page, or it expired. Please sign in again.")
    if request.args.get("error"):
        return _problem(403, "Sign-in was cancelled",
                        "GitHub did not sign you in (the authorization was declined). You can try again.", target)
    code = request.args.get("code", "")
    if not code:
        return _problem(400, "Sign-in did not complete", "GitHub sent no authorization code. Please sign in again.",
                        target)
    try:
        token = exchange_code(settings, code, str(pending.get("verifier") or "") or None)
        user = oauth_user(settings.github_api_url, token)
    except OAuthRefused as exc:
        log.info("GitHub refused an OAuth code: %s", exc)
        return _problem(400, "Sign-in did not complete",
                        "GitHub did not accept the sign-in (the code expired or was already used). "
                        "Please sign in again.", target)
    except (GitHubError, RetryLater) as exc:
        log.warning("GitHub sign-in failed: %s", exc.__class__.__name__)
        return _problem(502, "GitHub did not answer",
                        "GitHub could not confirm who you are just now. Please try again in a minute.", target)
    if not isinstance(user, dict) or not isinstance(user.get("id"), int) or not user.get("login"):
        return _problem(502, "GitHub did not answer", "GitHub's answer did not say who you are. Please try again.",
                        target)
    session.clear()  # nothing from before the sign-in (another account, an old CSRF token) survives it
    with Session(reader(_runtime().engine)) as db:
        generation = sessions.generation(db, int(user["id"]))
    session[USER_KEY] = {"id": int(user["id"]), "login": str(user["login"]),
                         "avatar_url": str(user.get("avatar_url") or "")}
    session[GENERATION_KEY] = generation
    log.info("signed in GitHub user id %s", user["id"])
    return redirect(target)


@bp.post("/logout")
def logout():
    user = current_user()
    if user is not None:  # every cookie of this user issued so far stops working, not only this one
        with session_scope(_runtime().engine) as db:
            sessions.end_sessions(db, user["id"])
    session.clear()
    return redirect(url_for("pages_static.home"))
