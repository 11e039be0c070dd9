"""The footing the tabular AutoML adapters share: time arithmetic, label shares, score columns.

No framework needed: these are the rules every one of autosklearn, autogluon and flaml follows.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from decathlon_adapters import autogluon, autosklearn, flaml, tabular

from decathlon.contract import Budget, DatasetInfo, Task
from decathlon.plugins import make_registry


def _task(*, budget: float = 120, hard_limit: float = 240, deadline: float = float("inf")) -> Task:
    info = DatasetInfo("breastmnist", "binary-class", 1, 2, {"0": "a", "1": "b"}, {})
    empty = np.zeros((0, 28, 28), dtype=np.uint8)
    return Task(
        dataset=info,
        x_train=empty,
        y_train=np.zeros((0, 1), np.uint8),
        x_val=empty,
        y_val=np.zeros((0, 1), np.uint8),
        x_test=empty,
        budget=Budget(hard_limit_seconds=hard_limit, time_seconds=budget),
        seed=0,
        scratch_dir=Path("."),
        output_dir=Path("."),
        deadline=deadline,
    )


def test_search_counts_from_the_task_start() -> None:
    # The harness started the task at 1000 (deadline 1000 + 240); the adapter is ready at 1008
    # after its imports: the search ends the 10 s margin before the 120 s budget, at 1110.
    task = _task(deadline=1240.0)
    assert tabular.search_seconds(task, tabular.MARGIN_OPTIONS, now=1008.0) == 102
    # The paper's 2 h: a 5 % margin (360 s).
    task = _task(budget=7200, hard_limit=8100, deadline=1000.0 + 8100)
    assert tabular.search_seconds(task, tabular.MARGIN_OPTIONS, now=1000.0) == 6840


def test_search_ends_the_reserve_before_the_hard_limit() -> None:
    # A hard limit close to the budget: the reserve (30 s) before it wins over the margin.
    task = _task(budget=120, hard_limit=130, deadline=1130.0)
    assert tabular.search_seconds(task, tabular.MARGIN_OPTIONS, now=1000.0) == 100
    # Past every limit: still the minimum, the library's own floor.
    assert tabular.search_seconds(task, tabular.MARGIN_OPTIONS, now=1200.0) == 1


def test_search_without_a_deadline_counts_from_now() -> None:
    assert tabular.search_seconds(_task(), tabular.MARGIN_OPTIONS, now=50.0) == 110


def test_search_needs_a_time_budget() -> None:
    task = _task()
    task.budget = Budget(hard_limit_seconds=60)
    with pytest.raises(ValueError, match="time_seconds"):
        tabular.search_seconds(task, tabular.MARGIN_OPTIONS)


def test_labels_share_what_is_left() -> None:
    now = [0.0]
    shares = tabular.label_budgets(140, 14, clock=lambda: now[0])
    first = next(shares)
    assert first == (0, 10.0)
    now[0] = 4.0  # label 0 finished early: the 6 s it left go to the 13 others
    assert next(shares) == (1, 10.4)  # 136 / 13 s, rounded down to a tenth
    now[0] = 40.0  # label 1 overran: the others get less
    assert next(shares) == (2, 8.3)  # 100 / 12 s


def test_label_shares_keep_a_minimum_but_not_past_the_latest() -> None:
    now = [0.0]
    shares = tabular.label_budgets(14, 14, minimum=5, latest=12.0, clock=lambda: now[0])
    assert next(shares) == (0, 5.0)  # a 1 s share raised to the library's minimum
    now[0] = 9.0
    assert next(shares) == (1, 3.0)  # only 3 s before the reserve
    now[0] = 11.5
    assert next(shares) == (2, 0.0)  # under a second before it: no search
    now[0] = 20.0
    assert next(shares) == (3, 0.0)  # past it: no search (before: 1 s, and the library's own
    # overhead on top, label after label, into the reserve and past the hard limit)


def test_class_columns_follow_class_ids_even_with_an_absent_class() -> None:
    proba = np.array([[0.2, 0.8], [0.9, 0.1]])
    out = tabular.class_columns(proba, [0, 2], 3)
    np.testing.assert_allclose(out, [[0.2, 0.0, 0.8], [0.9, 0.0, 0.1]])
    np.testing.assert_allclose(tabular.class_columns(proba, np.array([0, 1]), 2), proba)
    np.testing.assert_allclose(tabular.positive_column(proba, [0, 1]), [0.8, 0.1])


def test_a_label_without_a_model_scores_its_training_prior() -> None:
    np.testing.assert_allclose(tabular.label_prior(np.array([0, 1, 1, 1])), [0.25, 0.75])


class _Model:
    """A real fitted model, as an adapter's ``_Fitted`` is: logistic regression on the inputs."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression().fit(x, y)

    def proba(self, inputs: np.ndarray, n_classes: int) -> np.ndarray:
        return tabular.class_columns(
            self.model.predict_proba(inputs), self.model.classes_, n_classes
        )


