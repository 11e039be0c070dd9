"""Compare leaderboards with each other and with the published results.

What ``python -m decathlon compare`` and ``python -m decathlon show`` call. The inputs are
leaderboard CSVs in the project format (or run directories holding one): one row per (adapter,
dataset, seed, split), plus derived ``decathlon`` summary rows that this module reads past and
recomputes itself.

The comparison table follows Table 2 of the 2021 decathlon paper: one row per method, the test
AUC and ACC of each dataset, the decathlon means and the mean ranks.

* A *method* is ``run_id/adapter`` at one image size (``run_id/adapter@64`` above 28). Methods
  of different sizes are never averaged, ranked or tested together: ``compare`` shows one table
  per size (``--size`` picks one). When a method holds several seeds, each dataset's value is the
  mean over the seeds (shown with the standard deviation over the seeds, ``0.871 ± 0.012``), and
  only when every seed is ``ok`` on that dataset.
* The compared datasets are all ten, or the subset chosen with ``datasets=`` (``compare
  --datasets``): table, means, ranks, statistics and the published reference rows then all cover
  those datasets only, and every mean says how many datasets it covers.
* A method missing a compared dataset is marked incomplete: its dataset cells stay, its means
  and ranks are left empty (never averaged over fewer datasets).
* Ranks: on each dataset, the complete methods are ranked by test AUC (and, separately, by test
  ACC), 1 = best, ties sharing the mean rank; ``rank_auc`` / ``rank_acc`` are the averages of
  those ranks over the compared datasets. Incomplete methods are not ranked.
* The best value of each column (at the printed precision, ties included) is marked: bold in
  Markdown and HTML, bold and ``*`` in the terminal.

Statistics compare the complete matrix of test scores (datasets x methods; a method with several
seeds enters with each dataset's mean over its seeds): two methods get a
Wilcoxon signed-rank test over the datasets, three or more go to ``autorank`` (Friedman with a
Nemenyi post-hoc test, or repeated-measures ANOVA with Tukey's test when its normality and
homoscedasticity checks pass) with a critical-difference diagram. Both need at least five
datasets and no missing cell; when that fails the output says why in one line.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import logging
import math
import shutil
import textwrap
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from decathlon import datasets, leaderboard, metrics, resources
from decathlon.errors import DecathlonError, LeaderboardError, did_you_mean

logger = logging.getLogger(__name__)

#: The leaderboard CSV's columns, in order.
COLUMNS = list(leaderboard.COLUMNS)
#: Columns that files written before they existed lack; read as empty.
OPTIONAL_COLUMNS = ("sealed", "environment")
#: The ten decathlon datasets, in the papers' order.
DATASETS = datasets.DECATHLON_FLAGS
#: The 2021 paper's names for the organ datasets.
V1_FLAGS = datasets.ALIASES
SUMMARY_DATASET = leaderboard.SUMMARY_DATASET
SPLITS = leaderboard.SPLITS
STATUSES = leaderboard.STATUSES
SUMMARY_STATUSES = ("ok", "incomplete")
METRICS = ("auc", "acc")

#: The reference leaderboards the package ships (in ``decathlon/leaderboards/``), by the names
#: ``--reference`` accepts.
REFERENCES = {
    "v1": "medmnist_v1_isbi2021.csv",
    "v2": "medmnist_v2_scidata2023.csv",
    "plus": "medmnist_plus_scirep2025.csv",
}
#: Short names of the reference run_ids in method labels (``paper_v1/resnet18_28``).
REFERENCE_LABELS = {
    "medmnist_v1_isbi2021": "paper_v1",
    "medmnist_v2_scidata2023": "paper_v2",
    "medmnist_plus_scirep2025": "paper_plus",
}
#: ``adapter_version`` of the published rows in the reference leaderboards.
PUBLISHED = "published"
#: The image sizes a leaderboard's ``size`` column may hold.
SIZES = datasets.SIZES

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
_KEY = ["run_id", "adapter", "dataset", "size", "seed", "split"]
_SHORT = {d: d.removesuffix("mnist") for d in DATASETS}

LabelsFn = Callable[[str], "np.ndarray | None"]
MetricFn = Callable[[np.ndarray, np.ndarray], float]


# --------------------------------------------------------------------------------- reading


@dataclass
class Leaderboard:
    """One validated leaderboard file.

    ``rows`` holds the per-dataset rows (summary rows dropped) with ``seed`` as int and ``auc`` /
    ``acc`` as float (NaN when empty), ``size`` as int. ``run_dir`` is the run directory when
    the file sits in one (where ``tasks/<dataset>/seed<k>/predictions/`` may hold scores);
    ``profile`` is its one profile.
    """

    path: Path
    rows: pd.DataFrame
    run_dir: Path | None
    profile: str


def read_leaderboard(path: Path) -> Leaderboard:
    """Read and check a leaderboard CSV, or the ``leaderboard.csv`` of a run directory.

    Raises :class:`LeaderboardError` with one line naming the file for anything that is not a
    well-formed leaderboard: unreadable or empty file, missing columns, unknown dataset, split or
    status, non-numeric or out-of-range scores, an ``ok`` test row without scores, duplicate
    (run_id, adapter, dataset, seed, split) rows, several profiles in one file, no test rows.
    """
    path = Path(path)
    run_dir: Path | None = None
    if path.is_dir():
        run_dir, path = path, path / "leaderboard.csv"
        if not path.is_file():
            raise LeaderboardError(f"{run_dir}: not a run directory (no leaderboard.csv in it)")
    elif not path.is_file():
        raise LeaderboardError(f"{path}: no such leaderboard file or run directory")
    elif (path.parent / "tasks").is_dir():
        run_dir = path.parent

    _check_whole_rows(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise LeaderboardError(f"{path}: empty file, not a leaderboard") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LeaderboardError(f"{path}: not a leaderboard CSV ({first})") from None

    df.columns = [str(c).strip() for c in df.columns]
    if "size" not in df.columns and "run_id" in df.columns:
        # Written before MedMNIST+ sizes existed: every row is at 28.
        df.insert(min(3, len(df.columns)), "size", "28")
    for column in OPTIONAL_COLUMNS:
        if column not in df.columns:
            df[column] = ""
    missing = [c for c in COLUMNS if c not in df.columns]
    if len(missing) == len(COLUMNS) or {"run_id", "dataset", "split"} <= set(missing):
        found = ", ".join(list(df.columns)[:6])
        raise LeaderboardError(
            f"{path}: not a decathlon leaderboard (columns found: {found}; "
            f"expected {', '.join(COLUMNS[:8])}, ...)"
        )
    if missing:
        raise LeaderboardError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise LeaderboardError(f"{path}: no rows, nothing to compare")
    df = df[COLUMNS].apply(lambda s: s.str.strip())

    def fail(i: int, problem: str) -> LeaderboardError:
        # i is the frame's 0-based row; line 1 is the header.
        return LeaderboardError(f"{path}: line {i + 2}: {problem}")

    for i, row in df.iterrows():
        assert isinstance(i, int)
        dataset, split, status = row["dataset"], row["split"], row["status"]
        if dataset not in DATASETS and dataset != SUMMARY_DATASET:
            hint = (
                f" (the current medmnist flag is '{V1_FLAGS[dataset]}')"
                if dataset in V1_FLAGS
                else "." + did_you_mean(dataset, DATASETS)
            )
            raise fail(i, f"unknown dataset '{dataset}'{hint}")
        if split not in SPLITS:
            raise fail(i, f"unknown split '{split}' (expected train, val or test)")
        allowed = SUMMARY_STATUSES if dataset == SUMMARY_DATASET else STATUSES
        if status not in allowed:
            raise fail(i, f"unknown status '{status}' (expected {', '.join(allowed)})")
        if dataset == SUMMARY_DATASET and split != "test":
            raise fail(i, f"a '{SUMMARY_DATASET}' summary row must have split test, not '{split}'")
        try:
            int(row["seed"])
        except ValueError:
            raise fail(i, f"seed '{row['seed']}' is not an integer") from None
        if row["sealed"] not in ("true", "false", ""):
            raise fail(i, f"sealed '{row['sealed']}' is not true, false or empty")
        if row["size"] not in {str(s) for s in SIZES}:
            choices = ", ".join(str(s) for s in SIZES)
            raise fail(i, f"size '{row['size']}' is not an image size ({choices})")
        for metric in METRICS:
            text = row[metric]
            if text == "":
                continue
            try:
                value = float(text)
            except ValueError:
                raise fail(i, f"{metric} '{text}' is not a number") from None
            if not (0.0 <= value <= 1.0):
                raise fail(i, f"{metric} {text} is outside [0, 1]")
        if dataset != SUMMARY_DATASET and status == "ok" and split != "train":
            empty = [m for m in METRICS if row[m] == ""]
            if row["adapter_version"] == PUBLISHED and len(empty) < len(METRICS):
                empty = []  # a published row leaves empty what its source does not report
            if empty:
                raise fail(i, f"status ok but no {' or '.join(empty)} for the {split} split")
        if status == leaderboard.NOT_GIVEN:
            if split != "train":
                raise fail(i, f"status {status} is for train rows only, not {split}")
            if row["auc"] != "" or row["acc"] != "":
                raise fail(i, f"status {status} but the row has scores")

    dup = df.duplicated(_KEY, keep=False)
    if dup.any():
        lines = [i + 2 for i in df.index[dup][:2]]
        key = ", ".join(f"{k}={df.loc[df.index[dup][0], k]}" for k in _KEY)
        raise LeaderboardError(f"{path}: duplicate rows ({key}) on lines {lines[0]} and {lines[1]}")

    profiles = sorted(set(df["profile"]))
    if len(profiles) > 1:
        raise LeaderboardError(
            f"{path}: mixed profiles {', '.join(repr(p) for p in profiles)}; a leaderboard holds "
            "one profile (split it and compare the files)"
        )
    rows = df[df["dataset"] != SUMMARY_DATASET].copy()
    if not (rows["split"] == "test").any():
        found = ", ".join(sorted(set(rows["split"]))) or "none"
        raise LeaderboardError(f"{path}: no test rows (splits found: {found}); nothing to compare")

    rows["seed"] = rows["seed"].astype(int)
    rows["size"] = rows["size"].astype(int)
    for metric in METRICS:
        values = pd.to_numeric(rows[metric].replace("", np.nan), errors="coerce")
        # Scores of a failed row are not results, whatever the file says.
        rows[metric] = values.where(rows["status"] == "ok")
    rows = rows.reset_index(drop=True)
    _check_summary_rows(path, df, rows)
    return Leaderboard(path=path, rows=rows, run_dir=run_dir, profile=profiles[0])


def _check_whole_rows(path: Path) -> None:
    """Refuse a file cut off in the middle of a row (any split): every record has every field.

    The harness rewrites its leaderboard atomically, so a short row means a truncated copy.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if not header:
                return  # empty: read_leaderboard says so
            for record in reader:
                if record and len(record) != len(header):
                    raise LeaderboardError(
                        f"{path}: line {reader.line_num}: cut off ({len(record)} of"
                        f" {len(header)} fields); the file is truncated or not a leaderboard"
                    )
    except csv.Error as exc:  # e.g. cut off inside a quoted field
        raise LeaderboardError(
            f"{path}: line {reader.line_num}: {exc}; the file is truncated or not a leaderboard CSV"
        ) from None
    except UnicodeDecodeError:
        return  # read_leaderboard says so


