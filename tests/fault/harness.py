"""The fault suite's machinery: a live Beekeeper (gunicorn + `beekeeper worker` processes) on a
fresh PostgreSQL database, GitHub faked by a local HTTP server, and the means to break things.

- `GitHubServer`: tests/fakegithub.FakeGitHub served by werkzeug on 127.0.0.1, with `Chaos`
  in front of it (time-boxed 502s and secondary rate limits; "did the work, then answered 502")
  and a `HookLog` that sends webhooks the way GitHub does: it signs them, records every attempt
  in the fake's delivery history (what `GET /app/hook/deliveries` lists) and sends a delivery
  again when `POST /app/hook/deliveries/{id}/attempts` asks for it.
- `TcpProxy`: the processes reach PostgreSQL through this proxy, so an outage is simulated by
  cutting it (every connection dropped, new ones refused) instead of restarting the machine's
  shared PostgreSQL, which other test processes are using at the same time.
- `Bot`: starts and stops gunicorn serving `bot:create_app()` and worker processes.

Everything binds 127.0.0.1 on free ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
from werkzeug.serving import WSGIRequestHandler, make_server

from bot.intake.webhooks import sign
from tests.fakegithub import FakeGitHub

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition") -> float:
    """Poll `condition` until true; returns the seconds it took; AssertionError on timeout, chained
    to the exception the condition raised last (if its last call raised), so a bug in the
    condition shows as itself and not as a mysterious timeout."""
    started = time.monotonic()
    last_error: Exception | None = None
    while True:
        try:
            if condition():
                return time.monotonic() - started
            last_error = None
        except Exception as error:  # noqa: BLE001 - e.g. the database is down right now: keep polling
            last_error = error
        if time.monotonic() - started > timeout:
            message = f"timed out after {timeout:.0f} s waiting for {what}"
            if last_error is not None:  # a bug in the condition, not slowness: show it
                raise AssertionError(f"{message}; the condition last raised "
                                     f"{type(last_error).__name__}: {last_error}") from last_error
            raise AssertionError(message)
        time.sleep(interval)


def record_figures(scenario: str, **figures) -> None:
    """Print a scenario's figures and append them to test-artifacts/fault-figures.jsonl."""
    line = json.dumps({"scenario": scenario, **figures}, sort_keys=True)
    print(f"\nFAULT FIGURES {line}")
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "fault-figures.jsonl", "a") as handle:
        handle.write(line + "\n")


# --------------------------------------------------------------------------------------------
# GitHub: the fake behind a real HTTP server, with chaos and a webhook sender
# --------------------------------------------------------------------------------------------


@dataclass
class ChaosRule:
    since: float  # time.monotonic() when it starts
    until: float  # … and when it ends
    status: int
    methods: frozenset[str]
    pattern: re.Pattern
    after_work: bool  # let the fake do the work, then answer `status` anyway (a lost response)
    every: int  # affect every n-th matching request
    headers: dict[str, str]
    body: dict
    seen: int = 0
    hits: int = 0


