"""kill -9 a worker in the middle of a batch of 200 requests → every request processed exactly once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from sqlmodel import Session, select

from bot.core.models import AuditEvent, Delivery, DeliveryStatus, Grant
from tests.fault.harness import file_request, record_figures, wait_until

REPO = "acme/fault-kill"
REQUESTS = 200
BOT_ENV = {"BEEKEEPER_WORKER_LEASE_SECONDS": "4"}  # a killed worker's leases run out quickly


def test_a_killed_worker_loses_nothing_and_doubles_nothing(live):
    fake = live.fake
    fake.installation_repos.append(REPO)
    victim = live.bot.start_worker()
    survivor = live.bot.start_worker()
    payloads = {n: file_request(fake, REPO, n, tier="seed" if n % 2 else "flower") for n in range(1, REQUESTS + 1)}

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda n: live.hooks.send("issues", payloads[n]), payloads))
    assert statuses.count(202) == REQUESTS

    # kill -9 the victim while it holds leases on part of a batch
    def held_by_victim(delivery: Delivery) -> bool:  # worker names are host:pid[:suffix]
        return f":{victim.pid}:" in f"{delivery.locked_by}:"

    def mid_run_and_victim_holds_leases() -> bool:
        rows = live.deliveries()
        done = sum(1 for d in rows if d.status == DeliveryStatus.PROCESSED)
        held = sum(1 for d in rows if d.status == DeliveryStatus.PROCESSING and held_by_victim(d))
        return done >= REQUESTS // 5 and held >= 2  # the victim is early in a batch (of 5)

    wait_until(mid_run_and_victim_holds_leases, 60, interval=0.02, what="the victim to lease a batch mid-run")
    with Session(live.engine) as s:
        processed_before = len(s.exec(select(Delivery.id).where(Delivery.status == DeliveryStatus.PROCESSED)).all())
    live.bot.kill(victim)
    orphaned = [d.id for d in live.deliveries(status=DeliveryStatus.PROCESSING) if held_by_victim(d)]

    killed_at = time.monotonic()

    def orphans_done() -> bool:
        with Session(live.engine) as s:
            return all(d.status == DeliveryStatus.PROCESSED
                       for d in s.exec(select(Delivery).where(Delivery.id.in_(orphaned))).all())

    # the heartbeat stopped with the victim: its leases run out one lease (4 s) later at most
    wait_until(orphans_done, 60, interval=0.1, what="the orphaned deliveries to be taken over")
    orphans_after = time.monotonic() - killed_at
    converged = wait_until(lambda: live.pending() == 0, 90, interval=0.2, what="every delivery to be processed")
    converged += orphans_after
    elapsed = time.monotonic() - started
    assert survivor.poll() is None

    # exactly once, seen from GitHub: one status comment per request; seed requests approved once
    duplicates = 0
    for n in payloads:
        count = len(live.status_comments(REPO, n))
        assert count == 1, f"{REPO}#{n} has {count} status comments"
        decisions = [c for c in fake.bot_comments(REPO, n) if "beekeeper:decision" in c["body"]]
        duplicates += max(0, len(decisions) - (1 if n % 2 else 0))
        assert len(decisions) == (1 if n % 2 else 0), f"{REPO}#{n} has {len(decisions)} decision comments"
        assert fake.issues[(REPO, n)]["state"] == ("closed" if n % 2 else "open")
    # … and from the database: one grant per approved request, one approval audit row each
    with Session(live.engine) as s:
        grants = s.exec(select(Grant).where(Grant.repo == REPO)).all()
        approvals = s.exec(select(AuditEvent).where(AuditEvent.action == "request.approved",
                                                    AuditEvent.subject.like(f"{REPO}#%"))).all()
        rows = s.exec(select(Delivery).where(Delivery.id.in_(orphaned))).all() if orphaned else []
    assert len(grants) == len(approvals) == REQUESTS // 2
    assert orphaned and all(r.status == DeliveryStatus.PROCESSED and r.attempts >= 2 for r in rows)
    record_figures("worker killed", requests=REQUESTS, deliveries=REQUESTS, processed_before_kill=processed_before,
                   leases_orphaned=len(orphaned), duplicate_comments=duplicates,
                   seconds_to_converge_after_kill=round(converged, 1), seconds_total=round(elapsed, 1),
                   lease_seconds=int(BOT_ENV["BEEKEEPER_WORKER_LEASE_SECONDS"]),
                   seconds_until_orphans_processed=round(orphans_after, 1))
