"""Scattering features with logistic regression, alone and blended with shipped portfolio
ensembles: a screen for issue 19 (one more learner unlike the portfolio's networks).

Each image (and its mirror image, averaged as a test-time view) is described by its wavelet
scattering coefficients (Bruna and Mallat, 2013; kymatio's ``Scattering2D``, J=2, L=8, order 2:
81 maps of 7 x 7 per channel, log(1 + 10|x|)), standardised on train; logistic regression with
C from a grid, C chosen on val AUC. Then each shipped ensemble given (``runs.npz`` of a portfolio
task: its weights and calibration, as ``benchmarks/portfolio_runs.py`` recomputes them) is
blended with the learner's probabilities at weights 0 to 0.5, scored on val and on test.

Test labels are read here, never by an adapter. kymatio 0.3.0 imports its 3-D module at import,
which needs ``scipy.special.sph_harm`` (gone from SciPy 1.17): a stand-in is set before import;
the 2-D transform does not use it. Run from the repository root with the ResNets' environment
and kymatio installed beside it (``pip install --target DIR kymatio appdirs packaging --no-deps``)::

    PYTHONPATH=.:DIR $ENV benchmarks/portfolio_scattering.py --data-dir ../shared/data/medmnist \\
        retinamnist=runs/A/tasks/retinamnist/seed0/output/runs.npz ...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.special

sys.path.insert(0, str(Path(__file__).resolve().parent))

GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def features(images: np.ndarray, mirror: bool) -> np.ndarray:
    import torch
    from kymatio.torch import Scattering2D

    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if mirror:
        x = x.flip(-1)
    transform = Scattering2D(J=2, shape=tuple(x.shape[-2:]), L=8)
    out = []
    for i in range(0, len(x), 256):
        f = torch.log1p(transform(x[i : i + 256].contiguous()).abs() * 10)
        out.append(f.reshape(len(f), -1).numpy())
    return np.concatenate(out)


def scored(task: str, y: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> str:
    """Val AUC, test AUC and test ACC, as the harness's metrics score them."""
    from decathlon.metrics import acc, auc

    v, t = auc(task, y["val"], scores["val"]), auc(task, y["test"], scores["test"])
    return f"val {v:.4f} test {t:.4f} / {acc(task, y['test'], scores['test']):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("tasks", nargs="+", help="DATASET=RUNS_NPZ")
    args = parser.parse_args()
    if not hasattr(scipy.special, "sph_harm"):
        scipy.special.sph_harm = None  # type: ignore[attr-defined]
    import torch
    from portfolio_throughput import load_portfolio
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from decathlon.metrics import auc

    torch.set_num_threads(2)
    portfolio = load_portfolio()
    for item in args.tasks:
        name, _, runs = item.partition("=")
        start = time.time()
        data = np.load(args.data_dir / f"{name}.npz")
        y = {s: data[f"{s}_labels"] for s in ("train", "val", "test")}
        z = np.load(runs)
        task = str(z["task_type"])
        train = features(data["train_images"], mirror=False)
        scaler = StandardScaler().fit(train)
        views = {
            s: [scaler.transform(features(data[f"{s}_images"], m)) for m in (False, True)]
            for s in ("val", "test")
        }
        learned = {}
        for c in GRID:
            model = LogisticRegression(C=c, max_iter=2000).fit(
                scaler.transform(train), y["train"].ravel()
            )
            learned[c] = {
                s: np.mean([model.predict_proba(v) for v in views[s]], axis=0) for s in views
            }
        chosen = max(GRID, key=lambda c: auc(task, y["val"], learned[c]["val"]))
        key = "tta" if bool(z["tta"]) else "plain"
        shipped = {
            s: portfolio.weighted(z["weights"], list(z[f"{s}_{key}"].astype(np.float64)))
            for s in ("val", "test")
        }
        calibration = portfolio.calibrate(shipped["val"], y["val"], task)
        shipped = {s: calibration(shipped[s]) for s in shipped}

        seconds = time.time() - start
        print(
            f"{name}: features and {len(GRID)} fits in {seconds:.0f} s; C chosen on val {chosen:g}"
        )
        for c in GRID:
            mark = " (chosen)" if c == chosen else ""
            print(f"  C={c:g}{mark}: alone {scored(task, y, learned[c])}")
            for w in WEIGHTS:
                blend = {s: (1 - w) * shipped[s] + w * learned[c][s] for s in shipped}
                print(f"    blend {w:.1f}: {scored(task, y, blend)}")


if __name__ == "__main__":
    main()
