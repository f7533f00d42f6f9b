"""Progress of long commands (redeliver, reconcile, db copy): click's progress bar on a terminal,
plain lines ("reconcile: 2/5 acme/access") when stderr is not one (cron, CI, a pipe). Always on
stderr, so stdout keeps the command's result (JSON) for scripts."""

from __future__ import annotations

import sys
from typing import IO

import click


class Progress:
    def __init__(self, label: str, total: int | None = None, *, stream: IO[str] | None = None):
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None

    def __enter__(self) -> Progress:
        if self.tty and self.total:
            self._bar = click.progressbar(length=self.total, label=self.label, file=self.stream,
                                          show_pos=True, item_show_func=lambda item: item)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def step(self, item: str = "", done: int | None = None, total: int | None = None) -> None:
        """One more item finished (or `done` of `total`)."""
        if total is not None:
            self.total = total
        advance = 1 if done is None else max(0, done - self.done)
        self.done += advance
        if self._bar is not None:
            self._bar.current_item = item
            self._bar.update(advance)
            return
        of = f"/{self.total}" if self.total else ""
        click.echo(f"{self.label}: {self.done}{of} {item}".rstrip(), file=self.stream)
