"""`POST /webhook`: signature, size, headers, storing, redeliveries, logs."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import threading
from dataclasses import replace

import pytest
from sqlmodel import Session, select

from bot import create_app
from bot.core import metrics
from bot.core.db import make_engine
from bot.core.models import Delivery
from bot.intake.router import Router
from bot.intake.runtime import Runtime
from bot.intake.webhooks import sign, signature_valid
from bot.intake.worker import Worker
from tests.conftest import HOOK_ID, WEBHOOK_SECRET, deliver, issue_event, load_payload


def rows(engine) -> list[Delivery]:
    with Session(engine) as session:
        return session.exec(select(Delivery).order_by(Delivery.id)).all()


def post(client, body: bytes, headers: dict):
    base = {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-raw", "X-GitHub-Hook-ID": str(HOOK_ID),
            "Content-Type": "application/json"}
    return client.post("/webhook", data=body, headers={k: v for k, v in {**base, **headers}.items() if v is not None})


BODY = json.dumps(issue_event("opened", body="hello")).encode()


# ---------------------------------------------------------------------------------------------
# signature
# ---------------------------------------------------------------------------------------------


def test_good_signature_is_stored_and_answered_202(client, db, frozen_clock):
    payload = issue_event("opened", body="Please grant access")
    body = json.dumps(payload, indent=1).encode()  # stored exactly as signed, whitespace and all
    response = deliver(client, "issues", body, delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert response.status_code == 202
    assert response.get_json() == {"ok": True}
    (stored,) = rows(db)
    assert (stored.event, stored.action, stored.delivery_id, stored.hook_id, stored.installation_id) == (
        "issues", "opened", "72d3162e-cc78-11e3-81ab-4c9367dc0958", HOOK_ID, 1)
    assert stored.payload == body.decode()
    assert stored.received_at == frozen_clock.now()
    assert (stored.status, stored.attempts) == ("pending", 0)


def test_intake_rows_are_stored_exactly_as_the_orm_stores_them(client, db, frozen_clock):
    """The intake writes with raw SQL for speed; times must match the ORM's representation, or
    comparisons such as `next_attempt_at <= now` would silently go wrong on SQLite."""
    from sqlalchemy import text

    from bot.intake import inbox

    deliver(client, "issues", issue_event("opened", body="x"), delivery_id="via-intake")
    with Session(db) as session:
        session.add(Delivery(delivery_id="via-orm", hook_id=HOOK_ID, event="issues", payload="{}",
                             received_at=frozen_clock.now(), next_attempt_at=frozen_clock.now()))
        session.commit()
    with db.connect() as connection:
        raw = dict(connection.execute(text("SELECT delivery_id, received_at FROM delivery")).all())
    assert raw["via-intake"] == raw["via-orm"]
    assert len(inbox.claim(db, "w", 60)) == 2  # due at once, at the very same instant


@pytest.mark.parametrize("case", ["missing", "wrong secret", "body changed", "sha1 only", "not hex", "empty",
                                  "not ascii"])
def test_bad_signatures_are_refused_with_401_and_nothing_stored(client, db, case):
    signature = {
        "missing": None,
        "wrong secret": sign("not-the-secret", BODY),
        "body changed": sign(WEBHOOK_SECRET, BODY.replace(b"hello", b"hellO")),
        "sha1 only": "sha1=" + hmac.new(WEBHOOK_SECRET.encode(), BODY, hashlib.sha1).hexdigest(),
        "not hex": "sha256=" + "z" * 64,
        "empty": "",
        "not ascii": "sha256=" + "\u00e9" * 64,
    }[case]
    headers = {"X-Hub-Signature-256": signature}
    if case == "sha1 only":
        headers = {"X-Hub-Signature": signature}  # GitHub's legacy header, alone
    response = post(client, BODY, headers)
    assert response.status_code == 401
    assert rows(db) == []


def test_signature_helpers():
    assert signature_valid("s", b"x", sign("s", b"x"))
    assert signature_valid("s", b"x", sign("s", b"x").upper().replace("SHA256=", "sha256="))  # hex case
    assert not signature_valid("", b"x", sign("", b"x"))  # no secret configured: nothing is valid
    assert not signature_valid("s", b"x", None)


def test_intake_refuses_everything_when_no_secret_is_configured(runtime, db):
    app = create_app(replace(runtime, settings=replace(runtime.settings, webhook_secret=None)))
    response = deliver(app.test_client(), "issues", issue_event("opened", body="x"))
    assert response.status_code == 503
    assert "BEEKEEPER_WEBHOOK_SECRET" in response.get_json()["error"]
    assert rows(db) == []


# ---------------------------------------------------------------------------------------------
# size, JSON, headers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_limit_client(runtime):
    app = create_app(replace(runtime, settings=replace(runtime.settings, max_webhook_bytes=16384)))
    return app.test_client()


def test_oversized_body_is_413_and_not_stored(small_limit_client, db):
    payload = issue_event("opened", body="x" * 20000)
    response = deliver(small_limit_client, "issues", payload)  # correctly signed, just too big
    assert response.status_code == 413
    assert rows(db) == []
    assert deliver(small_limit_client, "issues", issue_event("opened", body="fits")).status_code == 202


def test_oversized_body_without_content_length_is_413(small_limit_client, db):
    body = json.dumps(issue_event("opened", body="x" * 20000)).encode()
    # The test client would fill in CONTENT_LENGTH from the stream; a chunked request has none.
    chunked = {"wsgi.input_terminated": True, "CONTENT_LENGTH": ""}

    response = small_limit_client.post(
        "/webhook", input_stream=io.BytesIO(body), environ_overrides=chunked,
        headers={"X-GitHub-Event": "issues", "X-GitHub-Delivery": "chunked",
                 "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body), "Transfer-Encoding": "chunked"})
    assert response.status_code == 413
    assert rows(db) == []
    fits = json.dumps(issue_event("opened", body="small")).encode()
    response = small_limit_client.post(
        "/webhook", input_stream=io.BytesIO(fits), environ_overrides=chunked,
        headers={"X-GitHub-Event": "issues", "X-GitHub-Delivery": "chunked",
                 "X-Hub-Signature-256": sign(WEBHOOK_SECRET, fits), "Transfer-Encoding": "chunked"})
    assert response.status_code == 202


def test_default_size_limit_is_well_below_githubs_25_mb(settings):
    from bot.core.config import load_settings

    assert load_settings({}).max_webhook_bytes <= 10 * 1024 * 1024


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2, 3]", b'"text"', "{\"a\": \"\u00e9\"}".encode("latin-1"), b""])
def test_malformed_json_is_400(client, db, body):
    response = post(client, body, {"X-Hub-Signature-256": sign(WEBHOOK_SECRET, body)})
    assert response.status_code == 400
    assert rows(db) == []


@pytest.mark.parametrize("missing", ["X-GitHub-Event", "X-GitHub-Delivery"])
def test_missing_event_headers_are_400(client, db, missing):
    response = post(client, BODY, {"X-Hub-Signature-256": sign(WEBHOOK_SECRET, BODY), missing: None})
    assert response.status_code == 400
    assert missing in response.get_json()["error"]
    assert rows(db) == []


def test_overlong_header_values_are_400(client, db):
    response = post(client, BODY, {"X-Hub-Signature-256": sign(WEBHOOK_SECRET, BODY), "X-GitHub-Delivery": "d" * 65})
    assert response.status_code == 400
    assert rows(db) == []


def test_ping_is_answered_200_and_not_stored(client, db):
    response = deliver(client, "ping", load_payload("ping"))
    assert response.status_code == 200
    assert response.get_json()["zen"] == load_payload("ping")["zen"]
    assert rows(db) == []


def test_odd_but_valid_payloads_are_stored_safely(client, db):
    payload = {"action": "a" * 300, "installation": {"id": True}, "hook_id": "nope", "sender": {}}
    body = json.dumps(payload).encode()
    response = post(client, body, {"X-GitHub-Event": "custom_property", "X-GitHub-Hook-ID": "not-a-number",
                                   "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body)})
    assert response.status_code == 202
    (stored,) = rows(db)
    assert (len(stored.action), stored.installation_id, stored.hook_id) == (64, None, 0)


def test_hook_id_falls_back_to_the_payload(client, db):
    payload = {**load_payload("ping"), "action": None}
    body = json.dumps(payload).encode()
    response = post(client, body, {"X-GitHub-Event": "meta", "X-GitHub-Hook-ID": None,
                                   "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body)})
    assert response.status_code == 202
    assert rows(db)[0].hook_id == payload["hook_id"]


# ---------------------------------------------------------------------------------------------
# redeliveries
# ---------------------------------------------------------------------------------------------


def test_redelivery_is_stored_once_and_handled_once(client, runtime, db):
    calls: list[str] = []
    router = Router()
    router.on("issues", "opened")(lambda event, ctx: calls.append(event.delivery_id))
    worker = Worker(runtime, name="w", router=router)
    payload = issue_event("opened", body="hello")

    assert deliver(client, "issues", payload, delivery_id="guid-1").status_code == 202
    second = deliver(client, "issues", payload, delivery_id="guid-1")
    assert second.status_code == 200 and second.get_json()["duplicate"] is True
    assert worker.run_once() == 1
    third = deliver(client, "issues", payload, delivery_id="guid-1")  # GitHub redelivers after we processed
    assert third.status_code == 200
    assert worker.run_once() == 0
    assert [r.delivery_id for r in rows(db)] == ["guid-1"]
    assert calls == ["guid-1"]


def test_the_same_delivery_id_from_another_hook_is_the_same_delivery(client, db):
    payload = issue_event("opened", body="hello")
    assert deliver(client, "issues", payload, delivery_id="guid-2", hook_id=1).status_code == 202
    again = deliver(client, "issues", payload, delivery_id="guid-2", hook_id=2)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    other_body = deliver(client, "issues", issue_event("opened", body="changed"), delivery_id="guid-2", hook_id=1)
    assert other_body.status_code == 200  # GUIDs are unique across GitHub: the first stored wins
    assert [(r.hook_id, r.delivery_id) for r in rows(db)] == [(1, "guid-2")]


def test_an_old_body_resent_under_a_new_delivery_id_is_not_stored_again(client, db):
    payload = issue_event("opened", body="hello")
    assert deliver(client, "issues", payload, delivery_id="first").status_code == 202
    replay = deliver(client, "issues", payload, delivery_id="replayed-with-a-new-guid")
    assert replay.status_code == 200 and replay.get_json()["duplicate"] is True
    assert [r.delivery_id for r in rows(db)] == ["first"]
    assert rows(db)[0].payload_sha256 == hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def test_a_replayed_comment_never_runs_its_commands_twice(client, worker, runtime, fake_github):
    from bot.core.models import AuditEvent
    from tests.conftest import REPO, comment_event

    issue = issue_event("opened", body="x")
    maintainer = {"login": "mia", "id": 9001, "type": "User"}
    fake_github.add_issue(REPO, 1, body="x", user=issue["issue"]["user"])
    stored = fake_github.add_comment(REPO, 1, "/help", dict(maintainer))
    payload = comment_event("created", body="/help", issue_payload=issue, user=maintainer, comment_id=stored["id"])
    deliver(client, "issues", issue)
    deliver(client, "issue_comment", payload, delivery_id="c-1")
    worker.run_once()
    replies = len(fake_github.bot_comments(REPO, 1))
    # A new GUID on the very same body is refused at the door; another serialisation of the same
    # comment is stored, but the comment id was already processed: nothing runs again.
    assert deliver(client, "issue_comment", payload, delivery_id="c-2").status_code == 200
    reworded = json.dumps(payload, indent=1).encode()
    assert deliver(client, "issue_comment", reworded, delivery_id="c-3").status_code == 202
    worker.run_once()
    assert len(fake_github.bot_comments(REPO, 1)) == replies
    with Session(runtime.engine) as session:
        assert len(session.exec(select(AuditEvent).where(AuditEvent.action == "command.help")).all()) == 1


# ---------------------------------------------------------------------------------------------
# the app's own webhook
# ---------------------------------------------------------------------------------------------


def app_ping(app_id: int = 424242, hook_id: int = HOOK_ID) -> dict:
    ping = load_payload("ping")
    return {**ping, "hook_id": hook_id, "hook": {**ping["hook"], "type": "App", "id": hook_id, "app_id": app_id}}


def test_deliveries_from_another_hook_are_refused_when_the_hook_id_is_set(runtime, db, caplog):
    app = create_app(replace(runtime, settings=replace(runtime.settings, webhook_hook_id=HOOK_ID)))
    client = app.test_client()
    caplog.set_level(logging.WARNING)
    refused = deliver(client, "issues", issue_event("opened", body="x"), delivery_id="other-hook", hook_id=HOOK_ID + 1)
    assert refused.status_code == 403 and "webhook" in refused.get_json()["error"]
    assert "other-hook" in caplog.text and str(HOOK_ID + 1) in caplog.text
    assert deliver(client, "issues", issue_event("opened", body="x"), hook_id=HOOK_ID).status_code == 202
    missing = post(client, BODY, {"X-Hub-Signature-256": sign(WEBHOOK_SECRET, BODY), "X-GitHub-Hook-ID": None,
                                  "X-GitHub-Delivery": "no-hook-header"})
    assert missing.status_code == 403
    assert [r.hook_id for r in rows(db)] == [HOOK_ID]


def test_the_apps_ping_records_its_hook_and_other_hooks_are_refused_after_it(app, client, db):
    from bot.core.models import AppWebhook

    assert deliver(client, "issues", issue_event("opened", body="a"), hook_id=777).status_code == 202  # not known yet
    assert deliver(client, "ping", app_ping()).status_code == 200
    with Session(db) as session:
        assert [(h.app_id, h.hook_id) for h in session.exec(select(AppWebhook)).all()] == [(424242, HOOK_ID)]
    assert deliver(client, "issues", issue_event("opened", body="b"), hook_id=777).status_code == 403
    assert deliver(client, "issues", issue_event("opened", body="c"), hook_id=HOOK_ID).status_code == 202
    # Another web process learns it from the database.
    other = create_app(app.extensions["beekeeper"]).test_client()
    assert deliver(other, "issues", issue_event("opened", body="d"), hook_id=777).status_code == 403
    # A ping from another hook (a repository webhook sharing the secret) is refused, not recorded.
    assert deliver(client, "ping", load_payload("ping"), hook_id=load_payload("ping")["hook_id"]).status_code == 403
    with Session(db) as session:
        assert [h.hook_id for h in session.exec(select(AppWebhook)).all()] == [HOOK_ID]


def test_a_ping_of_another_app_or_with_mismatched_ids_is_not_recorded(client, db):
    from bot.core.models import AppWebhook

    assert deliver(client, "ping", app_ping(app_id=1)).status_code == 200  # another app: nothing learned
    forged = app_ping()
    forged["hook"]["id"] = 5  # the header says HOOK_ID, the signed body another hook
    assert deliver(client, "ping", forged).status_code == 200
    with Session(db) as session:
        assert session.exec(select(AppWebhook)).all() == []
    assert deliver(client, "issues", issue_event("opened", body="x"), hook_id=12345).status_code == 202


def test_concurrent_redeliveries_store_one_row(app, db):
    payload = issue_event("opened", body="race")
    statuses: list[int] = []

    def send():
        statuses.append(deliver(app.test_client(), "issues", payload, delivery_id="racing").status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 7 + [202]
    assert len(rows(db)) == 1


# ---------------------------------------------------------------------------------------------
# database down, metrics, logs
# ---------------------------------------------------------------------------------------------


def test_database_unreachable_is_503_so_github_records_a_failed_delivery(runtime, closed_port):
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{closed_port}/nowhere")
    app = create_app(replace(runtime, engine=engine))
    response = deliver(app.test_client(), "issues", issue_event("opened", body="x"))
    assert response.status_code == 503
    assert "redeliver" in response.get_json()["error"]


@pytest.fixture
def closed_port():
    """A port that refuses connections: bound (so no other test can take it) but not listening."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_received_and_duplicate_counters(client):
    def value(name):
        return metrics.REGISTRY.get_sample_value(name, {"event": "issues"}) or 0.0

    received, duplicate = value("beekeeper_deliveries_received_total"), value("beekeeper_deliveries_duplicate_total")
    deliver(client, "issues", issue_event("opened", body="m"), delivery_id="metric-1")
    deliver(client, "issues", issue_event("opened", body="m"), delivery_id="metric-1")
    assert value("beekeeper_deliveries_received_total") == received + 1
    assert value("beekeeper_deliveries_duplicate_total") == duplicate + 1


