"""Content-Security-Policy of the pages (issue 14, item 9): scripts only from our own files.

No page allows 'unsafe-inline' scripts, and no template or rendered page relies on one (an
inline <script>, an on…= handler or a javascript: URL would silently stop working under the
policy). tests/browser/test_csp_browser.py shows chromium enforcing it."""

from __future__ import annotations

import re

import pytest
from sqlmodel import Session

from bot.core.resources import templates_path
from tests.portal_data import APPLICANT, MAINTAINER, add_people, install, make_grant, make_request, sign_in

INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
JAVASCRIPT_URL = re.compile(r"""(?:href|src|action|formaction)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)


def directives(policy: str) -> dict[str, list[str]]:
    parts = [p.strip().split() for p in policy.split(";") if p.strip()]
    return {p[0]: p[1:] for p in parts}


def assert_script_free(html: str, where: str) -> None:
    assert not INLINE_SCRIPT.search(html), f"inline <script> in {where}"
    assert not INLINE_HANDLER.search(html), f"inline event handler in {where}"
    assert not JAVASCRIPT_URL.search(html), f"javascript: URL in {where}"


def get_page(client, url: str):
    """GET, following redirects within Beekeeper (not to GitHub's sign-in)."""
    response = client.get(url)
    for _ in range(5):
        location = response.headers.get("Location", "")
        if response.status_code not in (301, 302, 303) or not location.startswith(("/", "http://localhost/")):
            break
        response = client.get(location)
    return response


def test_the_policy_allows_scripts_only_from_our_own_origin(client):
    response = client.get("/healthz")  # JSON: no CSP needed
    assert "Content-Security-Policy" not in response.headers
    page = get_page(client, "/nowhere")  # the 404 page
    assert page.mimetype == "text/html"
    policy = directives(page.headers["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in page.headers["Content-Security-Policy"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


@pytest.mark.parametrize("template", sorted(p.name for p in (templates_path() / "pages").glob("*.html")))
def test_no_template_holds_an_inline_script(template):
    assert_script_free((templates_path() / "pages" / template).read_text(), template)


def test_scripts_are_static_files():
    scripts = sorted(p.name for p in (templates_path() / "static").glob("*.js"))
    assert scripts, "the copy buttons' script"
    for template in (templates_path() / "pages").glob("*.html"):
        for src in re.findall(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", template.read_text()):
            assert "url_for('pages_static.static'" in src, (template.name, src)


def test_every_page_a_person_can_reach_is_served_with_the_policy_and_no_inline_script(client, runtime, fake_github):
    add_people(fake_github)
    with Session(runtime.engine, expire_on_commit=False) as session:
        install(session)
        grant = make_grant(session)
        request = make_request(session)
    pages = ["/", "/setup", "/me", "/me/self-service", f"/claim/{grant.app_id}", "/nowhere"]
    admin_pages = ["/admin", "/admin/grants", f"/admin/grants/{grant.id}", f"/admin/requests/{request.id}",
                   "/admin/audit", "/admin/gateways"]
    seen = 0
    for person, urls in ((None, pages), (APPLICANT, pages), (MAINTAINER, admin_pages)):
        if person:
            sign_in(client, person, fake_github)
        for url in urls:
            response = get_page(client, url)
            if response.mimetype != "text/html":
                continue
            seen += 1
            policy = directives(response.headers["Content-Security-Policy"])
            assert policy["script-src"] == ["'self'"], url
            assert_script_free(response.get_data(as_text=True), url)
    assert seen >= 10
