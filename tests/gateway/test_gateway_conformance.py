"""The conformance vectors (conformance/v1.json, written by conformance/generate.py) through the
Python gateway client. The JavaScript client (clients/js) runs the same file, so a rule changed on
one side fails the other side's tests until the vectors and both clients agree."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from beekeeper_gateway import (
    HTTP_STATUS,
    REASONS,
    AllowlistClient,
    DocumentError,
    ExpiredDocumentError,
    RollbackError,
    SignatureError,
    UntrustedKeyError,
)
from tests.allowlist_support import add_gateway, make_grant

ROOT = Path(__file__).resolve().parents[2]
VECTORS_PATH = ROOT / "conformance" / "v1.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
FORMAT2 = VECTORS["format2"]
URL = "https://beekeeper.test/v1/allowlist"

# The error codes of the vectors, most specific first (UntrustedKeyError is a SignatureError).
ERRORS = ((UntrustedKeyError, "untrusted-key"), (SignatureError, "signature"), (RollbackError, "rollback"),
          (ExpiredDocumentError, "expired"), (DocumentError, "document"))


class _Answer:
    def __init__(self, body: str, signature: str | None = None):
        self.status_code, self.content, self.headers = 200, body.encode(), {}
        if signature is not None:
            self.headers[FORMAT2["signature_header"]] = signature


class _Serve:
    """A session that answers the document it is given (any object with requests.Session.get)."""

    def __init__(self):
        self.body = ""
        self.signature = None

    def get(self, url, params=None, headers=None, timeout=None):
        assert url == URL, url  # the JWKS is pinned (jwks=): never fetched
        return _Answer(self.body, self.signature)


class _Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _client(jwks=None, trusted_keys=None) -> tuple[AllowlistClient, _Serve, _Clock]:
    serve, clock = _Serve(), _Clock(VECTORS["now_seconds"])
    return AllowlistClient(URL, jwks=jwks or VECTORS["jwks"], trusted_keys=trusted_keys, session=serve,
                           clock=clock), serve, clock


def _load(client: AllowlistClient, serve: _Serve, name: str, fmt: int = 1) -> str:
    if fmt == 2:
        document = FORMAT2["documents"][name]
        serve.body, serve.signature = document["body"], document["signature"]
    else:
        serve.body, serve.signature = VECTORS["documents"][name], None
    try:
        return client.poll()
    except Exception as exc:  # noqa: BLE001 - mapped to the vectors' codes below, else failed
        for kind, code in ERRORS:
            if isinstance(exc, kind):
                return code
        raise


def _check(client: AllowlistClient, row: dict) -> list:
    keys = VECTORS["keys"]
    decision = client.check(key=keys[row["key"]] if row["key"] else None, origin=row["origin"] or None,
                            referrer=row["app_id"] or None, referer=row["referer"] or None)
    got = (decision.allowed, decision.app_id if decision.allowed else None, decision.reason,
           int(HTTP_STATUS[decision.reason][:3]))
    want = (row["grant"] is not None, row["grant"], row["reason"], row["http"])
    return [] if got == want else [(row, got)]


@pytest.fixture(scope="module")
def holders():
    """Clients holding no document, the fresh one, and the fresh one past its expiry."""
    made = {}
    for state in ("none", "fresh", "expired"):
        client, serve, clock = _client()
        if state != "none":
            assert _load(client, serve, VECTORS["fresh_document"]) == "updated"
        if state == "expired":
            clock.now = VECTORS["expired_clock"]
        made[state] = client
    return made


def test_every_request_vector(holders):
    mismatches = []
    for row in VECTORS["requests"]:
        mismatches += _check(holders[row["document"]], row)
    assert mismatches == []
    assert {row["group"] for row in VECTORS["requests"]} == {"decision-table", "hosts"}


@pytest.mark.parametrize("sequence", VECTORS["sequences"], ids=lambda s: s["name"])
def test_every_document_sequence(sequence):
    client, serve, clock = _client(sequence["jwks"], sequence.get("trusted_keys"))
    for step in sequence["steps"]:
        clock.now = step["clock"]
        outcome = _load(client, serve, step["document"])
        assert (outcome, client.version, client.epoch) == (step["expect"], step["version"], step["epoch"]), step
    mismatches = []
    for row in sequence.get("requests", ()):
        mismatches += _check(client, row)
    assert mismatches == []


# --- format 2 (conformance["format2"]): the same rules, the document in rows, the signature detached ---


@pytest.mark.parametrize("document", [FORMAT2["fresh_document"], "full-v10-columns-reordered"])
def test_every_request_vector_on_a_format_2_document(document):
    made = {}
    for state in ("fresh", "expired"):
        client, serve, clock = _client()
        assert _load(client, serve, document, fmt=2) == "updated"
        if state == "expired":
            clock.now = VECTORS["expired_clock"]
        made[state] = client
    made["none"] = _client()[0]
    mismatches = []
    for row in VECTORS["requests"]:
        mismatches += _check(made[row["document"]], row)
    assert mismatches == []


@pytest.mark.parametrize("sequence", FORMAT2["sequences"], ids=lambda s: s["name"])
def test_every_format_2_document_sequence(sequence):
    client, serve, clock = _client(sequence["jwks"], sequence.get("trusted_keys"))
    if sequence.get("first_format1"):
        assert _load(client, serve, sequence["first_format1"]) == "updated"
    for step in sequence["steps"]:
        clock.now = step["clock"]
        outcome = _load(client, serve, step["document"], fmt=2)
        assert (outcome, client.version, client.epoch) == (step["expect"], step["version"], step["epoch"]), step
    mismatches = []
    for row in sequence.get("requests", ()):
        mismatches += _check(client, row)
    assert mismatches == []


def test_the_format_2_vectors_are_format_2_and_cover_every_error():
    documents = FORMAT2["documents"]
    for name, document in documents.items():
        doc = json.loads(document["body"])
        assert doc["format"] == 2 and set(doc["columns"]) == {"grants", "keys", "removed"}, name
        assert all(isinstance(row, list) for row in doc["grants"]), name
    used = {step["document"] for sequence in FORMAT2["sequences"] for step in sequence["steps"]}
    assert used == set(documents)
    expected = {step["expect"] for sequence in FORMAT2["sequences"] for step in sequence["steps"]}
    assert expected == {"updated", "not-modified", "signature", "untrusted-key", "rollback", "expired", "document"}


def test_the_vectors_cover_every_reason_and_error():
    assert set(VECTORS["reasons"]) == set(REASONS)
    assert {row["reason"] for row in VECTORS["requests"]} == set(REASONS)
    assert VECTORS["http_status"] == {reason: int(status[:3]) for reason, status in HTTP_STATUS.items()}
    expected = {step["expect"] for sequence in VECTORS["sequences"] for step in sequence["steps"]}
    assert expected == {"updated", "not-modified", "signature", "untrusted-key", "rollback", "expired", "document"}


def test_the_committed_vectors_are_what_the_generator_writes_now():
    """A rule changed on the Python side (the decision table, the reasons, the HTTP statuses, the
    document format) fails here until `python conformance/generate.py` is run and committed."""
    spec = importlib.util.spec_from_file_location("conformance_generate", ROOT / "conformance" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert VECTORS_PATH.read_text(encoding="utf-8") == generate.render(), \
        "conformance/v1.json is out of date: run `python conformance/generate.py` and commit it"


# --- the JavaScript client against this server (when clients/js is built: `npm ci && npm test`) ---

JS_DIR = ROOT / "clients" / "js"
JS_POLL = """
import { AllowlistClient } from "./dist/index.js";
const [url, gatewayKey, key, format] = process.argv.slice(1);
const answers = [];
const fetcher = async (u, init) => {
  const r = await fetch(u, init);
  answers.push({ status: r.status, type: r.headers.get("content-type"), encoding: r.headers.get("content-encoding"),
    signature: r.headers.get("x-allowlist-signature") !== null });
  return r;
};
const client = new AllowlistClient({ url, gatewayKey, fetch: fetcher, format: Number(format) });
const first = await client.poll();
const second = await client.poll();
const byKey = await client.check({ key });
const byOrigin = await client.check({ origin: "https://www.alpha.example.net" });
console.log(JSON.stringify({ first, second, version: client.version, key: [byKey.reason, byKey.appId],
  origin: [byOrigin.reason, byOrigin.appId], answers }));
