"""The gateway client: pull, verify and query the allowlist from inside an API gateway.

No Flask, no database: only `requests`, `pyjwt` and `beekeeper_gateway.keyformat`. A gateway keeps one
`AllowlistClient`, polls it (or lets `start()` poll in a thread) and asks `check()` per request:

    client = AllowlistClient("https://beekeeper.example/v1/allowlist", os.environ["BEEKEEPER_GATEWAY_KEY"],
                             poll_interval=10)
    client.poll()          # first load; then client.start() polls every 10 s in the background
    decision = client.check(key=api_key, origin=request.headers.get("Origin"),
                            referer=request.headers.get("Referer"))
    if not decision.allowed:
        return 403, decision.reason
    rate_limit(decision.app_id, decision.limits)

What it guarantees:
* every document is a compact JWS verified against the JWKS (refetched once on an unknown kid),
  and its `typ` must be the allowlist's, so nothing else signed by the same key is accepted;
* a document whose version is lower than the highest seen in its epoch (a rollback) is refused,
  as is one whose `expires_at` has passed; a delta must follow the version held; with
  `state_file=` the highest version survives a restart; a newer epoch (after a database restore)
  may start lower, an older epoch is refused;
* with `trusted_keys=` (JWKs or RFC 7638 thumbprints) only those keys are trusted, whatever the
  JWKS served next to the document says;
* once the held document expires, `check()` refuses everything (fails closed) until a fresh one
  is loaded; with the poller running (`start()`) and the default clock, the list's expiry is
  enforced by an expiry guard thread rather than a clock read per check (see _guard), which
  also lets `check_origin(origin)` (the same answer as `check(origin=origin)`) answer an exact
  Origin it has answered before in one lookup;
* documents in format 2 (rows under a column header, a detached RFC 7797 signature over the
  plain bytes, zstd or gzip) or format 1 (a compact JWS), parsed with orjson with the cyclic
  collector paused; the index keeps per grant one object and one tuple (see _Grant), nothing of
  the parsed document (about 0.9 KB per grant); a delta changes only the entries of the grants
  it names (O(change)), each by one dict assignment;
* keys: the SHA-256 is looked up first; only a digest the list does not hold has its checksum
  verified (`beekeeper_gateway.keyformat`), to tell "malformed key" from "unknown key";
  revoked and expired keys are refused with their reason; a publishable key, a referrer name (an
  app id, matched by equality, never read as a URL) and an Origin only count when the host of the
  request's Origin HEADER (else its Referer HEADER) is one of the grant's domains —
  exactly, or under a declared leading wildcard (`*.example.com` covers every subdomain of
  example.com, not example.com itself). Never by substring: `evil-example.com` and
  `example.com.evil.io` do not match `example.com`.

Tests inject the HTTP session (`session=`) and the clock (`clock=`, seconds since the epoch).
"""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urljoin

import jwt
import requests

from beekeeper_gateway import keyformat

try:  # orjson parses a 20-40 MB document 2-3x faster than json (a main dependency of the bot)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads
try:  # zstd-encoded documents when the zstandard package is installed
    import zstandard as _zstandard
except ImportError:  # pragma: no cover
    _zstandard = None

log = logging.getLogger("beekeeper.gateway")

DOCUMENT_TYPE = "beekeeper-allowlist+json"  # the JWS `typ` the bot signs with (bot.allowlist.signing)
ALGORITHMS = ["EdDSA"]
# Format 2 (bot.allowlist.serving): plain JSON bytes, signed by a detached JWS with an unencoded payload
# (RFC 7797) in this response header. Asked for first; an older bot answers a format 1 JWS.
SIGNATURE_HEADER = "X-Allowlist-Signature"
ACCEPT = "application/vnd.beekeeper.allowlist+json;format=2, application/jose;q=0.5"
ACCEPT_ENCODING = "zstd, gzip" if _zstandard is not None else "gzip"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

UPDATED = "updated"
NOT_MODIFIED = "not-modified"


# --------------------------------------------------------------------------------------------
# Errors and decisions
# --------------------------------------------------------------------------------------------


class AllowlistError(Exception):
    """A poll did not load a new document; the one held (if any) stays in force until it expires."""


class FetchError(AllowlistError):
    """The allowlist or the JWKS could not be fetched (network, HTTP status)."""


class AuthError(FetchError):
    """The bot refused the gateway credential (401)."""


class SignatureError(AllowlistError):
    """Not a valid JWS of an allowlist by a published key."""


class DocumentError(AllowlistError):
    """A verified document that makes no sense (malformed, or a delta that does not follow ours)."""


class RollbackError(AllowlistError):
    """The document's version is lower than the highest seen in its epoch (held, or kept in the
    state file across restarts), or it belongs to an epoch that was replaced."""


class UntrustedKeyError(SignatureError):
    """Signed by a key that is not one of the pinned `trusted_keys`, or the JWKS holds none of them."""


class ExpiredDocumentError(AllowlistError):
    """The document's expires_at has passed."""


class Decision(NamedTuple):
    allowed: bool
    tier: str | None
    limits: MappingProxyType | None
    app_id: str | None
    reason: str


def _deny(reason: str) -> Decision:
    return Decision(False, None, None, None, reason)


NOT_LOADED = _deny("allowlist not loaded")
LIST_EXPIRED = _deny("allowlist expired")
NO_CREDENTIALS = _deny("no key, referrer or origin")
MALFORMED_KEY = _deny("malformed key")
UNKNOWN_KEY = _deny("unknown key")
KEY_REVOKED = _deny("key revoked")
KEY_EXPIRED = _deny("key expired")
ORIGIN_REQUIRED = _deny("origin required")
ORIGIN_NOT_ALLOWED = _deny("origin not allowed for this grant")
UNKNOWN_ORIGIN = _deny("unknown origin")
UNKNOWN_REFERRER = _deny("unknown referrer")
UNKNOWN_TIER = _deny("tier not in the allowlist")

ALLOWED_SECRET_KEY = "secret key"  # noqa: S105 - a reason, not a password
ALLOWED_PUBLISHABLE_KEY = "publishable key"
ALLOWED_ORIGIN = "origin"
ALLOWED_REFERRER = "referrer"
_DECISION_SLOTS = {ALLOWED_SECRET_KEY: "_secret", ALLOWED_PUBLISHABLE_KEY: "_publishable", ALLOWED_ORIGIN: "_origin",
                   ALLOWED_REFERRER: "_referrer"}

# Every reason check() gives, refusals and allowances: stable strings (gateways log them, the
# middleware answers them, other clients are held to them), and the HTTP status of each.
HTTP_STATUS = {
    NOT_LOADED.reason: "503 Service Unavailable", LIST_EXPIRED.reason: "503 Service Unavailable",
    NO_CREDENTIALS.reason: "401 Unauthorized",
    **{d.reason: "403 Forbidden" for d in (MALFORMED_KEY, UNKNOWN_KEY, KEY_REVOKED, KEY_EXPIRED, ORIGIN_REQUIRED,
                                           ORIGIN_NOT_ALLOWED, UNKNOWN_ORIGIN, UNKNOWN_REFERRER, UNKNOWN_TIER)},
    **dict.fromkeys((ALLOWED_SECRET_KEY, ALLOWED_PUBLISHABLE_KEY, ALLOWED_ORIGIN, ALLOWED_REFERRER), "200 OK"),
}
REASONS = tuple(HTTP_STATUS)


# --------------------------------------------------------------------------------------------
# The decision table: the single statement of check()'s rules. docs/allowlist.md shows it
# (decision_table_markdown(), compared by a test) and tests/gateway/test_gateway_decisions.py runs every
# row through check() and the middleware. Rows are conformance vectors for any other client.
#
# The grants every row is read against:
#   shop   (domains shop.example, *.shop.example; referrer name "shop")
#   victim (domains victim-shop.com; referrer name "victim")
# `key`: shop's "secret" or "publishable" key; "revoked" / "expired": a revoked / expired secret
# key; "malformed": a wrong checksum; "unknown": a valid checksum, in no grant. "": not sent.
# --------------------------------------------------------------------------------------------


class Row(NamedTuple):
    key: str
    app_id: str  # the `referrer` query value
    origin: str  # the Origin header
    referer: str  # the Referer header
    grant: str | None  # the grant an allowed request counts against; None: refused
    reason: str
    document: str = "fresh"  # "fresh", "none" (never loaded) or "expired"
    why: str = ""


# The grants the rows are read against (app id → domains; each grant's referrer name is its app id).
DECISION_GRANTS = {"shop": ("shop.example", "*.shop.example"), "victim": ("victim-shop.com",)}
SHOP, SHOP_SUB, VICTIM = "https://shop.example", "https://app.shop.example", "https://victim-shop.com"
SHOP_PAGE, VICTIM_PAGE = "https://shop.example/checkout", "https://victim-shop.com/"

