"""check_origin() and the expiry guard: check_origin(o) answers exactly what check(origin=o) answers
— with no poller (every check reads the clock), and with the poller and its expiry guard running
(the fast path), across deltas, a revocation, a full list with new indexes and the list's expiry;
its remembered answers to exact Origins are forgotten by every delta that changes their grant;
the middlewares use it for a request that carries only an Origin. Also a key's first sight: a
non-ASCII key is still "malformed"."""

from __future__ import annotations

import math
import threading
import time

import pytest
from gw_support import URL, VECTORS, Clock, Signer, VectorSession, api_key, document, format2, grant
from test_middleware import asgi, wsgi

from beekeeper_gateway import (
    DECISION_TABLE,
    LIST_EXPIRED,
    MALFORMED_KEY,
    NOT_LOADED,
    SIGNATURE_HEADER,
    UNKNOWN_ORIGIN,
    UPDATED,
    AllowlistClient,
    checksum_ok,
    keyformat,
)
from beekeeper_gateway import client as client_module

SHOP, SHOP_SUB, VICTIM = "https://shop.example", "https://app.shop.example", "https://victim-shop.com"
MOVED = "https://victim-moved.example"
SECRET, PUBLISHABLE = api_key("sk", "fast shop"), api_key("pk", "fast shop")
# Every Origin and Referer of the decision table, and values around the exact ones.
ORIGINS = sorted({row.origin for row in DECISION_TABLE} | {row.referer for row in DECISION_TABLE} | {
    SHOP, SHOP_SUB, VICTIM, MOVED, "https://SHOP.example", "https://shop.example:443", "https://shop.example/",
    "http://shop.example", "https://shop.example.", "https://a.b.shop.example", "https://shop.example.evil.io",
    "https://evil-shop.example", "null", "", " https://shop.example", "https://victim-shop.com:8443",
    "ftp://shop.example", "https://[::1]", "https://xn--bcher-kva.example", "https://bücher.example"})


def disagreements(client: AllowlistClient) -> list:
    return [(o, client.check_origin(o), client.check(origin=o)) for o in ORIGINS
            if client.check_origin(o) != client.check(origin=o)]


class Server:
    """A stand-in for requests.Session: the full list and deltas (by `since`) signed here, in format
    1 (compact JWS) or 2 (plain bytes, detached signature)."""

    class _Answer:
        def __init__(self, body: bytes, headers: dict):
            self.status_code, self.content, self.headers = 200, body, headers

    def __init__(self, signer: Signer, fmt: int):
        self.signer, self.fmt, self.answers = signer, fmt, {}

    def serve(self, doc: dict, since: int | None = None) -> None:
        if self.fmt == 2:
            body = format2(doc)
            self.answers[since] = self._Answer(body, {SIGNATURE_HEADER: self.signer.detached(body)})
        else:
            self.answers[since] = self._Answer(self.signer.compact(doc), {})

    def get(self, url, params=None, headers=None, timeout=None):
        assert url == URL, url  # the JWKS is pinned (jwks=): never fetched
        return self.answers[int(params["since"]) if params else None]


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class CheckCalls:
    """Counts the client's calls of check() (an instance attribute over the method)."""

    def __init__(self, client: AllowlistClient):
        self.client, self.calls, self.method = client, 0, client.check
        client.check = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.method(*args, **kwargs)

    def close(self) -> None:
        del self.client.check


def answers_alone(client: AllowlistClient, origin: str) -> bool:
    """check_origin(origin) answered without going through check()."""
    spy = CheckCalls(client)
    try:
        client.check_origin(origin)
    finally:
        spy.close()
    return spy.calls == 0


def fresh(version: int, grants: list, *, ttl: float = 3600, **kwargs) -> dict:
    return document(version, grants, generated=time.time() - 60, ttl=ttl, **kwargs)


SHOP_GRANT = grant("shop", 1, ["shop.example", "*.shop.example"], secret=SECRET, publishable=PUBLISHABLE)
VICTIM_GRANT = grant("victim", 1, ["victim-shop.com"])


# --- without a poller: every check() reads the clock --------------------------------------------------


