"""The AutoGluon adapter through the real harness: its own Python 3.11 environment, AutoGluon
tabular 1.6 (medium_quality, no neural networks).

Slow: builds the environment once (about 150 s), then runs the real AutoGluon on generated data
of every task type and on the real breastmnist with a small budget.
"""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import run_real_quick

from decathlon import leaderboard
from decathlon.conformance import assert_conforms
from decathlon.contract import Budget, DatasetInfo, Task


def _rows(path: Path) -> list[dict[str, str]]:
    return [r for r in leaderboard.read(path) if r["dataset"] != leaderboard.SUMMARY_DATASET]


@pytest.mark.slow
def test_conforms_on_single_label_task_types(tmp_path: Path) -> None:
    """Binary, multi-class and ordinal, generated data, 60 s budgets (on a loaded machine
    AutoGluon's preparation of the 784 columns alone took 10 s)."""
    workdir = tmp_path / "conformance"
    assert_conforms(
        "autogluon",
        workdir,
        datasets=("breastmnist", "organamnist", "retinamnist"),
        scale_factor=0.5,
    )
    organ = workdir / "run" / "tasks" / "organamnist" / "seed0"
    assert np.load(organ / "predictions" / "test.npy").shape[1] == 11
    with open(organ / "output" / "leaderboard.csv") as handle:
        board = list(csv.DictReader(handle))
    assert "WeightedEnsemble_L2" in {r["model"] for r in board}


@pytest.mark.slow
def test_conforms_on_multi_label(tmp_path: Path) -> None:
    """chestmnist's 14 labels, one predictor each: AutoGluon needs about 5 s a label even on
    60 images (it prepares the 784 columns first), so this one gets the quick budget, 120 s."""
    workdir = tmp_path / "conformance"
    assert_conforms("autogluon", workdir, datasets=("chestmnist",), scale_factor=1.0)
    task_dir = workdir / "run" / "tasks" / "chestmnist" / "seed0"
    assert np.load(task_dir / "predictions" / "test.npy").shape[1] == 14
    with open(task_dir / "output" / "leaderboard.csv") as handle:
        board = list(csv.DictReader(handle))
    test = next(r for r in _rows(workdir / "run" / "leaderboard.csv") if r["split"] == "test")
    notes = json.loads(test["notes"])
    assert [n["label"] for n in notes["labels"]] == list(range(14))
    # Every label has its own predictor in the leaderboard, or is named as scoring its prior
    # (its search trained nothing in its share: only on a heavily loaded machine).
    with_model = {int(r["label"]) for r in board}
    assert with_model | set(notes["labels_without_model"]) == set(range(14))
    assert with_model and not with_model & set(notes["labels_without_model"])


@pytest.mark.slow
@pytest.mark.realdata
def test_real_breastmnist_quick(tmp_path: Path, real_data_dir: Path) -> None:
    rows, task_dir = run_real_quick("autogluon", tmp_path, real_data_dir)
    test = rows["test"]
    assert float(test["auc"]) > 0.7
    notes = json.loads(str(test["notes"]))
    assert notes["presets"] == "medium_quality"
    assert notes["models_trained"] >= 2  # at least one model and the weighted ensemble
    assert notes["best_model"] and notes["ensemble_weights"]
    assert notes["time_limit"] <= 50  # 60 s less the 10 s margin, counted from the start
    with open(task_dir / "output" / "leaderboard.csv") as handle:
        board = list(csv.DictReader(handle))
    assert list(board[0])[:3] == ["model", "score_val", "eval_metric"]
    assert notes["best_model"] in {r["model"] for r in board}
    scores = np.load(task_dir / "predictions" / "test.npy")
    assert scores.shape == (156, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    assert not (task_dir / "scratch").exists()  # the predictors lived in the scratch folder


@pytest.mark.parametrize(
    ("raised", "no_model"),
    [
        (AssertionError("Not enough time left to train models. Time remaining: 0.0s"), True),
        (RuntimeError("No models were trained successfully during fit()."), True),
        (AssertionError("columns do not match"), False),
        (RuntimeError("cannot pickle '_thread.lock' object"), False),
    ],
)
def test_only_autogluons_no_model_errors_read_as_no_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raised: Exception, no_model: bool
) -> None:
    """Any AssertionError or RuntimeError from fit (a bug, here or in AutoGluon) read as "trained
    no model; give it more time". Only AutoGluon's own no-model errors (the messages it raises
    them with, in autogluon/tabular/trainer/abstract_trainer.py and predictor/predictor.py) do;
    the others go on as they are. A stand-in TabularPredictor raises each."""
    pd = pytest.importorskip("pandas")
    from decathlon_adapters import autogluon, tabular

    class Predictor:
        def __init__(self, **kwargs: object) -> None:
            pass

        def fit(self, **kwargs: object) -> None:
            raise raised

    fake = types.ModuleType("autogluon.tabular")
    fake.TabularPredictor = Predictor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "autogluon", types.ModuleType("autogluon"))
    monkeypatch.setitem(sys.modules, "autogluon.tabular", fake)
    empty = np.zeros((0, 28, 28), np.uint8)
    task = Task(
        dataset=DatasetInfo("breastmnist", "binary-class", 1, 2, {"0": "a", "1": "b"}, {}),
        x_train=empty, y_train=np.zeros((0, 1), np.uint8), x_val=empty,
        y_val=np.zeros((0, 1), np.uint8), x_test=empty,
        budget=Budget(hard_limit_seconds=60, time_seconds=30), seed=0,
        scratch_dir=tmp_path, output_dir=tmp_path, options=dict(autogluon.ADAPTER.options),
    )  # fmt: skip
    train = pd.DataFrame({"x": [0.0, 1.0], "label": [0, 1]})
    expected = tabular.NoModel if no_model else type(raised)
    with pytest.raises(expected) as caught:
        autogluon._fit_one(task, train, train, "binary", 10, tmp_path / "ag", {})
    assert (caught.value is raised) != no_model
