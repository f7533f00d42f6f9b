"""Dashboard queries at platform size: grant search, the audit trail page and CSV export, the queue.

    .venv/bin/python benchmarks/dashboard.py [--grants 20000] [--audit 200000] [--open 500]
    .venv/bin/python benchmarks/dashboard.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Fills a fresh database (a temporary SQLite file, or a new database on the given PostgreSQL
server, dropped afterwards) with grants (two domains each), audit rows and open requests, then
prints the median time of: one page of grants searched by domain, by user and by app id; one page
of the audit trail unfiltered and filtered by actor; the full audit CSV export (rows/s); one page
of the review queue with its per-request signals. These are the queries behind each page view.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert  # noqa: E402
from sqlmodel import Session  # noqa: E402

from bot import audit_export, migrate  # noqa: E402
from bot.clock import utcnow  # noqa: E402
from bot.db import make_engine  # noqa: E402
from bot.models import AccessRequest, AuditEvent, Grant, GrantDomain  # noqa: E402
from bot.pagination import paginate  # noqa: E402
from bot.queue import review_queue  # noqa: E402
from bot.search import AuditFilter, GrantFilter, audit_query, grants_query  # noqa: E402


def median_ms(func, repeat: int = 7) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def fill(engine, grants: int, audit_rows: int, open_requests: int) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(Grant), [
            {"app_id": f"app-{i}", "tier": ("seed", "flower", "nectar")[i % 3], "status": "active",
             "github_user_id": 100_000 + i, "github_login": f"user-{i}", "approved_by": "maint", "source": "issue",
             "created_at": now, "updated_at": now, "version": i + 1, "claimable": False} for i in range(grants)])
        conn.execute(insert(GrantDomain), [
            {"grant_id": i // 2 + 1, "domain": f"{'www' if i % 2 else 'api'}.site{i // 2}.com", "active": True,
             "created_at": now} for i in range(grants * 2)])
        for start in range(0, audit_rows, 20_000):
            conn.execute(insert(AuditEvent), [
                {"at": now, "actor": f"user-{i % 5000}" if i % 10 else "system", "action": "key.claimed",
                 "grant_id": i % max(grants, 1) + 1, "subject": f"app-{i % max(grants, 1)}", "source": "portal",
                 "details": {"n": i}} for i in range(start, min(start + 20_000, audit_rows))])
        conn.execute(insert(AccessRequest), [
            {"repo": "acme/access", "issue_number": i + 1, "installation_id": 1, "applicant_id": 100_000 + i,
             "applicant_login": f"user-{i}", "title": "Special access", "state": "validated",
             "requested_tier": "flower", "app_name": f"App {i}", "referrer": f"new-app-{i}",
             "values": {"domains": [f"new{i}.example.com", f"www.site{i}.com"]}, "check_results": [],
             "checks_ok": True, "issue_state": "open", "created_at": now, "updated_at": now,
             "needs_maintainer": False} for i in range(open_requests)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=20_000)
    parser.add_argument("--audit", type=int, default=200_000)
    parser.add_argument("--open", type=int, default=500)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    cleanup = None
    if args.database_url:
        import psycopg

        name = f"bk_bench_{uuid.uuid4().hex[:8]}"
        admin = args.database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = admin.rsplit("/", 1)[0] + f"/{name}"

        def cleanup():
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        migrate.upgrade(engine)
        started = time.perf_counter()
        fill(engine, args.grants, args.audit, args.open)
        print(f"{engine.dialect.name}: {args.grants} grants, {args.audit} audit rows, {args.open} open requests "
              f"(filled in {time.perf_counter() - started:.1f} s)")
        with Session(engine) as db:
            for label, f in [("grants by domain", GrantFilter(domain="site1234")),
                             ("grants by user", GrantFilter(user="user-777")),
                             ("grants by app id", GrantFilter(app="app-19")),
                             ("grants, no filter", GrantFilter())]:
                print(f"  {label:28s} {median_ms(lambda f=f: paginate(db, grants_query(f), 1)):8.1f} ms/page")
            for label, f in [("audit, no filter", AuditFilter()), ("audit by actor", AuditFilter(actor="user-42")),
                             ("audit by grant", AuditFilter(grant="17"))]:
                print(f"  {label:28s} {median_ms(lambda f=f: paginate(db, audit_query(f), 3, 50)):8.1f} ms/page")
            print(f"  {'review queue page (25)':28s} {median_ms(lambda: review_queue(db, 1), 3):8.1f} ms/page")
            started = time.perf_counter()
            size = sum(len(line) for line in audit_export.csv_lines(db, audit_query(AuditFilter())))
            elapsed = time.perf_counter() - started
            print(f"  {'audit CSV export':28s} {args.audit / elapsed:8.0f} rows/s ({size / 1e6:.1f} MB in "
                  f"{elapsed:.1f} s)")
    finally:
        engine.dispose()
        if cleanup:
            cleanup()


if __name__ == "__main__":
    main()
