"""The allowlist that gateways pull: building it, versioning it, signing it, serving it.

One document describes every active grant: its tier, domains, referrer names and the SHA-256 of
its keys (never a key). It carries the allowlist `version` (bot.versioning: every grant or key
change bumps it), `generated_at` and `expires_at`, after which a gateway stops trusting it.

What a gateway needs, and how the pieces give it:

* **Freshness it can prove.** `expires_at` is inside the signed payload, so a replayed or cached
  document dies on time. Documents are stamped per *window* of half the TTL:
  `generated_at = max(window start, time of the version's change)` and
  `expires_at = generated_at + ttl_seconds`, so a served document always has at least half its
  TTL left, and every process builds byte-identical documents for one (version, policy, window).
* **Cheap polling.** The ETag names that stamp (version, policy fingerprint, window, and the
  signing kid for JWS; `-gz` when gzip-encoded), so it is a true strong validator that needs no
  document to compute: `If-None-Match` is answered 304 after one small query. A gateway that
  polls with `?since=<its version>` gets 304 while nothing changed, an empty delta with a fresh
  `expires_at` when only the window moved, and only the changed grants otherwise.
* **Deltas.** `?since=N` lists the grants changed after N (upserts, their whole current state)
  and the grants revoked after N (tombstones). A `since` older than `delta_history` versions, or
  older than the change log still holds, answers 410: pull the full list.

Documents are built with three queries (grants, domains, keys) inside one snapshot, serialised
once per stamp and kept in a small in-process cache (plain, gzip and signed forms).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import func
from sqlmodel import Session, select

from bot import audit, gateways, signing, versioning
from bot.clock import isoformat, utcnow
from bot.config import Policy
from bot.db import is_sqlite
from bot.metrics import ALLOWLIST_PULLS
from bot.models import (
    AllowlistChange,
    AllowlistCounter,
    ApiKey,
    Gateway,
    Grant,
    GrantDomain,
    GrantStatus,
    SigningKey,
)

MEDIA_JSON = "application/json"
MEDIA_JOSE = "application/jose"
SCHEMA_VERSION = 1


class DeltaUnavailable(Exception):
    """`since` cannot be answered with a delta; the gateway must pull the full list (410)."""

    def __init__(self, message: str, *, version: int, oldest_since: int | None):
        super().__init__(message)
        self.version = version
        self.oldest_since = oldest_since


# --------------------------------------------------------------------------------------------
# Stamps and ETags
# --------------------------------------------------------------------------------------------


def tiers_section(policy: Policy) -> dict[str, Any]:
    """Tier name → rank and limits, lowest rank first."""
    return {t.name: {"rank": t.rank, "limits": t.limits()} for t in sorted(policy.tiers, key=lambda t: t.rank)}


def policy_fingerprint(policy: Policy) -> str:
    """A short hash of everything in the policy that shapes the document (tiers, TTL, key prefix)."""
    shaping = {"tiers": tiers_section(policy), "ttl": policy.allowlist.ttl_seconds, "prefix": policy.keys.prefix,
               "schema": SCHEMA_VERSION}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Stamp:
    """What a served document's bytes depend on (besides the grants of its version)."""

    version: int
    fingerprint: str
    window: int  # epoch seconds at which the current half-TTL window began
    epoch: str | None = None  # the allowlist epoch (see ensure_epoch)

    def etag(self, *, signed_by: str | None = None, gzipped: bool = False) -> str:
        tag = f"{self.version}-{self.fingerprint}-{self.window:x}"
        if self.epoch:
            tag += f"-e{self.epoch[:8]}"
        if signed_by:
            tag += f"-jws-{signed_by[:12]}"
        if gzipped:
            tag += "-gz"
        return f'"{tag}"'


