"""The ResNet adapters: registration (fast) and real runs of resnet18_28 through the harness.

The real runs need the adapters' torch + torchvision environment; the first one builds it
(``python -m decathlon setup resnet18_28``: about 5.5 GB on this machine kind).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from decathlon_adapters import resnet

from decathlon import environments, leaderboard, synthetic
from decathlon.conformance import ConformanceCheck, parametrize_with_checks
from decathlon.datasets import file_md5
from decathlon.metrics import auc
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner

NAMES = ("resnet18_28", "resnet18_224", "resnet50_28", "resnet50_224")


def test_four_adapters_registered_sharing_one_environment() -> None:
    registry = make_registry()
    adapters = [registry.get(name) for name in NAMES]
    assert all(a.uses_gpu for a in adapters)
    assert len({environments.env_dir(a) for a in adapters}) == 1
    assert {a.run for a in adapters} == {f"decathlon_adapters.resnet:run_{n}" for n in NAMES}
    assert all(callable(getattr(resnet, a.run.partition(":")[2])) for a in adapters)


def test_schedule_milestones_scale_with_epochs() -> None:
    assert resnet.milestones(100) == [50, 75]  # the published code's epochs 50 and 75
    assert resnet.milestones(4) == [2, 3]
    assert resnet.milestones(2) == [1]
    assert resnet.milestones(1) == []


def _rows(path: Path) -> dict[str, dict]:
    return {
        r["split"]: r for r in leaderboard.read(path) if r["dataset"] != leaderboard.SUMMARY_DATASET
    }


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("batch_size", 0, "not a whole number of 1 or more"),
        ("batch_size", 12.5, "not a whole number of 1 or more"),
        ("eval_batch_size", -1, "not a whole number of 1 or more"),
        ("lr", 0, "not a number above 0"),
        ("lr", -0.1, "not a number above 0"),
        ("optimizer", "adamw", "not one of adam, sgd"),
    ],
)
def test_an_option_out_of_range_is_refused_in_one_line_before_any_task(
    key: str, value: object, words: str
) -> None:
    from decathlon.budgets import load
    from decathlon.errors import BudgetError

    budgets = load()
    for name in NAMES:
        adapter = make_registry().get(name)
        budgets.options("quick", adapter, {"optimizer": "SGD"})  # any case, as run() reads it
        with pytest.raises(BudgetError, match=f"adapter '{name}': option {key}: .* is {words}"):
            budgets.options("quick", adapter, {key: value})


def test_train_predictions_come_only_when_the_time_left_covers_them() -> None:
    # The wall5 measurement's pneumoniamnist task: stopped after epoch 1 with 25 s before the
    # deadline; the val pass (524 images) took 9 s, so the 4,708 training images need about 81 s.
    # Skipping them keeps the task's test and val scores; predicting them was killed at the limit.
    assert not resnet.train_predictions_fit(left_seconds=25, need_seconds=9 * 4708 / 524)
    # breastmnist: 546 training images at the same speed fit easily.
    assert resnet.train_predictions_fit(left_seconds=25, need_seconds=9 * 546 / 524)


@pytest.mark.slow
@pytest.mark.realdata
def test_resnet18_28_real_breastmnist_quick_is_ok(mixed_catalog, tmp_path: Path) -> None:
    config = RunConfig(
        adapter="resnet18_28",
        profile="quick",  # 2 epochs
        datasets=("breastmnist",),
        data_dir=str(mixed_catalog.data_dir),
        download=False,
        info_path=str(mixed_catalog.info_path),
        device="cpu",
        n_jobs=2,
    )
    path = Runner(config, make_registry()).run(tmp_path / "run")
    rows = _rows(path)
    assert {s: r["status"] for s, r in rows.items()} == {"train": "ok", "val": "ok", "test": "ok"}
    notes = json.loads(rows["test"]["notes"])
    assert notes["epochs_run"] == 2 and not notes["stopped_early"]
    assert 0.5 < float(rows["test"]["auc"]) <= 1.0
    task_dir = tmp_path / "run" / "tasks" / "breastmnist" / "seed0"
    assert (task_dir / "output" / "best.pt").is_file()


BUDGETS_4_EPOCHS = """
[profiles.quick]
description = "four epochs of resnet18_28"
seeds = [0]

