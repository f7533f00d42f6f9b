"""Sign-in sessions that can be ended, and the session key every web process shares.

Session generation: each GitHub user (numeric id) has a counter in `session_generation`. A sign-in
stores the current value in the signed cookie; `bot.web.auth.current_user()` compares it with the
database on every request, so bumping the counter ends every session of that user at once —
a cookie copied before the logout, on another device or by an attacker, no longer signs in.
Logout bumps it; so do the owner's key rotations and revocations in the portal (the session that
did it is carried forward, the others end), and any role change can call `end_sessions`.

Shared key: with BEEKEEPER_SECRET_KEY unset, a key generated per process made gunicorn workers
refuse each other's cookies. `shared_secret_key` generates one key on first use and keeps it in
`instance_secret`: insert-if-absent, then read, so two processes starting at once agree on the
row that won. The key is never logged.

No Flask here: the CLI and the services may end sessions too.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.core.clock import utcnow
from bot.core.db import session_scope
from bot.core.models import InstanceSecret, SessionGeneration

SESSION_KEY_NAME = "session_secret_key"  # noqa: S105 - a row name, not a secret


def _insert(session: Session, table):
    return (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(table)


def generation(session: Session, user_id: int) -> int:
    """The user's current session generation (0 when their sessions were never ended)."""
    value = session.execute(select(SessionGeneration.generation)
                            .where(SessionGeneration.github_user_id == int(user_id))).scalar()
    return int(value or 0)


def end_sessions(session: Session, user_id: int) -> int:
    """Bump the user's generation (one atomic upsert); every cookie issued before is stale.
    Returns the new generation, which the caller may give to a session it keeps."""
    table = SessionGeneration.__table__
    now = utcnow()
    statement = _insert(session, table).values(github_user_id=int(user_id), generation=1, updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.github_user_id],
        set_={"generation": table.c.generation + 1, "updated_at": now},
    ).returning(table.c.generation)
    return int(session.execute(statement).scalar_one())


def shared_secret_key(engine: Engine, name: str = SESSION_KEY_NAME) -> str:
    """The key stored under `name`, generated and stored first if there is none. Race-safe across
    processes: INSERT … ON CONFLICT DO NOTHING, then read whichever row is there."""
    with session_scope(engine) as session:
        statement = _insert(session, InstanceSecret.__table__).values(
            name=name, value=secrets.token_urlsafe(48), created_at=utcnow()).on_conflict_do_nothing()
        session.execute(statement)
    with session_scope(engine) as session:
        return session.execute(select(InstanceSecret.value).where(InstanceSecret.name == name)).scalar_one()
