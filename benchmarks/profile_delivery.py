#!/usr/bin/env python3
"""Where a worker's CPU goes: N valid `issues.opened` deliveries reviewed in process, profiled.

The same pieces as worker_burst.py, in one process: GitHub is tests/fakegithub.FakeGitHub served
by werkzeug on 127.0.0.1 (every answer delayed by `--github-ms`, as worker_burst.py does), the
deliveries are stored through the real `/webhook` (Flask test client), and one `Worker` with
concurrency 1 processes them in this thread, so `time.thread_time()` is the worker's own CPU
(the fake GitHub's threads are not counted). One warm-up delivery first (a running worker has
its installation token and lazily loaded data already), then `--issues` deliveries under
cProfile (or without it, `--no-profile`, for the CPU figure alone).

    .venv/bin/python benchmarks/profile_delivery.py                      # SQLite in a temp dir
    .venv/bin/python benchmarks/profile_delivery.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/profile_delivery.py --no-profile --rounds 5   # CPU ms per delivery only
    .venv/bin/python benchmarks/profile_delivery.py --no-profile --code /tmp/before   # another tree's `bot`

Prints CPU ms and wall ms per delivery (medians over `--rounds`), then the profile's top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if "--code" in sys.argv:  # `bot` from another source tree (before/after in one session), ahead of this one
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--code") + 1]).resolve()))


DELIVERY_MARK = "---- delivery"


def _print_trace(statements: list[str], count: int) -> None:
    """Counts per delivery (everything the round did, claims included, divided by the
    deliveries), then the last delivery's own lines, from its marker to the next."""
    sql = [s for s in statements if s != DELIVERY_MARK and not s.startswith(("pool checkout", "BEGIN", "COMMIT",
                                                                                 "ROLLBACK"))]
    ends = sum(s in ("COMMIT", "ROLLBACK") for s in statements)
    checkouts = [s for s in statements if s.startswith("pool checkout")]
    pings = sum("pre-ping" in s for s in checkouts)
    print(f"per delivery: {len(sql) / count:.1f} SQL statements, {ends / count:.1f} COMMIT/ROLLBACK, "
          f"{len(checkouts) / count:.1f} pool checkouts ({pings / count:.1f} pre-pings)")
    marks = [i for i, s in enumerate(statements) if s == DELIVERY_MARK]
    if len(marks) >= 2:
        print("the last but one delivery's (up to the next delivery's start):")
        print("\n".join(statements[marks[-2] + 1:marks[-1]]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="", help="a PostgreSQL server (a database is created on it); "
                                                           "SQLite in a temporary directory if not given")
    parser.add_argument("--issues", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--github-ms", type=float, default=20.0)
    parser.add_argument("--no-profile", action="store_true", help="measure CPU only (cProfile adds overhead)")
    parser.add_argument("--top", type=int, default=35, help="functions shown, by cumulative and by own time")
    parser.add_argument("--trace-sql", action="store_true",
                        help="count SQL statements per delivery; list one delivery's, with the bot/ line of each")
    parser.add_argument("--code", type=Path, default=None, metavar="DIR",
                        help="profile the `bot` package of another source tree (e.g. `git archive` of an earlier "
                             "commit)")
    parser.add_argument("--save", type=Path, default=None, help="also write the profile (pstats) to this file")
    args = parser.parse_args()

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from benchmarks.worker_burst import SlowGitHub
    from bot import create_app
    from bot.core.config import Settings, load_policy
    from bot.core.db import make_engine
    from bot.github.client import GitHubApp
    from bot.intake.runtime import Runtime
    from bot.intake.worker import Worker
    from bot.ops import migrate
    from tests.conftest import WEBHOOK_SECRET, _create_pg_database, _drop_pg_database, deliver
    from tests.fault.harness import GitHubServer, file_request

    workdir = Path(tempfile.mkdtemp(prefix="bk-profile-"))
    if args.database_url:
        url = _create_pg_database(args.database_url)
    else:
        url = f"sqlite:///{workdir / 'beekeeper.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    github = GitHubServer()
    slow = SlowGitHub(github.chaos.app, args.github_ms / 1000)
    github.chaos.app = slow
    github.start()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    (workdir / "policy.yml").write_text("reconcile_interval_minutes: 0\n")
    settings = Settings(database_url=url, github_api_url=github.api_url, github_url=github.web_url,
                        github_app_id="424242", github_private_key=key, webhook_secret=WEBHOOK_SECRET,
                        secret_key="bench-secret-key", public_url="http://127.0.0.1:8000",
                        policy_path=str(workdir / "policy.yml"), instance_path=str(workdir / "instance"))
    runtime = Runtime(settings=settings, policy=load_policy(settings.policy_path), engine=engine,
                      github=GitHubApp.from_settings(settings))
    client = create_app(runtime).test_client()
    worker = Worker(runtime, name="profile-worker", concurrency=1)
    fake = github.fake
    statements: list[str] = []
    if args.trace_sql:
        import traceback

        from sqlalchemy import event

        @event.listens_for(engine, "before_cursor_execute")
        def _trace(conn, cursor, statement, parameters, context, executemany):
            frames = [f for f in traceback.extract_stack() if "/bot/" in f.filename]
            where = f"{frames[-1].filename.split('/bot/')[1]}:{frames[-1].lineno} {frames[-1].name}" if frames else "?"
            statements.append(f"{where:45} {' '.join(statement.split())[:110]}")

        @event.listens_for(engine, "commit")
        def _commit(conn):
            statements.append("COMMIT")

        @event.listens_for(engine, "begin")
        def _begin(conn):
            statements.append("BEGIN")

        @event.listens_for(engine, "rollback")
        def _rollback(conn):
            statements.append("ROLLBACK")

        @event.listens_for(engine.pool, "checkout")
        def _checkout(dbapi_connection, record, proxy):
            ping = " + pre-ping (a round trip)" if engine.pool._pre_ping else ""
            statements.append(f"pool checkout{ping}")

        # Each delivery's statements start at a marker (the same wrapper for any tree's `process`).
        from bot.intake import inbox

        real_process = inbox.process

        def marked_process(*args, **kwargs):
            statements.append(DELIVERY_MARK)
            return real_process(*args, **kwargs)

        inbox.process = marked_process
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    # CPU time, not wall time: the profile shows what the worker computes, not what it waits for.
    profile = cProfile.Profile(time.thread_time)
    # The only installed repository, so it is served without a policy list (bot.core.served).
    repo = f"bench/profile-{uuid.uuid4().hex[:8]}"
    fake.installation_repos[:] = [repo]
    first = 1
    try:
        for round_ in range(args.rounds + 1):  # round 0: the warm-up delivery
            count = 1 if round_ == 0 else args.issues
            numbers = range(first, first + count)
            first += count
            for n in numbers:
                payload = file_request(fake, repo, n)
                assert deliver(client, "issues", payload, delivery_id=str(uuid.uuid4())).status_code == 202
            statements.clear()
            cpu, wall = time.thread_time(), time.perf_counter()
            if round_ and not args.no_profile:
                profile.enable()
            done = worker.run_once()
            if round_ and not args.no_profile:
                profile.disable()
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            assert done == count, (done, count)
            reported = sum(1 for n in numbers if (repo, n) in slow.reported)
            assert reported == count, f"{reported} of {count} reports posted"
            if round_ and args.trace_sql:
                _print_trace(statements, count)
            if round_:
                cpu_ms.append(cpu * 1000 / count)
                wall_ms.append(wall * 1000 / count)
                print(f"round {round_}: {cpu * 1000 / count:.1f} ms CPU, {wall * 1000 / count:.1f} ms wall per "
                      "delivery", flush=True)
    finally:
        github.stop()
        engine.dispose()
        if args.database_url:
            _drop_pg_database(args.database_url, url)
    dialect = "PostgreSQL" if args.database_url else "SQLite"
    import bot

    print(f"\nbot from {Path(bot.__file__).parent}")
    print(f"{dialect}, {args.issues} issues.opened deliveries per round, GitHub answering in {args.github_ms:.0f} "
          f"ms{'' if args.no_profile else ', under cProfile'}: median (min–max) of {args.rounds} rounds per delivery: "
          f"CPU {statistics.median(cpu_ms):.1f} ms ({min(cpu_ms):.1f}–{max(cpu_ms):.1f}), "
          f"wall {statistics.median(wall_ms):.1f} ms ({min(wall_ms):.1f}–{max(wall_ms):.1f})")
    if args.save is not None and not args.no_profile:
        profile.dump_stats(args.save)
    if not args.no_profile:
        for order in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats(order).print_stats(args.top)
            print(out.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
