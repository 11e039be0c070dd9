"""AutoGluon tabular 1.6 on the flattened pixels, on auto-sklearn's footing.

Runs in its own Python 3.11 environment (``python -m decathlon setup autogluon``). This module is
imported by the harness for registration and by the worker inside that environment; AutoGluon
is imported only inside :func:`run`.

What it does with a task (its footing, shared with ``autosklearn``, is in
``decathlon_adapters.tabular``):

- Input: the flattened pixels in [0, 1] as a DataFrame of 784 (2,352) float columns.
- Fitting and selection: ``TabularPredictor.fit(train_data=train, tuning_data=val)``. With the
  default preset, ``medium_quality``, every model is fit on the official train split, early
  stopped on the val split, and AutoGluon's weighted ensemble is built from the val predictions,
  as auto-sklearn's is. The bagged presets (``good_quality``, ``high_quality``,
  ``best_quality``) cross-validate on train instead; the adapter then passes
  ``use_bag_holdout=True`` so that val stays the holdout for the ensemble, and turns their
  ``refit_full`` off (a refit on train+val would make the val scores in-sample and cost time
  outside the budget, as auto-sklearn's refit). The presets that load pre-trained foundation
  models (``extreme_quality``, ``tabarena``, ...) are refused: they download weights.
- Models: AutoGluon's own portfolio for the preset (LightGBM, CatBoost, XGBoost, random forests,
  extra trees) less the torch-based ``NN_TORCH`` and ``FASTAI`` (option
  ``excluded_model_types``): the environment carries no PyTorch. Each model gets the task's seed
  through its own seed parameter (AutoGluon otherwise seeds every model with 0).
- Budget: ``time_limit`` is the soft budget less the shared margin, capped to end
  ``reserve_seconds`` before the hard limit; ``num_cpus`` is the task's ``n_jobs``, no GPU;
  ``memory_limit`` follows the task's memory cap when it has one. AutoGluon stops starting
  models and tells each model the time left, then ensembles what finished.
- Tasks: binary and multi-class (ordinal as multi-class); chestmnist's 14 labels as 14 binary
  predictors, each given an equal share of the time left when its turn comes, at least
  ``min_label_seconds`` (AutoGluon spends about 2 s preparing the 784 columns before any model)
  but never past the reserve before the hard limit (AutoGluon has no multi-label mode; its
  documented ``MultilabelPredictor`` recipe is the same loop). A label whose search trains no
  model in its time scores its training prior (AUC 0.5) and is named in the notes
  (``labels_without_model``); the task is an error only when no label has a model but some
  label's search ran, as is a single-label search that trains none ("give it more time"). A
  label with one value in the training split is predicted as that constant.
- Output: the predictors live in the task's scratch folder (deleted afterwards); AutoGluon's
  ``leaderboard()`` (every model, its val score, fit and predict times) is saved as
  ``leaderboard.csv`` in the task's output folder (with a ``label`` column for chestmnist); the
  notes name the models trained, the chosen model and the ensemble's weights.
"""

from __future__ import annotations

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

VERSION = "1.6.3"

#: Exact pins, checked by building a fresh environment on the project's machine (about 2 min,
#: 1.1 GB). ``autogluon.tabular`` with only the extras of the models used: no PyTorch, no ray.
ENVIRONMENT = Environment(
    python="3.11",
    requirements=(
        f"autogluon.tabular[lightgbm,catboost,xgboost]=={VERSION}",
        f"autogluon.core=={VERSION}",
        f"autogluon.features=={VERSION}",
        f"autogluon.common=={VERSION}",
        "lightgbm==4.7.0",
        "catboost==1.2.10",
        "xgboost-cpu==3.2.0",
        "scikit-learn==1.9.1",
        "pandas==2.3.3",
        "numpy==2.4.6",
        "scipy==1.17.1",
    ),
)

#: How AutoGluon 1.6 says that no model finished: the trainer's AssertionError when the time
#: left is none ("Not enough time left to train models"; "... for the full fit" with dynamic
#: stacking) and the predictor's RuntimeError after a fit that kept no model. Both are builtin
#: exceptions, so the message tells them from any other AssertionError or RuntimeError.
NO_MODEL_MESSAGES = (
    "Not enough time left to train models",
    "No models were trained successfully",
)

#: Presets that train from scratch (the issue's medium/good/high/best). The others in AutoGluon
#: 1.6 (extreme_quality, tabarena, noncommercial, experimental) fetch foundation-model weights.
PRESETS = ("medium_quality", "good_quality", "high_quality", "best_quality")
BAGGED_PRESETS = ("good_quality", "high_quality", "best_quality")