def _check_summary_rows(path: Path, df: pd.DataFrame, rows: pd.DataFrame) -> None:
    """Log a warning where a file's own ``decathlon`` row disagrees with the recomputed mean."""
    summary = df[(df["dataset"] == SUMMARY_DATASET) & (df["status"] == "ok")]
    for _, srow in summary.iterrows():
        test = rows[
            (rows["run_id"] == srow["run_id"])
            & (rows["adapter"] == srow["adapter"])
            & (rows["size"] == int(srow["size"]))
            & (rows["seed"] == int(srow["seed"]))
            & (rows["split"] == "test")
            & (rows["status"] == "ok")
        ]
        for metric in METRICS:
            if srow[metric] == "" or len(test) != len(DATASETS):
                continue
            if abs(float(srow[metric]) - float(test[metric].mean())) > 5e-4:
                logger.warning(
                    "%s: the decathlon %s of %s/%s seed %s is %s, the ten test rows give %.4f",
                    path,
                    metric,
                    srow["run_id"],
                    srow["adapter"],
                    srow["seed"],
                    srow[metric],
                    test[metric].mean(),
                )


def reference_path(name: str) -> Path:
    """The reference leaderboard for ``--reference NAME`` (``v1``, ``v2`` or ``plus``)."""
    if name not in REFERENCES:
        raise LeaderboardError(
            f"unknown reference '{name}' (choose {', '.join(REFERENCES)})"
            + did_you_mean(name, REFERENCES)
        )
    path = resources.data_file("leaderboards", REFERENCES[name])
    if not path.is_file():
        raise LeaderboardError(f"{path}: reference leaderboard missing from this installation")
    return path


# --------------------------------------------------------------------------------- methods


