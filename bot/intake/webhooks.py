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
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable

import orjson
from sqlalchemy.exc import InterfaceError, OperationalError

from bot.core import metrics
from bot.intake import inbox

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
    """X-GitHub-Hook-ID; `hook_id` in the body as a fallback; else 0."""
    header = header.strip()
    if header.isascii() and header.isdigit() and len(header) <= 18:
        return int(header)
    return _integer(payload.get("hook_id")) or 0


_JSON_HEADERS = [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"),
                 ("Cache-Control", "no-store")]
_STATUS = {200: "200 OK", 202: "202 Accepted", 400: "400 Bad Request", 401: "401 Unauthorized",
           403: "403 Forbidden", 405: "405 Method Not Allowed", 408: "408 Request Timeout",
           413: "413 Payload Too Large", 500: "500 Internal Server Error", 503: "503 Service Unavailable"}


class Answer(Exception):
    """Stops a delivery with an HTTP answer (an error, or the ping's reply)."""

    def __init__(self, status: int, body: dict | bytes, log_message: str | None = None):
        super().__init__(log_message or str(status))
        self.status = status
        self.body = body if isinstance(body, bytes) else orjson.dumps(body) + b"\n"
        self.log_message = log_message


class _Watch:
    """One body being read: when it is due, and whether the watchdog cut it."""

    __slots__ = ("sock", "start", "hard", "rate", "received", "want", "expired")

    def __init__(self, sock, seconds: float, rate: int):
        self.sock, self.rate = sock, rate
        self.start = time.monotonic()
        self.hard = self.start + seconds
        self.received = self.want = 0
        self.expired = False

    def due(self) -> float:
        """The total deadline, or earlier when the body arrives slower than the minimum rate:
        after a grace second the next `want` bytes must be in by then."""
        if not self.rate:
            return self.hard
        return min(self.hard, self.start + BodyDeadline.GRACE_SECONDS + (self.received + self.want) / self.rate)


class BodyDeadline:
    """Cuts the reading side of a connection whose request body is late (slowloris bodies).

    A blocked read cannot be interrupted from its own thread, and a socket timeout bounds each
    recv(), not the whole body (a client sending one byte per timeout would keep the thread
    forever). So one watchdog thread per process looks at the bodies being read a few times a
    second and shuts the reading side of a late one's socket: the blocked read returns at once
    with what it has, the intake answers 408, and the server closes the connection, since
    nothing more can be read from it. Needs the server's socket in the environ (gunicorn,
    Werkzeug); without one, the deadline is checked between reads only.
    """

    TICK_SECONDS = 0.2
    GRACE_SECONDS = 1.0

    def __init__(self):
        self._lock = threading.Lock()
        self._reading: set[_Watch] = set()
        self._pid: int | None = None

    def watch(self, sock, seconds: float, rate: int) -> _Watch:
        watch = _Watch(sock, seconds, rate)
        if sock is not None:
            with self._lock:
                if self._pid != os.getpid():  # first use in this process (gunicorn forks workers)
                    self._pid = os.getpid()
                    threading.Thread(target=self._run, name="beekeeper-body-deadline", daemon=True).start()
                self._reading.add(watch)
        return watch

    def release(self, watch: _Watch) -> None:
        """Done reading; afterwards `watch.expired` says for good whether the body was cut."""
        with self._lock:
            self._reading.discard(watch)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK_SECONDS)
            now = time.monotonic()
            with self._lock:
                late = [watch for watch in self._reading if now >= watch.due()]
                for watch in late:
                    watch.expired = True
                    self._reading.discard(watch)
            for watch in late:
                try:
                    # socket.socket's own shutdown, also for an SSLSocket (whose override would
                    # drop the TLS state): only the reading side, the 408 can still be sent.
                    socket.socket.shutdown(watch.sock, socket.SHUT_RD)
                except OSError:
                    pass  # already closed by the client


BODY_DEADLINE = BodyDeadline()
_READ_CHUNK = 64 * 1024


class _DeadlineInput:
    """wsgi.input of a non-webhook request under a BodyDeadline watch: a read the watchdog cut
    raises werkzeug's RequestTimeout, which Flask answers 408."""

    def __init__(self, stream, watch: _Watch, length: int | None):
        self._stream, self._watch, self._length = stream, watch, length

    def _count(self, data: bytes) -> bytes:
        self._watch.received += len(data)
        if not data or (self._length is not None and self._watch.received >= self._length):
            BODY_DEADLINE.release(self._watch)  # the whole body is in: the rest is the app's time
        return data

    def read(self, size: int | None = -1) -> bytes:
        self._watch.want = size if size and size > 0 else _READ_CHUNK
        try:
            data = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        except Exception:
            if not self._watch.expired:
                raise
            data = b""
        if self._watch.expired and (not data or size is None or size < 0 or len(data) < size):
            from werkzeug.exceptions import RequestTimeout

            raise RequestTimeout("The request body arrived too slowly.")
        return self._count(data)

    def readline(self, size: int | None = -1) -> bytes:
        return self._count(self._stream.readline() if size is None or size < 0 else self._stream.readline(size))


