"""FLAML 2.7 AutoML on the flattened pixels, on auto-sklearn's footing.

Runs in its own Python 3.11 environment (``python -m decathlon setup flaml``). This module is
imported by the harness for registration and by the worker inside that environment; FLAML is
imported only inside :func:`run`.

What it does with a task (its footing, shared with ``autosklearn``, is in
``decathlon_adapters.tabular``):

- Input: the flattened pixels in [0, 1], 784 (2,352) float32 columns.
- Fitting and selection: ``AutoML.fit(X_train, y_train, X_val=val, y_val=val)``: every trial is
  trained on the official train split and scored on the val split, and with a given validation
  set FLAML keeps the best trial's model as it is (no retraining on more data).
- Search: FLAML's default estimator list for classification without CatBoost (``lgbm``, ``rf``,
  ``xgboost``, ``extra_tree``, ``xgb_limitdepth``, ``sgd``, ``lrl1``; option ``estimator_list``),
  its default metric (``auto``: ROC AUC for binary, log loss for multi-class; option ``metric``),
  ``seed`` and ``n_jobs`` from the task.
- Budget: ``time_budget`` is the soft budget less the shared margin, capped to end
  ``reserve_seconds`` before the hard limit. FLAML tells each trial the time left and starts no
  trial after the budget; the best model so far is the result.
- Tasks: binary and multi-class (ordinal as multi-class); chestmnist's 14 labels as 14 binary
  searches, each given an equal share of the time left when its turn comes, at least
  ``min_label_seconds`` but never past the reserve before the hard limit (FLAML has no
  multi-label mode). A label with one value in the training split is predicted as that
  constant; a label whose search finished no model scores its training prior (AUC 0.5) and is
  named in the notes (``labels_without_model``); the task is an error only when no label has a
  model but some label's search ran.
- Output: FLAML's search log of every trial (``flaml.log``, ``log_type="all"``; one per label for
  chestmnist) and ``leaderboard.csv`` made from it (trial, estimator, val loss, times, config) are
  kept in the task's output folder; the notes name the trials run and the chosen estimator with
  its val loss.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from decathlon_adapters import tabular

from decathlon.contract import MULTI_LABEL, Adapter, Environment, Predictions, Task
from decathlon.hookspecs import hookimpl
from decathlon.options import Choice, check_table

log = logging.getLogger(__name__)

VERSION = "2.7.0"

#: Exact pins, checked by building a fresh environment on the project's machine. Not
#: ``flaml[automl]``: that extra takes the ``xgboost`` wheel with NVIDIA's NCCL (about 300 MB);
#: ``xgboost-cpu`` provides the same module. FLAML 2.7 wants xgboost < 3.
ENVIRONMENT = Environment(
    python="3.11",
    requirements=(
        f"flaml=={VERSION}",
        "lightgbm==4.7.0",
        "xgboost-cpu==2.1.4",
        "scikit-learn==1.9.1",
        "pandas==2.3.3",
        "numpy==2.4.6",
        "scipy==1.17.1",
    ),
)

#: FLAML's own default for classification when CatBoost is not installed.
ESTIMATORS = ["lgbm", "rf", "xgboost", "extra_tree", "xgb_limitdepth", "sgd", "lrl1"]

#: FLAML 2.7's own metric names (``flaml.automl.ml.sklearn_metric_name_set``) and ``auto``:
#: any other name fails every trial, and the search ends with no model.
METRICS = (
    "auto",
    "accuracy",
    "roc_auc",
    "roc_auc_ovr",
    "roc_auc_ovo",
    "roc_auc_weighted",
    "roc_auc_ovr_weighted",
    "roc_auc_ovo_weighted",
    "log_loss",
    "f1",
    "micro_f1",
    "macro_f1",
    "ap",
    "ndcg",
    "r2",
    "rmse",
    "mae",
    "mse",
    "mape",
)

OPTIONS: dict[str, Any] = {
    **tabular.MARGIN_OPTIONS,
    "min_label_seconds": 2,
    "estimator_list": ESTIMATORS,
    "metric": "auto",
}

#: Columns of the saved leaderboard.csv, in this order (``label`` for chestmnist only).
LEADERBOARD_COLUMNS = [
    "label",
    "record_id",
    "learner",
    "validation_loss",
    "chosen",
    "trial_time",
    "wall_clock_time",
    "sample_size",
    "config",
]


def check_options(options: dict[str, Any]) -> None:
    """Refuse, in the harness before any task starts, negative margins, an ``estimator_list``
    that is not a list of names and a ``metric`` FLAML does not know (:data:`METRICS`)."""
    tabular.check_options(options)
    tabular.check_names(options, "estimator_list", empty=False)
    check_table(options, (Choice("metric", METRICS),))


ADAPTER = Adapter(
    name="flaml",
    run="decathlon_adapters.flaml:run",
    description=f"FLAML {VERSION} AutoML on the flattened pixels, val split for selection",
    environment=ENVIRONMENT,
    options=OPTIONS,
    check_options=check_options,
    version=VERSION,
)


@hookimpl
def decathlon_register_adapters(register) -> None:
    register(ADAPTER)


def read_search_log(path: Path) -> list[dict[str, Any]]:
    """FLAML's JSON-lines search log as leaderboard rows, marking the trial FLAML chose."""
    rows: list[dict[str, Any]] = []
    best = None
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "curr_best_record_id" in record:
            best = record["curr_best_record_id"]
            continue
        rows.append(
            {
                "record_id": record.get("record_id"),
                "learner": record.get("learner"),
                "validation_loss": record.get("validation_loss"),
                "trial_time": record.get("trial_time"),
                "wall_clock_time": record.get("wall_clock_time"),
                "sample_size": record.get("sample_size"),
                "config": json.dumps(record.get("config"), sort_keys=True),
            }
        )
    for row in rows:
        row["chosen"] = row["record_id"] == best
    return rows


