"""Fetch one file over HTTP(S) with a progress bar, an MD5 check and no partial leftovers: the
file-level job (the temporary file and what was written to it, stale temporaries of killed
downloads, taking up a transfer that broke off, the checks before the file takes its name).
Each request and its answer is :mod:`decathlon.transfer`'s."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import logging
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Optional, cast

from decathlon import files, transfer
from decathlon.errors import DataError, DownloadError

log = logging.getLogger(__name__)

#: The stall rule: a transfer that brings fewer than STALL_BYTES in STALL_SECONDS is given up
#: (the socket timeout alone is per read, so a byte now and then would keep it going for ever).
STALL_SECONDS = 30.0
STALL_BYTES = 32 * 1024
#: A temporary file nothing has written to for this long is stale even if its pid is alive.
STALE_TEMPORARY_SECONDS = 6 * 3600
#: The most a download may bring when neither the caller nor the server says how much to expect
#: (a server that streams without end would fill the disk): four times the largest MedMNIST+
#: file could be, pathmnist at 224 (107,180 x 224 x 224 x 3 bytes of images, about 16 GB,
#: which its compressed .npz does not exceed). ``ensure_file`` gives each file its own cap.
MAX_BYTES = 64 << 30
#: How many times one download takes up a transfer that broke off (see :func:`download`).
RESUMES = 5


class _Bar:
    """A download's bar in a rich ``Progress`` (none: nothing drawn): ``advance(n_bytes)``, and
    ``restart()`` when a server sends the file whole again, so that it counts from 0."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self.progress, self.task = progress, task

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def restart(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=0)


@contextlib.contextmanager
def _progress_bar(name: str, total: Optional[int], enabled: Any) -> Iterator[_Bar]:
    """Yield a :class:`_Bar`; draws a rich bar on stderr only when it is a terminal, or,
    when ``enabled`` is a ``rich.progress.Progress`` already on the screen (a run's live
    display), a bar of its own in it: a second live display would draw over the first."""
    if hasattr(enabled, "add_task"):
        task = enabled.add_task(name, total=total, detail="downloading")
        try:
            yield _Bar(enabled, task)
        finally:
            enabled.remove_task(task)
        return
    if not (enabled and sys.stderr.isatty()):
        yield _Bar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(name, total=total)
        yield _Bar(bar, task)


