"""Prometheus metrics. Counters are per process; delivery totals by status come from the
database at scrape time, so they are right whichever process did the work."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERIES_RECEIVED = Counter(
    "beekeeper_deliveries_received_total", "Webhook deliveries stored", ["event"], registry=REGISTRY
)
DELIVERIES_DUPLICATE = Counter(
    "beekeeper_deliveries_duplicate_total", "Redeliveries already in the inbox", ["event"], registry=REGISTRY
)
DELIVERIES_PROCESSED = Counter(
    "beekeeper_deliveries_processed_total", "Deliveries finished by a worker", ["event", "outcome"],
    registry=REGISTRY,
)
DELIVERIES_FAILED = Counter(
    "beekeeper_deliveries_failed_total", "Handler failures that will be retried", ["event"], registry=REGISTRY
)
DELIVERIES_DEAD = Counter(
    "beekeeper_deliveries_dead_total", "Deliveries given up after the last attempt", ["event"], registry=REGISTRY
)
HANDLER_DURATION = Histogram(
    "beekeeper_handler_duration_seconds", "Time to run an event's handlers", ["event"], registry=REGISTRY
)
GITHUB_CALLS = Counter(
    "beekeeper_github_api_calls_total", "GitHub API calls by HTTP status", ["method", "status"], registry=REGISTRY
)
ALLOWLIST_PULLS = Counter(
    "beekeeper_allowlist_pulls_total", "Allowlist requests by gateway and outcome", ["gateway", "outcome"],
    registry=REGISTRY,
)


class InboxCollector:
    """Deliveries in the inbox by event and status, read from the database at scrape time."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        from sqlalchemy import func
        from sqlmodel import Session, select

        from bot.db import reader
        from bot.models import Delivery

        gauge = GaugeMetricFamily("beekeeper_inbox_deliveries", "Deliveries in the inbox", labels=["event", "status"])
        try:
            with Session(reader(self.engine)) as session:
                rows = session.exec(
                    select(Delivery.event, Delivery.status, func.count()).group_by(Delivery.event, Delivery.status)
                ).all()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            rows = []
        for event, status, count in rows:
            gauge.add_metric([event, status], count)
        yield gauge
