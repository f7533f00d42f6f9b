"""Live servers for the portal's browser tests: Beekeeper under werkzeug on 127.0.0.1, and the
GitHub fake (API under /api, OAuth pages at the root) on another local port; Debian's chromium.

Nothing leaves 127.0.0.1: the app's BEEKEEPER_GITHUB_URL / _API_URL point at the fake.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from werkzeug.serving import make_server

from bot import create_app
from bot.core.config import Settings, load_policy
from bot.github.client import GitHubApp
from bot.intake.runtime import Runtime
from bot.intake.webhooks import sign
from bot.intake.worker import Worker
from tests.conftest import HOOK_ID, WEBHOOK_SECRET
from tests.fakegithub import FakeGitHub

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_NAMES = ("chromium", "chromium-browser")  # Debian's name, Ubuntu's (and GitHub runners')


def find_chromium() -> str | None:
    """`BEEKEEPER_CHROMIUM`, else the first of chromium / chromium-browser on PATH, else
    /usr/bin/chromium if it exists."""
    import os
    import shutil

    explicit = os.environ.get("BEEKEEPER_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


class _Late:
    """A WSGI app whose target is set after the server is bound (URLs need the port)."""

    def __init__(self):
        self.target = None

    def __call__(self, environ, start_response):
        return self.target(environ, start_response)


@contextmanager
def serve(app) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 at a free port in a thread; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=f"live-{server.server_port}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


@dataclass
class LiveStack:
    base_url: str
    github_url: str
    fake: FakeGitHub
    runtime: Runtime
    worker: Worker

    def deliver(self, event: str, payload: dict) -> requests.Response:
        """Send a signed webhook to the live app, as GitHub does, then let the worker run it."""
        body = json.dumps(payload).encode()
        response = requests.post(f"{self.base_url}/webhook", data=body, timeout=10, headers={
            "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()), "X-GitHub-Hook-ID": str(HOOK_ID),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": "424242",
            "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body), "Content-Type": "application/json"})
        response.raise_for_status()
        self.worker.run_once()
        return response


@contextmanager
def live_stack(engine, database_url: str, private_key_pem: str, instance_path: str, policy=None
               ) -> Iterator[LiveStack]:
    fake_app, bot_app = _Late(), _Late()
    with serve(fake_app) as github_url, serve(bot_app) as base_url:
        fake = FakeGitHub(api_url=f"{github_url}/api", web_url=github_url)
        fake_app.target = fake.wsgi_app()
        settings = Settings(
            database_url=database_url, github_api_url=f"{github_url}/api", github_url=github_url,
            github_app_id="424242", github_private_key=private_key_pem, webhook_secret=WEBHOOK_SECRET,
            github_client_id="Iv1.testclient", github_client_secret="test-client-secret", public_url=base_url,
            secret_key="browser-test-secret", instance_path=instance_path)
        runtime = Runtime(settings=settings, policy=policy or load_policy(), engine=engine,
                          github=GitHubApp.from_settings(settings))
        app = create_app(runtime)
        bot_app.target = app
        yield LiveStack(base_url=base_url, github_url=github_url, fake=fake, runtime=runtime,
                        worker=Worker(runtime, name="browser-test-worker"))


def launch_chromium(playwright):
    """Debian's chromium (Playwright never downloads a browser here). Without it the browser
    tests skip and say how to get it, except where BEEKEEPER_REQUIRE_BROWSER=1 (CI) demands them."""
    import os

    import pytest

    chromium = find_chromium()
    if chromium is None:
        message = ("no chromium or chromium-browser on PATH (nor BEEKEEPER_CHROMIUM): install Debian's chromium "
                   "(apt-get install chromium)")
        if os.environ.get("BEEKEEPER_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
