"""A learner unlike the portfolio's networks, screened as an ensemble member offline: single-layer
k-means patch features (Coates, Lee and Ng, 2011) with logistic regression, blended with finished
portfolio tasks' shipped predictions.

Features: every 6 x 6 patch of an image, brightness- and contrast-normalised (``--eps`` is added
to each patch's variance; images scaled to [0, 1]), ZCA-whitened, encoded against ``--k``
k-means centroids (the "triangle" code), mean-pooled over the image's four quadrants; scaled,
then multinomial logistic regression, its C chosen on val. The blend: the portfolio task's
shipped val and test scores mixed with the learner's, the weight (0 to 1 in steps of 0.05)
chosen on val AUC, as an ensemble member's weight would be. Reported per dataset: the learner's
own test AUC and ACC, and the blend's test AUC and ACC change over the shipped predictions of
every run directory given (seeds 0-2 each), with the weights chosen.

Test labels are read here, never by an adapter. Run it from the repository root with an
environment that has numpy and scikit-learn (the ResNets' has both) and this checkout's
``decathlon`` on the path::

    PYTHONPATH=. $ENV benchmarks/portfolio_patch_features.py --data-dir ../shared/data/medmnist \\
        --runs runs/wall10d runs/wall10e --eps 0.01 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

PATCH = 6
TASKS = {
    "pneumoniamnist": "binary-class",
    "retinamnist": "ordinal-regression",
    "breastmnist": "binary-class",
}
C_GRID = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03)


def patches(x: np.ndarray) -> np.ndarray:
    """(n, 28, 28, c) images -> (n, 23, 23, 6 * 6 * c) patches."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (PATCH, PATCH), axis=(1, 2))
    return windows.reshape(*windows.shape[:3], -1)


def normalised(p: np.ndarray, eps: float) -> np.ndarray:
    p = p - p.mean(-1, keepdims=True)
    return p / np.sqrt(p.var(-1, keepdims=True) + eps)


def features(x: np.ndarray, centroids: np.ndarray, mean: np.ndarray, zca: np.ndarray, eps: float):
    out = []
    for i in range(0, len(x), 256):
        p = (normalised(patches(x[i : i + 256]), eps) - mean) @ zca
        sq = (p**2).sum(-1, keepdims=True) - 2 * p @ centroids.T + (centroids**2).sum(-1)
        distance = np.sqrt(np.maximum(sq, 0))
        code = np.maximum(distance.mean(-1, keepdims=True) - distance, 0)
        h = code.shape[1] // 2
        quadrants = (code[:, :h, :h], code[:, :h, h:], code[:, h:, :h], code[:, h:, h:])
        out.append(np.concatenate([q.mean((1, 2)) for q in quadrants], -1))
    return np.concatenate(out)


def learner(arrays, task: str, k: int, eps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The learner's val and test scores, with C chosen on val AUC."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from decathlon.metrics import auc

    images = {}
    for split in ("train", "val", "test"):
        x = arrays[f"{split}_images"].astype(np.float32) / 255
        images[split] = x[..., None] if x.ndim == 3 else x
    y_train, y_val = arrays["train_labels"].ravel(), arrays["val_labels"]
    rng = np.random.default_rng(0)
    sample = normalised(patches(images["train"]), eps).reshape(
        -1, PATCH * PATCH * images["train"].shape[-1]
    )
    sample = sample[rng.choice(len(sample), min(len(sample), 200_000), replace=False)]
    mean = sample.mean(0)
    values, vectors = np.linalg.eigh(np.cov(sample - mean, rowvar=False))
    zca = vectors @ np.diag(1 / np.sqrt(values + 0.1)) @ vectors.T
    kmeans = MiniBatchKMeans(k, random_state=0, batch_size=4096, n_init=1, max_iter=50)
    centroids = kmeans.fit((sample - mean) @ zca).cluster_centers_
    feats = {s: features(x, centroids, mean, zca, eps) for s, x in images.items()}
    scaler = StandardScaler().fit(feats["train"])
    feats = {s: scaler.transform(f) for s, f in feats.items()}
    best = (-1.0, None, None, 0.0)
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=3000).fit(feats["train"], y_train)
        val = model.predict_proba(feats["val"])
        score = auc(task, y_val, val)
        if score > best[0]:
            best = (score, val, model.predict_proba(feats["test"]), c)
    return best[1], best[2], best[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="run directories")
    parser.add_argument("--datasets", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--k", type=int, default=800)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.01])
    args = parser.parse_args(argv)

    from decathlon.metrics import acc, auc

    for dataset in args.datasets:
        task, arrays = TASKS[dataset], np.load(args.data_dir / f"{dataset}.npz")
        y_val, y_test = arrays["val_labels"], arrays["test_labels"]
        for eps in args.eps:
            started = time.time()
            val, test, c = learner(arrays, task, args.k, eps)
            changes, weights = [], []
            for runs in args.runs:
                for seed in range(3):
                    shipped = runs / f"portfolio-{dataset}-seed{seed}/tasks/{dataset}/seed{seed}"
                    pv = np.load(shipped / "predictions/val.npy")
                    pt = np.load(shipped / "predictions/test.npy")
                    grid = np.linspace(0, 1, 21)
                    w = max(grid, key=lambda w: auc(task, y_val, w * val + (1 - w) * pv))
                    blend = w * test + (1 - w) * pt
                    changes.append(
                        (
                            auc(task, y_test, blend) - auc(task, y_test, pt),
                            acc(task, y_test, blend) - acc(task, y_test, pt),
                        )
                    )
                    weights.append(round(float(w), 2))
            d_auc, d_acc = np.mean(changes, axis=0)
            print(
                f"{dataset} k={args.k} eps={eps} C={c}: learner test AUC"
                f" {auc(task, y_test, test):.4f} ACC {acc(task, y_test, test):.4f}; blend over"
                f" {len(changes)} shipped ensembles: test AUC {d_auc:+.4f} ACC {d_acc:+.4f},"
                f" weights {weights} ({time.time() - started:.0f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
