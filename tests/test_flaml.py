"""The FLAML adapter through the real harness: its own Python 3.11 environment, FLAML 2.7.

Slow: builds the environment once (about 90 s), then runs the real FLAML on generated data of
every task type and on the real breastmnist with a small budget.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_real_quick

from decathlon import leaderboard
from decathlon.conformance import assert_conforms


def _rows(path: Path) -> list[dict[str, str]]:
    return [r for r in leaderboard.read(path) if r["dataset"] != leaderboard.SUMMARY_DATASET]


@pytest.mark.slow
def test_conforms_on_every_task_type(tmp_path: Path) -> None:
    """Binary, multi-class, ordinal and multi-label (chestmnist's 14 labels), generated data."""
    workdir = tmp_path / "conformance"
    assert_conforms("flaml", workdir, scale_factor=0.3)  # 36 s budgets
    tasks = workdir / "run" / "tasks"
    assert np.load(tasks / "chestmnist" / "seed0" / "predictions" / "test.npy").shape[1] == 14
    assert np.load(tasks / "organamnist" / "seed0" / "predictions" / "test.npy").shape[1] == 11
    chest = tasks / "chestmnist" / "seed0" / "output"
    with open(chest / "leaderboard.csv") as handle:
        board = list(csv.DictReader(handle))
    assert len(list(chest.glob("flaml_label*.log"))) == 14  # one search per label
    test = next(
        r
        for r in _rows(workdir / "run" / "leaderboard.csv")
        if r["split"] == "test" and r["dataset"] == "chestmnist"
    )
    notes = json.loads(test["notes"])
    with_model = {int(r["label"]) for r in board}
    assert with_model | set(notes["labels_without_model"]) == set(range(14))


@pytest.mark.slow
@pytest.mark.realdata
def test_real_breastmnist_quick(tmp_path: Path, real_data_dir: Path) -> None:
    rows, task_dir = run_real_quick("flaml", tmp_path, real_data_dir)
    test = rows["test"]
    assert float(test["auc"]) > 0.7
    notes = json.loads(str(test["notes"]))
    assert notes["trials"] >= 1 and notes["best_estimator"] in notes["trials_by_estimator"]
    assert notes["time_budget"] <= 50  # 60 s less the 10 s margin, counted from the start
    with open(task_dir / "output" / "leaderboard.csv") as handle:
        board = list(csv.DictReader(handle))
    assert list(board[0])[:3] == ["record_id", "learner", "validation_loss"]
    assert len(board) == notes["trials"]
    assert sum(r["chosen"] == "True" for r in board) == 1
    scores = np.load(task_dir / "predictions" / "test.npy")
    assert scores.shape == (156, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    assert not (task_dir / "scratch").exists()
