"""What the tabular AutoML adapters (auto-sklearn, AutoGluon, FLAML) share: the same footing.

Every one of them sees a task the same way, so that their rows compare:

- Input: each image flattened to 784 values (2,352 for the RGB sets), scaled from uint8 to
  float32 in [0, 1] (:func:`flatten`).
- Labels: integer class ids (N,) for binary, multi-class and ordinal tasks (ordinal as
  multi-class, as the MedMNIST evaluator scores it), a (N, 14) 0/1 matrix for chestmnist
  (:func:`targets`).
- Time: the search gets the soft budget less a margin for the worker's start, data loading and
  prediction (``margin_fraction`` of it, at least ``margin_min_seconds``), and never more than
  the time left before the harness's hard limit less ``reserve_seconds`` (:func:`search_seconds`).
  Libraries without a multi-label mode fit one model per label, each taking an equal share of
  what is left when it starts (:func:`label_budgets`, :func:`fit_per_label`).
- Scores: one column per class id in order, even for a class absent from the training data
  (:func:`class_columns`).

This module is imported inside the adapters' environments, auto-sklearn's Python 3.9 included,
so it stays Python 3.9-valid and needs numpy alone.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from decathlon.contract import MULTI_LABEL, Task
from decathlon.options import Range, check_table

log = logging.getLogger(__name__)

#: The margin options every tabular adapter accepts, with the same defaults.
MARGIN_OPTIONS: dict[str, Any] = {
    "margin_fraction": 0.05,
    "margin_min_seconds": 10,
    "reserve_seconds": 30,
}


#: The ranges of :data:`MARGIN_OPTIONS` and ``min_label_seconds``: out of them (a negative
#: margin or reserve, a fraction of 1 or more) a search would run past the soft budget or the
#: hard limit.
MARGIN_RANGES = (
    Range("margin_fraction", 0, 1, under=True),
    Range("margin_min_seconds", 0),
    Range("reserve_seconds", 0),
    Range("min_label_seconds", 0),
)


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse, in the harness before any task starts, the margins of :data:`MARGIN_RANGES` that
    the adapter has (auto-sklearn has no ``reserve_seconds``) outside their ranges."""
    check_table(options, [rule for rule in MARGIN_RANGES if rule.key in options])


def check_names(options: Mapping[str, Any], key: str, *, empty: bool = True) -> list[str]:
    """The option ``key`` as a list of names; refuse anything else (a bare name included: it
    would be read letter by letter)."""
    value = options[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f'option {key}: {value!r} is not a list of names, e.g. ["a", "b"]')
    if not value and not empty:
        raise ValueError(f"option {key}: names none")
    return value


class NoModel(RuntimeError):
    """The library trained no model in the time it had."""


def label_prior(y: np.ndarray) -> np.ndarray:
    """[P(0), P(1)] of a 0/1 label in the training split: the scores of a label without a model."""
    p = float(np.mean(y)) if len(y) else 0.0
    return np.array([1.0 - p, p])


def flatten(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28[, 3]) as float32 rows in [0, 1]: (N, 784) or (N, 2352)."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    return x.reshape(len(x), -1)