"""


# Skipped where clients/js is not built; CI (.ci/run builds it first and sets
# BEEKEEPER_REQUIRE_JS_CLIENT=1) runs it always.
@pytest.mark.skipif(not os.environ.get("BEEKEEPER_REQUIRE_JS_CLIENT") and (
    shutil.which("node") is None or not (JS_DIR / "dist" / "index.js").exists()
    or not (JS_DIR / "node_modules").exists()), reason="clients/js is not built (npm ci && npm test)")
def test_the_javascript_client_reads_this_servers_format_2_and_format_1(app, session):
    """The JS client polls the real server through Node's own fetch: format 2 (gzip, detached
    signature) by default, the compact JWS with `format: 1`; then a 304."""
    grant = make_grant(session, "alpha", domains=["alpha.example.com", "*.alpha.example.net"])
    credential = add_gateway(session, "edge-js")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1/allowlist"
        results = {}
        for fmt in ("2", "1"):
            out = subprocess.run(["node", "--input-type=module", "-e", JS_POLL, url, credential, grant.keys["secret"],
                                  fmt], cwd=JS_DIR, capture_output=True, text=True, timeout=60, check=False)
            assert out.returncode == 0, out.stderr
            results[fmt] = json.loads(out.stdout)
    finally:
        server.shutdown()
    for fmt, result in results.items():
        assert (result["first"], result["second"], result["version"]) == ("updated", "not-modified", 1), fmt
        assert result["key"] == ["secret key", "alpha"] and result["origin"] == ["origin", "alpha"], fmt
        document, _jwks, again = result["answers"]
        assert again["status"] == 304 and document["encoding"] == "gzip", fmt
    assert results["2"]["answers"][0]["type"] == "application/vnd.beekeeper.allowlist+json; format=2"
    assert results["2"]["answers"][0]["signature"] is True
    assert results["1"]["answers"][0]["type"] == "application/jose"
    assert results["1"]["answers"][0]["signature"] is False
