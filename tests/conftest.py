"""Shared fixtures: tiny MedMNIST-format data, the real subsets, and a real local HTTP server.

Session-scoped data (``tiny_catalog``, ``mixed_catalog``) is shared by every test: treat its
files as read-only and copy them before changing anything.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decathlon.contract import MULTI_LABEL
from decathlon.datasets import BUNDLED_INFO, Catalog, file_md5

log = logging.getLogger(__name__)

#: The real MedMNIST files: ``../shared/data/medmnist`` beside the repository.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"
REAL_FLAGS: tuple[str, ...] = ("breastmnist", "pneumoniamnist", "retinamnist")
TINY_SIZES: dict[str, int] = {"train": 60, "val": 30, "test": 30}


@dataclass(frozen=True)
class TinyData:
    """A data directory, the ``info.json`` describing its files, and the catalog read from it."""

    data_dir: Path
    info_path: Path
    catalog: Catalog


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


def _bundled() -> dict[str, Any]:
    return json.loads(BUNDLED_INFO.read_text(encoding="utf-8"))


def _write_tiny(data_dir: Path, flags: list[str], meta: dict[str, Any]) -> None:
    """Generate tiny files for ``flags`` and rewrite their entries in ``meta`` to match."""
    for i, flag in enumerate(flags):
        entry = meta["datasets"][flag]
        path = data_dir / f"{flag}.npz"
        make_medmnist_npz(
            path,
            flag,
            entry["task"],
            entry["n_channels"],
            entry["n_classes"],
            TINY_SIZES,
            seed=1000 + i,
        )
        entry["n_samples"] = dict(TINY_SIZES)
        entry["MD5"] = file_md5(path)
        entry["url"] = f"http://127.0.0.1:9/nowhere/{flag}.npz"


def _write_info(meta: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return path


def _require_shared() -> Path:
    missing = [f for f in REAL_FLAGS if not (SHARED_DATA / f"{f}.npz").is_file()]
    if missing:
        reason = f"real MedMNIST files {missing} not found in {SHARED_DATA}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI the real-data tests must run")
        pytest.skip(reason)
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder with the three real MedMNIST files (read-only); skips without it, fails in CI."""
    return _require_shared()


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    """All ten datasets, generated with their real task, channels and classes, 60/30/30 images."""
    root = tmp_path_factory.mktemp("tiny")
    data_dir = root / "data"
    data_dir.mkdir()
    meta = _bundled()
    flags = [f for f in meta["datasets"]]
    _write_tiny(data_dir, flags, meta)
    info_path = _write_info(meta, root / "info.json")
    return TinyData(data_dir, info_path, Catalog.load(info_path))


@pytest.fixture(scope="session")
def mixed_catalog(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    """The three real files (symlinked, published metadata) plus the seven others generated."""
    shared = _require_shared()
    root = tmp_path_factory.mktemp("mixed")
    data_dir = root / "data"
    data_dir.mkdir()
    meta = _bundled()
    for flag in REAL_FLAGS:
        (data_dir / f"{flag}.npz").symlink_to(shared / f"{flag}.npz")
    _write_tiny(data_dir, [f for f in meta["datasets"] if f not in REAL_FLAGS], meta)
    info_path = _write_info(meta, root / "info.json")
    return TinyData(data_dir, info_path, Catalog.load(info_path))


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; ``/truncated/<file>`` announces the whole file but sends half of it."""

    def do_GET(self) -> None:
        if not self.path.startswith("/truncated/"):
            super().do_GET()
            return
        target = Path(self.directory) / self.path.removeprefix("/truncated/").lstrip("/")
        if not target.is_file():
            self.send_error(404)
            return
        data = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_server: " + format, *args)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a temporary folder: yields (base_url, folder).

    Put files in the folder; ``{base_url}/truncated/{name}`` sends a short body for ``name``.
    """
    served = tmp_path / "served"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(served)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def copy_dataset(src_dir: Path, flag: str, dest_dir: Path) -> Path:
    """Copy ``{flag}.npz`` (following symlinks) into ``dest_dir``; returns the copy's path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(src_dir / f"{flag}.npz", dest_dir / f"{flag}.npz"))
