"""The AutoKeras adapter: its pure helpers (fast) and real AutoKeras runs through the harness.

The real runs need the adapter's environment (``python -m decathlon setup autokeras``: about
90 s here, TensorFlow CPU, Keras 3.12, AutoKeras 3.0); the first run builds it otherwise. Each
budget is set by a small ``budgets.toml`` written beside the test, so the real profiles stay
as they are.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from decathlon_adapters import autokeras as adapter

from decathlon import environments, leaderboard
from decathlon.conformance import assert_conforms
from decathlon.contract import BINARY, MULTI_CLASS, MULTI_LABEL, ORDINAL
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner


def _budgets(tmp_path: Path, trials: int, epochs: int, hard_limit: float) -> Path:
    path = tmp_path / "budgets.toml"
    path.write_text(
        "[profiles.quick]\n"
        'description = "AutoKeras adapter tests"\n'
        "seeds = [0]\n\n"
        "[quick.autokeras]\n"
        f"trials = {trials}\n"
        f"epochs = {epochs}\n"
        f"hard_limit_seconds = {hard_limit}\n"
    )
    return path


def _run(tmp_path: Path, data_dir: Path, budgets: Path) -> tuple[dict[str, dict], Path]:
    config = RunConfig(
        adapter="autokeras",
        profile="quick",
        datasets=("breastmnist",),
        data_dir=str(data_dir),
        download=False,
        device="cpu",
        n_jobs=2,
        budgets_path=str(budgets),
    )
    run_dir = tmp_path / "run"
    path = Runner(config, make_registry()).run(run_dir)
    rows = {
        r["split"]: r for r in leaderboard.read(path) if r["dataset"] != leaderboard.SUMMARY_DATASET
    }
    return rows, run_dir / "tasks" / "breastmnist" / "seed0"


@pytest.fixture
def breast_dir(real_data_dir: Path, tmp_path: Path) -> Path:
    """A data folder holding a link to the real breastmnist (the loader writes beside it)."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "breastmnist.npz").symlink_to(real_data_dir / "breastmnist.npz")
    return folder


# ---------------------------------------------------------------------------- fast


def test_registered_with_the_verified_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(adapter.TF_PACKAGE_VARIABLE, raising=False)
    record = make_registry().get("autokeras")
    assert record.run == "decathlon_adapters.autokeras:run"
    assert record.uses_gpu
    assert record.environment is not None and record.environment.python == "3.11"
    assert set(record.environment.requirements) >= {
        "autokeras==3.0.0",
        "keras==3.12.0",
        "tensorflow-cpu==2.21.0",
        "tensorboard",
    }
    # The module is import-light: the harness lists it without TensorFlow.
    assert "tensorflow" not in sys.modules and "autokeras" not in sys.modules


def test_tensorflow_package_from_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(adapter.TF_PACKAGE_VARIABLE, "tensorflow[and-cuda]")
    gpu = adapter.make_adapter()
    assert "tensorflow[and-cuda]==2.21.0" in gpu.environment.requirements
    monkeypatch.setenv(adapter.TF_PACKAGE_VARIABLE, "")
    cpu = adapter.make_adapter()
    assert "tensorflow-cpu==2.21.0" in cpu.environment.requirements
    # Each TensorFlow build gets an environment folder of its own.
    assert environments.env_dir(gpu) != environments.env_dir(cpu)


def test_images_get_a_channel_axis_in_unit_range() -> None:
    grey = np.full((3, 28, 28), 255, dtype=np.uint8)
    colour = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    assert adapter.images(grey).shape == (3, 28, 28, 1)
    assert adapter.images(grey).dtype == np.float32 and adapter.images(grey).max() == 1.0
    assert adapter.images(colour).shape == (2, 28, 28, 3)


def test_targets_per_task_type() -> None:
    ids = np.array([[0], [2], [1]], dtype=np.uint8)
    assert adapter.targets(np.array([[0], [1]], np.uint8), BINARY, 2).tolist() == [[0.0], [1.0]]
    onehot = adapter.targets(ids, MULTI_CLASS, 4)
    assert onehot.shape == (3, 4) and onehot.argmax(axis=1).tolist() == [0, 2, 1]
    assert adapter.targets(ids, ORDINAL, 5).shape == (3, 5)
    multi = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    assert adapter.targets(multi, MULTI_LABEL, 3).tolist() == multi.tolist()


def test_scores_binary_sigmoid_becomes_two_columns_positive_last() -> None:
    scores = adapter.to_scores(np.array([[0.2], [0.9]], np.float32), BINARY, 2)
    np.testing.assert_allclose(scores, [[0.8, 0.2], [0.1, 0.9]], rtol=1e-6)
    soft = adapter.to_scores(np.array([[0.1, 0.7, 0.2]]), MULTI_CLASS, 3)
    np.testing.assert_allclose(soft, [[0.1, 0.7, 0.2]])
    assert adapter.to_scores(np.array([[np.nan, 1.2]]), MULTI_LABEL, 2).tolist() == [[0.5, 1.0]]
    with pytest.raises(ValueError, match="3 columns, expected 14"):
        adapter.to_scores(np.zeros((2, 3)), MULTI_LABEL, 14)