OPTIONS: dict[str, Any] = {
    **tabular.MARGIN_OPTIONS,
    "min_label_seconds": 5,
    "presets": "medium_quality",
    "excluded_model_types": ["NN_TORCH", "FASTAI"],
    "eval_metric": None,  # AutoGluon's default: accuracy
}

#: Columns of the saved leaderboard.csv, in this order (``label`` for chestmnist only).
LEADERBOARD_COLUMNS = [
    "label",
    "model",
    "score_val",
    "eval_metric",
    "pred_time_val",
    "fit_time",
    "pred_time_val_marginal",
    "fit_time_marginal",
    "stack_level",
    "can_infer",
    "fit_order",
]


def check_options(options: dict[str, Any]) -> None:
    """Refuse, in the harness before any task starts, negative margins, a preset that is none
    of :data:`PRESETS` and an ``excluded_model_types`` that is not a list of names."""
    tabular.check_options(options)
    check_presets(options["presets"])
    tabular.check_names(options, "excluded_model_types")


ADAPTER = Adapter(
    name="autogluon",
    run="decathlon_adapters.autogluon:run",
    description=f"AutoGluon tabular {VERSION} (medium_quality, no NN) on the flattened pixels,"
    " val split as tuning data",
    environment=ENVIRONMENT,
    options=OPTIONS,
    check_options=check_options,
    version=VERSION,
)


@hookimpl
def decathlon_register_adapters(register) -> None:
    register(ADAPTER)


def check_presets(presets: Any) -> str:
    rule = Choice("presets", PRESETS, note="the others load pre-trained weights, never loaded here")
    check_table({"presets": presets}, (rule,))
    return presets


def seeded_hyperparameters(presets: str, seed: int, excluded: list[str]) -> dict[str, Any]:
    """The preset's model portfolio with ``seed`` set through each model's own seed parameter."""
    from autogluon.tabular.configs.hyperparameter_configs import get_hyperparameter_config
    from autogluon.tabular.configs.presets_configs import tabular_presets_dict
    from autogluon.tabular.registry import ag_model_registry

    name = tabular_presets_dict[presets].get("hyperparameters", "default")
    portfolio = get_hyperparameter_config(name)
    seeded: dict[str, Any] = {}
    for key, configs in portfolio.items():
        if key in excluded:
            continue
        seed_name = ag_model_registry.key_to_cls(key).seed_name
        listed = configs if isinstance(configs, list) else [configs]
        seeded[key] = [{**c, seed_name: seed} if seed_name else dict(c) for c in listed]
    return seeded


def memory_limit_gb(task: Task) -> Any:
    """AutoGluon's soft memory limit in GB: 80% of the task's cap, else its own "auto"."""
    if task.budget.memory_mb:
        return round(task.budget.memory_mb * 0.8 / 1024, 2)
    return "auto"


def _ensemble_weights(info: Any) -> dict[str, float]:
    """The model weights anywhere in AutoGluon's ``model_info`` of a weighted ensemble."""
    if isinstance(info, dict):
        weights = info.get("model_weights")
        if isinstance(weights, dict):
            return {str(k): round(float(v), 4) for k, v in weights.items()}
        for value in info.values():
            found = _ensemble_weights(value)
            if found:
                return found
    return {}


class _Fitted:
    """One fitted TabularPredictor, or fixed class probabilities where there is none (a label
    with one value in train, or a label whose search trained no model in its time)."""

    def __init__(self, predictor: Any = None, prior: np.ndarray | None = None) -> None:
        self.predictor = predictor
        self.prior = prior  # class probabilities given to every image when there is no model

    def proba(self, frame: Any, n_classes: int) -> np.ndarray:
        if self.predictor is None:
            assert self.prior is not None
            return np.tile(self.prior, (len(frame), 1))
        proba = self.predictor.predict_proba(frame, as_multiclass=True)
        return tabular.class_columns(proba.to_numpy(), list(proba.columns), n_classes)


