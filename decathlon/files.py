"""Writing a file so that a reader never sees half of it: write beside it, then rename.

Every module of the harness writes its files this way (the worker in ``worker.py`` keeps its
own copy: it runs standalone in adapter environments). The temporary name is hidden, unique to
the process and thread, and removed when writing fails. And the other way round: a file a task
left is read without following links or blocking (:func:`read_left_by_task`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yields a temporary path in ``path``'s folder; when the block ends without an exception,
    that file replaces ``path`` in one rename, otherwise it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    # Locked while it is written (the writer opens the same file): a PID in the name says
    # nothing to a process in another PID namespace or on another host sharing the folder,
    # the lock does (held_by_writer).
    try:
        fd: int | None = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        fd = None  # the caller's own open says why, as it would have
    try:
        if fd is not None:
            with contextlib.suppress(OSError):  # a file system without locks (ENOLCK)
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def held_by_writer(path: Path) -> bool:
    """Whether a live :func:`replacing` (in whatever process, PID namespace or host) holds the
    lock on its temporary file ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def why_not_writable(folder: Path, *, make: bool = True) -> str | None:
    """Make ``folder`` (with its parents) and write a file in it; ``None`` when that works, else
    why not, as a short phrase for a one-line message (``/etc/passwd is a file, not a folder``).
    With ``make=False`` nothing is left behind: the write is tried in the nearest folder that
    exists already (a command that may still refuse its inputs leaves no empty folder).

    Commands call it before any slow or lasting work, so that a folder that cannot take their
    output stops them at once rather than with a traceback at the end."""
    folder = Path(folder)
    if not make:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        folder = existing
    try:
        if make:
            folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".decathlon-write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTDIR):
            for parent in (folder, *folder.parents):
                if parent.exists() and not parent.is_dir():
                    return f"{parent} is a file, not a folder"
        return exc.strerror or str(exc)
    return None


def json_text(payload: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``payload`` as strict JSON: NaN and infinities (Python or numpy floats, at any depth)
    become ``null``, numpy scalars and arrays plain numbers and lists, anything else JSON does
    not know its ``str``. Python's ``json`` writes a bare ``NaN`` by default, which is no JSON:
    ``jq`` and JavaScript's ``JSON.parse`` refuse the whole file. Every JSON file and JSON text
    the harness writes goes through here (the worker's ``info.json`` included)."""
    return json.dumps(
        _finite(payload), indent=indent, sort_keys=sort_keys, default=str, allow_nan=False
    )


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {_key(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_)):
        value = value.item()  # np.float32 is no float: json would give it to default (str)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _key(key: Any) -> Any:
    """A record's key as JSON takes it: numpy scalars plain (``{np.int64(3): ...}``, counts per
    label, made json raise), NaN and the infinities spelt as Python's ``json`` spelt them before
    ``allow_nan=False`` (which raises on them), anything else JSON does not know its ``str``."""
    if isinstance(key, np.generic) and not isinstance(key, (np.str_, np.bytes_)):
        key = key.item()
    if isinstance(key, float) and not math.isfinite(key):
        return "NaN" if math.isnan(key) else "Infinity" if key > 0 else "-Infinity"
    return key if key is None or isinstance(key, (str, int, float, bool)) else str(key)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_left_by_task(path: Path, limit: int) -> bytes:
    """The bytes of a file a task left in a folder it could write, read without trusting it.

    Refused (``ValueError`` saying why): a symbolic link (the file, or its folder, could lead
    to another task's predictions or anywhere else), anything but a regular file (a FIFO would
    block the reader for ever, a device never ends), more than ``limit`` bytes. A missing file
    raises ``FileNotFoundError``.
    """
    path = Path(path)
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ValueError(f"{path.parent.name}/ is not a folder (a link?)") from None
        raise
    try:
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValueError(f"{path.name} is a symbolic link") from None
            raise
    finally:
        os.close(folder)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{path.name} holds {info.st_size} bytes, more than {limit}")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.name} grew past {limit} bytes")
    return data


def tail_of(path: Path, limit: int) -> str:
    """The last ``limit`` bytes of a log a task wrote, as text (UTF-8, undecodable bytes
    replaced); a file cut at the front starts with ``[... N bytes left out]``. A task may make
    its log as long as its file system allows (a sparse file), more than any memory holds."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - limit))
        text = handle.read(limit).decode("utf-8", errors="replace")
    return f"[... {size - limit} bytes left out]\n{text}" if size > limit else text


def load_npy(raw: bytes) -> np.ndarray:
    """The array in the bytes of an ``.npy`` file a task left, without trusting its header.

    ``np.load`` allocates the shape the header declares before it reads the data, so a header
    of a few bytes can ask for terabytes. Refused (``ValueError`` saying why): a header that is
    not format 1.0 or 2.0, objects (pickles), and a declared size the file does not hold.
    """
    handle = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"npy format {version[0]}.{version[1]} is not read; save with np.save")
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise ValueError(f"not an .npy file: {exc or type(exc).__name__}") from None
    if dtype.hasobject:
        raise ValueError("holds Python objects, not numbers")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = len(raw) - handle.tell()
    if declared != held:
        raise ValueError(
            f"its header declares shape {shape} ({declared} bytes) but it holds {held}"
        )
    return np.load(io.BytesIO(raw), allow_pickle=False)
