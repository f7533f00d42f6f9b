"""The OpenAPI 3.1 description of the allowlist API, served at /openapi.json.

Its schemas are JSON Schema 2020-12, so the tests validate the documents the API really serves
against them (tests/allowlist/test_openapi.py) and the description cannot drift from the code.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

TIMESTAMP = {"type": "string", "format": "date-time", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"}
SHA256_B64URL = {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Limits": {
        "type": "object",
        "required": ["requests_per_minute", "concurrency", "daily_quota"],
        "properties": {
            "requests_per_minute": {"type": "integer", "minimum": 0},
            "concurrency": {"type": "integer", "minimum": 1},
            "daily_quota": {"type": ["integer", "null"], "minimum": 0},
        },
    },
    "Tier": {
        "type": "object",
        "required": ["rank", "limits"],
        "additionalProperties": False,
        "properties": {"rank": {"type": "integer", "minimum": 0}, "limits": _ref("Limits")},
    },
    "Key": {
        "type": "object",
        "description": "A key of a grant: its SHA-256 only, never the key.",
        "required": ["id", "kind", "sha256", "expires_at"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "kind": {"enum": ["secret", "publishable"]},
            "sha256": SHA256,
            "expires_at": {"oneOf": [TIMESTAMP, {"type": "null"}]},
            "revoked_at": {**TIMESTAMP, "description": "Present once the key is revoked: refuse it."},
        },
    },
    "Grant": {
        "type": "object",
        "required": ["app_id", "tier", "status", "version", "domains", "referrers", "keys"],
        "additionalProperties": False,
        "properties": {
            "app_id": NAME,
            "tier": NAME,
            "status": {"const": "active"},
            "version": {"type": "integer", "minimum": 0, "description": "Allowlist version of its last change."},
            "domains": {
                "type": "array",
                "description": "Lowercase punycode hosts; a leading `*.` covers every subdomain (not the host itself).",
                "items": {"type": "string", "pattern": r"^(\*\.)?[a-z0-9.-]+$"},
            },
            "referrers": {"type": "array", "items": NAME},
            "keys": {"type": "array", "items": _ref("Key")},
        },
    },
    "Tombstone": {
        "type": "object",
        "description": "A grant revoked after `since`: drop it.",
        "required": ["app_id", "status", "version"],
        "additionalProperties": False,
        "properties": {"app_id": NAME, "status": {"const": "revoked"}, "version": {"type": "integer"}},
    },
    "Allowlist": {
        "type": "object",
        "required": ["schema", "version", "generated_at", "expires_at", "key_prefix", "tiers", "grants"],
        "properties": {
            "schema": {"const": 1},
            "version": {"type": "integer", "minimum": 0},
            "generated_at": TIMESTAMP,
            "expires_at": {**TIMESTAMP, "description": "Stop trusting this document after this time."},
            "key_prefix": {"type": "string", "pattern": "^[a-z][a-z0-9]{1,9}$"},
            "tiers": {"type": "object", "additionalProperties": _ref("Tier")},
            "grants": {"type": "array", "items": _ref("Grant")},
            "since": {"type": "integer", "minimum": 0, "description": "In a delta: the version it follows."},
            "epoch": {"type": "string", "description": "A random id changed after a database restore: a gateway "
                      "accepts a version lower than the highest it has seen only in a new epoch."},
            "removed": {"type": "array", "items": _ref("Tombstone")},
        },
        "dependentRequired": {"since": ["removed"], "removed": ["since"]},
    },
    # Format 2 (issue 18): the same document, grants as rows of arrays under `columns`, key
    # digests as base64url of the 32 raw bytes, no key ids and no referrers (a grant's referrer
    # name is its app id). Served on `?format=2` or
    # `Accept: application/vnd.beekeeper.allowlist+json;format=2`, signed by a detached JWS.
    "KeyRowV2": {
        "type": "array",
        "description": "A key in the order of `columns.keys`: sha256 (base64url, 32 bytes), kind, expires_at, "
                       "revoked_at (null unless revoked: refuse it).",
        "prefixItems": [SHA256_B64URL, {"enum": ["secret", "publishable"]},
                        {"oneOf": [TIMESTAMP, {"type": "null"}]}, {"oneOf": [TIMESTAMP, {"type": "null"}]}],
        "minItems": 4, "maxItems": 4,
    },
    "GrantRowV2": {
        "type": "array",
        "description": "A grant in the order of `columns.grants`: app_id, tier, version, domains, keys.",
        "prefixItems": [NAME, NAME, {"type": "integer", "minimum": 0},
                        {"type": "array", "items": {"type": "string", "pattern": r"^(\*\.)?[a-z0-9.-]+$"}},
                        {"type": "array", "items": _ref("KeyRowV2")}],
        "minItems": 5, "maxItems": 5,
    },
    "TombstoneRowV2": {
        "type": "array",
        "description": "A grant revoked after `since`, in the order of `columns.removed`: app_id, status, version.",
        "prefixItems": [NAME, {"const": "revoked"}, {"type": "integer"}],
        "minItems": 3, "maxItems": 3,
    },
    "AllowlistV2": {
        "type": "object",
        "required": ["schema", "format", "columns", "version", "generated_at", "expires_at", "key_prefix", "tiers",
                     "grants"],
        "properties": {
            "schema": {"const": 1},
            "format": {"const": 2},
            "columns": {
                "type": "object",
                "required": ["grants", "keys", "removed"],
                "properties": {
                    "grants": {"const": ["app_id", "tier", "version", "domains", "keys"]},
                    "keys": {"const": ["sha256", "kind", "expires_at", "revoked_at"]},
                    "removed": {"const": ["app_id", "status", "version"]},
                },
            },
            "version": {"type": "integer", "minimum": 0},
            "generated_at": TIMESTAMP,
            "expires_at": {**TIMESTAMP, "description": "Stop trusting this document after this time."},
            "key_prefix": {"type": "string", "pattern": "^[a-z][a-z0-9]{1,9}$"},
            "tiers": {"type": "object", "additionalProperties": _ref("Tier")},
            "grants": {"type": "array", "items": _ref("GrantRowV2")},
            "since": {"type": "integer", "minimum": 0, "description": "In a delta: the version it follows."},
            "epoch": {"type": "string"},
            "removed": {"type": "array", "items": _ref("TombstoneRowV2")},
        },
        "dependentRequired": {"since": ["removed"], "removed": ["since"]},
    },
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "hint": {"type": "string"},
            "version": {"type": "integer"},
            "oldest_since": {"type": ["integer", "null"]},
        },
    },
    "JWKS": {
        "type": "object",
        "required": ["keys"],
        "properties": {
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kty", "crv", "x", "kid", "alg", "use"],
                    "properties": {
                        "kty": {"const": "OKP"},
                        "crv": {"const": "Ed25519"},
                        "x": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
                        "kid": {"type": "string"},
                        "alg": {"const": "EdDSA"},
                        "use": {"const": "sig"},
                    },
                    "not": {"required": ["d"]},
                },
            }
        },
    },
}

_ETAG = {"description": "Strong validator of this exact representation; send it back in If-None-Match.",
         "schema": {"type": "string"}}
_DOCUMENT_HEADERS = {
    "ETag": _ETAG,
    "Cache-Control": {"description": "`public, no-cache`: a CDN may store it but must revalidate.",
                      "schema": {"type": "string"}},
    "X-Allowlist-Version": {"schema": {"type": "integer"}},
    "Content-Encoding": {"description": "`zstd` or `gzip` when the request's Accept-Encoding offers it (zstd "
                                        "preferred at equal quality); each coding has its own ETag.",
                         "schema": {"enum": ["zstd", "gzip"]}},
}
_DETACHED = {"description": "Format 2 only: a detached JWS with an unencoded payload (RFC 7797): "
                            "`<base64url header>..<base64url signature>`, header "
                            "`{alg: EdDSA, kid, typ: beekeeper-allowlist+json, b64: false, crit: [b64]}`; the "
                            "signing input is the header part, `.`, then the body bytes as received (decoded).",
             "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+$"}}
_JWS = {"schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
                   "description": "Compact JWS (EdDSA, header carries `kid` and "
                                  "`typ: beekeeper-allowlist+json`) whose payload is an Allowlist."}}
_COMMON_RESPONSES = {
    "304": {"description": "Not modified: the gateway holds the current document (no body).",
            "headers": {"ETag": _ETAG}},
    "400": {"description": "`since` is not a version number, or `format` is not 1 or 2.",
            "content": {"application/json": {"schema": _ref("Error")}}},
    "401": {"description": "Missing, malformed, unknown or revoked gateway credential.",
            "content": {"application/json": {"schema": _ref("Error")}}},
    "410": {"description": "`since` is ahead of the list or older than the change history kept: "
                           "pull the full list.",
            "content": {"application/json": {"schema": _ref("Error")}}},
}
_PARAMETERS = [
    {"name": "since", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
     "description": "Answer with a delta: grants changed after this version, and tombstones."},
    {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "format", "in": "query", "required": False, "schema": {"enum": [1, 2]},
     "description": "2: the compact format 2 (AllowlistV2) with a detached signature, as "
                    "`Accept: application/vnd.beekeeper.allowlist+json;format=2` asks; 1 (default): the "
                    "Allowlist object (or its compact JWS). `/v1/allowlist.jws` always answers format 1."},
    {"name": "Accept-Encoding", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "`zstd` and/or `gzip`."},
]


def _package_version() -> str:
    try:
        return version("beekeeper")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0"


@cache
def openapi() -> dict[str, Any]:
    """The whole description (built once; callers must not modify it)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Beekeeper allowlist API",
            "version": _package_version(),
            "description": "The signed, versioned allowlist that API gateways pull. See docs/allowlist.md.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "gateway": {"type": "http", "scheme": "bearer",
                            "description": "A gateway credential `<prefix>_gw_…` from `beekeeper gateways add`."}
            },
        },
        "paths": {
            "/v1/allowlist": {
                "get": {
                    "operationId": "getAllowlist",
                    "summary": "The allowlist (JSON), a compact JWS with `Accept: application/jose`, or format 2 "
                               "with `?format=2` / `Accept: application/vnd.beekeeper.allowlist+json;format=2`",
                    "security": [{"gateway": []}],
                    "parameters": _PARAMETERS,
                    "responses": {
                        "200": {"description": "The full list, or a delta when `since` was given.",
                                "headers": {**_DOCUMENT_HEADERS, "X-Allowlist-Signature": _DETACHED},
                                "content": {"application/json": {"schema": _ref("Allowlist")},
                                            "application/jose": _JWS,
                                            "application/vnd.beekeeper.allowlist+json; format=2":
                                                {"schema": _ref("AllowlistV2")}}},
                        **_COMMON_RESPONSES,
                    },
                }
            },
            "/v1/allowlist.jws": {
                "get": {
                    "operationId": "getSignedAllowlist",
                    "summary": "The allowlist as a compact JWS",
                    "security": [{"gateway": []}],
                    "parameters": _PARAMETERS,
                    "responses": {
                        "200": {"description": "Signed full list or delta.", "headers": _DOCUMENT_HEADERS,
                                "content": {"application/jose": _JWS}},
                        **_COMMON_RESPONSES,
                    },
                }
            },
            "/.well-known/jwks.json": {
                "get": {
                    "operationId": "getJwks",
                    "summary": "Public keys that verify the signed allowlist (rotated-out keys during their grace)",
                    "security": [],
                    "responses": {"200": {"description": "JSON Web Key Set",
                                          "content": {"application/json": {"schema": _ref("JWKS")}}}},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This description",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1 document",
                                          "content": {"application/json": {"schema": {"type": "object"}}}}},
                }
            },
        },
    }
