"""The shared conformance vectors (conformance/v1.json) through the installed client: every request
row, every document sequence, both document formats. The bot's suite runs them too
(tests/gateway/test_gateway_conformance.py); this copy proves the distribution alone passes them."""

from __future__ import annotations

import pytest
from gw_support import URL, VECTORS, Clock, VectorSession

from beekeeper_gateway import (
    HTTP_STATUS,
    REASONS,
    AllowlistClient,
    DocumentError,
    ExpiredDocumentError,
    RollbackError,
    SignatureError,
    UntrustedKeyError,
    decision_vectors,
)

FORMAT2 = VECTORS["format2"]
# The vectors' error codes, most specific first (UntrustedKeyError is a SignatureError).
ERRORS = ((UntrustedKeyError, "untrusted-key"), (SignatureError, "signature"), (RollbackError, "rollback"),
          (ExpiredDocumentError, "expired"), (DocumentError, "document"))


def _client(jwks=None, trusted_keys=None):
    session, clock = VectorSession(), Clock(VECTORS["now_seconds"])
    client = AllowlistClient(URL, jwks=jwks or VECTORS["jwks"], trusted_keys=trusted_keys, session=session,
                             clock=clock)
    return client, session, clock


def _load(client, session, name, fmt=1) -> str:
    session.serve(name, fmt)
    try:
        return client.poll()
    except Exception as exc:  # noqa: BLE001 - mapped to the vectors' codes, else re-raised
        for kind, code in ERRORS:
            if isinstance(exc, kind):
                return code
        raise


def _mismatches(client, rows) -> list:
    keys, wrong = VECTORS["keys"], []
    for row in rows:
        decision = client.check(key=keys[row["key"]] if row["key"] else None, origin=row["origin"] or None,
                                referrer=row["app_id"] or None, referer=row["referer"] or None)
        got = (decision.allowed, decision.app_id if decision.allowed else None, decision.reason,
               int(HTTP_STATUS[decision.reason][:3]))
        if got != (row["grant"] is not None, row["grant"], row["reason"], row["http"]):
            wrong.append((row, got))
    return wrong


def test_every_request_vector(vector_clients):
    wrong = []
    for row in VECTORS["requests"]:
        wrong += _mismatches(vector_clients[row["document"]], [row])
    assert wrong == []


@pytest.mark.parametrize("sequence", VECTORS["sequences"], ids=lambda s: s["name"])
def test_every_document_sequence(sequence):
    client, session, clock = _client(sequence["jwks"], sequence.get("trusted_keys"))
    for step in sequence["steps"]:
        clock.now = step["clock"]
        outcome = _load(client, session, step["document"])
        assert (outcome, client.version, client.epoch) == (step["expect"], step["version"], step["epoch"]), step
    assert _mismatches(client, sequence.get("requests", ())) == []


@pytest.mark.parametrize("document", [FORMAT2["fresh_document"], "full-v10-columns-reordered"])
def test_every_request_vector_on_a_format_2_document(document):
    made = {"none": _client()[0]}
    for state in ("fresh", "expired"):
        client, session, clock = _client()
        assert _load(client, session, document, fmt=2) == "updated"
        if state == "expired":
            clock.now = VECTORS["expired_clock"]
        made[state] = client
    wrong = []
    for row in VECTORS["requests"]:
        wrong += _mismatches(made[row["document"]], [row])
    assert wrong == []


@pytest.mark.parametrize("sequence", FORMAT2["sequences"], ids=lambda s: s["name"])
def test_every_format_2_document_sequence(sequence):
    client, session, clock = _client(sequence["jwks"], sequence.get("trusted_keys"))
    if sequence.get("first_format1"):
        assert _load(client, session, sequence["first_format1"]) == "updated"
    for step in sequence["steps"]:
        clock.now = step["clock"]
        outcome = _load(client, session, step["document"], fmt=2)
        assert (outcome, client.version, client.epoch) == (step["expect"], step["version"], step["epoch"]), step
    assert _mismatches(client, sequence.get("requests", ())) == []


def test_the_vectors_agree_with_this_client_s_reasons_statuses_and_decision_table():
    """A reason, status or table row changed in the package without regenerating the vectors
    (python conformance/generate.py, from a checkout with the bot installed) fails here."""
    assert set(VECTORS["reasons"]) == set(REASONS)
    assert VECTORS["http_status"] == {reason: int(status[:3]) for reason, status in HTTP_STATUS.items()}
    ours = decision_vectors()
    assert VECTORS["grants"] == ours["grants"]
    table = [{k: row[k] for k in ("document", "key", "app_id", "origin", "referer", "grant", "reason")}
             for row in VECTORS["requests"] if row["group"] == "decision-table"]
    assert table == [{k: row[k] for k in table[0]} for row in ours["rows"]]
    expected = {step["expect"] for sequence in VECTORS["sequences"] for step in sequence["steps"]}
    assert expected == {"updated", "not-modified", "signature", "untrusted-key", "rollback", "expired", "document"}
