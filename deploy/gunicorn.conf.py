"""gunicorn settings for Beekeeper's web processes (docs/operations.md, "Production layout").

    PROMETHEUS_MULTIPROC_DIR=/run/beekeeper/metrics gunicorn -c deploy/gunicorn.conf.py 'bot:create_app()'

With PROMETHEUS_MULTIPROC_DIR set, every web process writes its counters to that directory and
`/metrics` sums them, so a scrape sees the totals of all N processes, not of the one that
answered. The directory must be private to this gunicorn (not shared with `beekeeper worker`,
which serves its own counters on `--metrics-port`); it is emptied when gunicorn starts.
"""

import multiprocessing
import os

bind = os.environ.get("BEEKEEPER_BIND", "127.0.0.1:8000")  # behind the TLS proxy
worker_class = "gthread"
workers = int(os.environ.get("BEEKEEPER_WEB_WORKERS", min(8, 2 * multiprocessing.cpu_count())))
threads = 8
graceful_timeout = 25


def on_starting(server):
    from bot.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir()  # before any worker forks: drop counters of an earlier run


def child_exit(server, worker):
    from bot.metrics import child_exit as mark_dead

    mark_dead(server, worker)