class Chaos:
    """WSGI middleware that makes GitHub fail for a while."""

    def __init__(self, app):
        self.app = app
        self.rules: list[ChaosRule] = []
        self.lock = threading.Lock()

    def fail_for(self, seconds: float, status: int, *, methods: tuple[str, ...] = ("GET", "POST", "PATCH", "DELETE"),
                 path: str = r"/repos/", after_work: bool = False, every: int = 1, starting_in: float = 0.0,
                 headers: dict | None = None, body: dict | None = None) -> ChaosRule:
        since = time.monotonic() + starting_in
        rule = ChaosRule(since, since + seconds, status, frozenset(methods), re.compile(path), after_work, every,
                         headers or {}, body or {"message": "Server Error"})
        with self.lock:
            self.rules.append(rule)
        return rule

    def secondary_rate_limit_for(self, seconds: float, retry_after: int = 1, **kwargs) -> ChaosRule:
        return self.fail_for(seconds, 403, headers={"Retry-After": str(retry_after)},
                             body={"message": "You have exceeded a secondary rate limit. Please wait a few minutes "
                                              "before you try again.",
                                   "documentation_url": "https://docs.github.com/rest/overview/rate-limits"},
                             **kwargs)

    def _rule_for(self, method: str, path: str) -> ChaosRule | None:
        now = time.monotonic()
        with self.lock:
            for rule in self.rules:
                if rule.since <= now < rule.until and method in rule.methods and rule.pattern.search(path):
                    rule.seen += 1
                    if rule.seen % rule.every == 0:
                        rule.hits += 1
                        return rule
        return None

    def __call__(self, environ, start_response):
        rule = self._rule_for(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
        if rule is None:
            return self.app(environ, start_response)
        if rule.after_work:
            list(self.app(environ, lambda *args, **kwargs: None))  # done, but the answer is lost
        body = json.dumps(rule.body).encode()
        start_response(f"{rule.status} Chaos", [("Content-Type", "application/json"), *rule.headers.items()])
        return [body]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # thousands of requests: keep test output readable
        pass


class GitHubServer:
    """FakeGitHub on a local port: web at http://127.0.0.1:PORT, API at …/api/v3 (like GHES)."""

    def __init__(self, fake: FakeGitHub | None = None):
        self.port = free_port()
        self.web_url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.web_url}/api/v3"
        self.fake = fake or FakeGitHub()
        self.fake.api_url, self.fake.web_url = self.api_url, self.web_url
        self.hooks: HookLog | None = None
        self.chaos = Chaos(self._redelivery_aware(self.fake.wsgi_app()))
        self.server = make_server("127.0.0.1", self.port, self.chaos, threaded=True,
                                  request_handler=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-github", daemon=True)

    def _redelivery_aware(self, app):
        """After the fake records `POST /app/hook/deliveries/{id}/attempts`, send it again."""
        pattern = re.compile(r"/api/v3/app/hook/deliveries/(\d+)/attempts$")

        def wrapped(environ, start_response):
            result = app(environ, start_response)
            match = pattern.search(environ.get("PATH_INFO", ""))
            if match and environ["REQUEST_METHOD"] == "POST" and self.hooks is not None:
                self.hooks.redeliver_later(int(match[1]))
            return result

        return wrapped

    def start(self) -> GitHubServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


@dataclass
class Sent:
    guid: str
    event: str
    body: bytes


class HookLog:
    """Sends webhooks to Beekeeper as GitHub does, and keeps GitHub's delivery history."""

    def __init__(self, fake: FakeGitHub, url: str, secret: str, hook_id: int = 31337):
        self.fake, self.url, self.secret, self.hook_id = fake, url, secret, hook_id
        self.sent: dict[str, Sent] = {}
        self._ids = iter(range(70_000_000, 80_000_000))
        self.lock = threading.Lock()
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32))

    def send(self, event: str, payload: dict | bytes, guid: str | None = None, *, redelivery: bool = False,
             timeout: float = 10.0, fresh_connection: bool = False) -> int:
        """POST one delivery; returns the status (0 when nothing answered), recorded like GitHub.
        `fresh_connection`: a new TCP connection, closed after (GitHub does not keep one open), so
        successive deliveries are accepted by whichever web process is free."""
        guid = guid or str(uuid.uuid4())
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        with self.lock:
            self.sent[guid] = Sent(guid, event, body)
        headers = {
            "X-GitHub-Event": event, "X-GitHub-Delivery": guid, "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": "424242",
            "X-Hub-Signature-256": sign(self.secret, body), "User-Agent": "GitHub-Hookshot/fault",
            "Content-Type": "application/json",
        }
        try:
            if fresh_connection:
                status = requests.post(self.url, data=body, headers={**headers, "Connection": "close"},
                                       timeout=timeout).status_code
            else:
                status = self.http.post(self.url, data=body, headers=headers, timeout=timeout).status_code
        except requests.RequestException:
            status = 0
        action = json.loads(body).get("action") if body.startswith(b"{") else None
        with self.lock:
            self.fake.hook_deliveries.append({
                "id": next(self._ids), "guid": guid, "delivered_at": datetime.now(UTC).isoformat(),
                "redelivery": redelivery, "duration": 0.01, "status": "OK" if 200 <= status < 300 else "failed",
                "status_code": status, "event": event, "action": action, "installation_id": 1,
                "repository_id": None,
            })
        return status

    def redeliver_later(self, delivery_id: int) -> None:
        """GitHub sends a redelivery shortly after it is asked, from its own side."""
        with self.lock:
            item = next((d for d in self.fake.hook_deliveries if d["id"] == delivery_id), None)
            sent = self.sent.get(item["guid"]) if item else None
        if sent is not None:
            threading.Thread(target=self.send, args=(sent.event, sent.body, sent.guid),
                             kwargs={"redelivery": True}, daemon=True).start()


