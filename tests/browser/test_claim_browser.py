"""Claiming a key in a real browser: Debian's chromium (Playwright) against a live server, with
GitHub's OAuth pages and API served by the local fake. login → claim → copy, then the second
visit and a stranger's refusal. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from beekeeper_gateway import keyformat
from bot.access import keys
from tests.browser.portal_support import screenshot
from tests.key_helpers import make_grant
from tests.request_helpers import APPLICANT, STRANGER

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 15_000  # generous: CI machines run several browsers at once


@pytest.fixture
def grant(live_server):
    with Session(live_server.runtime.engine, expire_on_commit=False) as session:
        return make_grant(session)


def sign_in_at_claim_page(chromium, live_server, person):
    context = chromium.new_context(permissions=["clipboard-read", "clipboard-write"],
                                   viewport={"width": 1000, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    live_server.fake.browser_login = person["login"]  # who is signed in at (fake) GitHub
    page.goto(f"{live_server.base_url}/claim/freeaichat")
    page.get_by_role("link", name="Sign in with GitHub").click()
    page.wait_for_url(f"{live_server.base_url}/claim/freeaichat")
    return page


def test_login_claim_copy(chromium, live_server, grant):
    page = sign_in_at_claim_page(chromium, live_server, APPLICANT)
    expect(page.locator("header")).to_contain_text(f"@{APPLICANT['login']}", timeout=WAIT_MS)
    screenshot(page, "claim-before")

    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/claim/freeaichat")) as shown:
        page.get_by_role("button", name="Claim your key").click()
    assert shown.value.headers["cache-control"] == "no-store, max-age=0"
    secret = page.locator("#key-secret").inner_text().strip()
    publishable = page.locator("#key-publishable").inner_text().strip()
    assert keyformat.parse(secret) == ("bk", "sk") and keyformat.parse(publishable) == ("bk", "pk")
    assert secret not in page.url

    page.get_by_role("button", name="Copy secret key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(".copy-status").first).to_have_text("Copied to the clipboard.", timeout=WAIT_MS)
    assert page.evaluate("navigator.clipboard.readText()") == secret
    screenshot(page, "claim-key-shown-once")

    with Session(live_server.runtime.engine) as session:
        assert keys.is_key_valid(session, secret) and keys.is_key_valid(session, publishable)

    # Back on the claim page: when and which key (display form), rotation offered, never the key.
    page.get_by_role("link", name="I have copied it").click()
    expect(page.locator("main")).to_contain_text("Your key was claimed on", timeout=WAIT_MS)
    expect(page.locator("main")).to_contain_text(keyformat.display(secret), timeout=WAIT_MS)
    expect(page.get_by_role("button", name="Rotate and get a new key")).to_be_visible(timeout=WAIT_MS)
    assert secret not in page.content()
    page.reload()
    assert secret not in page.content()
    screenshot(page, "claim-second-visit")
    page.context.close()


def test_another_github_user_is_refused(chromium, live_server, grant):
    page = sign_in_at_claim_page(chromium, live_server, STRANGER)
    expect(page.locator("h1")).to_contain_text("Nothing to claim here", timeout=WAIT_MS)
    assert "Claim your key" not in page.content() and APPLICANT["login"] not in page.content()
    screenshot(page, "claim-refused")
    page.context.close()
