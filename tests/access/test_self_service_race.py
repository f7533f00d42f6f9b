"""Self-service under real concurrency (issue 14, item 7): ten requests of one account at once,
released together by a barrier, make exactly the one grant the policy allows — on SQLite and on
PostgreSQL (BEEKEEPER_TEST_DATABASE_URL)."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import select

from bot.access import self_service
from bot.core.db import session_scope
from bot.core.models import Grant, SelfServiceOwner
from tests.conftest import INSTALLATION_ID
from tests.portal_data import APPLICANT, add_people, csrf, install, read, sign_in

PARALLEL = 10


@pytest.fixture
def world(session, fake_github):
    add_people(fake_github)
    install(session)
    return fake_github


def run_together(work, count: int = PARALLEL) -> list:
    """Run work(i) in `count` threads released at the same moment; the results in order."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def grants_of_applicant(db) -> list[Grant]:
    return read(db, select(Grant).where(Grant.github_user_id == APPLICANT["id"]))


def test_ten_parallel_posts_of_one_account_make_one_grant(app, db, world):
    signed_in = app.test_client()
    sign_in(signed_in, APPLICANT, world)
    token = csrf(signed_in)
    cookie = signed_in.get_cookie("session").value
    clients = []
    for _ in range(PARALLEL):  # ten browser tabs with the same cookie
        client = app.test_client()
        client.set_cookie("session", cookie)
        clients.append(client)

    def post(i: int):
        response = clients[i].post("/me/self-service", data={"csrf_token": token, "app_id": f"racer-{i}",
                                                             "domains": ""})
        return response.status_code, response.get_data(as_text=True)

    results = run_together(post)
    assert len(grants_of_applicant(db)) == 1
    assert sorted(status for status, _ in results) == [200] * (PARALLEL - 1) + [302]
    refused = [page for status, page in results if status == 200]
    assert all("already have access" in page for page in refused)
    [owner] = read(db, select(SelfServiceOwner))
    assert (owner.github_user_id, owner.grants_created) == (APPLICANT["id"], 1)


def test_parallel_calls_of_the_service_make_one_grant(runtime, db, world):
    gh = runtime.github.for_installation(INSTALLATION_ID)

    def create(i: int):
        with session_scope(db) as session:
            outcome = self_service.create(session, gh, runtime.policy, APPLICANT["id"], APPLICANT["login"],
                                          f"service-racer-{i}", "")
            return outcome.grant is not None

    results = run_together(create)
    assert results.count(True) == 1
    assert len(grants_of_applicant(db)) == 1
