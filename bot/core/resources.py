"""Where shipped files are: inside an installed wheel, or in a source checkout.

The wheel carries templates/, the issue form and app.yml as bot/_templates, bot/_form and
bot/_manifest (see pyproject.toml); a checkout has them at the top level.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # bot/ (this module is bot/core/resources.py)
_SOURCE_ROOT = _PACKAGE.parent


def _first_existing(*candidates: Path) -> Path:
    return next((path for path in candidates if path.exists()), candidates[-1])


def templates_path() -> Path:
    return _first_existing(_PACKAGE / "_templates", _SOURCE_ROOT / "templates")


def issue_form_path() -> Path:
    """The bundled issue form (.github/ISSUE_TEMPLATE/special-access.yml)."""
    return _first_existing(_PACKAGE / "_form" / "special-access.yml",
                           _SOURCE_ROOT / ".github" / "ISSUE_TEMPLATE" / "special-access.yml")


def app_manifest_path() -> Path:
    """app.yml, the GitHub App manifest."""
    return _first_existing(_PACKAGE / "_manifest" / "app.yml", _SOURCE_ROOT / "app.yml")
