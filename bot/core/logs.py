"""Structured log lines: BEEKEEPER_LOG_FORMAT=json prints one JSON object per line.

The worker names the delivery it is processing (`set_fields`); every line logged meanwhile, by
any module, carries delivery_id, event, repo, issue and actor as fields of its own (and the text
format appends them as key=value). Redaction (bot.intake.runtime.RedactSecrets) runs before formatting,
on the message and on the traceback alike.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("beekeeper_log_fields", default=None)


def event_fields(event) -> dict[str, Any]:
    """delivery_id, event, repo, issue, actor of a webhook event (bot.intake.router.Event)."""
    payload = event.payload or {}
    issue = (payload.get("issue") or {}).get("number")
    return {
        "delivery_id": event.delivery_id,
        "event": f"{event.name}.{event.action}" if event.action else event.name,
        "repo": (payload.get("repository") or {}).get("full_name"),
        "issue": issue,
        "actor": (payload.get("sender") or {}).get("login"),
    }


def set_fields(fields: dict[str, Any] | None) -> None:
    FIELDS.set({k: v for k, v in (fields or {}).items() if v is not None} or None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(FIELDS.get() or {})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)
