"""The built-in fast baseline: gradient-boosted trees on PCA features of the pixels.

Runs in the harness's own environment (scikit-learn only), takes minutes on the largest
datasets with 2 CPU cores, and gives a real leaderboard row for every task type. The same
configuration serves every dataset and image size: average pooling onto a 14x14 grid (2x2
pooling at 28; the images are read a batch at a time, so no split is ever held in memory at
224), PCA to ``pca_components`` fitted on the training images, then scikit-learn's
``HistGradientBoostingClassifier`` (one per label for multi-label chestmnist), early-stopped on
a slice of the training set when it has over 10,000 images.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from decathlon.contract import MULTI_LABEL, Adapter, Predictions, Task
from decathlon.hookspecs import hookimpl
from decathlon.options import Range, check_table

log = logging.getLogger(__name__)


#: The options' ranges: out of them, each failed the task inside scikit-learn, or read 2.5
#: components as 2.
RANGES = (
    Range("pca_components", 1, whole=True),
    Range("max_iter", 1, whole=True),
    Range("learning_rate", 0, above=True),
)


def check_options(options: dict[str, Any]) -> None:
    """Refuse, in the harness before any task starts, an option outside :data:`RANGES`."""
    check_table(options, RANGES)


ADAPTER = Adapter(
    name="baseline",
    run="decathlon_adapters.baseline:run",
    description="scikit-learn HistGradientBoosting on PCA features of the pixels (fast, CPU)",
    options={"pca_components": 64, "max_iter": 200, "learning_rate": 0.1},
    check_options=check_options,
    sizes=(28, 64, 128, 224),
)

#: Cells per side of the pooling grid: 2x2 pooling at 28.
GRID = 14
#: Pixels read from the memory-mapped images per batch (16 M: 64 MB as float32).
BATCH_PIXELS = 1 << 24


@hookimpl
def decathlon_register_adapters(register) -> None:
    register(ADAPTER)


def features(images: np.ndarray, grid: int = GRID) -> np.ndarray:
    """Pixels in [0, 1] averaged over a ``grid`` x ``grid`` of near-equal cells (2x2 pooling at
    28), flattened: (N, grid * grid * channels). Reads the images a batch at a time."""
    n, side = len(images), int(images.shape[1])
    channels = int(images.shape[3]) if images.ndim == 4 else 1
    edges = np.linspace(0, side, grid + 1).round().astype(int)
    counts = np.diff(edges).astype(np.float32)
    area = (counts[:, None] * counts[None, :])[None, :, :, None]
    batch = max(1, BATCH_PIXELS // (side * side * channels))
    out = np.empty((n, grid * grid * channels), dtype=np.float32)
    for start in range(0, n, batch):
        x = np.asarray(images[start : start + batch], dtype=np.float32) / 255.0
        if x.ndim == 3:
            x = x[..., None]
        if side % grid == 0:  # equal cells (28, 224): the same arithmetic as 2x2 pooling at 28
            k = side // grid
            pooled = x.reshape(len(x), grid, k, grid, k, channels).mean(axis=(2, 4))
        else:  # 64, 128: cells of near-equal sizes
            sums = np.add.reduceat(np.add.reduceat(x, edges[:-1], axis=1), edges[:-1], axis=2)
            pooled = sums / area
        out[start : start + len(x)] = pooled.reshape(len(x), -1)
    return out


def run(task: Task) -> Predictions:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier

    opts = task.options
    x_train, x_val, x_test = (features(x) for x in (task.x_train, task.x_val, task.x_test))
    n_components = min(int(opts["pca_components"]), x_train.shape[0], x_train.shape[1])
    pca = PCA(n_components=n_components, svd_solver="randomized", random_state=task.seed)
    pca.fit(x_train[np.random.default_rng(task.seed).permutation(len(x_train))[:20000]])
    x_train, x_val, x_test = (pca.transform(x) for x in (x_train, x_val, x_test))

    def model() -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(
            max_iter=int(opts["max_iter"]),
            learning_rate=float(opts["learning_rate"]),
            early_stopping="auto",  # on when there are over 10,000 training images
            random_state=task.seed,
        )

    y_train = np.asarray(task.y_train)
    if task.dataset.task == MULTI_LABEL:
        models = [model().fit(x_train, y_train[:, i]) for i in range(y_train.shape[1])]

        def predict(x: np.ndarray) -> np.ndarray:
            return np.stack([class_scores(m, x, 2)[:, 1] for m in models], axis=1)

    else:
        fitted = model().fit(x_train, y_train.ravel())

        def predict(x: np.ndarray) -> np.ndarray:
            return class_scores(fitted, x, task.dataset.n_classes)

    return Predictions(
        train=predict(x_train),
        val=predict(x_val),
        test=predict(x_test),
        info={"pca_components": n_components},
    )


def class_scores(fitted: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``fitted``'s probabilities of ``x`` in class-id order, one column per class of the
    dataset (0 for a class that train lacks). A classifier fitted on one class has one class in
    ``classes_`` but two columns of ``predict_proba`` (scikit-learn's gradient boosting: that
    class 1.0, then 0.0): only the first ``len(classes_)`` columns are classes."""
    classes = [int(c) for c in fitted.classes_]
    out = np.zeros((len(x), n_classes))
    out[:, classes] = fitted.predict_proba(x)[:, : len(classes)]
    return out
