"""GitHub answering 502 and then secondary rate limits for a while → work delayed, not lost,
not doubled. Some writes even succeed on GitHub's side while the answer is lost (a 502 after the
comment was created): the retry must find that comment instead of posting a second one.

The issue asks for "a minute"; the suite scales it down to seconds (the inbox's backoff makes the
retries land after the outage all the same) to keep CI fast.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from bot.core.models import DeliveryStatus
from tests.fault.harness import file_request, record_figures, wait_until

REPO = "acme/fault-github"
REQUESTS = 60
OUTAGE_SECONDS = 3.0  # every API call answered 502
RATE_LIMITED_SECONDS = 3.0  # then every third call refused with a secondary rate limit
BOT_ENV = {"BEEKEEPER_WORKER_LEASE_SECONDS": "60"}


def test_github_failing_for_a_while_delays_work_without_losing_or_doubling_it(live):
    fake, chaos = live.fake, live.github.chaos
    fake.installation_repos.append(REPO)
    payloads = {n: file_request(fake, REPO, n, tier="seed" if n % 2 else "flower") for n in range(1, REQUESTS + 1)}

    for _ in range(2):
        live.bot.start_worker()
    live.bot.wait_workers_started()

    outage = chaos.fail_for(OUTAGE_SECONDS, 502, path=r"^/api/v3/", body={"message": "Server Error"})
    limited = chaos.secondary_rate_limit_for(RATE_LIMITED_SECONDS, retry_after=1, path=r"^/api/v3/", every=3,
                                             starting_in=OUTAGE_SECONDS)
    lost = chaos.fail_for(OUTAGE_SECONDS + RATE_LIMITED_SECONDS + 2, 502, methods=("POST",),
                          path=r"/issues/\d+/comments$", after_work=True, every=4, starting_in=OUTAGE_SECONDS)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda n: live.hooks.send("issues", payloads[n]), payloads))
    assert statuses.count(202) == REQUESTS  # GitHub being down never stops the intake

    def converged() -> bool:
        rows = live.deliveries()
        return len(rows) == REQUESTS and all(r.status == DeliveryStatus.PROCESSED for r in rows)

    wait_until(converged, 90, interval=0.25, what="every delivery to be processed")
    elapsed = time.monotonic() - started
    rows = live.deliveries()
    status_counts = {n: len(live.status_comments(REPO, n)) for n in payloads}
    decision_counts = {n: sum(1 for c in fake.bot_comments(REPO, n) if "beekeeper:decision" in c["body"])
                       for n in payloads}
    record_figures("github outage", deliveries=REQUESTS, answered_502=outage.hits, rate_limited=limited.hits,
                   writes_done_but_answer_lost=lost.hits, deliveries_retried=sum(1 for r in rows if r.attempts > 1),
                   max_attempts=max(r.attempts for r in rows),
                   duplicate_status_comments=sum(c - 1 for c in status_counts.values() if c > 1),
                   duplicate_decision_comments=sum(c - 1 for c in decision_counts.values() if c > 1),
                   seconds_to_converge=round(elapsed, 1))
    assert outage.hits > 0 and limited.hits > 0 and lost.hits > 0  # the faults really happened
    assert not [r for r in rows if r.status == DeliveryStatus.DEAD]
    assert {n: c for n, c in status_counts.items() if c != 1} == {}
    # one approval comment per auto-approved (odd) request, none for the others
    assert {n: c for n, c in decision_counts.items() if c != (1 if n % 2 else 0)} == {}
