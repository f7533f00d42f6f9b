"""Metrics that add up, measured on live processes: gunicorn with 3 web processes (multiprocess
mode, deploy/gunicorn.conf.py) and 2 `beekeeper worker --metrics-port` processes. After N
deliveries, the scraped totals are N — whichever web process answers the scrape — and the scrape
needs the bearer token."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fault.harness import free_port, record_figures, wait_until

TOKEN = "fault-metrics-token-5b1c"
WEB_WORKERS = 3
BOT_ENV = {"BEEKEEPER_METRICS_TOKEN": TOKEN}
ROUND = 90  # `star` events: no handler, processed as skipped, no GitHub call
MAX_DELIVERIES = 900
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def total(text: str, name: str, **labels) -> float:
    """The sum of a counter's samples (`name`_total) matching `labels`."""
    found = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found += sample.value
    return found


def scrape(url: str) -> str:
    response = requests.get(url, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def test_scraped_totals_equal_the_deliveries_sent(live):
    bot = live.bot
    ports = [free_port(), free_port()]
    for port in ports:
        bot.start_worker(metrics_port=port)
    bot.wait_workers_started()
    payload = {"action": "created", "repository": {"full_name": "acme/metrics", "id": 5},
               "sender": {"login": "someone", "id": 77, "type": "User"}, "installation": {"id": 1}}
    def send_round() -> list[int]:
        with ThreadPoolExecutor(12) as pool:  # concurrent, fresh connections: the processes share the work
            # each body its own (as GitHub's are): a stored body under a new GUID is a replay (200)
            return list(pool.map(lambda _: live.hooks.send("star", {**payload, "starred_at": uuid.uuid4().hex},
                                                           str(uuid.uuid4()), fresh_connection=True),
                                 range(ROUND)))

    def counting_processes() -> list[str]:
        return sorted(p.name for p in bot.web_metrics_dir.glob("counter_*.db"))

    # Which process accepts a connection is the kernel's choice: send rounds until at least two
    # web processes have counted (almost always the first round), so the sums below are sums.
    statuses: list[int] = []
    while len(statuses) < MAX_DELIVERIES and (not statuses or len(counting_processes()) < 2):
        statuses += send_round()
    sent = len(statuses)
    assert statuses.count(202) == sent
    files = counting_processes()
    assert len(files) >= 2, files
    wait_until(lambda: len(live.deliveries()) == sent and live.pending() == 0, 60,
               what="every delivery to be processed")

    # the web: any of the 3 processes answers, each time with the sum over all of them
    web_totals = [total(scrape(f"{bot.url}/metrics"), "beekeeper_deliveries_received_total", event="star")
                  for _ in range(12)]
    assert set(web_totals) == {sent}, web_totals
    web = scrape(f"{bot.url}/metrics")
    assert total(web, "beekeeper_inbox_deliveries", event="star", status="skipped") == sent
    assert total(web, "beekeeper_inbox_oldest_due_seconds") == 0
    # the workers: each serves its own counters; their sum is every delivery, once
    worker_totals = [total(scrape(f"http://127.0.0.1:{port}/metrics"), "beekeeper_deliveries_processed_total",
                           event="star", outcome="skipped") for port in ports]
    assert sum(worker_totals) == sent, worker_totals

    # no token, or a wrong one: refused, on the web and on a worker's port
    assert requests.get(f"{bot.url}/metrics", timeout=10).status_code == 401
    assert requests.get(f"{bot.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
    assert requests.get(f"http://127.0.0.1:{ports[0]}/metrics", timeout=10).status_code == 401
    record_figures("metrics", deliveries=sent, web_processes=WEB_WORKERS, web_scrapes=len(web_totals),
                   web_received_total=web_totals[0], worker_processed_totals=worker_totals,
                   web_process_files=len(files))
