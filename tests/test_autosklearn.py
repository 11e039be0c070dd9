"""The auto-sklearn adapter: budget arithmetic, environment, and real runs through the harness.

The fast tests need no auto-sklearn. The slow ones build the adapter's Python 3.9 environment
(once, about 90 s) and run the real auto-sklearn 0.15.0 through the runner, as a user would.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from decathlon_adapters import autosklearn as adapter
from decathlon_adapters import tabular
from helpers import run_real_quick

from decathlon import environments, leaderboard
from decathlon.conformance import assert_conforms
from decathlon.contract import Budget, DatasetInfo, Task
from decathlon.errors import EnvironmentBuildError
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner
from decathlon.synthetic import bundled_info, write_info, write_tiny

ROOT = Path(__file__).resolve().parents[1]


def _options(**overrides: object) -> dict[str, object]:
    return {**adapter.OPTIONS, **overrides}


def _task(tmp_path: Path, *, memory_mb: int | None = None, n_jobs: int = 2) -> Task:
    info = DatasetInfo("breastmnist", "binary-class", 1, 2, {"0": "a", "1": "b"}, {})
    empty = np.zeros((0, 28, 28), dtype=np.uint8)
    return Task(
        dataset=info,
        x_train=empty,
        y_train=np.zeros((0, 1), np.uint8),
        x_val=empty,
        y_val=np.zeros((0, 1), np.uint8),
        x_test=empty,
        budget=Budget(hard_limit_seconds=180, time_seconds=60, memory_mb=memory_mb),
        seed=0,
        scratch_dir=tmp_path,
        output_dir=tmp_path,
        n_jobs=n_jobs,
        options=_options(),
    )


# ---------------------------------------------------------------------------- fast


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (60, (50, 25)),  # quick profile, small datasets: 10 s margin, two models' worth
        (120, (110, 30)),
        (7200, (6840, 684)),  # paper profile: 5 % margin, a tenth per model
        (21600, (20520, 2052)),
        (30, (30, 15)),  # auto-sklearn refuses under 30 s of search
        (5, (30, 15)),
    ],
)
def test_time_limits(budget: float, expected: tuple[int, int]) -> None:
    total, per_run = adapter.time_limits(budget, _options())
    assert (total, per_run) == expected
    assert 1 <= per_run <= total


def test_time_limits_follow_options() -> None:
    opts = _options(margin_fraction=0.0, margin_min_seconds=0, per_run_fraction=0.5)
    assert adapter.time_limits(1000, opts) == (1000, 500)


def test_search_ends_before_the_hard_limit(tmp_path: Path) -> None:
    # Budget 60 s (search 50 s), hard limit 180 s: the soft budget decides.
    task = dataclasses.replace(_task(tmp_path), deadline=1000.0 + 180)
    assert adapter.search_limits(task, _options(), now=1000.0) == (50, 25)
    # 130 s into the task, 50 s are left before the kill: the search ends 10 s before it.
    assert adapter.search_limits(task, _options(), now=1130.0) == (40, 20)


def test_a_hard_limit_too_short_to_search_is_one_line_at_once(tmp_path: Path) -> None:
    """quick profile at --scale-factor 0.05: a 6 s budget, killed at 12 s. auto-sklearn cannot
    search under 30 s, so the task used to run into the kill; it is refused before the import of
    auto-sklearn (which this environment lacks), saying what hard limit would do."""
    budget = Budget(hard_limit_seconds=12, time_seconds=6)
    task = dataclasses.replace(_task(tmp_path), budget=budget, deadline=time.time() + 12)
    with pytest.raises(RuntimeError) as caught:
        adapter.run(task)
    message = str(caught.value)
    assert "\n" not in message
    assert "at least 30 s" in message and "hard limit of 12 s" in message
    assert "hard limit of at least 4" in message  # about 0 s spent + 10 s margin + 30 s


def test_memory_limit_fits_the_task_cap(tmp_path: Path) -> None:
    assert adapter.memory_limit(_task(tmp_path)) == 4096
    # 6000 MB for two workers: 0.8 * 6000 / 2 = 2400 MB each.
    assert adapter.memory_limit(_task(tmp_path, memory_mb=6000)) == 2400
    assert adapter.memory_limit(_task(tmp_path, memory_mb=64000)) == 4096
    assert adapter.memory_limit(_task(tmp_path, memory_mb=1000, n_jobs=4)) == 1024


def test_flatten_grey_and_rgb() -> None:
    grey = np.full((3, 28, 28), 255, np.uint8)
    rgb = np.zeros((2, 28, 28, 3), np.uint8)
    assert adapter.flatten(grey).shape == (3, 784)
    assert adapter.flatten(rgb).shape == (2, 2352)
    assert adapter.flatten(grey).dtype == np.float32
    assert float(adapter.flatten(grey).max()) == 1.0


def test_columns_follow_class_ids_even_with_an_absent_class() -> None:
    # Classes 0 and 2 seen out of 3: auto-sklearn's two columns land in columns 0 and 2.
    proba = np.array([[0.2, 0.8], [0.9, 0.1]])
    out = tabular.class_columns(proba, np.array([0, 2]), 3)
    np.testing.assert_allclose(out, [[0.2, 0.0, 0.8], [0.9, 0.0, 0.1]])
    # Binary with both classes: unchanged, positive class last.
    np.testing.assert_allclose(tabular.class_columns(proba, np.array([0, 1]), 2), proba)


def test_columns_are_the_classes_the_models_were_fit_on() -> None:
    # Class 4 is in val only: without a refit the models never saw it, so their four columns
    # are classes 0 to 3 (class 4 then scores 0); after a refit on train+val, all five.
    y_train = np.array([0, 1, 2, 3, 3, 0])
    y_fit = np.concatenate([y_train, [4, 2]])
    np.testing.assert_array_equal(adapter.model_classes(y_train, y_fit, refit=False), [0, 1, 2, 3])
    np.testing.assert_array_equal(adapter.model_classes(y_train, y_fit, refit=True), range(5))


def test_registered_with_its_python_39_environment() -> None:
    registered = make_registry().get("autosklearn")
    assert registered is adapter.ADAPTER
    env = registered.environment
    assert env is not None and env.python == "3.9"
    assert "auto-sklearn==0.15.0" in env.requirements
    assert {"numpy<1.24", "pandas<2", "scipy<1.11"} <= set(env.requirements)
    assert "setuptools<81" in env.requirements  # auto-sklearn imports pkg_resources
    assert env.pip_args == ("--only-binary", "ConfigSpace")  # never built with Cython 3


def test_module_is_python_39_and_import_light() -> None:
    source = Path(adapter.__file__).read_text()
    ast.parse(source, feature_version=(3, 9))
    # Importing the plugin must not import auto-sklearn (or sklearn, pandas).
    code = (
        "import sys, decathlon_adapters.autosklearn as a;"
        "print(sorted(m for m in ('autosklearn','sklearn','pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_python_39_gives_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.version_info[:2] == (3, 9):
        pytest.skip("the harness itself runs on 3.9")
    empty_root = tmp_path / "pyenv"
    empty_bin = tmp_path / "bin"
    (empty_root / "versions").mkdir(parents=True)
    empty_bin.mkdir()
    monkeypatch.setenv("PYENV_ROOT", str(empty_root))
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.delenv("DECATHLON_PYTHON_3_9", raising=False)
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "uv"))
    monkeypatch.setenv("DECATHLON_PYTHON_DOWNLOADS", "never")
    with pytest.raises(EnvironmentBuildError) as caught:
        environments.find_python("3.9")
    message = str(caught.value)
    assert "\n" not in message
    assert "no Python 3.9 found" in message
    assert "DECATHLON_PYTHON_3_9" in message and "--python" in message


def test_explicit_interpreter_of_the_wrong_version_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DECATHLON_PYTHON_3_9", sys.executable)
    with pytest.raises(EnvironmentBuildError, match="need 3.9"):
        environments.find_python("3.9")


# ---------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.realdata
def test_real_breastmnist_quick(tmp_path: Path, real_data_dir: Path) -> None:
    rows, task_dir = run_real_quick("autosklearn", tmp_path, real_data_dir)
    assert set(rows) == {"train", "val", "test"}
    test = rows["test"]
    assert float(test["auc"]) > 0.7
    notes = json.loads(str(test["notes"]))
    assert notes["models_succeeded"] >= 1 and notes["dummy_weight"] < 1.0
    assert notes["time_left_for_this_task"] == 50 and notes["per_run_time_limit"] == 25
    board = (task_dir / "output" / "leaderboard.csv").read_text().splitlines()
    assert board[0].startswith("model_id,rank,ensemble_weight,type,cost,duration")
    assert len(board) >= 2
    scores = np.load(task_dir / "predictions" / "test.npy")
    assert scores.shape == (156, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    assert not (task_dir / "scratch").exists()


@pytest.mark.slow
def test_a_class_absent_from_train_scores_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retinamnist with class 4 only in val and test: auto-sklearn's models give four columns,
    which once failed the task with numpy's 'shape mismatch ... (60,4) ... (60,5)'."""
    root = tmp_path / "gen"
    meta = bundled_info()
    write_tiny(root / "data", ["retinamnist"], meta)
    monkeypatch.setenv("DECATHLON_INFO", str(write_info(meta, root / "info.json")))
    path = root / "data" / "retinamnist.npz"
    arrays = dict(np.load(path))
    arrays["train_labels"] = np.where(arrays["train_labels"] == 4, 3, arrays["train_labels"])
    np.savez(path, **arrays)
    config = RunConfig(
        adapter="autosklearn",
        profile="quick",
        scale_factor=0.3,  # 36 s: auto-sklearn's minimum of 30 s of search
        datasets=("retinamnist",),
        data_dir=str(root / "data"),
        download=False,
        allow_unverified=True,
        n_jobs=1,
    )
    run_dir = Runner(config, make_registry()).run(tmp_path / "run")
    rows = [r for r in leaderboard.read(run_dir) if r["dataset"] == "retinamnist"]
    test = next(r for r in rows if r["split"] == "test")
    assert test["status"] == "ok", test["reason"]
    scores = np.load(
        tmp_path / "run" / "tasks" / "retinamnist" / "seed0" / "predictions" / "test.npy"
    )
    assert scores.shape == (30, 5) and not scores[:, 4].any()


@pytest.mark.slow
def test_conforms_on_every_task_type(tmp_path: Path) -> None:
    """Binary, multi-class, ordinal and multi-label (chestmnist's 14 labels), generated data."""
    workdir = tmp_path / "conformance"
    assert_conforms(
        "autosklearn",
        workdir,
        scale_factor=0.3,  # 36 s each: auto-sklearn's minimum of 30 s of search
    )
    tasks = workdir / "run" / "tasks"
    assert np.load(tasks / "chestmnist" / "seed0" / "predictions" / "test.npy").shape[1] == 14
    assert np.load(tasks / "organamnist" / "seed0" / "predictions" / "test.npy").shape[1] == 11
    assert (tasks / "chestmnist" / "seed0" / "output" / "leaderboard.csv").is_file()
