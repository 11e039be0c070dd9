"""Cross-fitting against the given split, one configuration at a time, paired: what the
portfolio's ``folds`` option rests on, without the race and the ensemble selection around it.

For each seed, the same configuration of ``adapters/portfolio.py`` with the same fixed number of
epochs is trained ``K`` times in two ways, with the adapter's own ``Runner``:

- ``split``: ``K`` runs of different seeds on train, scored on val (what the portfolio does);
- ``folds``: one run per fold of train + val (``stratified_folds``), each scored on its held-out
  fold (cross-fitting, the ``folds`` option).

Both arms' test scores are the uniform mean of their ``K`` networks' (test-time views),
scored with the harness's medmnist-equal metrics against the test labels, which this script
(not the adapter) reads. The two arms run side by side, one process each with one torch thread.

Run it from the repository root with the ResNets' environment (torch, numpy, scikit-learn) and
this checkout's ``decathlon`` on the path::

    ENV=~/.cache/decathlon/envs/<hash>/bin/python    # python -m decathlon setup portfolio
    PYTHONPATH=. $ENV benchmarks/portfolio_folds.py --data-dir ../shared/data/medmnist \\
        --dataset breastmnist --epochs 60 --seeds 0 1 2 3 --out /tmp/folds.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from portfolio_throughput import cpu_model, load_portfolio

log = logging.getLogger("portfolio_folds")


def one_arm(
    data_dir: Path, dataset: str, arm: str, config: str, epochs: int, seed: int, k: int
) -> dict[str, Any]:
    """Train one arm's ``k`` networks; its test AUC and ACC and its members' mean test AUC."""
    import torch

    from decathlon.datasets import Catalog
    from decathlon.metrics import acc, auc

    torch.set_num_threads(1)
    portfolio = load_portfolio()
    info = Catalog.load().info(dataset)
    arrays = np.load(data_dir / f"{dataset}.npz")
    x = {s: arrays[f"{s}_images"] for s in ("train", "val", "test")}
    y = {s: arrays[f"{s}_labels"] for s in ("train", "val", "test")}
    fold_of = None
    if arm == "folds":
        pooled = np.concatenate([y["train"], y["val"]])
        fold_of = portfolio.stratified_folds(pooled, k, seed, info.task)
    data = portfolio.TaskData(
        info.task, info.n_outputs, x["train"], y["train"], x["val"], y["val"], x["test"]
    )
    data.fold_of = fold_of
    runner = portfolio.Runner(data, "cpu", 16, 64)
    cfg = {c.name: c for c in portfolio.PORTFOLIO}[config]
    started = time.perf_counter()
    tests: list[np.ndarray] = []
    for i in range(k):
        fold = i if arm == "folds" else -1
        record = portfolio.RunRecord(cfg.name, 0, seed * 100 + i, epochs, None, fold)
        record = runner.train(cfg, record, time.time() + 1e9)
        tests.append(record.test["tta"])
    test = np.mean(tests, axis=0)
    members = [auc(info.task, y["test"], t) for t in tests]
    return {
        "dataset": dataset,
        "arm": arm,
        "config": config,
        "epochs": epochs,
        "seed": seed,
        "folds": k,
        "test_auc": round(auc(info.task, y["test"], test), 4),
        "test_acc": round(acc(info.task, y["test"], test), 4),
        "member_test_auc_mean": round(float(np.mean(members)), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default="res-geo")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--arm", choices=("split", "folds"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:  # one arm, one seed: the child process
        row = one_arm(
            args.data_dir,
            args.dataset,
            args.arm,
            args.config,
            args.epochs,
            args.seeds[0],
            args.folds,
        )
        print(json.dumps(row), flush=True)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    common = [
        sys.executable, __file__, "--data-dir", str(args.data_dir), "--dataset", args.dataset,
        "--config", args.config, "--epochs", str(args.epochs), "--folds", str(args.folds),
        "--out", str(args.out),
    ]  # fmt: skip
    machine = {"cpu": cpu_model(), "python": platform.python_version()}
    with args.out.open("a") as out:
        for seed in args.seeds:
            children = [
                subprocess.Popen(
                    [*common, "--seeds", str(seed), "--arm", arm], stdout=subprocess.PIPE, text=True
                )
                for arm in ("split", "folds")
            ]
            rows: list[dict[str, Any]] = []
            for child in children:
                stdout, _ = child.communicate()
                if child.returncode:
                    raise SystemExit(f"an arm failed (exit {child.returncode})")
                rows.append({**json.loads(stdout.strip().splitlines()[-1]), **machine})
            for row in rows:
                out.write(json.dumps(row) + "\n")
            out.flush()  # a seed's rows survive a stop before the last seed
            log.info(
                "%s seed %d: split %.4f / %.4f, folds %.4f / %.4f (test AUC / ACC)",
                args.dataset, seed, rows[0]["test_auc"], rows[0]["test_acc"],
                rows[1]["test_auc"], rows[1]["test_acc"],
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
