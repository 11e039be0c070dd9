"""Methods: a leaderboard's rows grouped by ``run_id/adapter`` and image size, each dataset's value
the mean over its seeds; the compared datasets and sizes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from decathlon import datasets
from decathlon.compare.base import REFERENCE_LABELS
from decathlon.errors import LeaderboardError, did_you_mean
from decathlon.leaderboard import (
    DATASETS,
    METRICS,
    SPLITS,
    V1_FLAGS,
    Leaderboard,
    printable,
    read_leaderboard,
    reference_path,
)


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
    unverified: int = 0  # rows on data files without the published MD5 (data_verified=false)
    #: The run as labels show it when its run_id alone is ambiguous: two run folders of the
    #: same name (every ``check --workdir`` makes a ``run``), told apart by their parent folders.
    shown_run: str = ""

    @property
    def run_label(self) -> str:
        return self.shown_run or REFERENCE_LABELS.get(self.run_id, self.run_id)

    @property
    def label(self) -> str:
        at = "" if self.size == datasets.DEFAULT_SIZE else f"@{self.size}"
        return f"{self.run_label}/{self.adapter}{at}"

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def mark(self) -> str:
        """What follows the label in tables: † incomplete, ‡ some rows ran unsealed, § some rows
        ran on data files that are not the published ones."""
        return (
            ("" if self.complete else " †")
            + (" ‡" if self.unsealed else "")
            + (" §" if self.unverified else "")
        )

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
                f"--datasets: unknown dataset '{raw}'."
                + did_you_mean(name, DATASETS)
                + f" Known: {', '.join(DATASETS)}"
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
            unverified=int((group["data_verified"].str.lower() == "false").sum()),
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
                    method.sd[(dataset, split)] = (sd(values[:, 0]), sd(values[:, 1]))
                    if split == "test":
                        method.per_seed[dataset] = values
                elif split == "test":
                    method.missing[dataset] = _why_missing(cell, len(seeds))
        out.append(method)
    return out


def sd(values: np.ndarray) -> float:
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
    Refuses the same method (``run_id/adapter``) coming from two files, unless both are run
    folders, different ones: each is then labelled by the shortest end of its path that tells
    it from the others (``a/run/baseline``, ``b/run/baseline``). The same folder given twice,
    or a leaderboard file and its copy elsewhere, stay refused.
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
    for source in sources:
        methods.extend(methods_of(read_leaderboard(source), chosen))
    clashes: dict[str, list[Method]] = {}
    for method in methods:
        clashes.setdefault(method.label, []).append(method)
    for same in clashes.values():
        if len(same) > 1:
            _tell_apart(same)
    seen: dict[str, Path] = {}
    for method in methods:
        if method.label in seen:
            raise LeaderboardError(
                f"{method.source}: duplicate rows: method {method.label} is also in "
                f"{seen[method.label]}"
            )
        seen[method.label] = method.source
    return methods


def _tell_apart(same: Sequence[Method]) -> None:
    """Label methods of one label from different run folders by the shortest end of each
    folder's path that differs (``/x/a/run`` and ``/y/b/run``: ``a/run`` and ``b/run``). Left as
    they are (then refused as duplicates) unless each comes from a run folder of its own."""
    folders = [m.run_dir.resolve() if m.run_dir is not None else None for m in same]
    if any(f is None for f in folders) or len(set(folders)) < len(folders):
        return
    parts = [f.parts for f in folders if f is not None]
    for k in range(1, max(len(p) for p in parts) + 1):
        # Folder names are text from the file system (a received run's own folder among them):
        # shown as the file's names are, without escapes or newlines.
        ends = [printable(Path(*p[-k:]).as_posix()) for p in parts]
        if len(set(ends)) == len(ends):
            break
    for method, folder, end in zip(same, folders, ends):
        assert folder is not None
        same_name = printable(folder.name) == method.run_id
        method.shown_run = end if same_name else f"{end}:{method.run_id}"


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
