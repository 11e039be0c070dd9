"""Candidate configurations of the portfolio screened one at a time, without the race: each
trained ``--seeds`` times for a fixed wall time per run (as a rung allots it), side by side.

For every candidate and seed, one time-bounded run of the adapter's own ``Runner.train`` (the
same schedule, snapshots and test-time views as in the race); reported per run: epochs, val
AUC, test AUC and ACC; per candidate: the mean of its runs' test AUCs, and the test AUC and
ACC of the uniform mean of its runs (what an ensemble of one configuration gets). Test labels
are read by this script, never by the adapter. Two runs at a time, one process each with one torch
thread, as the portfolio trains on this 2-core machine.

With ``--angle-sets``, every snapshot is also scored with other test-time views, on the same
runs: for each set of angles (degrees), the image and its mirror turned by each angle; each
run's row then holds every set's val AUC, test AUC and test ACC (``views``). The extra passes
take snapshot time, so runs get fewer epochs than without.

With ``--pseudo`` (self-training on the test images, labelled by an ensemble's predictions) or
``--importance`` (train resampled by its images' odds of being test images), the runs train on
another training set; neither reads the test labels.

Candidates are named as the option ``configs`` names them: any of the adapter's ``CONFIGS``
(its portfolio and the configurations screened beside it, ``MORE_CONFIGS``). Run it from the
repository root with the ResNets' environment and this checkout's ``decathlon`` on the path::

    ENV=~/.cache/decathlon/envs/<hash>/bin/python    # python -m decathlon setup portfolio
    PYTHONPATH=. $ENV benchmarks/portfolio_configs.py --data-dir ../shared/data/medmnist \\
        --dataset breastmnist --seconds 40 --seeds 0 1 2 3 --out /tmp/configs.jsonl \\
        --configs vgg-geo wide-geo vgg-wide-geo
    # the same runs scored with the mirror alone and with turns of 10 degrees too:
    ... --configs vgg-geo res-geo --angle-sets 0 0,-10,10 0,-5,5,-10,10
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from portfolio_throughput import cpu_model, load_portfolio

log = logging.getLogger("portfolio_configs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--seconds", type=float, required=True, help="wall time per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument(
        "--angle-sets",
        nargs="+",
        default=[],
        metavar="A,B,...",
        help="also score each snapshot with the image and its mirror turned by these angles",
    )
    parser.add_argument(
        "--adapt-bn",
        action="store_true",
        help="also score each snapshot with its batch-norm statistics taken from the images it "
        "predicts (AdaBN: val's for val, test's for test; their labels are not read)",
    )
    parser.add_argument(
        "--pseudo",
        type=Path,
        metavar="SCORES.npy",
        help="self-training: add the test images to train, labelled by these scores of them "
        "(an ensemble's own test predictions; their true labels are not read), the most "
        "confident --pseudo-share of each predicted class",
    )
    parser.add_argument("--pseudo-share", type=float, default=0.5)
    parser.add_argument(
        "--no-mirror",
        action="store_true",
        help="every configuration without mirror images, in training and at test time (as the "
        "adapter's option mirror has it for images with a handedness)",
    )
    parser.add_argument(
        "--ema",
        type=float,
        metavar="EPOCHS",
        help="every configuration predicting with a moving average of its weights over about "
        "this many epochs (the Config field ema)",
    )
    parser.add_argument(
        "--importance",
        type=float,
        metavar="POWER",
        help="covariate-shift weighting: train resampled (with replacement, as many rows) by "
        "the density ratio test/train of its images, estimated by a classifier told only which "
        "split an image is from (test labels are not read), raised to POWER (0 < POWER <= 1)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from decathlon.contract import MULTI_LABEL
    from decathlon.datasets import Catalog
    from decathlon.metrics import acc, auc

    portfolio = load_portfolio()
    try:
        angle_sets = {s: tuple(float(a) for a in s.split(",")) for s in args.angle_sets}
    except ValueError:
        parser.error(f"--angle-sets: comma-separated degrees, got {args.angle_sets}")
    if angle_sets:
        score_views(portfolio, angle_sets)
    if args.adapt_bn:
        score_adapted(portfolio)
    known = portfolio.CONFIGS
    unknown = [c for c in args.configs if c not in known]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; known: {sorted(known)}")
    if args.no_mirror:
        known = {name: replace(known[name], mirror=False) for name in args.configs}
    if args.ema:
        known = {name: replace(known[name], ema=args.ema) for name in args.configs}
    info = Catalog.load().info(args.dataset)
    arrays = np.load(args.data_dir / f"{args.dataset}.npz")
    x_train, y_train = arrays["train_images"], arrays["train_labels"]
    if args.pseudo:
        if info.task == MULTI_LABEL:
            parser.error("--pseudo: single-label tasks only")
        if not 0 < args.pseudo_share <= 1:
            parser.error(f"--pseudo-share: a share above 0 and at most 1, got {args.pseudo_share}")
        scores = np.load(args.pseudo)
        if len(scores) != len(arrays["test_images"]):
            parser.error(
                f"--pseudo: {len(scores)} rows, the test split has {len(arrays['test_images'])}"
            )
        picked, labels = pseudo_labelled(scores, args.pseudo_share)
        x_train = np.concatenate([x_train, arrays["test_images"][picked]])
        y_train = np.concatenate([y_train, labels.reshape(-1, 1).astype(y_train.dtype)])
        log.info("self-training: %d test images added, %s", len(picked), np.bincount(labels))
    if args.importance is not None:
        if not 0 < args.importance <= 1:
            parser.error(f"--importance: a power above 0 and at most 1, got {args.importance}")
        weights = shift_weights(x_train, arrays["test_images"], args.importance)
        rows = np.random.default_rng(0).choice(len(x_train), len(x_train), p=weights)
        x_train, y_train = x_train[rows], y_train[rows]
        log.info(
            "importance: %d distinct training images of %d, weights %s (quantiles .1 .5 .9 max)",
            len(np.unique(rows)),
            len(rows),
            np.round(np.quantile(weights * len(weights), [0.1, 0.5, 0.9, 1.0]), 2),
        )
    data = portfolio.TaskData(
        info.task,
        info.n_outputs,
        x_train,
        y_train,
        arrays["val_images"],
        arrays["val_labels"],
        arrays["test_images"],
    )
    y_val, y_test = arrays["val_labels"], arrays["test_labels"]
    jobs = [
        (known[name], portfolio.RunRecord(name, 0, seed * 1000 + i, 0, args.seconds))
        for seed in args.seeds
        for i, name in enumerate(args.configs)
    ]
    tests: dict[str, list[np.ndarray]] = {name: [] for name in args.configs}
    singles: dict[str, list[float]] = {name: [] for name in args.configs}
    with (
        ProcessPoolExecutor(
            2,
            mp_context=get_context("fork"),
            initializer=portfolio._init_process,
            initargs=(data, "cpu", 16, 64, 1),
        ) as pool,
        args.out.open("a") as out,
    ):
        futures = [pool.submit(portfolio._train_job, c, r, time.time() + 1e9) for c, r in jobs]
        for future in futures:
            record = future.result()
            test = record.test["tta"]
            row = {
                "dataset": args.dataset,
                "config": record.config,
                "seed": record.seed,
                "seconds": round(record.seconds, 1),
                "epochs_run": record.epochs_run,
                "val_auc": round(auc(info.task, y_val, record.val["tta"]), 4),
                "test_auc": round(auc(info.task, y_test, test), 4),
                "test_acc": round(acc(info.task, y_test, test), 4),
                "cpu": cpu_model(),
            }
            if args.pseudo:
                row["pseudo"] = [str(args.pseudo), args.pseudo_share]
            if args.importance is not None:
                row["importance"] = args.importance
            if args.no_mirror:
                row["mirror"] = False
            if args.ema:
                row["ema"] = args.ema
            if args.adapt_bn:
                row["adapted"] = [
                    round(auc(info.task, y_val, record.val["adapted"]), 4),
                    round(auc(info.task, y_test, record.test["adapted"]), 4),
                    round(acc(info.task, y_test, record.test["adapted"]), 4),
                ]
            if angle_sets:
                row["views"] = {
                    name: [
                        round(auc(info.task, y_val, record.val[f"views {name}"]), 4),
                        round(auc(info.task, y_test, record.test[f"views {name}"]), 4),
                        round(acc(info.task, y_test, record.test[f"views {name}"]), 4),
                    ]
                    for name in angle_sets
                }
            out.write(json.dumps(row) + "\n")
            out.flush()  # every run's row survives a stop before the last
            log.info("%s", row)
            tests[record.config].append(test)
            singles[record.config].append(row["test_auc"])
    for name in args.configs:
        mean = np.mean(tests[name], axis=0)
        log.info(
            "%s %-16s runs' mean test AUC %.4f; mean of %d runs: test AUC %.4f ACC %.4f",
            args.dataset,
            name,
            np.mean(singles[name]),
            len(tests[name]),
            auc(info.task, y_test, mean),
            acc(info.task, y_test, mean),
        )
    return 0


def pseudo_labelled(scores: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``scores`` to self-train on and their predicted classes: of each predicted
    class, the ``share`` predicted with the highest confidence."""
    if scores.ndim == 1 or scores.shape[1] == 1:  # a binary task's positive-class column
        scores = np.column_stack([1 - scores.ravel(), scores.ravel()])
    predicted, confidence = scores.argmax(1), scores.max(1)
    picked = []
    for k in np.unique(predicted):
        rows = np.flatnonzero(predicted == k)
        keep = max(1, int(round(share * len(rows))))
        picked.append(rows[np.argsort(-confidence[rows], kind="stable")[:keep]])
    rows = np.sort(np.concatenate(picked))
    return rows, predicted[rows]


