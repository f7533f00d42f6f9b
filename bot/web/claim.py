"""The claim page: where a grant's owner receives its key, once.

    GET  /claim/<app_id>         sign in first; then the grant's key status (claim or rotate)
    POST /claim/<app_id>         make the keys and show them once (copy button, no-store)
    POST /claim/<app_id>/rotate  rotate (old keys keep working for the grace period) and show new ones

Only the GitHub account whose numeric id owns the grant gets anything here. Anybody else, and
anybody asking for an app id that does not exist, gets the same refusal, so the page reveals
nothing about grants that are not the visitor's. The key is made in the POST that shows it:
never in a URL, a redirect, a flash message, the session or a log; that response is no-store.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, url_for
from sqlmodel import Session, select

from bot.access import keys
from bot.core.clock import utcnow
from bot.core.db import session_scope
from bot.core.models import ApiKey, Grant, GrantStatus
from bot.web.auth import current_user, login_url
from bot.web.shared import check_csrf, no_store

bp = Blueprint("claim", __name__, url_prefix="/claim")

SOURCE = "claim page"


@bp.before_request
def _csrf() -> None:
    check_csrf()


def _runtime():
    return current_app.extensions["beekeeper"]


def _grant_of(session: Session, app_id: str, user: dict) -> Grant | None:
    """The grant with this app id if the signed-in user owns it, else None (same answer for a
    grant that does not exist: the caller shows one refusal for both)."""
    grant = session.exec(select(Grant).where(Grant.app_id == app_id.strip().lower())).first()
    if grant is None or grant.github_user_id != user["id"]:
        return None
    return grant


def _refusal(app_id: str, user: dict):
    response = make_response(render_template("pages/claim_refused.html", app_id=app_id, user=user), 403)
    return no_store(response)


def _sign_in_page(app_id: str):
    return render_template("pages/claim.html", view=None, app_id=app_id,
                           login_url=login_url(url_for("claim.show", app_id=app_id)))


@dataclass
class ClaimView:
    """What the status page shows about the owner's grant (no secrets: display forms only)."""

    grant: Grant
    current: ApiKey | None  # the newest working secret key
    live: list[ApiKey]
    grace_hours: float

    @property
    def revoked(self) -> bool:
        return self.grant.status != GrantStatus.ACTIVE

    @property
    def claimable(self) -> bool:
        return self.grant.claimable and not self.revoked

    def when(self, value) -> str:
        return keys.utc_text(value)

    def state(self, key: ApiKey) -> str:
        return keys.key_state(key)


def _view(session: Session, grant: Grant) -> ClaimView:
    now = utcnow()
    live = sorted(keys.live_keys(session, grant, now), key=lambda k: keys.CLAIM_KINDS.index(k.kind))  # secret first
    return ClaimView(grant=grant, current=keys.current_secret_key(session, grant, now), live=live,
                     grace_hours=_runtime().policy.keys.rotation_grace_hours)


def _show_once(grant: Grant, issued: list[keys.IssuedKey], *, rotated: keys.Rotation | None = None):
    secret_first = sorted(issued, key=lambda i: keys.CLAIM_KINDS.index(i.kind))
    response = make_response(render_template("pages/claim_key.html", grant=grant, issued=secret_first,
                                             rotated=rotated, when=keys.utc_text))
    return no_store(response)


@bp.get("/<app_id>")
def show(app_id: str):
    user = current_user()
    if user is None:
        return _sign_in_page(app_id)
    with Session(_runtime().engine) as session:
        grant = _grant_of(session, app_id, user)
        if grant is None:
            return _refusal(app_id, user)
        view = _view(session, grant)
    return no_store(make_response(render_template("pages/claim.html", view=view, app_id=grant.app_id)))


@bp.post("/<app_id>")
def claim_key(app_id: str):
    user = current_user()
    if user is None:
        return redirect(login_url(url_for("claim.show", app_id=app_id)))
    rt = _runtime()
    try:
        with session_scope(rt.engine) as session:
            grant = _grant_of(session, app_id, user)
            if grant is None:
                return _refusal(app_id, user)
            issued = keys.claim(session, grant, user["id"], prefix=rt.policy.keys.prefix, actor=user["login"],
                                source=SOURCE)
    except keys.ClaimRefused as exc:
        flash(str(exc), "error")
        return redirect(url_for("claim.show", app_id=app_id), code=303)
    return _show_once(grant, issued)


@bp.post("/<app_id>/rotate")
def rotate_key(app_id: str):
    """Rotate and claim in one step: the owner leaves with the new key, the old one keeps
    working for the policy's grace period."""
    user = current_user()
    if user is None:
        return redirect(login_url(url_for("claim.show", app_id=app_id)))
    rt = _runtime()
    try:
        with session_scope(rt.engine) as session:
            grant = _grant_of(session, app_id, user)
            if grant is None:
                return _refusal(app_id, user)
            rotation = keys.rotate(session, grant, user["login"], grace_hours=rt.policy.keys.rotation_grace_hours,
                                   source=SOURCE)
            if rotation.status == keys.REFUSED:
                raise keys.ClaimRefused(keys.ClaimRefused.NOT_ACTIVE, rotation.message)
            issued = keys.claim(session, grant, user["id"], prefix=rt.policy.keys.prefix, actor=user["login"],
                                source=SOURCE)
    except keys.ClaimRefused as exc:
        flash(str(exc), "error")
        return redirect(url_for("claim.show", app_id=app_id), code=303)
    return _show_once(grant, issued, rotated=rotation)
