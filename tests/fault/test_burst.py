"""A burst of 1 000 deliveries in (under) 10 seconds, 10% of them duplicates (GitHub redelivering,
or two hooks racing) → every delivery accepted, each distinct one processed exactly once.

The mix is what a busy request repository sends: 100 new requests, and 800 cheap events
(applicants' comments, title edits) that the handlers look at and skip; plus 100 duplicates of
random ones among them, sent concurrently with the originals.
"""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bot.core.models import DeliveryStatus
from tests.conftest import comment_event, issue_event
from tests.fault.harness import file_request, record_figures, wait_until

REPO = "acme/fault-burst"
REQUESTS, COMMENTS, EDITS, DUPLICATES = 100, 400, 400, 100
TOTAL = REQUESTS + COMMENTS + EDITS + DUPLICATES
WEB_WORKERS = 2


def test_a_burst_with_duplicates_is_accepted_and_processed_once(live):
    fake = live.fake
    fake.installation_repos.append(REPO)
    rng = random.Random(8)
    opened = {n: file_request(fake, REPO, n, tier="flower") for n in range(1, REQUESTS + 1)}
    distinct: list[tuple[str, str, dict]] = [("issues", str(uuid.uuid4()), p) for p in opened.values()]
    for i in range(COMMENTS):
        n = rng.randint(1, REQUESTS)
        payload = comment_event("created", body=f"Thanks! Any news? ({i})", issue_payload=opened[n],
                                user=opened[n]["issue"]["user"])
        distinct.append(("issue_comment", str(uuid.uuid4()), payload))
    for i in range(EDITS):
        n = rng.randint(1, REQUESTS)
        payload = issue_event("edited", body=opened[n]["issue"]["body"], number=n, repo=REPO,
                              user=opened[n]["issue"]["user"], title=f"Special access: App {n} (v{i})",
                              changes={"title": {"from": f"Special access: App {n}"}})
        distinct.append(("issues", str(uuid.uuid4()), payload))
    sends = distinct + rng.sample(distinct, DUPLICATES)
    rng.shuffle(sends)
    for _ in range(2):
        live.bot.start_worker()

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda s: live.hooks.send(s[0], s[2], s[1]), sends))
    burst_seconds = time.monotonic() - started
    assert len(statuses) == TOTAL
    assert all(status in (200, 202) for status in statuses), sorted(set(statuses))
    assert statuses.count(202) == len(distinct)  # each distinct delivery stored once …
    assert statuses.count(200) == DUPLICATES  # … and every repeat recognised as one

    wait_until(lambda: live.pending() == 0 and len(live.deliveries()) == len(distinct), 90, interval=0.25,
               what="the burst to be processed")
    drained = time.monotonic() - started
    rows = live.deliveries()
    assert len(rows) == len(distinct) == len({(r.hook_id, r.delivery_id) for r in rows})
    assert all(r.attempts == 1 and r.status in (DeliveryStatus.PROCESSED, DeliveryStatus.SKIPPED) for r in rows)
    for n in opened:
        assert len(live.status_comments(REPO, n)) == 1, f"{REPO}#{n}"
    record_figures("burst", deliveries=TOTAL, distinct=len(distinct), duplicates=DUPLICATES,
                   burst_seconds=round(burst_seconds, 1), deliveries_per_second=round(TOTAL / burst_seconds),
                   seconds_until_all_processed=round(drained, 1))
