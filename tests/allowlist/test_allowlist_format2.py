"""Issue 18: allowlist format 2 (rows under a column header, base64url digests, a detached RFC 7797
signature), zstd/gzip with an ETag per representation, the gateway client reading both formats
and applying deltas in place, its two-generation memos, and the poll fast path below Flask."""

from __future__ import annotations

import base64
import gzip
import json

import jwt
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import select
from werkzeug.test import EnvironBuilder

from beekeeper_gateway import keyformat
from beekeeper_gateway.client import (
    UPDATED,
    DocumentError,
    SignatureError,
    _TwoGenerations,
)
from bot.allowlist import gateways
from bot.allowlist import serving as allowlist
from tests.allowlist.test_openapi import schema_validator
from tests.allowlist_support import (
    bearer,
    make_grant,
    revoke_grant,
    revoke_key,
)

V2 = "application/vnd.beekeeper.allowlist+json;format=2"


def get(client, credential, path="/v1/allowlist", **headers):
    return client.get(path, headers={**bearer(credential), **headers})


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_detached(client, body: bytes, signature: str) -> dict:
    """Verify the detached signature with the published key, by RFC 7797 directly (no client code)."""
    header_b64, middle, signature_b64 = signature.split(".")
    assert middle == ""
    header = json.loads(b64url_decode(header_b64))
    assert header["b64"] is False and header["crit"] == ["b64"] and header["typ"] == "beekeeper-allowlist+json"
    jwk = next(k for k in client.get("/.well-known/jwks.json").get_json()["keys"] if k["kid"] == header["kid"])
    Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"])).verify(
        b64url_decode(signature_b64), header_b64.encode() + b"." + body)  # raises if it does not verify
    return header


# --- the server: format 2 -------------------------------------------------------------------------


def test_format_2_lists_rows_under_columns_with_base64url_digests(client, session, credential):
    alpha = make_grant(session, "alpha", tier="flower", domains=["alpha.example.com", "*.alpha.example.net"])
    revoke_key(session, alpha.rows["publishable"])
    for response in (get(client, credential, "/v1/allowlist?format=2"), get(client, credential, Accept=V2)):
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/vnd.beekeeper.allowlist+json; format=2"
        doc = json.loads(response.get_data())
        assert doc["format"] == 2 and doc["version"] == 2
        assert doc["columns"]["grants"] == ["app_id", "tier", "version", "domains", "keys"]
        [row] = doc["grants"]
        assert row[:4] == ["alpha", "flower", 2, ["*.alpha.example.net", "alpha.example.com"]]
        by_kind = {key[1]: key for key in row[4]}
        assert b64url_decode(by_kind["secret"][0]) == bytes.fromhex(keyformat.sha256_hex(alpha.keys["secret"]))
        assert by_kind["secret"][3] is None and by_kind["publishable"][3] is not None  # revoked_at
        verify_detached(client, response.get_data(), response.headers["X-Allowlist-Signature"])


def test_format_1_stays_the_default_and_the_jws_path_stays_a_compact_jws(client, session, credential):
    make_grant(session, "alpha")
    plain = get(client, credential)
    assert plain.mimetype == "application/json" and "X-Allowlist-Signature" not in plain.headers
    assert plain.get_json()["grants"][0]["keys"][0]["sha256"]  # hex digests, objects
    token = get(client, credential, "/v1/allowlist.jws", Accept=V2).get_data()
    assert token.count(b".") == 2 and jwt.get_unverified_header(token)["typ"] == "beekeeper-allowlist+json"
    assert get(client, credential, Accept="application/jose").mimetype == "application/jose"


def test_format_2_delta_has_rows_and_tombstone_rows(client, session, credential, spec):
    alpha = make_grant(session, "alpha")
    gone = make_grant(session, "gone")
    revoke_grant(session, gone.grant)
    revoke_key(session, alpha.rows["secret"])
    response = get(client, credential, "/v1/allowlist?since=2&format=2")
    doc = json.loads(response.get_data())
    assert doc["since"] == 2 and [row[0] for row in doc["grants"]] == ["alpha"]
    assert doc["removed"] == [["gone", "revoked", 3]]
    verify_detached(client, response.get_data(), response.headers["X-Allowlist-Signature"])
    schema_validator(spec, "AllowlistV2").validate(doc)
    full = json.loads(get(client, credential, "/v1/allowlist?format=2").get_data())
    schema_validator(spec, "AllowlistV2").validate(full)


