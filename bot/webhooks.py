"""`POST /webhook`: verify, store, answer. Nothing here waits for GitHub.

The signature is checked on the raw bytes, in constant time, before any JSON parsing; a
delivery is stored with its raw payload and the worker does everything else.

The endpoint is a plain WSGI layer in front of the Flask app (`WebhookIntake`), not a Flask
view: a delivery needs none of Flask's request machinery (routing, request context, session,
response object, after-request hooks), and that machinery cost as much CPU per delivery as the
signature check, the JSON parse and the log line together. Every other path goes to Flask.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable

import orjson
from sqlalchemy.exc import InterfaceError, OperationalError

from bot import inbox, metrics

log = logging.getLogger("beekeeper.webhook")

PATH = "/webhook"


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


_JSON_HEADERS = [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
                 ("Cache-Control", "no-store")]
_STATUS = {200: "200 OK", 202: "202 Accepted", 400: "400 Bad Request", 401: "401 Unauthorized",
           405: "405 Method Not Allowed", 413: "413 Payload Too Large", 500: "500 Internal Server Error",
           503: "503 Service Unavailable"}


class Answer(Exception):
    """Stops a delivery with an HTTP answer (an error, or the ping's reply)."""

    def __init__(self, status: int, body: dict | bytes, log_message: str | None = None):
        super().__init__(log_message or str(status))
        self.status = status
        self.body = body if isinstance(body, bytes) else orjson.dumps(body) + b"\n"
        self.log_message = log_message


def _read_body(environ: dict, max_bytes: int) -> bytes:
    """The raw body; 413 when it is larger than `max_bytes`.

    With a Content-Length the size is known before reading. A chunked body (the server marks
    the stream terminated) is read up to one byte past the limit, so an oversized one is
    answered 413 instead of being silently cut at the limit and failing its signature.
    """
    stream = environ["wsgi.input"]
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()  # wins over a length (RFC 9112)
    declared = "" if chunked else environ.get("CONTENT_LENGTH", "").strip()
    if declared:
        # ASCII digits only (str.isdigit also takes "²"), and short enough to be a real size.
        if not (declared.isascii() and declared.isdigit() and len(declared) <= 18):
            raise Answer(400, {"error": "invalid Content-Length"}, "webhook rejected: invalid Content-Length")
        length = int(declared)
        if length > max_bytes:
            raise Answer(413, {"error": "payload too large"}, f"webhook rejected: payload over {max_bytes} bytes")
        return stream.read(length) if length else b""
    if environ.get("wsgi.input_terminated"):
        body = stream.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise Answer(413, {"error": "payload too large"}, f"webhook rejected: payload over {max_bytes} bytes")
        return body
    return b""  # neither a length nor a terminated stream: nothing can be read safely


def _header(environ: dict, name: str) -> str:
    """A request header as text (WSGI gives latin-1 decoded strings), stripped; "" when absent."""
    return environ.get(name, "").strip()


def _delivery_for_log(environ: dict) -> str:
    return _header(environ, "HTTP_X_GITHUB_DELIVERY")[:64] or "-"


class WebhookIntake:
    """WSGI middleware: answers `POST /webhook` itself and hands every other request to `app`.

    One per app, so one per gunicorn worker process; its GroupCommit lets concurrent
    deliveries share commits."""

    def __init__(self, app: Callable, runtime):
        self.app = app
        self.runtime = runtime
        self.group_commit = inbox.GroupCommit(runtime.engine)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            status, body, extra = 405, b'{"error":"method not allowed; GitHub POSTs deliveries"}\n', [("Allow", "POST")]
        else:
            extra = []
            try:
                status, body = self.receive(environ)
            except Answer as answer:
                if answer.log_message:
                    log.warning("%s (delivery=%s)", answer.log_message, _delivery_for_log(environ))
                status, body = answer.status, answer.body
            except Exception:  # a bug here must still answer (GitHub records a failed delivery)
                log.exception("webhook delivery=%s failed", _delivery_for_log(environ))
                status, body = 500, b'{"error":"internal error; please redeliver"}\n'
        start_response(_STATUS[status], [*_JSON_HEADERS, ("Content-Length", str(len(body))), *extra])
        return [body]

    def receive(self, environ: dict) -> tuple[int, bytes]:
        """(status, body) for one delivery; raises Answer for anything but a stored delivery."""
        settings = self.runtime.settings
        if not settings.webhook_secret:
            raise Answer(503, {"error": "BEEKEEPER_WEBHOOK_SECRET is not configured"})
        body = _read_body(environ, settings.max_webhook_bytes)
        secret = settings.webhook_secret.get_secret_value()
        if not signature_valid(secret, body, environ.get("HTTP_X_HUB_SIGNATURE_256")):
            raise Answer(401, {"error": "invalid signature"}, "webhook rejected: bad or missing signature")

        event = _header(environ, "HTTP_X_GITHUB_EVENT")
        delivery_id = _header(environ, "HTTP_X_GITHUB_DELIVERY")
        if not event or not delivery_id or len(event) > 64 or len(delivery_id) > 64:
            raise Answer(400, {"error": "missing X-GitHub-Event or X-GitHub-Delivery header"},
                         "webhook rejected: missing X-GitHub-Event or X-GitHub-Delivery")
        try:
            payload = orjson.loads(body)  # strict: invalid UTF-8 or JSON is refused; 3-4x faster than json
            text = body.decode("utf-8")
        except ValueError:  # orjson.JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise Answer(400, {"error": "body is not JSON"}, "webhook rejected: body is not JSON") from None
        if not isinstance(payload, dict):
            raise Answer(400, {"error": "body is not a JSON object"}, "webhook rejected: body is not a JSON object")
        if event == "ping":
            log.info("delivery=%s event=ping answered", delivery_id)
            raise Answer(200, {"ok": True, "zen": payload.get("zen")})

        incoming = inbox.Incoming(
            event=event,
            action=_text(payload.get("action")),
            delivery_id=delivery_id,
            hook_id=_hook_id(_header(environ, "HTTP_X_GITHUB_HOOK_ID"), payload),
            installation_id=_installation_id(payload),
            payload=text,
        )
        try:
            # Committed before the answer: a 202 means the delivery is on disk.
            stored = self.group_commit.store(incoming)
        except (OperationalError, InterfaceError) as exc:
            # GitHub records the 503 as a failed delivery, which `beekeeper redeliver` recovers.
            log.error("webhook delivery=%s not stored: database unavailable (%s)", delivery_id, type(exc).__name__)
            return 503, b'{"error":"database unavailable; please redeliver"}\n'
        if not stored:
            metrics.DELIVERIES_DUPLICATE.labels(event=event).inc()
            log.info("delivery=%s event=%s.%s already stored", delivery_id, event, incoming.action)
            return 200, _DUPLICATE
        metrics.DELIVERIES_RECEIVED.labels(event=event).inc()
        log.info("delivery=%s event=%s.%s stored", delivery_id, event, incoming.action)
        self.runtime.notify_worker()
        return 202, _ACCEPTED