def window_start(now: datetime, ttl_seconds: int) -> int:
    half = max(ttl_seconds // 2, 1)
    return int(now.timestamp()) // half * half


def stamp_for(version: int, policy: Policy, now: datetime | None = None,
              fingerprint: str | None = None, epoch: str | None = None) -> Stamp:
    return Stamp(version, fingerprint or policy_fingerprint(policy),
                 window_start(now or utcnow(), policy.allowlist.ttl_seconds), epoch)


# --------------------------------------------------------------------------------------------
# The epoch: lets gateways accept a deliberate version reset (a database restore)
# --------------------------------------------------------------------------------------------


def make_epoch(after: str | None = None) -> str:
    """A new epoch: `<start, unix seconds>.<16 random hex digits>`, starting after `after`'s
    start (epochs are ordered by their start: a gateway never goes back to an older one)."""
    start = int(utcnow().timestamp())
    previous = (after or "").partition(".")[0]
    if previous.isdigit():
        start = max(start, int(previous) + 1)
    return f"{start}.{secrets.token_hex(8)}"


def current_epoch(session: Session) -> str | None:
    """The allowlist epoch (make_epoch; None until `new_epoch` first runs: the oldest epoch of
    all), sent in every document. A gateway refuses a version lower
    than the highest it has seen in the same epoch; in a newer epoch (`new_epoch`) it accepts
    it. Read from the counter row the version was read from (no extra query)."""
    row = session.get(AllowlistCounter, 1)
    return row.epoch if row else None


def new_epoch(session: Session, actor: str) -> tuple[str | None, str]:
    """`beekeeper allowlist new-epoch`: after restoring a backup (the version went down), start a
    new epoch so gateways accept the restored, lower version. Returns (old, new)."""
    row = session.exec(select(AllowlistCounter).where(AllowlistCounter.id == 1).with_for_update()).first()
    if row is None:  # an empty database: the counter row comes with the first migration, but be sure
        row = AllowlistCounter(id=1, version=0)
    old = row.epoch
    new = make_epoch(after=old)
    row.epoch = new
    session.add(row)
    audit.record(session, actor, "allowlist.new_epoch", subject=new,
                 details={"previous": old, "version": versioning.current_version(session)})
    session.flush()
    return old, new


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # SQLite returns naive datetimes; every stored time is UTC


def _times(session: Session, stamp: Stamp, ttl_seconds: int) -> tuple[datetime, datetime]:
    """(generated_at, expires_at): determined by the stamp alone, so every process agrees."""
    generated = datetime.fromtimestamp(stamp.window, UTC)
    changed_at = _aware(session.exec(select(func.max(AllowlistChange.at))
                                     .where(AllowlistChange.version == stamp.version)).one())
    if changed_at is not None:
        generated = max(generated, changed_at.replace(microsecond=0))
    return generated, generated + timedelta(seconds=ttl_seconds)


# --------------------------------------------------------------------------------------------
# Building documents
# --------------------------------------------------------------------------------------------


def _snapshot(session: Session) -> None:
    """Read the whole document from one snapshot (PostgreSQL REPEATABLE READ); on SQLite every
    transaction already holds the database lock. Call before the session's first query."""
    if not is_sqlite(session.get_bind()) and not session.in_transaction():
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _grant_entries(session: Session, grant_ids) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(active grants as document entries, revoked grants as tombstones) for the grants selected
    by the `grant_ids` subquery — three queries whatever the number of grants."""
    grants = session.execute(
        select(Grant.id, Grant.app_id, Grant.tier, Grant.status, Grant.version)
        .where(Grant.id.in_(grant_ids)).order_by(Grant.id)
    ).all()
    domains: dict[int, list[str]] = {}
    for grant_id, domain in session.execute(
        select(GrantDomain.grant_id, GrantDomain.domain)
        .where(GrantDomain.grant_id.in_(grant_ids), GrantDomain.active == True)  # noqa: E712
        .order_by(GrantDomain.grant_id, GrantDomain.domain)
    ):
        domains.setdefault(grant_id, []).append(domain)
    keys: dict[int, list[dict[str, Any]]] = {}
    for grant_id, key_id, kind, sha256, expires_at, revoked_at in session.execute(
        select(ApiKey.grant_id, ApiKey.id, ApiKey.kind, ApiKey.sha256, ApiKey.expires_at, ApiKey.revoked_at)
        .where(ApiKey.grant_id.in_(grant_ids)).order_by(ApiKey.grant_id, ApiKey.id)
    ):
        entry = {"id": key_id, "kind": kind, "sha256": sha256, "expires_at": isoformat(expires_at)}
        if revoked_at is not None:
            entry["revoked_at"] = isoformat(revoked_at)
        keys.setdefault(grant_id, []).append(entry)
    active, removed = [], []
    for grant_id, app_id, tier, status, version in grants:
        if status == GrantStatus.ACTIVE:
            active.append({"app_id": app_id, "tier": tier, "status": status, "version": version,
                           "domains": domains.get(grant_id, []), "referrers": [app_id],
                           "keys": keys.get(grant_id, [])})
        else:
            removed.append({"app_id": app_id, "status": status, "version": version})
    return active, removed


def _header(stamp: Stamp, policy: Policy, generated: datetime, expires: datetime) -> dict[str, Any]:
    header = {"schema": SCHEMA_VERSION, "version": stamp.version, "generated_at": isoformat(generated),
              "expires_at": isoformat(expires), "key_prefix": policy.keys.prefix, "tiers": tiers_section(policy)}
    if stamp.epoch:
        header["epoch"] = stamp.epoch
    return header


def _serialise(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def build_full(session: Session, policy: Policy, now: datetime | None = None) -> tuple[Stamp, bytes]:
    """The whole allowlist: every active grant. Returns its stamp and its JSON bytes."""
    _snapshot(session)
    stamp = stamp_for(versioning.current_version(session), policy, now, epoch=current_epoch(session))
    generated, expires = _times(session, stamp, policy.allowlist.ttl_seconds)
    active_ids = select(Grant.id).where(Grant.status == GrantStatus.ACTIVE)
    grants, _ = _grant_entries(session, active_ids)
    return stamp, _serialise({**_header(stamp, policy, generated, expires), "grants": grants})


def oldest_answerable_since(session: Session, policy: Policy, version: int) -> int:
    """The smallest `since` a delta can still answer at `version`."""
    by_policy = max(version - policy.allowlist.delta_history, 0)
    oldest_logged = session.exec(select(func.min(AllowlistChange.version))).one()
    by_log = version if oldest_logged is None else oldest_logged - 1
    return max(by_policy, by_log)


def build_delta(session: Session, policy: Policy, since: int, now: datetime | None = None) -> tuple[Stamp, bytes]:
    """Grants changed after `since`: upserts (their whole current state) and tombstones.
    Raises DeltaUnavailable when `since` is ahead of the list or older than the history kept."""
    _snapshot(session)
    version = versioning.current_version(session)
    if since > version:
        raise DeltaUnavailable(f"since={since} is ahead of the current version {version}: pull the full list",
                               version=version, oldest_since=None)
    oldest = oldest_answerable_since(session, policy, version) if since < version else since
    if since < oldest:
        raise DeltaUnavailable(f"since={since} is older than the change history kept (oldest answerable since is "
                               f"{oldest}): pull the full list", version=version, oldest_since=oldest)
    stamp = stamp_for(version, policy, now, epoch=current_epoch(session))
    generated, expires = _times(session, stamp, policy.allowlist.ttl_seconds)
    changed_ids = (select(AllowlistChange.grant_id)
                   .where(AllowlistChange.version > since, AllowlistChange.version <= version).distinct())
    grants, removed = _grant_entries(session, changed_ids) if since < version else ([], [])
    return stamp, _serialise({**_header(stamp, policy, generated, expires), "since": since, "grants": grants,
                              "removed": removed})


def current_stamp(session: Session, policy: Policy, fingerprint: str | None = None) -> Stamp:
    return stamp_for(versioning.current_version(session), policy, fingerprint=fingerprint,
                     epoch=current_epoch(session))


def export_signed(session: Session, policy: Policy) -> tuple[Stamp, bytes]:
    """The full document as a compact JWS (`beekeeper allowlist export`)."""
    key = signing.ensure_key(session)
    session.commit()  # the key (if just created) is kept; the document is read from a fresh snapshot
    stamp, body = build_full(session, policy)
    return stamp, signing.sign(body, key)


# --------------------------------------------------------------------------------------------
# The per-process document cache
# --------------------------------------------------------------------------------------------


class DocumentCache:
    """Serialised documents by (stamp, since, signer kid, gzip), least recently used evicted
    beyond `max_bytes` (the newest entry always stays). A document missing from the cache is
    built by one thread while the others asking for it wait for that build."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            body = self._entries.get(key)
            if body is not None:
                self._entries.move_to_end(key)
            return body

    def put(self, key: tuple, body: bytes) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = body
            self._size += len(body)
            while self._size > self.max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)

    def get_or_build(self, key: tuple, build: Callable[[], tuple[tuple, bytes]]) -> tuple[tuple, bytes]:
        """(key, bytes) from the cache, else from `build()`, which returns the key of what it
        really built (the version may have moved on since `key` was computed)."""
        body = self.get(key)
        if body is not None:
            return key, body
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        try:
            with building:
                body = self.get(key)
                if body is not None:
                    return key, body
                built_key, body = build()
                self.put(built_key, body)
                return built_key, body
        finally:
            with self._lock:
                self._building.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size = 0


