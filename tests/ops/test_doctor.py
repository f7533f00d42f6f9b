"""`beekeeper doctor`: each problem is found and explained with a fix; a healthy setup passes."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlmodel import Session

from bot.cli import State, main
from bot.core.clock import utcnow
from bot.core.config import load_policy
from bot.core.db import make_engine
from bot.core.models import Delivery, DeliveryStatus
from bot.core.resources import issue_form_path
from bot.intake.runtime import Runtime
from bot.ops import doctor
from bot.requests.labels import managed_labels
from tests.conftest import REPO

FORM_PATH = ".github/ISSUE_TEMPLATE/special-access.yml"


@pytest.fixture
def healthy(fake_github, runtime, policy):
    """A deployment with nothing wrong: form, labels, webhook URL and a recent delivery."""
    fake_github.files[(REPO, FORM_PATH)] = issue_form_path().read_text()
    for name in [policy.labels.trigger, *managed_labels(policy)]:
        fake_github._label(REPO, name)
    fake_github.hook_config["url"] = f"{runtime.settings.public_url}/webhook"
    with Session(runtime.engine) as session:
        session.add(Delivery(delivery_id="d-1", event="issues", action="opened", payload="{}",
                             status=DeliveryStatus.PROCESSED))
        session.commit()
    return fake_github


def _by_check(report, check: str, status: str | None = None):
    return [f for f in report.findings if f.check == check and (status is None or f.status == status)]


def _fails(report) -> list[str]:
    return [f"{f.check}: {f.message}" for f in report.findings if f.status == doctor.FAIL]


def test_a_healthy_deployment_passes(healthy, runtime):
    report = doctor.run(runtime)
    assert report.ok, _fails(report)
    assert _by_check(report, "app key", doctor.OK)[0].message.startswith("private key matches app beekeeper-test")
    assert "acme/access" in _by_check(report, "installation", doctor.OK)[0].message
    assert _by_check(report, "issue form", doctor.OK) and _by_check(report, "labels", doctor.OK)
    assert _by_check(report, "webhook", doctor.OK) and _by_check(report, "database", doctor.OK)
    assert not healthy.count("POST", r"/labels$")  # the doctor changes nothing unless asked


def test_the_command_prints_findings_and_exits_nonzero_on_a_problem(healthy, runtime):
    state = State()
    state._runtime = runtime
    result = CliRunner().invoke(main, ["doctor"], obj=state)
    assert result.exit_code == 0, result.output
    assert "0 problem(s)" in result.output

    healthy.files.pop((REPO, FORM_PATH))
    result = CliRunner().invoke(main, ["doctor", "--json"], obj=state)
    assert result.exit_code == 1
    data = json.loads(result.output)
    (finding,) = [f for f in data["findings"] if f["status"] == "fail"]
    assert finding["check"] == "issue form" and FORM_PATH in finding["fix"]


def test_a_private_key_of_another_app_is_explained(healthy, runtime):
    healthy.fail("GET", r"^/app$", 401, body={"message": "A JSON web token could not be decoded"})
    report = doctor.run(runtime)
    (finding,) = _by_check(report, "app key", doctor.FAIL)
    assert "private key does not belong to app 424242" in finding.message
    assert "generate a new private key" in finding.fix
    assert _by_check(report, "GitHub", doctor.SKIP)  # no cascade of failures for one cause
    assert not _by_check(report, "installation")


def test_an_app_id_that_does_not_match_the_key(healthy, runtime):
    settings = dataclasses.replace(runtime.settings, github_app_id="5")
    report = doctor.run(dataclasses.replace(runtime, settings=settings))
    (finding,) = _by_check(report, "app key", doctor.FAIL)
    assert "belongs to app 424242, not 5" in finding.message and "BEEKEEPER_GITHUB_APP_ID=424242" in finding.fix


def test_a_configured_repository_without_the_app(healthy, runtime, tmp_path):
    policy_file = tmp_path / "policy.yml"
    policy_file.write_text("repositories: [acme/access, acme/other]\n")
    healthy.uninstalled_repos.add("acme/other")
    report = doctor.run(dataclasses.replace(runtime, policy=load_policy(policy_file)))
    (finding,) = _by_check(report, "installation", doctor.FAIL)
    assert finding.message == "the app is not installed on acme/other"
    assert "https://github.com/apps/beekeeper-test/installations/new" in finding.fix
    assert _by_check(report, "issue form", doctor.OK)  # acme/access is still checked


def test_an_installation_that_did_not_accept_the_permissions(healthy, runtime):
    healthy.installation["permissions"] = {"issues": "read", "metadata": "read"}
    healthy.installation["events"] = ["issues"]
    report = doctor.run(runtime)
    (finding,) = _by_check(report, "installation", doctor.FAIL)
    assert "issues: write" in finding.message and "members: read" in finding.message
    assert "issue_comment" in finding.message and "accept" in finding.fix


def test_webhook_url_and_secret_mismatches(healthy, runtime):
    healthy.hook_config["url"] = "https://old.example.net/webhook"
    healthy.hook_deliveries.extend(
        {"id": i, "guid": f"g-{i}", "delivered_at": (utcnow() - timedelta(minutes=i)).isoformat(),
         "status_code": 401, "event": "issues", "action": "opened", "redelivery": False}
        for i in range(1, 4))
    report = doctor.run(runtime)
    (url,) = _by_check(report, "webhook", doctor.FAIL)
    assert "https://old.example.net/webhook" in url.message and "http://localhost:8000/webhook" in url.fix
    (secret,) = _by_check(report, "webhook secret", doctor.FAIL)
    assert "3 of the last 3" in secret.message and "BEEKEEPER_WEBHOOK_SECRET" in secret.message

    healthy.hook_config["secret"] = None
    assert "no secret" in _by_check(doctor.run(runtime), "webhook secret", doctor.FAIL)[0].message


def test_a_form_without_the_fields_the_policy_needs(healthy, runtime):
    form = issue_form_path().read_text().replace("id: contact", "id: email").replace(
        'labels: ["special-access"]', "labels: []")
    healthy.files[(REPO, FORM_PATH)] = form
    report = doctor.run(runtime)
    (finding,) = _by_check(report, "issue form", doctor.FAIL)
    assert "contact (id: contact)" in finding.message and "form.roles" in finding.fix
    assert any("does not apply the label 'special-access'" in f.message for f in _by_check(report, "issue form"))

    healthy.files[(REPO, FORM_PATH)] = "name: [unclosed"
    assert "not a usable issue form" in _by_check(doctor.run(runtime), "issue form", doctor.FAIL)[0].message


def test_missing_labels_are_reported_and_created_on_request(healthy, runtime, policy):
    healthy.labels[REPO].pop(policy.labels.trigger)
    healthy.labels[REPO].pop(policy.labels.approved)
    report = doctor.run(runtime)
    (trigger,) = _by_check(report, "labels", doctor.FAIL)
    assert "'special-access'" in trigger.message and "--fix-labels" in trigger.fix
    assert "approved" in _by_check(report, "labels", doctor.WARN)[0].message

    report = doctor.run(runtime, fix_labels=True)
    assert report.ok, _fails(report)
    assert {policy.labels.trigger, policy.labels.approved} <= set(healthy.labels[REPO])
    assert healthy.count("POST", rf"^/repos/{REPO}/labels$") == 2


def test_database_not_migrated_or_unreachable(healthy, runtime, tmp_path):
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    report = doctor.run(dataclasses.replace(runtime, engine=empty))
    (finding,) = _by_check(report, "database", doctor.FAIL)
    assert "schema at empty" in finding.message and "beekeeper db upgrade" in finding.fix
    empty.dispose()

    unreachable = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    (finding,) = _by_check(doctor.run(dataclasses.replace(runtime, engine=unreachable)), "database", doctor.FAIL)
    assert finding.message.startswith("cannot connect") and "BEEKEEPER_DATABASE_URL" in finding.fix


def test_deliveries_waiting_with_no_worker_and_dead_ones(healthy, runtime):
    old = utcnow() - timedelta(minutes=30)
    with Session(runtime.engine) as session:
        session.add(Delivery(delivery_id="d-old", event="issues", action="edited", payload="{}",
                             received_at=old, next_attempt_at=old))
        session.add(Delivery(delivery_id="d-dead", event="issues", action="edited", payload="{}",
                             status=DeliveryStatus.DEAD))
        session.commit()
    report = doctor.run(runtime)
    (worker,) = _by_check(report, "worker", doctor.FAIL)
    assert worker.message.startswith("1 deliveries have waited") and "beekeeper worker" in worker.fix
    assert "1 dead deliveries" in _by_check(report, "deliveries", doctor.WARN)[0].message


def test_no_credentials_skip_github_checks(runtime):
    bare = dataclasses.replace(runtime.settings, github_app_id=None, github_private_key=None, webhook_secret=None)
    report = doctor.run(Runtime(settings=bare, policy=runtime.policy, engine=runtime.engine, github=runtime.github))
    (finding,) = _by_check(report, "settings", doctor.FAIL)
    assert "BEEKEEPER_GITHUB_APP_ID" in finding.message and "/setup" in finding.fix
    assert _by_check(report, "GitHub", doctor.SKIP)


def test_a_malformed_setting_is_a_finding_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["doctor"], env={"BEEKEEPER_GITHUB_APP_ID": "my-app",
                                                     "BEEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert result.exit_code == 1
    assert "FAIL  settings" in result.output and "BEEKEEPER_GITHUB_APP_ID must be the numeric app id" in result.output
    assert "Traceback" not in result.output


def test_a_form_the_app_may_not_read_is_a_warning(healthy, runtime):
    healthy.fail("GET", r"/contents/", 403, times=1, body={"message": "Resource not accessible by integration"})
    report = doctor.run(runtime)
    assert report.ok, _fails(report)
    (finding,) = _by_check(report, "issue form", doctor.WARN)
    assert "may not read" in finding.message and "contents: read" in finding.fix


# ---- (issue 15) a failure redelivered with success since is not a current failure ----------------


def _hook_delivery(i: int, guid: str, status: int, minutes_ago: int, redelivery: bool = False) -> dict:
    return {"id": i, "guid": guid, "delivered_at": (utcnow() - timedelta(minutes=minutes_ago)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), "status_code": status, "event": "issues", "action": "opened",
        "redelivery": redelivery}


def test_failures_redelivered_with_success_are_not_reported(healthy, runtime):
    # six deliveries failed while the web was down, then `beekeeper redeliver` sent them again
    healthy.hook_deliveries.extend(_hook_delivery(i, f"g-{i}", 502, 60 + i) for i in range(1, 7))
    healthy.hook_deliveries.extend(_hook_delivery(10 + i, f"g-{i}", 202, 10 + i, True) for i in range(1, 7))
    report = doctor.run(runtime)
    assert _by_check(report, "webhook", doctor.WARN) == []
    (ok,) = _by_check(report, "webhook secret", doctor.OK)
    assert "6 failed first and were redelivered since" in ok.message


def test_a_failure_not_redelivered_yet_is_reported_with_what_to_do(healthy, runtime):
    healthy.hook_deliveries.extend([
        _hook_delivery(1, "g-fixed", 503, 30), _hook_delivery(2, "g-fixed", 202, 5, True),
        _hook_delivery(3, "g-open", 502, 20), _hook_delivery(4, "g-again", 502, 40),
        _hook_delivery(5, "g-again", 503, 2, True),  # redelivered, and failed again
        _hook_delivery(6, "g-ok", 202, 1)])
    report = doctor.run(runtime)
    (warning,) = _by_check(report, "webhook", doctor.WARN)
    assert warning.message.startswith("2 of the last 6 deliveries failed and were not delivered since")
    assert "g-open" in warning.message and "g-again" in warning.message and "g-fixed" not in warning.message
    assert "beekeeper redeliver --since 3d" in warning.fix and "/readyz" in warning.fix