def test_check_origin_agrees_with_check_on_the_vectors_documents(vector_clients):
    for state in ("none", "fresh", "expired"):
        assert disagreements(vector_clients[state]) == [], state
    assert vector_clients["none"].check_origin(SHOP) is NOT_LOADED
    assert vector_clients["expired"].check_origin(SHOP) is LIST_EXPIRED
    rows = [row for row in VECTORS["requests"] if row["origin"] and not row["key"] and not row["app_id"]]
    assert rows
    for row in rows:
        decision = vector_clients[row["document"]].check_origin(row["origin"])
        assert (decision.reason, decision.app_id if decision.allowed else None) == (row["reason"], row["grant"])


@pytest.mark.parametrize("sequence", VECTORS["sequences"], ids=lambda s: s["name"])
def test_check_origin_agrees_with_check_through_every_document_sequence(sequence):
    session, clock = VectorSession(), Clock(VECTORS["now_seconds"])
    client = AllowlistClient(URL, jwks=sequence["jwks"], trusted_keys=sequence.get("trusted_keys"), session=session,
                             clock=clock)
    for step in sequence["steps"]:
        clock.now = step["clock"]
        session.serve(step["document"])
        try:
            client.poll()
        except client_module.AllowlistError:
            pass
        assert disagreements(client) == [], step


def test_without_the_guard_check_origin_goes_through_check():
    """Polled by hand, or started with an injected clock: no expiry guard, so no fast path."""
    server = Server(Signer(), 2)
    server.serve(fresh(1, [SHOP_GRANT, VICTIM_GRANT]))
    by_hand = AllowlistClient(URL, jwks={"keys": [server.signer.jwk]}, session=server)
    assert by_hand.poll() == UPDATED and by_hand.check(origin=SHOP).allowed
    assert not answers_alone(by_hand, SHOP) and disagreements(by_hand) == []
    clock = Clock(time.time())
    with AllowlistClient(URL, jwks={"keys": [server.signer.jwk]}, session=server, clock=clock,
                         poll_interval=3600) as injected:
        wait_for(lambda: injected.version == 1)
        assert injected.check(origin=SHOP).allowed and not answers_alone(injected, SHOP)
        clock.now += 7200  # past the expiry, on the only clock this client knows
        assert injected.check_origin(SHOP) is LIST_EXPIRED and injected.check(key=SECRET) is LIST_EXPIRED
    assert not any(t.name == "allowlist-expiry-guard" and t.is_alive() for t in threading.enumerate())


# --- with the poller and its expiry guard ----------------------------------------------------------


@pytest.mark.parametrize("fmt", [1, 2])
def test_check_origin_agrees_with_check_while_the_poller_runs(fmt):
    server = Server(Signer(), fmt)
    server.serve(fresh(1, [SHOP_GRANT, VICTIM_GRANT]))
    client = AllowlistClient(URL, jwks={"keys": [server.signer.jwk]}, session=server, poll_interval=3600)
    assert client.check_origin(SHOP) is NOT_LOADED
    with client:  # start(): the poller loads the list, the guard vouches for it
        wait_for(lambda: client.version == 1)
        assert disagreements(client) == []
        wait_for(lambda: answers_alone(client, SHOP))  # the fast path, once the guard has vouched
        assert client.check_origin(SHOP).app_id == "shop" and client.check_origin(SHOP_SUB).app_id == "shop"

        # A delta, polled by hand while the poller runs: victim's domain moves, shop keeps its own.
        moved = grant("victim", 2, ["victim-moved.example"])
        server.serve(fresh(2, [moved], since=1), since=1)
        assert client.poll() == UPDATED and client.version == 2
        assert client.check_origin(VICTIM) is UNKNOWN_ORIGIN and client.check_origin(MOVED).app_id == "victim"
        assert disagreements(client) == []

        # A revocation: shop's grant is removed.
        server.serve(fresh(3, [], since=2, removed=["shop"]), since=2)
        assert client.poll() == UPDATED and client.version == 3
        assert client.check_origin(SHOP) is UNKNOWN_ORIGIN and client.check_origin(SHOP_SUB) is UNKNOWN_ORIGIN
        assert disagreements(client) == []

        # A full list with other tiers: new indexes, to which the guard's word moves.
        other_tier = fresh(4, [grant("shop", 4, ["shop.example"], tier="gold"), moved])
        other_tier["tiers"] = {"gold": {"rank": 2, "limits": {"requests_per_minute": 600}}}
        server.answers.clear()
        server.serve(other_tier)
        server.answers[3] = server.answers[None]  # the bot's answer to ?since=3: the full list
        assert client.poll() == UPDATED and client.version == 4
        assert client.check_origin(SHOP).tier == "gold" and client.check_origin(SHOP_SUB) is UNKNOWN_ORIGIN
        assert disagreements(client) == []
        wait_for(lambda: answers_alone(client, SHOP))
    # stop(): the guard withdrew its word, so check_origin() goes through check() again.
    assert not answers_alone(client, SHOP) and disagreements(client) == []


