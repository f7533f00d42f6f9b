"""Core commands: serve, worker, db, deliveries, redeliver."""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import timedelta

import click
from sqlmodel import Session, select

from bot.cli import pass_state
from bot.core.clock import utcnow
from bot.core.config import plain_secret
from bot.core.db import is_sqlite, reader
from bot.core.models import Delivery, DeliveryStatus
from bot.intake import inbox
from bot.intake.runtime import configure_logging
from bot.ops import migrate

log = logging.getLogger("beekeeper")


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `24h`, `7d` → timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text or "")
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30m, 24h or 7d")
    value, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: value})


def _startup_banner(runtime) -> None:
    settings = runtime.settings
    missing = settings.missing_github_settings()
    if missing:
        click.echo(
            "Beekeeper is running without a GitHub App. It answers /healthz but cannot act on issues.\n"
            f"Set: {', '.join(missing)}\n"
            "Register the app from app.yml (see README: 'Register the GitHub App') and put the values in .env.",
            err=True,
        )
    if settings.secret_key_generated:
        click.echo("BEEKEEPER_SECRET_KEY is not set: sessions are signed with a key generated once and kept in "
                   "the database.", err=True)


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8000, show_default=True, type=int)
    @click.option("--threads", default=8, show_default=True, type=int)
    @click.option("--no-worker", is_flag=True, help="Do not run the in-process worker.")
    @pass_state
    def serve(state, host: str, port: int, threads: int, no_worker: bool) -> None:
        """Run the web app and an in-process worker (the embedded single-command bot)."""
        from gunicorn.app.base import BaseApplication

        from bot import create_app
        from bot.intake.worker import Worker

        runtime = state.runtime
        configure_logging(runtime.settings)
        if is_sqlite(runtime.settings.database_url) or migrate.current_revision(runtime.engine) is None:
            migrate.upgrade(runtime.engine)
        elif migrate.pending(runtime.engine):
            raise click.ClickException("the database needs migrating: run `beekeeper db upgrade` first")
        _startup_banner(runtime)
        from bot.web import setup

        if not setup.credentials_configured(runtime.settings):
            click.echo(setup.announce(runtime.settings, host, port), err=True)  # before fork: one token

        class EmbeddedServer(BaseApplication):
            """gunicorn with one threaded worker process that also runs the inbox worker."""

            def load_config(self):
                self.cfg.set("bind", f"{host}:{port}")
                self.cfg.set("workers", 1)
                self.cfg.set("worker_class", "gthread")
                self.cfg.set("threads", threads)
                # The production layout's values (docs/operations.md): a worker whose main loop
                # hangs 30 s is replaced (above the intake's 10 s body deadline); idle kept-alive
                # connections wait in the poller, not a thread, and are closed after 5 s.
                self.cfg.set("timeout", 30)
                self.cfg.set("keepalive", 5)
                self.cfg.set("accesslog", None)
                self.cfg.set("post_fork", self.post_fork)
                self.cfg.set("post_worker_init", self.post_worker_init)
                self.cfg.set("worker_exit", self.worker_exit)
                self.cfg.set("child_exit", metrics.child_exit)  # PROMETHEUS_MULTIPROC_DIR, when set

            def load(self):
                return create_app(runtime)

            @staticmethod
            def post_fork(_server, _worker):
                # Pooled connections opened before the fork (migrations) belong to the parent.
                runtime.engine.dispose(close=False)

            @staticmethod
            def post_worker_init(_worker):
                if no_worker:
                    return
                runtime.wake = threading.Event()
                from bot.ops.reconcile import schedule

                schedule(runtime)  # periodic reconcile, every policy.reconcile_interval_minutes
                from bot.core.db import schedule_statistics

                schedule_statistics(runtime)  # planner statistics, hourly (issue 18)
                embedded = Worker(runtime)
                EmbeddedServer.embedded = (embedded, embedded.start_thread())

            @staticmethod
            def worker_exit(_server, _worker):
                # Graceful stop: finish the delivery in hand, release the rest of the batch.
                running = getattr(EmbeddedServer, "embedded", None)
                if running is not None:
                    inbox_worker, thread = running
                    inbox_worker.stop()
                    thread.join(timeout=25)

        from bot.core import metrics

        metrics.prepare_multiprocess_dir()  # before the fork: counters of an earlier run are dropped
        click.echo(f"Beekeeper listening on http://{host}:{port}", err=True)
        EmbeddedServer().run()

    @main.command()
    @click.option("--once", is_flag=True, help="Drain the inbox once and exit.")
    @click.option("--batch", default=10, show_default=True, type=int)
    @click.option("--concurrency", type=click.IntRange(1, 64), default=None,
                  help="Deliveries processed at once (those of one issue still in order). Default: "
                       "BEEKEEPER_WORKER_CONCURRENCY, else 8 on PostgreSQL and 1 on SQLite.")
    @click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                  help="Serve this worker's Prometheus metrics on http://HOST:PORT/metrics (0: any free port).")
    @click.option("--metrics-host", default="127.0.0.1", show_default=True,
                  help="Address for --metrics-port (0.0.0.0 for a scraper on another machine: set "
                       "BEEKEEPER_METRICS_TOKEN then).")
    @pass_state
    def worker(state, once: bool, batch: int, concurrency: int | None, metrics_port: int | None,
               metrics_host: str) -> None:
        """Process stored deliveries (run several against PostgreSQL to scale out).

        SIGTERM or SIGINT: the delivery in hand is finished, the rest of the batch released at
        once for the other workers, then the process exits.
        """
        import signal

        from bot.core import metrics
        from bot.intake.worker import Worker

        runtime = state.runtime
        configure_logging(runtime.settings)
        if migrate.pending(runtime.engine):
            raise click.ClickException("the database needs migrating: run `beekeeper db upgrade` first")
        if metrics_port is not None and metrics.multiprocess_dir():
            raise click.ClickException(
                f"{metrics.MULTIPROC_ENV} is set: that directory is the gunicorn web processes' (their /metrics "
                "sums it); unset it for `beekeeper worker`, whose --metrics-port serves its own counters")
        w = Worker(runtime, batch=batch, concurrency=concurrency)
        if once:
            click.echo(f"processed {w.run_once()} deliveries")
            return
        if metrics_port is not None:
            token = plain_secret(runtime.settings.metrics_token)
            server = metrics.serve_worker_metrics(metrics_host, metrics_port, token)
            click.echo(f"worker metrics on http://{metrics_host}:{server.server_port}/metrics", err=True)
        from bot.ops.reconcile import schedule

        schedule(runtime)  # periodic reconcile, every policy.reconcile_interval_minutes
        from bot.core.db import schedule_statistics

        schedule_statistics(runtime)  # planner statistics, hourly (issue 18)
        signal.signal(signal.SIGTERM, lambda *_: w.stop())
        signal.signal(signal.SIGINT, lambda *_: w.stop())
        w.run_forever()

    @main.group()
    def db() -> None:
        """Database schema."""

    @db.command("upgrade")
    @click.option("--revision", default="head", show_default=True)
    @pass_state
    def db_upgrade(state, revision: str) -> None:
        """Create or upgrade the schema (SQLite and PostgreSQL)."""
        engine = state.runtime.engine
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        click.echo(f"database at revision {migrate.current_revision(engine)} (was {before or 'empty'})")

    @db.command("current")
    @pass_state
    def db_current(state) -> None:
        """Show the schema revision and whether migrations are pending."""
        engine = state.runtime.engine
        current, head = migrate.current_revision(engine), migrate.head_revision()
        click.echo(f"current: {current or 'empty'}  head: {head}  {'up to date' if current == head else 'PENDING'}")

    @db.command("revision")
    @click.option("-m", "--message", required=True, help="What the migration changes (becomes the file name).")
    @click.option("--empty", is_flag=True, help="An empty migration instead of comparing models and database.")
    @pass_state
    def db_revision(state, message: str, empty: bool) -> None:
        """Write a new migration: the models compared with the database (alembic --autogenerate)."""
        engine = state.runtime.engine
        if not empty and migrate.pending(engine):
            raise click.ClickException("the database is not at head: run `beekeeper db upgrade` first")
        path = migrate.revision(engine, message, autogenerate=not empty)
        click.echo(f"wrote {path}; review it, then `beekeeper db upgrade`")

    @main.group()
    def deliveries() -> None:
        """Inspect and retry webhook deliveries."""

    @deliveries.command("list")
    @click.option("--status", type=click.Choice(["failed", "dead", *DeliveryStatus.ALL]), default=None,
                  help="failed = waiting for a retry")
    @click.option("--limit", default=50, show_default=True, type=int)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    @pass_state
    def deliveries_list(state, status: str | None, limit: int, as_json: bool = False) -> None:
        """List deliveries, newest first."""
        query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
        if status:
            query = query.where(Delivery.status == (DeliveryStatus.RETRY if status == "failed" else status))
        with Session(reader(state.runtime.engine)) as session:
            rows = session.exec(query).all()
        if as_json:
            for row in rows:
                click.echo(json.dumps({
                    "id": row.id, "delivery_id": row.delivery_id, "event": row.event, "action": row.action,
                    "status": row.status, "attempts": row.attempts, "received_at": row.received_at.isoformat(),
                    "installation_id": row.installation_id, "last_error": row.last_error}))
            return
        if not rows:
            click.echo("no deliveries")
            return
        for row in rows:
            error = f"  {row.last_error[:80]}" if row.last_error else ""
            click.echo(f"{row.id:>6}  {row.received_at:%Y-%m-%d %H:%M:%S}  {row.status:<10} {row.attempts:>2}x  "
                       f"{row.event}.{row.action or '-'}  {row.delivery_id}{error}")

    @deliveries.command("retry")
    @click.argument("delivery_pk", type=int, metavar="ID")
    @pass_state
    def deliveries_retry(state, delivery_pk: int) -> None:
        """Queue delivery ID (the number `deliveries list` shows) to be processed again."""
        with Session(state.runtime.engine) as session:
            try:
                row = inbox.retry_now(session, delivery_pk)
            except inbox.DeliveryBusy as exc:
                raise click.ClickException(str(exc)) from None
            if row is None:
                raise click.ClickException(f"no delivery with id {delivery_pk}")
            session.commit()
        click.echo(f"delivery {delivery_pk} queued")

    @main.command()
    @click.option("--since", "since_text", default="24h", show_default=True, help="How far back to look.")
    @click.option("--dry-run", is_flag=True, help="List what would be redelivered, ask nothing.")
    @pass_state
    def redeliver(state, since_text: str, dry_run: bool) -> None:
        """Ask GitHub to redeliver failed deliveries that never reached the inbox (cron-safe)."""
        from bot.core.errors import RetryLater
        from bot.github.client import GitHubError
        from bot.intake.redelivery import redeliver_missed

        since = utcnow() - parse_duration(since_text)
        runtime = state.runtime
        configure_logging(runtime.settings)
        if not runtime.github.configured:
            raise click.ClickException("redeliver needs the app's credentials: set BEEKEEPER_GITHUB_APP_ID and "
                                       "BEEKEEPER_GITHUB_PRIVATE_KEY (or BEEKEEPER_GITHUB_PRIVATE_KEY_PATH)")
        from bot.cli.progress import Progress

        try:
            with Progress("redeliver") as bar:
                report = redeliver_missed(runtime, since, dry_run=dry_run,
                                          progress=lambda guid, done, total: bar.step(guid, done, total))
        except (GitHubError, RetryLater) as exc:
            raise click.ClickException(f"cannot list the app's hook deliveries: {exc}") from None
        click.echo(json.dumps(report.as_dict()))
        if report.errors:
            raise SystemExit(1)
