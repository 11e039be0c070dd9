"""Statistics over the matrix of test scores: Wilcoxon for two methods, ``autorank`` (Friedman
with Nemenyi, or repeated-measures ANOVA with Tukey) for three or more."""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from decathlon.compare.base import ALPHA, MIN_DATASETS
from decathlon.compare.methods import Method
from decathlon.compare.table import compared_datasets


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

    name = metric.upper()
    if np.allclose(matrix.sub(matrix.iloc[:, 0], axis=0).to_numpy(), 0.0):
        # Every rank tied: Friedman's statistic is 0/0 ("p = nan; do not differ").
        return Significance(
            metric,
            None,
            [
                f"The {matrix.shape[1]} methods have the same test {name} on every dataset;"
                " no test to run."
            ],
        )
    # autorank 1.3 prints a frame even with verbose=False.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            result = autorank(matrix, alpha=ALPHA, verbose=False, order="descending")
        except (ValueError, ZeroDivisionError) as exc:
            return Significance(metric, None, [f"Statistics not run: autorank failed ({exc})."])
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