def remembered(client: AllowlistClient, origin: str) -> bool:
    """check_origin(origin) answers alone (from its remembered answers), after one call to fill them."""
    client.check_origin(origin)
    return answers_alone(client, origin)


@pytest.mark.parametrize("fmt", [1, 2])
def test_a_remembered_origin_is_forgotten_when_a_delta_moves_replaces_or_revokes_its_grant(fmt):
    """check_origin() remembers an exact Origin's answer on first use and answers it alone after;
    every delta that changes what the exact-Origin index holds for it (in place) is answered anew."""
    server = Server(Signer(), fmt)
    server.serve(fresh(1, [SHOP_GRANT, VICTIM_GRANT]))
    with AllowlistClient(URL, jwks={"keys": [server.signer.jwk]}, session=server, poll_interval=3600) as client:
        wait_for(lambda: client.version == 1)
        assert client._state.origin_answers == {}  # nothing remembered at load: no memory for it
        header = "".join(["https://", "shop.example"])  # a request's own string: remembered under the index's
        wait_for(lambda: remembered(client, VICTIM) and remembered(client, header))
        assert not any(kept is header for kept in client._state.origin_answers) and answers_alone(client, SHOP)
        assert client.check_origin(VICTIM).app_id == "victim" and client.check_origin(SHOP).app_id == "shop"
        for origin in (SHOP_SUB, "https://SHOP.example", "https://nobody.example"):  # wildcard, normalised, unknown
            assert client.check_origin(origin) is client.check(origin=origin)
        assert set(client._state.origin_answers) == {SHOP, VICTIM}

        # Another grant takes victim's exact Origin (victim still lists it): the index's last word counts.
        thief = grant("thief", 2, ["victim-shop.com"])
        server.serve(fresh(2, [thief], since=1), since=1)
        assert client.poll() == UPDATED
        assert client.check_origin(VICTIM).app_id == "thief" and disagreements(client) == []
        assert remembered(client, VICTIM) and client.check_origin(VICTIM).app_id == "thief"

        # The grant is replaced (its domain moves elsewhere): not its answer any more, whatever the index says.
        assert remembered(client, VICTIM)
        server.serve(fresh(3, [grant("thief", 3, ["victim-moved.example"])], since=2), since=2)
        assert client.poll() == UPDATED
        assert client.check_origin(VICTIM).app_id != "thief" and disagreements(client) == []
        assert client.check_origin(MOVED).app_id == "thief"

        # Replaced with the same domain (a new key): the new grant's Decision, not the old one's.
        before = client.check_origin(SHOP)
        assert remembered(client, SHOP)
        renewed = grant("shop", 4, ["shop.example", "*.shop.example"], secret=api_key("sk", "renewed"))
        server.serve(fresh(4, [renewed], since=3), since=3)
        assert client.poll() == UPDATED
        assert client.check_origin(SHOP) is client.check(origin=SHOP) and client.check_origin(SHOP) is not before

        # A revocation.
        assert remembered(client, SHOP)
        server.serve(fresh(5, [], since=4, removed=["shop"]), since=4)
        assert client.poll() == UPDATED
        assert client.check_origin(SHOP) is UNKNOWN_ORIGIN and disagreements(client) == []
        assert SHOP not in client._state.origin_answers


def test_an_answer_read_before_a_delta_is_not_remembered_after_it():
    """The race of a check_origin() whose check() read a grant that a delta then removes: its
    answer, offered once the delta is in force, is refused (the grant is no longer in the index)."""
    server = Server(Signer(), 2)
    server.serve(fresh(1, [SHOP_GRANT, VICTIM_GRANT]))
    with AllowlistClient(URL, jwks={"keys": [server.signer.jwk]}, session=server, poll_interval=3600) as client:
        wait_for(lambda: client.version == 1 and client._armed is client._state)
        stale, victim = client.check(origin=VICTIM), client._state.by_origin[VICTIM]
        assert stale.app_id == "victim"
        server.serve(fresh(2, [], since=1, removed=["victim"]), since=1)
        assert client.poll() == UPDATED
        wait_for(lambda: client._armed is client._state)
        client._armed.remember_origin(VICTIM, victim, stale)
        assert VICTIM not in client._state.origin_answers and client.check_origin(VICTIM) is UNKNOWN_ORIGIN


