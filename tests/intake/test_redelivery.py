"""bot.intake.redelivery.redeliver_missed: which of GitHub's failed deliveries to ask for again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from bot.core.models import Delivery
from bot.intake.redelivery import redeliver_missed
from tests.cli.test_cli_core import hook_delivery


def since(hours: float = 24) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def store(db, *guids: str, hook_id: int = 1) -> None:
    with Session(db) as session:
        for guid in guids:
            session.add(Delivery(delivery_id=guid, hook_id=hook_id, event="issues", payload="{}"))
        session.commit()


def test_nothing_to_do_when_every_delivery_succeeded(runtime, fake_github):
    fake_github.hook_deliveries = [hook_delivery(n, f"g-{n}", timedelta(minutes=n), 200) for n in range(5)]
    report = redeliver_missed(runtime, since())
    assert (report.seen, report.failed, report.redelivered) == (5, 0, [])
    assert fake_github.redelivered == []


def test_the_latest_failed_attempt_of_a_guid_is_redelivered_once(runtime, fake_github):
    fake_github.hook_deliveries = [
        hook_delivery(1, "g", timedelta(hours=3), 502),
        hook_delivery(2, "g", timedelta(hours=1), 0, redelivery=True),  # timed out (no status code)
        hook_delivery(3, "g", timedelta(hours=2), 503, redelivery=True),
    ]
    report = redeliver_missed(runtime, since())
    assert report.as_dict() == {"seen": 3, "failed": 1, "already_stored": 0, "redelivered": 1, "guids": ["g"],
                                "errors": []}
    assert fake_github.redelivered == [2]


def test_a_guid_stored_from_any_hook_is_not_redelivered(runtime, fake_github, db):
    """GitHub's list does not say which hook a delivery went to; a stored GUID is enough."""
    store(db, "g-stored", hook_id=999)
    fake_github.hook_deliveries = [hook_delivery(1, "g-stored", timedelta(hours=1), 502)]
    report = redeliver_missed(runtime, since())
    assert (report.failed, report.already_stored, report.redelivered) == (1, 1, [])


def test_many_failures_are_checked_against_the_inbox_in_chunks(runtime, fake_github, db):
    fake_github.hook_deliveries = [hook_delivery(n, f"g-{n}", timedelta(seconds=n), 502) for n in range(1200)]
    store(db, "g-5", "g-700", "g-1199")
    report = redeliver_missed(runtime, since(), dry_run=True)
    assert (report.seen, report.failed, report.already_stored) == (1200, 1200, 3)
    assert len(report.redelivered) == 1197 and "g-700" not in report.redelivered
    assert fake_github.redelivered == []


def test_a_rate_limit_stops_the_run_for_the_next_one_to_finish(runtime, fake_github):
    import time

    fake_github.hook_deliveries = [hook_delivery(n, f"g-{n}", timedelta(minutes=n), 502) for n in range(3)]
    fake_github.fail("POST", r"/attempts$", 403, times=1,
                     headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 3600)})
    report = redeliver_missed(runtime, since())
    assert report.redelivered == [] and len(report.errors) == 1
    assert "try again in" in report.errors[0]
    assert fake_github.count("POST", r"/attempts$") == 1
