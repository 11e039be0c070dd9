"""The downloader and ``ensure_file``'s download paths, against a real local HTTP server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import TinyData

from decathlon import download as download_module
from decathlon import files
from decathlon.datasets import Catalog, dataset_file, ensure_file, file_md5, load
from decathlon.download import download
from decathlon.errors import DataError, DownloadError
from decathlon.synthetic import make_medmnist_npz

BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


@pytest.fixture
def served_breast(http_server: tuple[str, Path], real_data_dir: Path) -> tuple[str, Path]:
    """The HTTP server with the real breastmnist.npz in its folder."""
    base, served = http_server
    shutil.copyfile(real_data_dir / "breastmnist.npz", served / "breastmnist.npz")
    return base, served


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.realdata
def test_good_checksum(served_breast: tuple[str, Path], tmp_path: Path) -> None:
    base, served = served_breast
    dest = tmp_path / "data" / "breastmnist.npz"
    assert download(f"{base}/breastmnist.npz", dest, md5=BREAST_MD5, progress=True) == dest
    assert dest.read_bytes() == (served / "breastmnist.npz").read_bytes()
    assert _left(dest.parent) == ["breastmnist.npz"]  # no temporary file left over


@pytest.mark.realdata
def test_bad_checksum_leaves_nothing(served_breast: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served_breast
    dest = tmp_path / "data" / "breastmnist.npz"
    with pytest.raises(DownloadError) as err:
        download(f"{base}/breastmnist.npz", dest, md5="0" * 32, progress=False)
    assert str(err.value) == (
        f"downloaded breastmnist.npz has MD5 {BREAST_MD5}, expected {'0' * 32} (corrupt or"
        " truncated transfer); try again or use --mirror URL"
    )
    assert _left(dest.parent) == []


@pytest.mark.realdata
def test_a_disk_that_takes_no_more_is_not_a_download_failure(
    served_breast: tuple[str, Path], tmp_path: Path
) -> None:
    """A full disk while downloading said "could not download ... Download it by hand ..., or
    pass --mirror URL", as for a network failure; another mirror never helps there. A child
    process with a 64 KiB file size limit stands for the full disk (EFBIG for ENOSPC)."""
    base, _ = served_breast
    dest = tmp_path / "data" / "breastmnist.npz"
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from decathlon.download import download\n"
        "from decathlon.errors import DownloadError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))\n"
        "try:\n"
        f"    download({base + '/breastmnist.npz'!r}, Path({str(dest)!r}), md5=None,"
        " progress=False)\n"
        "except DownloadError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == (
        f"cannot write breastmnist.npz in {dest.parent}: File too large; free space there or"
        " choose another data folder (--data-dir)\n"
    )
    assert _left(dest.parent) == []


@pytest.mark.realdata
def test_truncated_body(served_breast: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served_breast
    dest = tmp_path / "data" / "breastmnist.npz"
    with pytest.raises(DownloadError, match="was truncated: received 279790 of 559580 bytes"):
        download(f"{base}/truncated/breastmnist.npz", dest, md5=None, progress=False)
    assert _left(dest.parent) == []


def test_http_404(http_server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = http_server
    dest = tmp_path / "breastmnist.npz"
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download(f"{base}/breastmnist.npz", dest, md5=None, progress=False)
    assert "\n" not in str(err.value) and not dest.exists()
    assert _left(tmp_path) == ["served"]


def test_server_down(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    url = f"http://127.0.0.1:{port}/breastmnist.npz"
    dest = tmp_path / "data" / "breastmnist.npz"
    with pytest.raises(DownloadError) as err:
        download(url, dest, md5=None, progress=False, timeout=5)
    message = str(err.value)
    assert message.startswith(f"could not download breastmnist.npz from {url}: ")
    assert message.endswith(f"Download it by hand and put it at {dest}, or pass --mirror URL")
    assert "refused" in message.lower() and "\n" not in message
    assert _left(dest.parent) == []


def test_unreachable_published_url_names_the_mirror_option(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    # The tiny catalog's URLs point at a closed local port.
    with pytest.raises(DownloadError, match="or pass --mirror URL$"):
        ensure_file(tiny_catalog.catalog, "breastmnist", tmp_path, progress=False)
    assert _left(tmp_path) == []


@pytest.mark.realdata
def test_ensure_file_uses_the_mirror(served_breast: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served_breast
    catalog = Catalog.load()  # the published metadata: the real MD5, the Zenodo URL
    data_dir = tmp_path / "data"
    path, verified = ensure_file(catalog, "breastmnist", data_dir, mirror=base + "/")
    assert (path, verified) == (data_dir / "breastmnist.npz", True)
    assert file_md5(path) == BREAST_MD5
    assert (data_dir / "breastmnist.npz.md5ok").read_text().split()[2] == BREAST_MD5
    data = load(catalog, "breastmnist", data_dir, download=False)
    assert data.arrays["train_images"].shape == (546, 28, 28)


@pytest.mark.realdata
def test_ensure_file_truncated_mirror_leaves_nothing(
    served_breast: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = served_breast
    with pytest.raises(DownloadError, match="truncated"):
        ensure_file(Catalog.load(), "breastmnist", tmp_path / "d", mirror=f"{base}/truncated")
    assert _left(tmp_path / "d") == []


def test_redownload_replaces_a_bad_file(
    tiny_published: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    tiny_catalog = tiny_published
    base, served = http_server
    catalog = tiny_catalog.catalog
    shutil.copyfile(dataset_file(tiny_catalog.data_dir, "dermamnist"), served / "dermamnist.npz")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "dermamnist.npz").write_bytes(b"not the file")
    with pytest.raises(DataError, match="pass --redownload"):
        ensure_file(catalog, "dermamnist", data_dir, mirror=base, progress=False)
    path, verified = ensure_file(
        catalog, "dermamnist", data_dir, mirror=base, redownload=True, progress=False
    )
    assert verified and file_md5(path) == catalog.info("dermamnist").md5


def test_a_failed_redownload_keeps_the_file_there(tiny_published: TinyData, tmp_path: Path) -> None:
    """--redownload deleted the file before downloading: with the mirror down, a good file was
    lost. Now the download replaces it only once it is whole and its MD5 matches."""
    tiny_catalog = tiny_published
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    good = dataset_file(tiny_catalog.data_dir, "dermamnist")
    shutil.copyfile(good, data_dir / "dermamnist.npz")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connection refused
    with pytest.raises(DownloadError, match="could not download dermamnist.npz"):
        ensure_file(
            tiny_catalog.catalog,
            "dermamnist",
            data_dir,
            mirror=f"http://127.0.0.1:{port}",
            redownload=True,
            progress=False,
        )
    assert file_md5(data_dir / "dermamnist.npz") == file_md5(good)
    assert ensure_file(tiny_catalog.catalog, "dermamnist", data_dir, download=False)[1]


def test_mismatched_download(
    tiny_catalog: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """A mirror serving other bytes: refused, or kept unverified with allow_unverified."""
    base, served = http_server
    info = tiny_catalog.catalog.info("octmnist")
    make_medmnist_npz(
        served / "octmnist.npz", "octmnist", info.task, 1, info.n_classes, info.n_samples, seed=99
    )
    data_dir = tmp_path / "data"
    with pytest.raises(DownloadError, match="downloaded octmnist.npz has MD5"):
        ensure_file(tiny_catalog.catalog, "octmnist", data_dir, mirror=base, progress=False)
    assert _left(data_dir) == []
    data = load(tiny_catalog.catalog, "octmnist", data_dir, mirror=base, allow_unverified=True)
    assert data.verified is False and data.md5 == file_md5(served / "octmnist.npz")


# ------------------------------------------------ a download must be a dataset file to land


@pytest.mark.parametrize("served_as", ["an HTML error page", "another dataset's file"])
@pytest.mark.parametrize("redownload", [True, False])
def test_a_download_that_is_no_dataset_file_never_takes_its_name(
    served_as: str,
    redownload: bool,
    tiny_catalog: TinyData,
    http_server: tuple[str, Path],
    tmp_path: Path,
) -> None:
    """With --allow-unverified (no MD5 check) a mirror answering 200 with an error page
    replaced the good file with the page (--redownload), or left the page as the dataset file.
    Now the download is checked as the loader checks a file before it takes the name."""
    base, served = http_server
    if served_as == "an HTML error page":
        (served / "dermamnist.npz").write_bytes(
            b"<html><body>Service temporarily unavailable</body></html>"
        )
        expected = "is not a readable .npz"
    else:  # a real archive of another dataset (grey octmnist, not colour dermamnist)
        shutil.copyfile(dataset_file(tiny_catalog.data_dir, "octmnist"), served / "dermamnist.npz")
        expected = "train_images has shape"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    good = dataset_file(tiny_catalog.data_dir, "dermamnist")
    if redownload:
        shutil.copyfile(good, data_dir / "dermamnist.npz")
    with pytest.raises(DownloadError) as err:
        load(
            tiny_catalog.catalog,
            "dermamnist",
            data_dir,
            mirror=base,
            allow_unverified=True,
            redownload=redownload,
            progress=False,
        )
    message = str(err.value)
    assert "\n" not in message and expected in message
    assert message.startswith(f"downloaded dermamnist.npz from {base}/dermamnist.npz is not a")
    assert message.endswith("try again or check the --mirror URL")
    if redownload:
        assert "dermamnist.npz already there is kept" in message
        assert _left(data_dir) == ["dermamnist.npz"]
        assert file_md5(data_dir / "dermamnist.npz") == file_md5(good)
    else:
        assert _left(data_dir) == []


# ------------------------------------------------------------ stalls and killed downloads


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that announces a 1 MB file, then sends one byte every
    50 ms until the client goes away: yields its base URL."""
    stop = threading.Event()

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            try:
                while not stop.wait(0.05):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
            except OSError:
                pass  # the client gave up

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_stalled_download_gives_up_in_one_line(trickling_server: str, tmp_path: Path) -> None:
    """A byte now and then kept the socket timeout (per read) from ever firing: `run` waited
    for ever. Now fewer than stall_bytes in stall_seconds ends the download."""
    dest = tmp_path / "data" / "breastmnist.npz"
    dest.parent.mkdir()
    dest.write_bytes(b"what was there")
    url = f"{trickling_server}/breastmnist.npz"
    with pytest.raises(DownloadError) as err:
        download(url, dest, md5=None, progress=False, stall_seconds=0.5, stall_bytes=1000)
    message = str(err.value)
    assert message.startswith(f"download of breastmnist.npz from {url} stalled: ")
    assert "(at least 1000 needed in 0.5 s); try again or use --mirror URL" in message
    assert "\n" not in message
    assert _left(dest.parent) == ["breastmnist.npz"] and dest.read_bytes() == b"what was there"


