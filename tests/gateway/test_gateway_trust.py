"""Gateway trust anchors (issue 14 item 11): pinned signing keys (`trusted_keys`), the highest
version kept across restarts (`state_file`), and a deliberate version reset after a database
restore (the allowlist epoch, `beekeeper allowlist new-epoch`)."""

from __future__ import annotations

import json
import os
import stat

import jwt
import pytest
from click.testing import CliRunner
from sqlalchemy import delete, text, update

from beekeeper_gateway import (
    UPDATED,
    AllowlistClient,
    RollbackError,
    SignatureError,
    UntrustedKeyError,
    jwk_thumbprint,
)
from bot.allowlist import serving as allowlist
from bot.allowlist import signing
from bot.cli import main
from bot.core.models import AllowlistChange, AllowlistCounter
from tests.allowlist_support import ALLOWLIST_URL, bearer, make_grant, revoke_key
from tests.conftest import WEBHOOK_SECRET
from tests.fakegithub import API


@pytest.fixture
def cli_env(database_url, private_key_pem, tmp_path, monkeypatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("BEEKEEPER_") and name != "BEEKEEPER_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return {"BEEKEEPER_DATABASE_URL": database_url, "BEEKEEPER_GITHUB_API_URL": API,
            "BEEKEEPER_GITHUB_APP_ID": "424242", "BEEKEEPER_GITHUB_PRIVATE_KEY": private_key_pem,
            "BEEKEEPER_WEBHOOK_SECRET": WEBHOOK_SECRET, "BEEKEEPER_INSTANCE_PATH": str(tmp_path / "instance")}


def beekeeper(env, *args):
    return CliRunner().invoke(main, list(args), env=env)


def server_jwk(bridge) -> dict:
    return bridge.client.get("/.well-known/jwks.json").get_json()["keys"][0]


IMPOSTOR = signing.SigningKey(kid="", private_pem=signing.new_key_material()[0])
IMPOSTOR_JWK = {"kty": "OKP", "crv": "Ed25519", "x": jwt.utils.base64url_encode(
    signing._private_key("impostor", IMPOSTOR.private_pem).public_key().public_bytes_raw()).decode()}
IMPOSTOR.kid = jwk_thumbprint(IMPOSTOR_JWK)


def forged(bridge, credential, **changes) -> bytes:
    """The real document, changed, signed by the impostor (a CDN or bucket between bot and gateway)."""
    doc = json.loads(bridge.client.get("/v1/allowlist", headers=bearer(credential)).get_data())
    doc.update(changes)
    return signing.sign(json.dumps(doc).encode(), IMPOSTOR)


def impostor_in_the_middle(token: bytes, with_real_key: dict | None = None):
    """Serves `token` as the allowlist and a JWKS with the impostor's key, from the same origin."""
    keys = [{**IMPOSTOR_JWK, "kid": IMPOSTOR.kid, "use": "sig", "alg": "EdDSA"}]
    if with_real_key is not None:
        keys.append(with_real_key)

    def answer(request):
        if "/v1/allowlist" in request.url:
            return 200, {}, token
        if "jwks" in request.url:
            return 200, {"Content-Type": "application/json"}, json.dumps({"keys": keys})
        return None
    return answer


# --- trusted_keys ------------------------------------------------------------------------------------


def test_thumbprints_agree_with_the_bot_and_are_printed_by_signing_keys_list(cli_env, db, bridge, session):
    jwk = server_jwk(bridge)
    assert jwk_thumbprint(jwk) == signing.thumbprint(jwk) == jwk["kid"]
    session.commit()
    listing = beekeeper(cli_env, "signing-keys", "list")
    assert listing.exit_code == 0 and f"thumbprint {jwk['kid']}" in listing.output
    as_json = [json.loads(line) for line in beekeeper(cli_env, "signing-keys", "list", "--json").output.splitlines()]
    assert as_json[0]["thumbprint"] == jwk["kid"] and as_json[0]["jwk"]["x"] == jwk["x"]
    assert "d" not in as_json[0]["jwk"] and "PRIVATE" not in listing.output


