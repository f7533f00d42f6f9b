"""The modules whose import registers handlers on bot.router.router.

The worker imports these before it drains the inbox. A module is added here when it defines
`@router.on(...)` handlers; services never import this module.
"""

from __future__ import annotations

import importlib

HANDLER_MODULES = [
    "bot.installations",
]


def load_handlers() -> None:
    for name in HANDLER_MODULES:
        importlib.import_module(name)
