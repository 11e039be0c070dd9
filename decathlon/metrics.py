"""Where a score is computed: AUC and ACC exactly as the MedMNIST evaluator computes them.

The rules of ``medmnist.evaluator.getAUC`` / ``getACC`` (medmnist 3.0.2), per task type:

- binary-class: the score of the positive class is the last column; AUC on it, ACC at 0.5.
- multi-class and ordinal-regression: AUC is the mean over classes of one-vs-rest AUCs; ACC
  compares the argmax with the label.
- multi-label, binary-class: AUC and ACC (at 0.5) per label, then the mean over labels.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from decathlon import files
from decathlon.contract import BINARY, MULTI_LABEL, TASK_TYPES, DatasetInfo

THRESHOLD = 0.5
#: The most bytes of the run's name an evaluator file's name holds. The rest of the longest name
#: (``pneumoniamnist_224_train_[AUC]0.000_[ACC]0.000@`` and ``.csv``, 51 bytes) and the hidden
#: temporary name it is written under (about 30 bytes more) then stay within the 255 bytes a
#: file name may have.
EVALUATOR_RUN_BYTES = 150


def auc(task: str, y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve as MedMNIST's ``getAUC``."""
    from sklearn.metrics import roc_auc_score  # imported here: seconds of start-up otherwise

    _check_task(task)
    y_true = np.asarray(y_true).squeeze()
    y_score = np.asarray(y_score).squeeze()
    if task == MULTI_LABEL:
        return _mean([roc_auc_score(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])])
    if task == BINARY:
        if y_score.ndim == 2:
            y_score = y_score[:, -1]
        return float(roc_auc_score(y_true, y_score))
    return _mean(
        [roc_auc_score((y_true == i).astype(float), y_score[:, i]) for i in range(y_score.shape[1])]
    )


def why_auc_undefined(task: str, y_true: np.ndarray, n_outputs: int) -> str:
    """Why :func:`auc` (as ``getAUC``) is NaN for these labels: the classes (for multi-label,
    the labels) whose one-vs-rest AUC has a single class to go on. Empty when none has."""
    y_true = np.asarray(y_true).squeeze()
    if task == MULTI_LABEL:
        alike = [i for i in range(n_outputs) if len(np.unique(y_true[:, i])) < 2]
        plural = "s" if len(alike) > 1 else ""
        return f"a single value in label{plural} {_names(alike)}" if alike else ""
    if task == BINARY:
        return "a single class" if len(np.unique(y_true)) < 2 else ""
    missing = [i for i in range(n_outputs) if not np.any(y_true == i)]
    return f"no image of class {_names(missing)}" if missing else ""


def _names(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:5])
    return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def acc(task: str, y_true: np.ndarray, y_score: np.ndarray, threshold: float = THRESHOLD) -> float:
    """Accuracy as MedMNIST's ``getACC``."""
    from sklearn.metrics import accuracy_score

    _check_task(task)
    y_true = np.asarray(y_true).squeeze()
    y_score = np.asarray(y_score).squeeze()
    if task == MULTI_LABEL:
        y_pred = y_score > threshold
        return _mean([accuracy_score(y_true[:, i], y_pred[:, i]) for i in range(y_true.shape[1])])
    if task == BINARY:
        if y_score.ndim == 2:
            y_score = y_score[:, -1]
        return float(accuracy_score(y_true, y_score > threshold))
    return float(accuracy_score(y_true, np.argmax(y_score, axis=-1)))


def _mean(values: list[float]) -> float:
    """The mean as medmnist takes it: a running sum in order, then one division. ``np.mean``
    sums pairwise, and the last bit can differ (0.5125000000000001 for 0.5125: ACC 0.513 where
    medmnist says 0.512)."""
    total = 0.0
    for value in values:
        total += float(value)
    return total / len(values)


def _check_task(task: str) -> None:
    if task not in TASK_TYPES:
        raise ValueError(f"unknown task type {task!r}; expected one of {TASK_TYPES}")


