"""Comment rendering: Jinja templates in templates/comments/, hidden markers, escaping.

Everything an applicant wrote is hostile until escaped. Templates are rendered with a
`finalize` hook that escapes every value printed with `{{ … }}` unless it is `Trusted` (text
Beekeeper itself produced, such as a rendered list). So a template author cannot forget.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from bot.core.resources import templates_path

MAX_INLINE = 200
STATUS_MARKER = "<!-- beekeeper:status -->"

# Control, format and invisible characters: C0/C1 controls, zero-width and bidi controls, the
# BOM, interlinear annotations and Unicode tag characters (used to smuggle hidden text).
_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]"
)
_LINE_SEPARATORS = re.compile("[\u2028\u2029\x85]")
# Characters with a meaning in GitHub-flavoured markdown get a backslash: `$` (math), `=`
# (setext headings) included. `<`, `>` and `&` become HTML entities instead; a backslash before
# them would print the entity's text.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$=])")


class Trusted(str):
    """Text produced by Beekeeper (not the applicant): printed as is by templates."""


def marker(kind: str, key: str | int | None = None) -> str:
    """A hidden HTML comment that identifies one of our comments, e.g. marker("decision", "approve:7")."""
    return f"<!-- beekeeper:{kind}{':' + str(key) if key is not None else ''} -->"


def escape_user_text(value: object, max_length: int = MAX_INLINE, *, multiline: bool = False) -> str:
    """Make applicant text safe to echo in an issue comment.

    No @mention pings anyone (a word joiner follows the @), no HTML or markdown is interpreted
    (backslash-escaped), no control or bidi characters survive, and the text is cut to
    `max_length` characters with an ellipsis. Single-line unless `multiline`.
    """
    text = str(value if value is not None else "")
    text = text[: max_length * 4 + 64]  # bound the work on huge input; the cut below decides
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _LINE_SEPARATORS.sub("\n", text)
    if not multiline:
        text = " ".join(text.split())
    truncated = len(text) > max_length
    text = text[:max_length]
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("@", "@\u2060")  # @⁠user: shown as typed, pings nobody
    if multiline:
        text = text.replace("\n", "  \n")
    return text + ("…" if truncated else "")


def _finalize(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, Trusted | int | float | bool):
        return value
    return escape_user_text(value)


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(  # noqa: S701 - markdown output; escaping is done by _finalize, not HTML autoescape
        loader=FileSystemLoader(str(templates_path() / "comments")),
        finalize=_finalize,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["trusted"] = Trusted
    env.filters["escape_long"] = lambda v, n=2000: Trusted(escape_user_text(v, n, multiline=True))
    return env


def render(template: str, **context) -> str:
    """Render templates/comments/<template> (e.g. "status.md") with escaping by default."""
    return _environment().get_template(template).render(**context).strip() + "\n"
