"""Permission checks for the portal and dashboard pages (the web half of bot.requests.permissions).

Every view states who may see it with a decorator (`login_required` from bot.web.auth for anyone
signed in, `maintainer_required` here), and every action re-checks on
the server what the object in hand allows (`require_scope_for(repo)`); nothing relies on a
button being hidden. The maintainer answer from GitHub is cached in the signed session for
SCOPE_TTL_SECONDS, keyed by the user's numeric id, so a page view costs no API call and a
permission removed on GitHub stops working within minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import wraps

from flask import abort, current_app, g, redirect, session
from sqlmodel import Session

from bot.core import clock
from bot.requests.permissions import NOBODY, MaintainerScope, PermissionUnknown, maintainer_scope
from bot.web.auth import current_user, login_url

SCOPE_SESSION_KEY = "_maintainer_scope"
SCOPE_TTL_SECONDS = 300


@dataclass(frozen=True)
class WebUser:
    """The signed-in GitHub account, as the auth blueprint put it in the session."""

    id: int
    login: str


def signed_in_user() -> WebUser | None:
    """The signed-in user (bot.web.auth's current_user), reduced to what pages need."""
    user = current_user()
    if not user:
        return None
    return WebUser(id=int(user["id"]), login=str(user["login"]))


def runtime():
    return current_app.extensions["beekeeper"]


def current_scope() -> MaintainerScope:
    """Where the signed-in user is a maintainer (NOBODY when signed out). Cached in the session."""
    if "maintainer_scope" in g:
        return g.maintainer_scope
    user = signed_in_user()
    if user is None:
        return NOBODY
    now = clock.utcnow().timestamp()
    scope = cached_scope()
    if scope is None:
        rt = runtime()
        with Session(rt.engine) as db:
            scope = maintainer_scope(db, rt.github, rt.policy, user.login, user.id)
            db.commit()  # policy logins resolved to ids on the way are remembered
        session[SCOPE_SESSION_KEY] = {"uid": user.id, "at": now, "scope": scope.to_dict()}
    g.maintainer_scope = scope
    return scope


def cached_scope() -> MaintainerScope | None:
    """The session's still-fresh maintainer answer, without asking GitHub (None when unknown)."""
    user = signed_in_user()
    cached = session.get(SCOPE_SESSION_KEY)
    if user is None or not cached or cached.get("uid") != user.id:
        return None
    if clock.utcnow().timestamp() - cached.get("at", 0) >= SCOPE_TTL_SECONDS:
        return None
    return MaintainerScope.from_dict(cached["scope"])


def is_maintainer_quietly() -> bool:
    """For navigation links only: never raises, never decides access."""
    try:
        return current_scope().is_maintainer
    except PermissionUnknown:
        return False


def _scope_required(allowed, refusal: str):
    """A view decorator: signed in (else the sign-in page), and `allowed(scope)` (else 403 with
    `refusal`); 503 when GitHub did not answer the permission check."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            if signed_in_user() is None:
                return redirect(login_url())
            try:
                scope = current_scope()
            except PermissionUnknown:
                abort(503, description="GitHub did not answer when we checked your permission. Try again in a "
                                       "minute.")
            if not allowed(scope):
                abort(403, description=refusal)
            return view(*args, **kwargs)

        return wrapped

    return decorator


# Signed in, and a maintainer somewhere Beekeeper serves; 403 for anyone else.
maintainer_required = _scope_required(
    lambda scope: scope.is_maintainer,
    "This page is for the platform's maintainers (write access to the repository, or listed in the policy).")

# Signed in, and one of the policy's `admins` (numeric id or org/team): the platform-wide pages
# (gateways, signing keys, the whole audit trail and its export). 403 for anyone else,
# maintainers of a repository included.
admin_required = _scope_required(
    lambda scope: scope.admin,
    "This page is for the platform's admins (the policy's `admins`: numeric GitHub ids or org/team).")


def visible_repositories() -> list[str] | None:
    """The repositories whose requests and grants the signed-in maintainer may see and act on
    (owner/name, sorted), or None for a maintainer of the whole platform (policy maintainers and
    admins: everything). [] for someone who is no maintainer. Use it to filter every list."""
    try:
        return current_scope().visible_repositories()
    except PermissionUnknown:
        return []


def require_scope_for(repo: str | None) -> None:
    """Abort 403 unless the signed-in maintainer may act on something tied to `repo`."""
    if not current_scope().covers(repo):
        abort(403, description=f"You are not a maintainer of {repo or 'this platform'}.")
