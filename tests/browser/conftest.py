"""Fixtures for browser tests: a live Beekeeper with GitHub served by the local fake, and
Debian's chromium through Playwright. The servers themselves live in portal_support."""

from __future__ import annotations

import pytest

from tests.browser.portal_support import launch_chromium, live_stack
from tests.request_helpers import add_people


@pytest.fixture
def live_server(db, database_url, private_key_pem, tmp_path):
    """Beekeeper under werkzeug on 127.0.0.1 (a free port) whose BEEKEEPER_GITHUB_URL and
    _API_URL point at tests/fakegithub's wsgi_app() on another free port; people added."""
    with live_stack(db, database_url, private_key_pem, str(tmp_path / "instance")) as live:
        add_people(live.fake)
        yield live


@pytest.fixture
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()
