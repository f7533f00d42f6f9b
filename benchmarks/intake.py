#!/usr/bin/env python3
"""Webhook intake throughput: signed deliveries/s accepted by `POST /webhook` under gunicorn.

In one run, on 127.0.0.1 only:
1. a bare Flask app with one route answering 200 (the ceiling: Flask + gunicorn + HTTP);
2. `bot:create_app()` on a fresh database (a new SQLite file, or a new database on the
   PostgreSQL server named by --database-url), every request a signed real `issues.opened`
   payload with a unique X-GitHub-Delivery, each committed to the inbox before its 202. Every
   body is unique too (the delivery id is written into it, and the body signed for it): the
   intake refuses a stored body resent under a new delivery id as a replay.

Both are served the same way (gunicorn, --workers on this machine's 2 cores) and driven by the
same bounded load generator: `wrk` when it is installed (apt-get install wrk), else a Python
thread pool with keep-alive sessions. Every run is bounded in request count and in time.
Afterwards the inbox is counted: every 202 must be a stored row.

    .venv/bin/python benchmarks/intake.py
    .venv/bin/python benchmarks/intake.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Goal (issue 18): intake >= 90 % of the bare route's throughput in the documented layout, p99 < 50 ms. A
round still unbalanced after its re-runs is invalid: left out of the medians; with no valid
round for a server no ratio is printed and the exit status is 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-webhook-secret"
PAYLOAD = ROOT / "tests" / "fixtures" / "webhooks" / "issues.opened.json"


def bare_app():
    """The baseline: one Flask route that answers 200 (gunicorn serves `intake:bare_app()`)."""
    from flask import Flask

    app = Flask("bare")

    @app.post("/webhook")
    def webhook():
        return "ok", 200

    return app


def intake_without_store_app():
    """Diagnosis only (`--without-store`): the real intake with the inbox write replaced by
    "stored", so a run shows what everything but the durable write costs. Never a bot."""
    from bot import create_app

    app = create_app()
    app.wsgi_app.group_commit.store = lambda incoming: True
    return app


# ---------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(app_spec: str, port: int, args, env: dict[str, str], cwd: Path, log: Path,
                   code: Path = ROOT) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(args.workers),
        "--worker-class", args.worker_class,
        "--threads", str(args.threads),
        "--bind", f"127.0.0.1:{port}",
        "--backlog", "256",
        "--log-level", "warning",
        "--pythonpath", f"{code},{ROOT / 'benchmarks'}",
        app_spec,
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_until_serving(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)  # our own gunicorn's process group (start_new_session)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


# ---------------------------------------------------------------------------------------------
# database
# ---------------------------------------------------------------------------------------------


class BenchDatabase:
    """A fresh database for one run: a new SQLite file, or a new database on the given server."""

    def __init__(self, base_url: str | None, workdir: Path, name: str = "intake", code: Path = ROOT):
        self.base_url = base_url
        self.created: str | None = None
        if not base_url:
            self.url = f"sqlite:///{workdir / (name + '.sqlite3')}"
        else:
            import psycopg
            from sqlalchemy.engine import make_url

            url = make_url(base_url.replace("postgresql://", "postgresql+psycopg://", 1))
            self.created = f"bk_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.created}"')
            self.url = url.set(database=self.created).render_as_string(hide_password=False)
        if code != ROOT:  # the schema of the tree under test, migrated by that tree
            subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            "from bot.core.db import make_engine; from bot.ops import migrate; "
                            "migrate.upgrade(make_engine(sys.argv[2]))", str(code), self.url], check=True)
        from bot.core.db import make_engine

        self.engine = make_engine(self.url)
        if code == ROOT:
            from bot.ops import migrate

            migrate.upgrade(self.engine)

    def count_prefixes(self, prefixes: list[str]) -> int:
        """Rows stored by the measured runs (their delivery ids start with the run's prefix)."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return sum(conn.execute(text("SELECT count(*) FROM delivery WHERE delivery_id LIKE :p"),
                                    {"p": prefix + "-%"}).scalar_one() for prefix in prefixes)

    def drop(self) -> None:
        self.engine.dispose()
        if self.created:
            import psycopg
            from sqlalchemy.engine import make_url

            admin = make_url(self.base_url.replace("postgresql+psycopg://", "postgresql://", 1))
            with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.created}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------
# load generators
# ---------------------------------------------------------------------------------------------


