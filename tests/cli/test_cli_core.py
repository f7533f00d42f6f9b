"""The core CLI: `deliveries list/retry`, `worker --once`, `redeliver`, and `serve` as a process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from sqlmodel import Session, select

from bot.cli import main
from bot.cli.core import parse_duration
from bot.core.db import make_engine
from bot.core.models import Delivery, DeliveryStatus, Installation
from bot.intake import inbox
from bot.intake.webhooks import sign
from tests.conftest import WEBHOOK_SECRET, load_payload
from tests.fakegithub import API


@pytest.fixture
def cli_env(database_url, private_key_pem, tmp_path, monkeypatch) -> dict[str, str]:
    """The environment an operator's shell would have, pointing at the test database."""
    for name in list(os.environ):
        if name.startswith("BEEKEEPER_") and name != "BEEKEEPER_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return {
        "BEEKEEPER_DATABASE_URL": database_url,
        "BEEKEEPER_GITHUB_API_URL": API,
        "BEEKEEPER_GITHUB_APP_ID": "424242",
        "BEEKEEPER_GITHUB_PRIVATE_KEY": private_key_pem,
        "BEEKEEPER_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BEEKEEPER_INSTANCE_PATH": str(tmp_path / "instance"),
    }


def beekeeper(env: dict[str, str], *args: str):
    return CliRunner().invoke(main, list(args), env=env)


def add(db, delivery_id: str, status: str = DeliveryStatus.PENDING, attempts: int = 0, error: str | None = None,
        event: str = "issues", action: str | None = "opened") -> int:
    with Session(db, expire_on_commit=False) as session:
        row = Delivery(delivery_id=delivery_id, hook_id=1, event=event, action=action, payload="{}", status=status,
                       attempts=attempts, last_error=error)
        session.add(row)
        session.commit()
        return row.id


# ---------------------------------------------------------------------------------------------
# deliveries list / retry
# ---------------------------------------------------------------------------------------------


def test_deliveries_list_newest_first_with_status_filters(db, cli_env):
    add(db, "d-processed", DeliveryStatus.PROCESSED, 1)
    add(db, "d-retry", DeliveryStatus.RETRY, 2, "RuntimeError: GitHub said 502")
    add(db, "d-dead", DeliveryStatus.DEAD, 8, "KeyError: 'issue'", event="issue_comment", action="created")

    everything = beekeeper(cli_env, "deliveries", "list")
    assert everything.exit_code == 0, everything.output
    lines = everything.stdout.splitlines()
    assert [next(w for w in line.split() if w.startswith("d-")) for line in lines] == [
        "d-dead", "d-retry", "d-processed"]
    assert "issue_comment.created" in lines[0] and "dead" in lines[0] and " 8x" in lines[0]
    assert "KeyError: 'issue'" in lines[0]

    failed = beekeeper(cli_env, "deliveries", "list", "--status", "failed").stdout
    assert "d-retry" in failed and "d-dead" not in failed and "d-processed" not in failed
    assert "GitHub said 502" in failed
    dead = beekeeper(cli_env, "deliveries", "list", "--status", "dead").stdout
    assert "d-dead" in dead and "d-retry" not in dead


def test_deliveries_list_limit_and_empty(db, cli_env):
    assert beekeeper(cli_env, "deliveries", "list").stdout.strip() == "no deliveries"
    for n in range(5):
        add(db, f"d-{n}")
    assert len(beekeeper(cli_env, "deliveries", "list", "--limit", "2").stdout.splitlines()) == 2
    assert beekeeper(cli_env, "deliveries", "list", "--status", "bogus").exit_code == 2


def test_deliveries_list_json_lines(db, cli_env):
    import json

    assert beekeeper(cli_env, "deliveries", "list", "--json").stdout == ""  # no rows: no lines, no prose
    add(db, "d-dead", DeliveryStatus.DEAD, 8, "KeyError: 'issue'", event="issue_comment", action="created")
    add(db, "d-ok", DeliveryStatus.PROCESSED, 1)
    result = beekeeper(cli_env, "deliveries", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["delivery_id"] for r in rows] == ["d-ok", "d-dead"]
    assert rows[1]["status"] == "dead" and rows[1]["attempts"] == 8 and rows[1]["last_error"] == "KeyError: 'issue'"
    assert (rows[1]["event"], rows[1]["action"]) == ("issue_comment", "created")