@pytest.mark.parametrize("anchor", ["thumbprint", "jwk"])
def test_a_pinned_key_verifies_the_real_document(session, make_client, bridge, anchor):
    alpha = make_grant(session, "alpha")
    jwk = server_jwk(bridge)
    client = make_client(trusted_keys=[jwk["kid"] if anchor == "thumbprint" else jwk])
    assert client.poll() == UPDATED and client.check(key=alpha.keys["secret"]).allowed


def test_a_document_signed_by_an_unpinned_key_from_the_same_origin_is_refused(session, make_client, bridge,
                                                                              credential):
    alpha = make_grant(session, "alpha")
    real = server_jwk(bridge)
    revoke_key(session, alpha.rows["secret"])
    token = forged(bridge, credential, grants=[])  # nothing revoked... and no grants: anything goes
    bridge.override = impostor_in_the_middle(token)

    unpinned = make_client()
    assert unpinned.poll() == UPDATED  # the hole: the JWKS comes from the same origin as the document

    pinned = make_client(trusted_keys=[real["kid"]])
    with pytest.raises(UntrustedKeyError, match="none of the trusted keys"):
        pinned.poll()
    assert pinned.version is None

    bridge.override = impostor_in_the_middle(token, with_real_key=real)  # the real key published too
    with pytest.raises(UntrustedKeyError, match="among the trusted keys"):
        pinned.poll()
    pinned_jwk = make_client(trusted_keys=[real])
    with pytest.raises(SignatureError):
        pinned_jwk.poll()
    assert pinned_jwk.version is None


def test_a_jwks_entry_that_claims_a_pinned_kid_is_judged_by_its_key(session, make_client, bridge, credential):
    make_grant(session, "alpha")
    real = server_jwk(bridge)
    token = forged(bridge, credential)
    header, rest = token.split(b".", 1)
    claimed = jwt.utils.base64url_encode(json.dumps({"alg": "EdDSA", "kid": real["kid"],
                                                     "typ": "beekeeper-allowlist+json"}).encode())
    liar = {**IMPOSTOR_JWK, "kid": real["kid"]}  # the impostor's key under the real thumbprint

    def answer(request):
        if "/v1/allowlist" in request.url:
            return 200, {}, claimed + b"." + rest
        if "jwks" in request.url:
            return 200, {}, json.dumps({"keys": [liar]})
        return None

    bridge.override = answer
    with pytest.raises(UntrustedKeyError):
        make_client(trusted_keys=[real["kid"]]).poll()


def test_pinned_jwks_need_no_jwks_fetch_and_rotation_follows_pinned_thumbprints(session, make_client, bridge,
                                                                                 cli_env):
    alpha = make_grant(session, "alpha")
    old = server_jwk(bridge)
    by_jwk = make_client(trusted_keys=[old])
    bridge.override = lambda request: (503, {}, b"down") if "jwks" in request.url else None
    assert by_jwk.poll() == UPDATED and not any("jwks" in r.url for r in bridge.requests)
    bridge.override = None

    # The operator prepares the next key, pins its thumbprint on the gateways, then rotates.
    session.commit()
    prepared = beekeeper(cli_env, "signing-keys", "prepare")
    assert prepared.exit_code == 0, prepared.output
    next_thumbprint = prepared.output.split("thumbprint ")[1].split()[0]
    assert "prepared: next signer" in beekeeper(cli_env, "signing-keys", "list").output
    both = make_client(trusted_keys=[old["kid"], next_thumbprint])
    only_old = make_client(trusted_keys=[old["kid"]])
    both.poll()
    only_old.poll()
    assert beekeeper(cli_env, "signing-keys", "rotate").exit_code == 0
    assert server_jwk(bridge)["kid"] == next_thumbprint  # the prepared key signs now
    revoke_key(session, alpha.rows["secret"])
    assert both.poll() == UPDATED and both.check(key=alpha.keys["secret"]).reason == "key revoked"
    with pytest.raises(UntrustedKeyError):
        only_old.poll()
    assert only_old.check(key=alpha.keys["secret"]).allowed  # keeps what it holds until it expires


