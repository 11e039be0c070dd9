"""One HTTP(S) request and its answer, for :mod:`decathlon.download`: the URL as sent (path
encoded, credentials as an ``Authorization`` header) and as shown (no credentials, query or
fragment), redirects that keep credentials to the mirror's origin, the deadline on connecting
and the answer's headers, the body read a chunk at a time under a cap and the stall rule,
its gzip or deflate encoding, and a 206 answer's ``Content-Range``. Writing the file, resuming,
the MD5 and the progress bar are :mod:`decathlon.download`'s."""

from __future__ import annotations

import base64
import contextlib
import http.client
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, Optional

from decathlon import __version__
from decathlon.errors import DownloadError

#: The most one read of a body asks for.
CHUNK = 1 << 20


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


def reason(exc: BaseException, url: str) -> str:
    """``exc`` as a message tells it: one line, without ``url``'s credentials or query."""
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


def request(url: str) -> urllib.request.Request:
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


class Unanswered(Exception):
    """No answer (its headers) came within the stall window."""


@contextlib.contextmanager
def answer(request: urllib.request.Request, timeout: float, window: float) -> Iterator[Any]:
    """The response to ``request``, its headers in within ``window`` seconds (else
    :class:`Unanswered`); ``timeout`` is the socket timeout of each read."""
    deadline = _Deadline(window)
    _ANSWERING.deadline = deadline
    try:
        response = _OPENER.open(request, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        # a connect that timed out as the deadline came (not an answer such as HTTP 404)
        late = time.monotonic() >= deadline.end and not isinstance(exc, urllib.error.HTTPError)
        if deadline.expired or late:
            raise Unanswered() from exc
        raise
    finally:
        _ANSWERING.deadline = None
        deadline.close()
    with response:
        if deadline.expired:  # just as the headers came: its socket is shut down
            raise Unanswered()
        yield response


_OPENER = urllib.request.build_opener(_Redirects, _HTTPHandler, _HTTPSHandler)


class Stalled(Exception):
    """The transfer went on below the minimum rate for a whole window."""


class Watch:
    """The stall rule: at least ``min_bytes`` in every window of ``seconds``."""

    def __init__(self, seconds: float, min_bytes: int) -> None:
        self.seconds, self.min_bytes = seconds, min_bytes
        self.start, self.received = time.monotonic(), 0

    def add(self, n: int) -> None:
        self.received += n
        now = time.monotonic()
        if now - self.start >= self.seconds:
            if self.received < self.min_bytes:
                raise Stalled(f"{self.received} bytes in {now - self.start:.0f} s")
            self.start, self.received = now, 0


class Body:
    """The response's bytes as they arrive, counted: against the most it may send (one byte
    past it raises ``too_much()``), by the stall rule and on the progress bar. ``read`` is
    ``read1``, whatever has arrived, so that the stall rule sees a slow body."""

    def __init__(self) -> None:
        self.received = 0

    def start(
        self,
        response: Any,
        limit: int,
        watch: Watch,
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


class Inflate:
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


class Cut(Exception):
    """The body ended (the server closed the connection) before the length it announced."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


def range_start(response: Any) -> Optional[int]:
    """The first byte a 206 answer holds, by its ``Content-Range: bytes FIRST-LAST/SIZE``."""
    found = re.fullmatch(
        r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", response.headers.get("Content-Range") or ""
    )
    return int(found[1]) if found else None


def range_size(response: Any) -> Optional[int]:
    """The whole file's size a 206 answer names (``Content-Range: bytes FIRST-LAST/SIZE``)."""
    found = re.fullmatch(
        r"\s*bytes\s+\d+-\d+/(\d+)\s*", response.headers.get("Content-Range") or ""
    )
    return int(found[1]) if found else None