def test_a_killed_downloads_temporary_file_is_removed_by_the_next_download(
    trickling_server: str, served_breast: tuple[str, Path], tmp_path: Path
) -> None:
    """kill -9 mid-download left .breastmnist.npz.PID.ID.tmp in the data folder for ever."""
    data_dir = tmp_path / "data"
    dest = data_dir / "breastmnist.npz"
    code = (
        "import sys; from pathlib import Path; from decathlon.download import download;"
        f" download({trickling_server + '/breastmnist.npz'!r}, Path(sys.argv[1]), md5=None,"
        " progress=False)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(download_module.__file__).parents[1])}
    child = subprocess.Popen([sys.executable, "-c", code, str(dest)], env=env)
    try:
        for _ in range(1200):  # until it writes its temporary file (or ends)
            if any(data_dir.glob(".breastmnist.npz.*.tmp")) or child.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (stale,) = data_dir.glob(f".breastmnist.npz.{child.pid}.*.tmp")
    # A download of this process, still running: kept. One of a live pid that nothing has
    # written to for a day (the pid given to another process since): removed.
    live = data_dir / f".breastmnist.npz.{os.getpid()}.1.tmp"
    old = data_dir / f".breastmnist.npz.{os.getpid()}.2.tmp"
    other = data_dir / f".pneumoniamnist.npz.{child.pid}.1.tmp"  # another dataset's: not now
    for path in (live, old, other):
        path.write_bytes(b"partial")
    day_ago = time.time() - 24 * 3600
    os.utime(old, (day_ago, day_ago))
    base, _ = served_breast
    download(f"{base}/breastmnist.npz", dest, md5=BREAST_MD5, progress=False)
    assert _left(data_dir) == sorted(["breastmnist.npz", live.name, other.name])
    assert not stale.exists() and file_md5(dest) == BREAST_MD5
    assert download_module.remove_stale_temporaries(data_dir / "pneumoniamnist.npz") == [other]


# ------------------------------------------------------------------ servers that never end

#: What the endless server sends at most, so that a downloader without a cap ends the test.
ENDLESS_SENDS = 64 << 20


@pytest.fixture
def endless_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that answers 200 and sends zeros as fast as it can:
    ``/close/NAME`` with no Content-Length (until it closes the connection), ``/chunked/NAME``
    in chunks after announcing a Content-Length of 1000 bytes, ``/huge/NAME`` announcing 1 TiB.
    It stops after :data:`ENDLESS_SENDS` bytes, or when the client goes away; yields its base
    URL."""

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            mode = self.path.split("/")[1]
            if mode == "chunked":
                self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if mode == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Content-Length", "1000")
            elif mode == "huge":
                self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            block = bytes(64 << 10)
            try:
                for _ in range(ENDLESS_SENDS // len(block)):
                    if mode == "chunked":
                        self.wfile.write(b"%x\r\n%b\r\n" % (len(block), block))
                    else:
                        self.wfile.write(block)
                if mode == "chunked":
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                pass  # the client gave up
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("mode", "max_bytes", "expected"),
    [
        (
            "chunked",
            None,
            "download of breastmnist.npz from {url} stopped: it sent more than the"
            " Content-Length it announced (1000 bytes); try again or use --mirror URL",
        ),
        (
            "close",
            None,
            "download of breastmnist.npz from {url} stopped: it sent more than the cap for a"
            " download (4194304 bytes); try again or use --mirror URL",
        ),
        (
            "close",
            3 << 20,
            "download of breastmnist.npz from {url} stopped: it sent more than the most"
            " breastmnist.npz can be (3145728 bytes); try again or use --mirror URL",
        ),
        (
            "huge",
            3 << 20,
            "{url} announces 1099511627776 bytes for breastmnist.npz, more than the most"
            " breastmnist.npz can be (3145728 bytes); try again or use --mirror URL",
        ),
    ],
    ids=["past-its-content-length", "past-the-default-cap", "past-max-bytes", "announced-too-much"],
)
def test_a_download_that_does_not_end_is_stopped_in_one_line(
    endless_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    max_bytes: int | None,
    expected: str,
) -> None:
    """A server that answers 200 and sends bytes for ever, fast (the stall rule never fires),
    filled the disk: nothing capped a download. Now it stops past what the server announced,
    or past the most the file can be; the file there is kept and nothing else is left."""
    monkeypatch.setattr(download_module, "MAX_BYTES", 4 << 20, raising=False)
    dest = tmp_path / "data" / "breastmnist.npz"
    dest.parent.mkdir()
    dest.write_bytes(b"what was there")
    url = f"{endless_server}/{mode}/breastmnist.npz"
    with pytest.raises(DownloadError) as err:
        cap = {} if max_bytes is None else {"max_bytes": max_bytes}
        download(url, dest, md5=None, progress=False, **cap)
    assert str(err.value) == expected.format(url=url)
    assert _left(dest.parent) == ["breastmnist.npz"] and dest.read_bytes() == b"what was there"


def test_ensure_file_caps_a_mirror_that_does_not_end_at_the_files_size(
    tiny_catalog: TinyData, endless_server: str, tmp_path: Path
) -> None:
    """The most a file can be is known from the catalog (its arrays' shapes, uint8): a mirror
    streaming without end is stopped there, and a --redownload keeps the good file."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    good = dataset_file(tiny_catalog.data_dir, "dermamnist")
    shutil.copyfile(good, data_dir / "dermamnist.npz")
    info = tiny_catalog.catalog.info("dermamnist")
    cap = info.scale * (28 * 28 * 3 + 1) * 2 + (1 << 20)  # twice its uint8 arrays, and 1 MiB
    assert cap < ENDLESS_SENDS
    mirror = f"{endless_server}/close?token=s3cret"
    with pytest.raises(DownloadError) as err:
        ensure_file(tiny_catalog.catalog, "dermamnist", data_dir, mirror=mirror, redownload=True)
    assert str(err.value) == (
        f"download of dermamnist.npz from {endless_server}/close/dermamnist.npz stopped: it sent"
        f" more than the most dermamnist.npz can be ({cap} bytes); try again or check the"
        " --mirror URL"
    )
    assert _left(data_dir) == ["dermamnist.npz"]
    assert file_md5(data_dir / "dermamnist.npz") == file_md5(good)


# ------------------------------------------------------------------ what messages show


def test_messages_name_the_mirror_by_case_and_show_no_credentials(
    tiny_catalog: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """The message said "try again or use --mirror" to a user who had passed --mirror, and
    showed the mirror's password and token, which went on into the leaderboard's reason."""
    base, _ = http_server
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connection refused
    for mirror, shown in (
        (f"{base}/m?token=s3cret", f"{base}/m/dermamnist.npz"),  # HTTP 404
        (f"http://user:s3cret@127.0.0.1:{port}/m", f"http://127.0.0.1:{port}/m/dermamnist.npz"),
    ):
        with pytest.raises(DownloadError) as err:
            ensure_file(tiny_catalog.catalog, "dermamnist", tmp_path, mirror=mirror)
        message = str(err.value)
        assert message.startswith(f"could not download dermamnist.npz from {shown}: ")
        assert message.endswith("or check the --mirror URL")
        assert "s3cret" not in message and "token" not in message and "user:" not in message
    with pytest.raises(DownloadError) as err:
        download(f"{base}/x/breastmnist.npz?sig=s3cret", tmp_path / "b.npz", md5=None)
    assert "s3cret" not in str(err.value)
    assert str(err.value).endswith("or pass --mirror URL")
    assert _left(tmp_path) == ["served"]


def test_a_mirror_with_credentials_is_asked_with_them_and_never_shows_them(
    tiny_catalog: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """``http://user:password@host/m``: urllib read ``password@host`` as the host, so such a
    mirror never worked, and its error (``nonnumeric port: 's3cretPW@127.0.0.1'``) carried the
    password into the leaderboard's reason. The credentials now go into a basic-authentication
    header, and no message quotes them."""
    from conftest import AUTH_PASSWORD, AUTH_USER

    base, served = http_server
    shutil.copyfile(dataset_file(tiny_catalog.data_dir, "breastmnist"), served / "breastmnist.npz")
    port = base.rpartition(":")[2]
    mirror = f"http://{AUTH_USER}:{AUTH_PASSWORD}@127.0.0.1:{port}/auth"
    path, verified = ensure_file(tiny_catalog.catalog, "breastmnist", tmp_path, mirror=mirror)
    assert file_md5(path) == file_md5(served / "breastmnist.npz")
    with pytest.raises(DownloadError) as err:  # wrong password: refused, and not shown
        ensure_file(
            tiny_catalog.catalog,
            "dermamnist",
            tmp_path,
            mirror=f"http://{AUTH_USER}:wrongPW@127.0.0.1:{port}/auth",
        )
    assert "HTTP 401" in str(err.value) and "wrongPW" not in str(err.value)
    with pytest.raises(DownloadError) as err:  # no port: port 80, where nothing listens here
        ensure_file(
            tiny_catalog.catalog,
            "dermamnist",
            tmp_path,
            mirror=f"http://{AUTH_USER}:{AUTH_PASSWORD}@127.0.0.1/m",
        )
    message = str(err.value)
    assert AUTH_PASSWORD not in message and f"{AUTH_USER}:" not in message, message
    assert message.startswith("could not download dermamnist.npz from http://127.0.0.1/m/")


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("HTTP://Host:80/m/", False),  # spelled otherwise, nothing to withhold
        ("https://host/m", False),
        ("https://host/m?token=x", True),
        ("https://user:pw@host/m", True),
        ("https://host/my#files/", False),  # a literal '#' (sent as %23): part of the folder
        ("https://host/my#files/?token=x", True),
        ("https://u:pw@host/my#files/", True),
        ("http://[::1/m", True),  # cannot be parsed: cannot be told
    ],
)
def test_what_a_mirror_has_to_withhold(url: str, secret: bool) -> None:
    """config.json kept a mirror as ``shown_url`` spelled it whenever the strings differed, so a
    resume demanded --mirror again of ``HTTP://host/m``, which holds no secret. A mirror's '#'
    counted as a fragment, a secret, though it is sent as %23, part of the folder's path."""
    from decathlon.transfer import has_secrets

    assert has_secrets(url) is secret


def test_a_withheld_mirror_is_recorded_with_its_whole_folder() -> None:
    """A mirror with a '#' in its folder and a token was recorded cut at the '#'."""
    from decathlon.transfer import shown_mirror

    assert shown_mirror("https://host/my#files/?token=x") == "https://host/my%23files/"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_error_on_its_way_out_is_kept_when_closing_the_file_fails_too(tmp_path: Path) -> None:
    """A download's file whose last bytes could not be flushed on closing (a full disk) raised
    'cannot write' in place of the error already on its way out (a truncated or stalled
    transfer), so the user saw the close error, not the cause. /dev/full refuses the flush."""
    dest = tmp_path / "breastmnist.npz"
    with pytest.raises(DownloadError, match="was truncated"):
        with download_module._writing(Path("/dev/full"), dest) as out:
            out.write(b"x")  # buffered: flushed on closing, where /dev/full refuses it
            raise DownloadError("download of breastmnist.npz was truncated")
    with pytest.raises(DownloadError, match="cannot write breastmnist.npz"):
        with download_module._writing(Path("/dev/full"), dest) as out:
            out.write(b"x")  # nothing else on its way out: the close error is the one


def test_a_temporary_of_a_live_writer_elsewhere_is_kept(tmp_path: Path) -> None:
    """A temporary whose PID is not alive here (its writer in another PID namespace or on
    another host sharing the folder) was removed as stale mid-write; its writer's lock keeps
    it now, and once the writer is gone it is removed."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dest = tmp_path / "breastmnist.npz"
    with files.replacing(dest) as tmp:
        elsewhere = tmp.with_name(f".breastmnist.npz.{dead.pid}.1.tmp")
        os.rename(tmp, elsewhere)  # the writer's file, named by a PID of its own namespace
        assert download_module.remove_stale_temporaries(dest) == []
        assert elsewhere.exists()
        os.rename(elsewhere, tmp)
        tmp.write_bytes(b"done")
    assert dest.read_bytes() == b"done"
    left = tmp_path / f".breastmnist.npz.{dead.pid}.2.tmp"
    left.write_bytes(b"partial")  # no lock held: its writer is gone
    assert download_module.remove_stale_temporaries(dest) == [left]


def test_a_data_folder_that_is_a_file_or_a_link_loop_is_one_line(
    served_breast: tuple[str, Path], tmp_path: Path
) -> None:
    """``--data-dir`` naming a file, or a link that leads to itself, ended the run with a
    traceback (FileExistsError from making the folder) instead of saying what was wrong."""
    base, _ = served_breast
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "loop").symlink_to("loop")
    for folder, why in (("afile", "is a file, not a folder"), ("loop", "leads to no folder")):
        dest = tmp_path / folder / "breastmnist.npz"
        with pytest.raises(DownloadError) as err:
            download(f"{base}/breastmnist.npz", dest, md5=None, progress=False)
        message = str(err.value)
        assert message.startswith(f"cannot put breastmnist.npz in {tmp_path / folder}: "), message
        assert why in message and message.endswith("(--data-dir)"), message
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_mirror_that_redirects_elsewhere_never_gets_its_credentials_sent_on(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """urllib sends every header on with a redirect: a mirror ``https://user:password@host/m``
    that answered 302 to another host (a CDN, or anyone) had that host sent the password, in
    the Authorization header. A redirect within the mirror's own scheme, host and port keeps
    it (the mirror still authenticates), one to anywhere else drops it."""
    source = dataset_file(tiny_catalog.data_dir, "breastmnist").read_bytes()
    seen: list[tuple[str, str | None]] = []

    class Other(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.send_header("Content-Length", str(len(source)))
            self.end_headers()
            self.wfile.write(source)

        def log_message(self, format: str, *args: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Other)
    other_url = f"http://localhost:{other.server_address[1]}"

    class Mirror(Other):
        def do_GET(self) -> None:
            if self.path.startswith("/same/"):  # the mirror's own host: served here
                self.path = self.path.removeprefix("/same")
                super().do_GET()
                return
            seen.append((self.path, self.headers.get("Authorization")))
            where = f"/same{self.path}" if "breast" in self.path else other_url + self.path
            self.send_response(302)
            self.send_header("Location", where)
            self.send_header("Content-Length", "0")
            self.end_headers()

    mirror = ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    servers = [other, mirror]
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        base = f"http://alice:s3cret@127.0.0.1:{mirror.server_address[1]}/m"
        ensure_file(tiny_catalog.catalog, "breastmnist", tmp_path, mirror=base, progress=False)
        with pytest.raises(DownloadError):  # breastmnist's bytes: not dermamnist's MD5
            ensure_file(tiny_catalog.catalog, "dermamnist", tmp_path, mirror=base, progress=False)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    auth = "Basic YWxpY2U6czNjcmV0"  # alice:s3cret
    assert seen == [
        ("/m/breastmnist.npz", auth),
        ("/m/breastmnist.npz", auth),  # redirected to the mirror itself
        ("/m/dermamnist.npz", auth),
        ("/m/dermamnist.npz", None),  # redirected to another host
    ]


def test_a_mirror_that_sends_the_file_gzip_encoded(tiny_catalog: TinyData, tmp_path: Path) -> None:
    """A mirror whose web server or bucket sends files with Content-Encoding: gzip had its
    encoded bytes taken for the file: refused as an MD5 mismatch "(corrupt or truncated
    transfer)" whatever --redownload tried. The file is now what the body decodes to (and
    checked as any other); a body cut short is "truncated", an encoding not decoded here is
    one line saying so."""
    import gzip

    source = dataset_file(tiny_catalog.data_dir, "breastmnist").read_bytes()
    encoded = gzip.compress(source)

    class Gzipping(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            short, encoding = self.path.startswith("/short/"), "gzip"
            if self.path.startswith("/br/"):
                encoding = "br"
            body = encoded[: len(encoded) // 2] if short else encoded
            if self.path.startswith("/corrupt/"):  # a whole gzip header, then damaged data
                body = encoded[:10] + b"\xff" * 64 + encoded[74:]
            self.send_response(200)
            self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gzipping)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    catalog = tiny_catalog.catalog
    try:
        path, _ = ensure_file(catalog, "breastmnist", tmp_path, mirror=f"{base}/ok")
        assert path.read_bytes() == source
        path.unlink()
        with pytest.raises(DownloadError) as err:
            ensure_file(catalog, "breastmnist", tmp_path, mirror=f"{base}/short")
        assert "was truncated" in str(err.value)
        with pytest.raises(DownloadError) as err:
            ensure_file(catalog, "breastmnist", tmp_path, mirror=f"{base}/br")
        assert "encoded as 'br' (Content-Encoding), which is not decoded here" in str(err.value)
        with pytest.raises(DownloadError) as err:  # was zlib.error's traceback
            ensure_file(catalog, "breastmnist", tmp_path, mirror=f"{base}/corrupt")
        assert str(err.value).startswith("could not download breastmnist.npz from "), err.value
    finally:
        server.shutdown()
        server.server_close()
    assert not path.exists() and not list(tmp_path.glob(".*.tmp"))  # nothing half-written


def test_a_small_gzip_encoded_body_never_decodes_past_the_files_cap(
    http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """A few KiB of gzip decode to any size: the file's cap bounds what the body decodes to,
    not only what is received, and nothing of it is left."""
    import gzip

    base, served = http_server
    bomb = gzip.compress(bytes(8 << 20))  # 8 MiB of zeros in about 8 KiB

    class Bomb(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Bomb)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    dest = tmp_path / "d" / "breastmnist.npz"
    try:
        with pytest.raises(DownloadError) as err:
            url = f"http://127.0.0.1:{server.server_address[1]}/breastmnist.npz"
            download(url, dest, md5=None, progress=False, max_bytes=1 << 20)
    finally:
        server.shutdown()
        server.server_close()
    assert "stopped: it sent more than the most breastmnist.npz can be (1048576" in str(err.value)
    assert _left(dest.parent) == []


def test_an_html_page_answered_with_200_is_named_as_such_when_the_md5_is_checked(
    tiny_catalog: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """Without --allow-unverified an error or login page a mirror answered with 200 (typed by
    a static server as the .npz it was asked for) was refused as an MD5 mismatch "(corrupt or
    truncated transfer); try again", which no retry mends; the page is now named."""
    base, served = http_server
    (served / "dermamnist.npz").write_bytes(b"\n<!DOCTYPE html><html><body>Sign in</body></html>")
    with pytest.raises(DownloadError) as err:
        ensure_file(tiny_catalog.catalog, "dermamnist", tmp_path / "d", mirror=base)
    message = str(err.value)
    assert "(the server sent an HTML page: an error page?)" in message, message
    assert "corrupt or truncated" not in message and _left(tmp_path / "d") == []