@dataclass
class Method:
    """One compared method (``run_id/adapter`` at one image size), its seeds averaged, on the
    compared datasets.

    ``scores[(dataset, split)] = (auc, acc)`` holds the mean over seeds where every seed is ok
    (auc may be NaN for train splits without scores), ``sd`` the sample standard deviation over
    the seeds (NaN with one seed) and ``per_seed[dataset]`` each seed's test ``(auc, acc)``.
    ``missing[dataset]`` says why a test cell is empty: a status (``timeout``), ``not run``, or
    ``1/3 seeds ok``. ``datasets`` are the compared datasets, in the papers' order.
    """

    run_id: str
    adapter: str
    seeds: tuple[int, ...]
    profile: str
    source: Path
    run_dir: Path | None
    datasets: tuple[str, ...] = DATASETS
    size: int = 28
    scores: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    sd: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    per_seed: dict[str, np.ndarray] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    unsealed: int = 0  # rows that ran without the sandbox (sealed=false)

    @property
    def label(self) -> str:
        at = "" if self.size == datasets.DEFAULT_SIZE else f"@{self.size}"
        return f"{REFERENCE_LABELS.get(self.run_id, self.run_id)}/{self.adapter}{at}"

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def mark(self) -> str:
        """What follows the label in tables: † incomplete, ‡ some rows ran unsealed."""
        return ("" if self.complete else " †") + (" ‡" if self.unsealed else "")

    def test(self, dataset: str, metric: str) -> float:
        """The test score of one dataset (mean over seeds), NaN when missing."""
        pair = self.scores.get((dataset, "test"))
        if pair is None:
            return math.nan
        return pair[METRICS.index(metric)]

    def test_sd(self, dataset: str, metric: str) -> float:
        """The standard deviation over seeds of one dataset's test score; NaN with one seed."""
        pair = self.sd.get((dataset, "test"))
        if pair is None:
            return math.nan
        return pair[METRICS.index(metric)]

    def unreported(self, metric: str) -> bool:
        """Whether no dataset has this metric (a published method whose source gives none)."""
        return all(math.isnan(self.test(d, metric)) for d in self.datasets)

    def mean(self, metric: str) -> float:
        """The mean over the compared datasets, NaN unless the method has every one of them."""
        if not self.complete:
            return math.nan
        return float(np.mean([self.test(d, metric) for d in self.datasets]))

    def mean_sd(self, metric: str) -> float:
        """The standard deviation over seeds of each seed's mean over the compared datasets."""
        if not self.complete or len(self.seeds) < 2:
            return math.nan
        k = METRICS.index(metric)
        per_seed = np.mean([self.per_seed[d][:, k] for d in self.datasets], axis=0)
        return float(np.std(per_seed, ddof=1))

    def has_splits(self) -> bool:
        """Whether the method has train or val results (for the Figure 2 view)."""
        return any(split != "test" for _, split in self.scores)

    def missing_note(self) -> str:
        ok = len(self.datasets) - len(self.missing)
        listed = ", ".join(f"{d} ({why})" for d, why in self.missing.items())
        return f"{ok}/{len(self.datasets)} datasets ok; missing: {listed}"


def select_datasets(names: Iterable[str] | None) -> tuple[str, ...]:
    """The compared datasets for ``--datasets``: all ten when ``names`` is None or empty.

    Accepts the 2021 names of the organ datasets; returns them in the papers' order. Raises
    :class:`LeaderboardError` naming an unknown dataset (with a "did you mean").
    """
    chosen: set[str] = set()
    for raw in names or ():
        name = raw.strip().lower()
        flag = V1_FLAGS.get(name, name)
        if flag not in DATASETS:
            raise LeaderboardError(
                f"--datasets: unknown dataset '{raw}'." + did_you_mean(name, DATASETS)
            )
        chosen.add(flag)
    return tuple(d for d in DATASETS if d in chosen) if chosen else DATASETS


def methods_of(board: Leaderboard, chosen: Sequence[str] = DATASETS) -> list[Method]:
    """The methods of a leaderboard, in file order, on the ``chosen`` datasets."""
    out = []
    rows = board.rows
    for (run_id, adapter, size), group in rows.groupby(["run_id", "adapter", "size"], sort=False):
        seeds = tuple(sorted(int(s) for s in set(group["seed"])))
        method = Method(
            run_id=str(run_id),
            adapter=str(adapter),
            seeds=seeds,
            profile=board.profile,
            source=board.path,
            run_dir=board.run_dir,
            datasets=tuple(chosen),
            unsealed=int((group["sealed"] == "false").sum()),
            size=int(size),
        )
        for dataset in chosen:
            for split in SPLITS:
                cell = group[(group["dataset"] == dataset) & (group["split"] == split)]
                ok = cell[cell["status"] == "ok"].sort_values("seed")
                if len(ok) == len(seeds):
                    values = ok[list(METRICS)].to_numpy(dtype=float)
                    method.scores[(dataset, split)] = (
                        float(values[:, 0].mean()),
                        float(values[:, 1].mean()),
                    )
                    method.sd[(dataset, split)] = (_sd(values[:, 0]), _sd(values[:, 1]))
                    if split == "test":
                        method.per_seed[dataset] = values
                elif split == "test":
                    method.missing[dataset] = _why_missing(cell, len(seeds))
        out.append(method)
    return out


def _sd(values: np.ndarray) -> float:
    """Sample standard deviation (ddof 1); NaN for fewer than two values or any NaN."""
    if len(values) < 2 or np.isnan(values).any():
        return math.nan
    return float(np.std(values, ddof=1))


def _why_missing(cell: pd.DataFrame, n_seeds: int) -> str:
    if cell.empty:
        return "not run"
    n_ok = int((cell["status"] == "ok").sum())
    if n_seeds > 1 and n_ok:
        return f"{n_ok}/{n_seeds} seeds ok"
    statuses = sorted(set(cell["status"]) - {"ok"})
    return "/".join(statuses) if statuses else "not run"


def collect(
    paths: Sequence[Path],
    reference: str | None = None,
    datasets: Iterable[str] | None = None,
) -> list[Method]:
    """Read every input (plus the reference leaderboard) and return the methods to compare.

    ``datasets`` restricts the comparison to those datasets (see :func:`select_datasets`).
    Refuses the same method (``run_id/adapter``) coming from two files.
    """
    chosen = select_datasets(datasets)
    sources = [Path(p) for p in paths]
    if reference:
        sources.append(reference_path(reference))
    if not sources:
        raise LeaderboardError(
            "nothing to compare: give leaderboard files, run directories or --reference"
        )
    methods: list[Method] = []
    seen: dict[str, Path] = {}
    for source in sources:
        board = read_leaderboard(source)
        for method in methods_of(board, chosen):
            if method.label in seen:
                raise LeaderboardError(
                    f"{board.path}: duplicate rows: method {method.label} is also in "
                    f"{seen[method.label]}"
                )
            seen[method.label] = board.path
            methods.append(method)
    return methods


# --------------------------------------------------------------------------------- the table


def by_size(methods: Sequence[Method]) -> dict[int, list[Method]]:
    """The methods grouped by image size, smallest first (each group keeps its order)."""
    groups: dict[int, list[Method]] = {}
    for m in methods:
        groups.setdefault(m.size, []).append(m)
    return dict(sorted(groups.items()))


def select_size(methods: Sequence[Method], size: int | None) -> list[Method]:
    """The methods at ``size`` (all when None); a one-line error when none is at that size."""
    if size is None:
        return list(methods)
    chosen = [m for m in methods if m.size == size]
    if not chosen:
        found = ", ".join(str(s) for s in by_size(methods)) or "none"
        raise LeaderboardError(f"no results at image size {size} (the inputs hold sizes {found})")
    return chosen


def _one_size(methods: Sequence[Method]) -> None:
    sizes = sorted({m.size for m in methods})
    if len(sizes) > 1:
        raise LeaderboardError(
            f"methods at image sizes {', '.join(map(str, sizes))} are never averaged or ranked"
            " together; compare one size at a time (--size N)"
        )


def compared_datasets(methods: Sequence[Method]) -> tuple[str, ...]:
    """The datasets a comparison covers (all ten unless ``--datasets`` chose fewer)."""
    return methods[0].datasets if methods else DATASETS