def _too_slow(watch: _Watch) -> Answer:
    return Answer(408, {"error": "the request body arrived too slowly"},
                  f"webhook rejected: body not received within the deadline ({watch.received} bytes read)")


def _read_body(environ: dict, max_bytes: int, seconds: float = 10.0, min_rate: int = 0) -> bytes:
    """The raw body; 413 when it is larger than `max_bytes`, 408 when it arrives too slowly.

    With a Content-Length the size is known before reading. A chunked body (the server marks
    the stream terminated) is read up to one byte past the limit, so an oversized one is
    answered 413 instead of being silently cut at the limit and failing its signature.
    The whole body must be in within `seconds`, and after the first second at `min_rate`
    bytes per second or faster (BodyDeadline).
    """
    stream = environ["wsgi.input"]
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()  # wins over a length (RFC 9112)
    declared = "" if chunked else environ.get("CONTENT_LENGTH", "").strip()
    if declared:
        # ASCII digits only (str.isdigit also takes "²"), and short enough to be a real size.
        if not (declared.isascii() and declared.isdigit() and len(declared) <= 18):
            raise Answer(400, {"error": "invalid Content-Length"}, "webhook rejected: invalid Content-Length")
        length: int | None = int(declared)
        if length > max_bytes:
            raise Answer(413, {"error": "payload too large"}, f"webhook rejected: payload over {max_bytes} bytes")
        if not length:
            return b""
    elif environ.get("wsgi.input_terminated"):
        length = None
    else:
        return b""  # neither a length nor a terminated stream: nothing can be read safely
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    watch = BODY_DEADLINE.watch(sock, seconds, min_rate)
    # At most a second's worth at the minimum rate per read, so the rate is checked that finely.
    step = min(_READ_CHUNK, max(min_rate, 4096)) if min_rate else _READ_CHUNK
    chunks: list[bytes] = []
    try:
        while length is None or watch.received < length:
            watch.want = step if length is None else min(step, length - watch.received)
            if time.monotonic() >= watch.due():
                watch.expired = True
                break
            try:
                data = stream.read(watch.want)
            except Exception:  # the server's reader after a cut, or a client gone mid-body
                if watch.expired:
                    break
                raise Answer(400, {"error": "the request body could not be read"},
                             "webhook rejected: the connection broke while reading the body") from None
            if not data:
                break
            chunks.append(data)
            watch.received += len(data)
            if length is None and watch.received > max_bytes:
                raise Answer(413, {"error": "payload too large"}, f"webhook rejected: payload over {max_bytes} bytes")
    finally:
        BODY_DEADLINE.release(watch)
    body = b"".join(chunks)
    if watch.expired and (length is None or len(body) < length):  # cut just after the last byte: whole
        raise _too_slow(watch)
    if length is not None and len(body) < length:
        raise Answer(400, {"error": "the request body is shorter than its Content-Length"},
                     f"webhook rejected: body ended after {len(body)} of {length} bytes")
    return body


def _header(environ: dict, name: str) -> str:
    """A request header as text (WSGI gives latin-1 decoded strings), stripped; "" when absent."""
    return environ.get(name, "").strip()


def _delivery_for_log(environ: dict) -> str:
    return _header(environ, "HTTP_X_GITHUB_DELIVERY")[:64] or "-"


