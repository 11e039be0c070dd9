"""Fetch one file over HTTP(S) with a progress bar, an MD5 check and no partial leftovers."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

from decathlon import __version__, files
from decathlon.errors import DataError, DownloadError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@contextlib.contextmanager
def _progress_bar(
    name: str, total: Optional[int], enabled: bool
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n_bytes)``; draws a rich bar on stderr only when it is a terminal."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda n: None
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
        yield lambda n: bar.advance(task, n)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line


def _truncated(name: str, url: str, received: int, total: Optional[int]) -> DownloadError:
    of = f" of {total}" if total is not None else ""
    return DownloadError(
        f"download of {name} from {url} was truncated: received {received}{of} bytes;"
        " try again or use --mirror"
    )


def download(
    url: str,
    dest: Path,
    *,
    md5: Optional[str],
    progress: bool = True,
    timeout: float = 60,
    check: Optional[Callable[[Path], None]] = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    The bytes go to a temporary file in ``dest``'s folder, are checked against ``md5`` (skipped
    when it is ``None`` or empty), then by ``check(temporary_path)`` (which raises
    :class:`~decathlon.errors.DataError` saying what is wrong), and only then moved to ``dest``
    with ``os.replace``; on any failure the temporary file is removed and ``dest`` is left as it
    was. ``timeout`` is the socket timeout in seconds. Raises
    :class:`~decathlon.errors.DownloadError` with a one-line message: network failure, truncated
    transfer, checksum mismatch or a file that fails ``check``.
    """
    dest = Path(dest)
    name = dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", name, url)
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    total: Optional[int] = None
    kind = ""
    with files.replacing(dest) as tmp:
        with open(tmp, "wb") as out:
            try:
                request = urllib.request.Request(
                    url, headers={"User-Agent": f"medmnist-decathlon/{__version__}"}
                )
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    kind = response.headers.get_content_type()
                    with _progress_bar(name, total, progress) as advance:
                        while chunk := response.read(CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            received += len(chunk)
                            advance(len(chunk))
            except http.client.IncompleteRead as exc:
                raise _truncated(name, url, received + len(exc.partial), total) from exc
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise DownloadError(
                    f"could not download {name} from {url}: {_reason(exc)}. Download it by hand"
                    f" and put it at {dest}, or pass --mirror URL"
                ) from exc
        if total is not None and received < total:
            raise _truncated(name, url, received, total)
        got = digest.hexdigest()
        if md5 and got != md5.lower():
            raise DownloadError(
                f"downloaded {name} has MD5 {got}, expected {md5} (corrupt or truncated transfer);"
                " try again or use --mirror"
            )
        if check is not None:
            try:
                check(tmp)
            except DataError as exc:
                page = " (the server sent an HTML page: an error page?)" if "html" in kind else ""
                kept = f"; {name} already there is kept" if dest.exists() else ""
                raise DownloadError(
                    f"downloaded {name} from {url} is not a dataset file{page}: {exc}{kept};"
                    " try again or use --mirror"
                ) from exc
    log.info("downloaded %s (%d bytes)", name, received)
    return dest
