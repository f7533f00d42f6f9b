"""The words commands and transitions share: outcome statuses and safe @-mentions.

Below both `applications` (the state machine) and `commands` (the slash-commands), so neither
imports the other for them.
"""

from __future__ import annotations

import re

from bot.core.comments import Trusted, escape_user_text

DONE, NOOP, REFUSED = "done", "noop", "refused"

# A GitHub login holds only letters, digits and single hyphens, at most 39 characters.
_SAFE_LOGIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")


def safe_mention(login: str) -> Trusted:
    """@login for a GitHub login (which can only hold letters, digits and '-'), else escaped."""
    if _SAFE_LOGIN.match(login or ""):
        return Trusted(f"@{login}")
    return Trusted(escape_user_text(login, 40))


_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._*:-]{0,252}$")


def code(value: str) -> Trusted:
    """`value` in backticks when it is a plain token (app id, domain, tier), else escaped text."""
    if _SAFE_TOKEN.match(value or ""):
        return Trusted(f"`{value}`")
    return Trusted(escape_user_text(value))


MAX_QUOTED_LINES = 60


def quote_block(text: str | None, max_length: int = 4000) -> Trusted:
    """Maintainer text as a markdown block quote, every line quoted (a blank line would end the
    quote otherwise) and escaped like applicant text."""
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n")[:max_length].split("\n")[:MAX_QUOTED_LINES]
    return Trusted("\n".join(f"> {escape_user_text(line, max_length)}".rstrip() for line in lines) or ">")
