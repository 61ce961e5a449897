"""No module of the project is imported in a circle.

The import graph is read from the source (AST), not from ``sys.modules``: imports inside functions and under
``if TYPE_CHECKING:`` count too, because a circle hidden behind a lazy import is still a circle a reader has to
untangle (and type checkers follow it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("qa_workflow", "training", "analysis", "lambdas")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py under the packages."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            out[_module_name(path, root)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The most specific project module a dotted name lies in (None: not the project's)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(tree: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The project modules an import statement anywhere in ``tree`` names: ``from a import b`` is module a.b
    when that is a module, else (b a name defined in a) module a."""
    found: set[str | None] = set()
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_resolve(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:
                full = f"{stem}.{alias.name}"
                found.add(full if full in modules else _resolve(stem, modules))
    return {m for m in found if m is not None and m != module}


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), name,
                           path.name == "__init__.py", modules)
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_is_imported_in_a_circle():
    graph = import_graph(project_modules())
    assert len(graph) > 50, "the scan found the project's modules"
    assert cycles(graph) == []


def test_the_scan_sees_lazy_and_type_checking_imports(tmp_path):
    # the shape of the old analysis circle: run imports plots inside a function, plots imports run for types only
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "run.py").write_text("def write():\n    from pkg.plots import render\n")
    (pkg / "plots.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .run import write\n")
    (pkg / "tables.py").write_text("from . import plots\n")
    graph = import_graph(project_modules(tmp_path, ("pkg",)))
    assert graph["pkg.run"] == {"pkg.plots"}
    assert graph["pkg.plots"] == {"pkg.run"}
    assert graph["pkg.tables"] == {"pkg.plots"}
    assert cycles(graph) == [["pkg.plots", "pkg.run"]]
