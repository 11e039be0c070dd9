"""Are a dataset's splits alike? For each class and each pair of splits, a classifier trained
to tell one split's images from the other's, and its cross-validated AUC: 0.5 when the two
splits' images of that class cannot be told apart, 1.0 when they always can.

Why: a network chosen on val generalises to test as far as test looks like val. On
pneumoniamnist, val AUC (0.997) does not predict test AUC (0.977); this measures whether its
test images differ from train and val ones beyond chance, class by class.

The classifier: scikit-learn's HistGradientBoostingClassifier (100 iterations) on the raw
pixels, 5-fold cross-validated, on equal numbers of images from the two splits (the larger one
subsampled with ``--seed``). Labels, test labels included, are read only to group the images by
class; nothing here is an adapter. Run it with any environment that has scikit-learn::

    python benchmarks/split_shift.py --data-dir ../shared/data/medmnist pneumoniamnist
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def shift_auc(a: np.ndarray, b: np.ndarray, seed: int) -> float:
    """Cross-validated AUC of telling images ``a`` from images ``b`` (equal numbers drawn)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    a, b = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]
    x = np.vstack([a.reshape(n, -1), b.reshape(n, -1)]).astype(np.float32) / 255.0
    side = np.r_[np.zeros(n), np.ones(n)]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    scores = cross_val_predict(model, x, side, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(side, scores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("datasets", nargs="+")
    args = parser.parse_args(argv)
    print(
        "| dataset | class | images per split (train, val, test) | "
        + " | ".join(f"{a} vs {b}" for a, b in combinations(SPLITS, 2))
        + " |"
    )
    for dataset in args.datasets:
        with np.load(args.data_dir / f"{dataset}.npz") as z:
            images = {s: z[f"{s}_images"] for s in SPLITS}
            labels = {s: z[f"{s}_labels"][:, 0] for s in SPLITS}  # the first label's class
        for c in np.unique(labels["train"]):
            of = {s: images[s][labels[s] == c] for s in SPLITS}
            if min(len(v) for v in of.values()) < 10:
                continue  # too few to cross-validate
            aucs = [shift_auc(of[a], of[b], args.seed) for a, b in combinations(SPLITS, 2)]
            counts = ", ".join(str(len(of[s])) for s in SPLITS)
            print(f"| {dataset} | {c} | {counts} | " + " | ".join(f"{v:.3f}" for v in aucs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
