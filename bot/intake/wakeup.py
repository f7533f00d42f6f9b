"""Waking idle workers at once when a delivery is stored (PostgreSQL LISTEN/NOTIFY).

Between drains a worker waits on its wake event for at most `BEEKEEPER_WORKER_POLL_SECONDS`.
On PostgreSQL an `InboxListener` thread holds one dedicated connection that LISTENs on
`inbox.CHANNEL` and sets that event whenever a notification arrives, i.e. when a transaction
that stored (or released, or re-queued) a delivery has committed. The poll stays as the safety
net: a notification that is lost (listener reconnecting, a pooler that drops LISTEN) costs at
most one poll interval, as before.

The connection is not from the engine's pool (it is held for the process's life and would
take a handler's slot). When it breaks (database restart, network cut) the thread logs it,
reconnects with a growing pause, and wakes the worker once it listens again, since deliveries
stored meanwhile notified nobody. `close()` stops the thread at once: its wait includes a
socket that `close()` writes to.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading

from sqlalchemy.engine import Engine

from bot.core.db import dedicated_connection
from bot.intake.inbox import CHANNEL

log = logging.getLogger("beekeeper.worker")

APPLICATION_NAME = "beekeeper inbox listener"  # in pg_stat_activity
RECONNECT_FIRST_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5


class InboxListener:
    """A daemon thread: LISTEN on the inbox channel and set `wake` on every notification."""

    def __init__(self, engine: Engine, wake: threading.Event):
        if engine.dialect.name != "postgresql":
            raise ValueError("LISTEN/NOTIFY needs PostgreSQL")
        self.engine, self.wake = engine, wake
        self.listening = threading.Event()  # set while LISTEN is in effect
        self.connects = 0  # successful LISTENs since start (a reconnect adds one)
        self.changed = threading.Condition()  # notified when `connects` grows
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signal: tuple[socket.socket, socket.socket] | None = None

    def start(self) -> None:
        self._stop.clear()
        self._signal = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="beekeeper-inbox-listener", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_connects(self, count: int, timeout: float) -> bool:
        """Until `count` LISTENs succeeded since start; False when `timeout` ran out first."""
        with self.changed:
            return self.changed.wait_for(lambda: self.connects >= count and self.listening.is_set(),
                                         timeout=timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening and close the connection (the thread does it; woken at once)."""
        self._stop.set()
        if self._signal is not None:
            try:
                self._signal[1].send(b"x")
            except OSError:
                pass  # the thread is gone already
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None
        if self._thread is None and self._signal is not None:
            for end in self._signal:
                end.close()
            self._signal = None

    def _connect(self):
        # A connection that dies silently (a NAT or firewall dropping it) is noticed by the
        # kernel within about a minute instead of never: the socket turns readable.
        return dedicated_connection(self.engine, APPLICATION_NAME, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                    keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)

    def _run(self) -> None:
        pause, failing = RECONNECT_FIRST_SECONDS, False
        while not self._stop.is_set():
            try:
                connection = self._connect()
            except Exception as exc:  # noqa: BLE001 - the database is away: try again, the worker polls meanwhile
                if not failing:
                    log.warning("inbox listener cannot connect (%s: %.200s); retrying, workers poll meanwhile",
                                type(exc).__name__, exc)
                failing = True
                self._stop.wait(pause)
                pause = min(pause * 2, RECONNECT_MAX_SECONDS)
                continue
            if failing:
                log.info("inbox listener connected again")
            failing = False
            try:
                self._listen(connection)
            except Exception as exc:  # noqa: BLE001 - connection lost: reconnect, the worker polls meanwhile
                if not self._stop.is_set():
                    log.warning("inbox listener lost its connection (%s: %.200s); reconnecting",
                                type(exc).__name__, exc)
                    failing = True
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):  # already broken: nothing left to release
                    connection.close()
            pause = RECONNECT_FIRST_SECONDS
            self._stop.wait(pause if failing else 0)

    def _listen(self, connection) -> None:
        """LISTEN, then wait for notifications until stopped; raises when the connection breaks."""
        connection.execute(f"LISTEN {CHANNEL}")
        # Deliveries stored while nobody listened (startup, an outage) notified no one: look once.
        self.wake.set()
        with self.changed:
            self.connects += 1
            self.listening.set()
            self.changed.notify_all()
        assert self._signal is not None
        with selectors.DefaultSelector() as selector:
            selector.register(connection.fileno(), selectors.EVENT_READ)
            selector.register(self._signal[0], selectors.EVENT_READ)
            while not self._stop.is_set():
                ready = selector.select()
                if self._stop.is_set():
                    return
                if any(key.fileobj == connection.fileno() for key, _ in ready):
                    # Reads what arrived; raises OperationalError when the server closed the connection.
                    if list(connection.notifies(timeout=0)):
                        self.wake.set()
