"""The WSGI (`AllowlistMiddleware`) and ASGI (`AllowlistASGIMiddleware`) middlewares, driven by hand
(a WSGI environ and start_response; an ASGI scope with receive/send under asyncio): every request
row of the conformance vectors gives the same status, reason and grant through both, and both read
the request the same way."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

import pytest
from gw_support import VECTORS

from beekeeper_gateway import AllowlistASGIMiddleware, AllowlistMiddleware

KEYS = VECTORS["keys"]


# --- driving the two middlewares ------------------------------------------------------------------


def wsgi(client, headers: dict[str, str], query: str = ""):
    """(status code, JSON body or None, the Decision the app saw) for one request through the WSGI
    middleware. Header values are given as a WSGI server hands them over (latin-1 text)."""
    seen = {}

    def app(environ, start_response):
        seen["decision"] = environ["beekeeper.decision"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/thing", "QUERY_STRING": query}
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answer = {}

    def start_response(status, response_headers):
        answer["status"], answer["headers"] = status, dict(response_headers)

    body = b"".join(AllowlistMiddleware(app, client)(environ, start_response))
    code = int(answer["status"][:3])
    if code != 200:
        assert answer["headers"] == {"Content-Type": "application/json", "Content-Length": str(len(body))}
    return code, (json.loads(body) if code != 200 else None), seen.get("decision")


def asgi_call(middleware, scope, incoming=()):
    """Run one ASGI call to the end; the messages it sent."""
    sent, pending = [], list(incoming)

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def http_scope(headers: list[tuple[bytes, bytes]], query: bytes = b"") -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "https",
            "path": "/v1/thing", "raw_path": b"/v1/thing", "query_string": query, "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 5000), "server": ("api.test", 443)}


class RecordingApp:
    """An ASGI app answering 200 and keeping the scope it was called with."""

    def __init__(self):
        self.scopes = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})


def asgi(client, headers: dict[str, str], query: str = ""):
    """The same as wsgi() through the ASGI middleware; header values are sent as latin-1 bytes."""
    app = RecordingApp()
    raw = [(name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()]
    sent = asgi_call(AllowlistASGIMiddleware(app, client), http_scope(raw, query.encode("latin-1")))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert start["type"] == "http.response.start" and sent[-1]["type"] == "http.response.body"
    code = start["status"]
    if code != 200:
        assert dict(start["headers"]) == {b"content-type": b"application/json",
                                          b"content-length": str(len(body)).encode()}
    return code, (json.loads(body) if code != 200 else None), (app.scopes[0]["beekeeper.decision"]
                                                                if app.scopes else None)


def _request(row: dict, key_header: str) -> tuple[dict[str, str], str]:
    headers = {}
    if row["key"]:
        key = KEYS[row["key"]]
        headers.update({"Authorization": f"Bearer {key}"} if key_header == "authorization" else {"X-API-Key": key})
    if row["origin"]:
        headers["Origin"] = row["origin"]
    if row["referer"]:
        headers["Referer"] = row["referer"]
    return headers, urlencode({"referrer": row["app_id"]}) if row["app_id"] else ""


# --- every vector through both ---------------------------------------------------------------------


@pytest.mark.parametrize("middleware", [wsgi, asgi], ids=["wsgi", "asgi"])
@pytest.mark.parametrize("key_header", ["authorization", "x-api-key"])
def test_every_request_vector_through_the_middleware(vector_clients, middleware, key_header):
    wrong = []
    for row in VECTORS["requests"]:
        headers, query = _request(row, key_header)
        code, body, decision = middleware(vector_clients[row["document"]], headers, query)
        if row["grant"] is not None:
            got = (code, decision.allowed and decision.app_id, decision.reason)
            want = (200, row["grant"], row["reason"])
        else:
            got = (code, body, decision)
            want = (row["http"], {"error": "unavailable" if row["http"] == 503 else "forbidden",
                                  "reason": row["reason"]}, None)  # the app was never called
        if got != want:
            wrong.append((row, got))
    assert wrong == []
    assert {row["http"] for row in VECTORS["requests"]} == {200, 401, 403, 503}


# --- how the request is read (the same by both) ---------------------------------------------------


@pytest.mark.parametrize("middleware", [wsgi, asgi], ids=["wsgi", "asgi"])
def test_how_the_key_and_the_app_id_are_read(vector_clients, middleware):
    fresh, secret = vector_clients["fresh"], KEYS["secret"]
    assert middleware(fresh, {"Authorization": f"bearer   {secret}  "})[2].app_id == "shop"  # any case, trimmed
    # Another scheme is not a key: X-API-Key is used instead, or nothing.
    assert middleware(fresh, {"Authorization": f"Basic {secret}", "X-API-Key": secret})[0] == 200
    assert middleware(fresh, {"Authorization": f"Basic {secret}"})[1]["reason"] == "no key, referrer or origin"
    # Authorization wins over X-API-Key.
    assert middleware(fresh, {"Authorization": f"Bearer {secret}", "X-API-Key": KEYS["revoked"]})[0] == 200
    assert middleware(fresh, {"Authorization": f"Bearer {KEYS['revoked']}", "X-API-Key": secret})[1]["reason"] \
        == "key revoked"
    # The first `referrer` value; an empty one is no app id.
    origin = {"Origin": "https://shop.example"}
    assert middleware(fresh, origin, "referrer=shop&referrer=victim")[2].reason == "referrer"
    assert middleware(fresh, origin, "referrer=")[2].reason == "origin"
    assert middleware(fresh, origin, "referrer=sh%6Fp")[2].reason == "referrer"  # percent-decoded
    assert middleware(fresh, {"Origin": "", "Referer": "https://shop.example/x"})[2].reason == "origin"


def test_a_repeated_header_is_joined_as_a_wsgi_server_joins_it(vector_clients):
    """gunicorn and werkzeug join repeated headers with ","; the ASGI middleware reads them the
    same way, so two Origins are one unusable Origin in both (refused, never the first one)."""
    fresh = vector_clients["fresh"]
    app = RecordingApp()
    scope = http_scope([(b"origin", b"https://shop.example"), (b"origin", b"https://victim-shop.com")])
    sent = asgi_call(AllowlistASGIMiddleware(app, fresh), scope)
    assert sent[0]["status"] == 403 and app.scopes == []
    assert wsgi(fresh, {"Origin": "https://shop.example,https://victim-shop.com"})[0] == 403


# --- ASGI specifics ------------------------------------------------------------------------------


def test_asgi_gives_the_app_a_new_scope_with_the_decision(vector_clients):
    app = RecordingApp()
    scope = http_scope([(b"authorization", f"Bearer {KEYS['secret']}".encode())])
    sent = asgi_call(AllowlistASGIMiddleware(app, vector_clients["fresh"]), scope)
    assert sent[0]["status"] == 200 and [m.get("body") for m in sent[1:]] == [b"ok"]
    (seen,) = app.scopes
    assert seen["beekeeper.decision"].app_id == "shop" and seen["path"] == "/v1/thing"
    assert "beekeeper.decision" not in scope  # the server's scope is left as it was


def test_asgi_refuses_a_websocket_handshake_before_accepting_it(vector_clients):
    app = RecordingApp()
    middleware = AllowlistASGIMiddleware(app, vector_clients["fresh"])
    scope = {**http_scope([(b"origin", b"https://evil.example")]), "type": "websocket", "scheme": "wss"}
    sent = asgi_call(middleware, scope, [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "unknown origin"}] and app.scopes == []
    allowed = {**scope, "headers": [(b"origin", b"https://shop.example")]}
    sent = asgi_call(middleware, allowed, [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.accept"}] and app.scopes[0]["beekeeper.decision"].app_id == "shop"


def test_asgi_passes_lifespan_through_untouched(vector_clients):
    app = RecordingApp()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    asgi_call(AllowlistASGIMiddleware(app, vector_clients["none"]), scope)  # no allowlist: not a request
    assert app.scopes == [scope] and app.scopes[0] is scope


def test_asgi_fails_closed_without_an_allowlist(vector_clients):
    code, body, decision = asgi(vector_clients["none"], {"Authorization": f"Bearer {KEYS['secret']}"})
    assert (code, body, decision) == (503, {"error": "unavailable", "reason": "allowlist not loaded"}, None)