def gzip_bytes(body: bytes) -> bytes:
    # mtime=0: the same bytes in every process, as a strong ETag promises.
    return gzip.compress(body, compresslevel=5, mtime=0)


# --------------------------------------------------------------------------------------------
# The web API: /v1/allowlist, /v1/allowlist.jws, /.well-known/jwks.json, /openapi.json
# --------------------------------------------------------------------------------------------

bp = Blueprint("allowlist", __name__)

# A CDN in front may store the document (even though requests carry Authorization: `public`)
# but must revalidate every time (`no-cache`), so auth, pull counting and freshness stay ours.
CACHE_CONTROL = "public, no-cache"
VARY = "Accept, Accept-Encoding"


@dataclass
class ServingState:
    """Per-app, per-process: the document cache, the pull recorder, the policy fingerprint."""

    cache: DocumentCache
    pulls: gateways.PullRecorder
    fingerprint: str


@bp.record_once
def _init_state(setup_state) -> None:
    runtime = setup_state.app.extensions["beekeeper"]
    setup_state.app.extensions["beekeeper_allowlist"] = ServingState(
        cache=DocumentCache(),
        pulls=gateways.PullRecorder(runtime.engine, runtime.policy.allowlist.pull_stats_flush_seconds),
        fingerprint=policy_fingerprint(runtime.policy),
    )


