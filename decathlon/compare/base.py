"""The names every part of the comparison shares: datasets, metrics, columns, file names."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from decathlon import leaderboard
from decathlon.leaderboard import (
    DATASETS,
    METRICS,
)

#: The leaderboard CSV's columns, in order.
COLUMNS = list(leaderboard.COLUMNS)

#: Short names of the reference run_ids in method labels (``paper_v1/resnet18_28``).
REFERENCE_LABELS = {
    "medmnist_v1_isbi2021": "paper_v1",
    "medmnist_v2_scidata2023": "paper_v2",
    "medmnist_plus_scirep2025": "paper_plus",
}

#: File names that ``compare --format`` writes in the output folder.
FORMAT_FILES = {"md": "table.md", "html": "table.html", "csv": "table.csv"}
FORMAT_ALIASES = {"markdown": "md", "htm": "html"}


def table_columns(chosen: Sequence[str] = DATASETS) -> list[str]:
    """Columns of ``table.csv`` for the compared datasets, in order.

    The scores (means over seeds), the means over the compared datasets (``n_datasets`` says how
    many), the ranks, then the standard deviations over seeds (``*_sd``, empty with one seed).
    """
    scores = [f"{d}_{m}" for d in chosen for m in METRICS]
    means = ["decathlon_auc", "decathlon_acc"]
    return [
        "method",
        "run_id",
        "adapter",
        "size",
        "seeds",
        "profile",
        "complete",
        "n_datasets",
        *scores,
        *means,
        "rank_auc",
        "rank_acc",
        *[f"{c}_sd" for c in (*scores, *means)],
        "notes",
    ]


#: Columns of ``table.csv`` when all ten datasets are compared.
TABLE_COLUMNS = table_columns()
#: Columns of ``bootstrap_ci.csv``, in order.
CI_COLUMNS = ["method", "dataset", "auc", "ci_low", "ci_high", "n_boot", "note"]

ALPHA = 0.05
MIN_DATASETS = 5
SHORT = {d: d.removesuffix("mnist") for d in DATASETS}

LabelsFn = Callable[[str], "np.ndarray | None"]
MetricFn = Callable[[np.ndarray, np.ndarray], float]