@pytest.fixture
def spec(client):
    return client.get("/openapi.json").get_json()


def test_a_bad_format_is_refused(client, session, credential):
    response = get(client, credential, "/v1/allowlist?format=3")
    assert response.status_code == 400 and response.get_json()["error"] == "bad_format"


def test_each_representation_has_its_own_etag_and_304(client, session, credential):
    make_grant(session, "alpha", domains=["alpha.example.com"])
    asks = {
        "json": {}, "jws": {"Accept": "application/jose"}, "v2": {"Accept": V2},
        "v2 gzip": {"Accept": V2, "Accept-Encoding": "gzip"}, "v2 zstd": {"Accept": V2, "Accept-Encoding": "zstd"},
        "v2 both": {"Accept": V2, "Accept-Encoding": "gzip, zstd"}, "json zstd": {"Accept-Encoding": "zstd"},
    }
    answers = {name: get(client, credential, **headers) for name, headers in asks.items()}
    etags = {name: response.headers["ETag"] for name, response in answers.items()}
    assert len(set(etags.values())) == len(etags) - 1  # "v2 both" is "v2 zstd"
    assert etags["v2 both"] == etags["v2 zstd"] and answers["v2 both"].headers["Content-Encoding"] == "zstd"
    plain = answers["v2"].get_data()
    assert gzip.decompress(answers["v2 gzip"].get_data()) == plain
    assert zstandard.ZstdDecompressor().decompress(answers["v2 zstd"].get_data()) == plain
    assert zstandard.ZstdDecompressor().decompress(answers["json zstd"].get_data()) == answers["json"].get_data()
    for name, headers in asks.items():
        again = get(client, credential, **headers, **{"If-None-Match": etags[name]})
        assert again.status_code == 304, name
        assert again.headers["ETag"] == etags[name]
    # another representation's ETag is not this one's
    assert get(client, credential, Accept=V2, **{"If-None-Match": etags["json"]}).status_code == 200


# --- the poll fast path (a WSGI layer below Flask) ------------------------------------------------


def _environ(credential: str | None, query: str = "", **headers) -> dict:
    headers = {**(bearer(credential) if credential else {}), **headers}
    return EnvironBuilder(path="/v1/allowlist", query_string=query, headers=headers).get_environ()


def _call(layer, environ) -> tuple[str, dict, bytes]:
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(layer(environ, start_response))
    return seen["status"], seen["headers"], body


def flask_must_not_run(environ, start_response):
    raise AssertionError(f"reached Flask: {environ['PATH_INFO']}")


def test_fast_path_answers_cached_polls_without_flask(app, client, session, credential):
    make_grant(session, "alpha")
    layer = allowlist.AllowlistFastPath(flask_must_not_run, app)
    cold = allowlist.AllowlistFastPath(lambda environ, start_response: [b"flask"], app)
    assert cold(_environ(credential, "format=2"), None) == [b"flask"]  # nothing built yet: Flask builds it
    built = get(client, credential, Accept=V2)  # the Flask view builds and caches it
    status, headers, body = _call(layer, _environ(credential, "format=2"))
    assert status == "200 OK" and body == built.get_data()
    for name in ("ETag", "Content-Type", "X-Allowlist-Signature", "X-Allowlist-Version", "Cache-Control", "Vary"):
        assert headers[name] == built.headers[name], name
    status, headers, body = _call(layer, _environ(credential, "format=2", **{"If-None-Match": built.headers["ETag"]}))
    assert status == "304 Not Modified" and body == b"" and headers["ETag"] == built.headers["ETag"]
    status, _, body = _call(layer, _environ(None))
    assert status == "401 Unauthorized" and json.loads(body)["error"] == "unauthorized"
    status, _, body = _call(layer, _environ(credential, "since=x"))
    assert status == "400 Bad Request"