[quick.resnet18_28]
epochs = 4
hard_limit_seconds = 900
"""


def _reversed_validation_catalog(root: Path) -> tuple[Path, Path]:
    """A breastmnist-shaped dataset whose validation labels follow the reverse of the training
    rule (a brighter central patch means class 1 in train and test, class 0 in val): the more a
    model learns, the lower its validation AUC, so the best epoch is an early one."""
    rng = np.random.default_rng(0)

    def split(n: int, reverse: bool) -> tuple[np.ndarray, np.ndarray]:
        y = (np.arange(n) % 2).astype(np.uint8)
        x = rng.integers(0, 200, size=(n, 28, 28)).astype(np.int16)
        x[:, 9:19, 9:19] += ((1 - y) if reverse else y)[:, None, None].astype(np.int16) * 20
        return x.clip(0, 255).astype(np.uint8), y[:, None]

    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    arrays = {}
    sizes = {"train": 128, "val": 64, "test": 64}
    for name, n in sizes.items():
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = split(n, reverse=name == "val")
    path = data_dir / "breastmnist.npz"
    np.savez_compressed(path, **arrays)
    meta = synthetic.bundled_info()
    entry = meta["datasets"]["breastmnist"]
    entry["n_samples"] = sizes
    entry["MD5"] = file_md5(path)
    return data_dir, synthetic.write_info(meta, root / "info.json")


@pytest.mark.slow
def test_best_validation_epoch_not_the_last_predicts(tmp_path: Path) -> None:
    """The kept epoch is the maximum of the recorded validation AUCs, here not the last one,
    and the returned scores are that epoch's: they reproduce its validation AUC."""
    data_dir, info_path = _reversed_validation_catalog(tmp_path)
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(BUDGETS_4_EPOCHS)
    config = RunConfig(
        adapter="resnet18_28",
        profile="quick",
        datasets=("breastmnist",),
        data_dir=str(data_dir),
        download=False,
        info_path=str(info_path),
        device="cpu",
        n_jobs=2,
        budgets_path=str(budgets),
        options={"batch_size": 32, "predict_train": False},
    )
    path = Runner(config, make_registry()).run(tmp_path / "run")
    rows = _rows(path)
    assert rows["test"]["status"] == "ok", rows["test"]["reason"]
    notes = json.loads(rows["test"]["notes"])
    history = notes["val_auc_history"]
    assert notes["epochs_run"] == len(history) == 4
    best = notes["best_epoch"]
    assert best == int(np.argmax(history)) + 1
    assert best < 4 and history[best - 1] > history[-1], history
    predictions = tmp_path / "run" / "tasks" / "breastmnist" / "seed0" / "predictions"
    y_val = np.load(data_dir / "breastmnist.npz")["val_labels"]
    val_auc = auc("binary-class", y_val, np.load(predictions / "val.npy"))
    assert val_auc == pytest.approx(history[best - 1], abs=1e-6)
    assert float(rows["val"]["auc"]) == pytest.approx(history[best - 1], abs=1e-6)
    assert (tmp_path / "run" / "tasks" / "breastmnist" / "seed0" / "output" / "best.pt").is_file()


BUDGETS_DEADLINE = """
[profiles.quick]
description = "100 epochs that cannot fit in the hard limit"
seeds = [0]

[quick.resnet18_28]
epochs = 100
hard_limit_seconds = 60
"""


@pytest.mark.slow
def test_deadline_stops_training_and_keeps_the_best_epoch(tiny_catalog, tmp_path: Path) -> None:
    """100 epochs do not fit in 60 s: training stops in time and the best epoch so far predicts."""
    budgets = tmp_path / "budgets.toml"
    budgets.write_text(BUDGETS_DEADLINE)
    config = RunConfig(
        adapter="resnet18_28",
        profile="quick",
        datasets=("breastmnist",),
        data_dir=str(tiny_catalog.data_dir),
        download=False,
        info_path=str(tiny_catalog.info_path),
        device="cpu",
        n_jobs=2,
        budgets_path=str(budgets),
    )
    path = Runner(config, make_registry()).run(tmp_path / "run")
    rows = _rows(path)
    assert rows["test"]["status"] == "ok", rows["test"]["reason"]
    notes = json.loads(rows["test"]["notes"])
    assert notes["stopped_early"] and "deadline" in notes["stop_reason"]
    assert 1 <= notes["epochs_run"] < 100
    history = [-1.0 if a is None else a for a in notes["val_auc_history"]]
    assert notes["best_epoch"] == int(np.argmax(history)) + 1


@pytest.mark.slow
@parametrize_with_checks(["resnet18_28"])
def test_resnet18_28_conforms(check: ConformanceCheck, tmp_path: Path) -> None:
    """The harness's conformance check: one tiny generated dataset per task type, all `ok`."""
    check(tmp_path)
