"""`POST /webhook`: verify, store, answer. Nothing here waits for GitHub.

The signature is checked on the raw bytes, in constant time, before any JSON parsing; a
delivery is stored with its raw payload and the worker does everything else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError

from bot import inbox, metrics
from bot.db import session_scope

log = logging.getLogger("beekeeper.webhook")

bp = Blueprint("webhooks", __name__)


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is `sha256=<hex HMAC-SHA256 of body>`. `sha1=` alone is refused."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header[len("sha256="):].strip().lower())


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub would send for `body` (tests and benchmarks use it)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _error(status: int, message: str):
    return jsonify(error=message), status


@bp.post("/webhook")
def receive():
    settings = current_app.config["BEEKEEPER_SETTINGS"]
    if not settings.webhook_secret:
        return _error(503, "BEEKEEPER_WEBHOOK_SECRET is not configured")
    length = request.content_length
    if length is not None and length > settings.max_webhook_bytes:
        return _error(413, "payload too large")
    body = request.get_data(cache=False)  # bounded by MAX_CONTENT_LENGTH as well
    if len(body) > settings.max_webhook_bytes:
        return _error(413, "payload too large")
    if not signature_valid(settings.webhook_secret, body, request.headers.get("X-Hub-Signature-256")):
        log.warning("webhook rejected: bad or missing signature (delivery=%s)",
                    request.headers.get("X-GitHub-Delivery", "-")[:64])
        return _error(401, "invalid signature")

    event = request.headers.get("X-GitHub-Event", "").strip()
    delivery_id = request.headers.get("X-GitHub-Delivery", "").strip()
    if not event or not delivery_id or len(event) > 64 or len(delivery_id) > 64:
        return _error(400, "missing X-GitHub-Event or X-GitHub-Delivery header")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not JSON")
    if not isinstance(payload, dict):
        return _error(400, "body is not a JSON object")
    if event == "ping":
        return jsonify(ok=True, zen=payload.get("zen")), 200

    hook_header = request.headers.get("X-GitHub-Hook-ID", "").strip()
    hook_id = int(hook_header) if hook_header.isdigit() else int(payload.get("hook_id") or 0)
    installation = payload.get("installation") or {}
    incoming = inbox.Incoming(
        event=event,
        action=payload.get("action") if isinstance(payload.get("action"), str) else None,
        delivery_id=delivery_id,
        hook_id=hook_id,
        installation_id=installation.get("id") if isinstance(installation.get("id"), int) else None,
        payload=body.decode("utf-8"),
    )
    try:
        with session_scope(current_app.extensions["beekeeper"].engine) as session:
            stored = inbox.store(session, incoming)
    except (OperationalError, InterfaceError) as exc:
        # GitHub records the 503 as a failed delivery, which `beekeeper redeliver` recovers.
        log.error("webhook delivery=%s not stored: database unavailable (%s)", delivery_id, type(exc).__name__)
        return _error(503, "database unavailable; please redeliver")
    if not stored:
        metrics.DELIVERIES_DUPLICATE.labels(event=event).inc()
        log.info("delivery=%s event=%s.%s already stored", delivery_id, event, incoming.action)
        return jsonify(ok=True, duplicate=True), 200
    metrics.DELIVERIES_RECEIVED.labels(event=event).inc()
    log.info("delivery=%s event=%s.%s stored", delivery_id, event, incoming.action)
    current_app.extensions["beekeeper"].notify_worker()
    return jsonify(ok=True), 202