def comparison_table(methods: Sequence[Method]) -> pd.DataFrame:
    """The Table-2 view as a frame with :func:`table_columns` (one row per method).

    All methods must be at one image size (else a one-line :class:`LeaderboardError`).
    """
    _one_size(methods)
    chosen = compared_datasets(methods)
    columns = table_columns(chosen)
    records = []
    for m in methods:
        notes = []
        if len(m.seeds) > 1:
            notes.append(f"mean ± sd over seeds {', '.join(map(str, m.seeds))}")
        if not m.complete:
            notes.append(m.missing_note())
        if m.unsealed:
            notes.append(f"{m.unsealed} rows ran unsealed (no sandbox)")
        record: dict[str, Any] = {
            "method": m.label,
            "run_id": m.run_id,
            "adapter": m.adapter,
            "size": m.size,
            "seeds": " ".join(map(str, m.seeds)),
            "profile": m.profile,
            "complete": m.complete,
            "n_datasets": len(chosen),
        }
        for d in chosen:
            for metric in METRICS:
                record[f"{d}_{metric}"] = m.test(d, metric)
                record[f"{d}_{metric}_sd"] = m.test_sd(d, metric)
        for metric in METRICS:
            record[f"decathlon_{metric}"] = m.mean(metric)
            record[f"decathlon_{metric}_sd"] = m.mean_sd(metric)
        record["notes"] = "; ".join(notes)
        records.append(record)
    table = pd.DataFrame.from_records(records, columns=columns)
    for metric in METRICS:
        table[f"rank_{metric}"] = _mean_ranks(table, metric, chosen)
    return table[columns]


def _mean_ranks(table: pd.DataFrame, metric: str, chosen: Sequence[str]) -> pd.Series:
    from scipy.stats import rankdata

    ranks = pd.Series(np.nan, index=table.index, dtype=float)
    columns = [f"{d}_{metric}" for d in chosen]
    # Complete methods that report this metric (published kNN rows have no AUC).
    reported = table[columns].notna().all(axis=1)
    complete = table[table["complete"].astype(bool) & reported]
    if complete.empty:
        return ranks
    values = complete[columns].to_numpy(dtype=float)
    # Rank within each dataset (column), higher score = rank 1, ties share the mean rank.
    per_dataset = np.column_stack([rankdata(-values[:, j]) for j in range(values.shape[1])])
    ranks.loc[complete.index] = per_dataset.mean(axis=1)
    return ranks


def _datasets_of(table: pd.DataFrame) -> tuple[str, ...]:
    return tuple(d for d in DATASETS if f"{d}_auc" in table.columns)


def _value_columns(chosen: Sequence[str] = DATASETS) -> list[str]:
    cols = [f"{d}_{m}" for d in chosen for m in METRICS]
    return [*cols, "decathlon_auc", "decathlon_acc", "rank_auc", "rank_acc"]


def _fmt(column: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.2f}" if column.startswith("rank_") else f"{value:.3f}"


def best_cells(table: pd.DataFrame) -> dict[str, set[int]]:
    """Per value column, the row positions holding its best value at the printed precision."""
    best: dict[str, set[int]] = {}
    for column in _value_columns(_datasets_of(table)):
        shown = [_fmt(column, v) for v in table[column]]
        numbers = [(i, float(s)) for i, s in enumerate(shown) if s]
        if not numbers:
            best[column] = set()
            continue
        pick = min if column.startswith("rank_") else max
        target = pick(v for _, v in numbers)
        best[column] = {i for i, v in numbers if v == target}
    return best


def _cell(
    table: pd.DataFrame, i: int, column: str, methods: Sequence[Method], *, sep: str = " ± "
) -> str:
    """A cell as text: the score (``mean ± sd`` over seeds), else why it is missing."""
    text = _fmt(column, table[column].iloc[i])
    if text:
        sd_column = f"{column}_sd"
        if sd_column in table.columns and not pd.isna(table[sd_column].iloc[i]):
            text += f"{sep}{table[sd_column].iloc[i]:.3f}"
        return text
    dataset = column.rsplit("_", 1)[0]
    if dataset in DATASETS:
        return methods[i].missing.get(dataset, "—")
    return "—"


def _mean_header(chosen: Sequence[str]) -> str:
    """The mean's label: 'mean' over the ten, 'mean of N' over a subset."""
    return "mean" if len(chosen) == len(DATASETS) else f"mean of {len(chosen)}"


def _table_notes(table: pd.DataFrame, methods: Sequence[Method]) -> list[str]:
    chosen = compared_datasets(methods)
    notes = []
    for i, m in enumerate(methods):
        if table["notes"].iloc[i]:
            notes.append(f"{m.label}{m.mark}: {table['notes'].iloc[i]}")
    over = (
        "Means are over all ten datasets"
        if len(chosen) == len(DATASETS)
        else f"Means are over the {len(chosen)} datasets chosen with --datasets "
        f"({', '.join(chosen)}), for every method"
        + (", the published ones too" if any(m.run_id in REFERENCE_LABELS for m in methods) else "")
    )
    notes.append(
        f"{over}; † = incomplete (no mean, no rank). Rank = average over "
        "the datasets of the per-dataset rank (1 = best, ties share) among complete methods."
    )
    if any(m.unsealed for m in methods):
        notes.append(
            "‡ = some rows ran without the sandbox (sealed=false): nothing kept that adapter "
            "from the test labels."
        )
    if any(len(m.seeds) > 1 for m in methods):
        notes.append(
            "With several seeds a cell is the mean ± the standard deviation over the seeds "
            "(sample sd); ranks and statistics use each dataset's mean over the seeds."
        )
    profiles = sorted({m.profile for m in methods})
    if len(profiles) > 1:
        notes.append(
            f"Profiles differ ({', '.join(profiles)}): the budgets are not the same, so the "
            "comparison is not like for like."
        )
    return notes


