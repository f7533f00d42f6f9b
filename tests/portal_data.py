"""Data and sign-in for the portal, dashboard and web-permission tests.

People come from tests/request_helpers (the applicant, maintainers with write/admin, a stranger
with read). Requests are rows as the review stores them; grants are made with bot.access.grants, the
same service the approvals use.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sqlmodel import Session

from bot.access import grants
from bot.core.models import AccessRequest, Grant, Installation
from tests.conftest import INSTALLATION_ID, REPO
from tests.request_helpers import APPLICANT, MAINTAINER, STRANGER, add_issue_for, add_people, make_request

__all__ = ["APPLICANT", "MAINTAINER", "STRANGER", "add_issue_for", "add_people", "make_request",
           "install", "make_grant", "sign_in", "csrf", "read", "fetch"]


def install(session: Session, repos: tuple[str, ...] = (REPO,)) -> None:
    """The Installation row the webhooks would have stored: the repositories Beekeeper serves."""
    session.add(Installation(id=INSTALLATION_ID, account_login="acme", repositories=list(repos), active=True))
    session.commit()


def make_grant(session: Session, *, owner: dict = APPLICANT, tier: str = "flower", app_id: str = "freeaichat",
               domains: tuple[str, ...] = ("freeaichat.com",), request: AccessRequest | None = None,
               origin: str | None = None) -> Grant:
    grant = grants.create_grant(session, request, tier, "maria-maint", app_id=app_id, domains=list(domains),
                                source="test", origin=origin, github_user_id=owner["id"],
                                github_login=owner["login"])
    session.commit()
    return grant


def sign_in(client, person: dict, fake) -> None:
    """Sign `person` in through bot.web.auth's real OAuth flow against the fake GitHub (`responses`),
    signing out whoever was signed in before."""
    client.post("/auth/logout", data={"csrf_token": csrf(client)})
    login = client.get("/auth/login?next=/me")
    assert login.status_code == 302, login.status_code
    state = parse_qs(urlsplit(login.headers["Location"]).query)["state"][0]
    code = f"code-{person['login']}-{state[:8]}"
    fake.oauth_codes[code] = person["login"]
    callback = client.get(f"/auth/callback?code={code}&state={state}")
    assert callback.status_code == 302, callback.get_data(as_text=True)


def csrf(client) -> str:
    """The session's CSRF token (made on first use, as a rendered form would)."""
    with client.session_transaction() as s:
        token = s.setdefault("_csrf", "test-csrf-token")
    return token


def read(engine, statement) -> list:
    """Rows of `statement` in a short session of its own. (A test's long-lived session would hold
    SQLite's write lock from its first read, and the app under test would wait for it.)"""
    with Session(engine) as s:
        return list(s.exec(statement).all())


def fetch(engine, model, ident):
    with Session(engine) as s:
        return s.get(model, ident)
