"""Dashboard queries at platform size: the overview, grant search, the audit trail page and CSV
export, the queue.

    .venv/bin/python benchmarks/dashboard.py [--grants 20000] [--audit 200000] [--open 500] [--overview-only]
    .venv/bin/python benchmarks/dashboard.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/dashboard.py --grants 100000 --audit 1000000 --overview-only   # issue 20's size

Fills a fresh database (a temporary SQLite file, or a new database on the given PostgreSQL
server, dropped afterwards) with a platform two years old: requests and grants (two domains
each) spread over that time with their decisions, tier changes and revocations, other audit
rows up to --audit, open requests, deliveries over 90 days, 100 000 allowlist changes and 20
gateways' hourly pulls. Then prints the median time of: each query of the overview (for a
maintainer of everything, and of two of the five repositories); one page of grants searched by
domain, by user and by app id; one page of the audit trail unfiltered and filtered by actor; the
full audit CSV export (rows/s); one page of the review queue with its per-request signals. These
are the queries behind each page view.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text, update  # noqa: E402
from sqlmodel import Session  # noqa: E402

from bot.core.clock import utcnow  # noqa: E402
from bot.core.config import load_policy  # noqa: E402
from bot.core.db import make_engine  # noqa: E402
from bot.core.models import (  # noqa: E402
    AccessRequest,
    AllowlistChange,
    AllowlistCounter,
    AuditEvent,
    Delivery,
    Gateway,
    GatewayPullHour,
    Grant,
    GrantDomain,
)
from bot.ops import migrate
from bot.web.pagination import paginate  # noqa: E402
from bot.web.queue import review_queue  # noqa: E402
from bot.web.search import AuditFilter, GrantFilter, audit_query, grants_query  # noqa: E402
from bot.web.shared import (
    audit_export,
    overview,  # noqa: E402
)


def median_ms(func, repeat: int = 7, clock=time.perf_counter) -> float:
    samples = []
    for _ in range(repeat):
        started = clock()
        func()
        samples.append(clock() - started)
    return statistics.median(samples) * 1000


REPOS = ("acme/access", "acme/partners", "acme/labs", "other/api", "other/beta")
TIERS = ("seed", "flower", "nectar")


def _batches(conn, table, rows, size: int = 20_000) -> None:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            conn.execute(insert(table), batch)
            batch = []
    if batch:
        conn.execute(insert(table), batch)


def fill(engine, grants: int, audit_rows: int, open_requests: int, days: int = 730, deliveries: int = 200_000,
         gateways: int = 20) -> None:
    """A platform `days` old: requests and grants spread over that time (the overview reads their
    last 12 weeks), decisions, tier changes and other audit rows up to `audit_rows` in all,
    deliveries over the last 90 days, allowlist changes, gateways pulling every hour of 35 days."""
    rng = random.Random(20)
    now = utcnow()
    span = timedelta(days=days)

    def when() -> datetime:
        return now - span * rng.random()

    # Rows are inserted in time order, as they are written in production (ids grow with time).
    # requests: 1.2 per grant; 85 % approved (a grant each), 10 % rejected, 5 % withdrawn
    requests, decisions, grant_rows = [], [], []
    for i, created in enumerate(sorted(when() for _ in range(int(grants * 1.2)))):
        decided = min(created + timedelta(hours=rng.expovariate(1 / 30)), now)
        draw = rng.random()
        state = "approved" if draw < 0.85 else "rejected" if draw < 0.95 else "withdrawn"
        requests.append({"repo": REPOS[i % len(REPOS)], "issue_number": i + 1, "installation_id": 1,
                         "applicant_id": 500_000 + i, "applicant_login": f"applicant-{i}", "title": "Special access",
                         "state": state, "requested_tier": "flower", "values": {}, "check_results": [],
                         "checks_ok": True, "issue_state": "closed", "created_at": created, "updated_at": decided,
                         "decided_at": decided, "needs_maintainer": False})
        decisions.append({"at": decided, "actor": "maint", "action": f"request.{state}", "request_id": i + 1,
                          "subject": f"{REPOS[i % len(REPOS)]}#{i + 1}", "source": "bench", "details": {}})
        if state == "approved" and len(grant_rows) < grants:
            grant_rows.append((decided, REPOS[i % len(REPOS)], i + 1))
    while len(grant_rows) < grants:  # self-service grants, no repository
        grant_rows.append((when(), None, None))
    grant_rows.sort(key=lambda row: row[0])
    decisions.sort(key=lambda row: row["at"])
    tier_changes = []
    grant_dicts = []
    for i, (created, repo, request_id) in enumerate(grant_rows):
        revoked = created + (now - created) * rng.random() if rng.random() < 0.05 else None
        tier = TIERS[i % 3]
        if rng.random() < 0.05 and i % 3 < 2:  # an upgrade some time after creation
            at = created + ((revoked or now) - created) * rng.random()
            tier_changes.append({"at": at, "actor": "maint", "action": "grant.tier_changed", "grant_id": i + 1,
                                 "subject": f"app-{i}", "source": "bench",
                                 "details": {"from": tier, "to": TIERS[i % 3 + 1]}})
            tier = TIERS[i % 3 + 1]
        grant_dicts.append(
            {"app_id": f"app-{i}", "tier": tier, "status": "revoked" if revoked else "active",
             "github_user_id": 100_000 + i, "github_login": f"user-{i}", "approved_by": "maint",
             "source": "issue" if repo else "self_service", "repo": repo, "request_id": request_id,
             "created_at": created, "updated_at": created, "revoked_at": revoked, "version": i + 1,
             "claimable": False})
    tier_changes.sort(key=lambda row: row["at"])
    others = max(audit_rows - len(decisions) - len(tier_changes), 0)
    received = sorted(now - timedelta(days=90) * rng.random() for _ in range(deliveries))
    with engine.begin() as conn:
        _batches(conn, AccessRequest, requests)
        _batches(conn, AccessRequest, (
            {"repo": "acme/access", "issue_number": 10_000_000 + i, "installation_id": 1,
             "applicant_id": 100_000 + i, "applicant_login": f"user-{i}", "title": "Special access",
             "state": "validated", "requested_tier": "flower", "app_name": f"App {i}", "referrer": f"new-app-{i}",
             "values": {"domains": [f"new{i}.example.com", f"www.site{i}.com"]}, "check_results": [],
             "checks_ok": True, "issue_state": "open", "created_at": now - timedelta(days=30) * rng.random(),
             "updated_at": now, "needs_maintainer": False} for i in range(open_requests)))
        _batches(conn, Grant, grant_dicts)
        _batches(conn, GrantDomain, (
            {"grant_id": i // 2 + 1, "domain": f"{'www' if i % 2 else 'api'}.site{i // 2}.com", "active": True,
             "created_at": now} for i in range(grants * 2)))
        _batches(conn, AuditEvent, decisions)
        _batches(conn, AuditEvent, tier_changes)
        _batches(conn, AuditEvent, (
            {"at": now - span * (1 - i / max(others, 1)), "actor": f"user-{i % 5000}" if i % 10 else "system",
             "action": ("key.claimed", "key.rotated", "grant.domain_added", "request.rechecked")[i % 4],
             "grant_id": i % max(grants, 1) + 1, "subject": f"app-{i % max(grants, 1)}", "source": "portal",
             "details": {"n": i}} for i in range(others)))
        _batches(conn, Delivery, (
            {"hook_id": 1, "delivery_id": f"bench-{i}", "event": "issues", "action": "opened",
             "installation_id": 1, "payload": "{}", "received_at": (at := received[i]),
             "status": "dead" if i % 500 == 0 else "processed", "attempts": 2 if i % 50 == 0 else 1,
             "next_attempt_at": at, "processed_at": at} for i in range(deliveries)))
        _batches(conn, AllowlistChange, (
            {"version": i + 1, "grant_id": i % max(grants, 1) + 1, "app_id": f"app-{i % max(grants, 1)}",
             "change": "key", "at": now - span * (1 - i / 100_000)} for i in range(100_000)))
        conn.execute(update(AllowlistCounter).values(version=100_000))
        _batches(conn, Gateway, (
            {"name": f"edge-{g}", "sha256": f"{g:064d}", "display": f"bk_gw_{g}", "created_at": now - span,
             "last_pull_at": now - timedelta(seconds=10 if g % 5 else 600), "last_version": 100_000,
             "pull_count": 35 * 24 * 120} for g in range(gateways)))
        hour = now.replace(minute=0, second=0, microsecond=0)
        _batches(conn, GatewayPullHour, (
            {"gateway_id": g + 1, "hour": hour - timedelta(hours=h), "pulls": 120, "version": 100_000}
            for g in range(gateways) for h in range(35 * 24)))


OVERVIEW_QUERIES = [
    ("requests per week", lambda db, p, r, now: overview.requests_per_week(db, r, now)),
    ("time to decision", lambda db, p, r, now: overview.decision_times(db, r, now)),
    ("open requests' ages", lambda db, p, r, now: overview.open_ages(db, r, now)),
    ("grants by tier over time", lambda db, p, r, now: overview.grants_over_time(db, p, r, now)),
    ("gateways, allowlist version", lambda db, p, r, now: overview.gateway_figures(db, p, now)),
    ("deliveries per day", lambda db, p, r, now: overview.deliveries_per_day(db, r, now)),
]


def measure_overview(db, policy) -> None:
    """Each overview query, for a maintainer of everything and for one of two repositories: the
    median wall time and, on SQLite (which runs in this process), the median CPU time, which a
    busy machine inflates less."""
    now = utcnow()
    cpu = db.get_bind().dialect.name == "sqlite"
    for label, query in OVERVIEW_QUERIES:
        everything = median_ms(lambda q=query: q(db, policy, None, now))
        scoped = median_ms(lambda q=query: q(db, policy, ["acme/access", "acme/labs"], now))
        line = f"  overview: {label:27s} {everything:8.1f} ms  (2 repositories: {scoped:6.1f} ms)"
        if cpu:
            both = [median_ms(lambda q=query, r=r: q(db, policy, r, now), clock=time.process_time)
                    for r in (None, ["acme/access", "acme/labs"])]
            line += f"  CPU {both[0]:6.1f} ms / {both[1]:6.1f} ms"
        print(line)
    whole = median_ms(lambda: overview.overview(db, policy, None))
    print(f"  overview: {'whole page (all queries)':27s} {whole:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grants", type=int, default=20_000)
    parser.add_argument("--audit", type=int, default=200_000)
    parser.add_argument("--open", type=int, default=500)
    parser.add_argument("--deliveries", type=int, default=200_000)
    parser.add_argument("--overview-only", action="store_true", help="measure the overview's queries only")
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
        folder = tempfile.mkdtemp()
        url = f"sqlite:///{folder}/bench.sqlite3"

        def cleanup():  # the 100 000-grant file is ~400 MB
            shutil.rmtree(folder, ignore_errors=True)
    engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        migrate.upgrade(engine)
        started = time.perf_counter()
        fill(engine, args.grants, args.audit, args.open, deliveries=args.deliveries)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        print(f"{engine.dialect.name}: {args.grants} grants, {args.audit} audit rows, {args.open} open requests, "
              f"{args.deliveries} deliveries (filled in {time.perf_counter() - started:.1f} s)")
        with Session(engine) as db:
            measure_overview(db, load_policy())
            if args.overview_only:
                return
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
