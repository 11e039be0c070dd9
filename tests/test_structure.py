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


ADAPTERS = PACKAGE.parent / "adapters"

# What an adapter's environment has besides the standard library (environments.WORKER_REQUIREMENTS).
IN_EVERY_ENVIRONMENT = ("numpy", "pluggy")

_BLOCKING_IMPORTER = """
import importlib.abc, sys
allowed = set(sys.argv[1].split(","))
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in allowed or top == "decathlon":
            return None
        raise ModuleNotFoundError(f"No module named {name!r} (not in an adapter's environment)")
sys.meta_path.insert(0, Refuse())
for module in sys.argv[2:]:
    __import__(module)
"""


def test_what_adapter_environments_import_needs_only_numpy_and_pluggy() -> None:
    """An adapter's environment holds its framework plus numpy and pluggy; the harness modules it
    imports (the worker's, the adapters', and the data loader that adapters' own scripts use) must
    not need psutil or anything else only the harness has. CI once failed on exactly that."""
    import subprocess
    import sys

    wanted = {"decathlon.worker", "decathlon.datasets"}
    for path in sorted(ADAPTERS.rglob("*.py")) + [PACKAGE / "worker.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if _is_decathlon_module(node.module):
                    wanted.add(node.module)
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKING_IMPORTER, ",".join(IN_EVERY_ENVIRONMENT), *sorted(wanted)],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "decathlon.metrics" in wanted and "decathlon.contract" in wanted
