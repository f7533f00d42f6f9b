"""A graceful stop (SIGTERM, as every deploy does) strands nothing: the stopping worker finishes
the deliveries in hand (one per pool thread) and releases the rest of its batch at once, so the other worker takes them
without waiting for a lease. The lease here is long (120 s) on purpose: the batch being done
well within it proves the release, not a lease running out. Still exactly once."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

from bot.core.models import DeliveryStatus
from tests.fault.harness import file_request, record_figures, wait_until

REPO = "acme/fault-stop"
REQUESTS = 80
LEASE = 120
CONCURRENCY = 4  # the stopping worker's pool (PostgreSQL's default): up to 4 deliveries in hand
BOT_ENV = {"BEEKEEPER_WORKER_LEASE_SECONDS": str(LEASE), "BEEKEEPER_WORKER_CONCURRENCY": str(CONCURRENCY)}


def test_a_stopped_worker_releases_its_batch_at_once(live):
    fake = live.fake
    fake.installation_repos.append(REPO)
    stopping = live.bot.start_worker(batch=10)
    survivor = live.bot.start_worker(batch=10)
    payloads = {n: file_request(fake, REPO, n, tier="seed" if n % 2 else "flower") for n in range(1, REQUESTS + 1)}
    live.bot.wait_workers_started()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda n: live.hooks.send("issues", payloads[n]), payloads))
    assert statuses.count(202) == REQUESTS

    def holds(delivery) -> bool:
        return f":{stopping.pid}:" in f"{delivery.locked_by}:"

    def mid_batch() -> bool:
        held = [d for d in live.deliveries(status=DeliveryStatus.PROCESSING) if holds(d)]
        return len(held) >= CONCURRENCY + 2  # at least two deliveries of its batch not started yet

    wait_until(mid_batch, 60, interval=0.01, what="the worker to hold a batch")
    held_at_stop = {d.id for d in live.deliveries(status=DeliveryStatus.PROCESSING) if holds(d)}
    stopping.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert stopping.wait(timeout=60) == 0  # it exits by itself, after the delivery in hand
    # nothing is left leased to the stopped worker: released, not waiting for the lease
    assert [d.id for d in live.deliveries(status=DeliveryStatus.PROCESSING) if holds(d)] == []
    after = {d.id: d for d in live.deliveries()}
    finished_by_it = {i for i in held_at_stop if after[i].status == DeliveryStatus.PROCESSED and holds(after[i])}
    released_ids = held_at_stop - finished_by_it
    # the ones in hand (one per thread), and at most one more started between the look and the signal
    assert len(finished_by_it) <= CONCURRENCY + 1, "it went on with its batch after SIGTERM"
    assert released_ids, "the stopped worker released nothing"
    assert all(not holds(after[i]) for i in released_ids)

    # the survivor takes the released deliveries in far less than one lease: only a release
    # makes this possible
    def released_done() -> bool:
        rows = {d.id: d for d in live.deliveries()}
        return all(rows[i].status == DeliveryStatus.PROCESSED for i in released_ids)

    wait_until(released_done, LEASE / 2, interval=0.05, what="the other worker to finish the released batch")
    released_done_after = time.monotonic() - stopped_at
    converged = wait_until(lambda: live.pending() == 0, LEASE / 2, interval=0.1, what="every delivery")
    rows = live.deliveries()
    assert len(rows) == REQUESTS and all(r.status == DeliveryStatus.PROCESSED for r in rows)
    again = [r for r in rows if r.id in released_ids]
    assert all(r.attempts == 1 for r in again), "a released delivery counted the stopped worker's claim"
    assert all(f":{survivor.pid}:" in f"{r.locked_by}:" for r in again)
    duplicates = 0
    for n in payloads:  # exactly once, seen from GitHub
        count = len(live.status_comments(REPO, n))
        decisions = sum(1 for c in fake.bot_comments(REPO, n) if "beekeeper:decision" in c["body"])
        duplicates += max(0, count - 1) + max(0, decisions - (1 if n % 2 else 0))
        assert count == 1, f"{REPO}#{n} has {count} status comments"
        assert decisions == (1 if n % 2 else 0), f"{REPO}#{n} has {decisions} decision comments"
    record_figures("worker stopped", requests=REQUESTS, lease_seconds=LEASE, released=len(released_ids),
                   seconds_from_sigterm_to_released_processed=round(released_done_after, 1),
                   seconds_from_sigterm_to_all_processed=round(released_done_after + converged, 1),
                   duplicate_comments=duplicates)
