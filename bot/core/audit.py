"""The audit trail: every state change writes one row saying who did what, when, from where.

`record()` also carries an optional idempotency key. Side effects that must happen once
(an approval, a grant) record their audit row with a key such as "approve:42"; a second
attempt finds the row (or hits the unique constraint) and does nothing. The unique index makes
this hold across processes, which is what "exactly once" needs with several workers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bot.core.clock import utcnow
from bot.core.models import AuditEvent


def record(
    session: Session,
    actor: str,
    action: str,
    *,
    request_id: int | None = None,
    grant_id: int | None = None,
    subject: str | None = None,
    source: str | None = None,
    details: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    flush: bool = True,
) -> AuditEvent:
    """Add the audit row. `flush=False` leaves it to the session's next flush (no id yet), so
    a caller writing several rows and row changes sends them together: the rows are written in
    the order they were recorded, and in the same transaction either way."""
    event = AuditEvent(
        at=utcnow(),
        actor=actor,
        action=action,
        request_id=request_id,
        grant_id=grant_id,
        subject=subject,
        source=source,
        details=details or {},
        idempotency_key=idempotency_key,
    )
    session.add(event)
    if flush:
        session.flush()
    return event


def already_done(session: Session, idempotency_key: str) -> AuditEvent | None:
    """The audit row of a side effect already performed under this key, if any."""
    return session.exec(select(AuditEvent).where(AuditEvent.idempotency_key == idempotency_key)).first()


def claim_once(session: Session, idempotency_key: str, actor: str, action: str, **fields: Any) -> bool:
    """Insert the audit row for a once-only action; False if another transaction already did.

    Uses a savepoint so that losing the race leaves the caller's transaction usable.
    """
    if already_done(session, idempotency_key):
        return False
    try:
        with session.begin_nested():
            record(session, actor, action, idempotency_key=idempotency_key, **fields)
    except IntegrityError:
        return False
    return True
