"""Fixtures of the fault suite: one live Beekeeper per test module, on its own PostgreSQL database.

A module may set `BOT_ENV = {...}` (e.g. a short worker lease), `WEB_WORKERS`, and
`DATABASE_PROXY = True` to route the processes' database connections through a TcpProxy it can
cut (only where needed: the proxy runs in the test process and slows every query a little). Its
tests start the `beekeeper worker` processes they need with `live.bot.start_worker()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from bot.core.comments import STATUS_MARKER
from bot.core.db import make_engine
from bot.core.models import Delivery, DeliveryStatus
from bot.ops import migrate
from tests.conftest import PG_URL, WEBHOOK_SECRET, _create_pg_database, _drop_pg_database
from tests.fault.harness import Bot, GitHubServer, HookLog, TcpProxy

DONE = (DeliveryStatus.PROCESSED, DeliveryStatus.SKIPPED)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/fault/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.fault)
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.postgres)
            if not PG_URL:
                item.add_marker(pytest.mark.skip(reason="the fault suite needs BEEKEEPER_TEST_DATABASE_URL"))


@dataclass
class Live:
    """One running deployment and the handles a test needs to break it and to look inside."""

    bot: Bot
    github: GitHubServer
    hooks: HookLog
    proxy: TcpProxy | None
    engine: object  # direct to PostgreSQL (not through the proxy): assertions work during an outage

    @property
    def fake(self):
        return self.github.fake

    def deliveries(self, **where) -> list[Delivery]:
        with Session(self.engine) as session:
            query = select(Delivery)
            for key, value in where.items():
                query = query.where(getattr(Delivery, key) == value)
            return list(session.exec(query).all())

    def pending(self) -> int:
        """Deliveries not finished yet (pending, processing, waiting for a retry)."""
        return sum(1 for d in self.deliveries() if d.status not in DONE)

    def status_comments(self, repo: str, number: int) -> list[dict]:
        with self.fake._lock:
            return [c for c in self.fake.bot_comments(repo, number) if STATUS_MARKER in c["body"]]


@pytest.fixture(scope="module")
def fault_database():
    if not PG_URL:
        pytest.skip("the fault suite needs BEEKEEPER_TEST_DATABASE_URL")
    url = _create_pg_database(PG_URL)
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield url, engine
    engine.dispose()
    _drop_pg_database(PG_URL, url)


@pytest.fixture(scope="module")
def live(request, fault_database, private_key_pem, tmp_path_factory):
    url, engine = fault_database
    parsed = make_url(url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432) if getattr(
        request.module, "DATABASE_PROXY", False) else None
    github = GitHubServer().start()
    # Each module installs the app on its own repository (`fake.installation_repos.append(REPO)`):
    # the lone installed repository is the one served (bot.core.served), so the fake's default goes.
    github.fake.installation_repos.clear()
    workdir = tmp_path_factory.mktemp("live")
    # The policy names the repositories served (an unnamed repository's events are ignored).
    served = [repo for repo in (getattr(request.module, "REPO", None), "acme/metrics") if repo]
    (workdir / "policy.yml").write_text(f"reconcile_interval_minutes: 0\nrepositories: {json.dumps(served)}\n")
    proxied = parsed.set(drivername="postgresql")
    if proxy is not None:
        proxied = proxied.set(host="127.0.0.1", port=proxy.port)
    env = {
        "BEEKEEPER_DATABASE_URL": proxied.render_as_string(hide_password=False),
        "BEEKEEPER_GITHUB_API_URL": github.api_url,
        "BEEKEEPER_GITHUB_URL": github.web_url,
        "BEEKEEPER_GITHUB_APP_ID": "424242",
        "BEEKEEPER_GITHUB_PRIVATE_KEY": private_key_pem,
        "BEEKEEPER_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BEEKEEPER_SECRET_KEY": "fault-suite-secret-key",
        "BEEKEEPER_POLICY": str(workdir / "policy.yml"),
        "BEEKEEPER_INSTANCE_PATH": str(workdir / "instance"),
        "BEEKEEPER_WORKER_POLL_SECONDS": "0.2",
        "BEEKEEPER_LOG_LEVEL": "INFO",
        **getattr(request.module, "BOT_ENV", {}),
    }
    bot = Bot(env=env, workdir=workdir, web_workers=getattr(request.module, "WEB_WORKERS", 2))
    bot.env["BEEKEEPER_PUBLIC_URL"] = bot.url
    github.fake.hook_config["url"] = f"{bot.url}/webhook"
    hooks = HookLog(github.fake, f"{bot.url}/webhook", WEBHOOK_SECRET)
    github.hooks = hooks
    try:
        bot.start_web()
        yield Live(bot=bot, github=github, hooks=hooks, proxy=proxy, engine=engine)
    except BaseException:
        print(bot.log_tail())
        raise
    finally:
        bot.stop_all()
        github.stop()
        if proxy is not None:
            proxy.close()
