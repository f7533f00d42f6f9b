"""Jinja filters shared by the portal and dashboard pages: times, key status, audit details.

Times are shown in UTC with the zone written out, so maintainers in different places read the
same thing; naive values from the database are UTC (bot.core.clock).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bot.access.keys import key_state
from bot.core.clock import utcnow
from bot.web.queue import age_text


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return _aware(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(value: datetime | None) -> str:
    return age_text(value, utcnow()) if value is not None else "—"


def details_text(details: dict | None, limit: int = 300) -> str:
    """An audit row's details as one short line (Jinja escapes it when printed)."""
    if not details:
        return "—"
    parts = []
    for key, value in details.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        parts.append(f"{key}: {text}")
    line = "; ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"


FILTERS = {"when": when, "ago": ago, "key_status": key_state, "details_text": details_text}


def register(blueprint) -> None:
    for name, func in FILTERS.items():
        blueprint.add_app_template_filter(func, name)
