"""The dataset registry and loading: the ten MedMNIST subsets, their files and checks.

The published facts (task, classes, split sizes, URL, MD5) come from a metadata file in the
format of ``medmnist.INFO``: the bundled ``medmnist_info.json`` unless another one is named.
Files are the official releases, ``{flag}.npz`` at 28x28 and ``{flag}_{size}.npz`` at 64, 128
and 224 (MedMNIST+), kept in one data directory (by default the ``medmnist`` package's own
``~/.medmnist``, so both share one cache).

Nothing here holds a split's images in memory: the archive is checked from its members' headers,
and the images are streamed out of the zip into plain ``.npy`` files that are memory-mapped, so
the harness's memory does not grow with the image size (pathmnist at 224 is about 16 GB).

Longer than 600 lines: the metadata, the MD5 and structure checks and the loading are one
concept, a dataset file; a download is checked with the loader's own checks before it takes the
file's name, and what counts as verified needs the published metadata beside the file's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tokenize
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from zlib import error as zlib_error

import numpy as np

from decathlon import resources
from decathlon.contract import MULTI_LABEL, TASK_TYPES, DatasetInfo
from decathlon.download import download as _download
from decathlon.errors import DataError, did_you_mean
from decathlon.files import replacing
from decathlon.transfer import mirror_url, shown_url

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

#: The image sizes MedMNIST+ publishes (``medmnist`` 3.0: ``url_{size}``, ``MD5_{size}``).
SIZES: tuple[int, ...] = (28, 64, 128, 224)
DEFAULT_SIZE = 28

SPLITS: tuple[str, ...] = ("train", "val", "test")
KEYS: tuple[str, ...] = tuple(f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels"))

BUNDLED_INFO = resources.data_file("medmnist_info.json")
_REQUIRED = ("task", "n_channels", "label", "n_samples")
_FIX = "delete it or pass --redownload"
#: How a damaged archive fails: in zipfile, zlib, or numpy's header parser (tokenize, ast);
#: zipfile raises RuntimeError for an encrypted member and NotImplementedError (a subclass) for
#: a compression method it lacks.
_DAMAGED = (
    OSError,
    RuntimeError,
    ValueError,
    EOFError,
    SyntaxError,
    zipfile.BadZipFile,
    zlib_error,
    tokenize.TokenError,
)


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
            if not isinstance(entry, dict):
                raise DataError(f"{path}: dataset '{flag}' is {entry!r}, not an object")
            missing = [k for k in _REQUIRED if k not in entry]
            if missing:
                raise DataError(f"{path}: dataset '{flag}' lacks {', '.join(missing)}")
            if not isinstance(entry["n_samples"], dict):
                raise DataError(f"{path}: dataset '{flag}' has n_samples that is not an object")
            absent = [s for s in SPLITS if s not in entry["n_samples"]]
            if absent:
                raise DataError(f"{path}: dataset '{flag}' has no n_samples for {absent}")
            _check_entry(path, flag, entry)
        renamed = raw.get("_v1_to_v2_flag", {})
        if not isinstance(renamed, dict) or not all(
            isinstance(v, str) for v in (*renamed, *renamed.values())
        ):
            raise DataError(f"{path}: '_v1_to_v2_flag' is not an object of names to names")
        aliases = dict(ALIASES)
        aliases.update({k.lower(): v for k, v in renamed.items() if k != v})
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

    def info(self, flag: str, size: int = DEFAULT_SIZE) -> DatasetInfo:
        """The published facts about one dataset at one image size (``flag`` may be an alias).

        The URL and MD5 are the metadata's ``url``/``MD5`` at 28 and ``url_{size}``/``MD5_{size}``
        above (empty when the metadata has none).
        """
        flag = self.resolve(flag)
        size = check_size(size)
        d = self.datasets[flag]
        labels = {str(k): str(v) for k, v in d["label"].items()}
        suffix = size_suffix(size)
        return DatasetInfo(
            flag=flag,
            task=d["task"],
            n_channels=int(d["n_channels"]),
            n_classes=int(d.get("n_classes", len(labels))),
            labels=labels,
            n_samples={s: int(d["n_samples"][s]) for s in SPLITS},
            url=d.get(f"url{suffix}", ""),
            md5=d.get(f"MD5{suffix}", ""),
            license=d.get("license", ""),
            python_class=d.get("python_class", ""),
            size=size,
        )


def _check_entry(path: Path, flag: str, entry: dict[str, Any]) -> None:
    """A one-line :class:`DataError` for a value of the wrong kind in one dataset's entry (an
    edited metadata file), rather than a ValueError or TypeError where it is first used."""

    def bad(key: str, expected: str) -> DataError:
        return DataError(f"{path}: dataset '{flag}' has {key} {entry[key]!r}; expected {expected}")

    def positive(value: Any) -> bool:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if entry["task"] not in TASK_TYPES:
        raise bad("task", "one of " + ", ".join(repr(t) for t in TASK_TYPES))
    if entry["n_channels"] not in (1, 3, "1", "3") or isinstance(entry["n_channels"], bool):
        raise bad("n_channels", "1 or 3")
    if not isinstance(entry["label"], dict) or not entry["label"]:
        raise bad("label", "an object of class ids to names")
    if "n_classes" in entry and not positive(entry["n_classes"]):
        raise bad("n_classes", "a positive whole number")
    for split in SPLITS:
        if not positive(entry["n_samples"][split]):
            raise DataError(
                f"{path}: dataset '{flag}' has n_samples {split}"
                f" {entry['n_samples'][split]!r}; expected a positive whole number"
            )
    for key in entry:
        if key.startswith(("url", "MD5")) and not isinstance(entry[key], str):
            raise bad(key, "a string")


@functools.cache
def _published(path: Path) -> Catalog:
    return Catalog.load(path)


def published_md5(flag: str, size: int = DEFAULT_SIZE) -> str:
    """The MD5 MedMNIST publishes for ``flag``'s file at ``size`` (lowercase), from the bundled
    metadata whatever metadata file a run reads; ``""`` for a dataset or size it does not
    publish."""
    published = _published(BUNDLED_INFO)
    key = flag.strip().lower()
    key = published.aliases.get(key, key)
    if key not in published.datasets or size not in SIZES:
        return ""
    return str(published.datasets[key].get(f"MD5{size_suffix(size)}", "")).lower()


def check_size(size: int) -> int:
    """``size`` if MedMNIST+ publishes it, else a one-line :class:`DataError`."""
    if isinstance(size, bool) or size not in SIZES:
        raise DataError(
            f"unknown image size {size!r}; MedMNIST publishes {', '.join(map(str, SIZES))}"
        )
    return int(size)


def size_suffix(size: int) -> str:
    """``""`` at 28, ``"_{size}"`` above: what ``medmnist`` appends to file names and keys."""
    return "" if size == DEFAULT_SIZE else f"_{size}"


@dataclass
class LoadedDataset:
    """A dataset file that passed every check.

    ``arrays`` holds the six arrays: the labels in memory (small), the images memory-mapped
    read-only from the ``.npy`` files in ``files`` (streamed out of the archive once, into the
    cache folder). ``verified`` is true only when the file's MD5 is the published one
    (:func:`published_md5`): false when ``allow_unverified`` let a file with the wrong MD5
    through, and for files another metadata file describes (generated data); ``md5`` is the
    file's own MD5.
    """

    info: DatasetInfo
    path: Path
    verified: bool
    md5: str
    arrays: dict[str, np.ndarray]
    files: dict[str, Path] = field(default_factory=dict)


def default_data_dir() -> Path:
    """``$DECATHLON_DATA_DIR``, else ``~/.medmnist`` (the ``medmnist`` package's default)."""
    env = os.environ.get("DECATHLON_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".medmnist"


def full_data_dir(folder: Path) -> Path:
    """``folder`` (a data directory) by its full name, links followed; a loop of links (which
    ``Path.resolve`` raises ``RuntimeError`` for up to Python 3.12, and from 3.13 leaves as the
    link it stopped at) is a one-line :class:`DataError`."""
    try:
        full: Optional[Path] = Path(folder).expanduser().resolve()
    except (OSError, RuntimeError):
        full = None
    if full is None or full.is_symlink():  # resolved, yet still a link: a loop (Python >= 3.13)
        raise DataError(
            f"{folder}: its symbolic links lead to no folder (a loop?); choose another data"
            " folder (--data-dir or DECATHLON_DATA_DIR)"
        )
    return full


def default_cache_root() -> Path:
    """Where images are materialized: ``$DECATHLON_HOME/arrays`` (default
    ``~/.cache/decathlon/arrays``)."""
    home = os.environ.get("DECATHLON_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "decathlon") / "arrays"


def file_name(flag: str, size: int = DEFAULT_SIZE) -> str:
    """The published file name: ``{flag}.npz`` at 28, ``{flag}_{size}.npz`` above."""
    return f"{flag}{size_suffix(size)}.npz"


def dataset_file(data_dir: Path, flag: str, size: int = DEFAULT_SIZE) -> Path:
    """Where the file of ``flag`` at ``size`` lives in ``data_dir``."""
    return Path(data_dir) / file_name(flag, size)


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
    size: int,
    mirror: Optional[str],
    download: bool,
    allow_unverified: bool,
    progress: Any,
    redownload: bool,
) -> tuple[Path, bool, str]:
    info = catalog.info(flag, size)
    path = dataset_file(data_dir, info.flag, size)
    # A file downloaded again replaces the one here only once it is whole, its MD5 matches and
    # it passes the loader's checks (see download.download): a failed --redownload keeps it.
    if path.is_dir():  # a download could never take its name (os.replace: EISDIR)
        raise DataError(f"{path}: is a folder, not the dataset file; move it out of the way")
    if redownload or not path.is_file():
        url = mirror_url(mirror, path.name) if mirror else info.url
        if not (download or redownload):
            raise DataError(
                f"{path.name} is not in {path.parent} and downloading is off; download it from"
                f" {shown_url(url) if url else 'the MedMNIST release'} and put it there"
            )
        if not url:
            raise DataError(
                f"{path.name} is not in {path.parent} and {catalog.path} names no URL for it;"
                " put it there or pass --mirror URL"
            )

        def check(tmp: Path) -> None:  # the loader's checks, before the file takes the name
            try:
                check_structure(tmp, info, path.name)
            except DataError as exc:
                text = str(exc).removeprefix(f"{path.name}: ").removesuffix(f"; {_FIX}")
                raise DataError(text) from exc

        # With allow_unverified an MD5 mismatch is only a warning, so the downloader keeps the
        # file, but only one that passes the structure check.
        md5 = None if allow_unverified else info.md5
        # At most twice its arrays uncompressed and 1 MiB (headers, compression that expands,
        # labels wider than uint8 in a mirror's copy): a server that streams without end is
        # stopped there, not when the disk is full.
        cap = info.n_bytes * 2 + (1 << 20)
        _download(
            url, path, md5=md5, progress=progress, check=check, mirror=bool(mirror), max_bytes=cap
        )
        _sidecar(path).unlink(missing_ok=True)
    md5 = _cached_md5(path)
    if info.md5 and md5 == info.md5.lower():
        # Verified only when it is the published file: another metadata file (DECATHLON_INFO,
        # generated data) names its own files' MD5s, which say a file is whole, not that it holds
        # the MedMNIST images.
        return path, md5 == published_md5(info.flag, size), md5
    if not info.md5:
        message = f"{path.name}: no MD5 is published for {info.flag} at {size}; cannot verify it"
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
    size: int = DEFAULT_SIZE,
    mirror: Optional[str] = None,
    download: bool = True,
    allow_unverified: bool = False,
    progress: Any = True,
    redownload: bool = False,
) -> tuple[Path, bool]:
    """Make sure the file of ``flag`` at ``size`` (:func:`file_name`) is in ``data_dir`` and
    matches the published MD5.

    A missing file is downloaded (from ``mirror + "/" + file_name(flag, size)``, any query of
    ``mirror`` kept after it, when a mirror base URL is given, else from the published URL)
    unless ``download`` is false; ``redownload`` downloads it again. A download takes the
    file's name only once it is whole, matches the MD5 (unless ``allow_unverified``) and passes
    :func:`check_structure`; a failed one leaves the file there as it was. An existing file's
    MD5 is cached in a ``.md5ok`` sidecar beside it ("size mtime md5") and recomputed when size
    or mtime change. A mismatch raises :class:`DataError` unless ``allow_unverified``, which
    logs a warning instead. Returns ``(path, verified)``: verified when the MD5 is also the
    published one (:func:`published_md5`), not only the one ``catalog`` names.
    """
    path, verified, _ = _ensure(
        catalog,
        flag,
        data_dir,
        size=size,
        mirror=mirror,
        download=download,
        allow_unverified=allow_unverified,
        progress=progress,
        redownload=redownload,
    )
    return path, verified


@dataclass(frozen=True)
class Member:
    """One array of an archive, as its ``.npy`` header describes it (no data read)."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def _expected(info: DatasetInfo, key: str, n: Any) -> tuple[Any, ...]:
    if key.endswith("_labels"):
        return (n, info.n_classes if info.task == MULTI_LABEL else 1)
    side = info.size
    return (n, side, side) if info.n_channels == 1 else (n, side, side, info.n_channels)


def _validate(
    name: str, info: DatasetInfo, members: dict[str, Member], labels: dict[str, np.ndarray]
) -> None:
    """Check dtypes and shapes from the headers, then the label values (held in memory)."""
    multi = info.task == MULTI_LABEL
    for split in SPLITS:
        images, labels_key = members[f"{split}_images"], f"{split}_labels"
        for member in (images, members[labels_key]):
            if member.dtype != np.uint8:
                raise DataError(f"{name}: {member.key} has dtype {member.dtype}; expected uint8")
            n = member.shape[0] if member.shape else "N"
            expected = _expected(info, member.key, n)
            if member.shape != expected:
                shown = "(" + ", ".join(str(d) for d in expected) + ")"
                raise DataError(f"{name}: {member.key} has shape {member.shape}; expected {shown}")
        n_images, n_labels = images.shape[0], members[labels_key].shape[0]
        if n_images != n_labels:
            raise DataError(
                f"{name}: {split}_images has {n_images} images but {split}_labels has"
                f" {n_labels} rows"
            )
        if n_images != info.n_samples[split]:
            raise DataError(
                f"{name}: {split} has {n_images} images; the published size is"
                f" {info.n_samples[split]}"
            )
        values = labels.get(labels_key)
        if values is None:
            continue
        top = int(values.max()) if values.size else 0
        if multi and top > 1:
            raise DataError(f"{name}: {split}_labels has values other than 0 and 1 (up to {top})")
        if not multi and top >= info.n_classes:
            raise DataError(
                f"{name}: {split}_labels has values up to {top}; expected class ids in"
                f" [0, {info.n_classes})"
            )


def _npy_header(handle: Any, key: str) -> Member:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    return Member(key, tuple(int(d) for d in shape), np.dtype(dtype), bool(fortran))


def _unreadable(name: str, exc: BaseException) -> DataError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return DataError(f"{name}: is not a readable .npz (truncated or corrupt?): {reason}; {_FIX}")


def _open_archive(path: Path, name: str) -> zipfile.ZipFile:
    """The file as a zip archive, or a one-line :class:`DataError` saying what it is instead."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        with open(path, "rb") as handle:
            head = handle.read(8)
        if head.startswith(b"\x93NUMPY"):
            raise DataError(f"{name}: holds a single array, not an .npz archive; {_FIX}") from exc
        if head[:1] == b"\x80":  # a pickle's protocol opcode: never unpickled
            raise DataError(
                f"{name}: holds pickled Python objects, not arrays; refusing to load it; {_FIX}"
            ) from exc
        raise _unreadable(name, exc) from exc


def read_members(path: Path, name: str = "") -> dict[str, Member]:
    """The six arrays' headers, read from the archive without decompressing their data.

    Raises a one-line :class:`DataError` naming the file (as ``name``, default its own name)
    when it is not an ``.npz``, lacks a key, or holds an object (pickled) array.
    """
    name = name or Path(path).name
    with _open_archive(Path(path), name) as archive:
        names = archive.namelist()
        # By the member's full name, as it is opened below: a member "train_images" (no
        # .npy) is not the array, and opening "train_images.npy" would raise KeyError.
        missing = [k for k in KEYS if f"{k}.npy" not in names]
        if missing:
            shown = (f[:-4] if f.endswith(".npy") else f"'{f}' (not .npy)" for f in names)
            has = ", ".join(shown) or "nothing"
            raise DataError(f"{name}: missing {', '.join(missing)} (has {has})")
        members = {}
        for key in KEYS:
            try:
                with archive.open(f"{key}.npy") as handle:
                    members[key] = _npy_header(handle, key)
                    header = handle.tell()
            except _DAMAGED as exc:
                raise _unreadable(name, exc) from exc
            member = members[key]
            if member.dtype.hasobject:
                raise DataError(
                    f"{name}: {key} is an object array (pickled Python objects); refusing to"
                    f" load it; {_FIX}"
                )
            # The images are streamed out as they are and memory-mapped by their header's
            # shape: data shorter than the header declares fails only there, long after.
            declared = int(np.prod(member.shape, dtype=object)) * member.dtype.itemsize
            held = archive.getinfo(f"{key}.npy").file_size - header
            if held < declared:
                raise DataError(
                    f"{name}: {key} holds {held} bytes of data but its header declares shape"
                    f" {member.shape} ({declared} bytes): truncated or corrupt; {_FIX}"
                )
            if held > declared:  # all of it would be streamed into the cache: up to the disk
                raise DataError(
                    f"{name}: {key} holds {held} bytes of data but its header declares shape"
                    f" {member.shape} ({declared} bytes): more than its array; {_FIX}"
                )
    return members


def _read_labels(path: Path, name: str) -> dict[str, np.ndarray]:
    """The three label arrays (small: at most N x 14 bytes), streamed from the archive."""
    labels = {}
    with _open_archive(path, name) as archive:
        for key in KEYS:
            if not key.endswith("_labels"):
                continue
            try:
                with archive.open(f"{key}.npy") as handle:
                    labels[key] = np.lib.format.read_array(handle, allow_pickle=False)
            except _DAMAGED as exc:
                raise _unreadable(name, exc) from exc
    return labels


def check_structure(
    path: Path, info: DatasetInfo, name: str = ""
) -> tuple[dict[str, Member], dict[str, np.ndarray]]:
    """The checks :func:`load` makes of a file before it reads any image; returns the members'
    headers and the labels.

    Keys, dtypes, shapes and split sizes from the members' headers, then the label values; a
    problem raises a one-line :class:`DataError` naming the file as ``name`` (default its own).
    """
    name = name or Path(path).name
    members = read_members(path, name)
    _validate(name, info, members, {})  # shapes first: no label is read from a bad file
    labels = _read_labels(path, name)
    _validate(name, info, members, labels)
    return members, labels


def _unwritable_cache(dest: Path, exc: OSError) -> DataError:
    return DataError(
        f"{dest.parent}: cannot write {dest.name}: {exc.strerror or exc}; free space there or"
        " set DECATHLON_HOME to a folder you can write"
    )


def _stream_member(path: Path, key: str, dest: Path, chunk: int = 1 << 22) -> None:
    """Copy the ``{key}.npy`` member out of the archive to ``dest`` in chunks.

    An ``.npz`` member is a complete ``.npy`` file, so the copy is memory-mappable as it is;
    zipfile checks the member's CRC when the copy reaches its end. Written beside ``dest`` and
    renamed (:func:`decathlon.files.replacing`), so ``dest`` is complete or absent.
    """
    writing = True  # which side an OSError came from: the cache's file, or the archive
    try:
        with replacing(dest) as tmp, open(tmp, "wb") as out:
            writing = False
            with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
                while block := member.read(chunk):
                    writing = True
                    out.write(block)
                    writing = False
            writing = True  # closing and renaming the copy
    except _DAMAGED as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            if writing:  # disk full, permissions
                raise _unwritable_cache(dest, exc) from exc
            raise DataError(  # the file vanished, or the disk under it fails (EIO)
                f"{path}: cannot read {key}.npy from it: {exc.strerror or exc}; check that the"
                f" file is there and its disk is sound, or {_FIX}"
            ) from exc
        raise _unreadable(path.name, exc) from exc


def load(
    catalog: Catalog,
    flag: str,
    data_dir: Path,
    *,
    size: int = DEFAULT_SIZE,
    mirror: Optional[str] = None,
    download: bool = True,
    allow_unverified: bool = False,
    progress: Any = True,
    redownload: bool = False,
    cache_root: Optional[Path] = None,
    images: bool = True,
) -> LoadedDataset:
    """Ensure the file (as :func:`ensure_file`), check it and make its images memory-mappable.

    Checks, from the members' headers: the six keys, uint8, image shape (N, size, size) or
    (N, size, size, 3), label shape (N, 1) or (N, n_classes) for multi-label, each split's size
    against the published one; then the label values. Any problem raises a one-line
    :class:`DataError` naming the file; nothing is ever unpickled.

    The images are then streamed out of the archive into ``.npy`` files under ``cache_root``
    (default :func:`default_cache_root`) in a folder named after the file and its MD5, unless
    they are already there, and memory-mapped read-only from there: no split's images are ever
    held in memory. The labels are read into memory. With ``images=False`` only the labels are
    read (``arrays`` then holds no images).
    """
    path, verified, md5 = _ensure(
        catalog,
        flag,
        data_dir,
        size=size,
        mirror=mirror,
        download=download,
        allow_unverified=allow_unverified,
        progress=progress,
        redownload=redownload,
    )
    info = catalog.info(flag, size)
    members, labels = check_structure(path, info)
    if not images:
        return LoadedDataset(info=info, path=path, verified=verified, md5=md5, arrays=labels)
    folder = _cache_folder(Path(cache_root or default_cache_root()), info, md5)
    _make_cache_folder(folder)
    arrays: dict[str, np.ndarray] = dict(labels)
    files: dict[str, Path] = {}
    for key in (k for k in KEYS if k.endswith("_images")):
        dest = folder / f"{key}.npy"
        if not dest.is_file():
            log.info("%s: writing %s to %s", path.name, key, dest)
            _stream_member(path, key, dest)
        try:
            arrays[key] = np.load(dest, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{dest}: cannot memory-map it ({exc}); delete {folder}") from exc
        if arrays[key].shape != members[key].shape or arrays[key].dtype != members[key].dtype:
            raise DataError(f"{dest}: does not match {path.name}; delete {folder}")
        files[key] = dest
    return LoadedDataset(
        info=info, path=path, verified=verified, md5=md5, arrays=arrays, files=files
    )


def _cache_folder(cache_root: Path, info: DatasetInfo, md5: str) -> Path:
    return Path(cache_root) / f"{info.flag}{size_suffix(info.size)}-{md5[:12]}"


def _make_cache_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only $DECATHLON_HOME, a file where a folder should be
        raise DataError(
            f"{folder}: cannot make the folder of the memory-mapped arrays"
            f" ({exc.strerror or exc}); set DECATHLON_HOME to a folder you can write"
        ) from None


def materialize(
    loaded: LoadedDataset, cache_root: Path, keys: tuple[str, ...] = KEYS
) -> dict[str, Path]:
    """The arrays ``keys`` (default: all six) as plain ``.npy`` files for
    ``np.load(..., mmap_mode="r")``.

    They go under ``cache_root`` in a folder named after the file and its MD5 (where
    :func:`load` already streamed the images); each is written to a temporary name and moved
    into place, and one already there is kept. Returns key -> path.
    """
    folder = _cache_folder(cache_root, loaded.info, loaded.md5)
    _make_cache_folder(folder)
    paths: dict[str, Path] = {}
    for key in keys:
        dest = folder / f"{key}.npy"
        if not dest.is_file():
            if key in loaded.files:  # an image file of another cache root: stream it again
                _stream_member(loaded.path, key, dest)
            else:
                try:
                    with replacing(dest) as tmp, open(tmp, "wb") as f:
                        np.save(f, np.ascontiguousarray(loaded.arrays[key]), allow_pickle=False)
                except OSError as exc:  # a full disk, a read-only $DECATHLON_HOME
                    raise _unwritable_cache(dest, exc) from None
        paths[key] = dest
    return paths


def is_cached(catalog: Catalog, flag: str, data_dir: Path, size: int = DEFAULT_SIZE) -> bool:
    """Whether the file of ``flag`` at ``size`` is in ``data_dir`` (its MD5 is not checked)."""
    return dataset_file(data_dir, catalog.resolve(flag), size).is_file()
