"""The `beekeeper` command. Each area adds its commands in a module of this package, listed in
COMMAND_MODULES; every module exposes `register(main)`."""

from __future__ import annotations

import importlib
import logging
import sys

import click

from bot.core.config import ConfigError

COMMAND_MODULES = [
    "bot.cli.core",
    "bot.cli.ops",  # after core: adds `db copy` to core's `db` group
    "bot.cli.requests",
    "bot.cli.grants_io",  # after requests: adds `grants import/export` to its `grants` group
    "bot.cli.keys",
    "bot.cli.allowlist",  # gateways, signing-keys, allowlist export
    "bot.cli.policy",  # policy check (forms dry run)
]


class State:
    """The Runtime, built on first use so `--help` works without any configuration."""

    def __init__(self) -> None:
        self._runtime = None

    @property
    def runtime(self):
        if self._runtime is None:
            from bot.intake.runtime import Runtime

            try:
                self._runtime = Runtime.from_env()
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        return self._runtime


pass_state = click.make_pass_decorator(State, ensure=True)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="beekeeper")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Beekeeper: special-access requests on GitHub, from issue form to gateway allowlist."""
    ctx.ensure_object(State)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(main)
