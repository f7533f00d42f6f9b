"""The one source of "now", so tests can move time (key grace periods, leases, expiry).

Code asks `clock.utcnow()`; a test installs a FrozenClock with `clock.use(...)` and advances it.
Times are timezone-aware UTC (SQLModel stores them as UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None):
        self.current = start or SystemClock().now()

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


_clock: SystemClock | FrozenClock = SystemClock()


def utcnow() -> datetime:
    return _clock.now()


def use(clock: SystemClock | FrozenClock | None) -> None:
    """Install a clock (None restores the system clock)."""
    global _clock
    _clock = clock or SystemClock()


def isoformat(value: datetime | None) -> str | None:
    """RFC 3339 with a Z, the form used in JSON documents."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"
