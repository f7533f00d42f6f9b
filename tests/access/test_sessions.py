"""Sign-in sessions (issue 14, item 8): a per-user session generation in the database ends every
cookie at logout, and without BEEKEEPER_SECRET_KEY all processes share one key from the database."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import secrets
import threading

import pytest
from sqlmodel import Session, select

from bot import create_app
from bot.access import sessions
from bot.core.models import ApiKey, InstanceSecret, SessionGeneration
from bot.intake.runtime import Runtime
from tests.portal_data import APPLICANT, STRANGER, add_people, csrf, install, make_grant, sign_in


@pytest.fixture
def world(session, fake_github):
    add_people(fake_github)
    install(session)
    return fake_github


def cookie_of(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None, "no session cookie was set"
    return cookie.value


def client_with_cookie(app, value: str):
    other = app.test_client()
    other.set_cookie("session", value)
    return other


def fresh_cookie(app, world) -> str:
    client = app.test_client()
    sign_in(client, APPLICANT, world)
    return cookie_of(client)


def signed_in(client) -> bool:
    response = client.get("/me")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


def logout(client) -> None:
    response = client.post("/auth/logout", data={"csrf_token": csrf(client)})
    assert response.status_code == 302


# --- session generation -------------------------------------------------------------------------


def test_a_cookie_replayed_after_logout_is_signed_out(app, client, world):
    sign_in(client, APPLICANT, world)
    stolen = cookie_of(client)
    assert signed_in(client_with_cookie(app, stolen))  # the copy works while the session lives
    logout(client)
    replay = client_with_cookie(app, stolen)
    response = replay.get("/me")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]
    # the stale cookie is not taken as anybody: no "Signed in as" in the header of any page either
    assert f"Signed in as <strong>@{APPLICANT['login']}" in client_with_cookie(app, fresh_cookie(app, world)).get(
        "/claim/someapp").get_data(as_text=True)
    assert "Signed in as" not in client_with_cookie(app, stolen).get("/claim/someapp").get_data(as_text=True)


def test_logout_ends_the_sessions_on_other_devices_and_a_new_sign_in_works(app, world):
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop, APPLICANT, world)
    sign_in(phone, APPLICANT, world)
    logout(laptop)
    assert not signed_in(phone)
    sign_in(laptop, APPLICANT, world)
    assert signed_in(laptop)


def test_logout_of_one_user_leaves_other_users_signed_in(app, world):
    mine, theirs = app.test_client(), app.test_client()
    sign_in(mine, APPLICANT, world)
    sign_in(theirs, STRANGER, world)
    logout(mine)
    assert signed_in(theirs)


def test_generation_is_kept_by_numeric_id_and_bumped_by_logout(app, client, db, world):
    sign_in(client, APPLICANT, world)
    logout(client)
    sign_in(client, APPLICANT, world)
    logout(client)
    with Session(db) as s:
        row = s.get(SessionGeneration, APPLICANT["id"])
        assert row is not None and row.generation >= 2
        # the sign_in helper logs out first (an anonymous logout bumps nothing): exactly two bumps
        assert row.generation == 2


def test_a_session_without_a_generation_is_signed_out(client, world):
    with client.session_transaction() as s:  # a cookie of the kind issued before generations existed
        s["user"] = {"id": APPLICANT["id"], "login": APPLICANT["login"], "avatar_url": ""}
    assert not signed_in(client)


def test_ending_sessions_from_a_service_signs_the_user_out(app, client, db, world):
    sign_in(client, APPLICANT, world)
    with Session(db) as s:
        sessions.end_sessions(s, APPLICANT["id"])  # e.g. a role change
        s.commit()
    assert not signed_in(client)


def test_rotating_or_revoking_a_key_ends_other_sessions_but_keeps_this_one(app, session, db, world):
    grant = make_grant(session, tier="seed", app_id="rotator", domains=())
    here, elsewhere = app.test_client(), app.test_client()
    sign_in(here, APPLICANT, world)
    sign_in(elsewhere, APPLICANT, world)
    assert here.post(f"/me/grants/{grant.id}/keys/claim", data={"csrf_token": csrf(here)}).status_code == 200
    assert signed_in(elsewhere)  # claiming is no change of keys that were out there
    response = here.post(f"/me/grants/{grant.id}/keys/rotate", data={"csrf_token": csrf(here)})
    assert response.status_code == 302 and "rotated" in here.get("/me").get_data(as_text=True).lower()
    assert signed_in(here)
    assert not signed_in(elsewhere)
    sign_in(elsewhere, APPLICANT, world)
    with Session(db) as s:
        key = s.exec(select(ApiKey).where(ApiKey.grant_id == grant.id, ApiKey.revoked_at == None)).first()  # noqa: E711
    response = here.post(f"/me/grants/{grant.id}/keys/{key.id}/revoke", data={"csrf_token": csrf(here)})
    assert response.status_code == 302
    assert signed_in(here)
    assert not signed_in(elsewhere)


# --- the shared session key ---------------------------------------------------------------------


def app_without_secret_key(settings, policy, db, github):
    """An app as a fresh process builds it with BEEKEEPER_SECRET_KEY unset (load_settings made a
    random key of its own and marked it generated)."""
    process_settings = dataclasses.replace(settings, secret_key=secrets.token_urlsafe(32), secret_key_generated=True)
    app = create_app(Runtime(settings=process_settings, policy=policy, engine=db, github=github))
    app.config["TESTING"] = True
    return app


def test_two_app_instances_without_a_secret_key_accept_each_others_cookies(settings, policy, db, github, world):
    first = app_without_secret_key(settings, policy, db, github)
    second = app_without_secret_key(settings, policy, db, github)
    client = first.test_client()
    sign_in(client, APPLICANT, world)
    assert signed_in(client_with_cookie(second, cookie_of(client)))
    assert first.secret_key == second.secret_key
    with Session(db) as s:
        [stored] = s.exec(select(InstanceSecret)).all()
    assert stored.value == first.secret_key and len(stored.value) >= 43


def test_a_configured_secret_key_is_used_and_nothing_is_stored(app, client, db, settings, world):
    sign_in(client, APPLICANT, world)
    assert app.secret_key == settings.secret_key.get_secret_value()
    with Session(db) as s:
        assert s.exec(select(InstanceSecret)).all() == []


def test_processes_starting_at_once_agree_on_one_key(db):
    barrier = threading.Barrier(8)
    keys: list[str] = []

    def start():
        barrier.wait()
        keys.append(sessions.shared_secret_key(db))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    with Session(db) as s:
        assert len(s.exec(select(InstanceSecret)).all()) == 1


def _start_process(url: str, barrier, results) -> None:
    """A fresh process (its own engine and pool) asking for the key at the same moment as others."""
    from bot.core.db import make_engine

    engine = make_engine(url)
    barrier.wait()
    results.put(sessions.shared_secret_key(engine))
    engine.dispose()


@pytest.mark.slow
def test_separate_processes_starting_at_once_agree_on_one_key(db, database_url):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    processes = [context.Process(target=_start_process, args=(database_url, barrier, results)) for _ in range(3)]
    for p in processes:
        p.start()
    keys = [results.get(timeout=60) for _ in processes]
    for p in processes:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in processes)
    assert len(set(keys)) == 1
    assert sessions.shared_secret_key(db) == keys[0]  # and this process reads the same one


def test_the_shared_key_never_appears_in_logs(settings, policy, db, github, world, caplog):
    caplog.set_level(logging.DEBUG)
    app = app_without_secret_key(settings, policy, db, github)
    client = app.test_client()
    sign_in(client, APPLICANT, world)
    assert signed_in(client)
    logout(client)
    assert app.secret_key and caplog.records  # something was logged, and the key exists
    assert app.secret_key not in caplog.text


def test_revoking_a_grant_ends_its_owners_sessions(db, session):
    from bot.access import grants, sessions
    from bot.core.models import Grant, GrantStatus

    grant = Grant(app_id="revoked-app", tier="flower", github_user_id=4242, github_login="owner",
                  approved_by="maintainer", status=GrantStatus.ACTIVE)
    session.add(grant)
    session.commit()
    before = sessions.end_sessions(session, 4242)
    grants.revoke_grant(session, grant, "maintainer", "abuse", source="test")
    session.commit()
    assert sessions.generation(session, 4242) == before + 1
