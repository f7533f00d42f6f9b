"""/openapi.json is valid OpenAPI 3.1, describes every allowlist route, and the documents the API
really serves (full, delta with tombstones, JWS payload, JWKS, errors) validate against it."""

from __future__ import annotations

import json

import jwt
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from tests.allowlist_support import add_gateway, bearer, make_grant, revoke_grant


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def schema_validator(spec, name: str) -> Draft202012Validator:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": spec["components"],
              "$ref": f"#/components/schemas/{name}"}
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_description_is_valid_openapi_31(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_every_allowlist_route_is_described(app, spec):
    routes = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("allowlist.")}
    assert routes == set(spec["paths"])


def test_served_documents_validate(client, session, spec):
    credential = add_gateway(session)
    alpha = make_grant(session, "alpha", tier="flower", domains=["alpha.example.com", "*.alpha.example.net"])
    assert alpha.keys
    make_grant(session, "beta")
    gone = make_grant(session, "gone")
    revoke_grant(session, gone.grant)
    allowlist = schema_validator(spec, "Allowlist")

    full = client.get("/v1/allowlist", headers=bearer(credential)).get_json()
    allowlist.validate(full)
    assert full["grants"]

    delta = client.get("/v1/allowlist?since=1", headers=bearer(credential)).get_json()
    allowlist.validate(delta)
    assert delta["removed"] and delta["grants"]

    token = client.get("/v1/allowlist.jws", headers=bearer(credential)).get_data()
    jws_schema = spec["paths"]["/v1/allowlist.jws"]["get"]["responses"]["200"]["content"]["application/jose"]
    Draft202012Validator(jws_schema["schema"]).validate(token.decode())
    assert jwt.get_unverified_header(token)["typ"] == "beekeeper-allowlist+json"
    allowlist.validate(json.loads(jwt.utils.base64url_decode(token.split(b".")[1])))

    schema_validator(spec, "JWKS").validate(client.get("/.well-known/jwks.json").get_json())


@pytest.mark.parametrize("path, headers, status", [
    ("/v1/allowlist", {}, 401),
    ("/v1/allowlist?since=x", None, 400),
    ("/v1/allowlist?since=999", None, 410),
])
def test_error_bodies_validate(client, session, spec, path, headers, status):
    credential = add_gateway(session)
    response = client.get(path, headers=bearer(credential) if headers is None else headers)
    assert response.status_code == status
    assert str(status) in spec["paths"]["/v1/allowlist"]["get"]["responses"]
    schema_validator(spec, "Error").validate(response.get_json())


def test_a_document_with_a_key_plaintext_field_would_not_validate(spec):
    bad = {"id": 1, "kind": "secret", "sha256": "0" * 64, "expires_at": None, "key": "bk_sk_…"}
    assert list(schema_validator(spec, "Key").iter_errors(bad))
