"""Issue 17: the package's imports point down only, and no module imports itself in a circle.

Every import of a `bot` module counts, including those inside functions (a lazy import is still
a dependency); only `if TYPE_CHECKING:` blocks are left out (annotations, never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[1] / "bot"

# Lowest first. A module may import its own package and packages listed before it.
LAYERS = ["core", "github", "allowlist", "intake", "rules", "access", "requests", "web", "ops", "cli"]
TOP = len(LAYERS)  # bot/__init__.py (create_app): the composition root, may import anything


def module_name(path: Path) -> str:
    parts = path.relative_to(BOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return TOP
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else TOP


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The bot modules `path` imports (a `from pkg import name` naming a module counts as it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "bot")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "bot":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in BOT.rglob("*.py") if "migrations" not in p.parts}
    modules = set(paths)
    graph = {name: imports_of(path, modules) - {name} for name, path in paths.items()}
    # `import bot.x.y` also imports the packages above it; a package __init__ is not a dependency
    # of its own modules in the sense checked here, so packages are dropped from the edges.
    packages = {m for m, p in paths.items() if p.name == "__init__.py"}
    return {m: {d for d in deps if d not in packages or d == "bot"} - {"bot"} for m, deps in graph.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer():
    loose = [m for m in import_graph() if layer_of(m) == TOP and m != "bot"]
    assert loose == [], f"modules outside the layered packages: {loose}"


def test_imports_point_down_only():
    assert upward_imports(import_graph()) == []


def test_no_import_circle():
    assert circles(import_graph()) == []


@pytest.mark.parametrize("graph, expected", [
    ({"bot.core.a": {"bot.web.b"}, "bot.web.b": set()}, ["bot.core.a -> bot.web.b"]),
    ({"bot.web.b": {"bot.core.a"}, "bot.core.a": set()}, []),
])
def test_the_direction_check_catches_an_upward_import(graph, expected):
    assert upward_imports(graph) == expected


def test_the_circle_check_catches_a_circle():
    graph = {"bot.requests.a": {"bot.requests.b"}, "bot.requests.b": {"bot.requests.c"},
             "bot.requests.c": {"bot.requests.a"}, "bot.requests.d": {"bot.requests.a"}}
    assert circles(graph) == [["bot.requests.a", "bot.requests.b", "bot.requests.c"]]


def test_every_package_says_what_it_owns_and_may_import():
    for init in sorted(BOT.glob("*/__init__.py")):
        if init.parent.name in LAYERS and init.parent.name != "cli":
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
            assert "May import:" in doc, f"{init}: the docstring says what the package may import"


def test_the_wheel_lists_every_package():
    """setuptools is given an explicit package list (templates and the form ship as packages too):
    a new subpackage missing from it would be left out of the wheel."""
    import tomllib

    listed = set(tomllib.loads((BOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {module_name(init) for init in BOT.rglob("__init__.py")}
    assert on_disk - listed == set()