def test_clock_keeps_room_for_predicting_and_for_one_more_first_epoch() -> None:
    now = time.time()
    clock = adapter.Clock(deadline=now + 100, base_reserve=10, n_predict=1000)
    assert 89 < clock.left() <= 90 and clock.room_for_a_trial()
    clock.saw_inference(2.0, 100)  # 20 ms per image: 1000 images twice over = 40 s more
    assert 49 < clock.left() <= 50
    clock.start_trial()  # the rate is kept as the finished trial's
    clock.saw_inference(0.1, 100)
    assert clock.seconds_per_image == pytest.approx(0.02)
    clock.first_epoch_seconds.append(60.0)  # a new trial would not finish its first epoch
    assert not clock.room_for_a_trial()
    clock.first_epoch_seconds[-1] = 5.0
    assert clock.room_for_a_trial() and not clock.stopped_early
    clock.trial_cut = True
    assert not clock.room_for_a_trial() and clock.stopped_early


# ---------------------------------------------------------------------------- real runs


@pytest.mark.slow
@pytest.mark.realdata
def test_real_breastmnist_one_trial_one_epoch_is_ok(breast_dir: Path, tmp_path: Path) -> None:
    rows, task_dir = _run(tmp_path, breast_dir, _budgets(tmp_path, 1, 1, 600))
    for split in ("train", "val", "test"):
        assert rows[split]["status"] == "ok", rows[split]["reason"]
        assert 0.0 <= float(rows[split]["auc"]) <= 1.0
        assert 0.0 <= float(rows[split]["acc"]) <= 1.0
    notes = json.loads(rows["test"]["notes"])
    assert notes["trials_run"] == 1 and notes["stopped_early"] is False
    assert (task_dir / "output" / adapter.BEST_MODEL_FILE).stat().st_size > 0
    search = json.loads((task_dir / "output" / "search.json").read_text())
    assert [t["status"] for t in search["trials"]] == ["COMPLETED"]
    # The harness's val AUC agrees with Keras' (200-threshold) val AUC of the best epoch.
    assert float(rows["val"]["auc"]) == pytest.approx(search["best_val_auc"], abs=0.02)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_breastmnist_cut_by_the_hard_limit_still_gives_rows(
    breast_dir: Path, tmp_path: Path
) -> None:
    # 5 trials x 50 epochs cannot fit in 45 s: the search must stop and return what it has.
    rows, task_dir = _run(tmp_path, breast_dir, _budgets(tmp_path, 5, 50, 45))
    assert set(rows) == {"train", "val", "test"}
    test = rows["test"]
    assert test["status"] in ("ok", "timeout"), test["reason"]
    if test["status"] == "ok":
        notes = json.loads(test["notes"])
        assert notes["stopped_early"] is True
        assert 1 <= notes["trials_run"] < 5
        assert 0.0 <= float(test["auc"]) <= 1.0
        assert (task_dir / "output" / adapter.BEST_MODEL_FILE).is_file()
    else:  # a slow machine: killed, and the row says so
        assert "hard limit of 45 s" in test["reason"]


@pytest.mark.slow
def test_conforms_on_every_task_type(tmp_path: Path) -> None:
    # Binary, multi-class, ordinal and multi-label (sigmoid head) on generated data.
    assert_conforms(
        "autokeras",
        tmp_path / "conformance",
        budgets_path=_budgets(tmp_path, 1, 1, 300),
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"reserve_seconds": -600}, "option reserve_seconds: -600 is not a number of 0 or more"),
        ({"batch_size": 0}, "option batch_size: 0 is not a whole number of 1 or more"),
        ({"patience": -1}, "option patience: -1 is not a whole number of 0 or more"),
    ],
)
def test_bad_options_are_refused_before_any_task_starts(
    option: dict[str, object], message: str
) -> None:
    # Before: accepted as autogluon's, flaml's and auto-sklearn's were before their checks; a
    # negative reserve put the search's stop after the hard limit's kill (a timeout row), a
    # batch size of 0 failed inside every task.
    from decathlon import budgets as budgets_file
    from decathlon.errors import BudgetError

    record = adapter.make_adapter()
    assert record.check_options is not None
    record.check_options(dict(record.options))  # the defaults pass
    budgets = budgets_file.load(Path(__file__).parents[1] / "budgets.toml")
    with pytest.raises(BudgetError, match=f"adapter 'autokeras': {message}"):
        budgets.options("quick", record, option)
