"""The claim page: sign in, claim once, see the key once, never again; nobody else gets anything."""

from __future__ import annotations

import logging
import re

import pytest
from flask.sessions import SecureCookieSessionInterface
from sqlmodel import Session, select

from beekeeper_gateway import keyformat
from bot.access import keys
from bot.core.models import ApiKey, AuditEvent, Grant
from tests.key_helpers import csrf_of, make_grant, oauth_sign_in, rows_containing
from tests.request_helpers import APPLICANT, STRANGER, add_people

KEY = re.compile(r"\bbk_(?:sk|pk)_[0-9A-Za-z]{36}\b")


@pytest.fixture(autouse=True)
def people(fake_github):
    add_people(fake_github)


@pytest.fixture
def grant(session) -> Grant:
    return make_grant(session)


def signed_in(client, fake_github, person=APPLICANT):
    oauth_sign_in(client, fake_github, person, next_path="/claim/freeaichat")
    return client


def claim(client) -> tuple:
    page = client.get("/claim/freeaichat").get_data(as_text=True)
    response = client.post("/claim/freeaichat", data={"csrf_token": csrf_of(page)})
    return response, response.get_data(as_text=True)


def shown_keys(page: str) -> list[str]:
    return list(dict.fromkeys(KEY.findall(page)))


def decoded_session(app, client) -> str:
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    cookie = client.get_cookie("session")
    return str(serializer.loads(cookie.value)) if cookie else ""


def test_anonymous_visitors_are_asked_to_sign_in(client, grant):
    response = client.get("/claim/freeaichat")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "Sign in with GitHub" in page
    assert 'href="/auth/login?next=/claim/freeaichat"' in page
    assert "flower" not in page and APPLICANT["login"] not in page  # nothing about the grant
    assert client.post("/claim/freeaichat").status_code == 400  # no CSRF token, no claim


def test_the_owner_claims_once_and_sees_the_keys_once(app, client, fake_github, grant, db, caplog):
    caplog.set_level(logging.DEBUG)
    signed_in(client, fake_github)
    page = client.get("/claim/freeaichat").get_data(as_text=True)
    assert "Claim your key" in page

    response, page = claim(client)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store, max-age=0"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    secret, publishable = shown_keys(page)
    assert secret.startswith("bk_sk_") and publishable.startswith("bk_pk_")
    assert "Copy secret key" in page and "claim.js" in page
    with Session(db) as s:
        assert keys.is_key_valid(s, secret) and keys.is_key_valid(s, publishable)
        assert s.get(Grant, grant.id).claimable is False
        assert s.exec(select(AuditEvent).where(AuditEvent.action == "key.claimed")).one().source == "claim page"

    # The plaintext is nowhere but in that one response: not in a table, the session or a log.
    for key in (secret, publishable):
        assert rows_containing(db, key) == [] and rows_containing(db, key[6:-6]) == []
        assert key not in decoded_session(app, client)
        assert key not in caplog.text and key[6:-6] not in caplog.text
    assert APPLICANT["login"] in decoded_session(app, client)  # the decoding works: the user is in there

    # A second visit shows when and what (display form), offers rotation, never the key.
    second = client.get("/claim/freeaichat")
    page = second.get_data(as_text=True)
    assert shown_keys(page) == []
    assert "Your key was claimed on" in page and keyformat.display(secret) in page
    assert "Rotate and get a new key" in page and "Claim your key" not in page
    assert second.headers["Cache-Control"] == "no-store, max-age=0"

    # Claiming again gives nothing new.
    again = client.post("/claim/freeaichat", data={"csrf_token": csrf_of(page)})
    assert again.status_code == 303 and again.headers["Location"].endswith("/claim/freeaichat")
    assert shown_keys(client.get("/claim/freeaichat").get_data(as_text=True)) == []
    with Session(db) as s:
        assert len(s.exec(select(ApiKey)).all()) == 2


def test_the_key_is_never_in_a_url(client, fake_github, grant):
    signed_in(client, fake_github)
    response, page = claim(client)
    assert "Location" not in response.headers
    for href in re.findall(r'(?:href|action|src)="([^"]*)"', page):
        assert not KEY.search(href)