def test_per_label_searches_share_the_budget_and_a_label_without_a_model_scores_its_prior() -> None:
    rng = np.random.default_rng(0)
    inputs = {"train": rng.random((60, 5)), "val": rng.random((20, 5)), "test": rng.random((30, 5))}
    y_train = (inputs["train"][:, :3] > 0.5).astype(np.uint8)  # label k is feature k > 0.5
    shares: list[tuple[int, float]] = []
    options = {"min_label_seconds": 1, "reserve_seconds": 30}

    def fit_label(label: int, share: float) -> tuple[tabular.Fitted, dict, list]:
        shares.append((label, share))
        if label == 1:
            raise tabular.NoModel("no model for label 1")
        model = _Model(inputs["train"], y_train[:, label])
        return model, {"trials": 2}, [{"model": "logreg", "score": 1.0}]

    scores, rows, notes = tabular.fit_per_label(
        _task(), 30, y_train, inputs, options, fit_label,
        library="Lib", budget_key="time_budget", count_key="trials",
    )  # fmt: skip
    assert {s: v.shape for s, v in scores.items()} == {
        "train": (60, 3),
        "val": (20, 3),
        "test": (30, 3),
    }
    # Label 1 gives every image its training frequency; labels 0 and 2 their model's output.
    np.testing.assert_allclose(scores["test"][:, 1], y_train[:, 1].mean())
    assert np.corrcoef(scores["test"][:, 0], inputs["test"][:, 0])[0, 1] > 0.8
    assert [r["label"] for r in rows] == [0, 2]
    assert notes["trials"] == 4 and notes["labels_without_model"] == [1]
    assert notes["labels"][1]["time_budget"] == shares[1][1] and "no_model" in notes["labels"][1]
    # A third each of 30 s, and the time label 1 left unused goes to label 2.
    assert [label for label, _ in shares] == [0, 1, 2]
    assert shares[0][1] == pytest.approx(10, abs=1) and shares[2][1] > 15


def test_no_label_search_starts_past_the_reserve() -> None:
    # Labels whose turn comes after the hard limit less the reserve start no search and score
    # their prior (before: each got a 1 s search plus the library's overhead, all 14 of them).
    import time

    started: list[int] = []
    rng = np.random.default_rng(1)
    inputs = {"test": rng.random((30, 5))}
    y_train = (rng.random((40, 3)) < 0.5).astype(np.uint8)

    def fit_label(label: int, share: float) -> tuple[tabular.Fitted, dict, list]:
        started.append(label)
        time.sleep(1.2)  # the library's overhead: the reserve is reached after label 0
        return tabular.Prior(np.array([0.3, 0.7])), {"trials": 1}, []

    task = _task(deadline=time.time() + 31.5)  # 1.5 s before the 30 s reserve
    scores, _, notes = tabular.fit_per_label(
        task, 10, y_train, inputs, {"min_label_seconds": 1, "reserve_seconds": 30}, fit_label,
        library="Lib", budget_key="time_budget", count_key="trials",
    )  # fmt: skip
    assert started == [0]
    assert notes["labels_without_model"] == [1, 2]
    assert "no time left for label 1 of breastmnist" in notes["labels"][1]["no_model"]
    np.testing.assert_allclose(scores["test"][:, 2], y_train[:, 2].mean())


def test_a_multi_label_task_begun_past_the_reserve_scores_every_labels_prior() -> None:
    # The hard limit less the reserve had passed as the search began: every label got 0 s and
    # the task failed ("no model for any label"), where a single-label task still gets a 1 s
    # search. Now no search starts, every label scores its prior and the notes say why.
    import time

    started: list[int] = []
    rng = np.random.default_rng(2)
    inputs = {"test": rng.random((30, 5))}
    y_train = (rng.random((40, 3)) < 0.5).astype(np.uint8)

    def fit_label(label: int, share: float) -> tuple[tabular.Fitted, dict, list]:
        started.append(label)
        return tabular.Prior(np.array([0.3, 0.7])), {"trials": 1}, []

    task = _task(deadline=time.time() + 20)  # 10 s past the 30 s reserve already
    scores, rows, notes = tabular.fit_per_label(
        task, 1, y_train, inputs, {"min_label_seconds": 1, "reserve_seconds": 30}, fit_label,
        library="Lib", budget_key="time_budget", count_key="trials",
    )  # fmt: skip
    assert started == [] and rows == []
    assert notes["labels_without_model"] == [0, 1, 2]
    assert all("no time left for label" in n["no_model"] for n in notes["labels"])
    np.testing.assert_allclose(scores["test"], np.tile(y_train.mean(axis=0), (30, 1)))


def test_per_label_searches_without_any_model_fail_the_task() -> None:
    def fit_label(label: int, share: float) -> tuple[tabular.Fitted, dict, list]:
        raise tabular.NoModel(f"nothing for label {label}")

    y_train = np.zeros((4, 2), np.uint8)
    with pytest.raises(tabular.NoModel, match="Lib finished no model for any label of breastmnist"):
        tabular.fit_per_label(
            _task(), 10, y_train, {"test": np.zeros((3, 1))},
            {"min_label_seconds": 1, "reserve_seconds": 30}, fit_label,
            library="Lib", budget_key="time_budget", count_key="trials",
        )  # fmt: skip


