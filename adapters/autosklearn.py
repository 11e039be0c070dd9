"""auto-sklearn 0.15.0 on the flattened pixels: the papers' statistical-AutoML baseline.

Runs in its own Python 3.9 environment (auto-sklearn 0.15 needs scikit-learn 0.24, which has no
wheels for newer Pythons); ``python -m decathlon setup autosklearn`` builds it. This module is
imported by the harness (Python 3.11) for registration and by the worker inside that environment
(Python 3.9), so it stays 3.9-valid and imports auto-sklearn only inside :func:`run`.

What it does with a task:

- Input: every image flattened to 784 values (2,352 for the RGB sets), as in the paper, scaled
  from uint8 to float32 in [0, 1]. The footing it shares with the ``autogluon`` and ``flaml``
  adapters (input, margin, score columns) lives in ``decathlon_adapters.tabular``.
- Model selection on the official val split: train and val are concatenated, in that order, and
  auto-sklearn's holdout is told not to shuffle, with ``train_size`` the train split's share;
  auto-sklearn turns that into a ``PredefinedSplit`` whose training part is exactly the train
  split. Every candidate is trained on the training split and scored on the val split, and the
  ensemble is built from the val predictions. (A ``PredefinedSplit`` passed directly as
  ``resampling_strategy`` is accepted too, but then auto-sklearn refuses to predict before a
  ``refit()``.) By default the models are not refit on train+val afterwards (option ``refit``):
  a refit costs time outside the budget and makes the val scores in-sample. The papers' code
  instead fit on the training split alone with auto-sklearn's default shuffled 67/33 holdout
  inside it, passing the val split only as auto-sklearn's (unused for selection) test set.
- Budget: ``time_left_for_this_task`` is ``budget.time_seconds`` less a margin for starting the
  worker, loading the data and predicting (``margin_fraction`` of it, at least
  ``margin_min_seconds``), but at least 30 s, auto-sklearn's minimum; ``per_run_time_limit`` is
  ``per_run_fraction`` of that, at least ``per_run_min_seconds`` and at most half of it. The
  memory limit per model is the option ``memory_limit_mb``, lowered to fit ``budget.memory_mb``
  shared by ``n_jobs`` workers when the task has a memory cap. The search also ends the margin
  before the harness's hard limit; a hard limit that leaves under 30 s for it is refused at once
  (:func:`search_limits`). ``n_jobs`` and ``seed`` come from
  the task. A search that finishes no model (only auto-sklearn's dummy predictor) is an error.
- Tasks: binary, multi-class and ordinal (as multi-class, like the evaluator) through
  auto-sklearn's classification; chestmnist's 14 labels as a (N, 14) indicator matrix (its
  multilabel mode). Score columns are the dataset's class ids in order (positive class last for
  binary), even when a class is absent from the training data (its column
  scores 0, also when val has it: without a refit the models never saw it).
- Output: auto-sklearn's temporary folder lives in the task's scratch directory and is deleted at
  the end; its ``leaderboard()`` of every model it tried is saved as ``leaderboard.csv`` in the
  task's output directory; the leaderboard's notes get the counts (``models_evaluated``,
  ``models_succeeded``, ``ensemble_size``) and the limits used.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
from decathlon_adapters import tabular
from decathlon_adapters.tabular import class_columns, flatten, margin_seconds

from decathlon.contract import MULTI_LABEL, Adapter, Environment, Predictions, Task
from decathlon.hookspecs import hookimpl
from decathlon.options import Range, check_table

log = logging.getLogger(__name__)

#: auto-sklearn raises ValueError for time_left_for_this_task below 30 s.
MIN_SEARCH_SECONDS = 30

#: The recipe verified in ../shared/ENVIRONMENTS.md: without the pins pip takes numpy 2 and
#: pandas 2 and auto-sklearn fails. ConfigSpace built from source with Cython 3 breaks
#: auto-sklearn's search space, so only its published wheels are taken. auto-sklearn imports
#: pkg_resources, which setuptools 81 removed (and uv's environments have no setuptools at all).
ENVIRONMENT = Environment(
    python="3.9",
    requirements=(
        "auto-sklearn==0.15.0",
        "numpy<1.24",
        "pandas<2",
        "scipy<1.11",
        "dask<2023",
        "distributed<2023",
        "setuptools<81",
    ),
    pip_args=("--only-binary", "ConfigSpace"),
)

OPTIONS: dict[str, Any] = {
    "memory_limit_mb": 4096,
    "per_run_fraction": 0.1,
    "per_run_min_seconds": 30,
    "margin_fraction": 0.05,
    "margin_min_seconds": 10,
    "ensemble_size": 50,
    "refit": False,
}

#: Columns of the saved leaderboard.csv, in this order. auto-sklearn
#: 0.15's ``detailed=True`` fails with a KeyError when an ensemble member is missing from the run
#: history (it fills only these columns for such a model), so the three preprocessor/balancing
#: columns are left out.
LEADERBOARD_COLUMNS = [
    "model_id",  # first: auto-sklearn places "rank" relative to it
    "rank",
    "ensemble_weight",
    "type",
    "cost",
    "duration",
    "config_id",
    "train_loss",
    "seed",
    "start_time",
    "end_time",
    "budget",
    "status",
    "config_origin",
]


#: The options' ranges besides the margins': out of them auto-sklearn has nothing to run with
#: (no share of the search per model, no memory per model).
RANGES = (
    Range("per_run_fraction", 0, 1, above=True),
    Range("per_run_min_seconds", 0),
    Range("memory_limit_mb", 1, whole=True),
)


def check_options(options: dict[str, Any]) -> None:
    """Refuse, in the harness before any task starts, margins outside
    :data:`tabular.MARGIN_RANGES` and an option outside :data:`RANGES`."""
    tabular.check_options(options)
    check_table(options, RANGES)


ADAPTER = Adapter(
    name="autosklearn",
    run="decathlon_adapters.autosklearn:run",
    description="auto-sklearn 0.15.0 on the flattened pixels, val split for model selection"
    " (Python 3.9 environment)",
    environment=ENVIRONMENT,
    options=OPTIONS,
    check_options=check_options,
    version="0.15.0",
)


@hookimpl
def decathlon_register_adapters(register) -> None:
    register(ADAPTER)


def time_limits(budget_seconds: float, options: dict[str, Any]) -> tuple[int, int]:
    """(time_left_for_this_task, per_run_time_limit) in whole seconds for a soft budget.

    The search gets the budget less a margin (``margin_fraction`` of it, at least
    ``margin_min_seconds``) for the worker's start, data loading and prediction; one model gets
    ``per_run_fraction`` of the search time, at least ``per_run_min_seconds`` and never more than
    half the search time (auto-sklearn's own cap). auto-sklearn refuses less than 30 s of search,
    so budgets under about 40 s are overrun: the search still gets 30 s.
    """
    margin = margin_seconds(budget_seconds, options)
    total = max(MIN_SEARCH_SECONDS, int(math.floor(budget_seconds - margin)))
    return total, _per_run_limit(total, options)


def _per_run_limit(total: int, options: dict[str, Any]) -> int:
    per_run = max(float(options["per_run_min_seconds"]), float(options["per_run_fraction"]) * total)
    # auto-sklearn itself halves a per-model limit that leaves room for fewer than two models.
    return max(1, min(total // 2, int(per_run)))


def search_limits(task: Task, options: dict[str, Any], now: float) -> tuple[int, int]:
    """:func:`time_limits` for the task's soft budget, the search also ending the margin before
    the harness's hard limit (``task.deadline``), counted from ``now`` (``time.time()``).

    auto-sklearn cannot search less than 30 s: when the hard limit leaves less, the task would
    only be killed there, so this refuses it at once, in one line saying what would fit.
    """
    assert task.budget.time_seconds is not None
    total, per_run = time_limits(task.budget.time_seconds, options)
    margin = margin_seconds(task.budget.time_seconds, options)
    room = task.deadline - now - margin
    if room >= total:
        return total, per_run
    if room < MIN_SEARCH_SECONDS:
        hard = task.budget.hard_limit_seconds
        raise RuntimeError(
            f"auto-sklearn searches at least {MIN_SEARCH_SECONDS} s, but the hard limit of"
            f" {hard:g} s leaves {max(0.0, room):.0f} s for it (less {margin:g} s kept to"
            f" predict); give the task a hard limit of at least"
            f" {math.ceil(hard - room + MIN_SEARCH_SECONDS)} s (hard_limit_seconds or"
            " grace_seconds in budgets.toml, or a larger --scale-factor)"
        )
    total = int(math.floor(room))
    return total, _per_run_limit(total, options)


def memory_limit(task: Task) -> int:
    """auto-sklearn's per-model memory limit in MB, fitted under the task's cap if it has one."""
    limit = int(task.options["memory_limit_mb"])
    if task.budget.memory_mb:
        # n_jobs models at once, plus the main process holding the data and the ensemble.
        share = int(task.budget.memory_mb * 0.8 / max(1, task.n_jobs))
        limit = min(limit, share)
    return max(1024, limit)


def model_classes(y_train: np.ndarray, y_fit: np.ndarray, refit: bool) -> np.ndarray:
    """The class ids of auto-sklearn's ``predict_proba`` columns, in order.

    auto-sklearn label-encodes train+val (sorted), but each model's columns are the classes of
    the rows it was fit on: the train split's (a class only in val has no column), or train+val's
    after a refit.
    """
    return np.unique(y_fit if refit else y_train)


def _dummy_weight(model: Any) -> float:
    """The ensemble's weight on auto-sklearn's dummy (class-prior) model, run number 1.

    auto-sklearn puts it in the ensemble when no model it finished beats it on the val split;
    at weight 1.0 the scores are constant and the AUC is 0.5.
    """
    pairs = model.automl_.ensemble_.get_identifiers_with_weights()
    return round(float(sum(w for (_, num_run, _), w in pairs if num_run == 1)), 4)


def run(task: Task) -> Predictions:
    """Fit auto-sklearn on train with the val split for selection; score train, val and test."""
    started = time.monotonic()
    opts = task.options
    if task.budget.time_seconds is None:
        raise ValueError(
            "the autosklearn adapter needs a time budget (time_seconds in budgets.toml)"
        )
    search_limits(task, opts, time.time())  # refuses at once a hard limit too short to search
    import autosklearn
    import pandas as pd
    from autosklearn.classification import AutoSklearnClassifier

    memory = memory_limit(task)
    multi_label = task.dataset.task == MULTI_LABEL

    x_train, x_val, x_test = (flatten(x) for x in (task.x_train, task.x_val, task.x_test))
    if multi_label:
        y_train, y_val = (np.asarray(y, dtype=np.int64) for y in (task.y_train, task.y_val))
    else:
        y_train, y_val = (np.asarray(y, dtype=np.int64).ravel() for y in (task.y_train, task.y_val))
    x_fit = np.concatenate([x_train, x_val])
    y_fit = np.concatenate([y_train, y_val])
    # Unshuffled holdout: auto-sklearn makes it a PredefinedSplit with the first
    # floor(train_size * N) rows for training, i.e. exactly the official train split here (the
    # half row keeps floor() off by-one rounding).
    train_size = (len(x_train) + 0.5) / len(x_fit)
    if int(np.floor(train_size * len(x_fit))) != len(x_train):  # auto-sklearn's own arithmetic
        raise RuntimeError(f"holdout train_size {train_size!r} does not cut at the val split")

    total, per_run = search_limits(task, opts, time.time())  # after the import and the data
    tmp_folder = task.scratch_dir / "autosklearn_tmp"  # auto-sklearn creates it; must not exist
    settings: dict[str, Any] = {
        "time_left_for_this_task": total,
        "per_run_time_limit": per_run,
        "memory_limit": memory,
        "n_jobs": max(1, task.n_jobs),
        "seed": int(task.seed),
        "ensemble_size": int(opts["ensemble_size"]),
        "resampling_strategy": "holdout",
        "resampling_strategy_arguments": {"train_size": train_size, "shuffle": False},
        # Its default may subsample rows (shuffling them) when the data is large against the
        # memory limit, which would break the split above; the pixels are float32 already.
        "dataset_compression": False,
        "tmp_folder": str(tmp_folder),
        "delete_tmp_folder_after_terminate": True,
    }
    log.info("auto-sklearn %s on %s: %s", autosklearn.__version__, task.dataset.flag, settings)
    model = AutoSklearnClassifier(**settings)
    fit_started = time.monotonic()
    model.fit(x_fit, y_fit, dataset_name=task.dataset.flag)
    fit_seconds = time.monotonic() - fit_started
    leaderboard_error = None
    try:
        board = model.leaderboard(ensemble_only=False, top_k="all", include=LEADERBOARD_COLUMNS)
        board.to_csv(task.output_dir / "leaderboard.csv")
    except Exception as exc:  # a side artifact: never lose the predictions over it
        log.warning("auto-sklearn's leaderboard() failed: %r", exc)
        leaderboard_error = f"{type(exc).__name__}: {exc}"[:200]
    results = pd.DataFrame(model.cv_results_)
    statuses = results["status"].value_counts().to_dict() if len(results) else {}
    n_success = int(statuses.get("Success", 0))
    if n_success == 0:
        # auto-sklearn would fall back to its dummy (prior) predictor: not a result to report.
        raise RuntimeError(
            f"auto-sklearn finished no model in {total} s on {task.dataset.flag}"
            f" (runs by status: {statuses or 'none'}); give it more time"
        )
    refit = bool(opts["refit"])
    if refit:
        model.refit(x_fit, y_fit)

    if multi_label:

        def predict(x: np.ndarray) -> np.ndarray:
            return np.clip(np.asarray(model.predict_proba(x), dtype=np.float64), 0.0, 1.0)

    else:
        classes = model_classes(y_train, y_fit, refit)

        def predict(x: np.ndarray) -> np.ndarray:
            return class_columns(model.predict_proba(x), classes, task.dataset.n_classes)

    scores = {"train": predict(x_train), "val": predict(x_val), "test": predict(x_test)}

    info = {
        "models_evaluated": int(len(results)),
        "models_succeeded": n_success,
        "runs_by_status": {str(k): int(v) for k, v in statuses.items()},
        "ensemble_size": len(model.get_models_with_weights()),
        "dummy_weight": _dummy_weight(model),
        "time_left_for_this_task": total,
        "per_run_time_limit": per_run,
        "memory_limit_mb": memory,
        "refit": refit,
        "fit_s": round(fit_seconds, 1),
        "adapter_s": round(time.monotonic() - started, 1),
    }
    if leaderboard_error:
        info["leaderboard_error"] = leaderboard_error
    log.info("auto-sklearn finished on %s: %s", task.dataset.flag, info)
    return Predictions(train=scores["train"], val=scores["val"], test=scores["test"], info=info)
