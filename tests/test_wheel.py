"""The package works from a wheel: built, installed into a fresh environment, run elsewhere.

The default budgets, the dataset metadata and the reference leaderboards must come from inside
the installed package (importlib.resources), not from this source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from decathlon import environments, pipconfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``python`` of a fresh virtual environment with the built wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        check=True,
    )
    (wheel,) = dist.glob("medmnist_decathlon-*.whl")
    env = base / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    # Installed with uv from wherever this machine's pip installs from (as setup does).
    uv = environments.uv_binary()
    assert uv is not None
    settings = pipconfig.read()
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), *pipconfig.uv_args(settings)]
        + [str(wheel)],
        env=pipconfig.uv_environ(settings),
        check=True,
    )
    return python


def _decathlon(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ["COLUMNS"] = "200"
    return subprocess.run(
        [str(python), "-m", "decathlon", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _decathlon_python(python: Path, cwd: Path, code: str) -> list[str]:
    out = subprocess.run(
        [str(python), "-c", code], cwd=cwd, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_the_wheel_runs_list_plan_and_compare_from_another_folder(
    installed: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import decathlon, decathlon.budgets as b, decathlon.compare as c\n"
        "from decathlon import environments as e\n"
        "from decathlon.plugins import make_registry\n"
        "print(decathlon.__file__)\n"
        "print(b.default_budgets_path())\n"
        "print(c.reference_path('v1'))\n"
        "print(e.lock_path(make_registry().get('autosklearn')))\n"
    )
    paths = _decathlon_python(installed, elsewhere, code)
    env_root = installed.parent.parent
    for path in paths:  # the installed copies, not this checkout's files
        assert Path(path).is_file() and Path(path).is_relative_to(env_root), path

    listed = _decathlon(installed, elsewhere, "list")
    assert listed.returncode == 0, listed.stderr
    for name in ("baseline", "autosklearn", "resnet18_28", "pathmnist", "organsmnist"):
        assert name in listed.stdout

    plan = _decathlon(installed, elsewhere, "plan", "--adapter", "autosklearn")
    assert plan.returncode == 0, plan.stderr
    assert "7200s" in plan.stdout and "21600s" in plan.stdout  # the paper's 2 h and 6 h tiers

    compared = _decathlon(installed, elsewhere, "compare", "--reference", "v1", "--bootstrap", "0")
    assert compared.returncode == 0, compared.stderr
    assert "paper_v1/resnet18_28" in compared.stdout
    assert "0.906" in compared.stdout  # ResNet-18 (28)'s published v1 mean AUC


@pytest.mark.parametrize(
    "name, target",
    [("budgets.toml", "decathlon/budgets.toml"), ("leaderboards", "decathlon/leaderboards")],
)
def test_top_level_names_are_links_into_the_package(name: str, target: str) -> None:
    """The layout names budgets.toml and leaderboards/ at the top; the package data is the one
    copy, and git records the links as links, so a clone has them too."""
    link = ROOT / name
    assert link.is_symlink() and os.readlink(link) == target
    assert link.resolve() == (ROOT / target).resolve() and link.exists()
    if (ROOT / ".git").exists():
        staged = subprocess.run(
            ["git", "ls-files", "-s", "--", name], cwd=ROOT, capture_output=True, text=True
        ).stdout
        assert staged.startswith("120000 "), f"{name} is not tracked as a symlink: {staged!r}"
