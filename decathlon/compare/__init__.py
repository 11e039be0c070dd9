"""Compare leaderboards with each other and with the published results.

What ``python -m decathlon compare`` and ``python -m decathlon show`` call. The package's
modules, one job each: :mod:`.base` (shared names), :mod:`.methods` (rows to methods),
:mod:`.table` (the table, its ranks and renderings), :mod:`.stats` (significance tests),
:mod:`.bootstrap` (confidence intervals), :mod:`.plots` (imported only for ``--plots``) and
:mod:`.commands`. Reading and validating a leaderboard file is :mod:`decathlon.leaderboard`'s
(the module that writes it); the names below are re-exported here. The inputs are
leaderboard CSVs in the project format (or run directories holding one): one row per (adapter,
dataset, size, seed, split), plus derived ``decathlon`` summary rows that this package reads
past and recomputes itself.

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

from typing import Any

from decathlon.compare.base import (
    ALPHA,
    CI_COLUMNS,
    COLUMNS,
    FORMAT_ALIASES,
    FORMAT_FILES,
    MIN_DATASETS,
    REFERENCE_LABELS,
    TABLE_COLUMNS,
    LabelsFn,
    MetricFn,
    table_columns,
)
from decathlon.compare.bootstrap import bootstrap_ci, bootstrap_table, catalog_labels, render_ci
from decathlon.compare.commands import compare_command, show_command
from decathlon.compare.methods import (
    Method,
    by_size,
    collect,
    methods_of,
    select_datasets,
    select_size,
)
from decathlon.compare.stats import Significance, check_assumptions, score_matrix, significance
from decathlon.compare.table import (
    TABLE_CSS,
    best_cells,
    compared_datasets,
    comparison_table,
    html_table,
    render_terminal,
    to_csv,
    to_html,
    to_markdown,
    value_columns,
)
from decathlon.leaderboard import (
    DATASETS,
    METRICS,
    OPTIONAL_COLUMNS,
    PUBLISHED,
    REFERENCES,
    SIZES,
    SPLITS,
    STATUSES,
    SUMMARY_DATASET,
    SUMMARY_STATUSES,
    V1_FLAGS,
    Leaderboard,
    read_leaderboard,
    reference_path,
)

_PLOTS = ("plot_bars", "plot_cd", "plot_splits")


def __getattr__(name: str) -> Any:
    """The plots, imported (with matplotlib) on first use only."""
    if name in _PLOTS:
        from decathlon.compare import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'decathlon.compare' has no attribute {name!r}")


__all__ = [
    "ALPHA",
    "CI_COLUMNS",
    "COLUMNS",
    "DATASETS",
    "FORMAT_ALIASES",
    "FORMAT_FILES",
    "METRICS",
    "MIN_DATASETS",
    "OPTIONAL_COLUMNS",
    "PUBLISHED",
    "REFERENCES",
    "REFERENCE_LABELS",
    "SIZES",
    "SPLITS",
    "STATUSES",
    "SUMMARY_DATASET",
    "SUMMARY_STATUSES",
    "TABLE_COLUMNS",
    "TABLE_CSS",
    "V1_FLAGS",
    "LabelsFn",
    "Leaderboard",
    "Method",
    "MetricFn",
    "Significance",
    "best_cells",
    "bootstrap_ci",
    "bootstrap_table",
    "by_size",
    "catalog_labels",
    "check_assumptions",
    "compare_command",
    "compared_datasets",
    "comparison_table",
    "collect",
    "html_table",
    "methods_of",
    "read_leaderboard",
    "reference_path",
    "render_ci",
    "render_terminal",
    "score_matrix",
    "select_datasets",
    "select_size",
    "show_command",
    "significance",
    "table_columns",
    "to_csv",
    "to_html",
    "to_markdown",
    "value_columns",
    *_PLOTS,
]
