from __future__ import annotations

import pytest
import responses
from gw_support import URL, VECTORS, Clock, VectorSession

from beekeeper_gateway import AllowlistClient


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture(scope="module")
def vector_clients():
    """Clients holding no document, the vectors' fresh one, and the fresh one past its expiry."""
    made = {}
    for state in ("none", "fresh", "expired"):
        session, clock = VectorSession(), Clock(VECTORS["now_seconds"])
        client = AllowlistClient(URL, jwks=VECTORS["jwks"], session=session, clock=clock)
        if state != "none":
            session.serve(VECTORS["fresh_document"])
            assert client.poll() == "updated"
        if state == "expired":
            clock.now = VECTORS["expired_clock"]
        made[state] = client
    return made
