"""The allowlist that gateways pull: building it, versioning it, signing it, serving it.

One document describes every active grant: its tier, domains, referrer names and the SHA-256 of
its keys (never a key). It carries the allowlist `version` (bot.allowlist.versioning: every grant or key
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

import base64
import gzip
import hashlib
import json
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import orjson
from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import func
from sqlmodel import Session, select
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header, parse_etags

from bot.allowlist import gateways, signing, versioning
from bot.core import audit
from bot.core.clock import isoformat, utcnow
from bot.core.config import Policy
from bot.core.db import is_sqlite
from bot.core.metrics import ALLOWLIST_PULLS
from bot.core.models import (
    AllowlistChange,
    AllowlistCounter,
    ApiKey,
    Grant,
    GrantDomain,
    GrantStatus,
    SigningKey,
)

try:  # zstd by Accept-Encoding when the zstandard package is installed (a main dependency)
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None

MEDIA_JSON = "application/json"
MEDIA_JOSE = "application/jose"
SCHEMA_VERSION = 1
# Format 2: grants as rows under a column header, digests as base64url bytes, signature detached.
MEDIA_V2 = "application/vnd.beekeeper.allowlist+json"
CONTENT_TYPE_V2 = MEDIA_V2 + "; format=2"
FORMAT_2_COLUMNS = {"grants": ["app_id", "tier", "version", "domains", "keys"],
                    "keys": ["sha256", "kind", "expires_at", "revoked_at"],
                    "removed": ["app_id", "status", "version"]}
ENCODING_TAGS = {"gzip": "-gz", "zstd": "-zst"}


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

    def etag(self, *, signed_by: str | None = None, gzipped: bool = False, fmt: int = 1,
             encoding: str | None = None) -> str:
        """One strong ETag per representation: format 1 JSON or JWS, format 2 (`-f2`, with the
        signer of its detached signature), and the content coding (`-gz`, `-zst`)."""
        tag = f"{self.version}-{self.fingerprint}-{self.window:x}"
        if self.epoch:
            tag += f"-e{self.epoch[:8]}"
        if fmt == 2:
            tag += f"-f2-{signed_by[:12]}" if signed_by else "-f2"
        elif signed_by:
            tag += f"-jws-{signed_by[:12]}"
        encoding = encoding or ("gzip" if gzipped else None)
        if encoding:
            tag += ENCODING_TAGS[encoding]
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


def _b64_digest(sha256_hex: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).rstrip(b"=").decode()


def _grant_entries(session: Session, grant_ids, fmt: int = 1) -> tuple[list, list]:
    """(active grants as document entries, revoked grants as tombstones) for the grants selected
    by the `grant_ids` subquery — three queries whatever the number of grants. Format 2: rows of
    arrays in the order of FORMAT_2_COLUMNS (no key ids, no referrers: a grant's referrer name
    is its app id), digests as base64url of the raw 32 bytes."""
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
        if fmt == 2:
            entry = [_b64_digest(sha256), kind, isoformat(expires_at),
                     None if revoked_at is None else isoformat(revoked_at)]
        else:
            entry = {"id": key_id, "kind": kind, "sha256": sha256, "expires_at": isoformat(expires_at)}
            if revoked_at is not None:
                entry["revoked_at"] = isoformat(revoked_at)
        keys.setdefault(grant_id, []).append(entry)
    active, removed = [], []
    if fmt == 2:
        for grant_id, app_id, tier, status, version in grants:
            if status == GrantStatus.ACTIVE:
                active.append([app_id, tier, version, domains.get(grant_id, []), keys.get(grant_id, [])])
            else:
                removed.append([app_id, status, version])
        return active, removed
    for grant_id, app_id, tier, status, version in grants:
        if status == GrantStatus.ACTIVE:
            active.append({"app_id": app_id, "tier": tier, "status": status, "version": version,
                           "domains": domains.get(grant_id, []), "referrers": [app_id],
                           "keys": keys.get(grant_id, [])})
        else:
            removed.append({"app_id": app_id, "status": status, "version": version})
    return active, removed


def _header(stamp: Stamp, policy: Policy, generated: datetime, expires: datetime, fmt: int = 1) -> dict[str, Any]:
    header = {"schema": SCHEMA_VERSION, "version": stamp.version, "generated_at": isoformat(generated),
              "expires_at": isoformat(expires), "key_prefix": policy.keys.prefix, "tiers": tiers_section(policy)}
    if stamp.epoch:
        header["epoch"] = stamp.epoch
    if fmt == 2:
        header["format"] = 2
        header["columns"] = FORMAT_2_COLUMNS
    return header


def _serialise(document: dict[str, Any], fmt: int = 1) -> bytes:
    if fmt == 2:
        return orjson.dumps(document)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def build_full(session: Session, policy: Policy, now: datetime | None = None, fmt: int = 1) -> tuple[Stamp, bytes]:
    """The whole allowlist: every active grant. Returns its stamp and its JSON bytes (format `fmt`)."""
    _snapshot(session)
    stamp = stamp_for(versioning.current_version(session), policy, now, epoch=current_epoch(session))
    generated, expires = _times(session, stamp, policy.allowlist.ttl_seconds)
    active_ids = select(Grant.id).where(Grant.status == GrantStatus.ACTIVE)
    grants, _ = _grant_entries(session, active_ids, fmt)
    return stamp, _serialise({**_header(stamp, policy, generated, expires, fmt), "grants": grants}, fmt)


def oldest_answerable_since(session: Session, policy: Policy, version: int) -> int:
    """The smallest `since` a delta can still answer at `version`."""
    by_policy = max(version - policy.allowlist.delta_history, 0)
    oldest_logged = session.exec(select(func.min(AllowlistChange.version))).one()
    by_log = version if oldest_logged is None else oldest_logged - 1
    return max(by_policy, by_log)


def build_delta(session: Session, policy: Policy, since: int, now: datetime | None = None,
                fmt: int = 1) -> tuple[Stamp, bytes]:
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
    grants, removed = _grant_entries(session, changed_ids, fmt) if since < version else ([], [])
    return stamp, _serialise({**_header(stamp, policy, generated, expires, fmt), "since": since, "grants": grants,
                              "removed": removed}, fmt)


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


def zstd_bytes(body: bytes) -> bytes:
    # Level 6: a 21 MB format 2 document in about a tenth of gzip's time, and smaller; the same
    # bytes in every process (no dictionary, no threads), as a strong ETag promises.
    return zstandard.ZstdCompressor(level=6, write_content_size=True).compress(body)


def compress(body: bytes, encoding: str) -> bytes:
    return zstd_bytes(body) if encoding == "zstd" else gzip_bytes(body)


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


# The gateway credential is checked (and the version, signer and epoch read) by one statement on
# a pooled DBAPI connection: no ORM session or query object per poll. PostgreSQL prepares it
# server-side after a few executions on a connection (psycopg's prepare_threshold); SQLite keeps
# it compiled in the connection's statement cache.
_AUTH_SQL = ("SELECT g.id, g.name, (SELECT c.version FROM allowlist_counter c WHERE c.id = 1), "
             "(SELECT k.kid FROM signing_key k WHERE k.active ORDER BY k.id DESC LIMIT 1), "
             "(SELECT c.epoch FROM allowlist_counter c WHERE c.id = 1) "
             "FROM gateway g WHERE g.sha256 = {mark} AND g.revoked_at IS NULL")


class CredentialLookup:
    """`(gateway id, name, current version, signer kid, epoch)` for a credential digest, or None."""

    def __init__(self, engine):
        from bot.core.db import intake_engine

        self.source = engine
        self.engine = intake_engine(engine)  # PostgreSQL: autocommit, so a read is one round trip
        self.sql = _AUTH_SQL.format(mark="?" if self.engine.dialect.paramstyle == "qmark" else "%s")
        self.pid = os.getpid()
        self.dbapi_error = self.engine.dialect.loaded_dbapi.Error
        self.statements = 0  # statements sent (tests count them: SQLAlchemy's events do not see these)

    def __call__(self, digest: str) -> tuple[int, str, int, str | None, str | None] | None:
        if self.pid != os.getpid():  # forked: the parent's pooled connections are not ours
            self.engine.dispose(close=False)
            self.pid = os.getpid()
        for attempt in (1, 2):
            pooled = self.engine.raw_connection()
            try:
                cursor = pooled.driver_connection.cursor()
                try:
                    self.statements += 1
                    cursor.execute(self.sql, (digest,))
                    row = cursor.fetchone()
                finally:
                    cursor.close()
                return tuple(row) if row else None
            except self.dbapi_error:
                pooled.invalidate()  # a connection the server closed: once more, on a fresh one
                if attempt == 2:
                    raise
            finally:
                pooled.close()
        return None  # pragma: no cover


def _authenticate(engine, digest: str) -> tuple[int, str, int, str | None, str | None] | None:
    """(gateway id, name, current version, signer kid, epoch) in one query, or None for a bad credential."""
    return _lookup_for(engine)(digest)


_lookups: dict[int, CredentialLookup] = {}


def _lookup_for(engine) -> CredentialLookup:
    """One CredentialLookup per engine (the process's engines live as long as it does)."""
    lookup = _lookups.get(id(engine))
    if lookup is None or lookup.source is not engine:
        lookup = _lookups[id(engine)] = CredentialLookup(engine)
    return lookup


def _ensure_kid(engine) -> str:
    with Session(engine) as session:
        key = signing.ensure_key(session)
        session.commit()
        return key.kid


def _build(engine, policy: Policy, since: int | None, fmt: int = 1) -> tuple[tuple, bytes]:
    with Session(engine) as session:
        if since is None:
            stamp, body = build_full(session, policy, fmt=fmt)
        else:
            stamp, body = build_delta(session, policy, since, fmt=fmt)
        session.rollback()  # read only
    return ("json", stamp, since, fmt), body


def _signing_key(engine, kid: str) -> SigningKey:
    with Session(engine, expire_on_commit=False) as session:
        return session.exec(select(SigningKey).where(SigningKey.kid == kid)).one()


def _representation(state: ServingState, engine, policy: Policy, stamp: Stamp, since: int | None,
                    kid: str | None, gzipped: bool = False, fmt: int = 1,
                    encoding: str | None = None, build: bool = True) -> tuple[Stamp, bytes, bytes | None] | None:
    """(stamp, body, detached signature) for this stamp: JSON, signed (JWS by `kid`, format 1;
    a detached signature by `kid`, format 2) and/or compressed. With `build=False`, None when
    any part is not in the cache yet (the caller hands the request to the building path)."""
    encoding = encoding or ("gzip" if gzipped else None)
    cache = state.cache
    if not build:
        body = cache.get(("json", stamp, since, fmt))
        if body is None:
            return None
        signature = None
        if fmt == 2 and kid is not None:
            signature = cache.get(("sig", stamp, since, kid))
            if signature is None:
                return None
        elif kid is not None:
            body = cache.get(("jws", stamp, since, kid))
        if body is not None and encoding:
            body = cache.get((encoding, stamp, since, fmt, kid))
        return None if body is None else (stamp, body, signature)
    (_, stamp, _, _), body = cache.get_or_build(("json", stamp, since, fmt),
                                                lambda: _build(engine, policy, since, fmt))
    signature = None
    if kid is not None:
        json_body = body
        if fmt == 2:
            _, signature = cache.get_or_build(("sig", stamp, since, kid), lambda: (
                ("sig", stamp, since, kid), signing.sign_detached(json_body, _signing_key(engine, kid))))
        else:
            _, body = cache.get_or_build(("jws", stamp, since, kid), lambda: (
                ("jws", stamp, since, kid), signing.sign(json_body, _signing_key(engine, kid))))
    if encoding:
        plain = body
        _, body = cache.get_or_build((encoding, stamp, since, fmt, kid),
                                     lambda: ((encoding, stamp, since, fmt, kid), compress(plain, encoding)))
    return stamp, body, signature


@dataclass(frozen=True)
class Ask:
    """What a poll asks for, read from the request (by Flask or by the WSGI fast path alike)."""

    jws_path: bool  # /v1/allowlist.jws
    since: str | None  # the raw `since` query value
    format: str | None  # the raw `format` query value
    accept: str
    accept_encoding: str
    authorization: str | None
    if_none_match: str | None


_negotiated: dict[tuple[str, str], tuple[int, bool, str | None]] = {}


def negotiate(accept: str, accept_encoding: str) -> tuple[int, bool, str | None]:
    """(format, wants a format 1 JWS, content coding) for these two headers; remembered, since
    a gateway sends the same two headers on every poll."""
    found = _negotiated.get((accept, accept_encoding))
    if found is not None:
        return found
    accepted = parse_accept_header(accept, MIMEAccept)
    fmt = 1
    for value, quality in accepted:
        media, _, params = value.partition(";")
        if media.strip().lower() == MEDIA_V2 and quality > 0 and "format=2" in params.replace(" ", "").lower():
            fmt = 2
    if fmt == 1 and MEDIA_V2 in accept.lower() and "format=2" in accept.replace(" ", "").lower():
        fmt = 2  # a parameter werkzeug folded into the media value
    jose = accepted.best_match([MEDIA_JSON, MEDIA_JOSE], default=MEDIA_JSON) == MEDIA_JOSE
    codings = parse_accept_header(accept_encoding)
    choices = [(codings["zstd"], 1, "zstd")] if zstandard is not None else []
    choices.append((codings["gzip"], 0, "gzip"))
    quality, _, coding = max(choices)
    found = (fmt, jose, coding if quality > 0 else None)
    if len(_negotiated) >= 256:
        _negotiated.clear()
    _negotiated[(accept, accept_encoding)] = found
    return found


def _json_answer(status: int, content: dict[str, Any], extra: list[tuple[str, str]] = ()) -> tuple:
    body = orjson.dumps(content, option=orjson.OPT_SORT_KEYS) + b"\n"
    return status, [("Content-Type", MEDIA_JSON), ("Cache-Control", "no-store"), *extra], body


def _serve_ask(runtime, state: ServingState, ask: Ask, build: bool = True) -> tuple | None:
    """(status, headers, body) for a poll; None when `build` is False and the answer is not in
    the cache yet. The same answer whichever layer asks (Flask view or WSGI fast path)."""
    policy, engine = runtime.policy, runtime.engine
    since: int | None = None
    if ask.since is not None:
        raw = ask.since.strip()
        if not raw.isdigit() or len(raw) > 18:
            return _json_answer(400, {"error": "bad_since",
                                      "message": "since must be a version number (a non-negative integer)"})
        since = int(raw)
    if ask.format is not None and ask.format.strip() not in ("1", "2"):
        return _json_answer(400, {"error": "bad_format", "message": "format must be 1 or 2"})
    fmt, jose, encoding = negotiate(ask.accept, ask.accept_encoding)
    if ask.format is not None:
        fmt = int(ask.format.strip())
    if ask.jws_path:
        fmt = 1  # /v1/allowlist.jws is the format 1 compact JWS, always
    signed = ask.jws_path or jose or fmt == 2
    digest = gateways.credential_hash(ask.authorization, policy.keys.prefix)
    if digest is None:
        return _unauthorized_answer("send the gateway credential as `Authorization: Bearer <prefix>_gw_…`")
    found = _authenticate(engine, digest)
    if found is None:
        return _unauthorized_answer("unknown or revoked gateway credential")
    gateway_id, gateway_name, version, kid, epoch = found
    if signed and kid is None:
        if not build:
            return None
        kid = _ensure_kid(engine)
    kid = kid if signed else None
    stamp = stamp_for(version or 0, policy, fingerprint=state.fingerprint, epoch=epoch)
    etag = stamp.etag(signed_by=kid, fmt=fmt, encoding=encoding)
    if ask.if_none_match and parse_etags(ask.if_none_match).contains_weak(etag.strip('"')):
        # The gateway holds this very stamp: no document is built or even looked up.
        state.pulls.record(gateway_id, stamp.version)
        ALLOWLIST_PULLS.labels(gateway=gateway_name, outcome="not_modified").inc()
        return 304, _headers_for(etag, stamp), b""
    try:
        found = _representation(state, engine, policy, stamp, since, kid, fmt=fmt, encoding=encoding, build=build)
    except DeltaUnavailable as exc:
        state.pulls.record(gateway_id, None)
        ALLOWLIST_PULLS.labels(gateway=gateway_name, outcome="gone").inc()
        return _json_answer(410, {"error": "since_too_old", "message": str(exc), "version": exc.version,
                                  "oldest_since": exc.oldest_since,
                                  "hint": "GET /v1/allowlist without `since` for the full list"})
    if found is None:
        return None
    stamp, body, signature = found
    state.pulls.record(gateway_id, stamp.version)
    ALLOWLIST_PULLS.labels(gateway=gateway_name, outcome="delta" if since is not None else "full").inc()
    media = CONTENT_TYPE_V2 if fmt == 2 else MEDIA_JOSE if kid else MEDIA_JSON
    headers = [("Content-Type", media), *_headers_for(stamp.etag(signed_by=kid, fmt=fmt, encoding=encoding), stamp)]
    if encoding:
        headers.append(("Content-Encoding", encoding))
    if signature is not None:
        headers.append((signing.DETACHED_HEADER, signature.decode()))
    return 200, headers, body


def _unauthorized_answer(message: str) -> tuple:
    ALLOWLIST_PULLS.labels(gateway="-", outcome="unauthorized").inc()
    return _json_answer(401, {"error": "unauthorized", "message": message},
                        [("WWW-Authenticate", 'Bearer realm="beekeeper-allowlist"')])


def _serve(jws_path: bool) -> Response:
    runtime = current_app.extensions["beekeeper"]
    ask = Ask(jws_path=jws_path, since=request.args.get("since"),
              format=request.args.get("format"), accept=request.headers.get("Accept", ""),
              accept_encoding=request.headers.get("Accept-Encoding", ""),
              authorization=request.headers.get("Authorization"), if_none_match=request.headers.get("If-None-Match"))
    status, headers, body = _serve_ask(runtime, _state(), ask)
    response = Response(body, status=status)
    for name, value in headers:
        response.headers[name] = value
    return response


def _headers_for(etag: str, stamp: Stamp) -> list[tuple[str, str]]:
    return [("ETag", etag), ("Cache-Control", CACHE_CONTROL), ("Vary", VARY),
            ("X-Allowlist-Version", str(stamp.version))]


_STATUS_LINES = {200: "200 OK", 304: "304 Not Modified", 400: "400 Bad Request", 401: "401 Unauthorized",
                 410: "410 Gone"}
PATHS = {"/v1/allowlist": False, "/v1/allowlist.jws": True}


class AllowlistFastPath:
    """WSGI layer in front of the Flask app (as bot.intake.webhooks.WebhookIntake): a gateway poll
    whose answer needs no building — a 304, an error, or a document (full or delta, plain or
    compressed, signed) already serialised for this version — is answered here, without
    Flask's routing, request context or response object. Anything else goes on to Flask, whose
    view builds the answer the same way (`_serve_ask`) and caches it for the next poll."""

    def __init__(self, wsgi_app: Callable, flask_app):
        self.wsgi_app = wsgi_app
        self.flask_app = flask_app

    def __call__(self, environ: dict, start_response: Callable):
        jws_path = PATHS.get(environ.get("PATH_INFO"))
        if jws_path is None or environ.get("REQUEST_METHOD") != "GET":
            return self.wsgi_app(environ, start_response)
        query = environ.get("QUERY_STRING", "")
        args = parse_qs(query, keep_blank_values=True) if query else {}
        ask = Ask(jws_path=jws_path, since=args["since"][0] if "since" in args else None,
                  format=args["format"][0] if "format" in args else None, accept=environ.get("HTTP_ACCEPT", ""),
                  accept_encoding=environ.get("HTTP_ACCEPT_ENCODING", ""),
                  authorization=environ.get("HTTP_AUTHORIZATION"), if_none_match=environ.get("HTTP_IF_NONE_MATCH"))
        state = self.flask_app.extensions.get("beekeeper_allowlist")
        answer = _serve_ask(self.flask_app.extensions["beekeeper"], state, ask, build=False) if state else None
        if answer is None:
            return self.wsgi_app(environ, start_response)
        status, headers, body = answer
        start_response(_STATUS_LINES[status], [*headers, ("Content-Length", str(len(body)))])
        return [body]


@bp.get("/v1/allowlist")
def allowlist_document():
    """JSON by default; a compact JWS with `Accept: application/jose`; format 2 on request (Ask, negotiate)."""
    return _serve(jws_path=False)


@bp.get("/v1/allowlist.jws")
def allowlist_signed():
    return _serve(jws_path=True)


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
    from bot.allowlist.openapi import openapi

    response = jsonify(openapi())
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