def test_fast_path_follows_a_revocation_at_once_and_counts_pulls(app, client, session, credential, db):
    from bot.core.models import Gateway

    make_grant(session, "alpha")
    etag = get(client, credential).headers["ETag"]
    layer = allowlist.AllowlistFastPath(flask_must_not_run, app)
    state = app.extensions["beekeeper_allowlist"]
    for _ in range(3):
        assert _call(layer, _environ(credential, **{"If-None-Match": etag}))[0] == "304 Not Modified"
    state.pulls.flush()
    session.expire_all()
    row = session.exec(select(Gateway).where(Gateway.name == "edge-1")).one()
    assert row.pull_count == 4 and row.last_version == 1
    gateways.revoke(session, "edge-1", "test")
    session.commit()
    assert _call(layer, _environ(credential, **{"If-None-Match": etag}))[0] == "401 Unauthorized"


def test_the_credential_lookup_retries_once_on_a_broken_connection(db, session, credential):
    lookup = allowlist.CredentialLookup(db)
    digest = keyformat.sha256_hex(credential)
    assert lookup(digest)[1] == "edge-1"
    assert lookup("0" * 64) is None
    lookup.sql = lookup.sql.replace("FROM gateway", "FROM no_such_table")
    with pytest.raises(db.dialect.loaded_dbapi.Error):
        lookup(digest)
    assert lookup.statements == 4  # two, then one attempt and its one retry


# --- the client -----------------------------------------------------------------------------------


def format_1_only(bridge, credential):
    """An older bot: it knows only format 1 (a compact JWS), whatever the client asks."""
    def answer(request):
        if "/v1/allowlist" not in request.url:
            return None
        query = request.url.partition("?")[2]
        response = bridge.client.get("/v1/allowlist.jws", query_string=query,
                                     headers={k: v for k, v in request.headers.items() if k != "Accept"})
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return response.status_code, headers, response.get_data()
    return answer


def test_the_client_reads_format_2_and_format_1_and_their_deltas(session, make_client, bridge, credential):
    alpha = make_grant(session, "alpha", domains=["alpha.example.com"])
    modern, old = make_client(), make_client()
    assert modern.poll() == UPDATED
    sent = next(r for r in bridge.requests if "/v1/allowlist" in r.url)
    assert sent.headers["Accept"].startswith(V2)
    bridge.override = format_1_only(bridge, credential)
    assert old.poll() == UPDATED
    bridge.override = None
    beta = make_grant(session, "beta", domains=["beta.example.com"])
    revoke_key(session, alpha.rows["secret"])
    assert modern.poll() == UPDATED
    bridge.override = format_1_only(bridge, credential)
    assert old.poll() == UPDATED
    assert "since=1" in bridge.requests[-1].url
    for client in (modern, old):
        assert client.version == 3 and client.grant_count == 2
        assert client.check(key=alpha.keys["secret"]).reason == "key revoked"
        assert client.check(key=beta.keys["publishable"], origin="https://beta.example.com").allowed
        assert client.check(origin="https://beta.example.com").app_id == "beta"


def test_the_client_decodes_zstd(session, make_client, bridge, credential):
    alpha = make_grant(session, "alpha")

    def with_zstd(request):
        if "/v1/allowlist" not in request.url:
            return None
        headers = {**{k: v for k, v in request.headers.items() if k.lower() != "accept-encoding"},
                   "Accept-Encoding": "zstd"}
        response = bridge.client.get("/v1/allowlist", query_string=request.url.partition("?")[2], headers=headers)
        assert response.headers["Content-Encoding"] == "zstd"
        return response.status_code, dict(response.headers), response.get_data()

    bridge.override = with_zstd
    client = make_client()
    assert client.poll() == UPDATED and client.check(key=alpha.keys["secret"]).allowed
    assert "zstd" in bridge.requests[0].headers["Accept-Encoding"]


