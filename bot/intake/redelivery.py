"""Recover deliveries GitHub failed to hand us (GitHub never retries by itself).

Lists the app's hook deliveries since a time, keeps the GUIDs that never got a 2xx and are not in
the inbox, and asks GitHub to redeliver each once. Safe to run from cron at any frequency: a GUID
that was already redelivered successfully, or is stored, is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, select

from bot.core.db import reader
from bot.core.errors import RetryLater
from bot.core.models import Delivery
from bot.github.client import GitHubError

log = logging.getLogger("beekeeper.redelivery")


@dataclass
class RedeliveryReport:
    seen: int = 0
    failed: int = 0
    already_stored: int = 0
    redelivered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "seen": self.seen,
            "failed": self.failed,
            "already_stored": self.already_stored,
            "redelivered": len(self.redelivered),
            "guids": self.redelivered,
            "errors": self.errors,
        }


def _succeeded(item: dict) -> bool:
    return 200 <= int(item.get("status_code") or 0) < 300


def _stored_guids(engine, guids: list[str], chunk: int = 500) -> set[str]:
    """The GUIDs already in the inbox (any hook: the list API does not say which hook it is)."""
    stored: set[str] = set()
    with Session(reader(engine)) as session:
        for start in range(0, len(guids), chunk):
            part = guids[start:start + chunk]
            stored |= set(session.exec(select(Delivery.delivery_id).where(Delivery.delivery_id.in_(part))).all())
    return stored


def redeliver_missed(runtime, since: datetime, *, dry_run: bool = False,
                     progress: Callable[[str, int, int], None] | None = None) -> RedeliveryReport:
    """Ask GitHub to redeliver each failed delivery since `since` that never reached the inbox.

    Deliveries are grouped by GUID: a GUID with any 2xx attempt (an earlier redelivery that
    worked) is done. Of the rest, the latest attempt is redelivered, once per run.
    """
    report = RedeliveryReport()
    attempts_by_guid: dict[str, list[dict]] = {}
    for item in runtime.github.hook_deliveries(since):
        report.seen += 1
        attempts_by_guid.setdefault(item["guid"], []).append(item)

    failed = {guid: items for guid, items in attempts_by_guid.items() if not any(_succeeded(i) for i in items)}
    report.failed = len(failed)
    if not failed:
        return report
    stored = _stored_guids(runtime.engine, list(failed))
    report.already_stored = len(stored)
    for done, (guid, items) in enumerate(failed.items(), start=1):
        if progress is not None:
            progress(guid, done, len(failed))
        if guid in stored:
            continue
        latest = max(items, key=lambda i: i["delivered_at"])
        if dry_run:
            report.redelivered.append(guid)
            continue
        try:
            runtime.github.redeliver(latest["id"])
        except RetryLater as exc:
            # Rate limited: stop here; the next run (cron) picks up the rest.
            report.errors.append(f"{guid}: {exc}; try again in {exc.after:.0f} s")
            break
        except GitHubError as exc:
            report.errors.append(f"{guid}: {exc}")
            continue
        log.info("asked GitHub to redeliver %s (%s)", guid, latest.get("event"))
        report.redelivered.append(guid)
    return report
