"""`POST /webhook`: verify, store, answer. Nothing here waits for GitHub.

The signature is checked on the raw bytes, in constant time, before any JSON parsing; a
delivery is stored with its raw payload and the worker does everything else.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import orjson
from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError

from bot import inbox, metrics

log = logging.getLogger("beekeeper.webhook")

bp = Blueprint("webhooks", __name__)


@bp.record_once
def _make_group_commit(state) -> None:
    # One per app (so per gunicorn worker process): concurrent deliveries share commits.
    state.app.extensions["beekeeper.intake"] = inbox.GroupCommit(state.app.extensions["beekeeper"].engine)


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is `sha256=<hex HMAC-SHA256 of body>`. `sha1=` alone is refused."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    candidate = header[len("sha256="):].strip().lower()
    if not candidate.isascii():  # compare_digest refuses non-ASCII text; no hex digest has any
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, candidate)


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub would send for `body` (tests and benchmarks use it)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


_BIGINT_MAX = 2**63 - 1
_ACCEPTED = b'{"ok":true}\n'
_DUPLICATE = b'{"duplicate":true,"ok":true}\n'


def _integer(value) -> int | None:
    """A JSON integer that fits the BIGINT columns, else None (bool is not an id)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _BIGINT_MAX:
        return value
    return None


def _text(value, limit: int = 64) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _installation_id(payload: dict) -> int | None:
    installation = payload.get("installation")
    return _integer(installation.get("id")) if isinstance(installation, dict) else None


def _hook_id(header: str, payload: dict) -> int:
    """X-GitHub-Hook-ID (part of the inbox key); `hook_id` in the body as a fallback; else 0."""
    header = header.strip()
    if header.isascii() and header.isdigit() and len(header) <= 18:
        return int(header)
    return _integer(payload.get("hook_id")) or 0


def _read_body(max_bytes: int) -> bytes | None:
    """The raw body, or None when it is larger than `max_bytes`.

    With a Content-Length the size is known before reading. A chunked body (the server marks
    the stream terminated) is read up to one byte past the limit, so an oversized one is
    answered 413 instead of being silently cut at the limit and failing its signature.
    """
    if request.content_length is not None:
        return None if request.content_length > max_bytes else request.get_data(cache=False)
    if request.environ.get("wsgi.input_terminated"):
        body = request.environ["wsgi.input"].read(max_bytes + 1)
        return None if len(body) > max_bytes else body
    return b""  # neither a length nor a terminated stream: nothing can be read safely


def _error(status: int, message: str):
    return jsonify(error=message), status


@bp.post("/webhook")
def receive():
    settings = current_app.config["BEEKEEPER_SETTINGS"]
    if not settings.webhook_secret:
        return _error(503, "BEEKEEPER_WEBHOOK_SECRET is not configured")
    body = _read_body(settings.max_webhook_bytes)
    if body is None:
        log.warning("webhook rejected: payload over %d bytes (delivery=%s)", settings.max_webhook_bytes,
                    request.headers.get("X-GitHub-Delivery", "-")[:64])
        return _error(413, "payload too large")
    if not signature_valid(settings.webhook_secret, body, request.headers.get("X-Hub-Signature-256")):
        log.warning("webhook rejected: bad or missing signature (delivery=%s)",
                    request.headers.get("X-GitHub-Delivery", "-")[:64])
        return _error(401, "invalid signature")

    event = request.headers.get("X-GitHub-Event", "").strip()
    delivery_id = request.headers.get("X-GitHub-Delivery", "").strip()
    if not event or not delivery_id or len(event) > 64 or len(delivery_id) > 64:
        log.warning("webhook rejected: missing X-GitHub-Event or X-GitHub-Delivery (delivery=%s)",
                    delivery_id[:64] or "-")
        return _error(400, "missing X-GitHub-Event or X-GitHub-Delivery header")
    try:
        payload = orjson.loads(body)  # strict: invalid UTF-8 or JSON is refused; 3-4x faster than json
        text = body.decode("utf-8")
    except ValueError:  # orjson.JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("webhook rejected: body is not JSON (delivery=%s)", delivery_id)
        return _error(400, "body is not JSON")
    if not isinstance(payload, dict):
        log.warning("webhook rejected: body is not a JSON object (delivery=%s)", delivery_id)
        return _error(400, "body is not a JSON object")
    if event == "ping":
        log.info("delivery=%s event=ping answered", delivery_id)
        return jsonify(ok=True, zen=payload.get("zen")), 200

    incoming = inbox.Incoming(
        event=event,
        action=_text(payload.get("action")),
        delivery_id=delivery_id,
        hook_id=_hook_id(request.headers.get("X-GitHub-Hook-ID", ""), payload),
        installation_id=_installation_id(payload),
        payload=text,
    )
    try:
        # Committed before the answer: a 202 means the delivery is on disk.
        stored = current_app.extensions["beekeeper.intake"].store(incoming)
    except (OperationalError, InterfaceError) as exc:
        # GitHub records the 503 as a failed delivery, which `beekeeper redeliver` recovers.
        log.error("webhook delivery=%s not stored: database unavailable (%s)", delivery_id, type(exc).__name__)
        return _error(503, "database unavailable; please redeliver")
    if not stored:
        metrics.DELIVERIES_DUPLICATE.labels(event=event).inc()
        log.info("delivery=%s event=%s.%s already stored", delivery_id, event, incoming.action)
        return Response(_DUPLICATE, 200, mimetype="application/json")
    metrics.DELIVERIES_RECEIVED.labels(event=event).inc()
    log.info("delivery=%s event=%s.%s stored", delivery_id, event, incoming.action)
    current_app.extensions["beekeeper"].notify_worker()
    return Response(_ACCEPTED, 202, mimetype="application/json")
