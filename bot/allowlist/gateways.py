"""Gateway credentials: who may pull the allowlist, and what each gateway last pulled.

A credential looks like every other Beekeeper key (`<prefix>_gw_…`, beekeeper_gateway.keyformat). Its
plaintext is shown once by `beekeeper gateways add NAME`; only its SHA-256 is stored. Revoking a
gateway makes its very next request answer 401.

Pulls are counted per gateway (count, time of the last pull, version it now holds). A 304 must
stay cheap, so pulls are tallied in memory and written to the gateway rows at most every
`policy.allowlist.pull_stats_flush_seconds` (0: on every pull) by whichever request comes next,
and once more when the process exits.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from beekeeper_gateway import keyformat
from bot.core import audit
from bot.core.clock import utcnow
from bot.core.models import Gateway, GatewayPullHour

log = logging.getLogger("beekeeper.gateways")

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class GatewayError(Exception):
    """A gateway command could not be carried out; the message says why."""


@dataclass(frozen=True)
class AuthenticatedGateway:
    id: int
    name: str


def add(session: Session, name: str, prefix: str, actor: str) -> tuple[Gateway, str]:
    """Register a gateway: (its row, the plaintext credential — show it once, never store it)."""
    name = (name or "").strip().lower()
    if not NAME_PATTERN.match(name):
        raise GatewayError(f"gateway name {name!r}: use 1-64 lowercase letters, digits, '.', '_' or '-'")
    if session.exec(select(Gateway).where(Gateway.name == name)).first() is not None:
        raise GatewayError(f"a gateway named {name!r} already exists (revoke it, then add another name)")
    credential = keyformat.generate(prefix, "gw")
    gateway = Gateway(name=name, sha256=keyformat.sha256_hex(credential), display=keyformat.display(credential),
                      created_at=utcnow())
    session.add(gateway)
    session.flush()
    audit.record(session, actor, "gateway.added", subject=name, source="cli", details={"display": gateway.display})
    return gateway, credential


def list_gateways(session: Session) -> list[Gateway]:
    """Active gateways first, then revoked ones, each by name."""
    return list(session.exec(select(Gateway).order_by(Gateway.revoked_at.is_not(None), Gateway.name)).all())


def find(session: Session, ref: str) -> Gateway | None:
    """A gateway by name or numeric id."""
    ref = (ref or "").strip()
    if ref.isdigit():
        found = session.get(Gateway, int(ref))
        if found is not None:
            return found
    return session.exec(select(Gateway).where(Gateway.name == ref.lower())).first()


def revoke(session: Session, ref: str, actor: str) -> Gateway:
    """Revoke a gateway's credential; its next pull answers 401."""
    gateway = find(session, ref)
    if gateway is None:
        raise GatewayError(f"no gateway named {ref!r}")
    if gateway.revoked_at is not None:
        raise GatewayError(f"gateway {gateway.name!r} was already revoked")
    gateway.revoked_at = utcnow()
    session.add(gateway)
    audit.record(session, actor, "gateway.revoked", subject=gateway.name, source="cli")
    session.flush()
    return gateway


def credential_hash(authorization: str | None, prefix: str) -> str | None:
    """SHA-256 of the bearer credential in an Authorization header, if it is a well-formed
    gateway credential of this prefix (checksum verified, so garbage costs no lookup)."""
    scheme, _, credential = (authorization or "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not keyformat.is_valid(credential, prefix, "gw"):
        return None
    return keyformat.sha256_hex(credential)


def authenticate(session: Session, authorization: str | None, prefix: str) -> AuthenticatedGateway | None:
    """The active gateway holding the bearer credential, or None (missing, wrong or revoked)."""
    digest = credential_hash(authorization, prefix)
    if digest is None:
        return None
    row = session.exec(select(Gateway.id, Gateway.name).where(Gateway.sha256 == digest,
                                                             Gateway.revoked_at == None)).first()  # noqa: E711
    return AuthenticatedGateway(id=row[0], name=row[1]) if row else None


# --------------------------------------------------------------------------------------------
# Pull statistics
# --------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    count: int
    last_at: datetime
    version: int | None  # the version the gateway holds after its last pull (None: unchanged)


class PullRecorder:
    """Counts pulls per gateway in memory and writes them to the gateway rows in batches."""

    def __init__(self, engine: Engine, flush_seconds: float):
        self.engine = engine
        self.flush_seconds = flush_seconds
        self._pending: dict[int, _Tally] = {}
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        _recorders.add(self)

    def record(self, gateway_id: int, version: int | None) -> None:
        now = utcnow()
        with self._lock:
            tally = self._pending.get(gateway_id)
            if tally is None:
                self._pending[gateway_id] = _Tally(1, now, version)
            else:
                tally.count += 1
                tally.last_at = max(tally.last_at, now)
                if version is not None:
                    tally.version = version if tally.version is None else max(tally.version, version)
            due = time.monotonic() - self._last_flush >= self.flush_seconds
        if due:
            self.flush()

    def flush(self) -> None:
        """Add the tallied pulls to the gateway rows (one UPDATE per gateway, one transaction)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        if not pending:
            return
        with Session(self.engine) as session:
            for gateway_id, tally in pending.items():
                values = {
                    "pull_count": Gateway.pull_count + tally.count,
                    "last_pull_at": case((Gateway.last_pull_at == None, tally.last_at),  # noqa: E711
                                         (Gateway.last_pull_at < tally.last_at, tally.last_at),
                                         else_=Gateway.last_pull_at),
                }
                if tally.version is not None:
                    values["last_version"] = tally.version
                session.execute(update(Gateway).where(Gateway.id == gateway_id).values(**values))
            add_pull_hours(session, {gateway_id: (tally.last_at, tally.count, tally.version)
                                     for gateway_id, tally in pending.items()})
            session.commit()



# --- pulls per hour, for the dashboard overview (issue 20) ------------------------------------

PULL_HOURS_KEPT_DAYS = 35


def add_pull_hours(session: Session, pulls: dict[int, tuple[datetime, int, int | None]]) -> None:
    """Add {gateway id: (time, count, version held)} to the gateways' hourly rows (one upsert
    each; a batch spanning the turn of an hour counts in the hour of its last pull), and delete
    rows older than PULL_HOURS_KEPT_DAYS (an index range that is empty but once an hour)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    new_hours = set()
    for gateway_id, (at, count, version) in pulls.items():
        hour = at.replace(minute=0, second=0, microsecond=0)
        statement = insert(GatewayPullHour).values(gateway_id=gateway_id, hour=hour, pulls=count, version=version)
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["gateway_id", "hour"],
            set_={"pulls": GatewayPullHour.pulls + excluded.pulls,
                  "version": case((excluded.version == None, GatewayPullHour.version),  # noqa: E711
                                  (GatewayPullHour.version == None, excluded.version),  # noqa: E711
                                  (excluded.version > GatewayPullHour.version, excluded.version),
                                  else_=GatewayPullHour.version)})
        session.execute(statement)
        new_hours.add(hour)
    if new_hours:
        cutoff = max(new_hours) - timedelta(days=PULL_HOURS_KEPT_DAYS)
        session.execute(delete(GatewayPullHour).where(GatewayPullHour.hour < cutoff))


_recorders: weakref.WeakSet[PullRecorder] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Write what the live recorders still hold (an app that was dropped took its tallies along)."""
    for recorder in list(_recorders):
        try:
            recorder.flush()
        except Exception:  # noqa: BLE001 - the database may be gone at exit; counts are statistics
            log.warning("could not write the gateways' pull counts at exit")