@pytest.mark.parametrize("who", ["other user", "no such app"])
def test_anybody_else_gets_the_same_refusal_revealing_nothing(client, fake_github, session, who):
    make_grant(session)
    signed_in(client, fake_github, STRANGER if who == "other user" else APPLICANT)
    app_id = "freeaichat" if who == "other user" else "nosuchapp"
    response = client.get(f"/claim/{app_id}")
    page = response.get_data(as_text=True)
    assert response.status_code == 403
    assert "can only be claimed by the GitHub account that the grant belongs to" in page
    assert "flower" not in page and "freeaichat.io" not in page
    if who == "other user":
        assert APPLICANT["login"] not in page
    token = csrf_of(page)
    assert client.post(f"/claim/{app_id}", data={"csrf_token": token}).status_code == 403
    assert client.post(f"/claim/{app_id}/rotate", data={"csrf_token": token}).status_code == 403
    with Session(session.get_bind()) as s:
        assert s.exec(select(ApiKey)).all() == []


def test_refusals_for_a_stranger_and_an_unknown_app_look_alike(client, fake_github, session):
    make_grant(session)
    signed_in(client, fake_github, STRANGER)
    theirs = client.get("/claim/freeaichat").get_data(as_text=True).replace("freeaichat", "APP")
    unknown = client.get("/claim/nosuchapp").get_data(as_text=True).replace("nosuchapp", "APP")
    assert re.sub(r'value="[^"]+"', "", theirs) == re.sub(r'value="[^"]+"', "", unknown)


def test_a_revoked_grant_has_nothing_to_claim(client, fake_github, session, grant):
    from bot.access import grants

    grants.revoke_grant(session, grant, "maria-maint", "abuse", source="test")
    session.commit()
    signed_in(client, fake_github)
    page = client.get("/claim/freeaichat").get_data(as_text=True)
    assert "This grant was revoked" in page and "Claim your key" not in page
    response = client.post("/claim/freeaichat", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 303
    assert "revoked" in client.get("/claim/freeaichat").get_data(as_text=True)
    assert session.exec(select(ApiKey)).all() == []


def test_rotating_from_the_claim_page_shows_the_new_key_and_keeps_the_old_one_for_the_grace(
        client, fake_github, grant, db, frozen_clock):
    signed_in(client, fake_github)
    _, page = claim(client)
    old_secret, _ = shown_keys(page)
    page = client.get("/claim/freeaichat").get_data(as_text=True)
    response = client.post("/claim/freeaichat/rotate", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store, max-age=0"
    new_secret, _ = shown_keys(response.get_data(as_text=True))
    assert new_secret != old_secret
    assert "Your previous keys keep working until" in response.get_data(as_text=True)
    with Session(db) as s:
        assert keys.is_key_valid(s, old_secret) and keys.is_key_valid(s, new_secret)
    frozen_clock.advance(hours=24, seconds=1)
    with Session(db) as s:
        assert not keys.is_key_valid(s, old_secret) and keys.is_key_valid(s, new_secret)


def test_a_key_that_stopped_working_can_be_replaced(client, fake_github, session, grant, db):
    signed_in(client, fake_github)
    _, page = claim(client)
    secret, _ = shown_keys(page)
    with Session(db) as s:
        keys.revoke_grant_keys(s, s.get(Grant, grant.id), "maria-maint", "compromised")
        s.commit()
    page = client.get("/claim/freeaichat").get_data(as_text=True)
    assert "Your key no longer works" in page
    response = client.post("/claim/freeaichat/rotate", data={"csrf_token": csrf_of(page)})
    new_secret, _ = shown_keys(response.get_data(as_text=True))
    with Session(db) as s:
        assert keys.is_key_valid(s, new_secret) and not keys.is_key_valid(s, secret)
        assert len(keys.live_keys(s, s.get(Grant, grant.id))) == 2


def test_claim_page_forms_need_the_csrf_token(client, fake_github, grant, db):
    signed_in(client, fake_github)
    assert client.post("/claim/freeaichat", data={"csrf_token": "forged"}).status_code == 400
    assert client.post("/claim/freeaichat/rotate").status_code == 400
    with Session(db) as s:
        assert s.exec(select(ApiKey)).all() == []


def test_approval_comment_links_to_the_claim_page_without_key_material(client, worker, fake_github, runtime):
    from tests.request_helpers import MAINTAINER, open_issue, post_comment

    issue = open_issue(client, worker, fake_github)
    post_comment(client, worker, fake_github, issue, MAINTAINER, "/approve")
    [approval] = [c for c in fake_github.bot_comments("acme/access", 1) if "decision:approve" in c["body"]]
    assert f"{runtime.settings.public_url}/claim/freeaichat" in approval["body"]
    assert not KEY.search(approval["body"])
    with Session(runtime.engine) as s:
        assert s.exec(select(ApiKey)).all() == []  # nothing made before the owner claims
