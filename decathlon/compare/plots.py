"""The PNG plots of ``compare --plots``: bars per dataset, splits, critical-difference diagram.

Imported only when plots are asked for (matplotlib is slow to import)."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from decathlon.compare.base import SHORT
from decathlon.compare.methods import Method
from decathlon.compare.stats import Significance
from decathlon.compare.table import compared_datasets
from decathlon.leaderboard import METRICS, SPLITS

P = ParamSpec("P")
R = TypeVar("R")


def _plain_text(plot: Callable[P, R]) -> Callable[P, R]:
    """Draw with every text taken literally: a method name such as ``cost$\\frac{$`` is a
    name, not mathtext (which would fail to parse, or render something else)."""

    @functools.wraps(plot)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> R:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)

    return drawn


#: A picture stays one a browser shows: at most this many inches (x 110 dpi) a side, and a
#: method's name at most this many characters in it (the tables keep the whole name).
MAX_INCHES = 30.0
MAX_LABEL = 48


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    size = (min(width, MAX_INCHES), min(height, MAX_INCHES))
    return Figure(figsize=size, dpi=110, layout="constrained")


def short_labels(labels: Sequence[str]) -> dict[str, str]:
    """Each label as drawn: cut to :data:`MAX_LABEL` characters, still one per method."""
    shown: dict[str, str] = {}
    for label in labels:
        short = label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"
        k = 1
        while short in shown.values():
            k += 1
            short = f"{label[: MAX_LABEL - 6]}… #{k}"
        shown[label] = short
    return shown


def _colors(n: int) -> list[Any]:
    """One colour per method, none repeated: the qualitative maps up to 60 methods (tab20 and
    its two companions), then evenly spaced hues of a continuous map."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 60:
        pool = [colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
        return pool[:n]
    return [colormaps["turbo"](i / (n - 1)) for i in range(n)]


@_plain_text
def plot_bars(methods: Sequence[Method], path: Path) -> Path:
    """Grouped bars of each dataset's test AUC (top) and ACC (bottom), one colour per method."""
    n = len(methods)
    chosen = compared_datasets(methods)
    fig = _figure(min(18.0, max(6.0, 0.22 * n * len(chosen) + 2.0)), 7.5)
    axes = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(chosen))
    width = 0.8 / n
    colors = _colors(n)
    names = short_labels([m.label for m in methods])
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
                label=names[m.label],
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
    axes[-1].set_xticks(x, [SHORT[d] for d in chosen])
    seeds = " (bars: ± sd over seeds)" if any(len(m.seeds) > 1 for m in methods) else ""
    axes[0].set_title(f"Test AUC and ACC per dataset (× = no score){seeds}")
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


@_plain_text
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
        ax.set_title(SHORT[dataset], fontsize=10)
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
    names = short_labels([m.label for m in shown])
    labels = list(SPLITS) + [f"{k + 1}: {names[m.label]}" for k, m in enumerate(shown)]
    fig.suptitle(f"{metric.upper()} on the train, val and test splits (gap = over-fitting)")
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


@_plain_text
def plot_cd(sig: Significance, path: Path) -> Path | None:
    """autorank's critical-difference diagram (or interval plot) for a 3+-method analysis."""
    if sig.result is None:
        return None
    from autorank import plot_stats
    from matplotlib.figure import Figure

    height = min(MAX_INCHES, max(2.5, 0.35 * len(sig.result.rankdf) + 1.2))
    fig = Figure(figsize=(8.0, height), dpi=110)
    ax = fig.add_subplot()
    names = short_labels([str(label) for label in sig.result.rankdf.index])
    result = sig.result._replace(rankdf=sig.result.rankdf.rename(index=names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot_stats(result, allow_insignificant=True, ax=ax)
    ax.set_title(f"test {sig.metric.upper()}: {sig.test}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    # autorank places the labels outside the axes: keep them in the picture.
    fig.savefig(path, bbox_inches="tight", pad_inches=0.2)
    return path
