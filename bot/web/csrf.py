"""The CSRF token every form posts: one per session, compared in constant time."""

from __future__ import annotations

import hmac
import secrets

from flask import abort, request, session

CSRF_SESSION_KEY = "_csrf"


def csrf_token() -> str:
    token = session.get(CSRF_SESSION_KEY)
    if not token:
        token = session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Abort 400 unless the posted csrf_token matches the session's."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = session.get(CSRF_SESSION_KEY)
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    if not expected or not hmac.compare_digest(expected, sent):
        abort(400, description="The form expired or was not sent from this site. Reload the page and try again.")