def test_an_html_page_starting_with_a_byte_order_mark_is_named_as_such(
    tiny_catalog: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """A page saved as UTF-8 "with BOM" (as Windows editors and some frameworks write it)
    starts with EF BB BF before its <!DOCTYPE html>: it was refused as "(corrupt or truncated
    transfer); try again", which no retry mends."""
    base, served = http_server
    page = b"\xef\xbb\xbf<!DOCTYPE html><html><body>Sign in</body></html>"
    (served / "dermamnist.npz").write_bytes(page)
    with pytest.raises(DownloadError) as err:
        ensure_file(tiny_catalog.catalog, "dermamnist", tmp_path / "d", mirror=base)
    message = str(err.value)
    assert "(the server sent an HTML page: an error page?)" in message, message


def test_a_real_npz_typed_as_html_is_not_called_a_page(
    tiny_catalog: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """A server that types what it sends as text/html (here by the name it was asked for,
    as a misconfigured one does for everything) had a real archive that failed its MD5 named
    "the server sent an HTML page": its first bytes, a zip's, say it is none."""
    base, served = http_server
    shutil.copyfile(dataset_file(tiny_catalog.data_dir, "octmnist"), served / "dermamnist.html")
    md5 = tiny_catalog.catalog.info("dermamnist").md5
    with pytest.raises(DownloadError) as err:
        download(f"{base}/dermamnist.html", tmp_path / "dermamnist.npz", md5=md5, progress=False)
    message = str(err.value)
    assert "(corrupt or truncated transfer)" in message and "HTML" not in message, message


def test_a_folder_where_the_dataset_file_goes_is_one_line(
    tiny_catalog: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """A folder named breastmnist.npz in the data folder (an unzipped copy, say) was taken for
    a missing file: the whole file was downloaded, then its rename over the folder ended the
    run with an IsADirectoryError traceback."""
    base, served = http_server
    shutil.copyfile(dataset_file(tiny_catalog.data_dir, "breastmnist"), served / "breastmnist.npz")
    (tmp_path / "d" / "breastmnist.npz").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        ensure_file(tiny_catalog.catalog, "breastmnist", tmp_path / "d", mirror=base)
    assert str(err.value) == (
        f"{tmp_path / 'd' / 'breastmnist.npz'}: is a folder, not the dataset file; move it out"
        " of the way"
    )
    assert _left(tmp_path / "d") == ["breastmnist.npz"]


def test_a_download_during_a_run_draws_in_the_runs_own_display(
    tiny_catalog: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """A run downloading a file drew the download's bar as a second live display on stderr,
    over the run's own on the same terminal, and drew it under --no-progress too (the runner
    never passed progress). The run's display now gets the bar, a plain reporter none."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from decathlon.plugins import make_registry
    from decathlon.reporters import PlainReporter, RichReporter
    from decathlon.runner import RunConfig, Runner

    class Recording(Progress):
        names: list[str] = []

        def add_task(self, description: str, *args: object, **kwargs: object) -> object:
            self.names.append(description)
            return super().add_task(description, *args, **kwargs)

    base, served = http_server
    shutil.copyfile(dataset_file(tiny_catalog.data_dir, "breastmnist"), served / "breastmnist.npz")
    out = Console(file=io.StringIO())
    display = Recording(console=out)
    download(
        f"{base}/breastmnist.npz", tmp_path / "a" / "breastmnist.npz", md5=None, progress=display
    )
    assert display.names == ["breastmnist.npz"] and display.tasks == []  # removed at the end

    def config(name: str) -> RunConfig:
        return RunConfig(
            adapter="baseline",
            profile="quick",
            datasets=("breastmnist",),
            data_dir=str(tmp_path / name),
            mirror=base,
            info_path=str(tiny_catalog.info_path),
        )

    rich = RichReporter(out, progress=Recording(console=out))
    Runner(config("rich"), make_registry(), reporter=rich)._load("breastmnist")
    assert Recording.names == ["breastmnist.npz", "breastmnist.npz"]
    assert PlainReporter(out).download_progress is False


def test_a_mirror_path_with_spaces_or_accents_is_percent_encoded(
    tiny_catalog: TinyData, http_server: tuple[str, Path], tmp_path: Path
) -> None:
    """``--mirror "http://host/my mirror/données"`` failed on every file: http.client refuses a
    space in the request line ("URL can't contain control characters") and cannot send other
    than ASCII. The path is now percent-encoded as a browser would; one already encoded is
    sent as it is."""
    base, served = http_server
    folder = served / "my mirror" / "données"
    folder.mkdir(parents=True)
    shutil.copyfile(dataset_file(tiny_catalog.data_dir, "breastmnist"), folder / "breastmnist.npz")
    for mirror in (f"{base}/my mirror/données", f"{base}/my%20mirror/donn%C3%A9es/"):
        data_dir = tmp_path / "d"
        path, _ = ensure_file(tiny_catalog.catalog, "breastmnist", data_dir, mirror=mirror)
        assert file_md5(path) == file_md5(folder / "breastmnist.npz")
        shutil.rmtree(data_dir)
    # A URL an info.json names (DECATHLON_INFO pointing at a server of one's own) alike
    url = f"{base}/my mirror/données/breastmnist.npz"
    download(url, tmp_path / "e" / "breastmnist.npz", md5=None, progress=False)
    assert file_md5(tmp_path / "e" / "breastmnist.npz") == file_md5(folder / "breastmnist.npz")


# ------------------------------------------------------------ a transfer that breaks off


def _cutting_server(
    data: bytes,
    cut: int,
    honour_range: bool,
    *,
    always: bool = False,
    short: int = 0,
    size: int | None = None,
) -> tuple[ThreadingHTTPServer, list]:
    """A real HTTP server on 127.0.0.1 that sends ``data`` (and says ``Accept-Ranges: bytes``)
    but closes the connection after ``cut`` bytes the first time; later requests get it whole,
    or, with ``honour_range``, the bytes a ``Range: bytes=N-`` asks for (206); ``always``: each
    of those breaks off after ``cut`` bytes too. The list it returns with the server gets each
    request's Range header ("" for none)."""
    asked: list[str] = []

    class Cutting(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            wanted = self.headers.get("Range") or ""
            asked.append(wanted)
            if len(asked) == 1:
                self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            start = int(wanted.removeprefix("bytes=").removesuffix("-")) if wanted else 0
            if honour_range and start:
                self.send_response(206)
                whole = len(data) if size is None else size
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{whole}")
                end = len(data) - short
            else:
                self.send_response(200)
                start, end = 0, len(data)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            self.wfile.write(data[start : start + cut] if always else data[start:end])
            self.wfile.flush()
            self.close_connection = always

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Cutting)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, asked


@pytest.mark.parametrize("honour_range", [True, False], ids=["range", "ignores-range"])
def test_a_transfer_that_breaks_off_is_taken_up_where_it_stopped(
    tmp_path: Path, honour_range: bool
) -> None:
    """A connection that broke mid-way failed the download ("was truncated"), and the next try
    started from byte 0 again. From a server that takes byte ranges it now goes on from where
    it stopped (Range: bytes=K-), appending to the temporary; one that answers that request
    with the whole file gets the file started over. The MD5 covers the whole file either way."""
    import hashlib

    data = os.urandom(300_000)
    cut = 123_457
    server, asked = _cutting_server(data, cut, honour_range)
    dest = tmp_path / "d" / "breastmnist.npz"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/breastmnist.npz"
        download(url, dest, md5=hashlib.md5(data).hexdigest(), progress=False, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert dest.read_bytes() == data
    assert asked == ["", f"bytes={cut}-"]
    assert _left(dest.parent) == ["breastmnist.npz"]


@pytest.mark.parametrize(
    ("short", "size", "said"),
    [
        (1000, None, "was truncated: received 299000 of 300000 bytes"),
        (0, 400_000, "with the bytes of a file of another size"),
    ],
    ids=["content-length-short", "another-size"],
)
def test_a_resume_answered_with_fewer_bytes_than_the_file_is_refused(
    tmp_path: Path, short: int, size: int | None, said: str
) -> None:
    """A 206 whose Content-Length fell short of its Content-Range ended "whole" and, with no
    MD5 to check, the file was kept short; one naming a file of another size was appended to
    the first file's bytes. Both now fail in one line and leave no temporary."""
    data = os.urandom(300_000)
    server, asked = _cutting_server(data, 123_457, True, short=short, size=size)
    dest = tmp_path / "d" / "breastmnist.npz"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/breastmnist.npz"
        with pytest.raises(DownloadError, match=said):
            download(url, dest, md5=None, progress=False, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["", "bytes=123457-"]
    assert _left(dest.parent) == []


def test_the_bar_counts_from_0_again_when_the_file_is_sent_whole_again(tmp_path: Path) -> None:
    """A server that answered the Range request with the whole file (200) had the file started
    over, but the progress bar went on from where it was: past the file's size."""
    from rich.progress import Progress, TaskID

    class Kept(Progress):
        """A rich Progress (never drawn) that keeps what each bar counted when it goes."""

        counted: list[float] = []

        def remove_task(self, task_id: TaskID) -> None:
            self.counted.append(self._tasks[task_id].completed)
            super().remove_task(task_id)

    data = os.urandom(300_000)
    server, asked = _cutting_server(data, 123_457, False)
    dest = tmp_path / "d" / "breastmnist.npz"
    shown = Kept()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/breastmnist.npz"
        download(url, dest, md5=None, progress=shown, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["", "bytes=123457-"] and dest.read_bytes() == data
    assert shown.counted == [len(data)]


def test_a_transfer_that_breaks_off_every_time_is_truncated_after_the_last_resume(
    tmp_path: Path,
) -> None:
    """A server that breaks every transfer off is taken up RESUMES times, each from where the
    last stopped, then the download fails as truncated, saying how much came, and leaves no
    temporary behind."""
    from decathlon.download import RESUMES

    data = os.urandom(300_000)
    cut = 10_000
    server, asked = _cutting_server(data, cut, True, always=True)
    dest = tmp_path / "d" / "breastmnist.npz"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/breastmnist.npz"
        with pytest.raises(DownloadError) as err:
            download(url, dest, md5=None, progress=False, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert RESUMES == 5
    assert asked == ["", *(f"bytes={cut * k}-" for k in range(1, RESUMES + 1))]
    received = cut * (RESUMES + 1)
    assert f"was truncated: received {received} " in str(err.value), str(err.value)
    assert "300000" in str(err.value)
    assert _left(dest.parent) == []


@pytest.mark.parametrize("sends", [b"", b"HTTP/1.1 200 OK\r\n"], ids=["nothing", "a status line"])
def test_a_server_that_never_answers_is_given_up_by_the_stall_rule(
    tmp_path: Path, sends: bytes
) -> None:
    """The stall rule covered the body only: a server that accepted the connection and never
    sent its headers (or sent them a byte now and then) held the download for the socket
    timeout per read, for ever with a trickle. Connecting and the headers now have the stall
    window in all, and the message says so."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            accepted.append(conn)
            conn.sendall(sends)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/breastmnist.npz"
    dest = tmp_path / "d" / "breastmnist.npz"
    try:
        with pytest.raises(DownloadError) as err:
            download(url, dest, md5=None, progress=False, timeout=10, stall_seconds=0.5)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert str(err.value) == (
        f"download of breastmnist.npz from {url} stalled: no answer within 0.5 s (the stall"
        " timeout); try again or use --mirror URL"
    )
    assert _left(dest.parent) == []


def test_a_mirror_that_sends_the_file_deflate_encoded(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """``Content-Encoding: deflate`` was refused ("which is not decoded here") while gzip was
    decoded. Both of its forms are now decoded, as browsers do: the zlib stream the standard
    names and the raw deflate data many servers send; a body cut short is "truncated", and
    the file's cap bounds what a small body decodes to. Raw deflate data whose first two bytes
    happen to read as a zlib header (here 78 9C, a stored block of 156 bytes) failed as damaged;
    it is now read again as raw data, as browsers do."""
    import zlib

    source = dataset_file(tiny_catalog.data_dir, "breastmnist").read_bytes()
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    rest = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    # a stored, not final block (first byte 0x78: BTYPE 00 and padding bits), LEN 156 = 0x009C
    lookalike = b"\x78\x9c\x00\x63\xff" + source[:156] + rest.compress(source[156:]) + rest.flush()
    assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(lookalike) == source
    with pytest.raises(zlib.error):  # read as a zlib stream, it is damaged
        zlib.decompressobj().decompress(lookalike)
    bodies = {
        "zlib": zlib.compress(source),
        "raw": raw.compress(source) + raw.flush(),
        "lookalike": lookalike,
        "short": zlib.compress(source)[:-200],
        "bomb": zlib.compress(bytes(8 << 20)),
    }

    class Deflating(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies[self.path.split("/")[1]]
            self.send_response(200)
            self.send_header("Content-Encoding", "deflate")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Deflating)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    catalog = tiny_catalog.catalog
    try:
        for form in ("zlib", "raw", "lookalike"):
            path, _ = ensure_file(catalog, "breastmnist", tmp_path, mirror=f"{base}/{form}")
            assert path.read_bytes() == source, form
            path.unlink()
        with pytest.raises(DownloadError) as err:
            ensure_file(catalog, "breastmnist", tmp_path, mirror=f"{base}/short")
        assert "was truncated" in str(err.value)
        dest = tmp_path / "b" / "breastmnist.npz"
        with pytest.raises(DownloadError) as err:
            download(
                f"{base}/bomb/breastmnist.npz", dest, md5=None, progress=False, max_bytes=1 << 20
            )
        assert "stopped: it sent more than the most breastmnist.npz can be (1048576" in str(
            err.value
        )
    finally:
        server.shutdown()
        server.server_close()
    assert not path.exists() and not list(tmp_path.rglob(".*.tmp"))  # nothing half-written


def test_a_literal_percent_or_hash_in_a_mirror_folder_is_encoded_once(
    tiny_catalog: TinyData, tmp_path: Path
) -> None:
    """A ``%`` that starts no escape (``/100%/``) went out as it was, a request line a strict
    server refuses (400), and a ``#`` cut the mirror there: ``/my#files/`` asked ``/my/NAME``.
    Now they go out as ``%25`` and ``%23``; an escape already there (``%20``) is kept once."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    served = tmp_path / "served"
    asked: list[str] = []

    class Recording(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    for folder in ("100%", "my#files", "my files"):
        (served / folder).mkdir(parents=True)
        shutil.copyfile(
            dataset_file(tiny_catalog.data_dir, "breastmnist"), served / folder / "breastmnist.npz"
        )
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Recording, directory=str(served)))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for mirror in (f"{base}/100%/", f"{base}/my#files", f"{base}/my%20files/"):
            data_dir = tmp_path / "d"
            ensure_file(tiny_catalog.catalog, "breastmnist", data_dir, mirror=mirror)
            shutil.rmtree(data_dir)
    finally:
        server.shutdown()
        server.server_close()
    assert asked == [
        "/100%25/breastmnist.npz",
        "/my%23files/breastmnist.npz",
        "/my%20files/breastmnist.npz",
    ]