def signed_request(body: bytes) -> dict[str, str]:
    from bot.intake.webhooks import sign

    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/bench",
        "X-GitHub-Event": "issues",
        "X-GitHub-Hook-ID": "31337",
        "X-Hub-Signature-256": sign(SECRET, body),
    }


def body_parts(body: bytes) -> tuple[bytes, bytes]:
    """(head, tail): head + delivery id + tail is the payload with `"bench_delivery": "<id>"`
    added, so every request's body (and signature) is its own, as GitHub's are."""
    assert body.startswith(b"{")
    return b'{"bench_delivery":"', b'",' + body[1:]


WRK_SCRIPT = r"""
-- Generated by benchmarks/intake.py: unique delivery ids and bodies (the id is written into the
-- body, signed here with libcrypto's HMAC-SHA256 through LuaJIT's FFI); at most `limit` answers
-- per wrk thread (a safety cap: wrk stops sending then, and -d bounds the time).
local ffi = require("ffi")
ffi.cdef[[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d, size_t n,
                    unsigned char *md, unsigned int *md_len);
]]
local crypto = ffi.load("libcrypto.so.3")
local digest, digest_len = ffi.new("unsigned char[32]"), ffi.new("unsigned int[1]")
local head, tail, secret = %(head)s, %(tail)s, %(secret)s
local prefix = %(prefix)s
local limit = %(limit)d
local headers = %(headers)s
local counter, answered, thread_id = 0, 0, 0
local threads = {}

local function sign(body)
  crypto.HMAC(crypto.EVP_sha256(), secret, #secret, body, #body, digest, digest_len)
  local hex = {}
  for i = 0, 31 do hex[i + 1] = string.format("%%02x", digest[i]) end
  return "sha256=" .. table.concat(hex)
end

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local delivery = string.format("%%s-%%d-%%d", prefix, thread_id, counter)
  local body = head .. delivery .. tail
  headers["X-GitHub-Delivery"] = delivery
  headers["X-Hub-Signature-256"] = sign(body)
  return wrk.format("POST", "/webhook", headers, body)
end

function response(status, hdrs, resp_body)
  answered = answered + 1
  if answered >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "non2xx": %%d, "errors": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for this ASCII text


def run_wrk(url: str, body: bytes, seconds: int, cap: int, args, prefix: str, workdir: Path) -> dict:
    """wrk for `seconds` (throughput = answers / seconds), never more than `cap` requests."""
    headers = signed_request(body)
    head, tail = body_parts(body)
    lua_headers = "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"
    script = workdir / f"{prefix}.lua"
    script.write_text(WRK_SCRIPT % {
        "head": _lua_string(head.decode()), "tail": _lua_string(tail.decode()), "secret": _lua_string(SECRET),
        "prefix": _lua_string(prefix), "headers": lua_headers, "limit": max(1, cap // args.wrk_threads),
    })
    used = _children_cpu()
    output = subprocess.run(
        ["wrk", "-t", str(args.wrk_threads), "-c", str(args.concurrency), "-d", f"{seconds}s",
         "--timeout", "5s", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    used = _children_cpu() - used  # wrk's own CPU (the gunicorn children are not waited for yet)
    data = json.loads(output.strip().splitlines()[-1])
    seconds = data["duration_us"] / 1e6
    return {
        "requests": data["requests"],
        "seconds": seconds,
        "per_second": data["requests"] / seconds,
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000,
        "failed": data["non2xx"] + data["errors"],
        "capped": data["requests"] >= cap,  # wrk idled after the cap: per_second understates
        "load_cpu_ms": used / max(1, data["requests"]) * 1000,
    }


def _children_cpu() -> float:
    """User + system CPU seconds of the waited-for child processes so far (here: wrk runs)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_python(url: str, body: bytes, seconds: int, cap: int, args, prefix: str, workdir: Path) -> dict:
    """A thread pool of keep-alive sessions for `seconds`, never more than `cap` requests."""
    from bot.intake.webhooks import sign

    headers = signed_request(body)
    head, tail = body_parts(body)
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    failed = 0
    lock = threading.Lock()
    sequence = iter(range(cap))

    def client(index: int) -> None:
        nonlocal failed
        local_latencies, local_failed = [], 0
        with requests.Session() as http:
            while time.monotonic() < deadline:
                with lock:
                    number = next(sequence, None)
                if number is None:
                    break
                delivery = f"{prefix}-{number}"
                unique = head + delivery.encode() + tail
                signature = sign(SECRET, unique)
                started = time.perf_counter()
                response = http.post(url, data=unique, timeout=5, headers={
                    **headers, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature})
                local_latencies.append(time.perf_counter() - started)
                local_failed += not response.ok
        with lock:
            latencies.extend(local_latencies)
            failed += local_failed

    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(client, range(args.concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": len(latencies), "seconds": seconds, "per_second": len(latencies) / seconds,
            "load_cpu_ms": float("nan"),  # the generator shares this process: not measured
            "p50_ms": percentile(50), "p90_ms": percentile(90), "p99_ms": percentile(99),
            "max_ms": latencies[-1] * 1000 if latencies else 0.0, "failed": failed, "capped": False}


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


class Server:
    """One gunicorn serving `app_spec` on a free port, for the whole run."""

    def __init__(self, name: str, app_spec: str, env: dict[str, str], args, workdir: Path, code: Path = ROOT):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhook"
        self.process = start_gunicorn(app_spec, self.port, args, env, workdir, workdir / f"{name}.log", code)
        self.helpers: set[int] = set()  # processes the workers started (the intake writer)

    def __enter__(self) -> Server:
        wait_until_serving(self.port, self.process)
        return self

    def __exit__(self, *exc) -> None:
        stop(self.process)
        for pid in self.helpers:  # started by a worker in a session of its own: not in gunicorn's group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)

    def cpu(self) -> dict[int, float]:
        """User + system CPU seconds so far of gunicorn's master, each worker and each process a
        worker started (the intake writer) (Linux /proc), by pid: their sum gives CPU per
        request, the workers' spread the balance (helpers are remembered in `self.helpers`)."""
        master = str(self.process.pid)
        fields = _stat_fields(master)
        seconds = {self.process.pid: _cpu(fields) if fields else 0.0}
        parents: dict[str, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = _stat_fields(entry.name)
                if fields:
                    parents.setdefault(fields[1], []).append(entry.name)
                    seconds[int(entry.name)] = _cpu(fields)
        workers = set(parents.get(master, []))
        for worker in workers:
            self.helpers.update(int(pid) for pid in parents.get(worker, []))
        keep = {self.process.pid, *map(int, workers), *self.helpers}
        return {pid: value for pid, value in seconds.items() if pid in keep}


def _stat_fields(pid: str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def balance(before: dict[int, float], after: dict[int, float], skip: set[int]) -> float:
    """How evenly the workers shared a run: the least busy worker's CPU over the busiest's."""
    used = [after[pid] - before.get(pid, 0.0) for pid in after if pid not in skip]
    return min(used) / max(used) if len(used) > 1 and max(used) > 0 else 1.0


BALANCED = 0.5  # a run whose least busy worker used under half the busiest one's CPU is unbalanced


def summarize(name: str, rounds: list[dict]) -> dict:
    """Medians over the valid rounds: a shared machine's noise hits one round, not the result.

    A round still unbalanced after its re-runs measured the connection spread, not the app: it
    is left out of the medians and counted as invalid. With no valid round at all the figures
    are the invalid rounds' and `valid` is False (no ratio is reported from them).
    """
    valid = [r for r in rounds if r["valid"]]
    used = valid or rounds
    result = {key: statistics.median(r[key] for r in used)
              for key in ("per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms", "seconds", "cpu_ms", "load_cpu_ms")}
    per_second = [r["per_second"] for r in valid]
    result.update(name=name, requests=sum(r["requests"] for r in rounds), failed=sum(r["failed"] for r in rounds),
                  capped=any(r["capped"] for r in rounds), rounds=rounds,
                  remeasured=sum(r["attempts"] - 1 for r in rounds),
                  invalid=len(rounds) - len(valid), valid=bool(valid),
                  per_second_min=min(per_second) if per_second else None,
                  per_second_max=max(per_second) if per_second else None)
    return result


def invalid_note(result: dict) -> str:
    return f"  ({result['invalid']} round(s) invalid, left out)" if result["invalid"] and result["valid"] else ""


def run_rounds(servers: list[Server], body: bytes, args, workdir: Path, load) -> dict[str, list[dict]]:
    """Warm every server up, then measure them in turn, `--rounds` times (ABAB…), so slow
    minutes on a shared machine fall on both alike."""
    results: dict[str, list[dict]] = {server.name: [] for server in servers}
    for server in servers:
        load(server.url, body, args.warmup_seconds, args.max_requests, args, f"{server.name}-warmup", workdir)
    for round_number in range(args.rounds):
        for server in servers:
            results[server.name].append(measure(server, body, args, workdir, load, round_number))
    return results


def measure(server: Server, body: bytes, args, workdir: Path, load, round_number: int) -> dict:
    """One measured run. The load's keep-alive connections are opened at once and each stays
    with the worker that accepted it; now and then one worker takes (nearly) all of them and
    the other idles, which halves throughput whatever the app does. Such a run (a worker
    with under half the busiest one's CPU) is measured again, up to --balance-attempts times,
    for every server alike."""
    for attempt in range(1, args.balance_attempts + 1):
        prefix = f"{server.name}-r{round_number}-{uuid.uuid4().hex[:8]}"
        before = server.cpu()
        result = load(server.url, body, args.seconds, args.max_requests, args, prefix, workdir)
        after = server.cpu()
        result["cpu_ms"] = (sum(after.values()) - sum(before.values())) / max(1, result["requests"]) * 1000
        result["balance"] = balance(before, after, {server.process.pid, *server.helpers})
        result["prefix"], result["attempts"] = prefix, attempt
        print(f"  round {round_number + 1} {server.name:7} {result['per_second']:7.0f}/s "
              f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
              f"server CPU {result['cpu_ms']:.2f} ms/request  worker balance {result['balance']:.2f}",
              file=sys.stderr)
        # One worker process cannot be unbalanced; several must each have done their share.
        result["valid"] = args.workers == 1 or result["balance"] >= BALANCED
        if result["valid"]:
            break
    if not result["valid"]:
        print(f"  round {round_number + 1} {server.name}: still unbalanced after {args.balance_attempts} runs: "
              "INVALID, left out of the medians", file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL server to run on (a fresh database is created and dropped); "
                             "default: a new SQLite file")
    parser.add_argument("--seconds", type=int, default=8, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per server (medians reported)")
    parser.add_argument("--warmup-seconds", type=int, default=2, help="load before each measured run")
    parser.add_argument("--max-requests", type=int, default=150_000, help="cap on requests per run")
    parser.add_argument("--concurrency", type=int, default=16, help="open connections")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn worker processes (default: the documented layout, 1 on SQLite, 2 on PostgreSQL)")
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per gthread worker (default: 8 on SQLite, 4 on PostgreSQL)")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--balance-attempts", type=int, default=3,
                        help="runs per measurement while one worker got (nearly) all connections")
    parser.add_argument("--code", type=Path, default=ROOT, metavar="DIR",
                        help="the source tree whose intake is measured (default: this one)")
    parser.add_argument("--compare", type=Path, default=None, metavar="DIR",
                        help="also measure the intake of this tree (e.g. main's, from git archive), on a "
                             "database of its own, in the same rounds: before/after in one run")
    parser.add_argument("--intake-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the intake server (repeatable)")
    parser.add_argument("--compare-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the --compare server (repeatable; alone, it compares "
                             "this tree with other settings)")
    parser.add_argument("--without-store", action="store_true",
                        help="also measure the intake with its inbox write skipped (where the time goes)")
    args = parser.parse_args()
    # SQLite: one process (deploy/gunicorn.conf.py's default there, and `beekeeper serve`):
    # two processes fight for the database's single write lock.
    if args.workers is None:
        args.workers = 2 if args.database_url else 1
    if args.threads is None:
        args.threads = 4 if args.database_url else 8

    use_wrk = args.load == "wrk" or (args.load == "auto" and shutil.which("wrk"))
    load = run_wrk if use_wrk else run_python
    body = json.dumps(json.loads(PAYLOAD.read_text()), separators=(",", ":")).encode()

    code, compare = args.code.resolve(), args.compare.resolve() if args.compare else None
    if args.compare_env and compare is None:
        compare = ROOT
    workdir = Path(tempfile.mkdtemp(prefix="bk-bench-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("BEEKEEPER_")}
    databases: dict[str, BenchDatabase] = {}

    def bot_env(name: str, tree: Path, extra: list[str]) -> dict[str, str]:
        database = databases[name] = BenchDatabase(args.database_url, workdir, name, tree)
        return {**base_env, "BEEKEEPER_DATABASE_URL": database.url, "BEEKEEPER_WEBHOOK_SECRET": SECRET,
                "BEEKEEPER_SECRET_KEY": "bench", "BEEKEEPER_INSTANCE_PATH": str(workdir / f"instance-{name}"),
                **dict(item.split("=", 1) for item in extra)}

    stored: dict[str, int] = {}
    try:
        with contextlib.ExitStack() as servers:
            started = [servers.enter_context(Server("bare", "intake:bare_app()", base_env, args, workdir)),
                       servers.enter_context(Server("intake", "bot:create_app()",
                                                    bot_env("intake", code, args.intake_env), args, workdir, code))]
            if compare is not None:
                started.append(servers.enter_context(Server(
                    "compare", "bot:create_app()", bot_env("compare", compare, args.compare_env), args, workdir,
                    compare)))
            if args.without_store:
                started.append(servers.enter_context(Server(
                    "nostore", "intake:intake_without_store_app()", bot_env("nostore", code, args.intake_env), args,
                    workdir, code)))
            results = run_rounds(started, body, args, workdir, load)
        for name in ("intake", "compare"):
            if name in results:
                stored[name] = databases[name].count_prefixes([r["prefix"] for r in results[name]])
    finally:
        for database in databases.values():
            database.drop()
    summaries = {name: summarize(name, rounds) for name, rounds in results.items()}
    bare, intake = summaries["bare"], summaries["intake"]

    backend = "PostgreSQL" if args.database_url else "SQLite"
    valid = bare["valid"] and intake["valid"]
    ratio = intake["per_second"] / bare["per_second"]
    print(f"\nintake benchmark — {backend}, gunicorn {args.workers}×{args.worker_class}"
          f"{f' ({args.threads} threads)' if args.worker_class == 'gthread' else ''}, "
          f"{args.concurrency} connections, load: {'wrk' if use_wrk else 'python'}, "
          f"payload {len(body)} bytes, {os.cpu_count()} cores, median of {args.rounds} rounds × {args.seconds} s")
    print(f"intake: {code}{' ' + ' '.join(args.intake_env) if args.intake_env else ''}")
    if compare is not None:
        print(f"compare: {compare}{' ' + ' '.join(args.compare_env) if args.compare_env else ''}")
    print(f"{'':8} {'requests':>9} {'per s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'failed':>7} {'CPU ms/req':>11} {'load CPU':>9}")
    for r in summaries.values():
        spread = (f"  ({r['per_second_min']:.0f}–{r['per_second_max']:.0f}/s over {len(r['rounds']) - r['invalid']}"
                  " valid rounds)" if r["valid"] else "  NO VALID ROUND")
        print(f"{r['name']:8} {r['requests']:>9} {r['per_second']:>9.0f} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f} {r['max_ms']:>8.1f} {r['failed']:>7} {r['cpu_ms']:>11.2f} "
              f"{r['load_cpu_ms']:>9.2f}{spread}"
              f"{invalid_note(r)}"
              f"{'  (request cap reached: raise --max-requests)' if r['capped'] else ''}")
    if valid:
        print(f"ratio intake/bare: {ratio:.0%} (issue 18 goal ≥ 90%: {'met' if ratio >= 0.90 else 'MISSED'}); "
              f"intake p99 {intake['p99_ms']:.1f} ms (goal < 50 ms: {'met' if intake['p99_ms'] < 50 else 'MISSED'})")
    else:
        print("INVALID RUN: a server had no balanced round (one gunicorn worker took the connections every "
              "time), so no ratio is reported; run again or with --workers 1")
    for name, label in (("compare", "compare"), ("nostore", "without the inbox write (diagnosis)")):
        other = summaries.get(name)
        if other and other["valid"] and bare["valid"]:
            print(f"{label}: {other['per_second'] / bare['per_second']:.0%} of the bare route")
    missing = False
    for name, count in stored.items():
        accepted = summaries[name]["requests"] - summaries[name]["failed"]
        missing = missing or count < accepted or summaries[name]["failed"] > 0
        print(f"{name}: inbox rows stored: {count} for {accepted} accepted answers "
              f"({'every 202 stored' if count >= accepted else 'ROWS MISSING'})")
    if args.json:
        print(json.dumps({"backend": backend, **summaries, "ratio": ratio if valid else None,
                          "valid": valid, "stored": stored}, default=str))
    shutil.rmtree(workdir, ignore_errors=True)
    if missing:
        return 1
    return 0 if valid else 2  # 2: nothing wrong with the bot, but the measurement is not usable


if __name__ == "__main__":
    sys.exit(main())
