"""Bootstrap confidence intervals of test AUC, from a run's predictions and the dataset's labels."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from decathlon import datasets, files, metrics, rundir
from decathlon.compare.base import CI_COLUMNS, SHORT, LabelsFn, MetricFn
from decathlon.compare.methods import Method
from decathlon.contract import DatasetInfo
from decathlon.errors import DecathlonError
from decathlon.leaderboard import DATASETS

log = logging.getLogger(__name__)


def bootstrap_ci(
    y_true: np.ndarray,
    y_score: np.ndarray,
    metric_fn: MetricFn,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, int]:
    """Percentile bootstrap interval of ``metric_fn(y_true, y_score)``, resampling images.

    Rows of ``y_true`` and ``y_score`` are drawn together with replacement ``n_boot`` times.
    Resamples on which the metric is undefined (a class absent: ``ValueError``, or NaN) are
    skipped. Returns ``(low, high, n_used)``; ``(nan, nan, 0)`` when no resample worked.
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    if len(y_true) != len(y_score):
        raise ValueError(f"{len(y_true)} labels but {len(y_score)} score rows")
    rng = np.random.default_rng(seed)
    n = len(y_true)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v = float(metric_fn(y_true[idx], y_score[idx]))
        except ValueError:
            continue
        if not math.isnan(v):
            values.append(v)
    if not values:
        return math.nan, math.nan, 0
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high), len(values)


def _scores(path: Path, n_samples: int) -> np.ndarray:
    """A run's saved test scores, read as the harness read them when it scored the task (a run
    folder received from someone else is not trusted either)."""
    return files.load_npy(files.read_left_by_task(path, 16 * n_samples * 64 + 2**20))


def _auc_fn(task: str) -> MetricFn:
    return lambda y_true, y_score: metrics.auc(task, y_true, y_score)


def _seed_mean(metric_fn: MetricFn) -> MetricFn:
    # Scores of several seeds stacked as (N, seeds, C): the same images resampled for every seed.
    return lambda y_true, y_score: float(
        np.mean([metric_fn(y_true, y_score[:, k]) for k in range(y_score.shape[1])])
    )


def catalog_labels(
    data_dir: Path | None,
    info_path: Path | None = None,
    size: int = datasets.DEFAULT_SIZE,
    why: dict[str, str] | None = None,
) -> LabelsFn:
    """Test labels from the local dataset files at ``size`` (never downloads, reads no image);
    ``None`` where unavailable, with the reason (its first clause) put in ``why`` by flag.

    ``data_dir`` defaults to the catalog's default folder, ``info_path`` to the bundled (or
    ``$DECATHLON_INFO``) metadata.
    """

    def labels(flag: str) -> np.ndarray | None:

        try:
            catalog = datasets.Catalog.load(info_path)
            loaded = datasets.load(
                catalog,
                flag,
                data_dir or datasets.default_data_dir(),
                size=size,
                download=False,
                progress=False,
                images=False,
            )
            return np.asarray(loaded.arrays["test_labels"])
        except (DecathlonError, OSError, KeyError, ValueError) as exc:
            log.info("no test labels for %s: %s", flag, exc)
            if why is not None:
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                why[flag] = text.split("; ")[0][:200]
            return None

    return labels


def _dataset_infos() -> dict[str, DatasetInfo]:
    catalog = datasets.Catalog.load()
    return {flag: catalog.info(flag) for flag in DATASETS}