def check_scores(scores: np.ndarray, n_rows: int, info: DatasetInfo) -> str | None:
    """Why ``scores`` break the contract (one short line), or None when they keep it.

    Scores must be a finite float array shaped (n_rows, n_classes) with values in [0, 1].
    """
    scores = np.asarray(scores)
    expected = (n_rows, info.n_outputs)
    real = np.issubdtype(scores.dtype, np.number) and not np.iscomplexobj(scores)
    if scores.dtype == object or not real:
        return f"scores have dtype {scores.dtype}; expected floats"
    if scores.shape != expected:
        return f"scores have shape {scores.shape}; expected {expected}"
    if not np.all(np.isfinite(scores)):
        return f"{int(np.sum(~np.isfinite(scores)))} scores are NaN or infinite"
    low, high = float(scores.min()), float(scores.max())
    if low < 0.0 or high > 1.0:
        return f"scores range over [{low:.4g}, {high:.4g}]; expected probabilities in [0, 1]"
    return None


def size_flag(size: int | None = None) -> str:
    """MedMNIST's ``size_flag``: empty for the 28x28 files, ``_64`` and so on otherwise."""
    return "" if size is None or size == 28 else f"_{size}"


def evaluator_run(run: str) -> str:
    """The run part of an evaluator file's name: the run's name with each ``.`` and ``@`` made
    ``-`` (``review-dot.v2`` -> ``review-dot-v2``).

    medmnist 3.0.2's ``Evaluator.parse_and_evaluate`` reads the run back from the name as
    ``filename.split("@")[-1].split(".")[0]`` and writes its copy of the file under it: a dot in
    the run would cut it there (``...@review-dot.v2.csv`` re-written as ``...@review-dot.csv``),
    an ``@`` would cut it at the front. Without either, medmnist writes the same name again.
    A run's name longer than :data:`EVALUATOR_RUN_BYTES` (in the file system's encoding) is
    cut there: the whole name would not fit in a file name.
    """
    part = run.replace(".", "-").replace("@", "-")
    while len(os.fsencode(part)) > EVALUATOR_RUN_BYTES:
        part = part[:-1]
    return part


def evaluator_filename(
    flag: str, split: str, auc_value: float, acc_value: float, run: str, size: int | None = None
) -> str:
    """The name MedMNIST's ``Evaluator.get_standard_evaluation_filename`` gives a scores file:
    ``{flag}{size_flag}_{split}_[AUC]{auc:.3f}_[ACC]{acc:.3f}@{run}.csv``, the run part as
    :func:`evaluator_run` makes it (one that medmnist parses back whole)."""
    return (
        f"{flag}{size_flag(size)}_{split}_[AUC]{auc_value:.3f}_[ACC]{acc_value:.3f}"
        f"@{evaluator_run(run)}.csv"
    )


def save_evaluator_csv(
    folder: Path,
    flag: str,
    split: str,
    scores: np.ndarray,
    auc_value: float,
    acc_value: float,
    run: str,
    size: int | None = None,
) -> Path:
    """Write scores exactly as MedMNIST's ``Evaluator.evaluate(y_score, save_folder=...)`` does:
    ``pd.DataFrame(y_score).to_csv(path, header=None)``, that is the row number, then one column
    per class or label; no header line, no byte-order mark.

    ``medmnist.evaluator.Evaluator.parse_and_evaluate(path)`` re-scores the file against the
    split's labels (and rewrites the same bytes under the same name).
    """
    import pandas as pd  # imported here: the worker's environments need not have pandas

    if math.isnan(auc_value) or math.isnan(acc_value):
        raise ValueError("cannot name an evaluator file after a NaN score")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / evaluator_filename(flag, split, auc_value, acc_value, run, size)
    with files.replacing(path) as tmp:
        pd.DataFrame(np.asarray(scores)).to_csv(tmp, header=None)
    return path
