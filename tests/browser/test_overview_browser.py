"""The dashboard overview in a real browser: a platform maintainer opens /admin/overview on the
seeded history of tests/overview_data.py (the clock frozen at its "now") and reads the charts —
which bars are drawn, their counts and labels, the silent gateways in red, the numbers tables —
in the light and the dark theme. Screenshots go to test-artifacts/ (desktop, phone, dark)."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from bot.core import clock
from bot.core.config import load_policy
from tests import overview_data as data
from tests.browser.portal_support import launch_chromium, live_stack, screenshot
from tests.request_helpers import MAINTAINER, add_people

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}
RED = {"light": "rgb(207, 34, 46)", "dark": "rgb(248, 81, 73)"}  # --bad in templates/static/beekeeper.css


@pytest.fixture
def stack(db, database_url, private_key_pem, tmp_path):
    path = tmp_path / "policy.yml"
    path.write_text(f"maintainers:\n  users: [{MAINTAINER['login']}]\n")
    try:
        with live_stack(db, database_url, private_key_pem, str(tmp_path / "instance"), policy=load_policy(path)
                        ) as live:
            add_people(live.fake)
            with Session(db, expire_on_commit=False) as session:
                data.seed(session, db)  # leaves the clock frozen at data.NOW, for the server too
                session.commit()
            yield live
    finally:
        clock.use(None)


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


def open_overview(browser, stack, viewport=DESKTOP, scheme="light"):
    context = browser.new_context(viewport=viewport, color_scheme=scheme)
    page = context.new_page()
    stack.fake.browser_login = MAINTAINER["login"]
    page.goto(f"{stack.base_url}/admin/overview")  # sign-in with GitHub, then back here
    page.wait_for_url(f"{stack.base_url}/admin/overview")
    return page


def bars(page, chart_id: str):
    return page.locator(f"svg#{chart_id} [data-series]")


def drawn(page, chart_id: str) -> dict[tuple[str, str], str]:
    """{(series, label): value} of every mark of a chart, as the browser sees the DOM."""
    return {(m["series"], m["label"]): m["value"] for m in bars(page, chart_id).evaluate_all(
        "marks => marks.map(m => ({series: m.dataset.series, label: m.dataset.label, value: m.dataset.value}))")}


def test_a_maintainer_reads_the_overview_charts(stack, browser):
    page = open_overview(browser, stack)
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("nav.subnav a").first).to_have_text("Overview")

    # requests opened per week: six bars, stacked by outcome, the latest week labelled
    assert drawn(page, "requests-opened") == {
        ("approved", "Week of Sep 14"): "1", ("approved", "Week of Nov 23"): "1", ("withdrawn", "Week of Nov 23"): "1",
        ("approved", "Week of Nov 30"): "1", ("rejected", "Week of Nov 30"): "1", ("open", "Week of Nov 30"): "2"}
    assert "Nov 30" in page.locator("svg#requests-opened text.tick").all_text_contents()
    open_bar = page.locator('svg#requests-opened rect[data-series="open"]')
    expect(open_bar.locator("title")).to_have_text("Week of Nov 30: 2 open")
    # stacked: the open bar sits on top of the week's approved and rejected ones, twice as tall as each
    boxes = {s: page.locator(f'svg#requests-opened rect[data-series="{s}"][data-label="Week of Nov 30"]').bounding_box()
             for s in ("approved", "rejected", "open")}
    assert boxes["open"]["height"] == pytest.approx(2 * boxes["approved"]["height"], abs=1)
    assert boxes["open"]["y"] + boxes["open"]["height"] == pytest.approx(boxes["rejected"]["y"], abs=1)

    # time to decision: median and p90 points for the three weeks with decisions
    times = drawn(page, "decision-time")
    assert times[("median", "Week of Nov 30")] == "10" and times[("90th percentile", "Week of Nov 30")] == "36"
    assert len(times) == 6
    assert drawn(page, "open-ages") == {("open", "under a day"): "1", ("open", "1–3 days"): "1",
                                        ("open", "over 4 weeks"): "1"}

    # grants: a line per tier, the last point "Now"
    active = drawn(page, "grants-active")
    assert (active[("flower", "Now")], active[("seed", "Now")], active[("nectar", "Sun Oct 25")]) == ("3", "2", "1")
    assert drawn(page, "grant-changes") == {("upgrades", "Week of Oct 12"): "1", ("downgrades", "Week of Nov 30"): "1",
                                            ("revocations", "Week of Nov 23"): "1"}

    # gateways: edge-us and edge-ap are silent, drawn and named in red; edge-eu is not
    expect(page.locator("table.gateways tr.silent td:first-child")).to_have_text(["edge-ap", "edge-us"])
    expect(page.locator("figure.alarm figcaption")).to_have_text([
        "Pulls per hour by edge-ap, last 24 hours silent", "Pulls per hour by edge-us, last 24 hours silent"])
    assert drawn(page, "pulls-edge-eu") == {("pulls", "Dec 2 10:00 UTC"): "2", ("pulls", "Dec 2 12:00 UTC"): "3"}
    fill = "m => getComputedStyle(m).fill"
    assert page.locator("svg#pulls-edge-us rect[data-series]").evaluate(fill) == RED["light"]
    assert page.locator("svg#pulls-edge-eu rect[data-series]").first.evaluate(fill) != RED["light"]
    assert drawn(page, "allowlist-version")[("version", "Wed Dec 2")] == "9"

    # deliveries: processed, retried and dead per day
    deliveries = drawn(page, "deliveries")
    assert (deliveries[("processed", "Wed Dec 2")], deliveries[("retried", "Wed Dec 2")],
            deliveries[("dead", "Wed Dec 2")]) == ("3", "2", "1")
    assert ("dead", "Tue Dec 1") not in deliveries

    # the numbers beside a chart
    figure = page.locator("figure", has=page.locator("svg#requests-opened"))
    figure.get_by_text("Numbers").click()
    expect(figure.locator("table.numbers th").first).to_have_text("Week of")
    row = figure.locator("table.numbers tr", has_text="Nov 30")
    expect(row.locator("td")).to_have_text(["1", "1", "0", "2", "4"])
    screenshot(page, "admin-overview-desktop")

    phone = open_overview(browser, stack, viewport=PHONE)
    expect(bars(phone, "requests-opened")).to_have_count(6)
    screenshot(phone, "admin-overview-phone")


def test_the_overview_is_legible_in_the_dark_theme(stack, browser):
    page = open_overview(browser, stack, scheme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    tick = page.locator("svg#requests-opened text.tick").first.evaluate("t => getComputedStyle(t).fill")
    assert background == "rgb(13, 17, 23)" and tick == "rgb(145, 152, 161)"  # light text on a dark page
    assert page.locator("svg#pulls-edge-us rect[data-series]").evaluate("m => getComputedStyle(m).fill") == RED["dark"]
    screenshot(page, "admin-overview-dark")
