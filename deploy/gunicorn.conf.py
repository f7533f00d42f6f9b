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


def _uses_sqlite() -> bool:
    """BEEKEEPER_DATABASE_URL from the environment or ./.env (as bot.core.config reads it); unset is SQLite."""
    from dotenv import dotenv_values

    url = os.environ.get("BEEKEEPER_DATABASE_URL") or dotenv_values(".env").get("BEEKEEPER_DATABASE_URL") or ""
    return not url.strip() or url.strip().startswith("sqlite")


# SQLite has one write lock for the whole database: web processes would queue for it across
# processes (the intake measured 40-44 % of a bare route with 2 processes × 4 threads, 48-60 % with
# one process × 8 threads whose group commit shares each commit; a separate writer process for
# the database measured no faster: benchmarks/README.md), so one process is the default there.
_default_workers = 1 if _uses_sqlite() else min(8, 2 * multiprocessing.cpu_count())
workers = int(os.environ.get("BEEKEEPER_WEB_WORKERS") or _default_workers)
threads = 8
graceful_timeout = 25


def on_starting(server):
    from bot.core.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir()  # before any worker forks: drop counters of an earlier run


def child_exit(server, worker):
    from bot.core.metrics import child_exit as mark_dead

    mark_dead(server, worker)
