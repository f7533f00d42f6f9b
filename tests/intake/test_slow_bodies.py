"""Slow request bodies (issue 14, item 10): a client trickling a delivery's body is answered 408
and disconnected once the body is late, so a few of them cannot hold every server thread while
health checks and other deliveries wait.

Live servers on 127.0.0.1: Werkzeug's threaded server in this process, and gunicorn (the
production layout's worker class) in a subprocess with fewer threads than trickling clients.
Nothing here measures time: the deadlines are short, the test timeouts generous.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import requests

from bot import create_app
from bot.core.db import make_engine
from bot.intake.webhooks import sign
from bot.ops import migrate
from tests.conftest import HOOK_ID, WEBHOOK_SECRET, issue_event

GENEROUS = 60.0  # far beyond any deadline used here: a trickler gives up by itself after this


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Trickler(threading.Thread):
    """Sends a signed delivery's headers and then its 1 MB body one byte at a time, reading
    whatever the server answers, until the server closes the connection (or GENEROUS runs out)."""

    def __init__(self, port: int, length: int = 1_000_000, path: str = "/webhook",
                 content_type: str = "application/json"):
        super().__init__(daemon=True)
        self.port, self.length, self.path, self.content_type = port, length, path, content_type
        self.started = threading.Event()
        self.response = b""
        self.sent = 0
        self.closed_by_server = False

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=GENEROUS) as sock:
            sock.sendall((f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {self.content_type}\r\n"
                          f"X-GitHub-Event: issues\r\nX-GitHub-Delivery: slow-{id(self)}\r\n"
                          f"X-GitHub-Hook-ID: {HOOK_ID}\r\nX-Hub-Signature-256: sha256={'0' * 64}\r\n"
                          f"Content-Length: {self.length}\r\n\r\n{{").encode())
            self.sent = 1
            self.started.set()
            sock.settimeout(0.05)  # the pace of the trickle: a byte whenever the server says nothing
            give_up = time.monotonic() + GENEROUS
            while time.monotonic() < give_up:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    chunk = None
                except ConnectionResetError:
                    self.closed_by_server = True
                    return
                if chunk == b"":
                    self.closed_by_server = True
                    return
                if chunk:
                    self.response += chunk
                    continue
                if self.sent < self.length:
                    try:
                        sock.send(b" ")
                        self.sent += 1
                    except OSError:
                        pass  # the server stopped reading: its answer is on the way

    @property
    def status(self) -> int | None:
        line = self.response.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else None


def signed_delivery(body_text: str) -> tuple[bytes, dict]:
    body = json.dumps(issue_event("opened", body=body_text)).encode()
    return body, {"X-GitHub-Event": "issues", "X-GitHub-Delivery": f"fast-{body_text}",
                  "X-GitHub-Hook-ID": str(HOOK_ID), "X-Hub-Signature-256": sign(WEBHOOK_SECRET, body),
                  "Content-Type": "application/json"}


# ---------------------------------------------------------------------------------------------
# Werkzeug's threaded server, in this process
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def served(runtime):
    from werkzeug.serving import make_server

    def serve(**settings):
        app = create_app(replace(runtime, settings=replace(runtime.settings, **settings)))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        return server.server_port

    servers: list = []
    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_body_that_misses_the_deadline_is_answered_408_and_the_connection_closed(served, db):
    port = served(webhook_read_seconds=1.0, webhook_min_bytes_per_second=0)
    trickler = Trickler(port)
    trickler.start()
    trickler.join(GENEROUS + 5)
    assert trickler.status == 408, trickler.response[:200]
    assert b"too slowly" in trickler.response
    assert trickler.closed_by_server and trickler.sent < trickler.length


def test_a_body_slower_than_the_minimum_rate_is_cut_before_the_total_deadline(served, db):
    # The total deadline is beyond the trickler's patience: only the rate rule can answer it.
    port = served(webhook_read_seconds=GENEROUS * 2, webhook_min_bytes_per_second=4096)
    trickler = Trickler(port)
    trickler.start()
    trickler.join(GENEROUS + 5)
    assert trickler.status == 408 and trickler.closed_by_server


def test_the_deadline_covers_form_posts_to_the_pages_too(served, db):
    port = served(webhook_read_seconds=1.0, webhook_min_bytes_per_second=0)
    trickler = Trickler(port, path="/auth/logout", content_type="application/x-www-form-urlencoded")
    trickler.start()
    trickler.join(GENEROUS + 5)
    assert trickler.status == 408, trickler.response[:200]
    assert trickler.closed_by_server and trickler.sent < trickler.length


def test_a_delivery_sent_at_once_is_stored_through_the_socket_path(served, db):
    port = served(webhook_read_seconds=5.0)
    body, headers = signed_delivery("prompt")
    response = requests.post(f"http://127.0.0.1:{port}/webhook", data=body, headers=headers, timeout=GENEROUS)
    assert response.status_code == 202


# ---------------------------------------------------------------------------------------------
# gunicorn, the production worker class, with fewer threads than trickling clients
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def gunicorn_server(tmp_path):
    port = free_port()
    url = f"sqlite:///{tmp_path / 'slow.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEEKEEPER_")}
    env.update(BEEKEEPER_DATABASE_URL=url, BEEKEEPER_WEBHOOK_SECRET=WEBHOOK_SECRET,
               BEEKEEPER_INSTANCE_PATH=str(tmp_path), BEEKEEPER_SECRET_KEY="x" * 32,
               BEEKEEPER_WEBHOOK_READ_SECONDS="2", BEEKEEPER_WEBHOOK_MIN_BYTES_PER_SECOND="0")
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "2", "--timeout", "30",
             "--keep-alive", "5", "-b", f"127.0.0.1:{port}", "bot:create_app()"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + GENEROUS
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if requests.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                assert time.monotonic() < give_up, log.read_text()
                time.sleep(0.1)  # not listening yet: poll again
        yield port
    finally:
        process.terminate()  # our own child, by its pid
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_trickling_clients_cannot_stall_health_checks_or_other_deliveries(gunicorn_server):
    port = gunicorn_server
    tricklers = [Trickler(port) for _ in range(4)]  # twice the server's threads
    for trickler in tricklers:
        trickler.start()
    for trickler in tricklers:
        assert trickler.started.wait(GENEROUS)

    # Without a read deadline every thread would be reading a trickle for as long as the
    # tricklers care to go on (GENEROUS): these would time out.
    health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=GENEROUS / 2)
    assert health.status_code == 200
    body, headers = signed_delivery("meanwhile")
    stored = requests.post(f"http://127.0.0.1:{port}/webhook", data=body, headers=headers, timeout=GENEROUS / 2)
    assert stored.status_code == 202

    for trickler in tricklers:
        trickler.join(GENEROUS + 5)
        assert trickler.status == 408, trickler.response[:200]
        assert trickler.closed_by_server and trickler.sent < trickler.length