class AppHook:
    """The app's webhook id, where it is known: `BEEKEEPER_WEBHOOK_HOOK_ID`, else the id the
    app's own signed `ping` recorded (table app_webhook; GitHub pings the hook when the app is
    created, and "Redeliver" on the ping in the app's advanced settings sends it again).

    A GitHub App has exactly one webhook. Deliveries from another hook id (a repository or
    organisation webhook sharing the secret, or a delivery whose header was rewritten) are
    refused once it is known. Until then nothing is refused; an unknown id is looked up again
    at most once a minute, so every web process learns a recorded ping soon.
    """

    RECHECK_SECONDS = 60.0

    def __init__(self, runtime):
        self.runtime = runtime
        self.known: int | None = runtime.settings.webhook_hook_id
        self._checked_at = float("-inf")

    def _app_id(self) -> int | None:
        app_id = self.runtime.settings.github_app_id
        return int(app_id) if app_id and str(app_id).isdigit() else None

    def expected(self) -> int | None:
        if self.known is not None:
            return self.known
        app_id = self._app_id()
        now = time.monotonic()
        if app_id is None or now - self._checked_at < self.RECHECK_SECONDS:
            return None
        from sqlmodel import Session

        from bot.core.models import AppWebhook

        try:
            with Session(self.runtime.engine) as session:
                row = session.get(AppWebhook, app_id)
        except (OperationalError, InterfaceError):
            return None  # the database is down: storing fails too, and says so
        self._checked_at = now
        if row is not None:
            self.known = row.hook_id
        return self.known

    def record_ping(self, payload: dict, hook_id: int) -> bool:
        """Remember the hook of this app's own ping; False when the ping is not the app's."""
        hook = payload.get("hook")
        app_id = self._app_id()
        if (not isinstance(hook, dict) or hook.get("type") != "App" or app_id is None
                or _integer(hook.get("app_id")) != app_id or not hook_id or _integer(hook.get("id")) != hook_id):
            return False
        configured = self.runtime.settings.webhook_hook_id
        if configured is not None and configured != hook_id:
            log.warning("the app's own ping comes from hook %s but BEEKEEPER_WEBHOOK_HOOK_ID is %s: "
                        "fix the setting, or its deliveries are refused", hook_id, configured)
        if configured is None:
            from sqlmodel import Session

            from bot.core.clock import utcnow
            from bot.core.models import AppWebhook

            with Session(self.runtime.engine) as session:
                row = session.get(AppWebhook, app_id) or AppWebhook(app_id=app_id, hook_id=hook_id)
                if row.hook_id != hook_id:
                    log.warning("the app's webhook id changed from %s to %s", row.hook_id, hook_id)
                row.hook_id, row.recorded_at = hook_id, utcnow()
                session.add(row)
                session.commit()
            self.known = hook_id
        return True


class WebhookIntake:
    """WSGI middleware: answers `POST /webhook` itself and hands every other request to `app`.

    One per app, so one per gunicorn worker process; its GroupCommit lets concurrent
    deliveries share commits."""

    def __init__(self, app: Callable, runtime):
        self.app = app
        self.runtime = runtime
        self.group_commit = inbox.GroupCommit(runtime.engine)
        self.app_hook = AppHook(runtime)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self._other(environ, start_response)
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

    def _other(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Every other path, to Flask; a request body (a form post) is read under the same
        deadline as a delivery's, and a late one is answered 408 by Flask."""
        sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        declared = environ.get("CONTENT_LENGTH", "").strip()
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        length = int(declared) if not chunked and declared.isascii() and declared.isdigit() else None
        if sock is None or not (chunked or length):
            return self.app(environ, start_response)  # no body (every GET): nothing to watch
        settings = self.runtime.settings
        watch = BODY_DEADLINE.watch(sock, settings.webhook_read_seconds, settings.webhook_min_bytes_per_second)
        environ["wsgi.input"] = _DeadlineInput(environ["wsgi.input"], watch, length)
        try:
            return self.app(environ, start_response)
        finally:
            BODY_DEADLINE.release(watch)

    def receive(self, environ: dict) -> tuple[int, bytes]:
        """(status, body) for one delivery; raises Answer for anything but a stored delivery."""
        settings = self.runtime.settings
        if not settings.webhook_secret:
            raise Answer(503, {"error": "BEEKEEPER_WEBHOOK_SECRET is not configured"})
        body = _read_body(environ, settings.max_webhook_bytes, settings.webhook_read_seconds,
                          settings.webhook_min_bytes_per_second)
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
        hook_id = _hook_id(_header(environ, "HTTP_X_GITHUB_HOOK_ID"), payload)
        if event == "ping":
            try:
                ours = self.app_hook.record_ping(payload, hook_id)
            except (OperationalError, InterfaceError) as exc:
                log.error("delivery=%s ping not recorded: database unavailable (%s)", delivery_id,
                          type(exc).__name__)
                return 503, b'{"error":"database unavailable; please redeliver"}\n'
            if not ours:
                self._check_hook(hook_id)
            log.info("delivery=%s event=ping hook=%s answered%s", delivery_id, hook_id,
                     " (the app's webhook)" if ours else "")
            raise Answer(200, {"ok": True, "zen": payload.get("zen")})
        self._check_hook(hook_id)

        incoming = inbox.Incoming(
            event=event,
            action=_text(payload.get("action")),
            delivery_id=delivery_id,
            hook_id=hook_id,
            installation_id=_installation_id(payload),
            payload=text,
            payload_sha256=hashlib.sha256(body).hexdigest(),
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
            log.info("delivery=%s event=%s.%s already stored (this delivery id or this very body)", delivery_id,
                     event, incoming.action)
            return 200, _DUPLICATE
        metrics.DELIVERIES_RECEIVED.labels(event=event).inc()
        log.info("delivery=%s event=%s.%s stored", delivery_id, event, incoming.action)
        self.runtime.notify_worker()
        return 202, _ACCEPTED

    def _check_hook(self, hook_id: int) -> None:
        expected = self.app_hook.expected()
        if expected is not None and hook_id != expected:
            raise Answer(403, {"error": "this delivery does not come from the app's webhook"},
                         f"webhook rejected: hook id {hook_id} is not the app's webhook ({expected})")
