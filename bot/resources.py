"""Where shipped files are: from a source checkout or from an installed wheel."""

from __future__ import annotations

from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _package_dir(package: str) -> Path | None:
    try:
        from importlib.resources import files

        path = Path(str(files(package)))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_dir() else None


def templates_path() -> Path:
    """templates/ at the top of a checkout, else the copy inside the wheel (bot._templates)."""
    source = _SOURCE_ROOT / "templates"
    if source.is_dir():
        return source
    return _package_dir("bot._templates") or source


def issue_form_path() -> Path:
    """The bundled issue form (.github/ISSUE_TEMPLATE/special-access.yml)."""
    source = _SOURCE_ROOT / ".github" / "ISSUE_TEMPLATE" / "special-access.yml"
    if source.is_file():
        return source
    packaged = _package_dir("bot._form")
    return (packaged / "special-access.yml") if packaged else source


def app_manifest_path() -> Path:
    """app.yml, the GitHub App manifest: from the checkout, else the copy inside the wheel."""
    source = _SOURCE_ROOT / "app.yml"
    if source.is_file():
        return source
    packaged = _package_dir("bot._manifest")
    return (packaged / "app.yml") if packaged else source
