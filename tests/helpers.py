"""Helpers the tests import: the real MedMNIST files' place, the tiny-data record, copying a
dataset. Fixtures stay in ``conftest.py``, which pytest loads by itself; tests import these from
here (``from helpers import TinyData``), never from ``conftest``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from decathlon.datasets import Catalog

#: The real MedMNIST files: ``../shared/data/medmnist`` beside the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"
REAL_FLAGS: tuple[str, ...] = ("breastmnist", "pneumoniamnist", "retinamnist")


@dataclass(frozen=True)
class TinyData:
    """A data directory, the ``info.json`` describing its files, and the catalog read from it."""

    data_dir: Path
    info_path: Path
    catalog: Catalog


def require_shared() -> Path:
    missing = [f for f in REAL_FLAGS if not (SHARED_DATA / f"{f}.npz").is_file()]
    if missing:
        reason = f"real MedMNIST files {missing} not found in {SHARED_DATA}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI the real-data tests must run")
        pytest.skip(reason)
    return SHARED_DATA


def copy_dataset(src_dir: Path, flag: str, dest_dir: Path) -> Path:
    """Copy ``{flag}.npz`` (following symlinks) into ``dest_dir``; returns the copy's path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(src_dir / f"{flag}.npz", dest_dir / f"{flag}.npz"))
