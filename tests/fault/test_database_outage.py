"""PostgreSQL goes away during processing → /readyz 503 and /webhook 5xx while it is down (so
GitHub records failures), recovery by itself, nothing stored lost, nothing done twice.

The outage is a TcpProxy cut between the processes and PostgreSQL (every connection dropped, new
ones refused) rather than a restart of the machine's PostgreSQL, which other test processes share.
For the processes it looks the same: connections die mid-transaction and reconnects fail.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bot.core.models import DeliveryStatus
from tests.fault.harness import file_request, record_figures, wait_until

REPO = "acme/fault-db"
DATABASE_PROXY = True
BOT_ENV = {"BEEKEEPER_WORKER_LEASE_SECONDS": "5"}
BEFORE, DURING = 40, 10
OUTAGE_SECONDS = 3.0


def test_database_outage_is_survived(live):
    fake, bot = live.fake, live.bot
    fake.installation_repos.append(REPO)
    for _ in range(2):
        bot.start_worker()
    payloads = {n: file_request(fake, REPO, n) for n in range(1, BEFORE + DURING + 1)}
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(lambda n: live.hooks.send("issues", payloads[n]), range(1, BEFORE + 1)))
    assert first.count(202) == BEFORE
    wait_until(lambda: len(live.deliveries(status=DeliveryStatus.PROCESSED)) >= BEFORE // 4, 30, interval=0.02,
               what="processing to be under way")

    live.proxy.cut()
    cut_at = time.monotonic()
    unready_after = wait_until(lambda: requests.get(f"{bot.url}/readyz", timeout=10).status_code == 503, 15,
                               what="/readyz to answer 503")
    during = {n: live.hooks.send("issues", payloads[n]) for n in range(BEFORE + 1, BEFORE + DURING + 1)}
    assert all(500 <= status < 600 for status in during.values()), during
    assert requests.get(f"{bot.url}/healthz", timeout=5).status_code == 200  # the process itself is fine
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))

    live.proxy.restore()
    restored_at = time.monotonic()
    ready_after = wait_until(lambda: requests.get(f"{bot.url}/readyz", timeout=10).status_code == 200, 30,
                             what="/readyz to recover")
    # GitHub keeps the failed deliveries; the operator's cron job asks for them again
    result = bot.cli("redeliver", "--since", "1h")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["redelivered"] == DURING

    def converged() -> bool:
        return (len(live.deliveries()) == BEFORE + DURING and live.pending() == 0
                and all(len(live.status_comments(REPO, n)) == 1 for n in payloads))

    wait_until(converged, 60, interval=0.2, what="every request to be processed")
    converge_after = time.monotonic() - restored_at
    accepted = {d["guid"] for d in fake.hook_deliveries if d["status_code"] == 202}
    stored = {d.delivery_id for d in live.deliveries()}
    assert accepted <= stored  # nothing that was answered 202 was lost
    status_counts = {n: len(live.status_comments(REPO, n)) for n in payloads}
    duplicates = sum(count - 1 for count in status_counts.values() if count > 1)
    assert {n: c for n, c in status_counts.items() if c != 1} == {}
    retried = [d for d in live.deliveries() if d.attempts > 1]
    assert all(d.status == DeliveryStatus.PROCESSED for d in live.deliveries())
    record_figures("database outage", deliveries=BEFORE + DURING, refused_while_down=DURING,
                   outage_seconds=round(restored_at - cut_at, 1),
                   readyz_503_after_seconds=round(unready_after, 2), ready_again_after_seconds=round(ready_after, 2),
                   deliveries_retried=len(retried), seconds_to_converge_after_restore=round(converge_after, 1),
                   duplicate_comments=duplicates)
