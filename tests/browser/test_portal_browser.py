"""The portal and dashboard in a real browser: Debian's chromium driven by Playwright against a
live werkzeug server, with GitHub (OAuth pages and API) served by the fake on another local port.

The story: a request issue arrives by webhook and is reviewed by the worker; the applicant signs
in with GitHub, sees the request, self-serves a basic-tier grant, claims and rotates its key; a
maintainer approves the request from the queue and the issue gets the approval comment.
Screenshots of the main pages go to test-artifacts/ (phone and desktop widths).
"""

from __future__ import annotations

import pytest

from bot.core.config import load_policy
from tests.browser.portal_support import launch_chromium, live_stack, screenshot
from tests.conftest import issue_event
from tests.request_helpers import APPLICANT, MAINTAINER, add_people, form_body

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = "acme/access"
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def stack(db, database_url, private_key_pem, tmp_path):
    # The maintainer is also one of the platform's admins: the audit and gateways pages are theirs.
    path = tmp_path / "policy.yml"
    path.write_text(f"admins: [{MAINTAINER['id']}]\n")
    with live_stack(db, database_url, private_key_pem, str(tmp_path / "instance"), policy=load_policy(path)) as live:
        add_people(live.fake)
        yield live


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


def sign_in(browser, stack, person, viewport=DESKTOP):
    """A fresh browser profile that signs in with GitHub (the fake's OAuth pages) as `person`."""
    context = browser.new_context(viewport=viewport, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    stack.fake.browser_login = person["login"]  # who is "signed in at GitHub" when authorising
    page.goto(f"{stack.base_url}/me")
    page.wait_for_url(f"{stack.base_url}/me*")
    return page


def open_request_issue(stack, number=1):
    body = form_body(app_name="Free AI Chat", referrer="freeaichat", tier="flower", domains="freeaichat.com")
    stack.fake.add_issue(REPO, number, body=body, user=dict(APPLICANT), labels=["special-access"])
    stack.deliver("issues", issue_event("opened", body=body, number=number, user=dict(APPLICANT)))


def test_applicant_self_serves_and_manages_keys_maintainer_approves_from_the_queue(stack, browser):
    open_request_issue(stack)
    from sqlmodel import Session

    from bot.allowlist import gateways

    with Session(stack.runtime.engine) as session:  # a gateway for the gateways page to list
        gateways.add(session, "edge-eu-1", stack.runtime.policy.keys.prefix, "test")
        session.commit()

    # --- the applicant -------------------------------------------------------------------------
    page = sign_in(browser, stack, APPLICANT)
    assert "My access" in page.title()
    row = page.locator("table tr", has_text="acme/access#1")
    playwright_api.expect(row).to_contain_text("validated")
    screenshot(page, "portal-my-access-desktop")

    page.get_by_role("link", name="Get a seed key").click()
    screenshot(page, "portal-self-service-desktop")
    page.get_by_label("App id").fill("chatty")
    page.get_by_label("Domains").fill("chatty.example.com\n*.chatty.dev")
    page.get_by_role("button", name="Create my seed grant").click()
    playwright_api.expect(page.locator(".flash.success")).to_contain_text("chatty is ready")
    card = page.locator("section.card", has_text="chatty")
    playwright_api.expect(card).to_contain_text("chatty.example.com")

    card.get_by_role("button", name="Claim your key").click()
    secret = page.locator("code.secret").first
    playwright_api.expect(secret).to_contain_text("bk_sk_")
    first_key = secret.inner_text()
    copy = page.locator("button.copy").first  # its name changes once clicked
    copy.click()
    playwright_api.expect(copy).to_have_text("Copied")  # not the "Select and copy" fallback
    assert page.evaluate("navigator.clipboard.readText()") == first_key  # really on the clipboard
    screenshot(page, "portal-key-shown-once-desktop")
    page.get_by_role("link", name="back to My access").click()
    card = page.locator("section.card", has_text="chatty")
    playwright_api.expect(card).not_to_contain_text(first_key)
    playwright_api.expect(card).to_contain_text(first_key[:10])  # the display form only

    card.get_by_role("button", name="Rotate key").click()
    card = page.locator("section.card", has_text="chatty")
    card.get_by_role("button", name="Claim your key").click()
    second_key = page.locator("code.secret").first.inner_text()
    assert second_key.startswith("bk_sk_") and second_key != first_key
    page.get_by_role("link", name="back to My access").click()
    card = page.locator("section.card", has_text="chatty")
    playwright_api.expect(card).to_contain_text("expiring")  # the old key, inside its grace period
    screenshot(page, "portal-my-access-after-rotation-desktop")
    page.set_viewport_size(PHONE)
    screenshot(page, "portal-my-access-phone")
    page.context.close()

    # --- the maintainer --------------------------------------------------------------------------
    page = sign_in(browser, stack, MAINTAINER)
    page.get_by_role("link", name="Dashboard").click()
    item = page.locator("article.card", has_text="acme/access#1")
    playwright_api.expect(item).to_contain_text("flower")
    screenshot(page, "admin-queue-desktop")
    item.get_by_role("button", name="Approve").click()
    playwright_api.expect(page.locator(".flash.success")).to_contain_text("Approved on tier flower")
    screenshot(page, "admin-request-approved-desktop")
    bodies = [c["body"] for c in stack.fake.bot_comments(REPO, 1)]
    approval = [b for b in bodies if "beekeeper:decision:approve" in b]
    assert len(approval) == 1 and MAINTAINER["login"] in approval[0].replace("\\", "")
    assert stack.fake.issues[(REPO, 1)]["state"] == "closed"

    # each platform page shows what it is for (not only that it renders)
    page.goto(stack.base_url + "/admin/grants")
    grants_table = page.locator("main")
    for text in ("freeaichat", "chatty", "flower", "seed"):  # the approved grant and the self-served one
        playwright_api.expect(grants_table).to_contain_text(text)
    screenshot(page, "admin-grants-desktop")
    page.goto(stack.base_url + "/admin/audit")
    audit = page.locator("main")
    for text in ("request.approved", "acme/access#1", MAINTAINER["login"]):
        playwright_api.expect(audit).to_contain_text(text)
    screenshot(page, "admin-audit-desktop")
    page.goto(stack.base_url + "/admin/gateways")
    playwright_api.expect(page.locator("main")).to_contain_text("edge-eu-1")
    screenshot(page, "admin-gateways-desktop")
    page.set_viewport_size(PHONE)
    page.goto(stack.base_url + "/admin/")
    screenshot(page, "admin-queue-phone")
    page.context.close()
