"""Gateway credentials: shown once, stored hashed, revocable; the CLI for gateways, signing keys
and the signed export."""

from __future__ import annotations

import json
import os

import jwt
import pytest
from click.testing import CliRunner
from sqlmodel import select

from beekeeper_gateway import keyformat
from bot.allowlist import gateways
from bot.cli import main
from bot.core.models import AuditEvent, SigningKey
from tests.allowlist_support import bearer, make_grant
from tests.conftest import WEBHOOK_SECRET
from tests.fakegithub import API


def test_add_returns_the_credential_once_and_stores_its_hash(session):
    gateway, credential = gateways.add(session, "Edge-EU", "bk", "cli:ops")
    session.commit()
    assert keyformat.parse(credential, "bk") == ("bk", "gw")
    assert gateway.name == "edge-eu"
    assert gateway.sha256 == keyformat.sha256_hex(credential) and gateway.display == keyformat.display(credential)
    assert credential not in repr(gateway.model_dump())
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "gateway.added")).one()
    assert event.subject == "edge-eu" and credential not in str(event.details)


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "-leading", "ünicode"])
def test_bad_names_are_refused(session, name):
    with pytest.raises(gateways.GatewayError):
        gateways.add(session, name, "bk", "test")


def test_duplicate_names_are_refused(session):
    gateways.add(session, "edge", "bk", "test")
    with pytest.raises(gateways.GatewayError, match="already exists"):
        gateways.add(session, "edge", "bk", "test")


def test_authenticate_accepts_only_the_active_credential(session):
    _, credential = gateways.add(session, "edge", "bk", "test")
    session.commit()
    assert gateways.authenticate(session, f"Bearer {credential}", "bk").name == "edge"
    assert gateways.authenticate(session, f"bearer  {credential} ", "bk").name == "edge"
    assert gateways.authenticate(session, credential, "bk") is None  # no scheme
    tampered = credential[:-1] + ("y" if credential[-1] == "x" else "x")  # always a different last character
    assert tampered != credential
    assert gateways.authenticate(session, f"Bearer {tampered}", "bk") is None  # checksum
    assert gateways.authenticate(session, f"Bearer {credential}", "zz") is None  # another prefix
    assert gateways.authenticate(session, f"Bearer {keyformat.generate('bk', 'gw')}", "bk") is None
    gateways.revoke(session, "edge", "test")
    session.commit()
    assert gateways.authenticate(session, f"Bearer {credential}", "bk") is None
    with pytest.raises(gateways.GatewayError, match="already revoked"):
        gateways.revoke(session, "edge", "test")
    with pytest.raises(gateways.GatewayError, match="no gateway"):
        gateways.revoke(session, "nope", "test")


# --- CLI -------------------------------------------------------------------------------------------


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


def test_cli_gateways_add_list_revoke(cli_env, db, client, session):
    added = beekeeper(cli_env, "gateways", "add", "edge-eu")
    assert added.exit_code == 0, added.output
    credential = added.stdout.strip()
    assert keyformat.is_valid(credential, "bk", "gw")
    assert client.get("/v1/allowlist", headers=bearer(credential)).status_code == 200

    listed = beekeeper(cli_env, "gateways", "list")
    assert "edge-eu" in listed.output and keyformat.display(credential) in listed.output
    assert credential not in listed.output

    assert beekeeper(cli_env, "gateways", "add", "edge-eu").exit_code == 1
    revoked = beekeeper(cli_env, "gateways", "revoke", "edge-eu")
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert client.get("/v1/allowlist", headers=bearer(credential)).status_code == 401
    assert '"revoked_at": null' not in beekeeper(cli_env, "gateways", "list", "--json").output


def test_cli_signing_keys_generate_rotate_list(cli_env, db, session):
    first = beekeeper(cli_env, "signing-keys", "generate")
    assert first.exit_code == 0 and "created" in first.output
    assert "already active" in beekeeper(cli_env, "signing-keys", "generate").output
    rotated = beekeeper(cli_env, "signing-keys", "rotate")
    assert rotated.exit_code == 0 and "stays in the JWKS for 72 hours" in rotated.output
    keys = session.exec(select(SigningKey).order_by(SigningKey.id)).all()
    assert [k.active for k in keys] == [False, True]
    session.commit()  # end the read: on SQLite a transaction holds the database lock
    listing = beekeeper(cli_env, "signing-keys", "list").output
    assert "active signer" in listing and "still published" in listing
    assert "PRIVATE" not in listing
    import json

    as_json = beekeeper(cli_env, "signing-keys", "list", "--json").output
    records = [json.loads(line) for line in as_json.splitlines()]
    assert [(r["active"], r["published"]) for r in records] == [(True, True), (False, True)]
    assert records[1]["retired_at"] and "PRIVATE" not in as_json


def test_cli_allowlist_export_writes_a_verifiable_signed_document(cli_env, db, session, client, tmp_path):
    make_grant(session, "alpha", domains=["alpha.example.com"])
    target = tmp_path / "public" / "allowlist.jws"
    target.parent.mkdir()
    result = beekeeper(cli_env, "allowlist", "export", str(target))
    assert result.exit_code == 0, result.output
    token = target.read_bytes()
    jwks = client.get("/.well-known/jwks.json").get_json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks["keys"] if k["kid"] == kid)
    doc = json.loads(jwt.api_jws.decode(token, jwt.PyJWK(key).key, algorithms=["EdDSA"]))
    assert doc["version"] == 1 and [g["app_id"] for g in doc["grants"]] == ["alpha"]
    assert [p.name for p in target.parent.iterdir()] == ["allowlist.jws"]  # no temporary left behind
