"""Beekeeper: a GitHub App that runs an API platform's special-access process end to end."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Flask is imported by create_app only: `import bot` (the CLI, the worker) stays light
    from flask import Flask

__all__ = ["create_app"]


def create_app(runtime=None, env: dict[str, str] | None = None) -> Flask:
    """The Flask app. gunicorn serves `bot:create_app()`; tests pass their own Runtime."""
    from flask import Flask

    from bot.core.config import ConfigError
    from bot.core.resources import templates_path
    from bot.intake.runtime import Runtime

    if runtime is None:
        try:
            runtime = Runtime.from_env(env)
        except ConfigError as exc:
            logging.getLogger("beekeeper").error("configuration error: %s", exc)
            raise
        from bot.intake.runtime import configure_logging

        configure_logging(runtime.settings)  # gunicorn `bot:create_app()`: one line per event
    # static_folder=None: pages_static (bot.web.shared) serves templates/static at /static; the default
    # app static route would shadow it with bot/static, which does not exist.
    app = Flask(__name__, template_folder=str(templates_path()), static_folder=None, instance_path=None)
    app.config.update(
        SECRET_KEY=runtime.settings.secret_key.get_secret_value(),
        MAX_CONTENT_LENGTH=runtime.settings.max_webhook_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=runtime.settings.public_url.startswith("https://"),
        BEEKEEPER_SETTINGS=runtime.settings,
        BEEKEEPER_POLICY=runtime.policy,
        BEEKEEPER_GITHUB_URL=runtime.settings.github_url,
    )
    app.extensions["beekeeper"] = runtime

    from bot.intake import webhooks
    from bot.web import health
    from bot.web import shared as web

    web.install_sessions(app, runtime)  # BEEKEEPER_SECRET_KEY, else one key shared through the database

    app.register_blueprint(health.bp)
    from bot.allowlist.serving import AllowlistFastPath

    # Gateway polls answerable from the cache (304s, built documents) skip Flask (see bot.allowlist.serving);
    # inside the webhook intake, which stays the outermost layer.
    app.wsgi_app = AllowlistFastPath(app.wsgi_app, app)
    # POST /webhook is answered before Flask's request handling (see bot.intake.webhooks).
    app.wsgi_app = webhooks.WebhookIntake(app.wsgi_app, runtime)
    app.register_blueprint(web.bp)
    from bot.web import setup

    app.register_blueprint(setup.bp)  # first-run app registration; 404 once credentials exist
    from bot.web import dashboard, portal

    app.register_blueprint(portal.bp)  # /me: the developer portal (the home page redirects here)
    app.register_blueprint(dashboard.bp)  # /admin: the maintainer dashboard
    from bot.allowlist import serving as allowlist

    app.register_blueprint(allowlist.bp)  # /v1/allowlist, /.well-known/jwks.json, /openapi.json
    from bot.web import auth, claim

    app.register_blueprint(auth.bp)  # /auth: sign in with GitHub (the App's user-to-server OAuth flow)
    app.register_blueprint(claim.bp)  # /claim/<app id>: the owner receives the key, once
    _register_metrics_collector(runtime)
    return app


def _register_metrics_collector(runtime) -> None:
    from bot.core.metrics import REGISTRY, InboxCollector

    collector = InboxCollector(runtime.engine)
    # One collector per process: a second app (tests) replaces the first.
    previous = getattr(REGISTRY, "_beekeeper_inbox", None)
    if previous is not None:
        REGISTRY.unregister(previous)
    REGISTRY.register(collector)
    REGISTRY._beekeeper_inbox = collector