def shift_weights(x_train: np.ndarray, x_test: np.ndarray, power: float) -> np.ndarray:
    """Each training image's sampling probability under covariate-shift weighting (Shimodaira,
    2000): the odds that a classifier telling train's images from test's (scikit-learn's
    gradient boosting on the raw pixels, 5-fold cross-fitted, so no image is scored by a model
    that saw it) gives it of being a test image, to ``power``, clipped at 20 times the median."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.vstack([x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)])
    side = np.r_[np.zeros(len(x_train)), np.ones(len(x_test))]
    p = cross_val_predict(
        HistGradientBoostingClassifier(max_iter=100, random_state=0),
        x.astype(np.float32) / 255.0,
        side,
        cv=StratifiedKFold(5, shuffle=True, random_state=0),
        method="predict_proba",
    )[: len(x_train), 1]
    odds = np.clip(p, 1e-3, 1 - 1e-3) / np.clip(1 - p, 1e-3, 1)
    weights = odds**power
    weights = np.minimum(weights, 20 * np.median(weights))
    return weights / weights.sum()


def score_views(portfolio: Any, angle_sets: dict[str, tuple[float, ...]]) -> None:
    """Make every snapshot of the runs also hold, as ``views NAME``, the test-time mean over
    the image and its mirror turned by each angle of the set NAME (in the processes forked
    after this: the adapter's own ``Runner.predict``, called once more per set)."""
    own = portfolio.Runner.predict

    def predict(
        self: Any,
        model: Any,
        images: Any,
        turns: int = 1,
        angles: Any = (0.0,),
        mirror: bool = True,
    ) -> Any:
        out = own(self, model, images, turns, angles, mirror)
        for name, chosen in angle_sets.items():
            out[f"views {name}"] = own(self, model, images, turns, chosen, mirror)["tta"]
        return out

    portfolio.Runner.predict = predict


def score_adapted(portfolio: Any) -> None:
    """Make every snapshot of the runs also hold, as ``adapted``, its test-time views'
    probabilities from a copy of the network whose batch-norm statistics are recomputed from
    the images being predicted and their mirrors (AdaBN: Li et al., 2016), in the processes
    forked after this. Labels are not read; only the images of the split being predicted."""
    import copy

    import torch

    own = portfolio.Runner.predict

    def predict(
        self: Any,
        model: Any,
        images: Any,
        turns: int = 1,
        angles: Any = (0.0,),
        mirror: bool = True,
    ) -> Any:
        out = own(self, model, images, turns, angles, mirror)
        adapted = copy.deepcopy(model)
        for module in adapted.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # a cumulative mean over the batches below
        adapted.train()
        with torch.no_grad():
            for start in range(0, len(images), 256):
                x = self.prepare(images[start : start + 256])
                for view in (x, torch.flip(x, dims=[3])):
                    adapted(view.contiguous(memory_format=self.memory_format))
        out["adapted"] = own(self, adapted, images, turns, angles, mirror)["tta"]
        return out

    portfolio.Runner.predict = predict


if __name__ == "__main__":
    raise SystemExit(main())
