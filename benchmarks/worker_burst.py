#!/usr/bin/env python3
"""A burst of new requests: N valid issues opened at once → every status report posted.

In one run, on 127.0.0.1 only, against a fresh PostgreSQL database (created on the server named
by --database-url, dropped afterwards) or, without --database-url, a fresh SQLite file:

- GitHub is tests/fakegithub.FakeGitHub served by werkzeug (threaded), every answer delayed by
  `--github-ms` (20 ms), as a real API round trip would be;
- the web is gunicorn as the fault suite runs it (deploy/gunicorn.conf.py, 2 × gthread 8);
- `--processes` (1) `beekeeper worker --concurrency C` processes per round, C taken in turn from
  `--concurrency` (default "1,4": before and after), so every setting meets the same machine.

Each round files N requests in a repository of its own (valid forms, each applicant an old
account of their own), sends the N `issues.opened` webhooks at once (N threads) and measures,
per issue, the time from its webhook being sent to the first POST of its status comment (the
report) arriving at the fake GitHub. Each worker process is warmed up first by an issue of its
own (a running worker has its installation token and lazily loaded data already); it polls every 1 s
(the default), as a `beekeeper worker` process beside gunicorn does, and on PostgreSQL is woken
at once by the intake's NOTIFY (docs/operations.md, "How workers are woken"). A round fails unless every
issue got exactly one status comment and every delivery was processed on its first attempt.

    .venv/bin/python benchmarks/worker_burst.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/worker_burst.py --concurrency 1      # SQLite: a file in a temporary directory
    git archive --prefix=before/ COMMIT | tar -x -C /tmp && \
        .venv/bin/python benchmarks/worker_burst.py --code /tmp/before ...   # the workers of another tree

Each round also reports the worker processes' CPU per delivery of the burst (user + system time
from /proc, warm-up excluded) and the load average, since this machine is shared. With
`--py-spy DIR` (py-spy installed: `pip install py-spy`), each round's burst is sampled in the
worker processes, every thread, into DIR/*.txt (collapsed stacks: `sort -t' ' -k2 -nr`).

Goal (issue 18): 60 issues, p95 ≤ 2 s with GitHub answering in ~20 ms.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMMENT_PATH = re.compile(r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments$")


class SlowGitHub:
    """WSGI middleware: every answer waits `delay` seconds; records when each issue's first
    status comment was posted (time.monotonic())."""

    def __init__(self, app, delay: float):
        from bot.core.comments import STATUS_MARKER

        self.app, self.delay, self.marker = app, delay, STATUS_MARKER
        self.reported: dict[tuple[str, int], float] = {}
        self.requests = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        time.sleep(self.delay)
        with self.lock:
            self.requests += 1
        match = COMMENT_PATH.search(environ.get("PATH_INFO", ""))
        if match is None or environ["REQUEST_METHOD"] != "POST":
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        result = self.app(environ, start_response)
        if self.marker.encode() in body:
            with self.lock:
                self.reported.setdefault((match[1], int(match[2])), time.monotonic())
        return result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))  # nearest rank
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_by_process() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, session id, CPU seconds) of every process still running."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name, rest = (entry / "stat").read_text().split(" (", 1)[1].rsplit(")", 1)
            except OSError:
                continue  # exited meanwhile
            fields = rest.split()
            table[int(entry.name)] = (name, int(fields[3]),
                                      (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return table


def cpu_shares(before: dict, after: dict, workers: list[int], web_session: int) -> dict[str, float]:
    """CPU seconds spent between two `cpu_by_process` snapshots, by part: the workers, the web
    (gunicorn's session), this process (the fake GitHub and the webhook sender), PostgreSQL, and
    everything else on the machine (processes that exited meanwhile are not counted)."""
    shares = dict.fromkeys(("worker", "web", "github+sender", "postgres", "other"), 0.0)
    for pid, (name, session, cpu) in after.items():
        spent = cpu - before.get(pid, (name, session, 0.0))[2]
        part = ("worker" if pid in workers else "web" if session == web_session
                else "github+sender" if pid == os.getpid() else "postgres" if name.startswith("postgres")
                else "other")
        shares[part] += spent
    return shares


def run_round(live, slow: SlowGitHub, concurrency: int, issues: int, timeout: float, processes: int = 1,
              py_spy: Path | None = None) -> dict:
    from tests.fault.harness import file_request, wait_until

    fake = live["github"].fake
    repo = f"bench/burst-{uuid.uuid4().hex[:8]}"
    # The only installed repository, so it is served without a policy list (bot.core.served); the
    # worker starts after this, so its memo of the installation's repositories is fresh.
    fake.installation_repos[:] = [repo]
    opened = {n: file_request(fake, repo, n) for n in range(1, issues + 1)}  # N+1…: the warm-up
    bot, hooks = live["bot"], live["hooks"]
    logs = [bot.workdir / f"worker-{n}.log" for n in range(processes)]  # reused by every round (appended to)

    def lines(text: str) -> list[int]:
        return [log.read_text(errors="replace").count(text) if log.exists() else 0 for log in logs]

    def started_lines() -> list[int]:
        return lines("beekeeper.worker worker")

    before = started_lines()
    processed_before = lines("event=issues.opened processed")
    workers = [bot.start_worker(extra_env={"BEEKEEPER_WORKER_CONCURRENCY": str(concurrency)}, batch=10)
               for _ in range(processes)]
    wait_until(lambda: all(a > b for a, b in zip(started_lines(), before, strict=True)), 30,
               what="the workers to start")  # imports are not measured
    # A running worker is warm: its first delivery pays for the installation token, the served
    # repositories, lazily loaded data… Warm-up issues one at a time until every worker process
    # has reviewed one (whichever polls first takes each), then the burst.
    warm_number = issues
    while any(now == then for now, then in zip(lines("event=issues.opened processed"), processed_before,
                                               strict=True)):
        warm_number += 1
        assert warm_number <= issues + 10 * processes, "a worker process took no warm-up issue"
        warm = file_request(fake, repo, warm_number)
        assert hooks.send("issues", warm, str(uuid.uuid4())) == 202
        wait_until(lambda n=warm_number: (repo, n) in slow.reported, timeout, interval=0.05,
                   what="the warm-up report")
        wait_until(lambda: live["pending"]() == 0, timeout, interval=0.05, what="the warm-up to finish")
    sent: dict[int, float] = {}
    ready = threading.Barrier(issues)

    def send(n: int) -> int:
        ready.wait()  # all N at once
        sent[n] = time.monotonic()
        return hooks.send("issues", opened[n], str(uuid.uuid4()))

    github_requests = slow.requests
    samplers = []
    if py_spy is not None:  # every thread of each worker, for the burst only
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        samplers = [subprocess.Popen([spy, "record", "--pid", str(w.pid), "--format", "raw", "--rate", "200",
                                      "--threads", "--output",
                                      str(py_spy / f"c{concurrency}-{repo.split('/')[1]}-w{i}.txt")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for i, w in enumerate(workers)]
        time.sleep(1.0)  # py-spy attaches
    cpu_before = sum(cpu_seconds(w.pid) for w in workers)
    machine_before = cpu_by_process()
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with ThreadPoolExecutor(issues) as pool:
        statuses = list(pool.map(send, opened))
    try:
        assert statuses == [202] * issues, sorted(set(statuses))
        wait_until(lambda: all((repo, n) in slow.reported for n in opened), timeout, interval=0.05,
                   what="every status report")
        all_reported = time.monotonic() - started
        wait_until(lambda: live["pending"]() == 0, timeout, interval=0.05, what="the inbox to drain")
        cpu_ms = (sum(cpu_seconds(w.pid) for w in workers) - cpu_before) * 1000 / issues
        shares = cpu_shares(machine_before, cpu_by_process(), [w.pid for w in workers], bot.web.pid)
        load = (load_before + os.getloadavg()[0]) / 2
    finally:
        for sampler in samplers:
            sampler.send_signal(2)  # SIGINT: py-spy writes its file and exits
            sampler.wait(timeout=30)
        bot.stop_workers()
        assert all(worker.poll() is not None for worker in workers)
    for n in opened:
        with fake._lock:
            reports = [c for c in fake.bot_comments(repo, n) if slow.marker in c["body"]]
        assert len(reports) == 1, f"{repo}#{n}: {len(reports)} status comments"
    latencies = [slow.reported[(repo, n)] - sent[n] for n in opened]
    return {"concurrency": concurrency, "processes": processes, "p50": statistics.median(latencies),
            "p95": percentile(latencies, 0.95),
            "max": max(latencies), "all_reported": all_reported, "cpu_ms": cpu_ms, "load": load,
            "cpu_s": {part: round(seconds, 2) for part, seconds in shares.items()},
            "github_requests_per_issue": (slow.requests - github_requests) / issues}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="", help="a PostgreSQL server (a database is created on it); "
                                                           "SQLite in the run's temporary directory if not given")
    parser.add_argument("--issues", type=int, default=60)
    parser.add_argument("--concurrency", default="1,4", help="worker concurrencies to compare, in turn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1, help="`beekeeper worker` processes, each with C threads")
    parser.add_argument("--github-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a round may take")
    parser.add_argument("--code", type=Path, default=None, metavar="DIR",
                        help="run gunicorn and the workers on the `bot` package of another source tree (e.g. "
                             "`git archive` of an earlier commit), for before/after in one session")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="sample the workers during each burst with py-spy into DIR")
    args = parser.parse_args()
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    settings = [int(c) for c in args.concurrency.split(",")]

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from sqlalchemy.engine import make_url
    from sqlmodel import Session, select

    from bot.core.db import make_engine
    from bot.core.models import Delivery, DeliveryStatus
    from bot.ops import migrate
    from tests.conftest import WEBHOOK_SECRET, _create_pg_database, _drop_pg_database
    from tests.fault.harness import Bot, GitHubServer, HookLog

    private_key_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    workdir = Path(tempfile.mkdtemp(prefix="bk-burst-"))
    if args.database_url and not args.database_url.startswith("postgresql"):
        raise SystemExit("--database-url must be a PostgreSQL server (or omitted: SQLite)")
    url = _create_pg_database(args.database_url) if args.database_url else f"sqlite:///{workdir / 'bk.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    github = GitHubServer()
    slow = SlowGitHub(github.chaos.app, args.github_ms / 1000)
    github.chaos.app = slow
    github.start()
    (workdir / "policy.yml").write_text("reconcile_interval_minutes: 0\n")
    env = {
        "BEEKEEPER_DATABASE_URL": (make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
                                   if args.database_url else url),
        "BEEKEEPER_GITHUB_API_URL": github.api_url, "BEEKEEPER_GITHUB_URL": github.web_url,
        "BEEKEEPER_GITHUB_APP_ID": "424242", "BEEKEEPER_GITHUB_PRIVATE_KEY": private_key_pem,
        "BEEKEEPER_WEBHOOK_SECRET": WEBHOOK_SECRET, "BEEKEEPER_SECRET_KEY": "bench-secret-key",
        "BEEKEEPER_POLICY": str(workdir / "policy.yml"), "BEEKEEPER_INSTANCE_PATH": str(workdir / "instance"),
        "BEEKEEPER_WORKER_POLL_SECONDS": "1.0", "BEEKEEPER_LOG_LEVEL": "INFO",
    }
    if args.code is not None:  # ahead of the installed (editable) tree
        env["PYTHONPATH"] = str(args.code.resolve())
    bot = Bot(env=env, workdir=workdir, web_workers=2)
    bot.env["BEEKEEPER_PUBLIC_URL"] = bot.url
    hooks = HookLog(github.fake, f"{bot.url}/webhook", WEBHOOK_SECRET)
    github.hooks = hooks

    def pending() -> int:
        with Session(engine) as session:
            return sum(1 for status in session.exec(select(Delivery.status)).all()
                       if status not in (DeliveryStatus.PROCESSED, DeliveryStatus.SKIPPED))

    live = {"bot": bot, "github": github, "hooks": hooks, "pending": pending}
    results: dict[int, list[dict]] = {c: [] for c in settings}
    try:
        bot.start_web()
        for round_ in range(args.rounds):
            for concurrency in settings:
                result = run_round(live, slow, concurrency, args.issues, args.timeout, args.processes,
                                   args.py_spy)
                results[concurrency].append(result)
                print(f"round {round_ + 1} concurrency {concurrency}: p50 {result['p50']:.2f} s, "
                      f"p95 {result['p95']:.2f} s, max {result['max']:.2f} s, all reported after "
                      f"{result['all_reported']:.2f} s ({result['github_requests_per_issue']:.1f} GitHub "
                      f"requests per issue), worker CPU {result['cpu_ms']:.0f} ms per delivery, "
                      f"load average {result['load']:.1f}; CPU seconds from webhooks sent to inbox drained: "
                      + ", ".join(f"{part} {seconds:.2f}" for part, seconds in result["cpu_s"].items()), flush=True)
        with Session(engine) as session:
            attempts = set(session.exec(select(Delivery.attempts)).all())
        assert attempts == {1}, f"some delivery needed more than one attempt: {attempts}"
    except BaseException:
        print(bot.log_tail())
        raise
    finally:
        bot.stop_all()
        github.stop()
        engine.dispose()
        if args.database_url:
            _drop_pg_database(args.database_url, url)

    print(f"\n{'PostgreSQL' if args.database_url else 'SQLite'}, "
          f"{args.issues} issues opened at once, {args.processes} worker process(es), GitHub answering in "
          f"{args.github_ms:.0f} ms, "
          f"median (min–max) of {args.rounds} rounds, seconds from webhook sent to report posted:\n")
    print("| worker concurrency | p50 | p95 | max | all reported | worker CPU ms per delivery | load average |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for concurrency, rows in results.items():
        cells = []
        for key in ("p50", "p95", "max", "all_reported", "cpu_ms", "load"):
            values = [r[key] for r in rows]
            fmt = {"cpu_ms": ".0f", "load": ".1f"}.get(key, ".2f")
            cells.append(f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})")
        print(f"| {concurrency} | " + " | ".join(cells) + " |")
    print(json.dumps({str(c): rows for c, rows in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
