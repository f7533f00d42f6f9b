"""GET /v1/allowlist: the document, gateway authentication, ETag/304, deltas with tombstones,
the 410 path, gzip, pull counting, and the few-queries build."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta

import jwt
import pytest
from sqlalchemy import delete, event
from sqlmodel import select

from beekeeper_gateway import keyformat
from bot import create_app
from bot.allowlist import serving as allowlist
from bot.allowlist import versioning
from bot.core.models import AllowlistChange, Gateway, GrantDomain
from bot.intake.runtime import Runtime
from tests.allowlist_support import add_gateway, bearer, make_grant, revoke_grant, revoke_key, set_tier


def with_allowlist(policy, **changes):
    return policy.model_copy(update={"allowlist": policy.allowlist.model_copy(update=changes)})


@pytest.fixture
def make_app(db, settings, github, policy):
    def make(**allowlist_changes):
        runtime = Runtime(settings=settings, policy=with_allowlist(policy, **allowlist_changes), engine=db,
                          github=github)
        flask_app = create_app(runtime)
        flask_app.config["TESTING"] = True
        return flask_app
    return make


@pytest.fixture
def credential(session):
    return add_gateway(session, "edge-1")


def get(client, credential, **kwargs):
    headers = {**bearer(credential), **kwargs.pop("headers", {})}
    return client.get("/v1/allowlist", headers=headers, **kwargs)


class StatementCounter:
    """Counts SQL statements sent to the database (a SQLAlchemy engine event, not a patch)."""

    def __init__(self, engine):
        self.engine, self.statements = engine, []

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, *args):
        self.statements.append(statement)

    def touching(self, table: str) -> list[str]:
        return [s for s in self.statements if f"FROM {table}" in s or f'FROM "{table}"' in s]


# --- the document ----------------------------------------------------------------------------------


def test_full_document_has_active_grants_tiers_and_key_hashes_only(client, session, credential, policy):
    alpha = make_grant(session, "alpha", tier="flower", domains=["alpha.example.com", "*.alpha.example.net"])
    gone = make_grant(session, "gone", domains=["gone.example.com"])
    revoke_grant(session, gone.grant)
    session.add(GrantDomain(grant_id=alpha.grant.id, domain="old.example.com", active=False))
    session.commit()

    response = get(client, credential)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_data(as_text=True)
    doc = json.loads(body)
    assert doc["version"] == versioning.current_version(session) == 3
    assert doc["key_prefix"] == "bk"
    assert doc["tiers"]["flower"] == {"rank": 2, "limits": {"requests_per_minute": 300, "concurrency": 8,
                                                            "daily_quota": 100000}}
    assert list(doc["tiers"]) == policy.tier_names
    assert [g["app_id"] for g in doc["grants"]] == ["alpha"]
    grant = doc["grants"][0]
    assert grant["tier"] == "flower" and grant["status"] == "active" and grant["referrers"] == ["alpha"]
    assert grant["domains"] == ["*.alpha.example.net", "alpha.example.com"]
    assert grant["version"] == 1
    assert {k["kind"]: k["sha256"] for k in grant["keys"]} == {
        kind: keyformat.sha256_hex(plaintext) for kind, plaintext in alpha.keys.items()}
    assert all(set(k) == {"id", "kind", "sha256", "expires_at"} for k in grant["keys"])
    for plaintext in [*alpha.keys.values(), *gone.keys.values(), credential]:
        assert plaintext not in body
    generated = datetime.fromisoformat(doc["generated_at"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(doc["expires_at"].replace("Z", "+00:00"))
    assert expires - generated == timedelta(seconds=policy.allowlist.ttl_seconds)
    assert response.headers["X-Allowlist-Version"] == "3"
    assert response.headers["Cache-Control"] == "public, no-cache"
    assert "Accept" in response.headers["Vary"]


def test_revoked_and_expired_keys_are_listed_with_their_state(client, session, credential, frozen_clock):
    made = make_grant(session, "alpha", key_expires_at=frozen_clock.now() + timedelta(hours=1))
    revoke_key(session, made.rows["publishable"])
    doc = get(client, credential).get_json()
    keys = {k["kind"]: k for k in doc["grants"][0]["keys"]}
    assert keys["publishable"]["revoked_at"] is not None
    assert "revoked_at" not in keys["secret"]
    assert keys["secret"]["expires_at"].endswith("Z")


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic Zm9vOmJhcg=="},
    {"Authorization": "Bearer bk_gw_notavalidcredential"},
    {"Authorization": f"Bearer {keyformat.generate('bk', 'gw')}"},  # well formed, unknown
    {"Authorization": f"Bearer {keyformat.generate('bk', 'sk')}"},  # a key, not a gateway credential
])
def test_missing_or_wrong_credential_is_401(client, session, credential, headers):
    response = client.get("/v1/allowlist", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"] == "unauthorized"


def test_revoked_gateway_is_401(client, session, credential):
    from bot.allowlist import gateways

    assert get(client, credential).status_code == 200
    gateways.revoke(session, "edge-1", "test")
    session.commit()
    assert get(client, credential).status_code == 401


# --- ETag / 304 ------------------------------------------------------------------------------------


def test_etag_answers_304_until_the_version_changes(client, session, credential):
    made = make_grant(session, "alpha")
    first = get(client, credential)
    etag = first.headers["ETag"]
    assert etag.startswith('"1-') and not etag.startswith("W/")

    again = get(client, credential, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == etag and again.headers["Cache-Control"] == "public, no-cache"

    set_tier(session, made.grant, "flower")
    changed = get(client, credential, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.get_json()["grants"][0]["tier"] == "flower"


def test_304_reads_no_grant_and_builds_no_document(client, session, credential, db):
    for i in range(5):
        make_grant(session, f"app{i}", domains=[f"app{i}.example.com"])
    etag = get(client, credential).headers["ETag"]
    lookup = allowlist._lookup_for(db)  # the credential statement runs on a raw pooled connection
    before = lookup.statements
    with StatementCounter(db) as counter:
        assert get(client, credential, headers={"If-None-Match": etag}).status_code == 304
    assert counter.statements == []  # no ORM session, no query object: only the credential statement
    assert lookup.statements - before == 1


def test_full_document_is_built_with_a_few_queries_whatever_the_grant_count(make_app, session, credential, db):
    for i in range(40):
        make_grant(session, f"app{i}", domains=[f"app{i}.example.com", f"*.app{i}.example.net"], commit=False)
    session.commit()
    with StatementCounter(db) as counter:
        response = get(make_app().test_client(), credential)
    assert len(response.get_json()["grants"]) == 40
    assert len(counter.statements) <= 8, counter.statements


def test_documents_are_byte_identical_across_processes_within_a_window(make_app, session, credential, frozen_clock):
    make_grant(session, "alpha")
    one, two = get(make_app().test_client(), credential), get(make_app().test_client(), credential)
    assert one.get_data() == two.get_data() and one.headers["ETag"] == two.headers["ETag"]

    frozen_clock.advance(seconds=1800)  # half the default TTL: a new window, same version
    three = get(make_app().test_client(), credential, headers={"If-None-Match": one.headers["ETag"]})
    assert three.status_code == 200 and three.headers["ETag"] != one.headers["ETag"]
    assert three.get_json()["version"] == one.get_json()["version"]
    assert three.get_json()["expires_at"] > one.get_json()["expires_at"]


def test_served_document_always_has_half_its_ttl_left(client, session, credential, frozen_clock, policy):
    make_grant(session, "alpha")
    for _ in range(8):
        frozen_clock.advance(seconds=611)
        doc = get(client, credential).get_json()
        expires = datetime.fromisoformat(doc["expires_at"].replace("Z", "+00:00"))
        assert expires - frozen_clock.now() >= timedelta(seconds=policy.allowlist.ttl_seconds // 2)


def test_gzip_when_accepted(client, session, credential):
    make_grant(session, "alpha")
    plain = get(client, credential)
    zipped = get(client, credential, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.get_data()) == plain.get_data()
    assert zipped.headers["ETag"] != plain.headers["ETag"] and zipped.headers["ETag"].endswith('-gz"')
    assert "Accept-Encoding" in zipped.headers["Vary"]
    not_modified = get(client, credential, headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]})
    assert not_modified.status_code == 304


# --- deltas ----------------------------------------------------------------------------------------


def test_delta_has_changed_grants_and_tombstones(client, session, credential):
    alpha = make_grant(session, "alpha", domains=["alpha.example.com"])
    beta = make_grant(session, "beta")
    make_grant(session, "gamma")
    held = versioning.current_version(session)  # 3

    revoke_key(session, alpha.rows["publishable"])
    revoke_grant(session, beta.grant)
    make_grant(session, "delta")

    doc = get(client, credential, query_string={"since": held}).get_json()
    assert doc["since"] == held and doc["version"] == held + 3
    assert [g["app_id"] for g in doc["grants"]] == ["alpha", "delta"]
    assert doc["removed"] == [{"app_id": "beta", "status": "revoked", "version": held + 2}]
    alpha_keys = {k["kind"]: k for k in doc["grants"][0]["keys"]}
    assert "revoked_at" in alpha_keys["publishable"]

    latest = get(client, credential, query_string={"since": doc["version"]})
    assert latest.status_code == 200
    assert latest.get_json()["grants"] == [] and latest.get_json()["removed"] == []


def test_delta_since_current_version_answers_304_with_the_held_etag(client, session, credential):
    made = make_grant(session, "alpha")
    full = get(client, credential)
    version = full.get_json()["version"]
    held = {"If-None-Match": full.headers["ETag"]}
    unchanged = get(client, credential, query_string={"since": version}, headers=held)
    assert unchanged.status_code == 304
    set_tier(session, made.grant, "nectar")
    changed = get(client, credential, query_string={"since": version}, headers=held)
    assert changed.status_code == 200 and [g["tier"] for g in changed.get_json()["grants"]] == ["nectar"]


def test_since_older_than_the_history_kept_is_410(make_app, session, credential):
    client = make_app(delta_history=2)
    made = make_grant(session, "alpha")
    for tier in ("flower", "nectar", "seed"):
        set_tier(session, made.grant, tier)
    version = versioning.current_version(session)  # 4
    session.commit()  # end the read: on SQLite every transaction holds the database lock
    assert get(client.test_client(), credential, query_string={"since": version - 2}).status_code == 200
    gone = get(client.test_client(), credential, query_string={"since": version - 3})
    assert gone.status_code == 410
    body = gone.get_json()
    assert body["error"] == "since_too_old" and body["oldest_since"] == version - 2 and body["version"] == version
    assert "without `since`" in body["hint"]


def test_since_before_the_pruned_change_log_is_410(client, session, credential):
    made = make_grant(session, "alpha")
    for tier in ("flower", "nectar"):
        set_tier(session, made.grant, tier)
    session.exec(delete(AllowlistChange).where(AllowlistChange.version <= 2))
    session.commit()
    assert get(client, credential, query_string={"since": 1}).status_code == 410
    assert get(client, credential, query_string={"since": 2}).status_code == 200


@pytest.mark.parametrize("since, status", [("99", 410), ("-1", 400), ("abc", 400), ("", 400)])
def test_since_ahead_or_malformed(client, session, credential, since, status):
    make_grant(session, "alpha")
    response = client.get(f"/v1/allowlist?since={since}", headers=bearer(credential))
    assert response.status_code == status
    assert response.get_json()["error"] in ("since_too_old", "bad_since")


# --- signed representation -------------------------------------------------------------------------


def test_jose_accept_and_jws_path_give_the_same_signed_document(client, session, credential):
    make_grant(session, "alpha")
    signed = get(client, credential, headers={"Accept": "application/jose"})
    assert signed.mimetype == "application/jose"
    assert client.get("/v1/allowlist.jws", headers=bearer(credential)).get_data() == signed.get_data()
    plain = get(client, credential)
    assert signed.headers["ETag"] != plain.headers["ETag"]

    jwks = client.get("/.well-known/jwks.json").get_json()
    token = signed.get_data()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["typ"] == "beekeeper-allowlist+json"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    payload = jwt.api_jws.decode(token, jwt.PyJWK(key).key, algorithms=["EdDSA"])
    assert payload == plain.get_data()


def test_first_signed_pull_creates_the_signing_key_once(client, session, credential):
    from bot.core.models import AuditEvent, SigningKey

    make_grant(session, "alpha")
    assert session.exec(select(SigningKey)).all() == []
    session.commit()
    for _ in range(2):
        assert client.get("/v1/allowlist.jws", headers=bearer(credential)).status_code == 200
    keys = session.exec(select(SigningKey)).all()
    assert len(keys) == 1 and keys[0].active
    assert session.exec(select(AuditEvent).where(AuditEvent.action == "signing_key.created")).one()


# --- pulls per gateway -----------------------------------------------------------------------------


def test_every_pull_is_counted_per_gateway(make_app, session):
    app = make_app(pull_stats_flush_seconds=0)
    client = app.test_client()
    one, two = add_gateway(session, "edge-1"), add_gateway(session, "edge-2")
    make_grant(session, "alpha")
    etag = get(client, one).headers["ETag"]
    get(client, one, headers={"If-None-Match": etag})
    get(client, one, query_string={"since": 1})
    get(client, two)
    client.get("/v1/allowlist")  # unauthenticated: counted for nobody
    session.expire_all()
    rows = {g.name: g for g in session.exec(select(Gateway)).all()}
    assert rows["edge-1"].pull_count == 3 and rows["edge-1"].last_version == 1
    assert rows["edge-1"].last_pull_at is not None
    assert rows["edge-2"].pull_count == 1


def test_pull_counts_are_batched_until_flushed(make_app, session, credential):
    app = make_app(pull_stats_flush_seconds=3600)
    client = app.test_client()
    for _ in range(3):
        get(client, credential)
    session.expire_all()
    assert session.exec(select(Gateway)).one().pull_count == 0
    session.commit()
    app.extensions["beekeeper_allowlist"].pulls.flush()
    session.expire_all()
    assert session.exec(select(Gateway)).one().pull_count == 3


def test_gateway_credential_never_appears_in_the_database(session, credential, db):
    from sqlalchemy import text

    with db.connect() as conn:
        for table in ("gateway", "audit_event"):
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                assert credential not in " ".join(str(v) for v in row)