def _state() -> ServingState:
    return current_app.extensions["beekeeper_allowlist"]


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify(error=code, message=message, **extra)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _unauthorized(message: str) -> Response:
    ALLOWLIST_PULLS.labels(gateway="-", outcome="unauthorized").inc()
    response = _error(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="beekeeper-allowlist"'
    return response


def _wants_jose() -> bool:
    return request.accept_mimetypes.best_match([MEDIA_JSON, MEDIA_JOSE], default=MEDIA_JSON) == MEDIA_JOSE


def _authenticate(engine, digest: str) -> tuple[int, str, int, str | None, str | None] | None:
    """(gateway id, name, current version, signer kid, epoch) in one query, or None for a bad credential."""
    version = select(AllowlistCounter.version).where(AllowlistCounter.id == 1).scalar_subquery()
    epoch = select(AllowlistCounter.epoch).where(AllowlistCounter.id == 1).scalar_subquery()
    kid = (select(SigningKey.kid).where(SigningKey.active == True)  # noqa: E712
           .order_by(SigningKey.id.desc()).limit(1).scalar_subquery())
    with Session(engine) as session:
        row = session.execute(
            select(Gateway.id, Gateway.name, version, kid, epoch)
            .where(Gateway.sha256 == digest, Gateway.revoked_at == None)  # noqa: E711
        ).first()
    return tuple(row) if row else None


def _ensure_kid(engine) -> str:
    with Session(engine) as session:
        key = signing.ensure_key(session)
        session.commit()
        return key.kid


def _build(engine, policy: Policy, since: int | None) -> tuple[tuple, bytes]:
    with Session(engine) as session:
        if since is None:
            stamp, body = build_full(session, policy)
        else:
            stamp, body = build_delta(session, policy, since)
        session.rollback()  # read only
    return ("json", stamp, since), body


def _representation(state: ServingState, engine, policy: Policy, stamp: Stamp, since: int | None,
                    kid: str | None, gzipped: bool) -> tuple[Stamp, bytes]:
    """The document bytes for this stamp: JSON, signed (JWS by `kid`) and/or gzip-encoded."""
    (_, stamp, _), body = state.cache.get_or_build(("json", stamp, since), lambda: _build(engine, policy, since))
    if kid is not None:
        json_body = body

        def sign() -> tuple[tuple, bytes]:
            with Session(engine) as session:
                key = session.exec(select(SigningKey).where(SigningKey.kid == kid)).one()
                return ("jws", stamp, since, kid), signing.sign(json_body, key)

        _, body = state.cache.get_or_build(("jws", stamp, since, kid), sign)
    if gzipped:
        plain = body
        _, body = state.cache.get_or_build(("gz", stamp, since, kid),
                                           lambda: (("gz", stamp, since, kid), gzip_bytes(plain)))
    return stamp, body


def _serve(signed: bool) -> Response:
    runtime = current_app.extensions["beekeeper"]
    policy, engine, state = runtime.policy, runtime.engine, _state()
    since: int | None = None
    if "since" in request.args:
        raw = request.args["since"].strip()
        if not raw.isdigit() or len(raw) > 18:
            return _error(400, "bad_since", "since must be a version number (a non-negative integer)")
        since = int(raw)
    digest = gateways.credential_hash(request.headers.get("Authorization"), policy.keys.prefix)
    if digest is None:
        return _unauthorized("send the gateway credential as `Authorization: Bearer <prefix>_gw_…`")
    found = _authenticate(engine, digest)
    if found is None:
        return _unauthorized("unknown or revoked gateway credential")
    gateway_id, gateway_name, version, kid, epoch = found
    if signed and kid is None:
        kid = _ensure_kid(engine)
    kid = kid if signed else None
    gzipped = request.accept_encodings["gzip"] > 0
    stamp = stamp_for(version or 0, policy, fingerprint=state.fingerprint, epoch=epoch)
    etag = stamp.etag(signed_by=kid, gzipped=gzipped)
    if request.if_none_match.contains_weak(etag.strip('"')):
        # The gateway holds this very stamp: no document is built or even looked up.
        state.pulls.record(gateway_id, stamp.version)
        ALLOWLIST_PULLS.labels(gateway=gateway_name, outcome="not_modified").inc()
        return _headers(Response(status=304), etag, stamp)
    try:
        stamp, body = _representation(state, engine, policy, stamp, since, kid, gzipped)
    except DeltaUnavailable as exc:
        state.pulls.record(gateway_id, None)
        ALLOWLIST_PULLS.labels(gateway=gateway_name, outcome="gone").inc()
        return _error(410, "since_too_old", str(exc), version=exc.version, oldest_since=exc.oldest_since,
                      hint="GET /v1/allowlist without `since` for the full list")
    state.pulls.record(gateway_id, stamp.version)
    ALLOWLIST_PULLS.labels(gateway=gateway_name, outcome="delta" if since is not None else "full").inc()
    response = Response(body, status=200, mimetype=MEDIA_JOSE if kid else MEDIA_JSON)
    if gzipped:
        response.headers["Content-Encoding"] = "gzip"
    return _headers(response, stamp.etag(signed_by=kid, gzipped=gzipped), stamp)


def _headers(response: Response, etag: str, stamp: Stamp) -> Response:
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.headers["Vary"] = VARY
    response.headers["X-Allowlist-Version"] = str(stamp.version)
    return response


@bp.get("/v1/allowlist")
def allowlist_document():
    """JSON by default; a compact JWS when the gateway asks `Accept: application/jose`."""
    return _serve(signed=_wants_jose())


@bp.get("/v1/allowlist.jws")
def allowlist_signed():
    return _serve(signed=True)


@bp.get("/.well-known/jwks.json")
def jwks_document():
    runtime = current_app.extensions["beekeeper"]
    with Session(runtime.engine) as session:
        if signing.current_key(session) is None:
            signing.ensure_key(session)
            session.commit()
        body = signing.jwks(session, runtime.policy)
    response = jsonify(body)
    # Short: after a rotation a gateway refetches on the unknown kid and must see the new key soon.
    response.headers["Cache-Control"] = "public, max-age=60"
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/openapi.json")
def openapi_document():
    from bot.openapi import openapi

    response = jsonify(openapi())
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
