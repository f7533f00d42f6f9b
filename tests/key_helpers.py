"""Helpers for the key, claim, auth, rotation and leak tests: grants made with the real services,
signing in through the real OAuth dance (against the fake GitHub), and a search of every column
of every table for a string."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

from sqlalchemy import MetaData, String, Text, cast, literal, select
from sqlmodel import Session

from bot.access import grants, keys
from bot.core.models import AccessRequest, Grant
from tests.request_helpers import APPLICANT, make_request


def make_grant(session: Session, *, owner: dict = APPLICANT, app_id: str = "freeaichat", tier: str = "flower",
               domains: tuple[str, ...] = ("freeaichat.io",), request: AccessRequest | None = None) -> Grant:
    grant = grants.create_grant(session, request, tier, "maria-maint", app_id=app_id, domains=list(domains),
                                source="test", github_user_id=owner["id"], github_login=owner["login"])
    session.commit()
    return grant


def approved_grant(session: Session, fake, *, number: int = 1) -> Grant:
    """An approved request with its issue in the fake GitHub and its grant (as /approve leaves them)."""
    from bot.core.models import RequestState
    from tests.request_helpers import add_issue_for

    request = make_request(session, number=number, state=RequestState.APPROVED)
    add_issue_for(fake, request, state="closed", labels=["special-access", "approved"])
    return make_grant(session, request=request, domains=("freeaichat.io",))


def claim_now(session: Session, grant: Grant, owner: dict = APPLICANT, prefix: str = "bk") -> dict[str, str]:
    """Claim through the service; {kind: plaintext}."""
    issued = keys.claim(session, grant, owner["id"], prefix=prefix, actor=owner["login"], source="test")
    session.commit()
    return {i.kind: i.plaintext for i in issued}


def oauth_sign_in(client, fake, person: dict, next_path: str = "/", code: str = "code123"):
    """Sign in through /auth/login and /auth/callback exactly as a browser would; returns the
    callback's response."""
    fake.oauth_codes[code] = person["login"]
    start = client.get("/auth/login", query_string={"next": next_path})
    assert start.status_code == 302, start.get_data(as_text=True)
    query = parse_qs(urlparse(start.headers["Location"]).query)
    state = query["state"][0]
    fake.oauth_challenges[code] = query["code_challenge"][0]  # GitHub binds the code to the PKCE challenge
    return client.get("/auth/callback", query_string={"code": code, "state": state})


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def rows_containing(engine, needle: str) -> list[tuple[str, str]]:
    """(table, column) of every stored value that contains `needle`, in every table of the
    database (reflected, so tables outside the models, such as alembic_version, count too)."""
    metadata = MetaData()
    metadata.reflect(bind=engine)
    hits = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for column in table.columns:
                as_text = column if isinstance(column.type, String | Text) else cast(column, String)
                if conn.execute(select(literal(1)).select_from(table).where(as_text.contains(needle))).first():
                    hits.append((table.name, column.name))
    return hits
