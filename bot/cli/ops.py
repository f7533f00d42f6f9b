"""Operating commands: doctor, reconcile, db copy."""

from __future__ import annotations

import json
import sys

import click

from bot.cli import pass_state
from bot.intake.runtime import configure_logging


def _runtime_or_report(state, as_json: bool):
    """The Runtime, or None after reporting the configuration error as a doctor finding."""
    try:
        return state.runtime
    except click.ClickException as exc:
        from bot.ops.doctor import FAIL, Report

        report = Report()
        report.add("settings", FAIL, exc.message,
                   "Correct the named setting in .env or the environment (or the named key in the policy file), "
                   "then run `beekeeper doctor` again.")
        _print_report(report, as_json)
        return None


def _print_report(report, as_json: bool) -> None:
    from bot.ops.doctor import render_text

    if as_json:
        click.echo(json.dumps({"ok": report.ok, "findings": [f.as_dict() for f in report.findings]}, indent=2))
    else:
        for line in render_text(report):
            click.echo(line)


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--repo", "repos", multiple=True, metavar="OWNER/NAME",
                  help="Check only this repository (repeatable). Default: the policy's, or every installed one.")
    @click.option("--fix-labels", is_flag=True, help="Create the labels Beekeeper uses where they are missing.")
    @click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
    @pass_state
    def doctor(state, repos: tuple[str, ...], fix_labels: bool, as_json: bool) -> None:
        """Check settings, app key, installation, webhook, form, labels, database and deliveries."""
        from bot.ops import doctor as doctor_module

        runtime = _runtime_or_report(state, as_json)
        if runtime is None:
            sys.exit(1)
        report = doctor_module.run(runtime, repos=list(repos) or None, fix_labels=fix_labels)
        _print_report(report, as_json)
        if not report.ok:
            sys.exit(1)

    @main.command()
    @click.option("--repo", "repos", multiple=True, metavar="OWNER/NAME",
                  help="Reconcile only this repository (repeatable). Default: the policy's, or every installed one.")
    @click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
    @pass_state
    def reconcile(state, repos: tuple[str, ...], dry_run: bool) -> None:
        """Bring every open request issue to where it should be (safe to run at any time)."""
        from bot.ops.reconcile import reconcile as run_reconcile

        runtime = state.runtime
        configure_logging(runtime.settings)
        from bot.cli.progress import Progress

        with Progress("reconcile") as bar:
            report = run_reconcile(runtime, repos=list(repos) or None, dry_run=dry_run,
                                   progress=lambda repo, done, total: bar.step(repo, done, total))
        click.echo(json.dumps(report.as_dict()))
        if report.errors:
            sys.exit(1)

    db_group = main.commands["db"]

    @db_group.command("copy")
    @click.option("--to", "target_url", required=True, metavar="URL",
                  help="The target database, e.g. postgresql://user:password@host/beekeeper (must be empty).")
    @click.option("--batch", default=1000, show_default=True, type=int, help="Rows per insert.")
    @pass_state
    def db_copy(state, target_url: str, batch: int) -> None:
        """Copy every table to an empty database, then verify row counts and checksums."""
        from bot.cli.progress import Progress
        from bot.ops.dbcopy import CopyError, copy_database, tables

        runtime = state.runtime
        try:
            with Progress("db copy", total=len(list(tables()))) as bar:
                result = copy_database(runtime.engine, target_url, batch=batch, progress=bar.step)
        except CopyError as exc:
            raise click.ClickException(str(exc)) from None
        for table in result.tables:
            click.echo(f"{table.name:<20} {table.rows:>9} rows  sha256 {table.checksum[:16]}…  ok")
        click.echo(f"copied {result.total_rows} rows in {len(result.tables)} tables to {result.target}; "
                   f"point BEEKEEPER_DATABASE_URL at it and restart every process")