def _tampering(bridge, credential, change):
    def answer(request):
        if "/v1/allowlist" not in request.url:
            return None
        response = bridge.client.get("/v1/allowlist", headers={**bearer(credential), "Accept": V2})
        body, signature = change(response.get_data(), response.headers["X-Allowlist-Signature"])
        return 200, {"X-Allowlist-Signature": signature, "Content-Type": response.headers["Content-Type"]}, body
    return answer


def _header(signature: str, **changes) -> str:
    header_b64, _, rest = signature.partition(".")
    header = {**json.loads(b64url_decode(header_b64)), **changes}
    header = {k: v for k, v in header.items() if v is not None}
    return jwt.utils.base64url_encode(json.dumps(header).encode()).decode() + "." + rest


@pytest.mark.parametrize("change", [
    pytest.param(lambda body, sig: (body.replace(b'"alpha"', b'"alpha" ', 1), sig), id="body changed"),
    pytest.param(lambda body, sig: (body, _header(sig, b64=None, crit=None)), id="b64 dropped"),
    pytest.param(lambda body, sig: (body, _header(sig, crit=["b64", "exp"])), id="unknown crit"),
    pytest.param(lambda body, sig: (body, _header(sig, typ="JWT")), id="other typ"),
    pytest.param(lambda body, sig: (body, sig.replace("..", ".e30.")), id="attached payload"),
])
def test_a_tampered_format_2_document_is_refused(session, make_client, bridge, credential, change):
    alpha = make_grant(session, "alpha")
    client = make_client()
    client.poll()
    revoke_key(session, alpha.rows["secret"])
    bridge.override = _tampering(bridge, credential, change)
    with pytest.raises(SignatureError):
        client.poll()
    assert client.version == 1 and client.check(key=alpha.keys["secret"]).allowed


def test_a_compact_jws_with_crit_is_refused(session, make_client, bridge, credential):
    make_grant(session, "alpha")
    client = make_client()

    def crit(request):
        if "/v1/allowlist" not in request.url:
            return None
        token = bridge.client.get("/v1/allowlist.jws", headers=bearer(credential)).get_data().decode()
        return 200, {}, _header(token, crit=["exp"])

    bridge.override = crit
    with pytest.raises(SignatureError):
        client.poll()


def test_deltas_are_applied_in_place_and_a_malformed_one_changes_nothing(session, make_client, bridge, credential):
    grants = [make_grant(session, f"app{i}", domains=[f"app{i}.example.com"]) for i in range(5)]
    client = make_client()
    client.poll()
    held = client._state
    indexes = (held.grants, held.by_hash, held.by_host, held.by_origin)
    revoke_key(session, grants[0].rows["secret"])
    assert client.poll() == UPDATED
    assert client._state is not held  # a new header (version, memos) …
    assert all(a is b for a, b in zip((client._state.grants, client._state.by_hash, client._state.by_host,
                                       client._state.by_origin), indexes, strict=True))  # … over the same indexes
    assert client.check(key=grants[0].keys["secret"]).reason == "key revoked"
    assert len(client._state.by_hash) == 10 and client._state.key_count == 10
    version = client.version

    revoke_grant(session, grants[1].grant)

    def malformed(request):  # a verified delta whose second row is broken: nothing may be applied
        if "/v1/allowlist" not in request.url:
            return None
        response = bridge.client.get("/v1/allowlist", query_string=request.url.partition("?")[2],
                                     headers={**bearer(credential), "Accept": V2})
        doc = json.loads(response.get_data())
        doc["grants"] = [doc["grants"][0] if doc["grants"] else ["app0", "seed", 1, [], []], ["broken"]]
        return 200, {}, _resign(bridge, credential, doc)

    bridge.override = malformed
    with pytest.raises(DocumentError):
        client.poll()
    assert client.version == version and client.check(origin="https://app1.example.com").app_id == "app1"
    assert client.check(key=grants[0].keys["publishable"], origin="https://app0.example.com").allowed
    bridge.override = None
    assert client.poll() == UPDATED
    assert client.check(origin="https://app1.example.com").reason == "unknown origin"
    assert "https://app1.example.com" not in client._state.by_origin and client.grant_count == 4


