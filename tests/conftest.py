"""Shared fixtures: tiny MedMNIST-format data, the real subsets, and a real local HTTP server.

Helpers that tests import (``TinyData``, ``copy_dataset``, ``REAL_FLAGS``) live in
``tests/helpers.py``; import them from there, not from this file.

Session-scoped data (``tiny_catalog``, ``mixed_catalog``) is shared by every test: treat its
files as read-only and copy them before changing anything.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

# copy_dataset is re-exported only for tests written before helpers.py existed.
from helpers import REAL_FLAGS, TinyData, copy_dataset, require_shared  # noqa: F401

from decathlon import datasets
from decathlon.datasets import Catalog
from decathlon.synthetic import bundled_info, write_info, write_tiny

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder with the three real MedMNIST files (read-only); skips without it, fails in CI."""
    return require_shared()


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    """All ten datasets, generated with their real task, channels and classes, 60/30/30 images."""
    root = tmp_path_factory.mktemp("tiny")
    data_dir = root / "data"
    data_dir.mkdir()
    meta = bundled_info()
    flags = [f for f in meta["datasets"]]
    write_tiny(data_dir, flags, meta)
    info_path = write_info(meta, root / "info.json")
    return TinyData(data_dir, info_path, Catalog.load(info_path))


@pytest.fixture
def tiny_published(tiny_catalog: TinyData, monkeypatch: pytest.MonkeyPatch) -> TinyData:
    """``tiny_catalog``, its metadata taken as the published one (``datasets.BUNDLED_INFO``), so
    that its files count as verified: for tests of the MD5 checks themselves."""
    monkeypatch.setattr(datasets, "BUNDLED_INFO", tiny_catalog.info_path)
    return tiny_catalog


@pytest.fixture(scope="session")
def mixed_catalog(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    """The three real files (symlinked, published metadata) plus the seven others generated."""
    shared = require_shared()
    root = tmp_path_factory.mktemp("mixed")
    data_dir = root / "data"
    data_dir.mkdir()
    meta = bundled_info()
    for flag in REAL_FLAGS:
        (data_dir / f"{flag}.npz").symlink_to(shared / f"{flag}.npz")
    write_tiny(data_dir, [f for f in meta["datasets"] if f not in REAL_FLAGS], meta)
    info_path = write_info(meta, root / "info.json")
    return TinyData(data_dir, info_path, Catalog.load(info_path))


#: The credentials ``/auth/<file>`` asks for (HTTP basic authentication).
AUTH_USER, AUTH_PASSWORD = "alice", "s3cretPW"


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; ``/truncated/<file>`` announces the whole file but sends half of it;
    ``/auth/<file>`` serves the file only to a request with the basic credentials above."""

    def do_GET(self) -> None:
        if self.path.startswith("/auth/"):
            wanted = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {wanted}":
                self.send_error(401)
                return
            self.path = self.path.removeprefix("/auth")
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


@pytest.fixture(scope="session")
def real_baseline_runs(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real runs of the built-in baseline (quick profile) on the three real subsets.

    ``seeds/`` holds seeds 0 and 1 with the adapter's defaults; ``small/`` seed 0 with fewer
    boosting rounds and PCA components, so that the two are different methods.
    """
    from decathlon.plugins import make_registry
    from decathlon.runner import RunConfig, Runner

    root = tmp_path_factory.mktemp("real-baseline")
    runs = []
    for name, seeds, options in (
        ("seeds", (0, 1), {"max_iter": 30}),
        ("small", (0,), {"max_iter": 5, "pca_components": 8}),
    ):
        config = RunConfig(
            adapter="baseline",
            profile="quick",
            datasets=REAL_FLAGS,
            seeds=seeds,
            data_dir=str(real_data_dir),
            download=False,
            n_jobs=1,
            options=options,
        )
        Runner(config, make_registry()).run(root / name)
        runs.append(root / name)
    return runs
