"""Export a MedMNIST dataset for Vertex AI AutoML image classification: PNGs and an import CSV.

Layout written under ``out_dir``::

    images/<ml_use>/<flag>_<ml_use>_<index>.png   one PNG per image (grey "L" or "RGB"), --size
    <flag>_import.csv                             the Vertex AI import file
    labels.json                                   class id <-> dataset name <-> Vertex label

Each CSV row is ``ML_USE,GCS_FILE_PATH,LABEL[,LABEL...]`` as Vertex AI's single-label and
multi-label image classification import schemas read it, ``ML_USE`` one of ``training``,
``validation``, ``test``. Without ``gcs_prefix`` the paths are relative to ``out_dir``
(``images/training/...``); with ``gcs_prefix="gs://bucket/path"`` they become
``gs://bucket/path/images/training/...``, so copying the folder's contents to that prefix
(``gcloud storage cp -r DIR/* gs://bucket/path/``) makes the CSV importable as it is.

Vertex label names must start with a letter and hold only letters, digits and underscores:
:func:`vertex_label_names` derives them from the dataset's label names (``"normal, benign"`` ->
``normal_benign``, ``"0"`` -> ``class_0``), unique within the dataset. A multi-label image with no
positive label (most of chestmnist) gets the extra label ``no_finding``, because Vertex imports an
image without labels as unlabelled and does not train on it; inference ignores that column.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from decathlon.contract import MULTI_LABEL, DatasetInfo
from decathlon.errors import DecathlonError

log = logging.getLogger(__name__)

#: Vertex AI's ML_USE values, and the official split each one takes in a full export.
ML_USES: tuple[str, ...] = ("training", "validation", "test")
OFFICIAL_ML_USE: dict[str, str] = {"train": "training", "val": "validation", "test": "test"}
#: The label given to multi-label images without any positive label.
EMPTY_LABEL = "no_finding"
LABELS_FILE = "labels.json"

_VALID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ExportError(DecathlonError):
    """The export cannot be written as asked (bad prefix, bad split name, wrong shapes)."""


def vertex_label(name: str) -> str:
    """A Vertex-valid label for one dataset label name (letters, digits, underscores)."""
    label = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    if not label or not label[0].isalpha():
        label = "class_" + label if label else "class"
    return label


def vertex_label_names(info: DatasetInfo) -> list[str]:
    """Vertex labels in class-id order, derived from ``info.labels`` and unique.

    A name that clashes with an earlier one (or with :data:`EMPTY_LABEL`) gets ``_<class id>``
    appended.
    """
    taken = {EMPTY_LABEL}
    names = []
    for class_id in range(info.n_classes):
        label = vertex_label(info.labels.get(str(class_id), str(class_id)))
        if label in taken:
            label = f"{label}_{class_id}"
        taken.add(label)
        names.append(label)
    return names


def label_mapping(info: DatasetInfo) -> dict[str, Any]:
    """What ``labels.json`` holds: the dataset, its task and one entry per class id."""
    return {
        "dataset": info.flag,
        "task": info.task,
        "labels": [
            {"class_id": i, "name": info.labels.get(str(i), str(i)), "vertex_label": label}
            for i, label in enumerate(vertex_label_names(info))
        ],
        "empty_label": EMPTY_LABEL if info.task == MULTI_LABEL else None,
    }


def _check_prefix(gcs_prefix: Optional[str]) -> Optional[str]:
    if gcs_prefix is None or gcs_prefix == "":
        return None
    if not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,221}[a-z0-9](/.*)?$", gcs_prefix):
        raise ExportError(
            f"--gcs-prefix '{gcs_prefix}' is not a Cloud Storage path; expected"
            " gs://BUCKET or gs://BUCKET/PATH"
        )
    return gcs_prefix.rstrip("/")


def _row_labels(info: DatasetInfo, names: Sequence[str], label_row: np.ndarray) -> list[str]:
    if info.task == MULTI_LABEL:
        positive = [names[int(j)] for j in np.flatnonzero(np.asarray(label_row).ravel())]
        return positive or [EMPTY_LABEL]
    return [names[int(np.asarray(label_row).ravel()[0])]]


def export_dataset(
    info: DatasetInfo,
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    out_dir: Path,
    gcs_prefix: Optional[str] = None,
) -> Path:
    """Write PNGs, the Vertex AI import CSV and ``labels.json`` under ``out_dir``; return the CSV.

    ``splits`` maps an ML_USE value (``training``, ``validation``, ``test``) to ``(images,
    labels)`` as MedMNIST stores them: uint8 images (N, S, S) or (N, S, S, 3) (S = 28, or 64,
    128, 224; memory-mapped arrays are read one image at a time), labels (N, 1)
    class ids or (N, n_classes) zeros and ones for multi-label. Every row carries labels: Vertex
    reads a ``test`` row without labels as unlabelled, so a split whose labels must stay hidden is
    left out rather than exported bare. ``gcs_prefix`` (``gs://bucket/path``) makes the CSV's
    paths absolute Cloud Storage paths; without it they are relative to ``out_dir``.
    """
    from PIL import Image

    prefix = _check_prefix(gcs_prefix)
    unknown = [key for key in splits if key not in ML_USES]
    if unknown:
        raise ExportError(f"unknown ML_USE {unknown}; use {', '.join(ML_USES)}")
    names = vertex_label_names(info)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{info.flag}_import.csv"
    counts: dict[str, int] = {}
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for ml_use in ML_USES:
            if ml_use not in splits:
                continue
            images, labels = splits[ml_use]
            images = np.asarray(images)
            labels = np.asarray(labels)
            if images.dtype != np.uint8 or images.ndim not in (3, 4):
                raise ExportError(
                    f"{info.flag} {ml_use}: images must be uint8 (N, H, W) or (N, H, W, 3),"
                    f" got {images.dtype} {images.shape}"
                )
            if len(labels) != len(images):
                raise ExportError(
                    f"{info.flag} {ml_use}: {len(images)} images but {len(labels)} labels"
                )
            folder = out_dir / "images" / ml_use
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(len(images)):
                relative = f"images/{ml_use}/{info.flag}_{ml_use}_{index:06d}.png"
                Image.fromarray(np.ascontiguousarray(images[index])).save(out_dir / relative)
                path = f"{prefix}/{relative}" if prefix else relative
                writer.writerow([ml_use, path, *_row_labels(info, names, labels[index])])
            counts[ml_use] = len(images)
    mapping = label_mapping(info)
    mapping["rows"] = counts
    (out_dir / LABELS_FILE).write_text(json.dumps(mapping, indent=2) + "\n", encoding="utf-8")
    log.info("exported %s to %s: %s", info.flag, csv_path, counts)
    return csv_path


# ---------------------------------------------------------------------------- command line

COMMAND = "export-automl-vision"


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export-automl-vision`` subcommand to an argparse ``add_subparsers()`` object."""
    parser = subparsers.add_parser(
        COMMAND,
        help="write a dataset as PNGs plus a Vertex AI import CSV (AutoML Vision)",
        description="Write one MedMNIST dataset as PNG files and a Vertex AI image "
        "classification import CSV (ML_USE from the official split: train -> training, val -> "
        "validation, test -> test, labels included), plus labels.json.",
    )
    parser.add_argument("--dataset", required=True, help="dataset flag, e.g. breastmnist")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument(
        "--gcs-prefix",
        help="gs://BUCKET/PATH the folder will be copied to; the CSV's paths start with it",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="MedMNIST files (default: $DECATHLON_DATA_DIR or ~/.medmnist)"
    )
    parser.add_argument("--info", type=Path, help="dataset metadata file (default: bundled)")
    parser.add_argument(
        "--size",
        type=int,
        default=28,
        choices=(28, 64, 128, 224),
        metavar="PIXELS",
        help="image size: 28, 64, 128 or 224 (MedMNIST+; default 28)",
    )
    parser.add_argument(
        "--no-download", action="store_true", help="never download; fail if the file is missing"
    )
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run ``export-automl-vision``: load the dataset (all three splits) and export it."""
    import sys

    from decathlon import datasets, files

    why = files.why_not_writable(args.out)  # before loading, which may download
    if why:
        raise ExportError(
            f"{args.out}: cannot write the export there ({why}); choose another --out"
        )
    catalog = datasets.Catalog.load(args.info)
    data_dir = args.data_dir or datasets.default_data_dir()
    loaded = datasets.load(
        catalog,
        args.dataset,
        Path(data_dir),
        size=args.size,
        download=not args.no_download,
        progress=False,
    )
    splits = {
        ml_use: (loaded.arrays[f"{split}_images"], loaded.arrays[f"{split}_labels"])
        for split, ml_use in OFFICIAL_ML_USE.items()
    }
    csv_path = export_dataset(loaded.info, splits, args.out, gcs_prefix=args.gcs_prefix)
    total = sum(len(images) for images, _ in splits.values())
    sys.stdout.write(f"{loaded.info.flag}: {total} images and import CSV written to {csv_path}\n")
    return 0


def split_validation(
    labels: np.ndarray, multi_label: bool, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Halve the validation split into Vertex's validation and test sets (index arrays).

    Inside ``run(task)`` there are no test labels, and Vertex wants a labelled test set, so the
    adapter gives it half of the validation images, drawn per class (per label-set row order for
    multi-label) with ``seed``; a class with one image keeps it in validation.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    n = len(labels)
    if multi_label:
        order = rng.permutation(n)
        half = n // 2
        return np.sort(order[: n - half]), np.sort(order[n - half :])
    keep, give = [], []
    ids = labels.reshape(n, -1)[:, 0]
    for class_id in np.unique(ids):
        members = rng.permutation(np.flatnonzero(ids == class_id))
        half = len(members) // 2
        keep.append(members[: len(members) - half])
        give.append(members[len(members) - half :])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(give))
