"""The worker loop: drain the inbox, run periodic jobs, sleep until woken or the poll interval.

Woken by: a delivery stored by the same process (`beekeeper serve`'s intake sets the event), a
PostgreSQL notification (bot.intake.wakeup: any process stored one), or a stop request.
"""

from __future__ import annotations

import logging
import threading
import time

from bot.allowlist import versioning
from bot.core.db import session_scope
from bot.intake import inbox
from bot.intake.handlers import load_handlers
from bot.intake.router import Router
from bot.intake.router import router as default_router
from bot.intake.runtime import Runtime
from bot.intake.wakeup import InboxListener

log = logging.getLogger("beekeeper.worker")

PRUNE_INTERVAL_SECONDS = 3600.0


def prune_allowlist_changes(runtime: Runtime) -> None:
    """Keep the allowlist change log to the policy's `allowlist.delta_history` versions."""
    with session_scope(runtime.engine) as session:
        removed = versioning.prune_changes(session, runtime.policy.allowlist.delta_history)
    if removed:
        log.info("pruned %d allowlist change rows", removed)


def heartbeat_interval(lease_seconds: float) -> float:
    """How often a worker renews its leases: three beats per lease, so one late or failed beat
    (a slow database) does not lose the lease."""
    return max(0.05, lease_seconds / 3)


DEFAULT_CONCURRENCY_POSTGRESQL = 8


def default_concurrency(runtime: Runtime) -> int:
    """Deliveries processed at once when not configured: 8 on PostgreSQL (a delivery mostly
    waits for GitHub; 8 gave a lower burst p95 than 4 in 19 of 20 same-run comparisons and tied
    in one, benchmarks/README.md; one process keeps each issue's deliveries in order); 1 on SQLite, whose single write
    lock (held by a handler's transaction) would run them one at a time anyway."""
    if runtime.settings.worker_concurrency:
        return runtime.settings.worker_concurrency
    return 1 if runtime.engine.dialect.name == "sqlite" else DEFAULT_CONCURRENCY_POSTGRESQL


class Worker:
    def __init__(self, runtime: Runtime, name: str | None = None, batch: int = 10, router: Router | None = None,
                 concurrency: int | None = None):
        self.runtime = runtime
        self.name = name or inbox.worker_name()
        self.batch = batch
        self.concurrency = concurrency if concurrency is not None else default_concurrency(runtime)
        if self.concurrency < 1:
            raise ValueError(f"worker concurrency must be at least 1, not {self.concurrency}")
        self.stop_event = threading.Event()
        self._wake = runtime.wake or threading.Event()
        # PostgreSQL: a listening connection sets the wake event when any process stores a
        # delivery; started and closed by run_forever.
        self.listener = InboxListener(runtime.engine, self._wake) if runtime.engine.dialect.name == "postgresql" \
            else None
        self._idle = False
        self.idle_changed = threading.Condition()  # notified when the worker starts or stops waiting
        self._last_run: dict[int, float] = {}
        if router is None:
            load_handlers()
        self.router = router if router is not None else default_router
        if not any(job is prune_allowlist_changes for _, job in runtime.periodic):
            runtime.periodic.append((PRUNE_INTERVAL_SECONDS, prune_allowlist_changes))

    def run_once(self) -> int:
        """Process every due delivery; returns how many were handled."""
        settings = self.runtime.settings
        return inbox.drain(
            self.runtime.engine,
            self.router,
            self.runtime.make_context,
            worker=self.name,
            lease_seconds=settings.worker_lease_seconds,
            max_attempts=settings.worker_max_attempts,
            batch=self.batch,
            should_stop=self.stop_event.is_set,
            heartbeat_seconds=heartbeat_interval(settings.worker_lease_seconds),
            concurrency=self.concurrency,
        )

    def run_periodic(self) -> None:
        now = time.monotonic()
        for index, (interval, job) in enumerate(self.runtime.periodic):
            last = self._last_run.get(index)
            if last is not None and now - last < interval:
                continue
            self._last_run[index] = now
            try:
                job(self.runtime)
            except Exception:  # noqa: BLE001 - a periodic job failing must not stop the worker
                log.exception("periodic job %s failed", getattr(job, "__name__", job))

    def wait_idle(self, timeout: float) -> bool:
        """Until the worker waits between drains with nothing waking it yet (so only a
        notification, a stop or the poll interval can); False when `timeout` ran out first."""
        with self.idle_changed:
            return self.idle_changed.wait_for(lambda: self._idle and not self._wake.is_set(), timeout=timeout)

    def _set_idle(self, idle: bool) -> None:
        with self.idle_changed:
            self._idle = idle
            self.idle_changed.notify_all()

    def run_forever(self) -> None:
        log.info("worker %s started (%d at a time%s)", self.name, self.concurrency,
                 ", woken by LISTEN/NOTIFY" if self.listener else "")
        wake = self._wake
        if self.listener is not None:
            self.listener.start()
        try:
            while not self.stop_event.is_set():
                # Cleared before draining: a delivery stored while we drain sets it again, so the
                # wait below returns at once and nothing waits a whole poll interval.
                wake.clear()
                try:
                    self.run_once()
                    self.run_periodic()
                except Exception as exc:  # noqa: BLE001 - e.g. database restarting: wait and try again
                    log.error("worker loop error (%s: %.300s); retrying", type(exc).__name__, exc)
                    self.stop_event.wait(min(5.0, self.runtime.settings.worker_poll_seconds * 5))
                self._set_idle(True)
                wake.wait(self.runtime.settings.worker_poll_seconds)
                self._set_idle(False)
        finally:
            if self.listener is not None:
                self.listener.close()
        log.info("worker %s stopped", self.name)

    def stop(self) -> None:
        """Graceful stop: the deliveries in hand (one per pool thread) are finished, the rest of
        the batch released at once for other workers, then `run_forever` returns."""
        self.stop_event.set()
        self._wake.set()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="beekeeper-worker", daemon=True)
        thread.start()
        return thread
