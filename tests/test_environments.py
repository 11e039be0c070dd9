"""Adapter environments: built once and reused, a failed build leaves nothing ready, adoption."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import TinyData

from decathlon import environments, leaderboard
from decathlon.contract import Adapter, Environment
from decathlon.errors import EnvironmentBuildError
from decathlon.hookspecs import hookimpl
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _adapter(requirements: tuple[str, ...] = ()) -> Adapter:
    return Adapter(
        name="envprobe",
        run="decathlon_adapters.baseline:run",
        environment=Environment(python=HERE, requirements=requirements),
        options={"pca_components": 8, "max_iter": 5, "learning_rate": 0.1},
        default_budgets={"quick": {"hard_limit_seconds": 120}},
    )


class _Plugin:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    @hookimpl
    def decathlon_register_adapters(self, register) -> None:
        register(self.adapter)


def test_spec_key_follows_the_specification() -> None:
    a, b = _adapter(), _adapter(("numpy<3",))
    assert environments.spec_key(a.environment) != environments.spec_key(b.environment)
    assert environments.spec_key(a.environment) == environments.spec_key(_adapter().environment)


def test_a_failed_build_is_one_line_and_leaves_nothing_ready(tmp_path: Path) -> None:
    adapter = _adapter(("decathlon-no-such-package-anywhere==0.0.1",))
    with pytest.raises(EnvironmentBuildError) as caught:
        environments.build(adapter, root=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "envprobe" in message and "pip exited" in message and "build.log" in message
    assert not environments.is_ready(adapter, tmp_path)


def test_missing_interpreter_is_one_line_naming_the_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.delenv("DECATHLON_PYTHON_2_7", raising=False)
    with pytest.raises(EnvironmentBuildError) as caught:
        environments.find_python("2.7")
    message = str(caught.value)
    assert "\n" not in message
    assert "DECATHLON_PYTHON_2_7" in message and "--python" in message


def test_an_adopted_interpreter_runs_the_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_catalog: TinyData
) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    adapter = _adapter(("a-requirement-that-is-never-installed",))
    wrapper = environments.adopt(adapter, sys.executable)
    assert environments.is_ready(adapter)
    assert environments.interpreter(adapter) == wrapper
    registry = make_registry([_Plugin(adapter)], entry_points=False)
    config = RunConfig(
        adapter="envprobe",
        profile="quick",
        datasets=("breastmnist",),
        data_dir=str(tiny_catalog.data_dir),
        info_path=str(tiny_catalog.info_path),
        download=False,
        budgets_path=str(_budgets(tmp_path)),
    )
    path = Runner(config, registry).run(tmp_path / "run")
    test = next(r for r in leaderboard.read(path) if r["split"] == "test")
    assert test["status"] == "ok", test["reason"]


def _budgets(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.toml"
    path.write_text('[profiles.quick]\ndescription = "test"\n')
    return path
