"""The dashboard overview: the aggregate figures per bucket (on SQLite and PostgreSQL alike), the
page and its charts, the JSON, and who may see what. The history and the expected figures are in
tests/overview_data.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from bot.allowlist import gateways
from bot.core import audit, clock
from bot.core.config import load_policy
from bot.core.models import AccessRequest, GatewayPullHour, RequestState
from bot.web import overview
from bot.web.charts import Series, nice_ceiling, nice_range, stacked_bars
from tests import overview_data as data
from tests.overview_data import NOW, series
from tests.portal_data import MAINTAINER, STRANGER, add_people, install, sign_in

WEEKS = ["2026-09-14", "2026-09-21", "2026-09-28", "2026-10-05", "2026-10-12", "2026-10-19", "2026-10-26",
         "2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23", "2026-11-30"]


@pytest.fixture
def seeded(session, db):
    data.seed(session, db)
    session.commit()
    yield session
    clock.use(None)


def figures(engine, policy, repositories=None) -> dict:
    with Session(engine) as db:
        return overview.overview(db, policy, repositories, now=NOW)


# --- buckets -----------------------------------------------------------------------------------------


def test_windows_start_on_monday_midnight_and_end_after_the_current_bucket():
    edges = overview.week_edges(NOW)
    assert [e.date().isoformat() for e in edges[:-1]] == WEEKS
    assert edges[-1] == data.at("2026-12-07 00:00") and edges[0].weekday() == 0
    days = overview.day_edges(NOW)
    assert (days[0], days[-1], len(days)) == (data.at("2026-11-19 00:00"), data.at("2026-12-03 00:00"), 15)
    hours = overview.hour_edges(NOW)
    assert (hours[0], hours[-1], len(hours)) == (data.at("2026-12-01 13:00"), data.at("2026-12-02 13:00"), 25)


def test_a_row_on_an_edge_falls_in_the_bucket_that_starts_there(session, db):
    for number, opened in enumerate(["2026-09-13 23:59:59", "2026-09-14 00:00", "2026-11-29 23:59:59",
                                     "2026-11-30 00:00"], start=1):
        session.add(AccessRequest(repo="acme/access", issue_number=number, applicant_id=number, applicant_login="a",
                                  state=RequestState.VALIDATED, created_at=data.at(opened)))
    session.commit()
    with Session(db) as s:
        opened = overview.requests_per_week(s, None, NOW)["opened"]["open"]
    assert opened == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]


# --- the figures ------------------------------------------------------------------------------------


def test_requests_opened_and_decided_per_week(seeded, db, policy):
    requests = figures(db, policy)["requests"]
    assert requests["weeks"] == WEEKS
    assert requests["opened"] == {k: series(v, 12) for k, v in data.OPENED.items()}
    assert requests["decided"] == {k: series(v, 12) for k, v in data.DECIDED.items()}


def test_time_to_decision_per_week_and_the_ages_of_open_requests(seeded, db, policy):
    result = figures(db, policy)
    times = result["decision_times"]
    for week in range(12):
        expected = data.DECISION_HOURS.get(week, (0, None, None))
        assert (times["decisions"][week], times["median_hours"][week], times["p90_hours"][week]) == expected, week
    ages = result["open_requests"]
    assert ages["counts"] == data.OPEN_AGES and ages["open"] == 3
    assert ages["oldest_opened_at"] == "2026-09-01T00:00:00+00:00" and ages["oldest_days"] == 92.5


def test_median_and_90th_percentile_are_nearest_rank(session, db):
    """Ten decisions in one week taking 1…10 hours: median the 5th, p90 the 9th; one more week with
    a single decision has both equal to it."""
    base = data.at("2026-11-02 00:00")
    frozen = clock.FrozenClock(base)
    clock.use(frozen)
    try:
        for hours in [*range(1, 11), 50]:
            opened = base if hours != 50 else data.at("2026-11-09 00:00")
            request = AccessRequest(repo="acme/access", issue_number=hours, applicant_id=hours, applicant_login="a",
                                    state=RequestState.REJECTED, created_at=opened)
            session.add(request)
            session.flush()
            frozen.current = opened + timedelta(hours=hours)
            audit.record(session, "m", "request.rejected", request_id=request.id)
        session.commit()
    finally:
        clock.use(None)
    with Session(db) as s:
        times = overview.decision_times(s, None, NOW)
    assert (times["decisions"][7], times["median_hours"][7], times["p90_hours"][7]) == (10, 5.0, 9.0)
    assert (times["decisions"][8], times["median_hours"][8], times["p90_hours"][8]) == (1, 50.0, 50.0)


def test_active_grants_by_tier_over_time_and_changes_per_week(seeded, db, policy):
    result = figures(db, policy)["grants"]
    assert result["tiers"] == ["seed", "flower", "nectar"]
    assert result["active"] == data.ACTIVE
    assert result["active_now"] == 5
    assert result["upgrades"] == series(data.UPGRADES, 12)
    assert result["downgrades"] == series(data.DOWNGRADES, 12)
    assert result["revocations"] == series(data.REVOCATIONS, 12)


def test_gateways_pulls_per_hour_silence_and_allowlist_versions(seeded, db, policy):
    result = figures(db, policy)["gateways"]
    by_name = {g["name"]: g for g in result["gateways"]}
    assert set(by_name) == {"edge-eu", "edge-us", "edge-ap"}  # the revoked one is not shown
    for name, pulls in data.PULLS.items():
        assert by_name[name]["pulls_per_hour"] == series(pulls, 24), name
        assert by_name[name]["silent"] is data.SILENT[name], name
    assert by_name["edge-eu"]["last_pull_at"] == "2026-12-02T12:29:30+00:00"
    assert (by_name["edge-eu"]["pulls_total"], by_name["edge-eu"]["version_held"]) == (5, 9)
    assert by_name["edge-ap"]["last_pull_at"] is None and by_name["edge-ap"]["version_held"] is None
    assert result["silent_after_seconds"] == 3 * 30 + 5
    assert result["current_version"] == 9
    assert result["allowlist_version"] == data.VERSIONS


def test_deliveries_per_day(seeded, db, policy):
    result = figures(db, policy)["deliveries"]
    for key, counts in data.DELIVERIES.items():
        assert result[key] == series(counts, 14), key


def test_a_maintainer_of_some_repositories_gets_their_figures_only(seeded, db, policy):
    result = figures(db, policy, ["ACME/Access"])  # repository names compare case-insensitively
    assert result["requests"]["opened"] == {k: series(v, 12) for k, v in data.OPENED_IN_ACME.items()}
    assert result["open_requests"]["counts"] == data.OPEN_AGES_IN_ACME
    assert result["grants"]["active"] == data.ACTIVE_IN_ACME
    assert result["deliveries"] is None  # platform-wide, not tied to a repository
    elsewhere = figures(db, policy, ["other/repo"])
    assert elsewhere["requests"]["opened"]["open"] == series({11: 1}, 12)
    assert sum(elsewhere["requests"]["decided"]["approved"]) == 0
    assert elsewhere["grants"]["active_now"] == 0
    assert all(v is None for v in elsewhere["decision_times"]["median_hours"])


def test_an_empty_platform_has_zero_figures(db, policy):
    result = figures(db, policy)
    assert result["requests"]["opened"]["open"] == [0] * 12
    assert result["open_requests"]["oldest_opened_at"] is None
    assert result["grants"]["active"] == {"seed": [0] * 12, "flower": [0] * 12, "nectar": [0] * 12}
    assert result["gateways"]["gateways"] == [] and result["gateways"]["allowlist_version"] == [0] * 14


def test_chart_axes_end_on_round_figures():
    assert [nice_ceiling(v) for v in (0, 3, 5, 17, 41, 120)] == [4, 4, 8, 20, 80, 200]
    assert nice_range(5, 9) == (5, 9)  # the allowlist version: not from zero
    assert nice_range(149_990, 150_123) == (149_950, 150_150)


def test_chart_text_is_escaped():
    chart = stacked_bars("c", "<script>x</script>", ["<b>"], [Series("a&b", [2])])
    assert "<script>" not in chart.svg and "&lt;script&gt;" in chart.svg
    assert 'data-label="&lt;b&gt;"' in chart.svg and "<title>&lt;b&gt;: 2 a&amp;b</title>" in chart.svg


# --- the page, the JSON, permission ------------------------------------------------------------------


@pytest.fixture
def maintainer(client, session, fake_github, runtime, tmp_path):
    """A maintainer of every repository (listed in the policy)."""
    path = tmp_path / "policy.yml"
    path.write_text(f"maintainers:\n  users: [{MAINTAINER['login']}]\n")
    runtime.policy = load_policy(path)
    add_people(fake_github)
    install(session)
    sign_in(client, MAINTAINER, fake_github)
    return client


@pytest.fixture
def repository_maintainer(client, session, fake_github, runtime):
    """A maintainer of acme/access only (write permission there) on a platform serving two repositories."""
    runtime.policy = runtime.policy.model_copy(update={"repositories": ["acme/access", "acme/elsewhere"]})
    add_people(fake_github)
    install(session, ("acme/access", "acme/elsewhere"))
    sign_in(client, MAINTAINER, fake_github)
    return client


def test_the_json_gives_the_same_figures(seeded, maintainer, db, runtime):
    response = maintainer.get("/admin/overview.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    expected = figures(db, runtime.policy)
    assert body == {**expected, "generated_at": body["generated_at"]}  # the page's "now" is the clock's
    assert body["repositories"] is None
    assert body["requests"]["opened"]["approved"] == series(data.OPENED["approved"], 12)
    assert body["deliveries"]["dead"] == series(data.DELIVERIES["dead"], 14)


def test_a_repository_maintainer_gets_that_repository_s_figures(seeded, repository_maintainer):
    body = repository_maintainer.get("/admin/overview.json").get_json()
    assert body["repositories"] == ["acme/access"]
    assert body["requests"]["opened"]["open"] == series(data.OPENED_IN_ACME["open"], 12)
    assert body["grants"]["active"] == data.ACTIVE_IN_ACME and body["deliveries"] is None
    page = repository_maintainer.get("/admin/overview").get_data(as_text=True)
    assert "Only the requests and grants of\n  acme/access" in page and 'id="deliveries"' not in page


def test_the_page_draws_each_chart_with_its_numbers(seeded, maintainer):
    response = maintainer.get("/admin/overview")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<script" not in page and "style=" not in page  # the CSP allows neither
    for chart in ("requests-opened", "requests-decided", "decision-time", "open-ages", "grants-active",
                  "grant-changes", "allowlist-version", "deliveries", "pulls-edge-eu"):
        assert f'id="{chart}"' in page, chart
    # week of Nov 30: one approved, one rejected and two open requests, drawn and in the table
    assert 'data-series="approved" data-label="Week of Nov 30" data-value="1"' in page
    assert 'data-series="open" data-label="Week of Nov 30" data-value="2"' in page
    assert "<title>Week of Nov 30: 2 open</title>" in page
    assert 'class="badge bad">silent' in page  # edge-us and edge-ap
    subnav = page[page.index('<nav class="subnav" aria-label="Dashboard">'):]
    assert subnav.index('href="/admin/overview"') < subnav.index('href="/admin/"')  # first in the dashboard nav


def test_the_overview_is_for_maintainers_only(app, client, session, fake_github):
    add_people(fake_github)
    install(session)
    sign_in(client, STRANGER, fake_github)
    assert client.get("/admin/overview").status_code == 403
    assert client.get("/admin/overview.json").status_code == 403
    signed_out = app.test_client().get("/admin/overview.json")
    assert signed_out.status_code == 302 and "/auth/login" in signed_out.headers["Location"]


def test_pull_hours_add_up_keep_the_highest_version_and_expire(session, db):
    gateway, _ = gateways.add(session, "edge-eu", "bk", "cli:ops")
    session.commit()
    hour = data.at("2026-12-02 12:00")
    old = hour - timedelta(days=gateways.PULL_HOURS_KEPT_DAYS, hours=1)
    with Session(db) as s:
        s.add(GatewayPullHour(gateway_id=gateway.id, hour=old, pulls=7, version=1))
        s.commit()
    for minute, count, version in [(5, 2, 8), (40, 3, None), (59, 1, 6)]:
        with Session(db) as s:
            gateways.add_pull_hours(s, {gateway.id: (hour.replace(minute=minute), count, version)})
            s.commit()
    with Session(db) as s:
        rows = s.exec(select(GatewayPullHour)).all()
    assert [(r.hour, r.pulls, r.version) for r in rows] == [(hour, 6, 8)]  # the 36-day-old hour is gone
