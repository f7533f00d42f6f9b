"""The running bot's shared parts: settings, policy, database engine, GitHub app.

One Runtime per process, built from the environment by `Runtime.from_env()` (or handed
explicit parts by tests). The Flask app keeps it in `app.extensions["beekeeper"]`; the worker
and the CLI use it directly, so no service needs a Flask request context.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.config import Policy, Settings, load_policy, load_settings
from bot.db import get_engine
from bot.github import GitHubApp
from bot.router import Context, Event


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    engine: Engine
    github: GitHubApp
    # Set by `beekeeper serve` so a stored delivery wakes the in-process worker at once.
    wake: threading.Event | None = None
    # Extra periodic jobs for the worker: (interval seconds, function(runtime)).
    periodic: list[tuple[float, Callable[[Runtime], None]]] = field(default_factory=list)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> Runtime:
        settings = overrides.pop("settings", None) or load_settings(env)
        policy = overrides.pop("policy", None) or load_policy(settings.policy_path)
        engine = overrides.pop("engine", None) or get_engine(settings.database_url)
        github = overrides.pop("github", None) or GitHubApp.from_settings(settings)
        return cls(settings=settings, policy=policy, engine=engine, github=github, **overrides)

    def make_context(self, session: Session, event: Event | None = None) -> Context:
        return Context(
            session=session,
            settings=self.settings,
            policy=self.policy,
            app=self.github,
            installation_id=event.installation_id if event else None,
        )

    def notify_worker(self) -> None:
        if self.wake is not None:
            self.wake.set()
