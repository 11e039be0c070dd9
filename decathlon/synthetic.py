"""Generated MedMNIST-format data: tiny catalogs for tests, conformance checks and benchmarks.

Files have the real keys, dtypes and shapes, a learnable signal and every class in every split
(so AUC is defined); an ``info.json`` in the published format describes them with their MD5s.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from decathlon import download
from decathlon.contract import MULTI_LABEL
from decathlon.datasets import (
    BUNDLED_INFO,
    DEFAULT_SIZE,
    SIZES,
    dataset_file,
    file_md5,
    size_suffix,
)
from decathlon.files import json_text, replacing

TINY_SIZES: dict[str, int] = {"train": 60, "val": 30, "test": 30}
# ``sizes`` that asks for each dataset's published numbers of images per split (info.json's
# n_samples): a whole decathlon of the real sizes, for wall time where the real files are not.
PUBLISHED = "published"


def make_medmnist_npz(
    path: Path,
    flag: str,
    task: str,
    n_channels: int,
    n_classes: int,
    sizes: dict[str, int],
    seed: int,
    image_size: int = 28,
    *,
    compresslevel: int | None = None,
) -> None:
    """Write a MedMNIST-format ``.npz`` with a learnable signal and every class in every split.

    Single-label sets: the image brightness rises with the class id (plus per-image and
    per-pixel noise), labels uint8 (N, 1). Multi-label (``task`` "multi-label, binary-class"):
    label j brightens the band of rows 2j..2j+1 of 28 (scaled to ``image_size``), labels uint8
    (N, n_classes) of zeros and ones, each column holding both values. Images are
    (N, image_size, image_size), or (N, image_size, image_size, n_channels) when ``n_channels``
    > 1. ``flag`` only names the file in error messages.

    Written as ``np.savez_compressed`` writes (a deflated zip of ``.npy`` members, in the key
    order of the published files), but member by member and a few images at a time, so that
    files of any size (pathmnist at 224 is 16 GB of pixels) are made in little memory.
    ``compresslevel`` is zlib's (None: zipfile's default, as numpy).
    """
    rng = np.random.default_rng(seed)
    multi = task == MULTI_LABEL
    side = int(image_size)
    tail = (side, side) + ((n_channels,) if n_channels > 1 else ())
    per_image = int(np.prod(tail))
    chunk = max(1, (1 << 23) // per_image)  # about 8 M pixels (32 MB of float32) at a time
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Beside it, then renamed; removed when writing fails (a full disk, a split too small), so
    # that no hidden half-file of up to gigabytes is left.
    with (
        replacing(path) as tmp,
        zipfile.ZipFile(
            tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel, allowZip64=True
        ) as archive,
    ):
        for split, n in sizes.items():
            if n < (2 if multi else n_classes):
                raise ValueError(f"{flag}: {split} size {n} is too small for {n_classes} classes")
            if multi:
                labels = (rng.random((n, n_classes)) < 0.3).astype(np.uint8)
                for j in range(n_classes):  # both values present in every column
                    labels[(2 * j) % n, j] = 1
                    labels[(2 * j + 1) % n, j] = 0
            else:
                labels = rng.permutation(np.arange(n) % n_classes).astype(np.uint8)[:, None]
            header = {"descr": "|u1", "fortran_order": False, "shape": (n, *tail)}
            with archive.open(f"{split}_images.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                for start in range(0, n, chunk):
                    rows = labels[start : start + chunk]
                    member.write(_images(rng, rows, multi, n_classes, tail).tobytes())
            with archive.open(f"{split}_labels.npy", "w") as member:
                np.lib.format.write_array(member, labels, allow_pickle=False)


def _images(
    rng: np.random.Generator, labels: np.ndarray, multi: bool, n_classes: int, tail: tuple[int, ...]
) -> np.ndarray:
    """uint8 images (len(labels), *tail) whose pixels carry the labels' signal.

    Integer arithmetic (uniform noise of +-40 around each image's level): cheap enough to make
    pathmnist at 224 (16 G pixels) in minutes.
    """
    n, side = len(labels), tail[0]
    shape = (n, *tail)
    ones = (n,) + (1,) * len(tail)
    pixels = rng.integers(-40, 41, size=shape, dtype=np.int16)
    if multi:
        pixels += 60
        for j in range(n_classes):
            low = ((2 * j) % 28) * side // 28
            high = ((2 * j) % 28 + 2) * side // 28
            pixels[:, low:high] += 90 * labels[:, j].reshape(ones).astype(np.int16)
    else:
        step = 170.0 / max(n_classes - 1, 1)
        level = 40.0 + step * labels[:, 0] + rng.normal(0.0, step / 3, size=n)
        pixels += np.clip(level, -200, 400).astype(np.int16).reshape(ones)
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8)


def bundled_info() -> dict[str, Any]:
    return json.loads(BUNDLED_INFO.read_text(encoding="utf-8"))


def write_tiny(
    data_dir: Path,
    flags: Iterable[str],
    meta: dict[str, Any],
    sizes: dict[str, int] | str | None = None,
    image_size: int = DEFAULT_SIZE,
    *,
    compresslevel: int | None = None,
) -> None:
    """Generate files for ``flags`` at ``image_size`` and rewrite their entries in ``meta`` to
    match them (``MD5``/``url`` at 28, ``MD5_{size}``/``url_{size}`` above). ``sizes``: images
    per split, the same for every flag (default :data:`TINY_SIZES`), or :data:`PUBLISHED`."""
    if isinstance(sizes, str) and sizes != PUBLISHED:
        raise ValueError(f"sizes must be a dict or {PUBLISHED!r}, got {sizes!r}")
    suffix = size_suffix(image_size)
    for i, flag in enumerate(flags):
        entry = meta["datasets"][flag]
        if isinstance(sizes, str):  # PUBLISHED
            split_sizes = {k: int(v) for k, v in entry["n_samples"].items()}
        else:
            split_sizes = dict(sizes or TINY_SIZES)
        path = dataset_file(data_dir, flag, image_size)
        make_medmnist_npz(
            path,
            flag,
            entry["task"],
            entry["n_channels"],
            entry["n_classes"],
            split_sizes,
            seed=1000 + i,
            image_size=image_size,
            compresslevel=compresslevel,
        )
        entry["n_samples"] = split_sizes
        entry[f"MD5{suffix}"] = file_md5(path)
        entry[f"url{suffix}"] = f"http://127.0.0.1:9/nowhere/{path.name}"


def write_info(meta: dict[str, Any], path: Path) -> Path:
    path.write_text(json_text(meta, indent=2, sort_keys=True), encoding="utf-8")
    return path


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Remove the hidden half-written files that a killed :func:`write_catalog` into ``root``
    left (``data/.NAME.PID.THREAD.tmp`` for a file NAME it writes, its process gone, see
    :func:`decathlon.download.remove_stale_temporaries`); return them. No other file is touched."""
    data_dir = root / "data"
    if not data_dir.is_dir():
        return []
    removed: list[Path] = []
    for flag in bundled_info()["datasets"]:
        for size in SIZES:
            removed += download.remove_stale_temporaries(dataset_file(data_dir, flag, size))
    return removed


def write_catalog(
    root: Path,
    flags: Iterable[str] | None = None,
    sizes: dict[str, int] | str | None = None,
    image_size: int = DEFAULT_SIZE,
    *,
    compresslevel: int | None = None,
) -> tuple[Path, Path]:
    """Generated files for ``flags`` (default: all ten) at ``image_size`` in ``root/data`` and
    ``root/info.json``.

    Returns (data_dir, info_path); pass the latter as ``--info``/``DECATHLON_INFO``/
    ``RunConfig.info_path``. Datasets not generated keep their published entries.
    """
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    meta = bundled_info()
    flags = list(flags or meta["datasets"])
    write_tiny(data_dir, flags, meta, sizes, image_size, compresslevel=compresslevel)
    for flag in flags:
        # Only the size generated: the published URL and MD5 of the others (the real files,
        # 16 GB for pathmnist at 224) would have a run at another size download the real file
        # into this folder, only to refuse it for the generated split sizes.
        written = {f"url{size_suffix(image_size)}", f"MD5{size_suffix(image_size)}"}
        entry = meta["datasets"][flag]
        for key in [k for k in entry if k.startswith(("url", "MD5")) and k not in written]:
            del entry[key]
    return data_dir, write_info(meta, root / "info.json")
