#!/usr/bin/env python3
"""The allowlist at scale: --grants grants (two keys and two domains each), on 127.0.0.1 only.

1. Bulk-inserts the grants, domains, keys and change log into a fresh database (a new SQLite
   file, or a new database on the PostgreSQL server named by --database-url).
2. In process: time to build the full document (median of 3, each with a cold cache), its size
   plain, gzip (as served) and signed; time and size of a delta after one change.
3. Under gunicorn (`allowlist:bench_app()` = `bot:create_app()` plus one route serving a static
   copy of the document through the same server): requests/s for the 304 path and the full
   path, each beside the static file of the same size (200 and 304), same server, same run,
   rounds alternating; load from `wrk` (bounded by time and connections; apt-get install wrk).
4. Propagation with a real poll interval: a gateway client holding every grant polls the
   gunicorn server every --poll-interval seconds in its background thread; a key is revoked
   (row marked, version bumped, as bot.access.keys does) and the time until check() refuses it is
   measured, --samples times.

    .venv/bin/python benchmarks/allowlist.py
    .venv/bin/python benchmarks/allowlist.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from intake import (  # noqa: E402
    BenchDatabase,
    _cpu,
    _stat_fields,
    balance,
    free_port,
    start_gunicorn,
    stop,
    wait_until_serving,
)

STATIC_ROUTE = "/static-copy"
FLASK_VIEW_ROUTE = "/flask-view/v1/allowlist"  # the same view, reached through Flask (no fast path)
V2 = "application/vnd.beekeeper.allowlist+json;format=2"


def bench_app():
    """What gunicorn serves: the bot, plus a static copy of the document (BENCH_STATIC_FILE)."""
    from flask import send_file

    from bot import create_app

    app = create_app()
    path = os.environ["BENCH_STATIC_FILE"]
    app.add_url_rule(STATIC_ROUTE, "static_copy",
                     lambda: send_file(path, mimetype="application/json", conditional=True, etag=True, max_age=0))
    app.add_url_rule(FLASK_VIEW_ROUTE, "flask_view", app.view_functions["allowlist.allowlist_document"])
    return app


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def bulk_insert(engine, grants: int, sampled: int) -> dict[int, str]:
    """Insert everything with multi-row INSERTs; returns plaintext secret keys of `sampled` grants."""
    from sqlalchemy import insert, update

    from beekeeper_gateway import keyformat
    from bot.core.models import AllowlistChange, AllowlistCounter, ApiKey, Grant, GrantDomain

    now = datetime.now(UTC)
    sample_ids = set(random.Random(7).sample(range(1, grants + 1), sampled))
    plaintexts: dict[int, str] = {}
    chunk = 5000
    with engine.begin() as conn:
        for start in range(1, grants + 1, chunk):
            ids = range(start, min(start + chunk, grants + 1))
            conn.execute(insert(Grant), [
                {"id": i, "app_id": f"app-{i}", "tier": ("seed", "flower", "nectar")[i % 3], "status": "active",
                 "github_user_id": i, "github_login": f"user{i}", "approved_by": "bench", "source": "cli",
                 "created_at": now, "updated_at": now, "version": i, "claimable": False} for i in ids])
            conn.execute(insert(GrantDomain), [
                {"grant_id": i, "domain": domain, "active": True, "created_at": now}
                for i in ids for domain in (f"app{i}.example.com", f"*.app{i}.example.net")])
            keys = []
            for i in ids:
                for kind in ("secret", "publishable"):
                    if i in sample_ids and kind == "secret":
                        plaintexts[i] = keyformat.generate("bk", "sk")
                        digest = keyformat.sha256_hex(plaintexts[i])
                    else:
                        digest = os.urandom(32).hex()
                    keys.append({"grant_id": i, "kind": kind, "sha256": digest, "display": "bk_xx_…",
                                 "created_at": now})
            conn.execute(insert(ApiKey), keys)
            conn.execute(insert(AllowlistChange), [
                {"version": i, "grant_id": i, "app_id": f"app-{i}", "change": "created", "at": now} for i in ids])
        conn.execute(update(AllowlistCounter).where(AllowlistCounter.id == 1).values(version=grants))
    return plaintexts


def revoke_secret_key(engine, grant_id: int) -> int:
    """What revoking a key does: the row marked revoked, the allowlist version bumped."""
    from sqlmodel import Session, select

    from bot.allowlist import versioning
    from bot.core.clock import utcnow
    from bot.core.models import ApiKey, Grant

    with Session(engine) as session:
        key = session.exec(select(ApiKey).where(ApiKey.grant_id == grant_id, ApiKey.kind == "secret")).one()
        key.revoked_at, key.revoke_reason = utcnow(), "benchmark"
        session.add(key)
        version = versioning.bump(session, session.get(Grant, grant_id), "key")
        session.commit()
    return version


# ---------------------------------------------------------------------------------------------
# in-process document figures
# ---------------------------------------------------------------------------------------------


def median_time(function, times: int = 3):
    results, durations = None, []
    for _ in range(times):
        started = time.perf_counter()
        results = function()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations), results


def document_figures(engine, policy) -> dict:
    from sqlmodel import Session

    from bot.allowlist import serving as allowlist
    from bot.allowlist import signing, versioning
    from bot.core.db import refresh_statistics

    # Right after the bulk load, before anything refreshed the statistics: a delta as the first
    # poll after an import would get it on PostgreSQL without refresh_statistics (the before).
    with Session(engine) as session:
        loaded_version = versioning.current_version(session)
    revoke_secret_key(engine, 2)

    def first_delta():
        with Session(engine) as session:
            return allowlist.build_delta(session, policy, loaded_version)

    delta_unanalysed_s, _ = median_time(first_delta)
    started = time.perf_counter()
    refresh_statistics(engine)  # what an import, `db copy` and the worker now do
    refresh_s = time.perf_counter() - started
    delta_analysed_s, _ = median_time(first_delta)

    def full():
        with Session(engine) as session:
            return allowlist.build_full(session, policy)

    build_seconds, (stamp, body) = median_time(full)
    gzip_seconds, zipped = median_time(lambda: allowlist.gzip_bytes(body), 1)
    with Session(engine, expire_on_commit=False) as session:
        key = signing.ensure_key(session)
        session.commit()
    sign_seconds, token = median_time(lambda: signing.sign(body, key), 1)

    with Session(engine) as session:
        since = versioning.current_version(session)
    revoke_secret_key(engine, 1)

    def delta():
        with Session(engine) as session:
            return allowlist.build_delta(session, policy, since)

    delta_seconds, (_, delta_body) = median_time(delta)
    figures = {"build_s": build_seconds, "plain_bytes": len(body), "gzip_bytes": len(zipped), "gzip_s": gzip_seconds,
               "jws_bytes": len(token), "sign_s": sign_seconds, "delta_s": delta_seconds,
               "delta_bytes": len(delta_body), "body": body, "delta_unanalysed_s": delta_unanalysed_s,
               "delta_analysed_s": delta_analysed_s, "refresh_s": refresh_s}
    if hasattr(allowlist, "zstd_bytes"):  # format 2 (issue 18)

        def full_v2():
            with Session(engine) as session:
                return allowlist.build_full(session, policy, fmt=2)

        figures["v2_build_s"], (_, v2) = median_time(full_v2)
        figures["v2_plain_bytes"] = len(v2)
        figures["v2_sign_s"], _ = median_time(lambda: signing.sign_detached(v2, key), 1)
        figures["v2_zstd_s"], v2_zstd = median_time(lambda: allowlist.zstd_bytes(v2), 1)
        figures["v2_gzip_s"], v2_gzip = median_time(lambda: allowlist.gzip_bytes(v2), 1)
        figures["v2_zstd_bytes"], figures["v2_gzip_bytes"] = len(v2_zstd), len(v2_gzip)
        figures["v1_zstd_bytes"] = len(allowlist.zstd_bytes(body))
    return figures


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------

WRK_REPORT = r"""
function done(summary, latency, requests)
  io.write(string.format('{"requests": %d, "duration_us": %d, "bad_status": %d, "errors": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.bytes, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(url: str, headers: dict[str, str], seconds: int, connections: int, script: Path) -> dict:
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s", "-s", str(script)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], capture_output=True, text=True, timeout=seconds + 60,
                            check=True).stdout
    data = json.loads(output.strip().splitlines()[-1])
    duration = data["duration_us"] / 1e6
    return {"per_second": data["requests"] / duration, "requests": data["requests"], "p50_ms": data["p50_us"] / 1e3,
            "p99_ms": data["p99_us"] / 1e3, "failed": data["bad_status"] + data["errors"],
            "mb_per_second": data["bytes"] / duration / 1e6}


def etag_of(url: str, headers: dict[str, str]) -> str:
    import requests

    # identity unless the run asks otherwise: wrk sends only the headers given
    response = requests.get(url, headers={"Accept-Encoding": "identity", **headers}, timeout=120)
    response.raise_for_status()
    return response.headers["ETag"]


def server_cpu(master: int) -> dict[int, float]:
    """CPU seconds of gunicorn's master and each worker, by pid (as benchmarks/intake.py reads them)."""
    fields = _stat_fields(str(master))
    seconds = {master: _cpu(fields) if fields else 0.0}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields and fields[1] == str(master):
                seconds[int(entry.name)] = _cpu(fields)
    return seconds


def balanced_run(master: int, url: str, headers: dict[str, str], seconds: int, connections: int, script: Path,
                 attempts: int) -> dict:
    """One wrk run whose load both workers shared. wrk's keep-alive connections stay with the
    worker that accepted them, and now and then one worker takes nearly all of them: a run in
    which a worker used under half the busiest one's CPU is measured again, up to `attempts`
    times; one still unbalanced is marked `valid: False` and left out of the medians."""
    for attempt in range(1, attempts + 1):
        before = server_cpu(master)
        result = run_wrk(url, headers, seconds, connections, script)
        after = server_cpu(master)
        result["balance"] = balance(before, after, master)
        result["cpu_ms"] = (sum(after.values()) - sum(before.values())) / max(1, result["requests"]) * 1000
        result["attempts"], result["valid"] = attempt, result["balance"] >= 0.5
        if result["valid"]:
            break
    return result


# ---------------------------------------------------------------------------------------------
# propagation
# ---------------------------------------------------------------------------------------------


def propagation(engine, url: str, credential: str, plaintexts: dict[int, str], poll_interval: float,
                samples: int) -> dict:
    from beekeeper_gateway import AllowlistClient

    client = AllowlistClient(url, credential, poll_interval=poll_interval, timeout=120)
    started = time.perf_counter()
    client.poll()
    first_load = time.perf_counter() - started
    client.start()
    delays = []
    try:
        for grant_id in list(plaintexts)[1 : samples + 1]:
            key = plaintexts[grant_id]
            assert client.check(key=key).allowed, "the sampled key should be allowed before its revoke"
            time.sleep(random.uniform(0, poll_interval))  # land anywhere between two polls
            revoke_secret_key(engine, grant_id)
            revoked = time.perf_counter()
            while client.check(key=key).allowed:
                if time.perf_counter() - revoked > 10 * poll_interval + 30:
                    raise SystemExit("the revoke never reached the client")
                time.sleep(0.001)
            delays.append(time.perf_counter() - revoked)
    finally:
        client.stop()
    return {"first_load_s": first_load, "delays_s": delays, "grants_held": client.grant_count}


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--seconds", type=int, default=5, help="length of each measured load run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for the 304 runs")
    parser.add_argument("--full-connections", type=int, default=2, help="wrk connections for the full-body runs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=5, help="revokes timed for propagation")
    parser.add_argument("--balance-attempts", type=int, default=3,
                        help="re-runs of a load run in which one worker idled (see balanced_run)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the load runs: apt-get install wrk")

    from bot.allowlist import gateways
    from bot.core.config import load_policy

    policy = load_policy()
    workdir = Path(tempfile.mkdtemp(prefix="bk-allowlist-"))
    database = BenchDatabase(args.database_url, workdir)
    server = None
    try:
        print(f"inserting {args.grants} grants…", file=sys.stderr)
        insert_seconds, plaintexts = median_time(lambda: bulk_insert(database.engine, args.grants, args.samples + 2), 1)
        figures = document_figures(database.engine, policy)
        static_file = workdir / "allowlist.json"
        static_file.write_bytes(figures.pop("body"))
        from sqlmodel import Session

        with Session(database.engine) as session:
            _, credential = gateways.add(session, "bench", "bk", "bench")
            session.commit()

        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEEKEEPER_")}
        env.update(BEEKEEPER_DATABASE_URL=database.url, BEEKEEPER_SECRET_KEY="bench",
                   BEEKEEPER_INSTANCE_PATH=str(workdir / "instance"), BENCH_STATIC_FILE=str(static_file))
        server = start_gunicorn("allowlist:bench_app()", port, args, env, workdir, workdir / "gunicorn.log")
        wait_until_serving(port, server)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {credential}"}
        script = workdir / "report.lua"
        script.write_text(WRK_REPORT)

        print("warming up (each worker builds the document once)…", file=sys.stderr)
        run_wrk(f"{base}/v1/allowlist", auth, 3, args.workers * args.threads, script)
        allowlist_etag = etag_of(f"{base}/v1/allowlist", auth)
        static_etag = etag_of(f"{base}{STATIC_ROUTE}", {})
        runs = {
            "allowlist 304": (f"{base}/v1/allowlist", {**auth, "If-None-Match": allowlist_etag}, args.connections),
            "static 304": (f"{base}{STATIC_ROUTE}", {"If-None-Match": static_etag}, args.connections),
            "allowlist full": (f"{base}/v1/allowlist", auth, args.full_connections),
            "static full": (f"{base}{STATIC_ROUTE}", {}, args.full_connections),
        }
        from bot.allowlist import serving as served

        if hasattr(served, "AllowlistFastPath"):  # issue 18: the same 304 through Flask; format 2 zstd
            runs["304 via Flask view"] = (f"{base}{FLASK_VIEW_ROUTE}", {**auth, "If-None-Match": allowlist_etag},
                                          args.connections)
            v2 = {**auth, "Accept": V2, "Accept-Encoding": "zstd"}
            run_wrk(f"{base}/v1/allowlist", v2, 3, args.workers * args.threads, script)  # build it in each worker
            runs["allowlist full f2 zstd"] = (f"{base}/v1/allowlist", v2, args.full_connections)
        results: dict[str, list[dict]] = {name: [] for name in runs}
        for round_number in range(args.rounds):
            for name, (url, headers, connections) in runs.items():
                result = balanced_run(server.pid, url, headers, args.seconds, connections, script,
                                      args.balance_attempts)
                results[name].append(result)
                print(f"  round {round_number + 1} {name:22} {result['per_second']:9.1f}/s "
                      f"p50 {result['p50_ms']:8.2f} ms  failed {result['failed']}  balance {result['balance']:.2f}"
                      f"{'' if result['valid'] else ' (INVALID: unbalanced after retries)'}", file=sys.stderr)

        print(f"propagation: a client polling every {args.poll_interval:g} s…", file=sys.stderr)
        spread = propagation(database.engine, f"{base}/v1/allowlist", credential, plaintexts, args.poll_interval,
                             args.samples)
    finally:
        if server is not None:
            stop(server)
        database.drop()

    invalid = {name: sum(not r["valid"] for r in rounds) for name, rounds in results.items()}
    kept = {name: [r for r in rounds if r["valid"]] or rounds for name, rounds in results.items()}
    medians = {name: {key: statistics.median(r[key] for r in rounds) for key in ("per_second", "p50_ms", "p99_ms",
                                                                                  "mb_per_second", "failed")}
               for name, rounds in kept.items()}
    spreads = {name: (min(r["per_second"] for r in rounds), max(r["per_second"] for r in rounds))
               for name, rounds in kept.items()}
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\nallowlist benchmark — {args.grants} grants (2 keys, 2 domains each), {backend}, {os.cpu_count()} cores, "
          f"gunicorn {args.workers}×{args.worker_class}"
          f"{f' ({args.threads} threads)' if args.worker_class == 'gthread' else ''}, wrk, "
          f"median of {args.rounds} rounds × {args.seconds} s")
    print(f"bulk insert: {insert_seconds:.1f} s ({args.grants * 6 / insert_seconds:,.0f} rows/s)")
    print(f"full document: built in {figures['build_s']:.2f} s; {figures['plain_bytes'] / 1e6:.1f} MB plain, "
          f"{figures['gzip_bytes'] / 1e6:.1f} MB gzip ({figures['gzip_s']:.2f} s), "
          f"{figures['jws_bytes'] / 1e6:.1f} MB signed ({figures['sign_s']:.2f} s)")
    if "v2_plain_bytes" in figures:
        print(f"format 2: built in {figures['v2_build_s']:.2f} s; {figures['v2_plain_bytes'] / 1e6:.1f} MB plain, "
              f"{figures['v2_zstd_bytes'] / 1e6:.1f} MB zstd ({figures['v2_zstd_s']:.2f} s), "
              f"{figures['v2_gzip_bytes'] / 1e6:.1f} MB gzip ({figures['v2_gzip_s']:.2f} s), detached signature in "
              f"{figures['v2_sign_s']:.2f} s; format 1 zstd {figures['v1_zstd_bytes'] / 1e6:.1f} MB")
    print(f"first delta right after the bulk load: {figures['delta_unanalysed_s'] * 1000:.1f} ms without statistics, "
          f"{figures['delta_analysed_s'] * 1000:.1f} ms after refresh_statistics ({figures['refresh_s']:.2f} s)")
    print(f"delta after one change: {figures['delta_s'] * 1000:.1f} ms, {figures['delta_bytes']} bytes")
    print(f"{'':22} {'req/s':>10} {'spread req/s':>17} {'p50 ms':>9} {'p99 ms':>9} {'MB/s':>8} {'failed':>7} "
          f"{'invalid':>7}")
    for name, m in medians.items():
        low, high = spreads[name]
        print(f"{name:22} {m['per_second']:>10.1f} {f'{low:.0f}–{high:.0f}':>17} {m['p50_ms']:>9.2f} "
              f"{m['p99_ms']:>9.2f} {m['mb_per_second']:>8.0f} {m['failed']:>7.0f} {invalid[name]:>7}")
    rate = {name: m["per_second"] for name, m in medians.items()}
    print(f"ratio allowlist/static: 304 path {rate['allowlist 304'] / rate['static 304']:.0%}, "
          f"full path {rate['allowlist full'] / rate['static full']:.0%}"
          + (f"; 304 through the Flask view {rate['304 via Flask view'] / rate['static 304']:.0%}"
             if "304 via Flask view" in rate else ""))
    if any(invalid.values()):
        print(f"INVALID runs (a worker idle after {args.balance_attempts} attempts), left out of the medians: "
              f"{ {name: count for name, count in invalid.items() if count} }")
    delays = spread["delays_s"]
    print(f"propagation (poll every {args.poll_interval:g} s, client holding {spread['grants_held']} grants, first "
          f"load {spread['first_load_s']:.1f} s): revoke → refused in median {statistics.median(delays):.2f} s, "
          f"max {max(delays):.2f} s over {len(delays)} revokes")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
