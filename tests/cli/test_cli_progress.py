"""Progress of long commands: a bar on a terminal, plain lines otherwise, never on stdout."""

from __future__ import annotations

import io

from bot.cli.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    with Progress("reconcile", stream=stream) as bar:
        bar.step("acme/access", 1, 2)
        bar.step("acme/other", 2, 2)
    assert stream.getvalue().splitlines() == ["reconcile: 1/2 acme/access", "reconcile: 2/2 acme/other"]


def test_plain_lines_count_steps_without_a_total():
    stream = io.StringIO()
    with Progress("db copy", stream=stream) as bar:
        bar.step("grant: 3 rows")
        bar.step("audit_event: 9 rows")
    assert stream.getvalue().splitlines() == ["db copy: 1 grant: 3 rows", "db copy: 2 audit_event: 9 rows"]


def test_a_bar_on_a_terminal():
    stream = _Terminal()
    with Progress("db copy", total=4, stream=stream) as bar:
        for n in range(4):
            bar.step(f"table{n}")
    text = stream.getvalue()
    assert "db copy" in text and "4/4" in text and "[####################################]" in text
    assert "db copy: 1/4" not in text  # not the plain-line form
