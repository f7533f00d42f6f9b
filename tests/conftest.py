"""Shared fixtures: a migrated database (SQLite, or PostgreSQL when BEEKEEPER_TEST_DATABASE_URL is
set), a Runtime with the fake GitHub behind `responses`, a Flask test client and helpers to sign
and deliver webhooks built from the real payload examples in tests/fixtures/webhooks."""

from __future__ import annotations

import copy
import json
import os
import uuid
from pathlib import Path

import psycopg
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from bot import create_app
from bot.core import clock
from bot.core.config import Settings, load_policy
from bot.core.db import make_engine
from bot.github.client import GitHubApp
from bot.intake.runtime import Runtime
from bot.intake.webhooks import sign
from bot.intake.worker import Worker
from bot.ops import migrate
from tests.fakegithub import API, WEB, FakeGitHub

FIXTURES = Path(__file__).parent / "fixtures"
WEBHOOK_SECRET = "test-webhook-secret"
INSTALLATION_ID = 1
REPO = "acme/access"
HOOK_ID = 31337
pytest_plugins = ["tests.gateway_fixtures"]  # rsps, bridge, credential, make_client

PG_URL = os.environ.get("BEEKEEPER_TEST_DATABASE_URL", "").strip()


# ---------------------------------------------------------------------------------------------
# database
# ---------------------------------------------------------------------------------------------


def _create_pg_database(base_url: str) -> str:
    """A fresh, empty database next to BEEKEEPER_TEST_DATABASE_URL's, one per test process."""
    url = make_url(base_url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"bk_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(base_url: str, url: str) -> None:
    name = make_url(url).database
    admin = make_url(base_url.replace("postgresql+psycopg://", "postgresql://", 1)).render_as_string(
        hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    if PG_URL:
        url = _create_pg_database(PG_URL)
        yield url
        _drop_pg_database(PG_URL, url)
    else:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'beekeeper.sqlite3'}"


@pytest.fixture(scope="session")
def engine(database_url):
    engine = make_engine(database_url)
    migrate.upgrade(engine)  # the real migrations, not create_all
    yield engine
    engine.dispose()


def _truncate(engine) -> None:
    tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f'DELETE FROM "{table}"'))
            conn.execute(text("DELETE FROM sqlite_sequence")) if conn.execute(
                text("SELECT name FROM sqlite_master WHERE name='sqlite_sequence'")).first() else None
        conn.execute(text("INSERT INTO allowlist_counter (id, version) VALUES (1, 0)"))


@pytest.fixture
def db(engine):
    """A clean database for each test (tables emptied, migrations kept)."""
    _truncate(engine)
    yield engine


@pytest.fixture
def session(db):
    from sqlmodel import Session

    with Session(db, expire_on_commit=False) as s:
        yield s


# ---------------------------------------------------------------------------------------------
# settings, GitHub fake, runtime, app
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def settings(database_url, private_key_pem, tmp_path) -> Settings:
    return Settings(
        database_url=database_url,
        github_api_url=API,
        github_url=WEB,
        github_app_id="424242",
        github_private_key=private_key_pem,
        webhook_secret=WEBHOOK_SECRET,
        github_client_id="Iv1.testclient",
        github_client_secret="test-client-secret",
        public_url="http://localhost:8000",
        secret_key="test-secret-key",
        worker_max_attempts=3,
        worker_lease_seconds=60,
        instance_path=str(tmp_path / "instance"),
    )


@pytest.fixture
def policy():
    return load_policy()


@pytest.fixture
def sleeps() -> list[float]:
    """Every wait the GitHub client asked for (tests never really sleep)."""
    return []


@pytest.fixture
def github(settings, sleeps) -> GitHubApp:
    return GitHubApp.from_settings(settings, sleep=sleeps.append)


@pytest.fixture
def fake_github():
    """The fake GitHub, answering every request to api.github.com and github.com."""
    fake = FakeGitHub()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        yield fake


@pytest.fixture
def runtime(db, settings, policy, github) -> Runtime:
    return Runtime(settings=settings, policy=policy, engine=db, github=github)


@pytest.fixture
def app(runtime):
    flask_app = create_app(runtime)
    flask_app.config["TESTING"] = True
    return flask_app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def frozen_clock():
    fake = clock.FrozenClock()
    clock.use(fake)
    yield fake
    clock.use(None)


@pytest.fixture
def worker(runtime) -> Worker:
    return Worker(runtime, name="test-worker")


# ---------------------------------------------------------------------------------------------
# payloads and delivery
# ---------------------------------------------------------------------------------------------


def load_payload(name: str) -> dict:
    """A real webhook example, e.g. load_payload("issues.opened")."""
    return json.loads((FIXTURES / "webhooks" / f"{name}.json").read_text())


def issue_event(action: str, *, body: str, number: int = 1, user: dict | None = None,
                labels: list[str] = ("special-access",), repo: str = REPO, title: str = "Special access request",
                sender: dict | None = None, state: str = "open", changes: dict | None = None) -> dict:
    """An `issues` payload of the real shape, with our body, user, labels and installation."""
    name = f"issues.{action}" if (FIXTURES / "webhooks" / f"issues.{action}.json").exists() else "issues.opened"
    payload = copy.deepcopy(load_payload(name))
    payload["action"] = action
    issue = payload["issue"]
    owner, repo_name = repo.split("/")
    issue.update(number=number, body=body, title=title, state=state,
                 html_url=f"https://github.com/{repo}/issues/{number}",
                 url=f"https://api.github.com/repos/{repo}/issues/{number}")
    if user:
        issue["user"] = {**issue["user"], **user}
    issue["labels"] = [{"id": i + 1, "name": n, "color": "ededed", "default": False, "description": ""}
                       for i, n in enumerate(labels)]
    payload["repository"].update(full_name=repo, name=repo_name)
    payload["repository"]["owner"]["login"] = owner
    payload["sender"] = {**payload["sender"], **(sender or issue["user"])}
    payload["installation"] = {"id": INSTALLATION_ID, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="}
    if changes is not None:
        payload["changes"] = changes
    return payload


def comment_event(action: str, *, body: str, issue_payload: dict, user: dict, comment_id: int | None = None) -> dict:
    """An `issue_comment` payload of the real shape on the issue of `issue_payload`."""
    payload = copy.deepcopy(load_payload(f"issue_comment.{action}"))
    payload["issue"] = copy.deepcopy(issue_payload["issue"])
    payload["repository"] = copy.deepcopy(issue_payload["repository"])
    payload["installation"] = issue_payload["installation"]
    comment = payload["comment"]
    comment.update(id=comment_id or uuid.uuid4().int % 10**9, body=body, user={**comment["user"], **user})
    payload["sender"] = {**payload["sender"], **user}
    return payload


def deliver(client, event: str, payload: dict | bytes, *, delivery_id: str | None = None, hook_id: int = HOOK_ID,
            secret: str = WEBHOOK_SECRET):
    """POST a signed delivery to /webhook the way GitHub does; returns the response."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": str(hook_id),
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-GitHub-Hook-Installation-Target-ID": "424242",
        "X-Hub-Signature-256": sign(secret, body),
        "User-Agent": "GitHub-Hookshot/abc1234",
        "Content-Type": "application/json",
    }
    return client.post("/webhook", data=body, headers=headers)