def _pid_alive(pid: int) -> bool:
    # not psutil: the data loader, and so this module, is imported in adapters' environments,
    # which hold numpy and pluggy only (tests/test_structure.py checks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def remove_stale_temporaries(dest: Path) -> list[Path]:
    """Remove the temporary files a download of ``dest`` left when its process was killed
    (``.NAME.PID.THREAD.tmp``, see :func:`decathlon.files.replacing`); return them.

    A file is stale when its process is gone, or when nothing has written to it for
    :data:`STALE_TEMPORARY_SECONDS` (its pid since given to another process). A file that a
    live download is writing is kept, one of another PID namespace or host too (its writer
    holds a lock on it: :func:`decathlon.files.held_by_writer`).
    """
    pattern = re.compile(re.escape(f".{dest.name}.") + r"(\d+)\.\d+\.tmp")
    removed = []
    try:
        entries = list(dest.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        found = pattern.fullmatch(entry.name)
        if not found:
            continue
        try:
            idle = time.time() - entry.lstat().st_mtime
            if _pid_alive(int(found[1])) and idle < STALE_TEMPORARY_SECONDS:
                continue
            if files.held_by_writer(entry):
                continue
            entry.unlink()
        except OSError as exc:  # gone meanwhile, or not ours to remove
            log.debug("cannot remove %s: %s", entry, exc)
            continue
        log.info("removed %s, left by an interrupted download", entry)
        removed.append(entry)
    return removed


def _hint(mirror: bool) -> str:
    return "try again or check the --mirror URL" if mirror else "try again or use --mirror URL"


def _truncated(
    name: str, url: str, received: int, total: Optional[int], mirror: bool
) -> DownloadError:
    of = f" of {total}" if total is not None else ""
    return DownloadError(
        f"download of {name} from {transfer.shown_url(url)} was truncated: received {received}{of}"
        f" bytes; {_hint(mirror)}"
    )


def _oversized(
    name: str, shown: str, limit: int, total: Optional[int], most: str, hint: str
) -> DownloadError:
    # A server that sends without end (chunked, or until it closes) would fill the disk.
    what = "the Content-Length it announced" if total is not None else most
    return DownloadError(
        f"download of {name} from {shown} stopped: it sent more than {what} ({limit} bytes); {hint}"
    )


def _unwritable(dest: Path, exc: OSError) -> DownloadError:
    # The disk, not the server: another mirror would not help.
    return DownloadError(
        f"cannot write {dest.name} in {dest.parent}: {exc.strerror or exc}; free space there or"
        " choose another data folder (--data-dir)"
    )


def _no_folder(dest: Path, exc: OSError) -> DownloadError:
    folder = dest.parent
    if folder.is_symlink() and not folder.is_dir():
        why = f"{folder} is a link that leads to no folder"
    else:
        why = files.why_not_writable(folder) or exc.strerror or str(exc)
    return DownloadError(
        f"cannot put {dest.name} in {folder}: {why}; choose another data folder (--data-dir)"
    )


def _write(out: BinaryIO, chunk: bytes, dest: Path) -> None:
    try:
        out.write(chunk)
    except OSError as exc:  # a full disk (ENOSPC), a file size limit (EFBIG), a quota
        raise _unwritable(dest, exc) from None


@contextlib.contextmanager
def _writing(tmp: Path, dest: Path) -> Iterator[BinaryIO]:
    """``tmp`` open for writing; failing to open it, or to flush its last bytes on closing,
    is :func:`_unwritable` too, unless another error is already on its way out."""
    try:
        out = open(tmp, "wb")
    except OSError as exc:
        raise _unwritable(dest, exc) from None
    try:
        yield out
    except BaseException:
        with contextlib.suppress(OSError):  # the error on its way out is the one to tell
            out.close()
        raise
    try:
        out.close()
    except OSError as exc:
        raise _unwritable(dest, exc) from None


class _Temporary:
    """What the attempts at one download wrote: the temporary file, the MD5 and the first bytes
    of what it holds. A resumed attempt appends to it; one a server answers in full starts it
    over."""

    def __init__(self, out: BinaryIO, dest: Path) -> None:
        self.out, self.dest = out, dest
        self.digest = hashlib.md5(usedforsecurity=False)
        self.written = 0
        self.head = b""  # the file's first bytes

    def restart(self) -> None:
        try:
            self.out.seek(0)
            self.out.truncate()
        except OSError as exc:
            raise _unwritable(self.dest, exc) from None
        self.digest = hashlib.md5(usedforsecurity=False)
        self.written, self.head = 0, b""

    def add(self, chunk: bytes) -> None:
        _write(self.out, chunk, self.dest)
        self.digest.update(chunk)
        self.written += len(chunk)
        if len(self.head) < 64:
            self.head += chunk[:64]


def download(
    url: str,
    dest: Path,
    *,
    md5: Optional[str],
    progress: Any = True,
    timeout: float = 60,
    check: Optional[Callable[[Path], None]] = None,
    mirror: bool = False,
    stall_seconds: Optional[float] = None,
    stall_bytes: Optional[int] = None,
    max_bytes: Optional[int] = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    The bytes go to a temporary file in ``dest``'s folder, are checked against ``md5`` (skipped
    when it is ``None`` or empty), then by ``check(temporary_path)`` (which raises
    :class:`~decathlon.errors.DataError` saying what is wrong), and only then moved to ``dest``
    with ``os.replace``; on any failure the temporary file is removed and ``dest`` is left as it
    was. ``progress``: a bar on stderr when it is a terminal, none when false, or a bar in the
    ``rich.progress.Progress`` given (see :func:`_progress_bar`). Temporary files of ``dest``
    that killed downloads left are removed first
    (:func:`remove_stale_temporaries`). ``timeout`` is the socket timeout in seconds; a transfer
    that brings fewer than ``stall_bytes`` (default :data:`STALL_BYTES`) in ``stall_seconds``
    (default :data:`STALL_SECONDS`) is given up, and so is one that brings more than the
    server's ``Content-Length`` or than ``max_bytes`` (the most the file can be; default
    :data:`MAX_BYTES`), or announces more than ``max_bytes``; connecting and the answer's
    headers have ``stall_seconds`` in all. A transfer that breaks off
    (the connection closed or reset before the end) from a server that takes byte ranges
    (``Accept-Ranges: bytes``) is taken up where it stopped, with ``Range: bytes=N-``, up to
    :data:`RESUMES` times, each after an attempt that brought bytes; a server that answers
    such a request with the whole file starts it over. ``mirror`` says that ``url`` is
    the user's ``--mirror``, which messages then name. Raises
    :class:`~decathlon.errors.DownloadError` with a one-line message: network failure, stall,
    truncated or oversized transfer, checksum mismatch or a file that fails ``check``. URLs in
    messages and logs lose credentials and query (:func:`decathlon.transfer.shown_url`).
    """
    dest = Path(dest)
    name, shown, hint = dest.name, transfer.shown_url(url), _hint(mirror)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file, or a link that leads nowhere, where the folder should be
        raise _no_folder(dest, exc) from None
    remove_stale_temporaries(dest)
    log.info("downloading %s from %s", name, shown)
    window = STALL_SECONDS if stall_seconds is None else stall_seconds
    floor = STALL_BYTES if stall_bytes is None else stall_bytes
    cap = MAX_BYTES if max_bytes is None else max_bytes
    most = f"the most {name} can be" if max_bytes is not None else "the cap for a download"
    total: Optional[int] = None  # the whole file's size, as the server said it
    kind = ""
    ranges = False  # the server takes byte ranges: a broken transfer can be taken up
    validator = ""  # the file's ETag or Last-Modified: If-Range asks for the same file
    resumes = 0
    with files.replacing(dest) as tmp:
        with _writing(tmp, dest) as out, contextlib.ExitStack() as bar:
            file = _Temporary(out, dest)
            shown_bar: Optional[_Bar] = None  # once the size is known
            while True:
                offset = file.written if ranges else 0
                body = transfer.Body()
                encoding = "identity"
                try:
                    request = transfer.request(url)
                    if offset:
                        request.add_header("Range", f"bytes={offset}-")
                        if validator:
                            request.add_header("If-Range", validator)
                    with transfer.answer(request, timeout, window) as response:
                        partial = response.status == 206
                        if partial and transfer.range_start(response) != offset:
                            raise DownloadError(
                                f"{shown} answered the request for {name} from byte {offset}"
                                f" with other bytes (Content-Range:"
                                f" {response.headers.get('Content-Range')}); {hint}"
                            )
                        if offset and not partial:
                            log.info("%s sent %s whole again; starting over", shown, name)
                            file.restart()
                            offset = 0
                            if shown_bar is not None:
                                shown_bar.restart()
                        length = response.headers.get("Content-Length")
                        expected = int(length) if length and length.isdigit() else None
                        if partial:
                            size = transfer.range_size(response)
                            if total is not None and size != total:
                                raise DownloadError(
                                    f"{shown} answered the request for {name} from byte {offset}"
                                    f" with the bytes of a file of another size (Content-Range:"
                                    f" {response.headers.get('Content-Range')}, {total} bytes"
                                    f" before); {hint}"
                                )
                            total = size
                        else:
                            total = expected
                            kind = response.headers.get_content_type()
                            tag = response.headers.get("ETag") or ""
                            validator = "" if tag.startswith("W/") else tag
                            validator = validator or response.headers.get("Last-Modified") or ""
                        accepts = response.headers.get("Accept-Ranges") or ""
                        ranges = partial or "bytes" in accepts.lower().split()
                        encoding = (response.headers.get("Content-Encoding") or "identity").lower()
                        if encoding.strip() not in ("identity", "gzip", "x-gzip", "deflate"):
                            raise DownloadError(
                                f"{shown} sent {name} encoded as '{encoding}' (Content-Encoding),"
                                f" which is not decoded here; {hint}"
                            )
                        if total is not None and total > cap:
                            raise DownloadError(
                                f"{shown} announces {total} bytes for {name}, more than {most}"
                                f" ({cap} bytes); {hint}"
                            )
                        limit = cap - offset if expected is None else expected
                        if shown_bar is None:
                            shown_bar = bar.enter_context(_progress_bar(name, total, progress))
                        body.start(
                            response,
                            limit,
                            transfer.Watch(window, floor),
                            shown_bar.advance,
                            functools.partial(
                                _oversized, name, shown, limit + offset, total, most, hint
                            ),
                        )
                        # A mirror that sends the file gzip- or deflate-encoded (a web
                        # server's or a bucket's setting): the file is what it decodes to, read
                        # a chunk at a time (a small body can decode to a huge one).
                        source: Any = body
                        if encoding.strip() == "deflate":
                            source = transfer.Inflate(body)
                        elif encoding.strip() != "identity":
                            source = gzip.GzipFile(fileobj=cast(IO[bytes], body), mode="rb")
                        while chunk := source.read1(min(transfer.CHUNK, cap - file.written + 1)):
                            if file.written + len(chunk) > cap:
                                raise _oversized(name, shown, cap, None, most, hint)
                            file.add(chunk)
                        if expected is not None and body.received < expected:
                            raise transfer.Cut(body.received)
                    break
                except transfer.Unanswered:
                    raise DownloadError(
                        f"download of {name} from {shown} stalled: no answer within {window:g} s"
                        f" (the stall timeout); {hint}"
                    ) from None
                except transfer.Stalled as exc:
                    raise DownloadError(
                        f"download of {name} from {shown} stalled: {exc} (at least"
                        f" {floor} needed in {window:g} s); {hint}"
                    ) from None
                except (
                    transfer.Cut,
                    http.client.IncompleteRead,
                    ConnectionError,
                    TimeoutError,
                ) as exc:
                    # the connection closed, was reset or went silent mid-way
                    cut = exc.received if isinstance(exc, transfer.Cut) else body.received
                    if isinstance(exc, http.client.IncompleteRead):
                        cut += len(exc.partial)
                    if ranges and body.received and encoding == "identity" and resumes < RESUMES:
                        resumes += 1
                        log.info(
                            "download of %s from %s broke off at byte %d; resuming",
                            name,
                            shown,
                            file.written,
                        )
                        continue
                    if isinstance(exc, (transfer.Cut, http.client.IncompleteRead)):
                        received = cut if encoding != "identity" else offset + cut
                        raise _truncated(name, url, received, total, mirror) from exc
                    where = "check the --mirror URL" if mirror else "pass --mirror URL"
                    raise DownloadError(
                        f"could not download {name} from {shown}: {transfer.reason(exc, url)}."
                        f" Download it by hand and put it at {dest}, or {where}"
                    ) from exc
                except EOFError as exc:  # an encoded body that ends before its end marker
                    raise _truncated(name, url, body.received, total, mirror) from exc
                # zlib.error: an encoded body whose data is damaged (not an OSError)
                except (OSError, http.client.HTTPException, ValueError, zlib.error) as exc:
                    where = "check the --mirror URL" if mirror else "pass --mirror URL"
                    raise DownloadError(
                        f"could not download {name} from {shown}: {transfer.reason(exc, url)}."
                        f" Download it by hand and put it at {dest}, or {where}"
                    ) from exc
        # A 206 whose Content-Length (which ends the body) is shorter than its Content-Range
        # says: the body ended "whole", the file did not.
        if encoding == "identity" and total is not None and file.written != total:
            if file.written < total:
                raise _truncated(name, url, file.written, total, mirror)
            raise DownloadError(
                f"{shown} sent {file.written} bytes for {name}, not the {total} it announced;"
                f" {hint}"
            )
        got = file.digest.hexdigest()
        head = file.head
        # An error or login page a server answers with 200: by its type, or by its first bytes
        # (a static server types it by the file name it was asked for, .npz); never a zip, as
        # a real .npz is, whatever a server that types everything text/html says. A page saved
        # "with BOM" starts with UTF-8's byte order mark.
        start = head.removeprefix(b"\xef\xbb\xbf").lstrip()[:14].lower()
        html = not head.startswith(b"PK") and (
            "html" in kind or start.startswith((b"<!doctype html", b"<html"))
        )
        page = "the server sent an HTML page: an error page?"
        if md5 and got != md5.lower():
            why = page if html else "corrupt or truncated transfer"
            raise DownloadError(f"downloaded {name} has MD5 {got}, expected {md5} ({why}); {hint}")
        if check is not None:
            try:
                check(tmp)
            except DataError as exc:
                said = f" ({page})" if html else ""
                kept = f"; {name} already there is kept" if dest.exists() else ""
                raise DownloadError(
                    f"downloaded {name} from {shown} is not a dataset file{said}: {exc}{kept};"
                    f" {hint}"
                ) from exc
    log.info("downloaded %s (%d bytes)", name, file.written)
    return dest