def test_logs_one_line_per_event_with_the_delivery_id_and_no_secret(client, runtime, fake_github, caplog):
    """Intake and processing each log one line naming the delivery; neither the webhook secret
    nor the app JWT nor the installation token ever appears, even at DEBUG."""
    router = Router()

    @router.on("issues", "opened")
    def comment(event, ctx):
        ctx.github.get_issue(event.repo, 1)

    fake_github.add_issue("acme/access", 1, body="x", user={"login": "octocat", "id": 1, "type": "User"})
    caplog.set_level(logging.DEBUG)
    deliver(client, "issues", issue_event("opened", body="x"), delivery_id="log-me-1")
    deliver(client, "issues", issue_event("opened", body="x"), delivery_id="log-me-1")
    Worker(runtime, name="w", router=router).run_once()

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("beekeeper")]
    mentioning = [line for line in lines if "log-me-1" in line]
    assert len(mentioning) == 3, lines  # stored, duplicate, processed
    assert all("\n" not in line for line in lines)
    token = runtime.github._tokens[1].token
    assert token.startswith("ghs_")
    for secret in (WEBHOOK_SECRET, token, runtime.settings.github_private_key.get_secret_value().splitlines()[1]):
        assert secret not in caplog.text


def test_rejections_are_logged_without_the_body(client, caplog):
    caplog.set_level(logging.INFO)
    post(client, b'{"secret": "do-not-log-me"}', {"X-Hub-Signature-256": "sha256=" + "0" * 64,
                                                  "X-GitHub-Delivery": "bad-sig"})
    assert "bad-sig" in caplog.text
    assert "do-not-log-me" not in caplog.text


