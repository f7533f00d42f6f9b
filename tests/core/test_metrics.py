"""Who may scrape `/metrics` (and a worker's metrics port), the database gauges, and the shipped
Prometheus rules and Grafana dashboard."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session

from bot import create_app
from bot.core import metrics
from bot.core.clock import utcnow
from bot.core.config import load_settings
from bot.core.models import Gateway
from tests.intake.test_inbox import put

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token-for-tests-0123"


@pytest.fixture
def token_client(runtime):
    app = create_app(replace(runtime, settings=replace(runtime.settings, metrics_token=TOKEN)))
    return app.test_client()


def test_the_token_comes_from_beekeeper_metrics_token():
    assert load_settings({"BEEKEEPER_METRICS_TOKEN": " s3cret "}).metrics_token.get_secret_value() == "s3cret"
    assert load_settings({}).metrics_token is None


def test_with_a_token_only_the_bearer_scrapes(token_client):
    refused = token_client.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "beekeeper_" not in refused.get_data(as_text=True)
    assert token_client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert token_client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    allowed = token_client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"},
                               environ_base={"REMOTE_ADDR": "203.0.113.9"})  # from anywhere, with the token
    assert allowed.status_code == 200 and "beekeeper_inbox_deliveries" in allowed.get_data(as_text=True)


def test_without_a_token_only_the_local_machine_scrapes(client):
    assert client.get("/metrics").status_code == 200  # loopback peer, no proxy header
    remote = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 403 and "BEEKEEPER_METRICS_TOKEN" in remote.get_data(as_text=True)
    proxied = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403  # a local proxy would make every visitor local


def test_inbox_gauges_show_the_oldest_due_delivery_and_each_gateways_last_pull(client, db, frozen_clock):
    put(db)
    frozen_clock.advance(seconds=90)
    put(db)
    with Session(db) as session:
        session.add(Gateway(name="edge-1", sha256="a" * 64, display="bkg_…", last_pull_at=utcnow()))
        session.add(Gateway(name="edge-old", sha256="b" * 64, display="bkg_…", revoked_at=utcnow()))
        session.commit()
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    (oldest,) = families["beekeeper_inbox_oldest_due_seconds"].samples
    assert oldest.value == 90
    pulls = {s.labels["gateway"]: s.value for s in families["beekeeper_gateway_last_pull_timestamp_seconds"].samples}
    assert pulls == {"edge-1": frozen_clock.now().timestamp()}  # a revoked gateway is not expected to pull
    frozen_clock.advance(seconds=-200)  # nothing due yet (both in the future): no backlog
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    assert families["beekeeper_inbox_oldest_due_seconds"].samples[0].value == 0


def test_a_workers_metrics_port_needs_the_token_too():
    metrics.DELIVERIES_PROCESSED.labels(event="star", outcome="skipped").inc()
    server = metrics.serve_worker_metrics("127.0.0.1", 0, TOKEN)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        assert requests.get(url, timeout=10).status_code == 401
        answer = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert answer.status_code == 200 and "beekeeper_deliveries_processed_total" in answer.text
        assert requests.get(url.replace("/metrics", "/other"), headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=10).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_worker_refuses_a_metrics_port_inside_the_webs_multiprocess_directory(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bot.cli import main

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("BEEKEEPER_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    monkeypatch.chdir(tmp_path)
    from bot.core.db import make_engine
    from bot.ops import migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate.upgrade(engine)
    engine.dispose()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(main, ["worker", "--metrics-port", str(port)])
    assert result.exit_code != 0 and "PROMETHEUS_MULTIPROC_DIR" in result.output


def test_preparing_the_multiprocess_directory_creates_and_empties_it(tmp_path, monkeypatch):
    directory = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    assert metrics.prepare_multiprocess_dir() == str(directory) and directory.is_dir()
    (directory / "counter_123.db").write_bytes(b"stale")
    metrics.prepare_multiprocess_dir()
    assert list(directory.iterdir()) == []
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert metrics.prepare_multiprocess_dir() is None


# ---------------------------------------------------------------------------------------------
# deploy/: the alert rules and the dashboard refer to metrics that exist
# ---------------------------------------------------------------------------------------------


def exported_metric_names(client) -> set[str]:
    """Every metric family name Beekeeper exports (web and worker share the registry's names)."""
    names = set()
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    from bot.core.metrics import REGISTRY

    for collector_family in REGISTRY.collect():
        names.add(collector_family.name)
        for suffix in ("_total", "_bucket", "_sum", "_count"):
            names.add(collector_family.name + suffix)
    return names


METRIC_IN_EXPR = re.compile(r"\b(beekeeper_[a-z_]+)\b")


def test_the_alert_rules_parse_and_cover_what_the_issue_asks(client):
    rules_file = yaml.safe_load((ROOT / "deploy" / "prometheus" / "beekeeper-alerts.yml").read_text())
    rules = [rule for group in rules_file["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} == {"BeekeeperDeadDeliveries", "BeekeeperQueueBacklog",
                                            "BeekeeperGitHubErrors", "BeekeeperGatewayNotPulling"}
    known = exported_metric_names(client)
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule["alert"]
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")"), rule["alert"]
        used = set(METRIC_IN_EXPR.findall(expr))
        assert used and used <= known, (rule["alert"], used - known)
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    by_name = {r["alert"]: r["expr"] for r in rules}
    assert 'status="dead"' in by_name["BeekeeperDeadDeliveries"] and "> 0" in by_name["BeekeeperDeadDeliveries"]
    assert "> 60" in by_name["BeekeeperQueueBacklog"]
    assert "5.." in by_name["BeekeeperGitHubErrors"]
    assert "> 600" in by_name["BeekeeperGatewayNotPulling"]


def test_the_scrape_config_uses_the_bearer_token(client):
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "scrape.yml").read_text())
    for job in config["scrape_configs"]:
        assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]


def test_the_grafana_dashboard_is_importable_json_over_metrics_that_exist(client):
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "beekeeper-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    known = exported_metric_names(client)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 6
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = set(METRIC_IN_EXPR.findall(target["expr"]))
            assert used and used <= known, (panel["title"], used - known)