def bootstrap_table(
    methods: Sequence[Method],
    labels_fn: LabelsFn | None = None,
    *,
    n_boot: int = 1000,
) -> tuple[pd.DataFrame, list[str]]:
    """Bootstrap 95% intervals of each test AUC that has saved predictions and known labels.

    Returns a frame with :data:`CI_COLUMNS` and notes on what was skipped. ``labels_fn`` maps a
    dataset flag to its test labels; by default the catalog, with the run's ``config.json``
    ``data_dir`` when it names one.
    """
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    infos = _dataset_infos()
    label_cache: dict[tuple[str | None, str], np.ndarray | None] = {}  # (run, flag@size)
    no_predictions: list[str] = []
    for m in methods:
        if m.run_dir is None:
            continue
        why: dict[str, str] = {}  # flag: why the catalog gave no labels
        moved = ""  # why the run's own data folder was not used
        if labels_fn is None:
            data_dir, info_path, moved = _run_paths(m.run_dir)
            fn = catalog_labels(data_dir, info_path, size=m.size, why=why)
        else:
            fn = labels_fn
        skipped: list[str] = []
        for dataset in m.datasets:
            if (dataset, "test") not in m.scores:
                continue
            paths = [rundir.predictions_file(m.run_dir, dataset, s, "test") for s in m.seeds]
            if not all(f.is_file() for f in paths):
                skipped.append(f"{dataset} (no predictions)")
                continue
            key = (str(m.run_dir) if labels_fn is None else None, f"{dataset}@{m.size}")
            if key not in label_cache:
                label_cache[key] = fn(dataset)
            y_true = label_cache[key]
            if y_true is None:
                reason = why.get(dataset)
                skipped.append(
                    f"{dataset} (no labels: {reason})" if reason else f"{dataset} (no labels)"
                )
                continue
            try:
                scores = [_scores(f, len(y_true)) for f in paths]
            except (OSError, ValueError, MemoryError) as exc:
                skipped.append(f"{dataset} (predictions unreadable: {exc})")
                continue
            if any(len(s) != len(y_true) for s in scores):
                skipped.append(f"{dataset} (predictions do not match the labels' length)")
                continue
            info = infos[dataset]
            problem = next(
                (p for s in scores if (p := metrics.check_scores(s, len(y_true), info))), None
            )
            if problem:  # as the harness would have refused them
                skipped.append(f"{dataset} (predictions refused: {problem})")
                continue
            metric = _seed_mean(_auc_fn(info.task))
            stacked = np.stack(scores, axis=1)
            point, listed = metric(y_true, stacked), m.test(dataset, "auc")
            if not abs(point - listed) <= 1e-4:  # the leaderboard keeps six decimals
                skipped.append(
                    f"{dataset} (predictions give AUC {point:.4f}, the leaderboard {listed:.4f})"
                )
                continue
            low, high, used = bootstrap_ci(y_true, stacked, metric, n_boot=n_boot)
            records.append(
                {
                    "method": m.label,
                    "dataset": dataset,
                    "auc": m.test(dataset, "auc"),
                    "ci_low": low,
                    "ci_high": high,
                    "n_boot": used,
                    "note": "" if used == n_boot else f"{n_boot - used} resamples undefined",
                }
            )
        if (
            skipped
            and all(s.endswith("(no predictions)") for s in skipped)
            and not any(r["method"] == m.label for r in records)
        ):
            no_predictions.append(m.label)
        elif skipped:
            cause = f" ({moved})" if moved and any("(no labels" in s for s in skipped) else ""
            notes.append(f"Bootstrap CI skipped for {m.label}{cause}: {', '.join(skipped)}.")
    if no_predictions:
        notes.insert(
            0, f"Bootstrap CI skipped (no saved predictions): {', '.join(no_predictions)}."
        )
    return pd.DataFrame.from_records(records, columns=CI_COLUMNS), notes


def _run_paths(run_dir: Path) -> tuple[Path | None, Path | None, str]:
    """The data folder and catalog file a run used, from its ``config.json`` where it names them,
    and why that record was not used ("" when it was, or names neither): the labels are then
    looked for in the default folder and metadata.

    The runner records them under ``config``; relative paths are taken from the current folder.
    """
    path = rundir.config_path(run_dir)
    record = rundir.read_config(run_dir)
    if not isinstance(record, dict):  # none, unreadable, or not a JSON object
        if path.exists():
            return None, None, f"{path} is not a run's config.json; the default folder was used"
        return None, None, ""
    config = record.get("config", record)
    problems: list[str] = []

    def existing(key: str) -> Path | None:
        value = config.get(key) if isinstance(config, dict) else None
        if not isinstance(value, str) or not value:  # a config.json from elsewhere: any type
            return None
        if Path(value).expanduser().exists():
            return Path(value).expanduser()
        problems.append(f"config.json's {key} {value} is gone; the default was used")
        return None

    data_dir, info_path = existing("data_dir"), existing("info_path")
    return data_dir, info_path, "; ".join(problems)


def render_ci(ci: pd.DataFrame) -> str:
    """Bootstrap intervals as text lines, one per method."""
    lines = []
    for method, group in ci.groupby("method", sort=False):
        cells = ", ".join(
            f"{SHORT[r.dataset]} {r.auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
            for r in group.itertuples()
        )
        lines.append(f"  {method}: {cells}")
    return "\n".join(lines)