def _fit_one(
    task: Task,
    train: Any,
    val: Any,
    problem_type: str,
    seconds: float,
    folder: Path,
    hyperparameters: dict[str, Any],
    what: str = "",
) -> tuple[_Fitted, dict[str, Any], list[dict[str, Any]]]:
    """Fit one predictor; return it, its notes and its leaderboard rows.

    ``what`` names the label in messages (" label 3") when there are several."""
    from autogluon.tabular import TabularPredictor

    opts = task.options
    if train["label"].nunique() < 2:
        value = int(train["label"].iloc[0])
        n = 2 if task.dataset.task == MULTI_LABEL else task.dataset.n_classes
        return _Fitted(prior=np.eye(n)[value]), {"constant": value}, []
    presets = opts["presets"]
    extra: dict[str, Any] = {}
    if presets in BAGGED_PRESETS:
        extra = {"use_bag_holdout": True, "refit_full": False, "set_best_to_refit_full": False}
    predictor = TabularPredictor(
        label="label",
        problem_type=problem_type,
        eval_metric=opts["eval_metric"],
        path=str(folder),
        verbosity=2,
    )
    started = time.monotonic()
    try:
        predictor.fit(
            train_data=train,
            tuning_data=val,
            time_limit=seconds,
            presets=presets,
            hyperparameters=hyperparameters,
            excluded_model_types=list(opts["excluded_model_types"]),
            num_cpus=max(1, task.n_jobs),
            num_gpus=0,
            memory_limit=memory_limit_gb(task),
            **extra,
        )
    except (AssertionError, RuntimeError) as exc:
        if not str(exc).startswith(NO_MODEL_MESSAGES):  # a bug, here or in AutoGluon
            raise
        raise tabular.NoModel(
            f"AutoGluon trained no model on {task.dataset.flag}{what} in {seconds:g} s"
            f" ({str(exc).splitlines()[0][:120]}); give it more time"
        ) from exc
    fit_seconds = time.monotonic() - started
    board = predictor.leaderboard(extra_info=False)
    best = predictor.model_best
    notes = {
        "models_trained": int(len(board)),
        "best_model": best,
        "ensemble_weights": _ensemble_weights(predictor.model_info(best)),
        "time_limit": seconds,
        "fit_s": round(fit_seconds, 1),
    }
    return _Fitted(predictor), notes, board.to_dict("records")


def run(task: Task) -> Predictions:
    """Fit AutoGluon on train with val as tuning data; score train, val and test."""
    import autogluon.tabular
    import pandas as pd

    started = time.monotonic()
    opts = task.options
    check_presets(opts["presets"])
    seconds = tabular.search_seconds(task, opts)
    excluded = list(opts["excluded_model_types"])
    hyperparameters = seeded_hyperparameters(opts["presets"], int(task.seed), excluded)
    multi_label = task.dataset.task == MULTI_LABEL
    x = {
        split: tabular.flatten(images)
        for split, images in (("train", task.x_train), ("val", task.x_val), ("test", task.x_test))
    }
    columns = [f"px{i}" for i in range(x["train"].shape[1])]
    frames = {split: pd.DataFrame(values, columns=columns) for split, values in x.items()}
    y_train, y_val = tabular.targets(task)
    log.info(
        "AutoGluon %s on %s: presets %s, time_limit %s s, %s cores",
        autogluon.tabular.__version__,
        task.dataset.flag,
        opts["presets"],
        seconds,
        task.n_jobs,
    )

    def with_label(split: str, y: np.ndarray) -> Any:
        return frames[split].assign(label=y)

    rows: list[dict[str, Any]] = []
    scores: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"presets": opts["presets"], "time_limit": seconds}
    root = task.scratch_dir / "autogluon"
    if multi_label:

        def fit_label(label: int, share: float) -> tuple[_Fitted, dict[str, Any], list[Any]]:
            return _fit_one(
                task,
                with_label("train", y_train[:, label]),
                with_label("val", y_val[:, label]),
                "binary",
                share,
                root / f"label{label}",
                hyperparameters,
                f" label {label}",
            )

        scores, rows, notes = tabular.fit_per_label(
            task,
            seconds,
            y_train,
            frames,
            opts,
            fit_label,
            library="AutoGluon",
            budget_key="time_limit",
            count_key="models_trained",
        )
        info.update(notes)
    else:
        n_classes = task.dataset.n_classes
        problem_type = "binary" if n_classes == 2 else "multiclass"
        fitted, notes, board = _fit_one(
            task,
            with_label("train", y_train),
            with_label("val", y_val),
            problem_type,
            seconds,
            root / "predictor",
            hyperparameters,
        )
        rows = board
        info.update(notes)
        scores = {s: fitted.proba(frame, n_classes) for s, frame in frames.items()}
    tabular.write_rows(
        task.output_dir / "leaderboard.csv",
        rows,
        LEADERBOARD_COLUMNS if multi_label else LEADERBOARD_COLUMNS[1:],
    )
    info["adapter_s"] = round(time.monotonic() - started, 1)
    log.info("AutoGluon finished on %s: %s", task.dataset.flag, info)
    return Predictions(train=scores["train"], val=scores["val"], test=scores["test"], info=info)
