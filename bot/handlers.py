"""The modules whose import registers handlers on bot.router.router.

The worker imports these before it drains the inbox. A module is added here when it defines
`@router.on(...)` handlers; services never import this module.
"""

from __future__ import annotations

import importlib

HANDLER_MODULES = [
    "bot.leaks",  # first: it commits its key revocations before anything else runs (see its docstring)
    "bot.installations",
    "bot.issue_events",
    "bot.application_events",  # after issue_events: auto-approval reads what the review stored
    "bot.key_commands",  # registers /rotate in bot.commands
]


def load_handlers() -> None:
    for name in HANDLER_MODULES:
        importlib.import_module(name)