def _resign(bridge, credential, doc) -> bytes:
    """`doc` as a compact JWS signed by the bot's real key (a verified, malformed document)."""
    from sqlmodel import Session, select

    from bot.allowlist import signing
    from bot.core.models import SigningKey

    engine = bridge.client.application.extensions["beekeeper"].engine
    with Session(engine) as db_session:
        key = db_session.exec(select(SigningKey).where(SigningKey.active == True)).first()  # noqa: E712
        return signing.sign(json.dumps(doc).encode(), key)


def test_exact_origin_and_host_memo_give_the_same_decisions(session, make_client):
    make_grant(session, "alpha", domains=["alpha.example.com", "*.alpha.example.net"])
    client = make_client()
    client.poll()
    for origin, allowed in [("https://alpha.example.com", True), ("http://alpha.example.com", True),
                            ("https://ALPHA.example.com", True), ("https://alpha.example.com:8443", True),
                            ("https://www.alpha.example.net", True), ("https://alpha.example.net", False),
                            ("https://evil.example.com", False), ("null", False)]:
        for _ in range(3):  # first sight, then from the memos
            assert client.check(origin=origin).allowed is allowed, origin


def test_the_key_memo_is_sized_to_the_list_and_keeps_what_is_used(session, make_client):
    made = [make_grant(session, f"app{i}") for i in range(3)]
    client = make_client(key_cache_size=None)
    client.poll()
    assert client._digests.limit == 65_536  # at least; one per listed key beyond that
    small = make_client(key_cache_size=2)
    small.poll()
    keys = [m.keys["secret"] for m in made]
    for _ in range(4):
        for key in keys:
            assert small.check(key=key).allowed
            assert len(small._digests) <= 2


def test_two_generations_keep_entries_used_within_the_limit():
    memo = _TwoGenerations(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("c", 3)  # full: a and b become the old generation
    assert "a" not in memo and memo.recall("a") == 1 and memo["a"] == 1  # used again: moved back
    memo.put("d", 4)  # full again: c and a are old now, b is gone
    assert memo.recall("b") is None and memo.recall("c") == 3
    off = _TwoGenerations(0)
    off.put("a", 1)
    assert off == {} and off.recall("a") is None


# --- planner statistics after bulk changes ----------------------------------------------------------


def _forget_statistics(db) -> None:
    from sqlalchemy import text

    if db.dialect.name == "sqlite":
        with db.begin() as connection:
            if connection.execute(text("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")).first():
                connection.execute(text("DELETE FROM sqlite_stat1"))


def _has_statistics(db, rows: int) -> bool:
    """The planner knows api_key's size: SQLite's sqlite_stat1 row, PostgreSQL's pg_class.reltuples
    (TRUNCATE between tests resets it; 40 rows are below autovacuum's analyze threshold)."""
    from sqlalchemy import text

    with db.connect() as connection:
        if db.dialect.name == "sqlite":
            found = connection.execute(text("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")).first()
            return bool(found) and bool(connection.execute(
                text("SELECT 1 FROM sqlite_stat1 WHERE tbl = 'api_key'")).first())
        return connection.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'api_key'")).scalar() == rows


@pytest.mark.parametrize("how", ["engine", "session", "periodic job"])
def test_refresh_statistics_gives_the_planner_statistics(db, session, runtime, how):
    from bot.core.db import refresh_statistics, schedule_statistics

    for i in range(20):
        make_grant(session, f"app{i}", commit=False)
    session.commit()
    _forget_statistics(db)
    assert not _has_statistics(db, 40)
    if how == "engine":
        refresh_statistics(db)
    elif how == "session":
        refresh_statistics(session)
        session.commit()
    else:
        schedule_statistics(runtime)
        schedule_statistics(runtime)  # once
        jobs = [job for _, job in runtime.periodic if job.__name__ == "statistics_job"]
        assert len(jobs) == 1
        jobs[0](runtime)
    assert _has_statistics(db, 40)
