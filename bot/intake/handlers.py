"""The modules whose import registers handlers on bot.intake.router.router.

The worker imports these before it drains the inbox. A module is added here when it defines
`@router.on(...)` handlers; services never import this module.
"""

from __future__ import annotations

import importlib

HANDLER_MODULES = [
    "bot.requests.leaks",  # first: it commits its key revocations before anything else runs (see its docstring)
    "bot.intake.installations",
    "bot.requests.issue_events",
    "bot.requests.application_events",  # after issue_events: auto-approval reads what the review stored
    "bot.requests.key_commands",  # registers /rotate in bot.requests.commands
]


def load_handlers() -> None:
    for name in HANDLER_MODULES:
        importlib.import_module(name)
