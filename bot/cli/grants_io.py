"""`beekeeper grants import FILE` and `beekeeper grants export [FILE]` (bot.ops.grants_io).

    beekeeper grants import grants.csv --dry-run     # what would change; nothing is written
    beekeeper grants import grants.jsonl [--strict]  # apply the good rows (--strict: all or none)
    beekeeper grants export [FILE] [--format csv|jsonl] [--status active|revoked|all]

Import prints one line per row ("line 7: created demo-app: …", "line 9: refused …: reason") —
or, on a terminal, a progress bar and then the refused rows — and a summary. It exits with
status 1 when a row was refused. Logins are resolved to numeric ids through the GitHub API with
the app's installation token (the first served repository's installation, or --installation).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bot.cli import pass_state
from bot.core.db import session_scope


def _users(runtime, installation_id: int | None):
    """A login/id lookup through the app's installation (built on first use only)."""
    from bot.ops import grants_io

    class Lazy:
        def __init__(self):
            self._inner = None

        def _get(self):
            if self._inner is None:
                github = runtime.github
                chosen = installation_id
                if chosen is None:
                    repos = runtime.policy.repositories
                    if repos:
                        chosen = int(github.repo_installation(repos[0])["id"])
                    else:
                        installations = github.list_installations()
                        if not installations:
                            raise click.ClickException("the GitHub App has no installation to look users up with; "
                                                       "give owner_id and owner_login in the file")
                        chosen = int(installations[0]["id"])
                self._inner = grants_io.GitHubUsers(github.for_installation(chosen))
            return self._inner

        def by_login(self, login):
            return self._get().by_login(login)

        def by_id(self, user_id):
            return self._get().by_id(user_id)

    return Lazy()


def register(main: click.Group) -> None:
    grants_group = main.commands["grants"]  # defined by bot.cli.requests (listed before this module)

    @grants_group.command("import")
    @click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
    @click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
                  help="Default: from the extension (.csv, .jsonl/.ndjson/.json), else from the content.")
    @click.option("--dry-run", is_flag=True, help="Check every row and print what would change; write nothing.")
    @click.option("--strict", is_flag=True, help="Apply nothing when any row is refused.")
    @click.option("--installation", type=int, default=None, help="GitHub App installation id for user look-ups.")
    @click.option("--as", "as_login", default=None, help="GitHub login recorded as the actor.")
    @click.option("--progress/--no-progress", default=None,
                  help="A progress bar and only the refused rows (default: when the output is a terminal), "
                       "or a line per row.")
    @pass_state
    def grants_import(state, file: str, fmt: str | None, dry_run: bool, strict: bool, installation: int | None,
                      as_login: str | None, progress: bool | None) -> None:
        """Import grants from FILE (CSV or JSON lines: app_id, owner_login and/or owner_id, tier,
        domains, referrers, created, note). Idempotent: the same file again changes nothing."""
        from bot.cli.requests import actor_and_source
        from bot.ops import grants_io

        if file == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(file).read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise click.ClickException(f"cannot read {file}: {exc}") from None
        fmt = fmt or grants_io.detect_format(file, text)
        try:
            rows = grants_io.read_rows(text, fmt)
        except grants_io.FormatError as exc:
            raise click.ClickException(f"{file}: {exc}") from None
        runtime = state.runtime
        actor, source = actor_and_source(as_login)
        source = f"{source} import {Path(file).name if file != '-' else 'stdin'}"[:300]
        interactive = sys.stdout.isatty() if progress is None else progress
        with session_scope(runtime.engine) as session:
            if interactive and rows:
                with click.progressbar(length=len(rows), label=f"Importing {len(rows)} rows",
                                       file=sys.stdout) as bar:
                    outcomes = grants_io.import_rows(session, runtime.policy, rows, actor=actor, source=source,
                                                     users=_users(runtime, installation), strict=strict,
                                                     on_row=lambda _outcome: bar.update(1))
                for line in grants_io.iter_outcome_lines(outcomes, only_refused=not dry_run):
                    click.echo(line)
            else:
                outcomes = grants_io.import_rows(session, runtime.policy, rows, actor=actor, source=source,
                                                 users=_users(runtime, installation), strict=strict,
                                                 on_row=lambda outcome: click.echo(outcome.text()))
            refused = any(o.action == grants_io.REFUSED for o in outcomes)
            if dry_run:
                session.rollback()
        if not dry_run and any(o.action == grants_io.CREATED for o in outcomes):
            from bot.core.db import refresh_statistics

            refresh_statistics(runtime.engine)  # a bulk load: the planner's statistics follow it
        click.echo(grants_io.summary(outcomes))
        if dry_run:
            click.echo("dry run: nothing was written")
        elif strict and refused:
            click.echo("--strict: a row was refused, so nothing was written")
        elif refused:
            click.echo("the rows not refused were written; fix the refused ones and run the import again")
        if refused:
            sys.exit(1)

    @grants_group.command("export")
    @click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
    @click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
                  help="Default: from FILE's extension, else csv.")
    @click.option("--status", type=click.Choice(["active", "revoked", "all"]), default="active", show_default=True)
    @pass_state
    def grants_export(state, file: str | None, fmt: str | None, status: str) -> None:
        """Write the grants in the import format (to FILE, or standard output)."""
        from bot.ops import grants_io

        fmt = fmt or (grants_io.detect_format(file, "") if file and file != "-" else "csv")
        with session_scope(state.runtime.engine) as session:
            rows = grants_io.export_rows(session, status=status)
        if not file or file == "-":
            grants_io.write_rows(rows, fmt, sys.stdout)
            return
        with open(file, "w", encoding="utf-8", newline="") as out:
            count = grants_io.write_rows(rows, fmt, out)
        click.echo(f"{count} grants written to {file}", err=True)