def to_markdown(table: pd.DataFrame, methods: Sequence[Method]) -> str:
    """The Table-2 view as a Markdown table (best per column in bold), with its notes."""
    chosen = compared_datasets(methods)
    best = best_cells(table)
    mean = _mean_header(chosen)
    header = ["method"]
    for d in chosen:
        header += [f"{d} AUC", f"{d} ACC"]
    header += [f"{mean} AUC", f"{mean} ACC", "rank AUC", "rank ACC"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, m in enumerate(methods):
        cells = [m.label + m.mark]
        for column in _value_columns(chosen):
            text = _cell(table, i, column, methods)
            cells.append(f"**{text}**" if i in best[column] else text)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines += [f"- {note}" for note in _table_notes(table, methods)]
    return "\n".join(lines) + "\n"


def html_table(table: pd.DataFrame, methods: Sequence[Method]) -> str:
    """The Table-2 view as an HTML ``<table>`` and its notes as a list (no page around them)."""
    chosen = compared_datasets(methods)
    best = best_cells(table)
    esc = html.escape
    head1 = ['<th rowspan="2">method</th>']
    head1 += [f'<th colspan="2">{esc(d)}</th>' for d in chosen]
    mean = "decathlon mean" if len(chosen) == len(DATASETS) else f"mean of {len(chosen)} datasets"
    head1 += [f'<th colspan="2">{mean}</th>', '<th colspan="2">mean rank</th>']
    head2 = ["<th>AUC</th><th>ACC</th>"] * (len(chosen) + 2)
    body = []
    for i, m in enumerate(methods):
        cells = [f"<td>{esc(m.label + m.mark)}</td>"]
        for column in _value_columns(chosen):
            text = esc(_cell(table, i, column, methods))
            cells.append(f"<td><b>{text}</b></td>" if i in best[column] else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li>{esc(n)}</li>" for n in _table_notes(table, methods))
    return (
        f"<table>\n<tr>{''.join(head1)}</tr>\n<tr>{''.join(head2)}</tr>\n"
        + "\n".join(body)
        + f"\n</table>\n<ul>{notes}</ul>\n"
    )


#: The table's style, shared by ``table.html`` and the report page.
TABLE_CSS = (
    "table{border-collapse:collapse;font-family:sans-serif;font-size:13px}"
    "td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}"
    "td{white-space:nowrap}td:first-child{text-align:left}"
)


def to_html(table: pd.DataFrame, methods: Sequence[Method]) -> str:
    """The Table-2 view as a standalone HTML page (two header rows, best per column in bold)."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>decathlon comparison</title>\n"
        f"<style>{TABLE_CSS}</style></head><body>\n"
        + html_table(table, methods)
        + "</body></html>\n"
    )


def to_csv(table: pd.DataFrame) -> str:
    """The Table-2 view as CSV with :func:`table_columns` (full precision, empty when missing)."""
    return table.to_csv(index=False, lineterminator="\n", float_format="%.6g")


def render_terminal(
    table: pd.DataFrame, methods: Sequence[Method], *, width: int | None = None, color: bool = False
) -> str:
    """The Table-2 view for the terminal, as text: test AUC, then test ACC, one method a line.

    Each metric's columns (datasets, mean, rank) are split over as many tables as it takes to
    fit ``width`` (the terminal's), so that no method name wraps: at 100 columns the ten datasets
    take two tables per metric. The best value per column is marked ``*`` (and bold when
    ``color``).
    """
    from rich import box
    from rich.table import Table

    chosen = compared_datasets(methods)
    best = best_cells(table)
    console = _console(width, color)
    mean = _mean_header(chosen)

    def build(metric: str, columns: list[str], title: str) -> Table:
        rich_table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        rich_table.add_column("method", no_wrap=True)
        for column in columns:
            name = column.rsplit("_", 1)[0]
            header = {"decathlon": mean, "rank": "rank"}.get(name, _SHORT.get(name, name))
            rich_table.add_column(header, justify="right", no_wrap=True)
        for i, m in enumerate(methods):
            cells = [m.label + m.mark]
            for column in columns:
                text = _cell(table, i, column, methods, sep="±")
                cells.append(f"[bold]{text}*[/bold]" if i in best[column] else text)
            rich_table.add_row(*cells)
        return rich_table

    for metric in METRICS:
        columns = [f"{d}_{metric}" for d in chosen] + [f"decathlon_{metric}", f"rank_{metric}"]
        chunks = _fit(console, lambda cols, m=metric: build(m, cols, ""), columns)
        for k, chunk in enumerate(chunks):
            title = f"Test {metric.upper()}" + (f" ({k + 1}/{len(chunks)})" if k else "")
            if len(chunks) > 1 and not k:
                title += f" (1/{len(chunks)})"
            console.print(build(metric, chunk, title))
    for note in [*_table_notes(table, methods), "* best in column"]:
        console.print(_wrap(note, console.width), markup=False, highlight=False)
    return console.export_text(styles=color)


def _wrap(line: str, width: int, indent: str = "  ") -> str:
    """One note as lines of at most ``width`` characters, indented, continuation indented more."""
    return textwrap.fill(
        line,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_on_hyphens=False,
    )


def _fit(console: Any, build: Callable[[list[str]], Any], columns: list[str]) -> list[list[str]]:
    """Split ``columns`` into consecutive runs whose table fits the console's width."""
    from rich.measure import Measurement

    unbounded = console.options.update_width(100_000)

    def fits(chunk: list[str]) -> bool:
        return Measurement.get(console, unbounded, build(chunk)).maximum <= console.width

    chunks: list[list[str]] = []
    current: list[str] = []
    for column in columns:
        if current and not fits([*current, column]):
            chunks.append(current)
            current = [column]
        else:
            current = [*current, column]
    chunks.append(current)
    # Even out the runs (5 + 5 + ... reads better than 9 + 1) when the even runs fit too.
    if len(chunks) > 1:
        size = math.ceil(len(columns) / len(chunks))
        even = [columns[i : i + size] for i in range(0, len(columns), size)]
        if len(even) == len(chunks) and all(fits(chunk) for chunk in even):
            chunks = even
    return chunks


def _console(width: int | None, color: bool) -> Any:
    from rich.console import Console

    if width is None:
        width = max(shutil.get_terminal_size((140, 24)).columns, 100)
    return Console(
        record=True,
        file=io.StringIO(),
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        highlight=False,
    )


# --------------------------------------------------------------------------------- statistics


@dataclass
class Significance:
    """The outcome of one significance analysis on one metric.

    ``test`` names what ran (``"wilcoxon"``, ``"friedman + nemenyi"``, ...), or is ``None`` when
    the assumptions were not met; ``lines`` explain the result (or why nothing ran) in plain
    words. ``result`` is autorank's ``RankResult`` for three or more methods.
    """

    metric: str
    test: str | None
    lines: list[str]
    pvalue: float = math.nan
    result: Any = None


def score_matrix(methods: Sequence[Method], metric: str) -> pd.DataFrame:
    """Test scores as a frame: one row per dataset, one column per method (NaN when missing)."""
    chosen = compared_datasets(methods)
    data = {m.label: [m.test(d, metric) for d in chosen] for m in methods}
    return pd.DataFrame(data, index=list(chosen))


def check_assumptions(matrix: pd.DataFrame) -> str | None:
    """``None`` when a test over datasets may run, else one line saying why it may not."""
    if matrix.shape[1] < 2:
        return "Statistics need at least two methods."
    holes = [(d, m) for d in matrix.index for m in matrix.columns if pd.isna(matrix.loc[d, m])]
    if holes:
        cells = ", ".join(f"{m} on {d}" for d, m in holes[:4])
        more = f" and {len(holes) - 4} more" if len(holes) > 4 else ""
        return (
            f"Statistics not run: tests over datasets need every method on every dataset, and "
            f"{len(holes)} cell(s) are missing ({cells}{more})."
        )
    if matrix.shape[0] < MIN_DATASETS:
        return f"Statistics not run: {matrix.shape[0]} dataset(s), the tests need {MIN_DATASETS}."
    return None


def significance(methods: Sequence[Method], metric: str = "auc") -> Significance:
    """Test whether the methods' test scores differ over the datasets (see the module doc).

    With two or more complete methods, the incomplete ones are left out (and named). With fewer,
    the test runs on the datasets that every method has, when there are enough of them.
    Otherwise nothing runs and the one line in ``lines`` says why.
    """
    notes: list[str] = []
    unreported = [m for m in methods if m.complete and m.unreported(metric)]
    if unreported:
        labels = ", ".join(m.label for m in unreported)
        notes.append(f"Not in the {metric.upper()} test (no {metric.upper()} published): {labels}.")
        methods = [m for m in methods if m not in unreported]
    complete = [m for m in methods if m.complete]
    if len(complete) >= 2 and len(complete) < len(methods):
        left_out = ", ".join(m.label for m in methods if not m.complete)
        notes.append(f"Left out of the {metric.upper()} test (datasets missing): {left_out}.")
        matrix = score_matrix(complete, metric)
    else:
        matrix = score_matrix(methods, metric)
        common = matrix.dropna()
        if matrix.shape[1] >= 2 and len(common) >= MIN_DATASETS and len(common) < len(matrix):
            notes.append(
                f"The {metric.upper()} test uses only the {len(common)} datasets that every "
                f"method has: {', '.join(common.index)}."
            )
            matrix = common
    problem = check_assumptions(matrix)
    if problem:
        return Significance(metric, None, [problem])
    sig = _wilcoxon(matrix, metric) if matrix.shape[1] == 2 else _autorank(matrix, metric)
    seeded = [m.label for m in methods if len(m.seeds) > 1 and m.label in matrix.columns]
    if seeded and sig.test is not None:
        notes.append(
            f"Several seeds ({', '.join(seeded)}): each dataset's mean over the seeds enters the "
            "test."
        )
    sig.lines = notes + sig.lines
    return sig


def _wilcoxon(matrix: pd.DataFrame, metric: str) -> Significance:
    from scipy.stats import wilcoxon

    a, b = matrix.columns
    diff = (matrix[a] - matrix[b]).to_numpy()
    name = metric.upper()
    if np.allclose(diff, 0.0):
        return Significance(
            metric,
            None,
            [f"{a} and {b} have the same test {name} on every dataset; no test to run."],
        )
    res = wilcoxon(matrix[a], matrix[b], zero_method="wilcox")
    wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
    verdict = "significant" if res.pvalue < ALPHA else "not significant"
    lines = [
        f"Wilcoxon signed-rank test on test {name} over {len(diff)} datasets, {a} vs {b}: "
        f"W = {res.statistic:g}, p = {res.pvalue:.3g} ({verdict} at alpha = {ALPHA}).",
        f"{a} is higher on {wins}, lower on {losses}, equal on {len(diff) - wins - losses} "
        f"dataset(s); median difference {np.median(diff):+.3f}.",
    ]
    return Significance(metric, "wilcoxon", lines, pvalue=float(res.pvalue))


def _autorank(matrix: pd.DataFrame, metric: str) -> Significance:
    from autorank import autorank

    # autorank 1.3 prints a frame even with verbose=False.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            result = autorank(matrix, alpha=ALPHA, verbose=False, order="descending")
        except (ValueError, ZeroDivisionError) as exc:
            return Significance(metric, None, [f"Statistics not run: autorank failed ({exc})."])
    name = metric.upper()
    test = f"{result.omnibus} + {result.posthoc}"
    verdict = "differ significantly" if result.pvalue < ALPHA else "do not differ significantly"
    why = (
        "normal, equal variances"
        if result.all_normal and result.homoscedastic
        else "not all normal"
        if not result.all_normal
        else "unequal variances"
    )
    omnibus = _OMNIBUS.get(result.omnibus, result.omnibus)
    lines = [
        f"{omnibus} on test {name} over {len(matrix)} datasets and {matrix.shape[1]} methods "
        f"({why}): p = {result.pvalue:.3g}; the methods {verdict} at alpha = {ALPHA}.",
    ]
    if result.cd is not None and not (isinstance(result.cd, float) and math.isnan(result.cd)):
        lines.append(
            f"{result.posthoc} post-hoc: critical difference {float(result.cd):.2f} in mean rank."
        )
    else:
        lines.append(f"{result.posthoc} post-hoc test; see the diagram for the groups.")
    if result.omnibus == "anova":
        ranked = result.rankdf.sort_values("mean", ascending=False)
        order = ", ".join(f"{idx} ({row['mean']:.3f})" for idx, row in ranked.iterrows())
        lines.append(f"Order by mean {name}: {order}.")
    else:
        ranked = result.rankdf.sort_values("meanrank")
        order = ", ".join(f"{idx} ({row['meanrank']:.2f})" for idx, row in ranked.iterrows())
        lines.append(f"Order by mean rank: {order}.")
    return Significance(metric, test, lines, pvalue=float(result.pvalue), result=result)


_OMNIBUS = {"friedman": "Friedman test", "anova": "Repeated-measures ANOVA"}


# --------------------------------------------------------------------------------- bootstrap


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


def _auc_fn(task: str) -> MetricFn:
    return lambda y_true, y_score: metrics.auc(task, y_true, y_score)


def _seed_mean(metric_fn: MetricFn) -> MetricFn:
    # Scores of several seeds stacked as (N, seeds, C): the same images resampled for every seed.
    return lambda y_true, y_score: float(
        np.mean([metric_fn(y_true, y_score[:, k]) for k in range(y_score.shape[1])])
    )


def catalog_labels(
    data_dir: Path | None, info_path: Path | None = None, size: int = datasets.DEFAULT_SIZE
) -> LabelsFn:
    """Test labels from the local dataset files at ``size`` (never downloads, reads no image);
    ``None`` where unavailable.

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
            logger.info("no test labels for %s: %s", flag, exc)
            return None

    return labels


def _task_types() -> dict[str, str]:

    catalog = datasets.Catalog.load()
    return {flag: catalog.info(flag).task for flag in DATASETS}


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
    tasks = _task_types()
    label_cache: dict[tuple[str | None, str], np.ndarray | None] = {}  # (run, flag@size)
    no_predictions: list[str] = []
    for m in methods:
        if m.run_dir is None:
            continue
        fn = labels_fn or catalog_labels(*_run_paths(m.run_dir), size=m.size)
        skipped: list[str] = []
        for dataset in m.datasets:
            if (dataset, "test") not in m.scores:
                continue
            files = [
                m.run_dir / "tasks" / dataset / f"seed{s}" / "predictions" / "test.npy"
                for s in m.seeds
            ]
            if not all(f.is_file() for f in files):
                skipped.append(f"{dataset} (no predictions)")
                continue
            key = (str(m.run_dir) if labels_fn is None else None, f"{dataset}@{m.size}")
            if key not in label_cache:
                label_cache[key] = fn(dataset)
            y_true = label_cache[key]
            if y_true is None:
                skipped.append(f"{dataset} (no labels)")
                continue
            scores = [np.load(f) for f in files]
            if any(len(s) != len(y_true) for s in scores):
                skipped.append(f"{dataset} (predictions do not match the labels' length)")
                continue
            metric = _seed_mean(_auc_fn(tasks[dataset]))
            stacked = np.stack(scores, axis=1)
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
            notes.append(f"Bootstrap CI skipped for {m.label}: {', '.join(skipped)}.")
    if no_predictions:
        notes.insert(
            0, f"Bootstrap CI skipped (no saved predictions): {', '.join(no_predictions)}."
        )
    return pd.DataFrame.from_records(records, columns=CI_COLUMNS), notes


def _run_paths(run_dir: Path) -> tuple[Path | None, Path | None]:
    """The data folder and catalog file a run used, from its ``config.json`` where it names them.

    The runner records them under ``config``; relative paths are taken from the current folder.
    """
    try:
        record = json.loads((run_dir / "config.json").read_text())
        config = record.get("config", record)
    except (OSError, ValueError, AttributeError):
        return None, None

    def existing(key: str) -> Path | None:
        value = config.get(key) if isinstance(config, dict) else None
        return Path(value).expanduser() if value and Path(value).expanduser().exists() else None

    return existing("data_dir"), existing("info_path")


def render_ci(ci: pd.DataFrame) -> str:
    """Bootstrap intervals as text lines, one per method."""
    lines = []
    for method, group in ci.groupby("method", sort=False):
        cells = ", ".join(
            f"{_SHORT[r.dataset]} {r.auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
            for r in group.itertuples()
        )
        lines.append(f"  {method}: {cells}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_bars(methods: Sequence[Method], path: Path) -> Path:
    """Grouped bars of each dataset's test AUC (top) and ACC (bottom), one colour per method."""
    n = len(methods)
    chosen = compared_datasets(methods)
    fig = _figure(min(18.0, max(6.0, 0.22 * n * len(chosen) + 2.0)), 7.5)
    axes = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(chosen))
    width = 0.8 / n
    colors = _colors(n)
    for ax, metric in zip(axes, METRICS):
        values = np.array([[m.test(d, metric) for d in chosen] for m in methods])
        sds = np.array([[m.test_sd(d, metric) for d in chosen] for m in methods])
        present = values[~np.isnan(values)]
        low = float(present.min()) if present.size else 0.0
        bottom = max(0.0, math.floor(low * 10) / 10 - 0.05)
        for k, m in enumerate(methods):
            offset = (k - (n - 1) / 2) * width
            heights = np.nan_to_num(values[k], nan=bottom) - bottom
            errors = None if np.isnan(sds[k]).all() else np.nan_to_num(sds[k])
            ax.bar(
                x + offset,
                heights,
                width,
                bottom=bottom,
                color=colors[k],
                label=m.label,
                yerr=errors,
                capsize=2 if errors is not None else 0,
                error_kw={"elinewidth": 0.8},
            )
            for j in np.flatnonzero(np.isnan(values[k])):
                ax.text(x[j] + offset, bottom, "×", ha="center", va="bottom", color=colors[k])
        ax.set_ylim(bottom, 1.0)
        ax.set_xlim(-0.5, len(chosen) - 0.5)
        ax.set_ylabel(f"test {metric.upper()}")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[-1].set_xticks(x, [_SHORT[d] for d in chosen])
    seeds = " (bars: ± sd over seeds)" if any(len(m.seeds) > 1 for m in methods) else ""
    axes[0].set_title(f"Test AUC and ACC per dataset (× = missing){seeds}")
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncols=min(n, 4),
        fontsize=8,
        frameon=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_splits(methods: Sequence[Method], path: Path, metric: str = "auc") -> Path | None:
    """The 2021 paper's Figure 2 view: train / val / test score of each method on each dataset.

    One panel per dataset; each method a column of three markers joined by a line, so a high
    train score over a low test score shows over-fitting. Only methods with train or val rows
    are drawn; ``None`` (nothing written) when there are none.
    """
    shown = [m for m in methods if m.has_splits()]
    if not shown:
        return None
    colors = _colors(len(shown))
    chosen = compared_datasets(methods)
    ncols = min(5, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig = _figure(max(11.0 * ncols / 5, 0.45 * len(shown) * ncols + 4), 3.25 * nrows + 1.0)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel())
    markers = {"train": "^", "val": "s", "test": "o"}
    fills = {"train": "none", "val": "none", "test": None}
    x = np.arange(len(shown))
    lowest = 1.0
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    for ax, dataset in zip(axes, chosen):
        drawn = 0
        for k, m in enumerate(shown):
            ys = {
                split: m.scores[(dataset, split)][METRICS.index(metric)]
                for split in SPLITS
                if (dataset, split) in m.scores
                and not math.isnan(m.scores[(dataset, split)][METRICS.index(metric)])
            }
            if not ys:
                continue
            drawn += 1
            lowest = min(lowest, *ys.values())
            ax.plot([x[k]] * len(ys), list(ys.values()), color=colors[k], lw=1, alpha=0.6)
            for split, y in ys.items():
                face = fills[split] or colors[k]
                ax.scatter(x[k], y, marker=markers[split], s=28, color=colors[k], facecolors=face)
        if not drawn:
            ax.text(0.5, 0.5, "no results", transform=ax.transAxes, ha="center", color="0.5")
        ax.set_title(_SHORT[dataset], fontsize=10)
        ax.set_xticks(x, [str(k + 1) for k in range(len(shown))], fontsize=8)
        ax.set_xlim(-0.6, len(shown) - 0.4)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(max(0.0, math.floor(lowest * 10) / 10 - 0.02), 1.01)
    for row in range(nrows):
        axes[row * ncols].set_ylabel(metric.upper())
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker=markers[s], color="0.2", mfc="none" if fills[s] else "0.2")
        for s in SPLITS
    ]
    handles += [Line2D([], [], color=colors[k], lw=3) for k in range(len(shown))]
    labels = list(SPLITS) + [f"{k + 1}: {m.label}" for k, m in enumerate(shown)]
    fig.suptitle(f"{metric.upper()} on the train, val and test splits (gap = over-fitting)")
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_cd(sig: Significance, path: Path) -> Path | None:
    """autorank's critical-difference diagram (or interval plot) for a 3+-method analysis."""
    if sig.result is None:
        return None
    from autorank import plot_stats
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, max(2.5, 0.35 * len(sig.result.rankdf) + 1.2)), dpi=110)
    ax = fig.add_subplot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot_stats(sig.result, allow_insignificant=True, ax=ax)
    ax.set_title(f"test {sig.metric.upper()}: {sig.test}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    # autorank places the labels outside the axes: keep them in the picture.
    fig.savefig(path, bbox_inches="tight", pad_inches=0.2)
    return path


# --------------------------------------------------------------------------------- commands


def compare_command(
    paths: Sequence[Path],
    reference: str | None = None,
    out: Path | None = None,
    formats: Iterable[str] = (),
    plots: bool = False,
    *,
    bootstrap: int = 1000,
    labels_fn: LabelsFn | None = None,
    width: int | None = None,
    color: bool = False,
    datasets: Iterable[str] | None = None,
    report: Path | None = None,
    size: int | None = None,
) -> str:
    """``decathlon compare``: the table, the statistics and the bootstrap intervals, as text.

    ``paths`` are leaderboard CSVs or run directories; ``reference`` (``v1``/``v2``/``plus``)
    adds a published table; ``datasets`` restricts everything to those datasets. Methods at
    different image sizes are never averaged or ranked together: the text holds one section per
    size, and ``size`` keeps only that one. With ``formats`` (``md``, ``html``, ``csv``) or
    ``plots`` the files go to ``out`` (default ``./comparison``): table.md / table.html /
    table.csv (and bootstrap_ci.csv), bars.png, splits_auc.png / splits_acc.png, cd_auc.png /
    cd_acc.png; files need a single size (else a one-line error naming ``--size``). ``bootstrap``
    is the number of resamples (0 turns the intervals off). ``report`` writes the one-page HTML
    report there (:mod:`decathlon.report`), also for a single size. Returns the text for the CLI
    to print.
    """
    wanted = _formats(formats)
    methods = select_size(collect(list(paths), reference, datasets), size)
    groups = by_size(methods)
    if len(groups) > 1 and (wanted or plots or report is not None):
        raise LeaderboardError(
            f"the inputs hold image sizes {', '.join(map(str, groups))}, and a table never mixes"
            " sizes: pass --size N to write files for one of them"
        )
    parts: list[str] = []
    for group_size, group in groups.items():
        if len(groups) > 1:
            parts.append(f"=== Image size {group_size}x{group_size} ===")
        table, sigs, ci, notes, text = _compare_group(
            group, bootstrap=bootstrap, labels_fn=labels_fn, width=width, color=color
        )
        parts.extend(text)

    written: list[Path] = []
    if wanted or plots:
        folder = Path(out) if out is not None else Path("comparison")
        folder.mkdir(parents=True, exist_ok=True)
        for fmt in wanted:
            target = folder / FORMAT_FILES[fmt]
            render = {"md": to_markdown, "html": to_html}.get(fmt)
            target.write_text(render(table, methods) if render else to_csv(table))
            written.append(target)
            if fmt == "csv" and not ci.empty:
                ci_path = folder / "bootstrap_ci.csv"
                ci.to_csv(ci_path, index=False, lineterminator="\n", float_format="%.6g")
                written.append(ci_path)
        if plots:
            written.append(plot_bars(methods, folder / "bars.png"))
            for metric in METRICS:
                made = plot_splits(methods, folder / f"splits_{metric}.png", metric)
                if made:
                    written.append(made)
            for sig in sigs:
                made = plot_cd(sig, folder / f"cd_{sig.metric}.png")
                if made:
                    written.append(made)
    if report is not None:
        from decathlon import report as report_module

        written.append(report_module.write(Path(report), methods, table, sigs, ci, notes))
    if written:
        parts.append("Wrote:\n" + "\n".join(f"  {p}" for p in written))
    return "\n\n".join(parts) + "\n"


def _compare_group(
    methods: Sequence[Method],
    *,
    bootstrap: int,
    labels_fn: LabelsFn | None,
    width: int | None,
    color: bool,
) -> tuple[pd.DataFrame, list[Significance], pd.DataFrame, list[str], list[str]]:
    """Table, statistics, bootstrap intervals and their notes for methods at one image size,
    and the text."""
    table = comparison_table(methods)
    parts = [render_terminal(table, methods, width=width, color=color).rstrip()]

    sigs = [significance(methods, metric) for metric in METRICS]
    lines = [line for s in sigs for line in s.lines]
    unique = list(dict.fromkeys(lines))  # both metrics may be skipped for the same reason
    columns = width or max(shutil.get_terminal_size((140, 24)).columns, 100)
    parts.append("Statistics:\n" + "\n".join(_wrap(line, columns) for line in unique))

    ci = pd.DataFrame(columns=CI_COLUMNS)
    notes: list[str] = []
    if bootstrap > 0:
        ci, notes = bootstrap_table(methods, labels_fn, n_boot=bootstrap)
        lines = []
        if not ci.empty:
            lines.append("Bootstrap 95% CI of test AUC (images resampled):\n" + render_ci(ci))
        lines += [f"  {n}" for n in notes]
        if lines:
            parts.append("\n".join(lines))
    return table, sigs, ci, notes, parts


def show_command(
    run: Path, *, width: int | None = None, color: bool = False, size: int | None = None
) -> str:
    """``decathlon show RUN``: one run's Table-2 view (one per image size; ``size`` keeps one),
    then every row by split with its status."""
    board = read_leaderboard(Path(run))
    methods = select_size(methods_of(board), size)
    if size is not None:
        board.rows = board.rows[board.rows["size"] == size].reset_index(drop=True)
    parts = []
    for group in by_size(methods).values():
        table = comparison_table(group)
        parts.append(render_terminal(table, group, width=width, color=color).rstrip())
    parts.append(_render_rows(board, width=width, color=color).rstrip())
    return "\n\n".join(parts) + "\n"


def _render_rows(board: Leaderboard, *, width: int | None, color: bool) -> str:
    """Every row of a run, one line per (adapter, seed, dataset); fits 100 columns, the reason
    wrapping in the room left (scores under two-line headers: ``train`` over ``AUC``)."""
    from rich import box
    from rich.table import Table

    console = _console(width, color)
    sizes_shown = "/".join(str(s) for s in sorted(set(board.rows["size"])))
    table = Table(
        title=f"{board.path} (profile {board.profile}, size {sizes_shown})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    rows = board.rows
    several = rows["adapter"].nunique() > 1
    if several:
        table.add_column("adapter", no_wrap=True)
    sizes = rows["size"].nunique() > 1
    if sizes:
        table.add_column("size", no_wrap=True, justify="right")
    table.add_column("seed", no_wrap=True, justify="right")
    table.add_column("dataset", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for metric in METRICS:
        for split in SPLITS:
            table.add_column(f"{split}\n{metric.upper()}", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=1, min_width=12)
    keys = ["run_id", "adapter", "size", "seed"]
    for (_, adapter, size, seed), group in rows.groupby(keys, sort=False):
        lead = ([str(adapter)] if several else []) + ([str(size)] if sizes else [])
        for dataset in DATASETS:
            cell = group[group["dataset"] == dataset].set_index("split")
            if cell.empty:
                table.add_row(*lead, str(seed), dataset, "not run")
                continue
            status = cell.loc["test", "status"] if "test" in cell.index else "no test row"
            values = [
                _fmt(metric, cell.loc[split, metric]) if split in cell.index else ""
                for metric in METRICS
                for split in SPLITS
            ]
            elapsed = cell.loc["test", "elapsed_s"] if "test" in cell.index else ""
            try:
                elapsed = f"{float(elapsed):.0f}s"
            except ValueError:
                pass
            reasons = sorted({r for r in cell["reason"] if r})
            table.add_row(*lead, str(seed), dataset, status, *values, elapsed, "; ".join(reasons))
    console.print(table)
    return console.export_text(styles=color)


def _formats(formats: Iterable[str]) -> list[str]:
    out: list[str] = []
    for raw in formats:
        fmt = FORMAT_ALIASES.get(raw.lower().lstrip("."), raw.lower().lstrip("."))
        if fmt not in FORMAT_FILES:
            raise LeaderboardError(
                f"unknown format '{raw}' (choose md, html or csv)" + did_you_mean(raw, FORMAT_FILES)
            )
        if fmt not in out:
            out.append(fmt)
    return out
