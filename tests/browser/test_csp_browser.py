"""The pages' Content-Security-Policy, enforced by a real browser (Debian's chromium): markup
that somehow got into a page cannot run script — neither an inline <script> nor an on…=
handler — while our own static script (the copy buttons, see test_claim_browser) still runs."""

from __future__ import annotations

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 15_000

INJECT = """() => new Promise((resolve) => {
  const violations = [];
  document.addEventListener("securitypolicyviolation", (e) => violations.push(e.violatedDirective));
  const script = document.createElement("script");
  script.textContent = "window.__inlineRan = true;";
  document.body.appendChild(script);
  const button = document.createElement("button");
  button.setAttribute("onclick", "window.__handlerRan = true;");
  document.body.appendChild(button);
  button.click();
  // Violation events are queued as tasks: let them arrive before answering.
  setTimeout(() => resolve({inline: window.__inlineRan === true, handler: window.__handlerRan === true,
                            violations}), 0);
})"""


def test_injected_inline_scripts_and_handlers_do_not_run(chromium, live_server):
    context = chromium.new_context()
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    response = page.goto(f"{live_server.base_url}/nowhere")  # any page: the 404 page is one
    assert "script-src 'self'" in response.headers["content-security-policy"]
    outcome = page.evaluate(INJECT)
    assert outcome["inline"] is False and outcome["handler"] is False
    assert any(v.startswith("script-src") for v in outcome["violations"]), outcome
    context.close()