def test_deliveries_retry_requeues_a_dead_delivery(db, cli_env):
    pk = add(db, "d-dead", DeliveryStatus.DEAD, 8, "boom")
    result = beekeeper(cli_env, "deliveries", "retry", str(pk))
    assert result.exit_code == 0 and f"delivery {pk} queued" in result.stdout
    with Session(db) as session:
        row = session.get(Delivery, pk)
    assert (row.status, row.attempts) == ("pending", 0)
    assert inbox.claim(db, "w", 60) == [pk]  # a worker takes it at once


def test_deliveries_retry_errors(db, cli_env):
    missing = beekeeper(cli_env, "deliveries", "retry", "424242")
    assert missing.exit_code == 1 and "no delivery with id 424242" in missing.output
    add(db, "d-busy")
    (pk,) = inbox.claim(db, "worker-7", 300)
    busy = beekeeper(cli_env, "deliveries", "retry", str(pk))
    assert busy.exit_code == 1 and "being processed by worker-7" in busy.output
    with Session(db) as session:
        assert session.get(Delivery, pk).status == "processing"


# ---------------------------------------------------------------------------------------------
# worker
# ---------------------------------------------------------------------------------------------


def test_worker_once_processes_the_inbox(db, cli_env, fake_github):
    payload = load_payload("installation.created")
    with db.begin() as connection:
        inbox.store(connection, inbox.Incoming("installation", "created", "inst-1", 1, payload["installation"]["id"],
                                               json.dumps(payload)))
    result = beekeeper(cli_env, "worker", "--once")
    assert result.exit_code == 0, result.output
    assert "processed 1 deliveries" in result.stdout
    with Session(db) as session:
        assert session.exec(select(Delivery.status)).one() == "processed"
        assert session.get(Installation, payload["installation"]["id"]).active is True


# ---------------------------------------------------------------------------------------------
# redeliver
# ---------------------------------------------------------------------------------------------


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) - delta).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def hook_delivery(id_: int, guid: str, ago: timedelta, status_code: int, redelivery: bool = False) -> dict:
    return {"id": id_, "guid": guid, "delivered_at": _at(ago), "redelivery": redelivery, "duration": 0.3,
            "status": "OK" if status_code < 300 else "Invalid HTTP Response: 502", "status_code": status_code,
            "event": "issues", "action": "opened", "installation_id": 1, "repository_id": 9}


@pytest.fixture
def github_history(db, fake_github):
    """What GitHub's list of the app's hook deliveries holds: 120 fine ones (two pages), and:"""
    fake_github.hook_deliveries = [hook_delivery(n, f"ok-{n}", timedelta(minutes=n), 200) for n in range(120)]
    fake_github.hook_deliveries += [
        hook_delivery(9001, "g-failed", timedelta(hours=1), 502),  # failed once: redeliver
        hook_delivery(9002, "g-twice", timedelta(hours=3), 502),  # failed, and its redelivery failed too:
        hook_delivery(9003, "g-twice", timedelta(hours=2), 504, redelivery=True),  # redeliver the latest
        hook_delivery(9004, "g-recovered", timedelta(hours=5), 500),  # failed, then a redelivery worked
        hook_delivery(9005, "g-recovered", timedelta(hours=4), 202, redelivery=True),
        hook_delivery(9006, "g-stored", timedelta(hours=6), 0),  # GitHub timed out, but we stored it
        hook_delivery(9007, "g-old", timedelta(hours=30), 502),  # before --since
    ]
    add(db, "g-stored")
    return fake_github


def test_redeliver_asks_for_failed_deliveries_missing_from_the_inbox(cli_env, github_history):
    result = beekeeper(cli_env, "redeliver", "--since", "24h")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == {"seen": 126, "failed": 3, "already_stored": 1, "redelivered": 2,
                      "guids": ["g-failed", "g-twice"], "errors": []}
    assert github_history.redelivered == [9001, 9003]
    assert github_history.count("GET", r"^/app/hook/deliveries$") == 2  # paginated, stopped at --since


def test_redeliver_is_safe_to_run_again(cli_env, github_history):
    beekeeper(cli_env, "redeliver", "--since", "24h")
    # GitHub redelivered g-failed successfully; g-twice failed once more.
    github_history.hook_deliveries += [hook_delivery(9101, "g-failed", timedelta(minutes=1), 202, True),
                                       hook_delivery(9102, "g-twice", timedelta(minutes=1), 502, True)]
    report = json.loads(beekeeper(cli_env, "redeliver", "--since", "24h").stdout)
    assert report["guids"] == ["g-twice"]
    assert github_history.redelivered == [9001, 9003, 9102]