# --------------------------------------------------------------------------------------------
# PostgreSQL behind a proxy that can be cut
# --------------------------------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:port → target. `cut()` drops every connection and refuses new ones
    (fast failures, like a restarting server); `restore()` lets connections through again."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.listener.getsockname()[1]
        self.down = threading.Event()
        self.closed = threading.Event()
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.lock = threading.Lock()
        self.refused = 0
        self.thread = threading.Thread(target=self._accept_loop, name="pg-proxy", daemon=True)
        self.thread.start()

    def _accept_loop(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self.lock:
                self.pairs.add(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(pair)

    def _close(self, pair) -> None:
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        with self.lock:
            self.pairs.discard(pair)

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self._close(pair)

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.closed.set()
        self.cut()
        self.listener.close()


# --------------------------------------------------------------------------------------------
# the bot's processes
# --------------------------------------------------------------------------------------------


@dataclass
class Bot:
    """gunicorn (`bot:create_app()`) and `beekeeper worker` processes with one environment."""

    env: dict[str, str]
    workdir: Path
    web_workers: int = 2
    port: int = field(default_factory=free_port)
    web: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    _logs: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith("BEEKEEPER_") and k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
        return {**base, **self.env, **(extra or {}), "PYTHONUNBUFFERED": "1"}

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop_all
        self._logs.append(log)
        return subprocess.Popen(argv, cwd=self.workdir, env=self._environ(extra_env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def web_metrics_dir(self) -> Path:
        return self.workdir / "web-metrics"

    def start_web(self, timeout: float = 20.0) -> None:
        """gunicorn as the documented layout runs it: deploy/gunicorn.conf.py, with the web
        processes' metrics in a multiprocess directory of their own."""
        self.web = self._spawn("web", [sys.executable, "-m", "gunicorn", "--config",
                                       str(ROOT / "deploy" / "gunicorn.conf.py"), "--workers", str(self.web_workers),
                                       "--worker-class", "gthread", "--threads", "8", "--bind",
                                       f"127.0.0.1:{self.port}", "--graceful-timeout", "2", "--timeout", "30",
                                       "bot:create_app()"],
                               {"PROMETHEUS_MULTIPROC_DIR": str(self.web_metrics_dir)})
        wait_until(lambda: requests.get(f"{self.url}/healthz", timeout=1).status_code == 200, timeout,
                   what="gunicorn to answer /healthz")

    def stop_web(self) -> None:
        if self.web and self.web.poll() is None:
            os.killpg(self.web.pid, signal.SIGKILL)
            self.web.wait(timeout=10)
        self.web = None

    def start_worker(self, extra_env: dict[str, str] | None = None, metrics_port: int | None = None,
                     batch: int = 5) -> subprocess.Popen:
        code = "from bot.cli import main; main()"
        argv = [sys.executable, "-c", code, "worker", "--batch", str(batch)]
        if metrics_port is not None:
            argv += ["--metrics-port", str(metrics_port)]
        process = self._spawn(f"worker-{len(self.workers)}", argv, extra_env)
        self.workers.append(process)
        return process

    def wait_workers_started(self, timeout: float = 20.0) -> None:
        """Until every worker process logged that its loop runs (imports take a second or two)."""
        def all_started() -> bool:
            logs = [self.workdir / f"worker-{i}.log" for i in range(len(self.workers))]
            return all(p.exists() and "beekeeper.worker worker" in p.read_text(errors="replace") for p in logs)

        wait_until(all_started, timeout, what="the worker processes to start")

    def kill(self, process: subprocess.Popen) -> None:
        """kill -9: no cleanup, no lease released."""
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.terminate()
        for process in self.workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.workers.clear()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", *args], cwd=self.workdir,
                              env=self._environ(), capture_output=True, text=True, timeout=timeout, check=False)

    def stop_all(self) -> None:
        self.stop_workers()
        self.stop_web()
        for log in self._logs:
            log.close()

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.workdir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


# --------------------------------------------------------------------------------------------
# request issues
# --------------------------------------------------------------------------------------------


def request_body(n: int, tier: str = "flower", description: str | None = None) -> str:
    """A valid request form body for request n (its own app id and domain), as GitHub renders it."""
    from bot.rules.forms import bundled_schema, render_issue_body

    schema = bundled_schema()
    terms = next(f for f in schema.fields if f.id == "terms")
    return render_issue_body(schema, {
        "app-name": f"Fault App {n}", "homepage": f"https://faultapp{n}.io",
        "description": description or "A dashboard for weather stations that calls the API from our server.",
        "domains": f"faultapp{n}.io", "referrer": f"faultapp{n}", "contact": f"owner{n}@faultapp{n}.io",
        "tier": tier, "terms": list(terms.options)})


def applicant(fake: FakeGitHub, n: int) -> dict:
    """Request n's applicant: an old account of their own (so no check ties requests together)."""
    login = f"fault-dev-{n}"
    if login not in fake.users:
        fake.add_user(login, 900_000 + n, created_at="2016-01-01T00:00:00Z")
    return {"login": login, "id": 900_000 + n, "type": "User"}


def file_request(fake: FakeGitHub, repo: str, n: int, tier: str = "flower") -> dict:
    """Issue n filed from the form in the fake, and the `issues.opened` payload GitHub sends."""
    from tests.conftest import issue_event

    user = applicant(fake, n)
    body = request_body(n, tier)
    with fake._lock:
        fake.add_issue(repo, n, body=body, user=user, labels=["special-access"], title=f"Special access: App {n}")
    return issue_event("opened", body=body, number=n, user=user, repo=repo, title=f"Special access: App {n}")
