"""The dataset registry and loading: the ten MedMNIST 28x28 subsets, their files and checks.

The published facts (task, classes, split sizes, URL, MD5) come from a metadata file in the
format of ``medmnist.INFO``: the bundled ``medmnist_info.json`` unless another one is named.
Files are the official ``{flag}.npz`` releases, kept in one data directory (by default the
``medmnist`` package's own ``~/.medmnist``, so both share one cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from decathlon import resources
from decathlon.contract import MULTI_LABEL, DatasetInfo
from decathlon.download import download as _download
from decathlon.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

#: The ten MedMNIST v1 subsets, in the order of the decathlon paper.
DECATHLON_FLAGS: tuple[str, ...] = (
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
)

#: MedMNIST v1 names that changed in v2 (the metadata's ``_v1_to_v2_flag``).
ALIASES: dict[str, str] = {
    "organmnist_axial": "organamnist",
    "organmnist_coronal": "organcmnist",
    "organmnist_sagittal": "organsmnist",
}

SPLITS: tuple[str, ...] = ("train", "val", "test")
KEYS: tuple[str, ...] = tuple(f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels"))

BUNDLED_INFO = resources.data_file("medmnist_info.json")
_REQUIRED = ("task", "n_channels", "label", "n_samples")
_FIX = "delete it or pass --redownload"


@dataclass(frozen=True)
class Catalog:
    """The published metadata of the MedMNIST subsets, read from one ``info.json``."""

    path: Path
    datasets: dict[str, dict[str, Any]]
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Optional[Path] = None) -> Catalog:
        """Read the metadata: ``path``, else ``$DECATHLON_INFO``, else the bundled file."""
        if path is None:
            env = os.environ.get("DECATHLON_INFO")
            path = Path(env).expanduser() if env else BUNDLED_INFO
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read dataset metadata: {exc}") from exc
        datasets = raw.get("datasets") if isinstance(raw, dict) else None
        if not isinstance(datasets, dict):
            raise DataError(f"{path}: expected an object with a 'datasets' table")
        for flag, entry in datasets.items():
            missing = [k for k in _REQUIRED if k not in entry]
            if missing:
                raise DataError(f"{path}: dataset '{flag}' lacks {', '.join(missing)}")
            absent = [s for s in SPLITS if s not in entry["n_samples"]]
            if absent:
                raise DataError(f"{path}: dataset '{flag}' has no n_samples for {absent}")
        aliases = dict(ALIASES)
        aliases.update({k.lower(): v for k, v in raw.get("_v1_to_v2_flag", {}).items() if k != v})
        return cls(path=path, datasets=datasets, aliases=aliases)

    @property
    def flags(self) -> tuple[str, ...]:
        """The decathlon flags present in the metadata, in paper order."""
        return tuple(f for f in DECATHLON_FLAGS if f in self.datasets)

    def resolve(self, name: str) -> str:
        """The flag for ``name``: a flag or a v1 alias, in any case."""
        key = name.strip().lower()
        key = self.aliases.get(key, key)
        if key in self.datasets:
            return key
        known = ", ".join(self.flags or tuple(self.datasets))
        hint = did_you_mean(key, [*self.datasets, *self.aliases])
        raise DataError(f"unknown dataset '{name}'.{hint} Known: {known}")

    def info(self, flag: str) -> DatasetInfo:
        """The published facts about one dataset (``flag`` may be an alias)."""
        flag = self.resolve(flag)
        d = self.datasets[flag]
        labels = {str(k): str(v) for k, v in d["label"].items()}
        return DatasetInfo(
            flag=flag,
            task=d["task"],
            n_channels=int(d["n_channels"]),
            n_classes=int(d.get("n_classes", len(labels))),
            labels=labels,
            n_samples={s: int(d["n_samples"][s]) for s in SPLITS},
            url=d.get("url", ""),
            md5=d.get("MD5", ""),
            license=d.get("license", ""),
            python_class=d.get("python_class", ""),
        )


@dataclass
class LoadedDataset:
    """A dataset file that passed every check, with its six arrays in memory.

    ``verified`` is false only when ``allow_unverified`` let a file with the wrong MD5 through;
    ``md5`` is the file's own MD5.
    """

    info: DatasetInfo
    path: Path
    verified: bool
    md5: str
    arrays: dict[str, np.ndarray]


def default_data_dir() -> Path:
    """``$DECATHLON_DATA_DIR``, else ``~/.medmnist`` (the ``medmnist`` package's default)."""
    env = os.environ.get("DECATHLON_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".medmnist"


def dataset_file(data_dir: Path, flag: str) -> Path:
    """Where the file of ``flag`` lives in ``data_dir``."""
    return Path(data_dir) / f"{flag}.npz"


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    """The MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".md5ok")


def _cached_md5(path: Path) -> str:
    """The file's MD5, from its ``.md5ok`` sidecar while size and mtime are unchanged."""
    st = path.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    side = _sidecar(path)
    try:
        size, mtime, md5 = side.read_text(encoding="ascii").split()
        if f"{size} {mtime}" == stamp:
            return md5
    except (OSError, ValueError):
        pass
    md5 = file_md5(path)
    try:  # best effort: the data directory may be read-only
        side.write_text(f"{stamp} {md5}\n", encoding="ascii")
    except OSError as exc:
        log.debug("cannot write %s: %s", side, exc)
    return md5


def _ensure(
    catalog: Catalog,
    flag: str,
    data_dir: Path,
    *,
    mirror: Optional[str],
    download: bool,
    allow_unverified: bool,
    progress: bool,
    redownload: bool,
) -> tuple[Path, bool, str]:
    info = catalog.info(flag)
    path = dataset_file(data_dir, info.flag)
    if redownload:
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
    if not path.is_file():
        url = f"{mirror.rstrip('/')}/{info.flag}.npz" if mirror else info.url
        if not (download or redownload):
            raise DataError(
                f"{path.name} is not in {path.parent} and downloading is off; download it from"
                f" {url or 'the MedMNIST release'} and put it there"
            )
        if not url:
            raise DataError(f"{path.name}: no download URL is published; pass --mirror URL")
        # With allow_unverified a mismatch is only a warning, so the downloader keeps the file.
        _download(url, path, md5=None if allow_unverified else info.md5, progress=progress)
        _sidecar(path).unlink(missing_ok=True)
    md5 = _cached_md5(path)
    if info.md5 and md5 == info.md5.lower():
        return path, True, md5
    if not info.md5:
        message = f"{path.name}: no MD5 is published for {info.flag}; cannot verify it"
    else:
        message = (
            f"{path.name}: MD5 {md5} does not match the published {info.md5}; delete it or"
            " pass --redownload, or --allow-unverified to use it anyway"
        )
    if not allow_unverified:
        raise DataError(message)
    log.warning("%s (using it anyway)", message)
    return path, False, md5


def ensure_file(
    catalog: Catalog,
    flag: str,
    data_dir: Path,
    *,
    mirror: Optional[str] = None,
    download: bool = True,
    allow_unverified: bool = False,
    progress: bool = True,
    redownload: bool = False,
) -> tuple[Path, bool]:
    """Make sure ``{flag}.npz`` is in ``data_dir`` and matches the published MD5.

    A missing file is downloaded (from ``mirror + "/{flag}.npz"`` when a mirror base URL is
    given, else from the published URL) unless ``download`` is false; ``redownload`` deletes
    the file first. An existing file's MD5 is cached in a ``{flag}.npz.md5ok`` sidecar
    ("size mtime md5") and recomputed when size or mtime change. A mismatch raises
    :class:`DataError` unless ``allow_unverified``, which logs a warning instead. Returns
    ``(path, verified)``.
    """
    path, verified, _ = _ensure(
        catalog,
        flag,
        data_dir,
        mirror=mirror,
        download=download,
        allow_unverified=allow_unverified,
        progress=progress,
        redownload=redownload,
    )
    return path, verified


def _expect(name: str, key: str, arr: np.ndarray, tail: tuple[int, ...]) -> None:
    if arr.ndim != 1 + len(tail) or arr.shape[1:] != tail:
        n = arr.shape[0] if arr.ndim else "N"
        expected = "(" + ", ".join(str(d) for d in (n, *tail)) + ")"
        raise DataError(f"{name}: {key} has shape {arr.shape}; expected {expected}")


def _validate(name: str, info: DatasetInfo, arrays: dict[str, np.ndarray]) -> None:
    image_tail = (28, 28) if info.n_channels == 1 else (28, 28, info.n_channels)
    multi = info.task == MULTI_LABEL
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        for key, arr in ((f"{split}_images", images), (f"{split}_labels", labels)):
            if arr.dtype != np.uint8:
                raise DataError(f"{name}: {key} has dtype {arr.dtype}; expected uint8")
        _expect(name, f"{split}_images", images, image_tail)
        _expect(name, f"{split}_labels", labels, (info.n_classes if multi else 1,))
        if len(images) != len(labels):
            raise DataError(
                f"{name}: {split}_images has {len(images)} images but {split}_labels has"
                f" {len(labels)} rows"
            )
        if len(images) != info.n_samples[split]:
            raise DataError(
                f"{name}: {split} has {len(images)} images; the published size is"
                f" {info.n_samples[split]}"
            )
        top = int(labels.max()) if labels.size else 0
        if multi and top > 1:
            raise DataError(f"{name}: {split}_labels has values other than 0 and 1 (up to {top})")
        if not multi and top >= info.n_classes:
            raise DataError(
                f"{name}: {split}_labels has values up to {top}; expected class ids in"
                f" [0, {info.n_classes})"
            )


def _read_npz(path: Path, keys: Sequence[str] = KEYS) -> dict[str, np.ndarray]:
    """Read ``keys`` from the archive (every one of the six must be there)."""
    name = path.name
    key = ""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(f"{name}: holds a single array, not an .npz archive; {_FIX}")
        with npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                has = ", ".join(npz.files) or "nothing"
                raise DataError(f"{name}: missing {', '.join(missing)} (has {has})")
            arrays: dict[str, np.ndarray] = {}
            for key in keys:
                arrays[key] = npz[key]
            return arrays
    except DataError:
        raise
    except Exception as exc:  # a damaged file fails in zipfile, zlib or numpy's header parser
        if isinstance(exc, ValueError) and "allow_pickle" in str(exc):
            what = (
                f"{key} is an object array (pickled Python objects)"
                if key
                else ("holds pickled Python objects, not arrays")
            )
            raise DataError(f"{name}: {what}; refusing to load it; {_FIX}") from exc
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"{name}: is not a readable .npz (truncated or corrupt?): {reason}; {_FIX}"
        ) from exc


def load(
    catalog: Catalog,
    flag: str,
    data_dir: Path,
    *,
    mirror: Optional[str] = None,
    download: bool = True,
    allow_unverified: bool = False,
    progress: bool = True,
    redownload: bool = False,
    cache_root: Optional[Path] = None,
) -> LoadedDataset:
    """Ensure the file (as :func:`ensure_file`), read it without pickles and check every array.

    Checks: the six keys, uint8, image shape (N, 28, 28) or (N, 28, 28, 3), label shape (N, 1)
    or (N, n_classes) for multi-label, label values, and each split's size against the
    published one. Any problem raises a one-line :class:`DataError` naming the file.

    With ``cache_root``, images that :func:`materialize` already wrote for this file (same MD5)
    are memory-mapped from there instead of decompressed again; labels always come from the
    archive.
    """
    path, verified, md5 = _ensure(
        catalog,
        flag,
        data_dir,
        mirror=mirror,
        download=download,
        allow_unverified=allow_unverified,
        progress=progress,
        redownload=redownload,
    )
    info = catalog.info(flag)
    cached = _cached_images(cache_root, flag, md5) if cache_root is not None else {}
    arrays = _read_npz(path, [k for k in KEYS if k not in cached])
    arrays.update(cached)
    _validate(path.name, info, arrays)
    return LoadedDataset(info=info, path=path, verified=verified, md5=md5, arrays=arrays)


def _cache_folder(cache_root: Path, flag: str, md5: str) -> Path:
    return Path(cache_root) / f"{flag}-{md5[:12]}"


def _cached_images(cache_root: Path, flag: str, md5: str) -> dict[str, np.ndarray]:
    """The images :func:`materialize` wrote for this file, memory-mapped; {} if any is missing."""
    folder = _cache_folder(cache_root, flag, md5)
    keys = [k for k in KEYS if k.endswith("_images")]
    try:
        return {k: np.load(folder / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in keys}
    except (OSError, ValueError):
        return {}


def materialize(
    loaded: LoadedDataset, cache_root: Path, keys: tuple[str, ...] = KEYS
) -> dict[str, Path]:
    """Write the arrays ``keys`` (default: all six) as plain ``.npy`` files for
    ``np.load(..., mmap_mode="r")``.

    They go under ``cache_root / f"{flag}-{md5[:12]}"``; each is written to a temporary name and
    moved into place, and one already there is kept. Returns key -> path.
    """
    folder = _cache_folder(cache_root, loaded.info.flag, loaded.md5)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for key in keys:
        dest = folder / f"{key}.npy"
        if not dest.is_file():
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, np.ascontiguousarray(loaded.arrays[key]), allow_pickle=False)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        paths[key] = dest
    return paths


def is_cached(catalog: Catalog, flag: str, data_dir: Path) -> bool:
    """Whether the file of ``flag`` is in ``data_dir`` (its MD5 is not checked)."""
    return dataset_file(data_dir, catalog.resolve(flag)).is_file()
