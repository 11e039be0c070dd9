"""One owner per idea: no module of decathlon/ reaches into another's private names, and a
module over 600 lines says at its top why it is one module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "decathlon"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


DOTTED = {_dotted(p) for p in MODULES}


def _is_decathlon_module(name: str) -> bool:
    return name in DOTTED


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_names_defined(tree: ast.AST) -> set[str]:
    """The private names a module defines: functions, methods, classes, and the attributes it
    assigns (``self._x = ...``, ``_X = ...``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
            names.add(node.target.attr)
    return {n for n in names if _private(n)}


TREES = {p: ast.parse(p.read_text(encoding="utf-8")) for p in MODULES}
DEFINED = {p: _private_names_defined(t) for p, t in TREES.items()}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_reaches_into_another_modules_private_names(path: Path) -> None:
    tree = TREES[path]
    modules: set[str] = set()  # local names bound to decathlon modules
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("decathlon"):
                continue
            for alias in node.names:
                if _private(alias.name):
                    problems.append(f"from {node.module} import {alias.name}")
                elif _is_decathlon_module(f"{node.module}.{alias.name}"):
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("decathlon"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
        ):
            problems.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert problems == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_calls_another_modules_private_methods(path: Path) -> None:
    """``runner._task_dir(...)`` from distributed.py: a private name of another module's object
    (one this module does not define itself), reached through anything but ``self``/``cls``."""
    ours = DEFINED[path]
    theirs = set().union(*(names for p, names in DEFINED.items() if p != path)) - ours
    problems = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(TREES[path])
        if isinstance(node, ast.Attribute)
        and node.attr in theirs
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert problems == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_long_module_says_why_at_its_top(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if len(text.splitlines()) <= 600:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert "Longer than 600 lines" in doc, f"{path.name}: over 600 lines without a reason"
