"""Helpers the tests import: the real MedMNIST files' place, the tiny-data record, copying a
dataset, one adapter's quick run on a real subset. Fixtures stay in ``conftest.py``, which pytest
loads by itself; tests import these from here (``from helpers import TinyData``), never from
``conftest``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from decathlon import leaderboard
from decathlon.datasets import Catalog
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner

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


def run_real_quick(
    adapter: str, tmp_path: Path, real_data_dir: Path, flag: str = "breastmnist"
) -> tuple[dict[str, dict[str, Any]], Path]:
    """Run ``adapter`` on one real subset with the quick profile at half its budgets (60 s for
    breastmnist, hard limit 120 s), the real harness and the adapter's own environment.

    Returns the dataset's leaderboard rows by split (the test row checked ``ok``) and the
    task's folder (``output/``, ``predictions/``).
    """
    data = tmp_path / "data"
    data.mkdir()
    (data / f"{flag}.npz").symlink_to(real_data_dir / f"{flag}.npz")
    config = RunConfig(
        adapter=adapter,
        profile="quick",
        scale_factor=0.5,
        datasets=(flag,),
        data_dir=str(data),
        download=False,
        n_jobs=2,
    )
    path = Runner(config, make_registry()).run(tmp_path / "run")
    rows = {r["split"]: r for r in leaderboard.read(path) if r["dataset"] == flag}
    assert rows["test"]["status"] == "ok", rows["test"]["reason"]
    return rows, tmp_path / "run" / "tasks" / flag / "seed0"


#: A single-file plugin: one adapter, run from the file itself.
PLUGIN_FILE = """
from decathlon.contract import Adapter
from decathlon.hookspecs import hookimpl


@hookimpl
def decathlon_register_adapters(register):
    budgets = {{"quick": {{"hard_limit_seconds": 60}}}}
    register(Adapter(name="{name}", run="{name}:run", default_budgets=budgets))


def run(task):
    raise AssertionError("never reached: the file does not import in the task")
"""