def targets(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """(y_train, y_val) as int64: (N,) class ids, or (N, n_labels) for a multi-label task."""
    y_train = np.asarray(task.y_train, dtype=np.int64)
    y_val = np.asarray(task.y_val, dtype=np.int64)
    if task.dataset.task == MULTI_LABEL:
        return y_train, y_val
    return y_train.ravel(), y_val.ravel()


def margin_seconds(budget_seconds: float, options: dict[str, Any]) -> float:
    """The part of a soft budget kept back for the worker's start, loading and predicting."""
    return max(
        float(options["margin_min_seconds"]), float(options["margin_fraction"]) * budget_seconds
    )


def search_seconds(
    task: Task, options: dict[str, Any], *, now: Optional[float] = None, minimum: float = 1.0
) -> float:
    """Seconds the library's search may take, counted from ``now`` (``time.time()``).

    The budget counts from the task's start, which the harness fixes as ``task.deadline`` less
    the hard limit, so the worker's start, the library's import and the data's preparation are
    taken from it. The search ends the margin before the budget is up, never later than
    ``reserve_seconds`` before the hard limit, and gets at least ``minimum`` seconds. Outside
    the harness (no deadline) the budget counts from ``now``.
    """
    if task.budget.time_seconds is None:
        raise ValueError("this adapter needs a time budget (time_seconds in budgets.toml)")
    budget = float(task.budget.time_seconds)
    now = time.time() if now is None else now
    started = task.deadline - task.budget.hard_limit_seconds
    if not math.isfinite(started) or started > now:
        started = now
    soft_end = started + budget - margin_seconds(budget, options)
    hard_end = task.deadline - float(options["reserve_seconds"])
    return max(minimum, float(math.floor(min(soft_end, hard_end) - now)))


def label_budgets(
    total_seconds: float,
    n_labels: int,
    *,
    minimum: float = 1.0,
    latest: float = math.inf,
    clock: Any = time.time,
) -> Iterator[tuple[int, float]]:
    """(label, seconds) for one search per label, sharing ``total_seconds`` from now on.

    Each label gets an equal share of what is left when its turn comes, so time one label leaves
    unused goes to the ones after it, and an overrun is taken from them. A share under
    ``minimum`` (what the library needs to train anything) is raised to it, but no search is
    given time past ``latest`` (a ``clock()`` reading: the hard limit less the reserve): a label
    whose turn comes less than a second before it gets 0, no search. Shares are rounded down
    to a tenth of a second, as the notes and messages show them.
    """
    end = clock() + total_seconds
    for label in range(n_labels):
        now = clock()
        share = max(minimum, (end - now) / (n_labels - label))
        left = latest - now
        seconds = max(1.0, min(share, left)) if left >= 1.0 else 0.0
        yield label, math.floor(seconds * 10) / 10


class Fitted(Protocol):
    """A fitted model as the adapters use it: class probabilities, one column per class id."""

    def proba(self, inputs: Any, n_classes: int) -> np.ndarray: ...


class Prior:
    """Fixed class probabilities for every image, where there is no model to ask."""

    def __init__(self, prior: np.ndarray) -> None:
        self.prior = prior

    def proba(self, inputs: Any, n_classes: int) -> np.ndarray:
        return np.tile(self.prior, (len(inputs), 1))


#: One label's search: (label, seconds) -> (the fitted model, its notes, its leaderboard rows).
FitLabel = Callable[[int, float], "tuple[Fitted, dict[str, Any], list[dict[str, Any]]]"]


def fit_per_label(
    task: Task,
    seconds: float,
    y_train: np.ndarray,
    inputs: Mapping[str, Any],
    options: Mapping[str, Any],
    fit_label: FitLabel,
    *,
    library: str,
    budget_key: str,
    count_key: str,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]], dict[str, Any]]:
    """One search per label of a multi-label task (chestmnist), sharing ``seconds``.

    Each label's time comes from :func:`label_budgets`. A label whose search ends without a
    model (:class:`NoModel`), or whose turn comes when no time is left before the reserve (no
    search is started then), scores its training prior while the other labels' models stand;
    when no label has a model the task fails, unless no label's search started at all (the
    reserve had passed as the task's search began: every label scores its prior, as a
    single-label task's search then still gets its 1 s). Returns the scores per split
    (N, n_labels), the libraries' leaderboard rows with a ``label`` column, and the notes:
    ``count_key`` summed over the labels, ``labels_without_model`` and each label's own notes.
    """
    n_labels = y_train.shape[1]
    rows: list[dict[str, Any]] = []
    per_label: list[dict[str, Any]] = []
    columns: dict[str, list[np.ndarray]] = {split: [] for split in inputs}
    shares = label_budgets(
        seconds,
        n_labels,
        minimum=float(options["min_label_seconds"]),
        latest=task.deadline - float(options["reserve_seconds"]),
    )
    searched = False
    for label, share in shares:
        fitted: Fitted
        try:
            if share <= 0:
                raise NoModel(
                    f"{library}: no time left for label {label} of {task.dataset.flag} before"
                    f" the hard limit's reserve of {float(options['reserve_seconds']):g} s"
                )
            searched = True
            fitted, notes, board = fit_label(label, share)
        except NoModel as exc:
            # The other labels' models stand; this label scores its training prior.
            log.warning("%s; label %d scores its prior", exc, label)
            fitted, board = Prior(label_prior(y_train[:, label])), []
            notes = {"no_model": str(exc)[:200], budget_key: share}
        rows += [{"label": label, **row} for row in board]
        per_label.append({"label": label, **notes})
        for split, values in inputs.items():
            columns[split].append(fitted.proba(values, 2)[:, 1])
    without = [notes["label"] for notes in per_label if "no_model" in notes]
    if len(without) == n_labels and searched:
        raise NoModel(
            f"{library} finished no model for any label of {task.dataset.flag} in"
            f" {seconds:g} s; give it more time"
        )
    info = {
        count_key: sum(int(notes.get(count_key, 0)) for notes in per_label),
        "labels_without_model": without,
        "labels": per_label,
    }
    return {split: np.stack(c, axis=1) for split, c in columns.items()}, rows, info


def class_columns(proba: np.ndarray, classes: Sequence[Any], n_classes: int) -> np.ndarray:
    """A library's probabilities (columns = the classes it saw) as one column per class id."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim == 1:
        proba = proba[:, None]
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(classes).astype(int)] = proba
    return np.clip(out, 0.0, 1.0)


def positive_column(proba: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """The probability of label value 1 from a binary classifier's (N, n_seen) output."""
    return class_columns(proba, classes, 2)[:, 1]


def write_rows(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """A CSV with ``columns`` in this order (missing values empty, extra keys dropped)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