def test_once_the_list_expires_nothing_is_allowed_while_the_poller_runs(monkeypatch):
    """The guard withdraws FAST_PATH_MARGIN before the expiry: a check started at or after the
    list's expires_at is refused, by check_origin() and by a key's check() alike, though neither
    reads the clock while the guard vouches. (Real time: the list lives about four seconds.)"""
    monkeypatch.setattr(client_module, "GUARD_TICK", 0.05)
    expires = math.floor(time.time()) + 4  # documents carry whole seconds
    server = Server(Signer(), 2)
    server.serve(document(1, [SHOP_GRANT, VICTIM_GRANT], generated=expires - 3600, ttl=3600))
    client = AllowlistClient(URL, jwks={"keys": [server.signer.jwk]}, session=server, poll_interval=3600)
    with client:
        wait_for(lambda: client.version == 1)
        assert client.check(origin=SHOP).allowed and client.check(key=SECRET).allowed
        # Vouched for until FAST_PATH_MARGIN before the expiry: waited for until then, however slow the machine.
        vouched_until = expires - client_module.FAST_PATH_MARGIN
        wait_for(lambda: answers_alone(client, SHOP), seconds=max(0.1, vouched_until - time.time()))
        allowed_late, seen = [], set()
        while time.time() < expires + 0.3:
            started = time.time()
            answers = (client.check_origin(SHOP), client.check(key=SECRET), client.check(None, SHOP))
            seen.add(answers[0].reason)
            if started >= expires and any(a is not LIST_EXPIRED for a in answers):
                allowed_late.append((started - expires, answers))
        assert allowed_late == []
        assert seen == {"origin", LIST_EXPIRED.reason}
        assert disagreements(client) == []


# --- the middlewares -------------------------------------------------------------------------------


@pytest.mark.parametrize("middleware", [wsgi, asgi], ids=["wsgi", "asgi"])
def test_the_middlewares_use_check_origin_for_a_request_with_only_an_origin(vector_clients, middleware):
    client = vector_clients["fresh"]
    asked = []
    client.check_origin = lambda origin: asked.append(origin) or AllowlistClient.check_origin(client, origin)
    try:
        assert middleware(client, {"Origin": SHOP})[2].reason == "origin"
        assert middleware(client, {"Origin": SHOP, "Referer": VICTIM + "/"})[2].reason == "origin"
        assert middleware(client, {"Origin": SHOP}, "page=2")[2].reason == "origin"
        assert asked == [SHOP] * 3
        # A key, an app id (also percent-escaped), or no Origin: check() decides.
        assert middleware(client, {"Origin": SHOP, "X-API-Key": VECTORS["keys"]["secret"]})[2].reason == "secret key"
        assert middleware(client, {"Origin": SHOP}, "referrer=shop")[2].reason == "referrer"
        assert middleware(client, {"Origin": SHOP}, "%72eferrer=shop")[2].reason == "referrer"
        assert middleware(client, {"Referer": SHOP + "/"})[2].reason == "origin"
        assert asked == [SHOP] * 3
    finally:
        del client.check_origin


# --- a key's first sight -----------------------------------------------------------------------------


def test_a_non_ascii_key_is_malformed_even_with_a_checksum_right_over_its_utf8_bytes(vector_clients):
    client = vector_clients["fresh"]
    body = "bk_sk_é" + "a" * (keyformat.RANDOM_LENGTH - 1)
    key = body + keyformat.checksum(body)
    assert len(key) == len(VECTORS["keys"]["secret"]) and checksum_ok(key.encode())
    for _ in range(2):  # first sight, then remembered
        assert client.check(key=key) is MALFORMED_KEY
    surrogate = "bk_sk_\ud800" + "a" * (keyformat.RANDOM_LENGTH - 1) + "abcdef"
    assert client.check(key=surrogate) is MALFORMED_KEY
