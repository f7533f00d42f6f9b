"""The log filter is the last line of defence: a secret that slips into a message is blanked."""

import logging

from beekeeper_gateway import keyformat
from bot.intake.runtime import RedactSecrets


def _filtered(message: str, *args, secrets=()) -> str:
    record = logging.LogRecord("beekeeper.test", logging.INFO, __file__, 1, message, args, None)
    RedactSecrets(secrets).filter(record)
    return record.getMessage()


def test_our_keys_github_tokens_and_configured_secrets_are_blanked():
    key = keyformat.generate("bk", "sk")
    gateway = keyformat.generate("bk", "gw")
    text = _filtered("claimed %s and %s with ghs_abcdefghijklmnop1234 and hook secret s3cr3t-value",
                     key, gateway, secrets=["s3cr3t-value"])
    assert key not in text and gateway not in text
    assert "ghs_abcdefghijklmnop1234" not in text and "s3cr3t-value" not in text
    assert text.count("[redacted]") == 4


def test_ordinary_messages_are_left_alone():
    message = "delivery=72d3162e-cc78-11e3-81ab-4c9367dc0958 event=issues.opened stored (app bk_sk_AbC1…wxYz)"
    assert _filtered(message) == message


def _handler(formatter, secrets=()):
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets(secrets))
    return handler, stream


def test_a_token_in_an_exception_and_its_traceback_is_redacted():
    """log.exception once printed a ghs_ installation token in full (in the exception's text)."""
    token = "ghs_" + "A1b2C3d4E5f6G7h8I9j0"
    handler, stream = _handler(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("beekeeper.test.traceback")
    log.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"GitHub refused Authorization: Bearer {token}")
        except RuntimeError:
            log.exception("call failed with %s", token)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text and "RuntimeError" in text
    assert token not in text
    assert text.count("[redacted]") >= 2  # the message and the exception line


def test_json_lines_carry_the_delivery_fields_and_stay_redacted():
    import json

    from bot.core.logs import JsonFormatter, event_fields, set_fields
    from bot.intake.router import Event

    event = Event(name="issue_comment", action="created", delivery_id="d-42",
                  payload={"repository": {"full_name": "acme/access"}, "issue": {"number": 7},
                           "sender": {"login": "maria-maint", "id": 1}})
    handler, stream = _handler(JsonFormatter(), secrets=["hook-secret-value"])
    log = logging.getLogger("beekeeper.test.json")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    set_fields(event_fields(event))
    try:
        log.info("handled; secret hook-secret-value")
        try:
            raise ValueError("ghs_" + "Z9y8X7w6V5u4T3s2R1q0")
        except ValueError:
            log.exception("failed")
    finally:
        set_fields(None)
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "handled; secret [redacted]"
    assert (first["delivery_id"], first["event"], first["repo"], first["issue"], first["actor"]) == (
        "d-42", "issue_comment.created", "acme/access", 7, "maria-maint")
    assert first["level"] == "INFO" and first["logger"] == "beekeeper.test.json"
    assert "ValueError: [redacted]" in second["exception"]
    assert "ghs_Z9y8X7w6V5u4T3s2R1q0" not in stream.getvalue()