def test_storing_wakes_the_in_process_worker(client, runtime):
    runtime.wake = threading.Event()
    deliver(client, "issues", issue_event("opened", body="wake"))
    assert runtime.wake.is_set()


def test_intake_does_not_call_github(client, fake_github):
    deliver(client, "issues", issue_event("opened", body="quiet"))
    deliver(client, "issue_comment", {**load_payload("issue_comment.created"), "installation": {"id": 1}})
    assert fake_github.calls == []


def test_runtime_from_env_serves_webhooks(database_url, db, tmp_path):
    env = {"BEEKEEPER_DATABASE_URL": database_url, "BEEKEEPER_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "BEEKEEPER_INSTANCE_PATH": str(tmp_path)}
    app = create_app(Runtime.from_env(env))
    assert deliver(app.test_client(), "issues", issue_event("opened", body="env")).status_code == 202
    assert len(rows(db)) == 1


# ---------------------------------------------------------------------------------------------
# the endpoint itself (a WSGI layer in front of Flask)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_other_methods_are_405_with_allow_post(client, db, method):
    response = client.open("/webhook", method=method, data=BODY)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert rows(db) == []


def test_answers_are_json_with_no_cookie_and_nosniff(client):
    for response in (deliver(client, "issues", BODY), post(client, BODY, {"X-Hub-Signature-256": None})):
        assert response.mimetype == "application/json" and response.is_json
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Set-Cookie" not in response.headers
        assert int(response.headers["Content-Length"]) == len(response.data)


@pytest.mark.parametrize("declared", ["12abc", "²³", "-5", "+12", "9" * 5000])
def test_invalid_content_length_is_400_and_not_stored(client, db, declared):
    response = client.post("/webhook", data=BODY, headers={
        "X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-len", "X-Hub-Signature-256": sign(WEBHOOK_SECRET, BODY)},
        environ_overrides={"CONTENT_LENGTH": declared})
    assert response.status_code == 400 and "Content-Length" in response.get_json()["error"]
    assert rows(db) == []


def test_a_chunked_body_is_read_as_chunked_whatever_content_length_says(small_limit_client, db):
    body = json.dumps(issue_event("opened", body="x" * 20000)).encode()
    response = small_limit_client.post(
        "/webhook", input_stream=io.BytesIO(body),
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": "10"},  # a lie: chunked wins
        headers={"X-GitHub-Event": "issues", "X-GitHub-Delivery": "chunked-and-length",
                 "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body), "Transfer-Encoding": "chunked"})
    assert response.status_code == 413
    assert rows(db) == []


def test_a_bug_while_storing_answers_500_and_is_logged(app, db, caplog, monkeypatch):
    intake = app.wsgi_app

    def broken(_incoming):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(intake.group_commit, "store", broken)
    with caplog.at_level(logging.ERROR, logger="beekeeper.webhook"):
        response = deliver(app.test_client(), "issues", BODY, delivery_id="d-bug")
    assert response.status_code == 500 and "redeliver" in response.get_json()["error"]
    assert "d-bug" in caplog.text and "simulated bug" in caplog.text
    assert rows(db) == []


def test_other_paths_still_reach_the_flask_app(client):
    assert client.get("/healthz").status_code == 200
    assert client.post("/webhook/extra", data=BODY).status_code == 404


def test_the_intake_settings_are_read_and_checked():
    from bot.core.config import ConfigError, load_settings

    defaults = load_settings({})
    assert (defaults.webhook_hook_id, defaults.webhook_read_seconds, defaults.webhook_min_bytes_per_second) == (
        None, 10.0, 16384)
    chosen = load_settings({"BEEKEEPER_WEBHOOK_HOOK_ID": "31337", "BEEKEEPER_WEBHOOK_READ_SECONDS": "2.5",
                            "BEEKEEPER_WEBHOOK_MIN_BYTES_PER_SECOND": "0"})
    assert (chosen.webhook_hook_id, chosen.webhook_read_seconds, chosen.webhook_min_bytes_per_second) == (
        31337, 2.5, 0)
    for name, value in (("WEBHOOK_HOOK_ID", "abc"), ("WEBHOOK_READ_SECONDS", "0"),
                        ("WEBHOOK_MIN_BYTES_PER_SECOND", "-1")):
        with pytest.raises(ConfigError, match=f"BEEKEEPER_{name}"):
            load_settings({f"BEEKEEPER_{name}": value})


def test_a_body_shorter_than_its_content_length_is_400_and_not_stored(client, db):
    response = client.post("/webhook", input_stream=io.BytesIO(BODY), environ_overrides={
        "CONTENT_LENGTH": str(len(BODY) + 100)}, headers={
        "X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-short", "X-Hub-Signature-256": sign(WEBHOOK_SECRET, BODY)})
    assert response.status_code == 400 and "shorter" in response.get_json()["error"]
    assert rows(db) == []
