"""Web-layer helpers shared by every page: static files, CSRF tokens, the home page.

CSRF: each session holds a random token; every form posts it back as `csrf_token`, and
`check_csrf()` runs before every non-GET request to a page blueprint (not /webhook, which is
signed, nor the allowlist API, which uses bearer credentials).
"""

from __future__ import annotations

import logging
import threading

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask.sessions import SecureCookieSessionInterface

from bot.core.config import plain_secret
from bot.core.resources import templates_path

bp = Blueprint("pages_static", __name__, static_folder=str(templates_path() / "static"),
               static_url_path="/static")

from bot.web.csrf import CSRF_SESSION_KEY, check_csrf, csrf_token  # noqa: E402,F401 - re-exported for the pages


def no_store(response):
    """Headers for pages that show a secret: never cached, never in the referrer."""
    response.headers["Cache-Control"] = "no-store, max-age=0"
    response.headers["Pragma"] = "no-cache"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/")
def home():
    # The portal (when registered) is the home page; otherwise a short page that says what this is.
    settings = current_app.config.get("BEEKEEPER_SETTINGS")
    if settings is not None and "setup.start" in current_app.view_functions and not _app_registered(settings):
        # First run: the person reading this is the operator. This machine (or the console's link
        # with the token) goes straight to the setup page; anyone else is told where it is.
        from bot.core.local_requests import is_local_request

        if is_local_request(request.remote_addr, request.headers):
            return redirect(url_for("setup.start"))
        return render_template("pages/home.html", not_set_up=True), 503
    if "portal.home" in current_app.view_functions:
        return redirect(url_for("portal.home"))
    return render_template("pages/home.html")


class SharedKeySessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, signed with BEEKEEPER_SECRET_KEY when it is set, else with
    the key every process shares through the database (bot.access.sessions.shared_secret_key), read on
    first use, so gunicorn workers and restarts accept each other's cookies."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self._lock = threading.Lock()

    def get_signing_serializer(self, app):
        if not app.secret_key:
            with self._lock:
                if not app.secret_key:
                    from bot.access.sessions import shared_secret_key

                    key = shared_secret_key(self.runtime.engine)
                    _redact_in_logs(key)
                    app.secret_key = key
        return super().get_signing_serializer(app)


def install_sessions(app, runtime) -> None:
    """Session signing for `app`: the configured key, or the shared one from the database."""
    app.secret_key = None if runtime.settings.secret_key_generated else plain_secret(runtime.settings.secret_key)
    app.session_interface = SharedKeySessionInterface(runtime)


def _redact_in_logs(key: str) -> None:
    """Add the shared key to the log redaction filters (it is never logged; this is the backstop)."""
    from bot.intake.runtime import RedactSecrets

    for handler in logging.getLogger().handlers:
        for item in handler.filters:
            if isinstance(item, RedactSecrets) and key not in item.secrets:
                item.secrets.append(key)


def credentials_configured(settings) -> bool:
    """Any app credential set means an operator configured the app: setup stays out of the way."""
    return bool(settings.github_app_id or settings.github_private_key or settings.webhook_secret)


def _app_registered(settings) -> bool:
    return credentials_configured(settings)


@bp.app_context_processor
def _template_globals():
    from bot.web.auth import current_user  # bot.web.auth imports this module

    return {"csrf_token": csrf_token, "current_user": current_user(),
            "platform_name": current_app.config.get("BEEKEEPER_PLATFORM_NAME", "Beekeeper")}


def content_security_policy() -> str:
    """The pages' CSP. Scripts only from our own static files (templates/static/*.js): no inline
    script or event handler runs, so injected markup cannot execute even if escaping ever failed."""
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: "
            "https://avatars.githubusercontent.com; object-src 'none'; base-uri 'none'; form-action 'self' "
            + current_app.config.get("BEEKEEPER_GITHUB_URL", "https://github.com") + "; frame-ancestors 'none'")


@bp.after_app_request
def _security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", content_security_policy())
    return response


def forbidden_unless(condition: bool, message: str = "You do not have access to this page.") -> None:
    if not condition:
        abort(403, description=message)


def guard_pages(blueprint: Blueprint) -> None:
    """What every page blueprint needs: CSRF on each non-GET request, and 403/404/503 shown as
    a page written for people (with a way back) instead of Flask's bare error text."""

    @blueprint.before_request
    def _csrf() -> None:
        check_csrf()

    @blueprint.errorhandler(403)
    @blueprint.errorhandler(404)
    @blueprint.errorhandler(503)
    def _error(error):
        titles = {403: "Not allowed", 404: "Not found", 503: "Try again soon"}
        return render_template("pages/portal_error.html", title=titles.get(error.code, "Error"),
                               message=error.description, back_url=url_for("portal.home"),
                               back_label="Back to My access"), error.code