DECISION_TABLE: tuple[Row, ...] = (
    Row("secret", "", "", "", None, NOT_LOADED.reason, document="none", why="fails closed"),
    Row("secret", "", "", "", None, LIST_EXPIRED.reason, document="expired", why="fails closed"),
    Row("", "", "", "", None, NO_CREDENTIALS.reason),
    Row("malformed", "", SHOP, "", None, MALFORMED_KEY.reason, why="checksum first"),
    Row("unknown", "", SHOP, "", None, UNKNOWN_KEY.reason),
    Row("revoked", "", "", "", None, KEY_REVOKED.reason),
    Row("expired", "", "", "", None, KEY_EXPIRED.reason),
    Row("secret", "", "", "", "shop", ALLOWED_SECRET_KEY, why="server-side key: no origin needed"),
    Row("secret", "", VICTIM, "", "shop", ALLOWED_SECRET_KEY, why="headers do not change a key's grant"),
    Row("secret", "victim", "", "", "shop", ALLOWED_SECRET_KEY, why="an app id does not change a key's grant"),
    Row("publishable", "", "", "", None, ORIGIN_REQUIRED.reason),
    Row("publishable", "", SHOP, "", "shop", ALLOWED_PUBLISHABLE_KEY),
    Row("publishable", "", SHOP_SUB, "", "shop", ALLOWED_PUBLISHABLE_KEY, why="under *.shop.example"),
    Row("publishable", "", "", SHOP_PAGE, "shop", ALLOWED_PUBLISHABLE_KEY, why="Referer header when no Origin"),
    Row("publishable", "", VICTIM, "", None, ORIGIN_NOT_ALLOWED.reason),
    Row("publishable", "", VICTIM, SHOP_PAGE, None, ORIGIN_NOT_ALLOWED.reason, why="Origin wins over Referer"),
    Row("publishable", "", "null", SHOP_PAGE, None, ORIGIN_NOT_ALLOWED.reason, why="Origin wins over Referer"),
    Row("publishable", VICTIM_PAGE, "", "", None, ORIGIN_REQUIRED.reason, why="the query is never a Referer"),
    Row("publishable", SHOP_PAGE, "", "", None, ORIGIN_REQUIRED.reason, why="the query is never a Referer"),
    Row("publishable", "shop", "", "", None, ORIGIN_REQUIRED.reason, why="an app id proves no origin"),
    Row("", "shop", SHOP, "", "shop", ALLOWED_REFERRER),
    Row("", "shop", "", SHOP_PAGE, "shop", ALLOWED_REFERRER),
    Row("", "shop", "", "", None, ORIGIN_REQUIRED.reason),
    Row("", "shop", VICTIM, "", None, ORIGIN_NOT_ALLOWED.reason),
    Row("", "victim", SHOP, "", None, ORIGIN_NOT_ALLOWED.reason, why="the app id's grant must serve the origin"),
    Row("", "nobody", SHOP, "", None, UNKNOWN_REFERRER.reason),
    Row("", "Shop", SHOP, "", None, UNKNOWN_REFERRER.reason, why="equality: no case folding"),
    Row("", VICTIM_PAGE, "", "", None, UNKNOWN_REFERRER.reason, why="a URL is not an app id"),
    Row("", VICTIM_PAGE, VICTIM, "", None, UNKNOWN_REFERRER.reason, why="a URL is not an app id"),
    Row("", "", SHOP, "", "shop", ALLOWED_ORIGIN),
    Row("", "", SHOP_SUB, "", "shop", ALLOWED_ORIGIN),
    Row("", "", "", SHOP_PAGE, "shop", ALLOWED_ORIGIN, why="Referer header when no Origin"),
    Row("", "", "https://evil.example", "", None, UNKNOWN_ORIGIN.reason),
    Row("", "", "https://evil.example", SHOP_PAGE, None, UNKNOWN_ORIGIN.reason, why="Origin wins over Referer"),
    Row("", "", "null", "", None, UNKNOWN_ORIGIN.reason),
)


def decision_vectors() -> dict[str, Any]:
    """The table as JSON-ready conformance vectors for another client (e.g. the JavaScript one):
    the grants, the HTTP status of every reason, and one object per row."""
    return {"grants": {app: list(domains) for app, domains in DECISION_GRANTS.items()},
            "http_status": {reason: int(status[:3]) for reason, status in HTTP_STATUS.items()},
            "rows": [row._asdict() for row in DECISION_TABLE]}


