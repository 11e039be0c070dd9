"""Fetch one file over HTTP(S) with a progress bar, an MD5 check and no partial leftovers."""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import http.client
import logging
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Optional, cast

from decathlon import __version__, files
from decathlon.errors import DataError, DownloadError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
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


def shown_url(url: str) -> str:
    """``url`` as messages show it: without credentials (``user:pass@``), query or fragment
    (``?token=...``), which would otherwise end up in logs and in the leaderboard's reasons."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "the download URL"
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def mirror_url(mirror: str, name: str) -> str:
    """The URL of file ``name`` on a mirror: ``MIRROR/name``, any query (``?token=...``) kept
    after the path. A ``#`` in the mirror is taken literally (``%23``): a fragment means
    nothing to a folder files are fetched from, and cutting there fetched from another one
    (``/my#files/`` asked ``/my/NAME``)."""
    parts = urllib.parse.urlsplit(mirror.replace("#", "%23"))
    path = f"{parts.path.rstrip('/')}/{name}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _secrets(url: str) -> list[str]:
    """The parts of ``url`` no message may show: its credentials and its query, whole and each
    on its own (a library's message may quote any of them: ``nonnumeric port: 'pw@host'``)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return [url]
    userinfo = parts.netloc.rpartition("@")[0]
    found = [userinfo, *userinfo.split(":", 1), parts.query, *re.split("[&=]", parts.query)]
    found.append(parts.fragment)
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def has_secrets(mirror: str) -> bool:
    """Whether ``mirror`` holds what no file may keep: credentials or a query (or it cannot be
    parsed, so that it cannot be told). A ``#`` is part of its folder's path, as
    :func:`mirror_url` takes it, not a fragment: no secret."""
    try:
        parts = urllib.parse.urlsplit(mirror.replace("#", "%23"))
    except ValueError:
        return True
    return "@" in parts.netloc or bool(parts.query)


def shown_mirror(mirror: str) -> str:
    """``mirror`` as :func:`shown_url` shows a URL, its ``#`` kept in the path (``%23``), as
    :func:`mirror_url` takes it: the folder files come from, not a shorter one."""
    return shown_url(mirror.replace("#", "%23"))


def _reason(exc: BaseException, url: str) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    text = text.replace(url, shown_url(url))
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return " ".join(text.split())  # one line, no secrets


def _request(url: str) -> urllib.request.Request:
    """The request for ``url``; credentials in it (``https://user:password@host/...``, a mirror
    behind HTTP basic authentication) go into an ``Authorization`` header, which urllib does
    not do by itself (it read ``password@host`` as the host). Its path is percent-encoded as
    a browser would (``/my mirror/données`` -> ``/my%20mirror/donn%C3%A9es``): http.client
    refuses a space and cannot send other than ASCII; one already encoded stays as it is, and
    a ``%`` that starts no escape is one itself (``/100%/`` -> ``/100%25/``)."""
    headers = {"User-Agent": f"medmnist-decathlon/{__version__}"}
    parts = urllib.parse.urlsplit(url)
    path = re.sub("%(?![0-9A-Fa-f]{2})", "%25", parts.path)
    parts = parts._replace(path=urllib.parse.quote(path, safe="/%:@!$&'()*+,;=~"))
    url = urllib.parse.urlunsplit(parts)
    if "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        url = urllib.parse.urlunsplit(parts._replace(netloc=host))
    return urllib.request.Request(url, headers=headers)


def _origin(url: str) -> tuple[str, str, Optional[int]]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, less the mirror's credentials once one leads to another scheme, host
    or port: urllib sends every header of the request on, ``Authorization`` too, to whatever
    host a redirect names (and over plain HTTP after an HTTPS mirror)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> Optional[urllib.request.Request]:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


class _Deadline:
    """The stall rule before the body: connecting and the answer's headers, redirects included,
    within ``seconds`` all together (the socket timeout is per read, so a server that sends a
    header byte now and then would keep the request going for ever). When the time is up
    before :meth:`close`, the connections' sockets are shut down, which ends whatever read
    waits on them."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.expired = self.closed = False
        self.sockets: list[socket.socket] = []
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.expired = True
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def watch(self, sock: socket.socket) -> None:
        # a duplicate of its descriptor: shutting it down ends the connection, whatever
        # (TLS) object the connection wraps the socket in afterwards
        with self.lock:
            self.sockets.append(sock.dup())
        if self.expired:
            self._expire()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.timer.cancel()
            for sock in self.sockets:
                sock.close()


_ANSWERING = threading.local()  # the _Deadline of the request this thread is opening


def _connect(address: tuple[str, int], timeout: Any, source: Any = None) -> socket.socket:
    deadline: Optional[_Deadline] = getattr(_ANSWERING, "deadline", None)
    if deadline is None or not isinstance(timeout, (int, float)):
        return socket.create_connection(address, timeout, source)
    # connecting within what is left of the deadline; reading with the socket timeout
    left = max(0.001, min(timeout, deadline.end - time.monotonic()))
    sock = socket.create_connection(address, left, source)
    sock.settimeout(timeout)
    deadline.watch(sock)
    return sock


class _Watched(urllib.request.AbstractHTTPHandler):
    """urllib's HTTP(S) handlers, whose connections' sockets the request's deadline watches."""

    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> Any:
        def connection(*args: Any, **kw: Any) -> http.client.HTTPConnection:
            made: http.client.HTTPConnection = http_class(*args, **kw)
            made._create_connection = _connect  # type: ignore[attr-defined]
            return made

        return super().do_open(connection, req, **kwargs)


class _HTTPHandler(_Watched, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_Watched, urllib.request.HTTPSHandler):
    pass


class _Unanswered(Exception):
    """No answer (its headers) came within the stall window."""


@contextlib.contextmanager
def _answer(request: urllib.request.Request, timeout: float, window: float) -> Iterator[Any]:
    """The response to ``request``, its headers in within ``window`` seconds (else
    :class:`_Unanswered`); ``timeout`` is the socket timeout of each read."""
    deadline = _Deadline(window)
    _ANSWERING.deadline = deadline
    try:
        response = _OPENER.open(request, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        # a connect that timed out as the deadline came (not an answer such as HTTP 404)
        late = time.monotonic() >= deadline.end and not isinstance(exc, urllib.error.HTTPError)
        if deadline.expired or late:
            raise _Unanswered() from exc
        raise
    finally:
        _ANSWERING.deadline = None
        deadline.close()
    with response:
        if deadline.expired:  # just as the headers came: its socket is shut down
            raise _Unanswered()
        yield response


_OPENER = urllib.request.build_opener(_Redirects, _HTTPHandler, _HTTPSHandler)


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
        f"download of {name} from {shown_url(url)} was truncated: received {received}{of}"
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


class _Stalled(Exception):
    """The transfer went on below the minimum rate for a whole window."""


class _Watch:
    """The stall rule: at least ``min_bytes`` in every window of ``seconds``."""

    def __init__(self, seconds: float, min_bytes: int) -> None:
        self.seconds, self.min_bytes = seconds, min_bytes
        self.start, self.received = time.monotonic(), 0

    def add(self, n: int) -> None:
        self.received += n
        now = time.monotonic()
        if now - self.start >= self.seconds:
            if self.received < self.min_bytes:
                raise _Stalled(f"{self.received} bytes in {now - self.start:.0f} s")
            self.start, self.received = now, 0


class _Body:
    """The response's bytes as they arrive, counted: against the most it may send (one byte
    past it raises ``too_much()``), by the stall rule and on the progress bar. ``read`` is
    ``read1``, whatever has arrived, so that the stall rule sees a slow body."""

    def __init__(self) -> None:
        self.received = 0

    def start(
        self,
        response: Any,
        limit: int,
        watch: _Watch,
        advance: Callable[[int], None],
        too_much: Callable[[], DownloadError],
    ) -> None:
        self.response, self.limit, self.watch = response, limit, watch
        self.advance, self.too_much = advance, too_much

    def read1(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        chunk: bytes = self.response.read1(min(n, self.limit - self.received + 1))
        if self.received + len(chunk) > self.limit:
            raise self.too_much()
        self.received += len(chunk)
        self.advance(len(chunk))
        self.watch.add(len(chunk))
        return chunk

    read = read1


class _Inflate:
    """A ``Content-Encoding: deflate`` body, decoded a chunk at a time (``read1``, at most ``n``
    bytes, so that a small body cannot decode to a huge one at once). Read as browsers do: a
    zlib stream as the standard says, or raw deflate data, which many servers send instead
    (told apart by whether the first two bytes are a zlib header). Raw data whose first two
    bytes happen to read as a zlib header fails as a zlib stream: one that fails in its first
    chunk, before it gave a byte, is read again as raw data. A body that ends before the
    stream's end raises ``EOFError``, damaged data ``zlib.error``."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.inflater: Any = None
        self.pending = b""
        self.first: Optional[bytes] = None  # the first chunk, while it may be read again as raw

    def read1(self, n: int) -> bytes:
        while True:
            if self.inflater is None:
                more = self.body.read1(CHUNK)
                self.pending += more
                if more and len(self.pending) < 2:
                    continue
                if not self.pending:
                    raise EOFError("the deflate stream ended before it began")
                first, second = self.pending[0], self.pending[1:2] or b"\0"
                wrapped = first & 0x0F == 8 and (first << 8 | second[0]) % 31 == 0
                self.inflater = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
                self.first = self.pending if wrapped else None
            if self.inflater.eof:
                return b""
            data = self.inflater.unconsumed_tail or self.pending
            if not data:
                data, self.first = self.body.read1(CHUNK), None
            self.pending = b""
            if not data:
                raise EOFError("the deflate stream ended before its end")
            try:
                chunk: bytes = self.inflater.decompress(data, n)
            except zlib.error:
                if self.first is None:
                    raise
                self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                self.pending, self.first = self.first, None
                continue
            if chunk:
                self.first = None
                return chunk


class _Cut(Exception):
    """The body ended (the server closed the connection) before the length it announced."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


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


def _range_start(response: Any) -> Optional[int]:
    """The first byte a 206 answer holds, by its ``Content-Range: bytes FIRST-LAST/SIZE``."""
    found = re.fullmatch(
        r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", response.headers.get("Content-Range") or ""
    )
    return int(found[1]) if found else None


def _range_size(response: Any) -> Optional[int]:
    """The whole file's size a 206 answer names (``Content-Range: bytes FIRST-LAST/SIZE``)."""
    found = re.fullmatch(
        r"\s*bytes\s+\d+-\d+/(\d+)\s*", response.headers.get("Content-Range") or ""
    )
    return int(found[1]) if found else None


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
    messages and logs lose credentials and query (:func:`shown_url`).
    """
    dest = Path(dest)
    name, shown, hint = dest.name, shown_url(url), _hint(mirror)
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
                body = _Body()
                encoding = "identity"
                try:
                    request = _request(url)
                    if offset:
                        request.add_header("Range", f"bytes={offset}-")
                        if validator:
                            request.add_header("If-Range", validator)
                    with _answer(request, timeout, window) as response:
                        partial = response.status == 206
                        if partial and _range_start(response) != offset:
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
                            size = _range_size(response)
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
                            _Watch(window, floor),
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
                            source = _Inflate(body)
                        elif encoding.strip() != "identity":
                            source = gzip.GzipFile(fileobj=cast(IO[bytes], body), mode="rb")
                        while chunk := source.read1(min(CHUNK, cap - file.written + 1)):
                            if file.written + len(chunk) > cap:
                                raise _oversized(name, shown, cap, None, most, hint)
                            file.add(chunk)
                        if expected is not None and body.received < expected:
                            raise _Cut(body.received)
                    break
                except _Unanswered:
                    raise DownloadError(
                        f"download of {name} from {shown} stalled: no answer within {window:g} s"
                        f" (the stall timeout); {hint}"
                    ) from None
                except _Stalled as exc:
                    raise DownloadError(
                        f"download of {name} from {shown} stalled: {exc} (at least"
                        f" {floor} needed in {window:g} s); {hint}"
                    ) from None
                except (_Cut, http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                    # the connection closed, was reset or went silent mid-way
                    cut = exc.received if isinstance(exc, _Cut) else body.received
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
                    if isinstance(exc, (_Cut, http.client.IncompleteRead)):
                        received = cut if encoding != "identity" else offset + cut
                        raise _truncated(name, url, received, total, mirror) from exc
                    where = "check the --mirror URL" if mirror else "pass --mirror URL"
                    raise DownloadError(
                        f"could not download {name} from {shown}: {_reason(exc, url)}. Download"
                        f" it by hand and put it at {dest}, or {where}"
                    ) from exc
                except EOFError as exc:  # an encoded body that ends before its end marker
                    raise _truncated(name, url, body.received, total, mirror) from exc
                # zlib.error: an encoded body whose data is damaged (not an OSError)
                except (OSError, http.client.HTTPException, ValueError, zlib.error) as exc:
                    where = "check the --mirror URL" if mirror else "pass --mirror URL"
                    raise DownloadError(
                        f"could not download {name} from {shown}: {_reason(exc, url)}. Download"
                        f" it by hand and put it at {dest}, or {where}"
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