def test_targets_are_class_ids_or_a_label_matrix() -> None:
    task = _task()
    task.y_train = np.array([[1], [0]], np.uint8)
    task.y_val = np.array([[0]], np.uint8)
    y_train, y_val = tabular.targets(task)
    assert y_train.tolist() == [1, 0] and y_val.tolist() == [0] and y_train.dtype == np.int64
    task.dataset = DatasetInfo("chestmnist", "multi-label, binary-class", 1, 14, {}, {})
    task.y_train = np.zeros((3, 14), np.uint8)
    assert tabular.targets(task)[0].shape == (3, 14)


def test_write_rows_keeps_the_column_order(tmp_path: Path) -> None:
    path = tmp_path / "board.csv"
    tabular.write_rows(path, [{"b": 2, "a": None, "extra": 1}], ["a", "b"])
    assert path.read_text().splitlines() == ["a,b", ",2"]


@pytest.mark.parametrize("module", [autogluon, flaml])
def test_registered_with_a_pinned_python_311_environment(module: object) -> None:
    adapter = module.ADAPTER  # type: ignore[attr-defined]
    assert make_registry().get(adapter.name) is adapter
    env = adapter.environment
    assert env is not None and env.python == "3.11"
    for requirement in env.requirements:  # exact pins only
        assert "==" in requirement and not any(c in requirement for c in "<>~"), requirement
    assert not any("torch" in r for r in env.requirements)
    # The same budgets as auto-sklearn, in both profiles.
    for key in ("margin_fraction", "margin_min_seconds", "reserve_seconds"):
        assert key in adapter.options


def test_autogluon_refuses_presets_that_download_weights() -> None:
    assert autogluon.check_presets("best_quality") == "best_quality"
    with pytest.raises(ValueError, match="pre-trained weights"):
        autogluon.check_presets("extreme_quality")


@pytest.mark.parametrize(
    ("module", "option", "message"),
    [
        (autogluon, {"presets": 5}, "option presets: 5 is not one of medium_quality"),
        (
            autogluon,
            {"excluded_model_types": "NN_TORCH"},
            "option excluded_model_types: 'NN_TORCH' is not",
        ),
        (
            autogluon,
            {"margin_fraction": -1},
            "option margin_fraction: -1 is not a number from 0 to under 1",
        ),
        (
            autogluon,
            {"reserve_seconds": -100},
            "option reserve_seconds: -100 is not a number of 0 or more",
        ),
        (flaml, {"estimator_list": "lgbm"}, "option estimator_list: 'lgbm' is not a list"),
        (flaml, {"estimator_list": []}, "option estimator_list: names none"),
        (flaml, {"metric": "nonsense"}, "option metric: 'nonsense' is not one of auto, accuracy"),
        (
            flaml,
            {"margin_min_seconds": -1000},
            "option margin_min_seconds: -1000 is not a number of 0 or more",
        ),
        (
            flaml,
            {"margin_fraction": 1.0},
            "option margin_fraction: 1.0 is not a number from 0 to under 1",
        ),
        (
            flaml,
            {"min_label_seconds": -2},
            "option min_label_seconds: -2 is not a number of 0 or more",
        ),
        (
            autosklearn,
            {"margin_fraction": 1.5},
            "option margin_fraction: 1.5 is not a number from 0 to under 1",
        ),
        (
            autosklearn,
            {"margin_min_seconds": -60},
            "option margin_min_seconds: -60 is not a number of 0 or more",
        ),
        (
            autosklearn,
            {"per_run_fraction": 0},
            "option per_run_fraction: 0 is not a number above 0 and at most 1",
        ),
        (
            autosklearn,
            {"memory_limit_mb": -1},
            "option memory_limit_mb: -1 is not a whole number of 1 or more",
        ),
    ],
)
def test_bad_options_are_refused_before_any_task_starts(
    module: object, option: dict[str, object], message: str
) -> None:
    # Before: each was a task run to an error row or a wrong search: presets 5 and the string
    # "lgbm" (read letter by letter: "l is not a built-in learner") failed in the worker; an
    # unknown FLAML metric failed every trial, the row saying "finished no model ... give it
    # more time"; a negative margin or reserve let the search run past the budget or the hard
    # limit; "NN_TORCH" as a string excluded no model type.
    from decathlon import budgets as budgets_file
    from decathlon.errors import BudgetError

    adapter = module.ADAPTER  # type: ignore[attr-defined]
    adapter.check_options(dict(adapter.options))  # the defaults pass
    budgets = budgets_file.load(Path(__file__).parents[1] / "budgets.toml")
    with pytest.raises(BudgetError, match=f"adapter '{adapter.name}': {message}"):
        budgets.options("quick", adapter, option)


def test_modules_are_import_light_and_tabular_is_python_39() -> None:
    ast.parse(Path(tabular.__file__).read_text(), feature_version=(3, 9))
    code = (
        "import sys, decathlon_adapters.autogluon, decathlon_adapters.flaml;"
        "print(sorted(m for m in ('autogluon','flaml','pandas','sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
