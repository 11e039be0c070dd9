"""Gather the portfolio measurement's one-task runs into one leaderboard per adapter.

``benchmarks/portfolio_wall5.sh`` runs each (adapter, dataset, seed) as its own harness run so
that the adapters can be interleaved; ``compare`` counts a method as ``run_id/adapter``, so this
rewrites each adapter's rows under one run_id (the folder's name: ``wall5``, ``wall10``) and
recomputes the summary rows over the three real subsets with the harness's own
:func:`decathlon.leaderboard.summarize`.

    python benchmarks/portfolio_merge.py runs/wall5     # writes runs/wall5/merged/ADAPTER.csv
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from decathlon import leaderboard

DATASETS = ("breastmnist", "pneumoniamnist", "retinamnist")


def main(out: Path) -> None:
    rows_by_adapter: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(out.glob("*-seed*/leaderboard.csv")):
        for row in leaderboard.read(path):
            if row["dataset"] != leaderboard.SUMMARY_DATASET:
                rows_by_adapter[row["adapter"]].append({**row, "run_id": out.name})
    merged = out / "merged"
    merged.mkdir(exist_ok=True)
    for adapter, rows in rows_by_adapter.items():
        rows.sort(key=lambda r: (int(r["seed"]), DATASETS.index(r["dataset"]), r["split"]))
        leaderboard.write(merged / f"{adapter}.csv", rows + leaderboard.summarize(rows, DATASETS))
        print(merged / f"{adapter}.csv")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/wall5"))