@pytest.mark.parametrize("bad", [[], ["not-a-thumbprint"], [{"kty": "RSA", "n": "x", "e": "AQAB"}], [42]])
def test_bad_trust_anchors_are_refused_at_construction(bad):
    with pytest.raises(ValueError):
        AllowlistClient(ALLOWLIST_URL, trusted_keys=bad)


# --- state_file: the highest version across restarts -----------------------------------------------


def test_a_restarted_gateway_refuses_a_rollback_below_the_version_it_had(session, make_client, bridge, credential,
                                                                         tmp_path):
    alpha = make_grant(session, "alpha")
    old_token = bridge.client.get("/v1/allowlist.jws", headers=bearer(credential)).get_data()
    revoke_key(session, alpha.rows["secret"])
    state = tmp_path / "gateway-state.json"
    first = make_client(state_file=state)
    first.poll()
    assert first.version == 2
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert json.loads(state.read_text())["version"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["gateway-state.json"]  # written atomically, nothing left

    bridge.override = lambda request: (200, {}, old_token) if "/v1/allowlist" in request.url else None
    amnesiac = make_client()  # restarted without a state file: the replay is taken
    amnesiac.poll()
    assert amnesiac.check(key=alpha.keys["secret"]).allowed

    restarted = make_client(state_file=state)
    with pytest.raises(RollbackError, match="highest seen"):
        restarted.poll()
    assert restarted.version is None and restarted.check(key=alpha.keys["secret"]).reason == "allowlist not loaded"
    bridge.override = None
    assert restarted.poll() == UPDATED and restarted.check(key=alpha.keys["secret"]).reason == "key revoked"


@pytest.mark.parametrize("content", ["", "{", "[]", '{"version": "2", "epoch": null}', '{"epoch": null}'])
def test_an_unreadable_state_file_is_a_clear_error(tmp_path, content):
    state = tmp_path / "state.json"
    state.write_text(content)
    with pytest.raises(ValueError, match="state_file"):
        AllowlistClient(ALLOWLIST_URL, state_file=state)


def test_a_state_file_in_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="folder does not exist"):
        AllowlistClient(ALLOWLIST_URL, state_file=tmp_path / "nowhere" / "state.json")


# --- the epoch: a deliberate version reset ---------------------------------------------------------


def restore_backup(session, version: int) -> None:
    """What restoring a backup taken at `version` does to the counter and the change log."""
    session.execute(update(AllowlistCounter).where(AllowlistCounter.id == 1).values(version=version))
    session.execute(delete(AllowlistChange).where(AllowlistChange.version > version))
    session.commit()


def set_epoch(session, epoch: str | None) -> None:
    session.execute(text("UPDATE allowlist_counter SET epoch = :e WHERE id = 1").bindparams(e=epoch))
    session.commit()


