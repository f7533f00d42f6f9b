"""Beekeeper: a GitHub App that runs an API platform's special-access process end to end."""

from __future__ import annotations

import logging

from flask import Flask

from bot.resources import templates_path

__all__ = ["create_app"]


def create_app(runtime=None, env: dict[str, str] | None = None) -> Flask:
    """The Flask app. gunicorn serves `bot:create_app()`; tests pass their own Runtime."""
    from bot.config import ConfigError
    from bot.runtime import Runtime

    if runtime is None:
        try:
            runtime = Runtime.from_env(env)
        except ConfigError as exc:
            logging.getLogger("beekeeper").error("configuration error: %s", exc)
            raise
    app = Flask(__name__, template_folder=str(templates_path()), instance_path=None)
    app.config.update(
        SECRET_KEY=runtime.settings.secret_key,
        MAX_CONTENT_LENGTH=runtime.settings.max_webhook_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=runtime.settings.public_url.startswith("https://"),
        BEEKEEPER_SETTINGS=runtime.settings,
        BEEKEEPER_POLICY=runtime.policy,
        BEEKEEPER_GITHUB_URL=runtime.settings.github_url,
    )
    app.extensions["beekeeper"] = runtime

    from bot import health, web, webhooks

    app.register_blueprint(health.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(web.bp)
    _register_metrics_collector(runtime)
    return app


def _register_metrics_collector(runtime) -> None:
    from bot.metrics import REGISTRY, InboxCollector

    collector = InboxCollector(runtime.engine)
    # One collector per process: a second app (tests) replaces the first.
    previous = getattr(REGISTRY, "_beekeeper_inbox", None)
    if previous is not None:
        REGISTRY.unregister(previous)
    REGISTRY.register(collector)
    REGISTRY._beekeeper_inbox = collector