class _Fitted:
    """One fitted AutoML, or fixed class probabilities where there is none (a label with one
    value in train, or a label whose search trained no model in its time)."""

    def __init__(self, automl: Any = None, prior: np.ndarray | None = None) -> None:
        self.automl = automl
        self.prior = prior  # class probabilities given to every image when there is no model

    def proba(self, x: np.ndarray, n_classes: int) -> np.ndarray:
        if self.automl is None:
            assert self.prior is not None
            return np.tile(self.prior, (len(x), 1))
        proba = self.automl.predict_proba(x)
        return tabular.class_columns(proba, list(self.automl.classes_), n_classes)


def _fit_one(
    task: Task,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    seconds: float,
    log_file: Path,
) -> tuple[_Fitted, dict[str, Any], list[dict[str, Any]]]:
    """One FLAML search; return the fitted AutoML, its notes and its leaderboard rows."""
    from flaml import AutoML

    if len(np.unique(y_train)) < 2:
        value = int(y_train[0])
        n = 2 if task.dataset.task == MULTI_LABEL else task.dataset.n_classes
        return _Fitted(prior=np.eye(n)[value]), {"constant": value}, []
    opts = task.options
    automl = AutoML()
    started = time.monotonic()
    automl.fit(
        X_train=x_train,
        y_train=y_train,
        X_val=x_val,
        y_val=y_val,
        task="classification",
        metric=opts["metric"],
        estimator_list=list(opts["estimator_list"]),
        time_budget=seconds,
        seed=int(task.seed),
        n_jobs=max(1, task.n_jobs),
        log_file_name=str(log_file),
        log_type="all",
        verbose=1,
    )
    if automl.model is None:
        raise tabular.NoModel(
            f"FLAML finished no model in {seconds:g} s on {task.dataset.flag}; give it more time"
        )
    fit_seconds = time.monotonic() - started
    rows = read_search_log(log_file) if log_file.is_file() else []
    notes = {
        "trials": len(rows),
        "trials_by_estimator": {
            name: sum(1 for r in rows if r["learner"] == name)
            for name in sorted({str(r["learner"]) for r in rows})
        },
        "best_estimator": automl.best_estimator,
        "best_val_loss": round(float(automl.best_loss), 5),
        "time_budget": seconds,
        "fit_s": round(fit_seconds, 1),
    }
    return _Fitted(automl), notes, rows


def run(task: Task) -> Predictions:
    """Fit FLAML on train with the val split for selection; score train, val and test."""
    import flaml

    started = time.monotonic()
    opts = task.options
    seconds = tabular.search_seconds(task, opts)
    multi_label = task.dataset.task == MULTI_LABEL
    x = {
        split: tabular.flatten(images)
        for split, images in (("train", task.x_train), ("val", task.x_val), ("test", task.x_test))
    }
    y_train, y_val = tabular.targets(task)
    log.info(
        "FLAML %s on %s: time_budget %s s, estimators %s, %s cores",
        flaml.__version__,
        task.dataset.flag,
        seconds,
        opts["estimator_list"],
        task.n_jobs,
    )
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"time_budget": seconds}
    if multi_label:

        def fit_label(label: int, share: float) -> tuple[_Fitted, dict[str, Any], list[Any]]:
            return _fit_one(
                task,
                x["train"],
                y_train[:, label],
                x["val"],
                y_val[:, label],
                share,
                task.output_dir / f"flaml_label{label}.log",
            )

        scores, rows, notes = tabular.fit_per_label(
            task,
            seconds,
            y_train,
            x,
            opts,
            fit_label,
            library="FLAML",
            budget_key="time_budget",
            count_key="trials",
        )
        info.update(notes)
    else:
        n_classes = task.dataset.n_classes
        fitted, notes, rows = _fit_one(
            task,
            x["train"],
            y_train,
            x["val"],
            y_val,
            seconds,
            task.output_dir / "flaml.log",
        )
        info.update(notes)
        scores = {s: fitted.proba(values, n_classes) for s, values in x.items()}
    tabular.write_rows(
        task.output_dir / "leaderboard.csv",
        rows,
        LEADERBOARD_COLUMNS if multi_label else LEADERBOARD_COLUMNS[1:],
    )
    info["adapter_s"] = round(time.monotonic() - started, 1)
    log.info("FLAML finished on %s: %s", task.dataset.flag, info)
    return Predictions(train=scores["train"], val=scores["val"], test=scores["test"], info=info)
