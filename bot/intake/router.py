"""Event routing in the spirit of python/bedevere: modules register handlers with a decorator.

    @router.on("issues", "opened", "edited")
    def review_issue(event, ctx): ...

A handler receives the Event (what GitHub sent) and a Context (database session, GitHub client
for the installation, policy, settings). Several handlers may share an event; they run in the
order they were registered. Handler modules are listed in bot.intake.handlers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlmodel import Session

    from bot.core.config import Policy, Settings
    from bot.github.client import GitHubApp, InstallationClient


@dataclass
class Event:
    name: str  # X-GitHub-Event
    action: str | None
    payload: dict[str, Any]
    delivery_id: str
    hook_id: int = 0
    installation_id: int | None = None

    @classmethod
    def from_delivery(cls, delivery) -> Event:
        return cls(
            name=delivery.event,
            action=delivery.action,
            payload=json.loads(delivery.payload),
            delivery_id=delivery.delivery_id,
            hook_id=delivery.hook_id,
            installation_id=delivery.installation_id,
        )

    @property
    def sender(self) -> dict[str, Any]:
        return self.payload.get("sender") or {}

    @property
    def repo(self) -> str | None:
        return (self.payload.get("repository") or {}).get("full_name")


@dataclass
class Context:
    """What a handler may use. `github` is created on first use (no API call for skipped events)."""

    session: Session
    settings: Settings
    policy: Policy
    app: GitHubApp
    installation_id: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def github(self) -> InstallationClient:
        if self.installation_id is None:
            raise LookupError("this event carries no installation id; cannot act on GitHub for it")
        return self.app.for_installation(self.installation_id)


Handler = Callable[[Event, Context], None]


class Router:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str | None], list[Handler]] = defaultdict(list)

    def on(self, event: str, *actions: str) -> Callable[[Handler], Handler]:
        """Register for `event` with any of `actions` (none: every action of the event)."""

        def register(func: Handler) -> Handler:
            for action in actions or (None,):
                if func not in self._handlers[(event, action)]:
                    self._handlers[(event, action)].append(func)
            return func

        return register

    def handlers_for(self, event: str, action: str | None) -> list[Handler]:
        specific = self._handlers.get((event, action), []) if action else []
        generic = self._handlers.get((event, None), [])
        return [*specific, *[h for h in generic if h not in specific]]

    def dispatch(self, event: Event, ctx: Context) -> int:
        """Run every matching handler; returns how many ran. Exceptions propagate (the inbox retries)."""
        handlers = self.handlers_for(event.name, event.action)
        for handler in handlers:
            handler(event, ctx)
        return len(handlers)


router = Router()
