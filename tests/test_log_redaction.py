"""The log filter is the last line of defence: a secret that slips into a message is blanked."""

import logging

from bot import keyformat
from bot.runtime import RedactSecrets


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
