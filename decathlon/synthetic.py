"""Generated MedMNIST-format data: tiny catalogs for tests, conformance checks and benchmarks.

Files have the real keys, dtypes and shapes, a learnable signal and every class in every split
(so AUC is defined); an ``info.json`` in the published format describes them with their MD5s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from decathlon.contract import MULTI_LABEL
from decathlon.datasets import BUNDLED_INFO, file_md5

TINY_SIZES: dict[str, int] = {"train": 60, "val": 30, "test": 30}


def make_medmnist_npz(
    path: Path,
    flag: str,
    task: str,
    n_channels: int,
    n_classes: int,
    sizes: dict[str, int],
    seed: int,
) -> None:
    """Write a MedMNIST-format ``.npz`` with a learnable signal and every class in every split.

    Single-label sets: the image brightness rises with the class id (plus per-image and
    per-pixel noise), labels uint8 (N, 1). Multi-label (``task`` "multi-label, binary-class"):
    label j brightens rows 2j and 2j+1, labels uint8 (N, n_classes) of zeros and ones, each
    column holding both values. Images are (N, 28, 28), or (N, 28, 28, n_channels) when
    ``n_channels`` > 1. ``flag`` only names the file in error messages.
    """
    rng = np.random.default_rng(seed)
    multi = task == MULTI_LABEL
    arrays: dict[str, np.ndarray] = {}
    for split, n in sizes.items():
        if n < (2 if multi else n_classes):
            raise ValueError(f"{flag}: {split} size {n} is too small for {n_classes} classes")
        shape = (n, 28, 28) + ((n_channels,) if n_channels > 1 else ())
        noise = rng.normal(0.0, 25.0, size=shape)
        if multi:
            labels = (rng.random((n, n_classes)) < 0.3).astype(np.uint8)
            for j in range(n_classes):  # both values present in every column
                labels[(2 * j) % n, j] = 1
                labels[(2 * j + 1) % n, j] = 0
            signal = np.full(shape, 60.0)
            for j in range(n_classes):
                rows = slice((2 * j) % 28, (2 * j) % 28 + 2)
                signal[:, rows] += 90.0 * labels[:, j].reshape((n,) + (1,) * (len(shape) - 1))
        else:
            labels = rng.permutation(np.arange(n) % n_classes).astype(np.uint8)[:, None]
            step = 170.0 / max(n_classes - 1, 1)
            level = 40.0 + step * labels[:, 0] + rng.normal(0.0, step / 3, size=n)
            signal = level.reshape((n,) + (1,) * (len(shape) - 1)) * np.ones(shape)
        arrays[f"{split}_images"] = np.clip(signal + noise, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
    np.savez_compressed(path, **arrays)


def bundled_info() -> dict[str, Any]:
    return json.loads(BUNDLED_INFO.read_text(encoding="utf-8"))


def write_tiny(
    data_dir: Path,
    flags: Iterable[str],
    meta: dict[str, Any],
    sizes: dict[str, int] | None = None,
) -> None:
    """Generate files for ``flags`` and rewrite their entries in ``meta`` to match them."""
    sizes = dict(sizes or TINY_SIZES)
    for i, flag in enumerate(flags):
        entry = meta["datasets"][flag]
        path = data_dir / f"{flag}.npz"
        make_medmnist_npz(
            path,
            flag,
            entry["task"],
            entry["n_channels"],
            entry["n_classes"],
            sizes,
            seed=1000 + i,
        )
        entry["n_samples"] = dict(sizes)
        entry["MD5"] = file_md5(path)
        entry["url"] = f"http://127.0.0.1:9/nowhere/{flag}.npz"


def write_info(meta: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return path


def write_catalog(
    root: Path, flags: Iterable[str] | None = None, sizes: dict[str, int] | None = None
) -> tuple[Path, Path]:
    """Generated files for ``flags`` (default: all ten) in ``root/data`` and ``root/info.json``.

    Returns (data_dir, info_path); pass the latter as ``--info``/``DECATHLON_INFO``/
    ``RunConfig.info_path``. Datasets not generated keep their published entries.
    """
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    meta = bundled_info()
    write_tiny(data_dir, list(flags or meta["datasets"]), meta, sizes)
    return data_dir, write_info(meta, root / "info.json")
