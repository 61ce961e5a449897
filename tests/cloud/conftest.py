"""Tests of `qa_workflow/cloud/` and `cloudformation/`: deploy, SageMaker launches, the template."""

from __future__ import annotations

import ast
from collections.abc import Callable

import pytest


def _source_of(files: dict[str, bytes], module: str) -> str:
    """The bundle path that holds ``module`` (a package's ``__init__.py`` or a ``.py`` file)."""
    path = module.replace(".", "/")
    return f"{path}/__init__.py" if f"{path}/__init__.py" in files else f"{path}.py"


def _import_closure(files: dict[str, bytes], start: str) -> set[str]:
    """Modules of the bundle that ``start`` imports, transitively (training.* and qa_workflow.* only)."""

    def source_of(module: str) -> str:
        return _source_of(files, module)

    seen, todo = set(), [start]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        tree = ast.parse(files[source_of(mod)])
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.split(".")[0] not in ("training", "qa_workflow"):
                    continue
                if source_of(name) in files:
                    todo.append(name)
                elif source_of(name.rsplit(".", 1)[0]) not in files:  # a name imported from a module
                    raise AssertionError(f"{mod} imports {name}, which the source bundle does not carry")
    return seen


@pytest.fixture(scope="session")
def import_closure() -> Callable[[dict[str, bytes], str], set[str]]:
    """``import_closure(files, module)``: the training.* / qa_workflow.* modules of a code bundle (``{path: bytes}``)
    that ``module`` imports, transitively; fails naming the import when the bundle lacks a module."""
    return _import_closure