def test_after_a_restore_the_new_epoch_is_accepted_and_the_old_one_refused(session, make_client, bridge, credential,
                                                                           tmp_path, cli_env):
    set_epoch(session, allowlist.make_epoch())
    alpha = make_grant(session, "alpha")
    make_grant(session, "beta")
    make_grant(session, "gamma")
    state = tmp_path / "state.json"
    client = make_client(state_file=state, trusted_keys=[server_jwk(bridge)["kid"]])
    client.poll()
    old_epoch = client.epoch
    assert client.version == 3 and old_epoch and json.loads(state.read_text())["epoch"] == old_epoch
    before_restore = bridge.client.get("/v1/allowlist.jws", headers=bearer(credential)).get_data()

    restore_backup(session, 1)  # the database is back at version 1, same epoch (it was in the backup)
    with pytest.raises(RollbackError):
        client.poll()
    assert client.version == 3  # still serving what it holds, until it expires

    result = beekeeper(cli_env, "allowlist", "new-epoch", "--yes")
    assert result.exit_code == 0, result.output
    assert client.poll() == UPDATED
    assert client.version == 1 and client.epoch not in (None, old_epoch)
    assert client.check(key=alpha.keys["secret"]).allowed
    saved = json.loads(state.read_text())
    assert saved["version"] == 1 and saved["epoch"] == client.epoch and old_epoch in saved["retired"]

    bridge.override = lambda request: (200, {}, before_restore) if "/v1/allowlist" in request.url else None
    for gateway in (client, make_client(state_file=state)):  # running, or restarted from its state file
        with pytest.raises(RollbackError, match="epoch"):
            gateway.poll()
    bridge.override = None
    restarted = make_client(state_file=state)
    assert restarted.poll() == UPDATED and restarted.version == 1


def test_a_replay_from_an_older_epoch_never_seen_is_refused(session, make_client, bridge, credential):
    set_epoch(session, "1000.aaaa")
    make_grant(session, "alpha")
    make_grant(session, "beta")
    older = bridge.client.get("/v1/allowlist.jws", headers=bearer(credential)).get_data()
    set_epoch(session, "2000.bbbb")
    restore_backup(session, 1)
    client = make_client()
    client.poll()
    assert (client.epoch, client.version) == ("2000.bbbb", 1)
    bridge.override = lambda request: (200, {}, older) if "/v1/allowlist" in request.url else None
    with pytest.raises(RollbackError, match="older than the epoch held"):
        client.poll()


def test_a_new_epoch_is_taken_only_from_a_trusted_key(session, make_client, bridge, credential):
    set_epoch(session, "1000.aaaa")
    for name in ("alpha", "beta", "gamma"):
        make_grant(session, name)
    client = make_client(trusted_keys=[server_jwk(bridge)["kid"]])
    client.poll()
    bridge.override = impostor_in_the_middle(forged(bridge, credential, version=1, epoch="9000.ffff", grants=[]))
    with pytest.raises(UntrustedKeyError):
        client.poll()
    assert (client.epoch, client.version) == ("1000.aaaa", 3)


def test_a_delta_from_a_new_epoch_is_not_applied_the_full_list_is_pulled(session, make_client, bridge):
    set_epoch(session, "1000.aaaa")
    alpha = make_grant(session, "alpha")
    make_grant(session, "beta")
    client = make_client()
    client.poll()
    assert client.version == 2
    restore_backup(session, 1)
    set_epoch(session, "2000.bbbb")
    revoke_key(session, alpha.rows["secret"])  # version 2 again, in the new epoch
    late = make_grant(session, "late")  # version 3: a delta since 2 would miss the revoke
    assert client.poll() == UPDATED and (client.epoch, client.version) == ("2000.bbbb", 3)
    assert client.check(key=alpha.keys["secret"]).reason == "key revoked"
    assert client.check(key=late.keys["secret"]).allowed
    urls = [r.url for r in bridge.requests if "/v1/allowlist" in r.url]
    assert "since=2" in urls[-2] and "since" not in urls[-1]


def test_documents_carry_the_epoch_and_a_new_epoch_changes_the_etag(session, client, credential):
    set_epoch(session, "1000.aaaa")
    make_grant(session, "alpha")
    first = client.get("/v1/allowlist", headers=bearer(credential))
    assert first.get_json()["epoch"] == "1000.aaaa"
    old, new = allowlist.new_epoch(session, "test")
    session.commit()
    assert old == "1000.aaaa" and int(new.partition(".")[0]) > 1000
    second = client.get("/v1/allowlist", headers={**bearer(credential), "If-None-Match": first.headers["ETag"]})
    assert second.status_code == 200 and second.get_json()["epoch"] == new
    assert allowlist.make_epoch(after="99999999999.x").startswith("100000000000.")
