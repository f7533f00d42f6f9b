"""The allowlist version: one monotonic integer bumped by every grant or key change.

Bumping updates a single counter row. On PostgreSQL the UPDATE holds that row's lock until the
transaction commits, so concurrent bumps serialise and versions become visible in increasing
order: a gateway that has seen version N never misses a change numbered below N. On SQLite the
database-wide write lock gives the same guarantee.
"""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlmodel import Session

from bot.core.clock import utcnow
from bot.core.models import AllowlistChange, AllowlistCounter, Grant


def current_version(session: Session) -> int:
    row = session.get(AllowlistCounter, 1)
    return row.version if row else 0


def _ensure_counter(session: Session) -> None:
    if session.execute(select(AllowlistCounter.id).where(AllowlistCounter.id == 1)).first() is None:
        session.add(AllowlistCounter(id=1, version=0))
        session.flush()


def _next_version(session: Session) -> int:
    """The counter's next version (the row lock serialises concurrent bumps)."""
    _ensure_counter(session)
    return session.execute(
        update(AllowlistCounter)
        .where(AllowlistCounter.id == 1)
        .values(version=AllowlistCounter.version + 1)
        .returning(AllowlistCounter.version)
    ).scalar_one()


def bump(session: Session, grant: Grant, change: str) -> int:
    """Give `grant`'s latest change a new version and log it for deltas; returns the version."""
    return bump_many(session, [grant], change)


def bump_many(session: Session, grants: list[Grant], change: str) -> int | None:
    """One new version for a batch of grants changed together (an import): each gets it and a
    change-log row, so a delta since the version before lists them all. None for no grants."""
    if not grants:
        return None
    version = _next_version(session)
    now = utcnow()
    for grant in grants:
        grant.version = version
        grant.updated_at = now
        session.add(grant)
        session.add(AllowlistChange(version=version, grant_id=grant.id, app_id=grant.app_id, change=change, at=now))
    session.flush()
    return version


def prune_changes(session: Session, keep_versions: int) -> int:
    """Forget change-log rows older than the last `keep_versions` versions; returns how many.

    Deltas for a `since` older than what is kept answer 410 (pull the full list), so the log
    stays bounded however long the platform runs."""
    cutoff = current_version(session) - keep_versions
    if cutoff <= 0:
        return 0
    result = session.execute(delete(AllowlistChange).where(AllowlistChange.version <= cutoff))
    return result.rowcount or 0
