"""The package's import graph keeps the layering the README's Architecture section lists.

Every import counts, wherever it is written: at the top of a module, inside a
function (a lazy import) or under ``TYPE_CHECKING``. A module may import from
its own layer or a lower one, never a higher one, and no chain of imports
comes back to where it started.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "runwatch"
README = ROOT / "README.md"
LAYER_LINE = re.compile(r"^(\d+)\. (.*)$")
APART_LINE = re.compile(r"^Apart: (.*)$")
MODULE_NAME = re.compile(r"`(runwatch(?:\.[A-Za-z_][A-Za-z0-9_]*)*)`")


def module_name(path: Path) -> str:
    """The dotted name of a source file of the package (a package's ``__init__`` is the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from a import b`` names ``a.b`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in known else target)
    return {target for target in found if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports."""
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def readme_layers() -> tuple[list[list[str]], list[str]]:
    """The numbered layer list of the README's Architecture section (lowest first) and its modules kept apart."""
    text = README.read_text()
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    layers: list[list[str]] = []
    apart: list[str] = []
    for line in section.splitlines():
        if match := LAYER_LINE.match(line):
            assert int(match[1]) == len(layers) + 1, f"layers are numbered in order: {line!r}"
            layers.append(MODULE_NAME.findall(match[2]))
        elif match := APART_LINE.match(line):
            apart = MODULE_NAME.findall(match[1])
    return layers, apart


def layer_of(module: str, prefixes: dict[str, int]) -> int | None:
    """The layer of the longest listed prefix of ``module`` (``None``: not listed)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        layer = prefixes.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None


def listed() -> dict[str, int]:
    """Listed module prefix → its layer number (the modules kept apart get their own, ``0``)."""
    layers, apart = readme_layers()
    prefixes = {module: number for number, names in enumerate(layers, start=1) for module in names}
    prefixes.update(dict.fromkeys(apart, 0))
    return prefixes


def test_the_readme_lists_the_layers() -> None:
    """The Architecture section has a numbered layer list naming modules, and the client apart."""
    layers, apart = readme_layers()
    assert len(layers) >= 5 and all(layers)
    assert "runwatch.client" in apart


def test_every_module_has_a_layer() -> None:
    """Each module of the package falls under one entry of the README's list."""
    prefixes = listed()
    missing = [module for module in modules() if layer_of(module, prefixes) is None]
    assert missing == []


def test_no_import_goes_up_a_layer() -> None:
    """A module imports only from its own layer or below; the client imports nothing of the rest, and
    the rest uses only the client's public names (the package itself, never a private module of it)."""
    prefixes = listed()
    _, apart_packages = readme_layers()
    upward = []
    for module, targets in import_graph().items():
        mine = layer_of(module, prefixes)
        for target in sorted(targets):
            theirs = layer_of(target, prefixes)
            if mine is None or theirs is None:
                continue
            if mine == 0 or theirs == 0:
                same_apart_package = module.split(".")[:2] == target.split(".")[:2]
                uses_public_names = mine != 0 and target in apart_packages
                if not (same_apart_package or uses_public_names):
                    upward.append(f"{module} (layer {mine}) -> {target} (layer {theirs})")
            elif theirs > mine:
                upward.append(f"{module} (layer {mine}) -> {target} (layer {theirs})")
    assert upward == []


def test_no_import_circles() -> None:
    """No chain of imports leads from a module back to itself."""
    graph = import_graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert [" -> ".join(circle) for circle in circles] == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("from . import forksafe\n", "runwatch.store.forksafe", id="submodule-by-name"),
        pytest.param("from .queries import list_runs\n", "runwatch.store.queries", id="module-attribute"),
        pytest.param("from ..events import Metric\n", "runwatch.events", id="parent-package"),
    ],
)
def test_imports_are_resolved_to_modules(tmp_path: Path, source: str, expected: str) -> None:
    """Relative imports resolve to the module they load, so the layer check sees the real edge."""
    path = tmp_path / "manager.py"
    path.write_text(source)
    known = {"runwatch.store.forksafe", "runwatch.store.queries", "runwatch.events", "runwatch.store"}
    assert imports_of("runwatch.store.manager", path, known) == {expected}