def test_redeliver_dry_run_asks_nothing(cli_env, github_history):
    report = json.loads(beekeeper(cli_env, "redeliver", "--since", "2d", "--dry-run").stdout)
    assert report["guids"] == ["g-failed", "g-twice", "g-old"]
    assert github_history.redelivered == []


def test_redeliver_reports_a_failed_request_and_goes_on(cli_env, github_history):
    github_history.fail("POST", r"^/app/hook/deliveries/9001/attempts$", 502)
    result = beekeeper(cli_env, "redeliver")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["guids"] == ["g-twice"] and report["errors"][0].startswith("g-failed: GitHub POST")
    assert github_history.count("POST", r"/attempts$") == 2  # the failed POST was not re-sent


def test_redeliver_when_github_refuses_the_listing(cli_env, github_history):
    github_history.fail("GET", r"^/app/hook/deliveries$", 401, body={"message": "Bad credentials"})
    result = beekeeper(cli_env, "redeliver")
    assert result.exit_code == 1
    assert "cannot list the app's hook deliveries" in result.output and "Bad credentials" in result.output
    assert "Traceback" not in result.output


def test_redeliver_needs_the_app_credentials(cli_env, fake_github):
    env = {**cli_env, "BEEKEEPER_GITHUB_APP_ID": "", "BEEKEEPER_GITHUB_PRIVATE_KEY": ""}
    result = beekeeper(env, "redeliver")
    assert result.exit_code == 1
    assert "BEEKEEPER_GITHUB_APP_ID" in result.output
    assert fake_github.calls == []


def test_redeliver_rejects_a_bad_duration(cli_env):
    result = beekeeper(cli_env, "redeliver", "--since", "yesterday")
    assert result.exit_code == 2 and "is not a duration" in result.output


def test_parse_duration():
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration(" 24h ") == timedelta(hours=24)
    assert parse_duration("7d") == timedelta(days=7)


# ---------------------------------------------------------------------------------------------
# serve: the single-command bot, as a real process
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BEEKEEPER_")}
        command = [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main())",
                   "serve", "--port", str(self.port)]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, cwd=tmp_path, env={**clean, **env}, stdout=out,
                                            stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if requests.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                # Listening is not serving yet: gunicorn accepts before its worker has booted
                # (migrations, create_app), which on a loaded machine can take longer than 2 s.
                time.sleep(0.1)
        raise AssertionError(f"serve did not answer /healthz in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()  # our own child, by its pid
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.mark.slow
def test_serve_without_github_settings_starts_and_says_what_to_configure(tmp_path):
    served = Served(tmp_path, {"BEEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}"})
    try:
        served.wait()
        assert requests.get(served.base + "/healthz", timeout=5).json() == {"status": "ok"}
        assert requests.get(served.base + "/readyz", timeout=5).status_code == 200  # migrated on start
        refused = requests.post(served.base + "/webhook", data=b"{}", timeout=5,
                                headers={"X-GitHub-Event": "issues", "X-GitHub-Delivery": "x"})
        assert refused.status_code == 503
    finally:
        served.stop()
    output = served.output()
    for setting in ("BEEKEEPER_GITHUB_APP_ID", "BEEKEEPER_GITHUB_PRIVATE_KEY", "BEEKEEPER_WEBHOOK_SECRET"):
        assert setting in output
    assert "Traceback" not in output


@pytest.mark.slow
def test_serve_is_a_working_bot_in_one_command(tmp_path):
    """Intake and the in-process worker: a signed delivery is stored, then processed."""
    database = tmp_path / "bot.sqlite3"
    served = Served(tmp_path, {"BEEKEEPER_DATABASE_URL": f"sqlite:///{database}",
                               "BEEKEEPER_WEBHOOK_SECRET": WEBHOOK_SECRET})
    try:
        served.wait()
        payload = load_payload("installation.created")
        body = json.dumps(payload).encode()
        response = requests.post(served.base + "/webhook", data=body, timeout=5, headers={
            "X-GitHub-Event": "installation", "X-GitHub-Delivery": "serve-1", "X-GitHub-Hook-ID": "1",
            "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body), "Content-Type": "application/json"})
        assert response.status_code == 202
        engine = make_engine(f"sqlite:///{database}")
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline and status != "processed":
            with Session(engine) as session:
                status = session.exec(select(Delivery.status)).one()
            time.sleep(0.05)
        engine.dispose()
        assert status == "processed", served.output()
    finally:
        served.stop()
    assert "delivery=serve-1" in served.output()  # one log line per event, with its delivery id
    assert WEBHOOK_SECRET not in served.output()
