"""The built-in fast baseline: gradient-boosted trees on PCA features of the pixels.

Runs in the harness's own environment (scikit-learn only), takes minutes on the largest
datasets with 2 CPU cores, and gives a real leaderboard row for every task type. The same
configuration serves every dataset: 2x2 average pooling, PCA to ``pca_components`` fitted on
the training images, then scikit-learn's ``HistGradientBoostingClassifier`` (one per label for
multi-label chestmnist), early-stopped on a slice of the training set when it has over
10,000 images.
"""

from __future__ import annotations

import logging

import numpy as np

from decathlon.contract import MULTI_LABEL, Adapter, Predictions, Task
from decathlon.hookspecs import hookimpl

log = logging.getLogger(__name__)

ADAPTER = Adapter(
    name="baseline",
    run="decathlon_adapters.baseline:run",
    description="scikit-learn HistGradientBoosting on PCA features of the pixels (fast, CPU)",
    options={"pca_components": 64, "max_iter": 200, "learning_rate": 0.1},
)


@hookimpl
def decathlon_register_adapters(register) -> None:
    register(ADAPTER)


def features(images: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1], 2x2 average-pooled, flattened: (N, 14 * 14 * channels)."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    n, h, w, c = x.shape
    pooled = x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    return pooled.reshape(n, -1)


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
            return np.stack([m.predict_proba(x)[:, 1] for m in models], axis=1)

    else:
        fitted = model().fit(x_train, y_train.ravel())
        classes = list(fitted.classes_)

        def predict(x: np.ndarray) -> np.ndarray:
            # Columns in class-id order, one per class of the dataset, even if one is unseen.
            proba = fitted.predict_proba(x)
            out = np.zeros((len(x), task.dataset.n_classes))
            out[:, classes] = proba
            return out

    return Predictions(
        train=predict(x_train),
        val=predict(x_val),
        test=predict(x_test),
        info={"pca_components": n_components},
    )
