#!/usr/bin/env python3
"""`beekeeper grants import` at scale: a --rows row CSV (default 1 000) into a fresh database.

Each round makes a new database (a SQLite file, or a database on the PostgreSQL server named by
--database-url), then times, in process, through bot.ops.grants_io exactly as the CLI calls it:

1. the first import (every row checked and created: grant, domains, audit rows, one allowlist
   version each), committed in one transaction;
2. the same file again (every row unchanged: the idempotent re-run);
3. a dry run of the same file on a fresh database (checked and rolled back);
4. the export of the imported grants.

Rows carry two domains each; a third of them name only a login and a third only a numeric id,
so the owner lookup runs; the lookup here is an in-memory table (no GitHub, no network): the
figures are Beekeeper's own cost. With the real API add one GET per distinct login/id.

    .venv/bin/python benchmarks/grants_import.py
    .venv/bin/python benchmarks/grants_import.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from intake import BenchDatabase  # noqa: E402


class TableUsers:
    """Owners 1..N: login user-<n>, id 100000+n."""

    def __init__(self):
        self.calls = 0

    def by_login(self, login: str):
        self.calls += 1
        return (100000 + int(login.split("-")[1]), login) if login.startswith("user-") else None

    def by_id(self, user_id: int):
        self.calls += 1
        return (user_id, f"user-{user_id - 100000}")


def make_csv(rows: int) -> str:
    out = io.StringIO()
    out.write("app_id,owner_login,owner_id,tier,domains,referrers,created,note\n")
    tiers = ("seed", "flower", "nectar")
    for n in range(1, rows + 1):
        login, user_id = f"user-{n}", str(100000 + n)
        if n % 3 == 1:
            user_id = ""
        elif n % 3 == 2:
            login = ""
        out.write(f"app-{n:05d},{login},{user_id},{tiers[n % 3]},app-{n:05d}.example.com "
                  f"*.app-{n:05d}.example.net,app-{n:05d},2024-01-{(n % 28) + 1:02d}T12:00:00Z,row {n}\n")
    return out.getvalue()


def run_import(engine, policy, rows, *, dry_run: bool = False) -> tuple[float, list]:
    from sqlmodel import Session

    from bot.ops import grants_io

    started = time.perf_counter()
    with Session(engine) as session:
        outcomes = grants_io.import_rows(session, policy, rows, actor="cli:bench", source="cli import bench",
                                         users=TableUsers())
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return time.perf_counter() - started, outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (default: SQLite)")
    args = parser.parse_args()

    from sqlmodel import Session

    from bot.core.config import load_policy
    from bot.ops import grants_io

    policy = load_policy()
    text = make_csv(args.rows)
    rows = grants_io.read_rows(text, "csv")
    figures: dict[str, list[float]] = {"import": [], "re-import (no change)": [], "dry run": [], "export": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            db = BenchDatabase(args.database_url, Path(tmp))
            try:
                seconds, outcomes = run_import(db.engine, policy, rows)
                created = sum(o.action == grants_io.CREATED for o in outcomes)
                if created != args.rows:
                    print(f"expected {args.rows} created, got {created}: {grants_io.summary(outcomes)}")
                    return 1
                figures["import"].append(seconds)
                seconds, outcomes = run_import(db.engine, policy, rows)
                if any(o.action != grants_io.UNCHANGED for o in outcomes):
                    print("the re-import changed something:", grants_io.summary(outcomes))
                    return 1
                figures["re-import (no change)"].append(seconds)
                started = time.perf_counter()
                with Session(db.engine) as session:
                    grants_io.write_rows(grants_io.export_rows(session), "csv", io.StringIO())
                figures["export"].append(time.perf_counter() - started)
            finally:
                db.drop()
        with tempfile.TemporaryDirectory() as tmp:
            db = BenchDatabase(args.database_url, Path(tmp))
            try:
                seconds, _ = run_import(db.engine, policy, rows, dry_run=True)
                figures["dry run"].append(seconds)
            finally:
                db.drop()
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(f"{args.rows} rows, {database}, median of {args.rounds} rounds")
    print("| step | seconds | rows/s |")
    print("|---|---:|---:|")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {args.rows / median:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
