"""The allowlist in front of any ASGI 3 app (Starlette, FastAPI, Quart, Litestar …): the same
decisions as the WSGI `AllowlistMiddleware` of beekeeper_gateway.client, with no framework
dependency.

    client = AllowlistClient(url, gateway_key)
    app = AllowlistASGIMiddleware(app, client)

It reads what the WSGI middleware reads: the key from `Authorization: Bearer …` (else
`X-API-Key`), the `Origin` header (else the `Referer` header; `check()` applies the rules) and an
app id from the `referrer` query parameter (a name only); a request with only an Origin is
decided by `check_origin()`, as there. A refused HTTP request gets the same JSON
answer and status (401 / 403 / 503, `HTTP_STATUS`); an allowed one reaches the app with the
Decision in `scope["beekeeper.decision"]` (Starlette: `request.scope["beekeeper.decision"]`).
A refused WebSocket handshake is closed before it is accepted (code 1008, the reason as the close
reason), which servers answer with HTTP 403. Other scopes (lifespan) pass through untouched.

`check()` answers from memory (no I/O), so it runs on the event loop. Polling does I/O: keep it
off the loop with `client.start()` (a daemon thread), or `await asyncio.to_thread(client.poll)`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from beekeeper_gateway.client import HTTP_STATUS, AllowlistClient, Decision, decide_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

POLICY_VIOLATION = 1008  # the WebSocket close code for a refused handshake (RFC 6455 §7.4.1)


def _headers(scope: Scope) -> dict[bytes, str]:
    """The request headers by lowercase name, decoded as latin-1 as a WSGI server decodes them;
    a repeated header is joined with "," as WSGI servers (gunicorn, werkzeug) join it, so both
    middlewares see the same value (two Origins are then no valid Origin: refused)."""
    found: dict[bytes, str] = {}
    for name, value in scope.get("headers") or ():
        name = name.lower()
        if name in (b"authorization", b"x-api-key", b"origin", b"referer"):
            text = value.decode("latin-1")
            found[name] = f"{found[name]},{text}" if name in found else text
    return found


def decide(client: AllowlistClient, scope: Scope) -> Decision:
    """check() for an ASGI request scope, with the inputs read as AllowlistMiddleware reads them
    (check_origin() for a request with only an Origin header, as it does too)."""
    headers = _headers(scope)
    return decide_request(client, headers.get(b"authorization", ""), headers.get(b"x-api-key"),
                          headers.get(b"origin"), headers.get(b"referer"),
                          scope.get("query_string", b"").decode("latin-1"))


def refusal(decision: Decision) -> tuple[int, bytes]:
    """The HTTP status and JSON body AllowlistMiddleware answers for a refused decision."""
    status = HTTP_STATUS[decision.reason]
    body = json.dumps({"error": "forbidden" if status[0] == "4" else "unavailable",
                       "reason": decision.reason}).encode()
    return int(status[:3]), body


class AllowlistASGIMiddleware:
    """Enforces the allowlist in front of any ASGI 3 app (see the module docstring)."""

    def __init__(self, app: ASGIApp, client: AllowlistClient):
        self.app = app
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):  # lifespan and any other non-request scope
            await self.app(scope, receive, send)
            return
        decision = decide(self.client, scope)
        if decision.allowed:
            # A new scope: the server's dict is not changed under other middleware that holds it.
            await self.app({**scope, "beekeeper.decision": decision}, receive, send)
            return
        if kind == "websocket":
            message = await receive()  # the handshake (websocket.connect), answered by a close
            if message.get("type") == "websocket.connect":
                await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": decision.reason})
            return
        status, body = refusal(decision)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
