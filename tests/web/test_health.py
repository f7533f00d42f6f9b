"""`/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import create_app
from bot.core.db import make_engine
from bot.intake.router import Router
from bot.intake.worker import Worker
from tests.conftest import deliver, issue_event


@pytest.fixture
def unreachable_database(runtime):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        engine = make_engine(f"postgresql://postgres@127.0.0.1:{sock.getsockname()[1]}/beekeeper")
        yield create_app(replace(runtime, engine=engine)).test_client()
        engine.dispose()


def test_healthz_says_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_checks_the_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200 and response.get_json() == {"status": "ready"}


def test_readyz_and_metrics_do_not_wait_for_a_long_write_transaction(client, db):
    """A handler holding a write transaction (SQLite: the database's write lock) while it talks
    to GitHub must not make the load balancer think the process is down."""
    from sqlalchemy import text

    with db.begin() as connection:
        connection.execute(text("INSERT INTO installation (id, account_login, repositories, active, updated_at) "
                                "VALUES (5, 'acme', '[]', true, '2026-01-01 00:00:00')"))
        started = time.monotonic()
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert time.monotonic() - started < 5


def test_readyz_is_503_when_the_database_is_unreachable(unreachable_database):
    started = time.monotonic()
    response = unreachable_database.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "OperationalError"}
    assert time.monotonic() - started < 10  # connect_timeout: a probe never hangs
    assert unreachable_database.get("/healthz").status_code == 200  # the process itself is fine


def test_metrics_with_the_database_down_still_answer(unreachable_database):
    response = unreachable_database.get("/metrics")
    assert response.status_code == 200
    assert "beekeeper_inbox_deliveries" in response.get_data(as_text=True)


def samples(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_cover_deliveries_handlers_and_github_calls(client, runtime, fake_github, frozen_clock):
    router = Router()
    router.on("issues", "opened")(lambda event, ctx: ctx.github.get_issue(event.repo, 1))
    router.on("issues", "edited")(lambda event, ctx: 1 / 0)
    fake_github.add_issue("acme/access", 1, body="x", user={"login": "octocat", "id": 1, "type": "User"})
    before = samples(client)

    deliver(client, "issues", issue_event("opened", body="ok"))
    deliver(client, "issues", issue_event("edited", body="fails"), delivery_id="bad")
    worker = Worker(runtime, name="w", router=router)
    for _ in range(runtime.settings.worker_max_attempts):
        worker.run_once()
        frozen_clock.advance(hours=2)
    after = samples(client)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("beekeeper_deliveries_received_total", event="issues") == 2
    assert delta("beekeeper_deliveries_processed_total", event="issues", outcome="processed") == 1
    assert delta("beekeeper_deliveries_failed_total", event="issues") == runtime.settings.worker_max_attempts - 1
    assert delta("beekeeper_deliveries_dead_total", event="issues") == 1
    assert delta("beekeeper_handler_duration_seconds_count", event="issues") == 1 + runtime.settings.worker_max_attempts
    assert delta("beekeeper_github_api_calls_total", method="POST", status="201") == 1  # the installation token
    assert delta("beekeeper_github_api_calls_total", method="GET", status="200") == 1
    # The inbox by status comes from the database, so it is right whichever process did the work.
    assert after[("beekeeper_inbox_deliveries", (("event", "issues"), ("status", "processed")))] == 1
    assert after[("beekeeper_inbox_deliveries", (("event", "issues"), ("status", "dead")))] == 1
