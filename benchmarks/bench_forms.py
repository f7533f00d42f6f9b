"""Parser and check throughput: how long the review's CPU work takes per issue body.

    .venv/bin/python benchmarks/bench_forms.py

Prints the median time to parse a normal request, a 60 KB body (GitHub's body limit is 65 536
characters), a 1 MB hostile body and a body of 40 000 heading lines, and to run every check
on a normal request against an in-memory database holding 1 000 grants.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import Session, SQLModel, create_engine  # noqa: E402

from bot.core.comments import escape_user_text  # noqa: E402
from bot.core.config import load_policy  # noqa: E402
from bot.core.models import Grant, GrantDomain  # noqa: E402
from bot.rules.checks import run_checks  # noqa: E402
from bot.rules.forms import bundled_schema, parse_issue_body, render_issue_body  # noqa: E402

POLICY = load_policy()
SCHEMA = bundled_schema()
ANSWERS = {
    "app-name": "Free AI Chat", "description": "A chat front-end for students. Our server calls the API.",
    "homepage": "https://freeaichat.com", "domains": "freeaichat.com\n*.freeaichat.com\nbücher.de",
    "contact": "dev@freeaichat.com", "tier": "flower", "terms": list(SCHEMA.field("terms").options),
}


def timed(func, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> None:
    normal = render_issue_body(SCHEMA, ANSWERS)
    big = render_issue_body(SCHEMA, {**ANSWERS, "description": ("word " * 12 + "\n") * 1000})
    hostile = render_issue_body(SCHEMA, {**ANSWERS, "description": "A" * 1_000_000})
    headings = render_issue_body(SCHEMA, {**ANSWERS, "description": "### App name\n### Terms\n" * 20_000})
    ms = timed(lambda: parse_issue_body(normal, SCHEMA, POLICY), 200)
    print(f"parse normal body ({len(normal)} chars): {ms:.3f} ms")
    print(f"parse 60 KB body: {timed(lambda: parse_issue_body(big, SCHEMA, POLICY), 50):.2f} ms")
    over_budget = []
    for label, text, repeat, budget_ms in (("parse 1 MB body", hostile, 5, 2000.0),
                                           ("parse 40k heading lines", headings, 3, 3000.0)):
        # budgets that were wall-clock asserts in tests/rules/test_forms.py: a hostile body must not
        # make a review slow (one worker would be stuck on it)
        ms = timed(lambda text=text: parse_issue_body(text, SCHEMA, POLICY), repeat)
        print(f"{label}: {ms:.1f} ms (budget {budget_ms:.0f} ms)")
        if ms > budget_ms:
            over_budget.append(label)
    print(f"escape 1 MB value: {timed(lambda: escape_user_text('<@x>' * 250_000, 2000, multiline=True), 20):.3f} ms")

    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        for i in range(1000):
            grant = Grant(app_id=f"app{i}", tier="seed", github_user_id=10_000 + i, github_login=f"u{i}",
                          approved_by="m")
            session.add(grant)
            session.flush()
            session.add(GrantDomain(grant_id=grant.id, domain=f"site{i}.example.com"))
        session.flush()
        parsed = parse_issue_body(normal, SCHEMA, POLICY)
        ms = timed(lambda: run_checks(session, parsed, POLICY, schema=SCHEMA, applicant_id=1), 50)
        print(f"run_checks (no GitHub calls, 1000 grants): {ms:.2f} ms")
    if over_budget:
        print(f"OVER BUDGET: {', '.join(over_budget)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
