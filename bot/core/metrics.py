"""Prometheus metrics.

Counters live in the process that counts. So that scraped totals add up:
- the web processes (gunicorn -w N) run in prometheus-client's multiprocess mode when
  `PROMETHEUS_MULTIPROC_DIR` is set: each process writes its counters to files in that directory
  and `/metrics` (any process) sums them. The gunicorn master clears the directory at start and
  marks exited workers dead (`deploy/gunicorn.conf.py` wires `on_starting` and `child_exit`).
- each `beekeeper worker` serves its own counters on `--metrics-port` (it must not share the web's
  directory, or its counts would be exported twice).
- inbox sizes by status, the oldest due delivery and each gateway's last pull come from the
  database at scrape time (web `/metrics` only), so they are right whichever process did the work.

`/metrics` and the worker's port need `Authorization: Bearer $BEEKEEPER_METRICS_TOKEN` when that
is set; without it they answer only the local machine (loopback, no proxy headers).
"""

from __future__ import annotations

import hmac
import logging
import os
import shutil
import threading
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from bot.core.local_requests import is_local_request

log = logging.getLogger("beekeeper.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

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
    """Deliveries in the inbox by event and status, the age of the oldest due delivery, and each
    gateway's last allowlist pull, read from the database at scrape time."""

    def __init__(self, engine):
        self.engine = engine

    def describe(self):
        """The families without their samples: registering the collector (each create_app) must
        not query the database (the registry would call collect() otherwise)."""
        yield GaugeMetricFamily("beekeeper_inbox_deliveries", "Deliveries in the inbox", labels=["event", "status"])
        yield GaugeMetricFamily("beekeeper_inbox_oldest_due_seconds",
                                "How long the oldest delivery due for processing has waited (0: none waits)")
        yield GaugeMetricFamily("beekeeper_gateway_last_pull_timestamp_seconds",
                                "When each active gateway last pulled the allowlist (its creation if never)",
                                labels=["gateway"])

    def collect(self):
        from sqlalchemy import func
        from sqlmodel import Session, select

        from bot.core.clock import utcnow
        from bot.core.db import reader
        from bot.core.models import Delivery, DeliveryStatus, Gateway

        gauge = GaugeMetricFamily("beekeeper_inbox_deliveries", "Deliveries in the inbox", labels=["event", "status"])
        oldest = GaugeMetricFamily("beekeeper_inbox_oldest_due_seconds",
                                   "How long the oldest delivery due for processing has waited (0: none waits)")
        pulls = GaugeMetricFamily("beekeeper_gateway_last_pull_timestamp_seconds",
                                  "When each active gateway last pulled the allowlist (its creation if never)",
                                  labels=["gateway"])
        now = utcnow()
        rows, due, gateways = [], None, []
        try:
            with Session(reader(self.engine)) as session:
                rows = session.exec(
                    select(Delivery.event, Delivery.status, func.count()).group_by(Delivery.event, Delivery.status)
                ).all()
                due = session.exec(select(func.min(Delivery.next_attempt_at)).where(
                    Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.RETRY]),
                    Delivery.next_attempt_at <= now)).first()
                gateways = session.exec(select(Gateway.name, Gateway.last_pull_at, Gateway.created_at)
                                        .where(Gateway.revoked_at == None)).all()  # noqa: E711
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            rows, due, gateways = [], None, []
        for event, status, count in rows:
            gauge.add_metric([event, status], count)
        yield gauge
        oldest.add_metric([], max(0.0, (now - _aware(due)).total_seconds()) if due is not None else 0.0)
        yield oldest
        for name, last_pull_at, created_at in gateways:
            pulls.add_metric([name], _aware(last_pull_at or created_at).timestamp())
        yield pulls


def _aware(moment):
    """Database times are UTC; SQLite hands them back naive."""
    from datetime import UTC

    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# multiprocess mode (gunicorn web processes)
# --------------------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, when this process uses one."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def prepare_multiprocess_dir() -> str | None:
    """Before the web processes fork (gunicorn `on_starting`, `beekeeper serve`): create the
    directory and empty it, so counters of an earlier run are not added to this one's."""
    directory = multiprocess_dir()
    if not directory:
        return None
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return directory


def child_exit(_server, worker) -> None:
    """gunicorn `child_exit` hook: an exited web process's live gauges stop counting (its
    counters stay in the sums, as they should)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def exposition(engine=None) -> bytes:
    """The text a scrape gets: this process's registry, or in multiprocess mode the sum over every
    web process's files, plus the database gauges."""
    directory = multiprocess_dir()
    if not directory:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    collector = getattr(REGISTRY, "_beekeeper_inbox", None)
    if collector is None and engine is not None:
        collector = InboxCollector(engine)
    if collector is not None:
        registry.register(collector)
    return generate_latest(registry)


# --------------------------------------------------------------------------------------------
# who may scrape
# --------------------------------------------------------------------------------------------



def scrape_refusal(token: str | None, authorization: str | None, remote_addr: str | None,
                   headers) -> tuple[int, str] | None:
    """None when the scrape may proceed, else (HTTP status, reason).

    With a token: only `Authorization: Bearer <token>` (compared in constant time). Without one:
    only the local machine — a loopback peer with no proxy header (a proxy on the same host would
    make every visitor look local).
    """
    if token:
        scheme, _, supplied = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), token.encode()):
            return None
        return 401, "metrics need Authorization: Bearer <BEEKEEPER_METRICS_TOKEN>\n"
    if is_local_request(remote_addr, _Headers(headers)):
        return None
    return 403, ("metrics answer only the local machine: set BEEKEEPER_METRICS_TOKEN and give Prometheus "
                 "`authorization: {credentials: <token>}`\n")


class _Headers:
    """A case-insensitive .get over a Flask/werkzeug header map or a WSGI environ."""

    def __init__(self, source):
        self.source = source

    def get(self, name: str):
        if isinstance(self.source, dict):  # a WSGI environ
            return self.source.get("HTTP_" + name.upper().replace("-", "_"))
        return self.source.get(name)


# --------------------------------------------------------------------------------------------
# the worker's own metrics port
# --------------------------------------------------------------------------------------------


def metrics_wsgi_app(token: str | None):
    """A WSGI app serving this process's registry under the same scrape rule as `/metrics`."""

    def app(environ, start_response):
        refusal = scrape_refusal(token, environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR"), environ)
        if refusal is not None:
            status, reason = refusal
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            if status == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="beekeeper metrics"'))
            start_response(f"{status} {'Unauthorized' if status == 401 else 'Forbidden'}", headers)
            return [reason.encode()]
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"metrics are at /metrics\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(REGISTRY)]

    return app


def serve_worker_metrics(host: str, port: int, token: str | None):
    """Serve `/metrics` for a `beekeeper worker` on host:port in a daemon thread; returns the
    server (`.server_port`, `.shutdown()`)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # one line per scrape is noise
            pass

    server = make_server(host, port, metrics_wsgi_app(token), server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="beekeeper-worker-metrics", daemon=True).start()
    log.info("worker metrics on http://%s:%d/metrics", host, server.server_port)
    return server