def decision_table_markdown() -> str:
    """DECISION_TABLE as the Markdown table docs/allowlist.md shows."""
    def cell(value: str) -> str:
        return f"`{value}`" if value else "—"

    lines = ["| document | key | `referrer` (app id) | `Origin` header | `Referer` header | decision | HTTP | reason |"
             " note |", "|---|---|---|---|---|---|---|---|---|"]
    for row in DECISION_TABLE:
        decision = f"allow, counted for `{row.grant}`" if row.grant else "refuse"
        lines.append(f"| {row.document} | {row.key or '—'} | {cell(row.app_id)} | {cell(row.origin)} | "
                     f"{cell(row.referer)} | {decision} | {HTTP_STATUS[row.reason][:3]} | `{row.reason}` | {row.why} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Hosts
# --------------------------------------------------------------------------------------------

_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*")


def _host_of(value: str) -> str | None:
    """The normalised host (lowercase punycode, no port, no trailing dot) of an Origin value, a
    Referer URL or a bare host name; None when there is none or it is not a valid host name."""
    value = value.strip()
    scheme, sep, rest = value.partition("://")
    if sep:
        if scheme.lower() not in ("http", "https"):
            return None
    else:
        rest = value
    for end in "/?#\\":
        rest = rest.split(end, 1)[0]
    authority = rest.rpartition("@")[2]
    if authority.startswith("["):  # an IPv6 literal never matches a domain
        return None
    host, colon, port = authority.partition(":")
    if colon and not port.isdigit():
        return None
    host = host.rstrip(".").lower()
    if not host.isascii():
        try:
            import idna

            host = idna.encode(host, uts46=True).decode()
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    if len(host) > 253 or not _HOST.fullmatch(host):
        return None
    return host


host_of = lru_cache(maxsize=8192)(_host_of)  # for callers outside the client (it keeps its own memo)


def host_matches(host: str, domains: Iterable[str]) -> bool:
    """Whether `host` is one of `domains`, or a subdomain of a `*.`-declared one (the rule the
    client applies; see the module docstring)."""
    for domain in domains:
        if domain.startswith("*."):
            if host.endswith(domain[1:]) and len(host) > len(domain) - 1:
                return True
        elif host == domain:
            return True
    return False


# --------------------------------------------------------------------------------------------
# The held allowlist (an immutable snapshot, swapped whole by a poll)
# --------------------------------------------------------------------------------------------


class _Tier:
    __slots__ = ("name", "limits")

    def __init__(self, name: str, limits: dict[str, Any]):
        self.name = name
        self.limits = MappingProxyType(dict(limits))


class _Grant:
    """One grant as check() reads it, in as few objects as a gateway holding 100 000 of them
    can afford (issue 18: memory and load time). `entries` is everything the grant put in the
    snapshot's indexes, in one tuple shared with them: its keys (a secret key that never
    expires and is not revoked as its 32-byte digest, which the key index maps to the grant
    itself; any other key as its _Key), the exact Origin `https://<host>` of each exact domain
    (the index key, so no host string is held besides it), and `.<base>` for each wildcard
    `*.<base>`. `names`: the referrer names, when they are not just the app id (format 1 may
    list others); None otherwise (always, in format 2)."""

    # The Decisions first: check_origin(), a publishable key and a secret key read `_origin`,
    # `_publishable` or `_secret` of a grant that, with 100 000 in rotation, is not in the CPU cache;
    # the first slots share a cache line with the object header the interpreter reads anyway.
    __slots__ = ("_origin", "_publishable", "_secret", "_referrer", "app_id", "tier", "entries", "names")

    def __init__(self, app_id: str, tier: _Tier | None, entries: tuple = (), names: tuple[str, ...] | None = None):
        self.app_id = app_id
        self.tier = tier
        self.entries = entries
        self.names = names
        self._secret = self._publishable = self._origin = self._referrer = None

    def allow(self, reason: str) -> Decision:
        """The grant's allowing Decision for `reason`, made once and shared (Decisions are immutable)."""
        slot = _DECISION_SLOTS[reason]
        decision = getattr(self, slot)
        if decision is None:
            if self.tier is None:
                return UNKNOWN_TIER
            decision = Decision(True, self.tier.name, self.tier.limits, self.app_id, reason)
            setattr(self, slot, decision)
        return decision

    def serves(self, host: str) -> bool:
        """`host` is one of the grant's exact domains, or under one of its wildcards. (A digest
        or a _Key in `entries` never equals a string.)"""
        entries = self.entries
        if "https://" + host in entries:
            return True
        index = host.find(".")
        while index >= 0:  # every parent domain, as `.<base>`: never the host itself
            if host[index:] in entries:
                return True
            index = host.find(".", index + 1)
        return False


class _Key:
    """A key the index cannot answer with its grant alone. This class: a publishable key that
    never expires and is not revoked (the usual one; two slots); `_LimitedKey`: any other."""

    __slots__ = ("digest", "grant")
    _secret = None  # any index entry answers `_secret` (check() reads it of a _Grant only): a _Key never answers alone
    publishable = True
    expires: float | None = None
    revoked = False

    def __init__(self, digest: bytes, grant: _Grant):
        self.digest = digest
        self.grant = grant


class _LimitedKey(_Key):
    __slots__ = ("publishable", "expires", "revoked")

    def __init__(self, digest: bytes, grant: _Grant, publishable: bool, expires: float | None, revoked: bool):
        self.digest = digest
        self.grant = grant
        self.publishable = publishable
        self.expires = expires
        self.revoked = revoked


def _key(digest: bytes, grant: _Grant, publishable: bool, expires: float | None, revoked: bool) -> _Key:
    """The _Key of a key that is not a plain secret one (that one is its digest in `entries`)."""
    if publishable and expires is None and not revoked:
        return _Key(digest, grant)
    return _LimitedKey(digest, grant, publishable, expires, revoked)


_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _b64url_decode(segment: bytes) -> bytes:
    """Strict base64url without padding (ValueError otherwise), at C speed."""
    if segment.translate(None, _B64URL_ALPHABET) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


@contextmanager
def _gc_paused():
    """Building an index of 100 000 grants allocates millions of objects; the cyclic collector
    would walk them all again and again while they are made (none of them forms a cycle)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _timestamp(value: str | None) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


WILDCARD_HITS_MAX = 16_384  # hosts a snapshot remembers as matched by a wildcard (at least; or one per grant)
PUBLISHABLE_HITS_MAX = 16_384  # (publishable key, Origin) pairs a snapshot remembers (at least; or one per key)
# The expiry guard (AllowlistClient._guard) withdraws its word this many seconds before the held list
# expires, and wakes at least every GUARD_TICK seconds.
FAST_PATH_MARGIN = 1.0
GUARD_TICK = 0.5
_UNARMED: dict = {}  # check_origin()'s answers while the guard vouches for no snapshot (never written)
KEY_MEMO_MIN = 65_536  # keys whose digest the client remembers (at least; or one per listed key)
HOST_MEMO_MIN = 8_192  # Origin/Referer values whose host the client remembers (at least; or two per grant)


class _TwoGenerations(dict):
    """A bounded memo without bookkeeping on the hot path: readers look in the memo itself (a
    dict); a miss there looks in `old` (`recall`), which moves a hit back. When the memo is
    full its entries become `old` (the previous `old` is dropped) and it starts afresh. So what
    was used within the last `limit` insertions stays, a flood of made-up input only ages the
    memo out (never costs more than no memo), and no entry carries a timestamp or a link.
    Safe without a lock: a race loses at most an entry."""

    __slots__ = ("old", "limit")

    def __init__(self, limit: int):
        super().__init__()
        self.old: dict = {}
        self.limit = limit

    def recall(self, key):
        """The value in `old` (moved back), else None; call after a miss in the memo itself."""
        value = self.old.get(key)
        if value is not None:
            self.put(key, value)
        return value

    def put(self, key, value) -> None:
        if len(self) >= self.limit:
            if not self.limit:
                return
            self.old = dict(self)  # O(limit) once per `limit` insertions
            dict.clear(self)
        self[key] = value

    def clear(self) -> None:
        dict.clear(self)
        self.old = {}


class _Snapshot:
    """Indexes of one allowlist version: key digest → grant (or _Key), exact Origin → grant,
    wildcard base → grant, app id → grant (and referrer name → grant for names other than the
    app id). A host is looked up as its `https://` Origin: `by_host` is the same dict as
    `by_origin`, so no host string is held twice.

    A full document is read straight into new indexes (nothing reads them before the snapshot
    is in force). A delta (same tiers) is applied in O(change): the new snapshot takes over the
    held one's indexes and changes only the entries of the grants the delta names, after the
    whole delta has been read. Each entry is replaced by one dict assignment (new entries are
    written before stale ones are deleted), so a check() running on another thread during the
    poll sees every key, host and name either as before or as after, never missing; the
    snapshot's own header (version, expiry) switches at the one assignment of `client._state`.
    The memos of answers (`wildcard_hits`, `publishable_hits`) belong to one snapshot and start
    empty in the next. `origin_answers` (exact Origin → its grant's allowing Decision, filled by
    check_origin(), see remember_origin) goes with the indexes: a delta takes it over and
    `_forget` deletes the Origins of every grant it removes or replaces; new indexes get a new,
    empty one."""

    __slots__ = ("version", "epoch", "expires", "generated", "prefix", "tiers_raw", "tiers", "grants", "by_hash",
                 "by_host", "by_origin", "by_suffix", "by_name", "key_length", "suffix_dots", "wildcard_hits",
                 "publishable_hits", "key_count", "origin_answers", "answers_lock")

    def __init__(self, doc: dict[str, Any], base: _Snapshot | None = None):
        self.version = doc["version"]
        self.epoch = doc.get("epoch")
        self.expires = _timestamp(doc["expires_at"])
        self.generated = _timestamp(doc["generated_at"])
        self.prefix = doc["key_prefix"]
        self.key_length = len(self.prefix) + 4 + keyformat.RANDOM_LENGTH + keyformat.CHECKSUM_LENGTH
        self.tiers_raw = doc["tiers"]
        self.tiers = {name: _Tier(name, t["limits"]) for name, t in doc["tiers"].items()}
        # A lower bound of the dots in any wildcard base (removals leave it low, still a bound).
        self.suffix_dots = base.suffix_dots if base is not None else 255
        if base is None or base.tiers_raw != self.tiers_raw:  # new indexes (new tiers: any grant's limits may change)
            self.grants, self.by_hash, self.by_origin, self.by_suffix, self.by_name = {}, {}, {}, {}, {}
            self.key_count = 0
            self.origin_answers: dict[str, Decision] = {}
            self.answers_lock = threading.Lock()
        else:  # in place, O(change): see the class docstring
            self.grants, self.by_hash = base.grants, base.by_hash
            self.by_origin, self.by_suffix, self.by_name = base.by_origin, base.by_suffix, base.by_name
            self.key_count = base.key_count
            self.origin_answers, self.answers_lock = base.origin_answers, base.answers_lock
        self.by_host = self.by_origin
        if base is None:
            upserts, removed = _read_grants(doc, self.tiers, into=self)  # read straight into the new indexes
            if len(self.grants) != len(upserts):  # an app id listed twice: the last one wins, as in a delta
                self.grants, self.by_hash, self.by_origin, self.by_suffix, self.by_name = {}, {}, {}, {}, {}
                self.by_host, self.key_count = self.by_origin, 0
                self._upsert(upserts)
        else:
            upserts, removed = _read_grants(doc, self.tiers)  # everything read before anything changes
            if self.grants is not base.grants:
                for grant in base.grants.values():
                    self._add(self._regrant(grant))
            self._upsert(upserts)
        listed = {grant.app_id for grant in upserts} if removed else ()
        for app_id in removed:
            old = self.grants.get(app_id)
            if old is not None and app_id not in listed:
                del self.grants[app_id]
                self._forget(old)
        # Memos of this snapshot's answers, sized to the list (hosts by grant, pairs by key).
        self.wildcard_hits = _TwoGenerations(_memo_size(WILDCARD_HITS_MAX, len(self.grants)))
        self.publishable_hits = _TwoGenerations(_memo_size(PUBLISHABLE_HITS_MAX, self.key_count))

    def _upsert(self, upserts: list[_Grant]) -> None:
        replaced = []
        for grant in upserts:
            old = self.grants.get(grant.app_id)
            self._add(grant)  # new entries first: nothing is ever missing in between
            if old is not None and old is not grant:
                replaced.append(old)
        for old in replaced:
            self._forget(old)

    def _regrant(self, old: _Grant) -> _Grant:
        grant = _Grant(old.app_id, self.tiers.get(old.tier.name if old.tier else ""), (), old.names)
        grant.entries = tuple(e if e.__class__ is bytes or e.__class__ is str
                              else _key(e.digest, grant, e.publishable, e.expires, e.revoked) for e in old.entries)
        return grant

    def _add(self, grant: _Grant) -> None:
        self.grants[grant.app_id] = grant
        taken = []  # exact Origins another grant held (it may be remembered as that grant's answer)
        for entry in grant.entries:
            kind = entry.__class__
            if kind is bytes:
                self.by_hash[entry] = grant
                self.key_count += 1
            elif kind is not str:  # a _Key
                self.by_hash[entry.digest] = entry
                self.key_count += 1
            elif entry[0] == ".":
                self.by_suffix[entry] = grant
                self.suffix_dots = min(self.suffix_dots, entry.count(".") - 1)
            else:
                if self.by_origin.get(entry) is not None:
                    taken.append(entry)
                self.by_origin[entry] = grant
        for name in grant.names or ():
            self.by_name[name] = grant
        if taken:
            self._unremember(taken)

    def _forget(self, grant: _Grant) -> None:
        """Delete the index entries that still point at `grant` (one that was replaced or removed),
        then the remembered answers of its exact Origins (see remember_origin)."""
        origins = []
        for entry in grant.entries:
            kind = entry.__class__
            if kind is bytes:
                self.key_count -= 1
                if self.by_hash.get(entry) is grant:
                    del self.by_hash[entry]
            elif kind is not str:  # a _Key
                self.key_count -= 1
                if self.by_hash.get(entry.digest) is entry:
                    del self.by_hash[entry.digest]
            else:
                index = self.by_suffix if entry[0] == "." else self.by_origin
                if index.get(entry) is grant:
                    del index[entry]
                if entry[0] != ".":
                    origins.append(entry)
        for name in grant.names or ():
            if self.by_name.get(name) is grant:
                del self.by_name[name]
        if origins:
            self._unremember(origins)

    def _unremember(self, origins: list[str]) -> None:
        """Forget the remembered answers to `origins`, whose grant in the index has just changed.
        Called after the index changes, under the lock remember_origin() holds from its index
        read to its write: a reader that read the old grant wrote before this and is undone
        here; one that reads after it sees the new index. So, the snapshot of a delta being put in
        force only after every change, no answer of a grant it removes or replaces is given once
        it is in force (as today, a check() running across the change may still give the old
        one). Every Origin, whatever the index now holds: an answer of the new grant remembered
        meanwhile is only made again."""
        answers = self.origin_answers
        with self.answers_lock:
            for origin in origins:
                answers.pop(origin, None)

    def remember_origin(self, origin: str, grant: _Grant, decision: Decision) -> None:
        """Remember `decision`, the allowing Decision of `grant` (its `_origin`: no clock in it, the
        list's expiry is the guard's), as the answer to the exact Origin `origin` if this
        snapshot's exact-Origin index still holds `grant` for it: the answer of
        check(origin=origin) for as long as the grant stays. Checked and written under
        `answers_lock`, which _unremember takes after a delta changes the index: an answer of a
        grant a delta removes or replaces never outlives the delta. Only Origins of the index are
        remembered (bounded by it; made-up ones never), each under the index's own string, the
        grant's entry: not the caller's (a request's header), which would be held besides it, and
        which later requests' headers, new strings, are not."""
        for entry in grant.entries:
            if entry.__class__ is str and entry == origin:
                with self.answers_lock:
                    if self.by_origin.get(origin) is grant and grant._origin is decision:
                        self.origin_answers[entry] = decision
                return

    def grant_named(self, name: str) -> _Grant | None:
        """The grant whose referrer name is `name` (by equality): its app id, unless the
        grant lists other names (format 1), or one of those."""
        grant = self.by_name.get(name)
        if grant is None:
            grant = self.grants.get(name)
            if grant is not None and grant.names is not None and name not in grant.names:
                return None
        return grant

    def allow_publishable(self, key: _Key, host: str, origin: str | None) -> Decision:
        """A live publishable key used from `host`: its grant's Decision if the grant serves the
        host, else ORIGIN_NOT_ALLOWED. An allowed pair is remembered under the raw `origin`
        when the key never expires (nothing about it can change within this snapshot), so
        check() answers the next request from that origin without normalising it again."""
        grant = key.grant
        if host is not None and not grant.serves(host):  # None: an exact Origin of the grant's
            return ORIGIN_NOT_ALLOWED
        decision = grant.allow(ALLOWED_PUBLISHABLE_KEY)
        if origin and key.expires is None:
            self.publishable_hits.put((key, origin), decision)
        return decision

    def grant_for_host(self, host: str) -> _Grant | None:
        return self.by_origin.get("https://" + host) or self.grant_for_suffix(host)

    def grant_for_suffix(self, host: str) -> _Grant | None:
        """The grant whose declared wildcard `*.base` covers `host`: its parent domains are
        tried from the longest (a.b.example.com → .b.example.com, .example.com), down to the
        fewest labels any wildcard base in the list has (so `.com` is never looked up)."""
        by_suffix = self.by_suffix
        if not by_suffix:
            return None
        hits = self.wildcard_hits
        grant = hits.get(host) or hits.recall(host)
        if grant is not None:
            return grant
        dots = host.count(".") - 1  # in the first parent domain
        least = self.suffix_dots
        index = host.find(".")
        while index >= 0 and dots >= least:
            grant = by_suffix.get(host[index:])
            if grant is not None:
                # Remembered for this snapshot (browsers repeat their hosts). Misses are not
                # remembered: made-up hosts cannot fill it.
                hits.put(host, grant)
                return grant
            index = host.find(".", index + 1)
            dots -= 1
        return None


def _memo_size(floor: int, count: int) -> int:
    """A memo's size: the held list's size, at least `floor` (0 turns the memo off)."""
    return max(floor, count) if floor else 0


def _columns(doc: dict[str, Any], table: str, wanted: tuple[str, ...]) -> tuple[int, ...]:
    names = doc["columns"][table]
    return tuple(names.index(name) for name in wanted)


_B64URL_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _b64url_digests(values: list[str]) -> list[bytes]:
    """The 32-byte digests of unpadded base64url strings (43 characters each), decoded in one
    call instead of one Python call per key: each value followed by "A" (six zero bits) is 11
    whole base64 quads, 33 bytes of which the last is only that filler. ValueError unless every
    value is 43 base64url characters."""
    if not values:
        return []
    if set(map(len, values)) != {43}:
        raise ValueError("a key digest is not 32 bytes of unpadded base64url")
    joined = ("A".join(values) + "A").encode("ascii")
    if joined.translate(None, _B64URL_ALPHABET):
        raise ValueError("a key digest is not base64url")
    raw = binascii.a2b_base64(joined.translate(_B64URL_TO_STANDARD), strict_mode=True)
    return [raw[i : i + 32] for i in range(0, len(raw), 33)]


def _hex_digests(values: list[str]) -> list[bytes]:
    """The 32-byte digests of 64-character hex strings (format 1), decoded in one call."""
    if not values:
        return []
    if set(map(len, values)) != {64}:
        raise ValueError("a key digest is not 32 bytes of hex")
    raw = bytes.fromhex("".join(values))
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def _own(value: str) -> str:
    """A copy of a string of the parsed document. What the index keeps must not be an object of
    the parsed document itself: one survivor in each of the allocator's pools would keep the
    whole document's memory resident after it is freed."""
    return value.encode().decode()


def _read_grants(doc: dict[str, Any], tiers: dict[str, _Tier],
                 into: _Snapshot | None = None) -> tuple[list[_Grant], list[str]]:
    """(the grants a document lists, the app ids of its tombstones), from format 2 (rows under
    `columns`) or format 1 (objects). Only what check() reads is built: per grant one _Grant and
    its `entries` tuple, per key its digest (and a _Key only for a key that is publishable,
    expiring or revoked), per domain its index key. With `into` (a snapshot building new
    indexes) every grant is also entered in them as it is read, without a second pass."""
    fmt2 = doc.get("format") == 2
    rows = doc["grants"]
    if fmt2:
        a, t, _, d, k = _columns(doc, "grants", ("app_id", "tier", "version", "domains", "keys"))
        h, kind, e, r = _columns(doc, "keys", ("sha256", "kind", "expires_at", "revoked_at"))
        digests = _b64url_digests([key[h] for row in rows for key in row[k]])
    else:
        a, t, d, k, h, kind, e, r = "app_id", "tier", "domains", "keys", "sha256", "kind", "expires_at", "revoked_at"
        for row in rows:  # format 1 leaves out a null expiry or revocation
            for key in row[k]:
                key.setdefault(e, None)
                key.setdefault(r, None)
        digests = _hex_digests([key[h] for row in rows for key in row[k]])
    if into is not None:
        grants, by_hash, by_origin, by_suffix, by_name = into.grants, into.by_hash, into.by_origin, into.by_suffix, \
            into.by_name
    else:  # a delta: read into scratch indexes; the snapshot enters the grants once all are read
        grants, by_hash, by_origin, by_suffix, by_name = {}, {}, {}, {}, {}
    upserts: list[_Grant] = []
    append, next_digest, own, tier_of = upserts.append, iter(digests).__next__, _own, tiers.get
    for row in rows:
        app_id = own(row[a])
        grant = _Grant(app_id, tier_of(row[t]))
        entries = []
        for key in row[k]:
            digest = next_digest()
            if key[e] is None and key[r] is None and key[kind] != "publishable":
                entries.append(digest)
                by_hash[digest] = grant
            else:
                entry = _key(digest, grant, key[kind] == "publishable", _timestamp(key[e]), key[r] is not None)
                entries.append(entry)
                by_hash[digest] = entry
        for domain in row[d]:
            if domain[:2] == "*.":
                domain = domain[1:]
                by_suffix[domain] = grant
            else:
                domain = "https://" + domain
                by_origin[domain] = grant
            entries.append(domain)
        grant.entries = tuple(entries)
        grants[app_id] = grant
        if not fmt2:
            names = tuple(own(name) for name in row["referrers"])
            if names != (app_id,):
                grant.names = names
                for name in names:
                    by_name[name] = grant
        append(grant)
    if into is not None:
        into.key_count += len(digests)
        if by_suffix:
            into.suffix_dots = min(into.suffix_dots, min(map(str.count, by_suffix, repeat("."))) - 1)
    removed = doc.get("removed") or ()
    if fmt2 and removed:
        (ra,) = _columns(doc, "removed", ("app_id",))
        return upserts, [row[ra] for row in removed]
    return upserts, [tombstone["app_id"] for tombstone in removed]


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint of an Ed25519 (OKP) public JWK: base64url SHA-256 of its required
    members in canonical JSON. What `beekeeper signing-keys list` prints and the bot uses as kid."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" \
            or not isinstance(jwk.get("x"), str):
        raise ValueError("not an Ed25519 public JWK (kty OKP, crv Ed25519, x)")
    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"),
                           sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")
STATE_RETIRED_EPOCHS_MAX = 32  # replaced epochs a state file remembers (documents of these are refused)


def _epoch_start(epoch: str | None) -> int | None:
    """When an epoch began (the bot writes `<unix seconds>.<random>`); 0 for no epoch (the oldest);
    None for an epoch of another form (then documents are ordered by generated_at instead)."""
    if epoch is None:
        return 0
    start, dot, _ = epoch.partition(".")
    return int(start) if dot and start.isdigit() and len(start) <= 12 else None


class _HighWater(NamedTuple):
    """The newest the client has accepted: the epoch, the highest version in it, the newest
    `generated_at` (seconds), and the epochs replaced before it. Kept in the state file."""

    epoch: str | None = None
    version: int | None = None
    generated: float | None = None
    retired: tuple[str | None, ...] = ()


# The checksum check, written for speed: the CRC32 of the key without its checksum, in base62 as
# beekeeper_gateway.keyformat writes it (6 digits = three pairs), compared with the key's last 6 bytes.
_PAIRS = [(a + b).encode() for a in keyformat.BASE62 for b in keyformat.BASE62]
_crc32 = zlib.crc32
_sha256 = hashlib.sha256
_BAD_CHECKSUM = b"-"  # what the digest memo holds for a key whose checksum is wrong (never a digest)


def checksum_ok(key: bytes) -> bool:
    """keyformat's checksum of `key` (as bytes) is right; agrees with keyformat.parse (tested)."""
    crc = _crc32(key[:-6])
    return key[-6:] == _PAIRS[crc // 14776336] + _PAIRS[crc // 3844 % 3844] + _PAIRS[crc % 3844]


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class AllowlistClient:
    """Holds the newest verified allowlist and answers `check()` from memory."""

    def __init__(self, url: str, gateway_key: str | None = None, *, jwks_url: str | None = None,
                 jwks: dict[str, Any] | None = None, poll_interval: float = 30.0,
                 session: requests.Session | None = None, clock: Callable[[], float] = time.time,
                 timeout: float = 30.0, key_cache_size: int | None = None,
                 trusted_keys: Iterable[dict[str, Any] | str] | None = None,
                 state_file: str | os.PathLike | None = None):
        """`url`: the bot's /v1/allowlist (or a published copy of the signed document);
        `gateway_key`: the `<prefix>_gw_…` credential (None for a published copy);
        `jwks_url`: default `/.well-known/jwks.json` on the same host; `jwks`: pinned keys instead;
        `clock`: seconds since the epoch (injectable for tests);
        `key_cache_size`: how many keys' digests to remember (0: none; None, the default: as many
        as the held list has keys, at least 65 536). A gateway sees the same keys again and
        again; remembering a key's digest skips the SHA-256 (and, for a key not in the list, the
        checksum) on its next request. Two generations: a full memo becomes the old generation
        and a key used again is moved back, so a working set of every listed key stays;
        `trusted_keys`: the trust anchors — public JWKs (dicts) or their RFC 7638 thumbprints
        (`beekeeper signing-keys list`). Only documents signed by one of them are accepted; keys
        from the JWKS are used only when their thumbprint (computed here, not their kid) is
        pinned, and a JWKS holding none of them is refused. Without it, every key of the JWKS
        fetched from `jwks_url` is trusted (or of `jwks`, when given);
        `state_file`: a file (written atomically, mode 0600) where the highest version and the
        epoch seen are kept across restarts, so a restarted gateway still refuses a rollback."""
        if key_cache_size is not None and key_cache_size < 0:
            raise ValueError("key_cache_size must be 0 or more")
        if gateway_key is not None and not keyformat.is_valid(gateway_key, kind="gw"):
            raise ValueError("gateway_key is not a gateway credential (<prefix>_gw_…) with a valid checksum")
        self.url = url
        self.jwks_url = jwks_url or urljoin(url, "/.well-known/jwks.json")
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._gateway_key = gateway_key
        self._http = session or requests.Session()
        self._clock = clock
        self._trusted: frozenset[str] | None = None
        self._anchors: dict[str, jwt.PyJWK] = {}  # pinned full JWKs: usable without any JWKS
        if trusted_keys is not None:
            if isinstance(trusted_keys, (str, dict)):
                trusted_keys = [trusted_keys]
            prints = set()
            for anchor in trusted_keys:
                if isinstance(anchor, dict):
                    thumb = jwk_thumbprint(anchor)
                    key = jwt.PyJWK({f: anchor[f] for f in ("kty", "crv", "x")}, algorithm="EdDSA")
                    self._anchors[thumb] = key  # the bot's kid is the thumbprint
                    if isinstance(anchor.get("kid"), str):
                        self._anchors[anchor["kid"]] = key
                elif isinstance(anchor, str) and _THUMBPRINT.fullmatch(anchor.strip()):
                    thumb = anchor.strip()
                else:
                    raise ValueError(f"trusted_keys: {anchor!r:.60} is neither an Ed25519 JWK nor an RFC 7638 "
                                     "thumbprint (43 base64url characters; `beekeeper signing-keys list`)")
                prints.add(thumb)
            if not prints:
                raise ValueError("trusted_keys is empty: pin at least one signing key")
            self._trusted = frozenset(prints)
        self._pinned = jwks is not None
        self._keys: dict[str, jwt.PyJWK] = {**self._parse_jwks(jwks), **self._anchors} if jwks is not None \
            else dict(self._anchors)
        self._state_file = Path(state_file) if state_file is not None else None
        if self._state_file is not None and not self._state_file.parent.is_dir():
            raise ValueError(f"state_file {self._state_file}: its folder does not exist")
        self._high = self._load_high_water() if self._state_file is not None else _HighWater()
        self._state: _Snapshot | None = None
        self.key_cache_size = key_cache_size
        # key → its SHA-256, or _BAD_CHECKSUM (see _digest); Origin/Referer value → host or ""
        self._digests = _TwoGenerations(KEY_MEMO_MIN if key_cache_size is None else key_cache_size)
        self._hosts = _TwoGenerations(HOST_MEMO_MIN)
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The expiry guard (see _guard): the snapshot it vouches for, and that snapshot's remembered
        # answers to exact Origins for check_origin() (_UNARMED when it vouches for none). Written
        # under _arm_lock only (and _fast hidden by _apply before a new snapshot is put in force).
        self._armed: _Snapshot | None = None
        self._fast: dict[str, Decision] = _UNARMED
        self._guarding = False
        self._arm_lock = threading.Lock()
        self._rearm = threading.Event()
        self._guard_thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        self.last_error: AllowlistError | None = None
        self.last_success: float | None = None

    # -- state --------------------------------------------------------------------------------

    @property
    def version(self) -> int | None:
        return self._state.version if self._state else None

    @property
    def epoch(self) -> str | None:
        return self._state.epoch if self._state else None

    @property
    def expires_at(self) -> float | None:
        return self._state.expires if self._state else None

    @property
    def grant_count(self) -> int:
        return len(self._state.grants) if self._state else 0

    def is_fresh(self) -> bool:
        state = self._state
        return state is not None and self._clock() < state.expires

    # -- polling ------------------------------------------------------------------------------

    def poll(self) -> str:
        """Fetch what changed since the version held; UPDATED or NOT_MODIFIED.
        Raises an AllowlistError (and keeps the held document) when nothing trustworthy came."""
        with self._poll_lock:
            try:
                result = self._poll()
            except AllowlistError as exc:
                self.last_error = exc
                raise
            self.last_error = None
            self.last_success = self._clock()
            return result

    def _poll(self) -> str:
        held = self._state
        response = self._get_document(since=held.version if held else None, etag=self._etag if held else None)
        if response.status_code == 410 and held is not None:
            log.info("allowlist: delta since %s unavailable, pulling the full list", held.version)
            response = self._get_document(since=None, etag=None)
        if response.status_code == 304:
            return NOT_MODIFIED
        self._raise_for_status(response)
        # The cyclic collector is paused from the parse until the last object of the document
        # is freed: it would otherwise walk the parser's hundreds of thousands of new lists
        # again and again (a 100 000-grant document parses in a third of the time without it).
        # None of them is in a cycle, so nothing is left for it when it resumes.
        with _gc_paused():
            doc = self._document(response)
            if held is not None and doc.get("since") is not None and doc.get("epoch") != held.epoch:
                # A new epoch (a restore): its history is not ours, so a delta from it means nothing.
                log.warning("allowlist: epoch changed (%s → %s), pulling the full list", held.epoch,
                            doc.get("epoch"))
                del doc
                response = self._get_document(since=None, etag=None)
                self._raise_for_status(response)
                doc = self._document(response)
            applied = self._apply(doc)
            del doc
        if applied:
            self._etag = response.headers.get("ETag")
            return UPDATED
        return NOT_MODIFIED

    def _raise_for_status(self, response: requests.Response) -> None:
        if response.status_code == 401:
            raise AuthError("the bot refused the gateway credential (401)")
        if response.status_code != 200:
            raise FetchError(f"GET {self.url} answered {response.status_code}")

    def _get_document(self, since: int | None, etag: str | None) -> requests.Response:
        headers = {"Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING}
        if self._gateway_key:
            headers["Authorization"] = f"Bearer {self._gateway_key}"
        if etag:
            headers["If-None-Match"] = etag
        params = {"since": str(since)} if since is not None else None
        try:
            return self._http.get(self.url, params=params, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise FetchError(f"GET {self.url} failed: {type(exc).__name__}") from exc

    def _apply(self, doc: dict[str, Any]) -> bool:
        """Make `doc` the held allowlist if it may be; False when it adds nothing."""
        try:
            version, since, epoch = doc["version"], doc.get("since"), doc.get("epoch")
            expires, generated = _timestamp(doc["expires_at"]), _timestamp(doc["generated_at"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DocumentError(f"malformed allowlist: {exc!r}") from None
        if not isinstance(version, int) or (since is not None and not isinstance(since, int)):
            raise DocumentError("malformed allowlist: version and since must be integers")
        if epoch is not None and not isinstance(epoch, str):
            raise DocumentError("malformed allowlist: epoch must be a string")
        if expires <= self._clock():
            raise ExpiredDocumentError(f"allowlist version {version} expired at {doc['expires_at']}")
        self._check_high_water(version, epoch, generated)
        held = self._state
        if held is not None:
            if since is not None and (since > held.version or epoch != held.epoch):
                raise DocumentError(f"delta since {since} does not follow the version held ({held.version})")
            if epoch == held.epoch and version == held.version and expires <= held.expires:
                return False  # the same version, no fresher: keep what we have
        elif since is not None:
            raise DocumentError("a delta arrived but no full allowlist is held")
        try:
            with _gc_paused():
                state = _Snapshot(doc, base=held if since is not None else None)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise DocumentError(f"malformed allowlist: {exc!r}") from None
        with self._arm_lock:  # one assignment: check() sees the old or the new snapshot's header
            # The remembered answers are hidden first: those of replaced indexes are never read once
            # the new snapshot is in force (a delta's, the same dict, were corrected in place).
            self._fast = _UNARMED
            self._state = state
            self._arm()  # the guard's word moves to the new snapshot with it, or is withdrawn
        self._rearm.set()  # the guard reckons with the new expiry
        if self.key_cache_size is None:  # the memos follow the list's size
            self._digests.limit = max(KEY_MEMO_MIN, state.key_count)
        self._hosts.limit = max(HOST_MEMO_MIN, 2 * len(state.grants))
        self._raise_high_water(version, epoch, generated)
        log.info("allowlist: version %s loaded (%d grants, expires %s)", version, len(state.grants),
                 doc["expires_at"])
        return True

    # -- rollback protection across restarts and epochs -----------------------------------------

    def _check_high_water(self, version: int, epoch: str | None, generated: float) -> None:
        """Refuse a version below the highest seen in its epoch, and a document of an epoch that
        was replaced. A new epoch (a restore, `beekeeper allowlist new-epoch`) may start lower,
        if its document is no older than the newest seen: the document has verified against a
        trusted key (pinned ones when `trusted_keys` is given), and a replayed old document of
        an epoch this client never saw is older than what it holds."""
        high = self._high
        if high.version is None:
            return
        if epoch == high.epoch:
            if version < high.version:
                raise RollbackError(f"allowlist version {version} is older than the highest seen ({high.version}"
                                    f"{', kept in ' + str(self._state_file) if self._state_file else ''})")
            return
        if epoch in high.retired:
            raise RollbackError(f"allowlist epoch {epoch!r} was replaced; refusing its version {version}")
        new_start, held_start = _epoch_start(epoch), _epoch_start(high.epoch)
        if new_start is not None and held_start is not None:
            if new_start <= held_start:  # an older epoch: a replayed document from before a restore
                raise RollbackError(f"allowlist epoch {epoch!r} is older than the epoch held ({high.epoch!r})")
        elif high.generated is not None and generated < high.generated:  # epochs of another format
            raise RollbackError(f"allowlist version {version} of a new epoch {epoch!r} is older than the newest "
                                "document seen")

    def _raise_high_water(self, version: int, epoch: str | None, generated: float) -> None:
        high = self._high
        if high.version is not None and epoch == high.epoch:
            if version <= high.version and (high.generated or 0) >= generated:
                return
            new = high._replace(version=max(version, high.version), generated=max(generated, high.generated or 0))
        else:
            if high.version is not None:
                log.warning("allowlist: new epoch %r (was %r): version %s accepted (highest before: %s)",
                            epoch, high.epoch, version, high.version)
            retired = (high.retired + (high.epoch,))[-STATE_RETIRED_EPOCHS_MAX:] if high.version is not None \
                else high.retired
            new = _HighWater(epoch, version, generated, tuple(dict.fromkeys(retired)))
        self._high = new
        if self._state_file is not None and (new.version, new.epoch) != (high.version, high.epoch):
            self._save_high_water(new)

    def _load_high_water(self) -> _HighWater:
        path = self._state_file
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return _HighWater()
        except OSError as exc:
            raise ValueError(f"state_file {path} cannot be read: {exc}") from None
        try:
            data = json.loads(raw)
            high = _HighWater(data["epoch"], data["version"], data.get("generated"), tuple(data.get("retired", ())))
            if not (isinstance(high.version, int) and (high.epoch is None or isinstance(high.epoch, str))
                    and (high.generated is None or isinstance(high.generated, (int, float)))
                    and all(e is None or isinstance(e, str) for e in high.retired)):
                raise TypeError("wrong types")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"state_file {path} is not a Beekeeper gateway state ({exc}); fix or delete it "
                             "(deleting it forgets the highest version seen)") from None
        return high

    def _save_high_water(self, high: _HighWater) -> None:
        """Written atomically (a temporary file in the same folder, fsynced, renamed over), mode
        0600. A failure is logged, never raised: the document is already in force."""
        path = self._state_file
        body = json.dumps({"epoch": high.epoch, "version": high.version, "generated": high.generated,
                           "retired": list(high.retired)}).encode()
        temporary = None
        try:
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(handle, "wb") as out:
                os.fchmod(out.fileno(), 0o600)
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
            temporary = None
        except OSError as exc:
            log.error("allowlist: could not write the state file %s: %s", path, exc)
        finally:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)

    # -- signatures ---------------------------------------------------------------------------

    def _parse_jwks(self, data: dict[str, Any]) -> dict[str, jwt.PyJWK]:
        """The usable keys of a JWKS by kid: Ed25519 only and, with `trusted_keys`, only those
        whose thumbprint (computed from the key itself, whatever its kid says) is pinned."""
        keys = {}
        for entry in data.get("keys", []):
            if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519" \
                    or not entry.get("kid"):
                continue
            if self._trusted is not None and jwk_thumbprint(entry) not in self._trusted:
                continue
            keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="EdDSA")
        return keys

    def refresh_jwks(self) -> None:
        if self._pinned:
            return
        try:
            response = self._http.get(self.jwks_url, timeout=self.timeout, headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise FetchError(f"GET {self.jwks_url} failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise FetchError(f"GET {self.jwks_url} answered {response.status_code}")
        try:
            keys = self._parse_jwks(response.json())
        except (ValueError, AttributeError, jwt.PyJWKError) as exc:
            raise FetchError(f"{self.jwks_url} is not a JWKS: {exc}") from None
        if self._trusted is not None and not keys and not self._anchors:
            raise UntrustedKeyError(f"the JWKS at {self.jwks_url} holds none of the trusted keys")
        self._keys = {**keys, **self._anchors}

    def _document(self, response: requests.Response) -> dict[str, Any]:
        """The verified document of a 200 answer: format 2 (plain JSON bytes, the detached
        signature in SIGNATURE_HEADER) or format 1 (a compact JWS), zstd-decoded if need be."""
        body = response.content
        if body[:4] == _ZSTD_MAGIC and response.headers.get("Content-Encoding", "").strip().lower() == "zstd":
            if _zstandard is None:
                raise DocumentError("a zstd-encoded answer, and the zstandard package is not installed")
            try:
                body = _zstandard.ZstdDecompressor().decompress(body)
            except _zstandard.ZstdError as exc:
                raise DocumentError(f"the zstd-encoded answer does not decode: {exc}") from None
        signature = response.headers.get(SIGNATURE_HEADER)
        if signature is not None:
            return self._verify_detached(body, signature)
        return self._verify(body.strip())

    def _key_for(self, kid: Any) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is None:
            self.refresh_jwks()  # a rotation: the new key is published before it signs anything we see
            key = self._keys.get(kid)
        if key is None:
            if self._trusted is not None:
                raise UntrustedKeyError(f"no published key has kid {kid!r} among the trusted keys")
            raise SignatureError(f"no published key has kid {kid!r}")
        return key

    def _verify_detached(self, body: bytes, signature: str) -> dict[str, Any]:
        """Format 2: `body` verified against a detached JWS with an unencoded payload (RFC 7797:
        the signing input is `header_b64 + "." + body`, no base64 of the document); then
        parsed with orjson."""
        try:
            header_b64, middle, signature_b64 = signature.strip().encode("ascii").split(b".")
        except (UnicodeEncodeError, ValueError):
            raise SignatureError(f"{SIGNATURE_HEADER} is not a detached JWS") from None
        if middle:
            raise SignatureError(f"{SIGNATURE_HEADER} is not a detached JWS (it carries a payload)")
        try:
            header = json.loads(_b64url_decode(header_b64))
        except ValueError:
            raise SignatureError("the JWS header is not base64url JSON") from None
        if not isinstance(header, dict) or header.get("alg") not in ALGORITHMS or header.get("typ") != DOCUMENT_TYPE \
                or header.get("b64") is not False or header.get("crit") != ["b64"]:
            raise SignatureError(f"unexpected detached JWS header {header!r:.200}")
        key = self._key_for(header.get("kid"))
        try:
            valid = key.Algorithm.verify(header_b64 + b"." + body, key.key, _b64url_decode(signature_b64))
        except ValueError:
            valid = False
        if not valid:
            raise SignatureError(f"the signature does not verify with key {header.get('kid')!r}")
        try:
            doc = _loads(body)
        except ValueError:
            raise DocumentError("the signed document is not JSON") from None
        if not isinstance(doc, dict):
            raise DocumentError("the signed document is not a JSON object")
        return doc

    def _verify(self, token: bytes) -> dict[str, Any]:
        """The verified payload of a compact JWS. Parsed here rather than by pyjwt's decode, which
        checks base64 byte by byte in Python (over 20 s for a 100 000-grant document); the
        signature is still checked by pyjwt's EdDSA algorithm with the published JWK."""
        parts = token.split(b".")
        if len(parts) != 3:
            raise SignatureError("not a compact JWS")
        header_b64, payload_b64, signature_b64 = parts
        try:
            header = json.loads(_b64url_decode(header_b64))
        except ValueError:
            raise SignatureError("the JWS header is not base64url JSON") from None
        if not isinstance(header, dict) or header.get("alg") not in ALGORITHMS or header.get("typ") != DOCUMENT_TYPE \
                or "crit" in header or "b64" in header:  # a compact JWS of ours has a base64url payload
            raise SignatureError(f"unexpected JWS header {header!r:.200}")
        kid = header.get("kid")
        key = self._key_for(kid)
        try:
            signature = _b64url_decode(signature_b64)
            valid = key.Algorithm.verify(header_b64 + b"." + payload_b64, key.key, signature)
        except ValueError:
            valid = False
        if not valid:
            raise SignatureError(f"the signature does not verify with key {kid!r}")
        try:
            doc = _loads(_b64url_decode(payload_b64))
        except ValueError:
            raise DocumentError("the signed payload is not base64url JSON") from None
        if not isinstance(doc, dict):
            raise DocumentError("the signed payload is not a JSON object")
        return doc

    # -- background polling -------------------------------------------------------------------

    def start(self) -> AllowlistClient:
        """Poll every `poll_interval` seconds in a daemon thread (errors are logged, not raised).
        With the default clock, also start the expiry guard (see _guard), which lets check() skip
        its clock read and check_origin() answer from its remembered answers alone."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="allowlist-poller", daemon=True)
            self._thread.start()
        if self._clock is time.time and (self._guard_thread is None or not self._guard_thread.is_alive()):
            self._guard_thread = threading.Thread(target=self._guard, name="allowlist-expiry-guard", daemon=True)
            self._guard_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._rearm.set()
        if self._guard_thread is not None:
            self._guard_thread.join(timeout=self.timeout + 1)
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except AllowlistError as exc:
                log.warning("allowlist poll failed: %s", exc)
            self._stop.wait(self.poll_interval)

    def _guard(self) -> None:
        """The expiry guard: a thread that vouches for the held snapshot while its list is fresh
        for longer than FAST_PATH_MARGIN, so that check() need not read the clock and
        check_origin() may answer from its remembered answers alone. It wakes when a new snapshot
        comes (_apply sets `_rearm`), FAST_PATH_MARGIN seconds before the held one expires, and at
        least every GUARD_TICK seconds (a wall clock stepped forward is noticed within that); it
        withdraws its word then, and when it stops. Not a poller: it does no I/O, so a poll
        blocked on the network never holds it up."""
        with self._arm_lock:
            self._guarding = True
        try:
            while not self._stop.is_set():
                self._rearm.clear()
                with self._arm_lock:
                    left = self._arm()
                self._rearm.wait(min(left, GUARD_TICK) if left > 0 else GUARD_TICK)
        finally:
            with self._arm_lock:
                self._guarding = False
                self._arm()

    def _arm(self) -> float:
        """Under _arm_lock: vouch for the held snapshot if the guard runs and the list stays fresh
        for more than FAST_PATH_MARGIN seconds, else withdraw (the word is given before the index
        is exposed and the index hidden before the word is withdrawn, so a reader without the
        lock never sees an index without the word). The index exposed is the snapshot's remembered
        answers to exact Origins (see _Snapshot.remember_origin). The seconds until it must be
        withdrawn."""
        state = self._state
        left = state.expires - FAST_PATH_MARGIN - self._clock() if self._guarding and state is not None else 0.0
        if left > 0:
            self._armed = state
            self._fast = state.origin_answers
        else:
            self._fast = _UNARMED
            self._armed = None
        return left

    def __enter__(self) -> AllowlistClient:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- decisions ----------------------------------------------------------------------------

    def check(self, key: str | None = None, origin: str | None = None, referrer: str | None = None, *,
              referer: str | None = None) -> Decision:
        """May this request use the API, and under which grant? The rules are the decision table
        (DECISION_TABLE, docs/allowlist.md).

        `key`: the API key the request carries; `origin`: its `Origin` HEADER; `referer`: its
        `Referer` HEADER (used only when there is no Origin); `referrer`: an app id the request
        names (e.g. a `?referrer=` query value) — a name, matched by equality against the grants'
        referrer names, never read as a URL or a host. Only the two headers can prove where a
        browser request came from."""
        state = self._state
        if state is None:
            return NOT_LOADED
        # The list's expiry, on the clock unless the expiry guard vouches for this very snapshot
        # (it withdraws its word FAST_PATH_MARGIN seconds before the expiry: see _guard). A key
        # that may expire reads the clock in _check_key.
        if state is not self._armed and self._clock() >= state.expires:
            return LIST_EXPIRED
        source = origin or referer  # the Origin header, else the Referer header: never the app id
        if key is not None:
            if len(key) != state.key_length:
                return MALFORMED_KEY
            # The hot path: the key's SHA-256, remembered for keys seen before.
            memo = self._digests
            digest = memo.get(key)
            if digest is None:
                # First sight (or the old generation): computed here, not in a method, as this
                # is the cost of every key a gateway has not seen yet. The digest is looked up
                # first: a listed key was issued by the bot, so its checksum is right and is not
                # computed; only a digest the list does not hold needs the checksum, to tell
                # "malformed key" from "unknown key". Which digest a key has never changes, and
                # a wrong checksum stays wrong, so the memo needs no invalidation: every check()
                # still looks the digest up in the snapshot it holds.
                # The old generation is looked up only when it holds anything (a first lookup of
                # an empty dict costs more than the test; always empty with key_cache_size=0).
                old = memo.old
                digest = old.get(key) if old else None
                if digest is None:
                    try:
                        raw = key.encode()  # UTF-8 (the quickest); a non-ASCII key comes out longer
                    except UnicodeEncodeError:  # a lone surrogate
                        return MALFORMED_KEY
                    digest = _sha256(raw).digest()
                    entry = state.by_hash.get(digest)
                    # Listed keys are ASCII (base62), so a non-ASCII key is never found; only a miss
                    # tells it apart (more bytes than characters): malformed, as a bad checksum.
                    if entry is None and (len(raw) != len(key) or not checksum_ok(raw)):
                        digest = _BAD_CHECKSUM
                else:
                    entry = state.by_hash.get(digest)
                limit = memo.limit
                if limit:
                    if len(memo) < limit:
                        memo[key] = digest
                    else:
                        memo.put(key, digest)
                if entry is None:
                    return MALFORMED_KEY if digest is _BAD_CHECKSUM else UNKNOWN_KEY
                # One attribute read per kind of entry (`type()`, not `.__class__`: the former is
                # specialised by the interpreter, and each slot read below sees one class only).
                kind = type(entry)
                if kind is _Grant:  # a secret key that never expires and is not revoked
                    decision = entry._secret
                elif kind is _Key and source and (grant := state.by_origin.get(source)) is entry.grant:
                    # A publishable key that never expires, nor is revoked, from an exact Origin of its grant.
                    decision = grant._publishable
                else:
                    decision = None
                return decision if decision is not None else self._check_key(state, entry, source)
            entry = state.by_hash.get(digest)
            if entry is None:  # _BAD_CHECKSUM is never a listed digest
                return MALFORMED_KEY if digest is _BAD_CHECKSUM else UNKNOWN_KEY
            # A secret key that never expires and is not revoked: its grant's answer, once made.
            # A remembered (key, Origin) pair is a live, never-expiring key already allowed from
            # that Origin in this snapshot (see _Snapshot.allow_publishable). A key decides alone:
            # an app id sent with it changes nothing.
            if type(entry) is _Grant:
                decision = entry._secret
            elif source:
                decision = state.publishable_hits.get((entry, source))
            else:
                decision = None
            return decision if decision is not None else self._check_key(state, entry, source)
        if referrer:
            grant = state.grant_named(referrer)  # by equality: an app id is a name, never a host
            if grant is None:
                return UNKNOWN_REFERRER
            host = self._host(source) if source else None
            if host is None:
                return ORIGIN_REQUIRED
            return grant.allow(ALLOWED_REFERRER) if grant.serves(host) else ORIGIN_NOT_ALLOWED
        if source:
            # An Origin header is `https://<host>` nearly always: one lookup in the exact-Origin index.
            grant = state.by_origin.get(source)
            if grant is None:
                return self._answer_by_host(state, source)
            decision = grant._origin  # `is None`, not truth: a Decision's truth costs a read of it
            return decision if decision is not None else grant.allow(ALLOWED_ORIGIN)
        return NO_CREDENTIALS

    def check_origin(self, origin: str) -> Decision:
        """`check(origin=origin)`, always the same answer, for a request that carries only an
        Origin header (no key, no app id; a Referer header does not count when there is an
        Origin). While the expiry guard vouches for the held snapshot (the client was started
        with `start()` and the default clock, and the list is fresh for more than
        FAST_PATH_MARGIN seconds), an exact Origin answered before is answered by one lookup in the
        snapshot's remembered answers (Origin → Decision, not the grant: at 100 000 Origins in
        rotation, reading the grant would cost a cache miss), without reading the clock; another
        value is answered as check() answers it (a first sight of an exact Origin then
        remembered), and with no guard, or a list about to expire, check() answers. Remembered
        only on use, so a load costs no memory for it; bounded by the list's exact Origins."""
        decision = self._fast.get(origin)
        if decision is not None:
            return decision
        state = self._armed
        if state is None or state is not self._state or not origin:
            return self.check(None, origin)
        # Vouched for (no clock): check()'s answer to an Origin alone (its last lines), without the call.
        grant = state.by_origin.get(origin)
        if grant is not None:  # an exact Origin of the index: its grant's answer, remembered
            decision = grant.allow(ALLOWED_ORIGIN)
            if decision.allowed:
                state.remember_origin(origin, grant, decision)
            return decision
        return self._answer_by_host(state, origin)

    def _answer_by_host(self, state: _Snapshot, source: str) -> Decision:
        """check()'s answer to an Origin/Referer that is not an exact Origin of the index: its host,
        if a listed domain or under a listed wildcard, decides."""
        host = self._host(source)
        grant = state.grant_for_host(host) if host is not None else None
        if grant is None:
            return UNKNOWN_ORIGIN
        decision = grant._origin
        return decision if decision is not None else grant.allow(ALLOWED_ORIGIN)

    def _host(self, source: str) -> str | None:
        """host_of(source), remembered (two generations, sized to the list; "" for no host)."""
        hosts = self._hosts
        host = hosts.get(source)
        if host is None:
            host = hosts.recall(source)
            if host is None:
                host = _host_of(source) or ""
                hosts.put(source, host)
        return host or None

    def _check_key(self, state: _Snapshot, entry: _Key | _Grant, source: str | None) -> Decision:
        if type(entry) is _Grant:  # a secret key that never expires and is not revoked
            return entry.allow(ALLOWED_SECRET_KEY)
        if entry.revoked:
            return KEY_REVOKED
        if entry.expires is not None and self._clock() >= entry.expires:
            return KEY_EXPIRED
        if not entry.publishable:
            return entry.grant.allow(ALLOWED_SECRET_KEY)
        if not source:
            return ORIGIN_REQUIRED
        grant = entry.grant
        if state.by_origin.get(source) is grant:  # the exact Origin of one of its hosts
            decision = grant._publishable
            if decision is None:
                decision = grant.allow(ALLOWED_PUBLISHABLE_KEY)
            if entry.expires is None and decision.allowed:
                hits = state.publishable_hits
                if len(hits) < hits.limit:
                    hits[(entry, source)] = decision
                elif hits.limit:
                    hits.put((entry, source), decision)
            return decision
        host = self._host(source)
        if host is None:
            return ORIGIN_REQUIRED
        return state.allow_publishable(entry, host, source)


# --------------------------------------------------------------------------------------------
# WSGI middleware
# --------------------------------------------------------------------------------------------


def app_id_of(query: str) -> str | None:
    """The app id a request names: its first non-empty `referrer` query value, as `parse_qs` reads
    it; None without one. A query with neither "referrer" nor a percent escape in it has none
    (parse_qs only unescapes names and turns "+" into spaces), so it is not parsed."""
    if "referrer" not in query and "%" not in query:
        return None
    names = parse_qs(query).get("referrer")
    return names[0] if names else None


def decide_request(client: AllowlistClient, authorization: str, api_key: str | None, origin: str | None,
                   referer: str | None, query: str) -> Decision:
    """The middlewares' one reading of a request (WSGI and ASGI): the key from `Authorization:
    Bearer …` (else `X-API-Key`), the Origin header (else the Referer header) and an app id from the
    `referrer` query parameter (a name only). A request with an Origin and neither a key nor an
    app id goes to check_origin() (the same answer, quicker); the Referer does not count then."""
    key = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
    key = key or api_key or None
    app_id = app_id_of(query)
    origin = origin or None
    if origin is not None and key is None and app_id is None:
        return client.check_origin(origin)
    return client.check(key=key, origin=origin, referrer=app_id, referer=referer or None)


class AllowlistMiddleware:
    """Enforces the allowlist in front of any WSGI app.

    The key comes from `Authorization: Bearer …` (or `X-API-Key`), the origin from the `Origin`
    header (else the `Referer` header), an app id from the `referrer` query parameter (a name
    only: it never stands in for the headers); a request with an Origin and neither a key nor an
    app id is decided by `check_origin()` (the same answer, quicker). Refusals answer JSON:
    401 without any credential, 403 when refused, 503 while no fresh allowlist is held (fail closed).
    An allowed request reaches the app with the Decision in `environ["beekeeper.decision"]`.
    """

    def __init__(self, app, client: AllowlistClient):
        self.app = app
        self.client = client

    def __call__(self, environ, start_response):
        decision = decide_request(self.client, environ.get("HTTP_AUTHORIZATION", ""), environ.get("HTTP_X_API_KEY"),
                                  environ.get("HTTP_ORIGIN"), environ.get("HTTP_REFERER"),
                                  environ.get("QUERY_STRING", ""))
        if decision.allowed:
            environ["beekeeper.decision"] = decision
            return self.app(environ, start_response)
        status = HTTP_STATUS[decision.reason]
        body = json.dumps({"error": "forbidden" if status[0] == "4" else "unavailable",
                           "reason": decision.reason}).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
