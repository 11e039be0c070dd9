"""What finished portfolio tasks' ``runs.npz`` say, offline: other ways to combine the same
runs, and how each configuration's runs score on val and on test.

Every portfolio task keeps each run's val and test scores (plain and with test-time views),
the ensemble's weights and the calibration in ``output/runs.npz``. For the tasks given, this
script reports:

- ``rules``: the test AUC and ACC of the shipped ensemble (recomputed: it must equal the
  leaderboard's) beside other rules over the same runs, each calibrated on val as the adapter
  does: the uniform mean of all runs, of the k best by val AUC, of the last rung, of the first;
  the shipped weights shrunk 25% and 50% toward the uniform mean of all runs;
  the shipped weights as a geometric mean; the shipped ensemble without calibration; the mean
  of the single runs' test scores; and the ensemble selected again (as the adapter selects it,
  with the task's seed) with and without test-time views, chosen by each rule the adapter has
  had: always with, always without, the higher on val (before commit ad5ca81), and with unless
  the scores without win in 95% of val's bootstrap resamples (since); and two upper bounds that
  read the test labels, what no rule over these runs can pass: the best single run (plain or
  with views) on test, and the ensemble selected greedily on test (uncalibrated);
- ``configs``: per dataset and configuration, the mean val and test AUC of its first-rung runs
  (the race's only like-for-like comparison: every configuration runs there for the same time).

Test labels are read here, never by the adapter. Run it from the repository root with the
ResNets' environment (numpy, scipy, scikit-learn) and this checkout's ``decathlon`` on the path::

    PYTHONPATH=. $ENV benchmarks/portfolio_runs.py --data-dir ../shared/data/medmnist \\
        runs/*/tasks/*/*/output/runs.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from portfolio_throughput import load_portfolio


def rules(
    portfolio: Any, z: Any, y_val: np.ndarray, y_test: np.ndarray, task: str, seed: int
) -> dict:
    """Test (AUC, ACC) of each rule over one task's runs (of the task's ``seed``)."""
    from decathlon.metrics import acc, auc

    val, test = z["val_tta"].astype(np.float64), z["test_tta"].astype(np.float64)
    n = len(val)
    singles = np.array([portfolio.fast_auc(task, y_val, s) for s in val])
    out: dict[str, tuple[float, float]] = {}

    def scored(scores: np.ndarray) -> tuple[float, float]:
        return auc(task, y_test, scores), acc(task, y_test, scores)

    def rule(name: str, w: np.ndarray, v: np.ndarray = val, t: np.ndarray = test) -> None:
        """The adapter's own weighting and calibration, with weights ``w``."""
        w = np.asarray(w, dtype=np.float64) / np.sum(w)
        v, t = portfolio.weighted(w, list(v)), portfolio.weighted(w, list(t))
        out[name] = scored(portfolio.calibrate(v, y_val, task)(t))

    if bool(z["tta"]):
        rule("shipped", z["weights"])
    else:
        rule("shipped", z["weights"], z["val_plain"], z["test_plain"])
    rule("uniform, all runs", np.ones(n))
    best = np.argsort(-singles, kind="stable")
    for k in (3, 5, 10):
        rule(f"uniform, {k} best on val", np.isin(np.arange(n), best[:k]))
    rule("uniform, last rung", z["rung"] == z["rung"].max())
    rule("uniform, first rung", z["rung"] == 0)
    w = z["weights"] / np.sum(z["weights"])
    shipped = "tta" if bool(z["tta"]) else "plain"
    for share in (0.25, 0.5):  # the selection's weights shrunk toward the uniform mean
        shrunk = (1 - share) * w + share / n
        rule(
            f"shipped, {share:.0%} toward uniform",
            shrunk,
            z[f"val_{shipped}"],
            z[f"test_{shipped}"],
        )

    def geometric(s: np.ndarray) -> np.ndarray:
        g = np.exp(np.tensordot(w, np.log(np.clip(s, 1e-7, 1.0)), 1))
        return g / g.sum(axis=1, keepdims=True)

    out["shipped weights, geometric mean"] = scored(
        portfolio.calibrate(geometric(val), y_val, task)(geometric(test))
    )
    out["shipped, no calibration"] = scored(portfolio.weighted(w, list(test)))
    out["single runs' mean"] = tuple(np.mean([scored(s) for s in test], axis=0))

    made = {}  # the adapter's selection, again, with and without the views
    for key in ("tta", "plain"):
        v, t = list(z[f"val_{key}"].astype(np.float64)), list(z[f"test_{key}"].astype(np.float64))
        weights = portfolio.ensemble_selection(v, y_val, task, size=25, bags=8, seed=seed)
        made[key] = (portfolio.weighted(weights, v), portfolio.weighted(weights, t))
    for key, name in (("tta", "views always"), ("plain", "views never")):
        out[name] = scored(portfolio.calibrate(made[key][0], y_val, task)(made[key][1]))
    higher = portfolio.fast_auc(task, y_val, made["tta"][0]) >= portfolio.fast_auc(
        task, y_val, made["plain"][0]
    )
    out["views if higher on val"] = out["views always" if higher else "views never"]
    wins = portfolio.plain_wins_share(y_val, made["plain"][0], made["tta"][0], task, seed)
    kept = wins < portfolio.PLAIN_WINS_NEEDED
    out["views unless plain wins resamples"] = out["views always" if kept else "views never"]
    # Upper bounds, chosen with the test labels (not methods): what the same runs allow at best.
    candidates = [*z["test_plain"].astype(np.float64), *z["test_tta"].astype(np.float64)]
    out["bound: best single run on test"] = max((scored(s) for s in candidates), key=lambda r: r[0])
    weights = portfolio.ensemble_selection(
        candidates, y_test, task, size=50, bags=1, seed=seed, init=1
    )
    out["bound: ensemble selected on test"] = scored(portfolio.weighted(weights, candidates))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("runs", type=Path, nargs="+", help="tasks' output/runs.npz files")
    args = parser.parse_args(argv)

    from decathlon.datasets import Catalog
    from decathlon.metrics import auc

    portfolio = load_portfolio()
    catalog = Catalog.load()
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    by_rule: dict[str, list[dict]] = {}
    by_config: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for path in args.runs:
        dataset = path.parts[-4]  # tasks/<dataset>/seed<N>/output/runs.npz
        task = catalog.info(dataset).task
        if dataset not in labels:  # each dataset's labels read once
            with np.load(args.data_dir / f"{dataset}.npz") as arrays:
                labels[dataset] = (arrays["val_labels"], arrays["test_labels"])
        z = np.load(path)
        y_val, y_test = labels[dataset][0][z["val_rows"]], labels[dataset][1]
        seed = int(path.parts[-3].removeprefix("seed"))
        scores = rules(portfolio, z, y_val, y_test, task, seed)
        by_rule.setdefault(dataset, []).append(scores)
        shipped = scores["shipped"]
        print(f"{path}: shipped {shipped[0]:.4f} / {shipped[1]:.4f}")
        for i in np.flatnonzero(z["rung"] == 0):
            by_config.setdefault((dataset, str(z["config"][i])), []).append(
                (auc(task, y_val, z["val_tta"][i]), auc(task, y_test, z["test_tta"][i]))
            )
    print("\nrules: mean test AUC / ACC over the tasks, and the difference to the shipped ensemble")
    for dataset, tasks in by_rule.items():
        print(f"{dataset} ({len(tasks)} tasks)")
        base = np.mean([t["shipped"] for t in tasks], axis=0)
        for rule in tasks[0]:
            m = np.mean([t[rule] for t in tasks], axis=0)
            d = m - base
            print(f"  {rule:34s} {m[0]:.4f} / {m[1]:.4f}  {d[0]:+.4f} / {d[1]:+.4f}")
    print("\nconfigs: first-rung runs, mean val AUC and mean test AUC")
    for (dataset, config), pairs in sorted(by_config.items()):
        v = np.array(pairs)
        val, test = v.mean(axis=0)
        print(f"  {dataset:15s} {config:16s} runs {len(v):2d}  val {val:.4f}  test {test:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
