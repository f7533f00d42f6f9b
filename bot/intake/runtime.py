"""The running bot's shared parts: settings, policy, database engine, GitHub app.

One Runtime per process, built from the environment by `Runtime.from_env()` (or handed
explicit parts by tests). The Flask app keeps it in `app.extensions["beekeeper"]`; the worker
and the CLI use it directly, so no service needs a Flask request context.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bot.core.config import Policy, Settings, load_policy, load_settings
from bot.core.db import get_engine
from bot.core.logs import FIELDS, JsonFormatter
from bot.github.client import GitHubApp
from bot.intake.router import Context, Event


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


# --------------------------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------------------------

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _TextFormatter(logging.Formatter):
    """The text format, with the worker's context fields (delivery, repo, issue...) appended."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = FIELDS.get()
        if fields and "delivery=" not in record.getMessage():
            line += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return line


class RedactSecrets(logging.Filter):
    """Last line of defence: nothing we log should hold a secret, but if a message ever does
    (a token in an exception text, say), it is replaced before it reaches the log."""

    # GitHub tokens, JWTs, and our own keys (beekeeper_gateway.keyformat: prefix_sk|pk|gw_ + 36 base62 chars).
    TOKEN = re.compile(r"\b(?:gh[opsu]_[A-Za-z0-9]{16,}|github_pat_\w{20,}|eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]+"
                       r"|[a-z][a-z0-9]{1,9}_(?:sk|pk|gw)_[0-9A-Za-z]{36})\b")

    def __init__(self, secrets: Iterable[str | SecretStr | None] = ()):
        super().__init__()
        plain = (s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets)
        self.secrets = [s for s in plain if s and len(s) >= 6]

    def redact(self, text: str) -> str:
        redacted = self.TOKEN.sub("[redacted]", text)
        for secret in self.secrets:
            redacted = redacted.replace(secret, "[redacted]")
        return redacted

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        # The traceback too (an exception's text can hold a token): formatted once here, redacted,
        # and left in exc_text, which every formatter prints instead of formatting it again.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def configure_logging(settings: Settings | None = None, level: str | None = None) -> None:
    """One line per record on stderr, Beekeeper's loggers at BEEKEEPER_LOG_LEVEL.

    Leaves an already configured root logger alone (tests, an embedding application, a
    gunicorn --log-config), so `bot:create_app()` and the CLI get the same format without
    fighting anyone. Other libraries stay at WARNING.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    level = (level or (settings.log_level if settings else "INFO")).upper()
    logging.getLogger("beekeeper").setLevel(getattr(logging, level, logging.INFO))
    handler = logging.StreamHandler(sys.stderr)
    json_lines = settings is not None and getattr(settings, "log_format", "text") == "json"
    handler.setFormatter(JsonFormatter() if json_lines else _TextFormatter(LOG_FORMAT))
    if settings is not None:
        handler.addFilter(RedactSecrets([settings.webhook_secret, settings.github_client_secret,
                                         settings.secret_key]))
    else:
        handler.addFilter(RedactSecrets())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
