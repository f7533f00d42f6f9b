"""End-to-end propagation: from a revoke being processed (rows marked, version bumped) to a
polling gateway client refusing the key — with an injectable clock, and live over HTTP."""

from __future__ import annotations

import threading
import time

import pytest
import responses
from werkzeug.serving import make_server

from beekeeper_gateway import AllowlistClient
from tests.allowlist_support import ALLOWLIST_URL, AppBridge, add_gateway, make_grant, revoke_grant, revoke_key


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.mark.parametrize("poll_interval", [5, 30])
@pytest.mark.parametrize("revoke", ["key", "grant"])
def test_revoke_reaches_a_polling_client_within_one_poll_interval(app, rsps, session, frozen_clock, poll_interval,
                                                                   revoke):
    AppBridge(app, rsps)
    credential = add_gateway(session)
    alpha = make_grant(session, "alpha")
    client = AllowlistClient(ALLOWLIST_URL, credential, poll_interval=poll_interval,
                             clock=lambda: frozen_clock.now().timestamp())
    client.poll()
    next_poll = frozen_clock.now().timestamp() + poll_interval

    frozen_clock.advance(seconds=poll_interval * 0.4)  # the revoke lands between two polls
    if revoke == "key":
        revoke_key(session, alpha.rows["secret"])
    else:
        revoke_grant(session, alpha.grant)
    revoked_at = frozen_clock.now().timestamp()

    # The gateway's scheduler: a tick every 100 ms of (simulated) time, a poll when one is due.
    while client.check(key=alpha.keys["secret"]).allowed:
        frozen_clock.advance(seconds=0.1)
        if frozen_clock.now().timestamp() >= next_poll:
            client.poll()
            next_poll += poll_interval
        assert frozen_clock.now().timestamp() - revoked_at <= poll_interval, "not refused within one interval"
    refused_after = frozen_clock.now().timestamp() - revoked_at
    assert refused_after == pytest.approx(poll_interval * 0.6, abs=0.11)
    assert client.check(key=alpha.keys["secret"]).reason == ("key revoked" if revoke == "key" else "unknown key")


def test_live_server_background_polling_refuses_a_revoked_key_within_the_interval(app, session):
    credential = add_gateway(session)
    alpha = make_grant(session, "alpha", domains=["alpha.example.com"])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/v1/allowlist"
    client = AllowlistClient(url, credential, poll_interval=0.05)
    try:
        client.poll()  # first load over real HTTP (gzip-encoded JWS, decoded by requests)
        assert client.check(key=alpha.keys["secret"]).allowed
        client.start()
        revoke_key(session, alpha.rows["secret"])
        # Behaviour, not speed: the background poller alone brings the revoke (how fast is measured
        # by benchmarks/allowlist.py, "propagation"). The deadline only stops a hang.
        deadline = time.monotonic() + 60
        while client.check(key=alpha.keys["secret"]).allowed:
            assert time.monotonic() < deadline, "the revoke never reached the client"
            time.sleep(0.01)
        assert client.check(key=alpha.keys["secret"]).reason == "key revoked"
        assert client.check(key=alpha.keys["secret"]).allowed is False
    finally:
        client.stop()
        server.shutdown()
        thread.join(timeout=5)
