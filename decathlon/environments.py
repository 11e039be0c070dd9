"""Adapter environments: one virtual environment per adapter, built once from a lock, cached.

Frameworks the decathlon drives cannot share an environment (auto-sklearn 0.15 needs numpy<1.24
on Python 3.9; AutoKeras 3 needs numpy 2), so, as in the OpenML AutoML Benchmark, each adapter
that declares an :class:`~decathlon.contract.Environment` runs in its own venv under
``$DECATHLON_HOME/envs/KEY``.

* **Interpreter**: the declared version is looked up as an explicit setting (``--python``,
  ``$DECATHLON_PYTHON_3_9``), the harness's own Python, ``python3.9`` on the PATH (every entry,
  so a pyenv shim that does not run is passed over), pyenv's versions folder, uv's managed
  Pythons, and, unless downloads are off, uv fetches a managed CPython of that version.
* **Lock**: ``locks/<name>-py<version>.txt`` beside the adapter's module (the built-in ones in
  ``adapters/locks/``), compiled by ``python -m decathlon lock`` with ``uv pip compile`` for the
  declared Python on Linux x86-64 and installed exactly (``uv pip sync``). KEY is the hash of
  the lock file, so changing the lock builds a new environment. Without a usable lock (none
  shipped, made for another specification, or not a Linux x86-64 machine) the requirements are
  resolved at setup, KEY is a hash of the specification, and the resolution is recorded.
* **Installer**: uv (a dependency of the harness), with pip's configuration carried over
  (:mod:`decathlon.pipconfig`); ``DECATHLON_INSTALLER=pip`` builds with pip instead.
* **Checks**: a new environment is marked ready only once its interpreter imports what the
  worker needs and the adapter's module; it stays ready while its interpreter and the packages'
  top-level folders recorded in the marker are there (:func:`damage`).

Longer than 600 lines: finding an interpreter, compiling and keying a lock, building under a
file lock and recording what was built are one concept, an adapter's environment; each step
needs the others' names (the key, the marker, the interpreter), and pip's configuration, the one
part that stands alone, is already its own module.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

from decathlon import files, pipconfig
from decathlon.contract import Adapter, Environment
from decathlon.errors import EnvironmentBuildError

log = logging.getLogger(__name__)

#: What the worker itself needs inside every adapter environment.
WORKER_REQUIREMENTS = ("numpy", "pluggy")
_MARKER = "decathlon-env.json"
#: The platform locks are compiled for (uv's name); glibc 2.28 or later installs them.
LOCK_PLATFORM = "x86_64-manylinux_2_28"
_LOCK_GLIBC = (2, 28)
INSTALLERS = ("uv", "pip")
_OFF = ("0", "no", "off", "false", "never")
#: Seconds uv may take to fetch a managed CPython, and to say where its managed ones are.
FETCH_TIMEOUT = 1800.0
FIND_TIMEOUT = 120.0


def home() -> Path:
    """The harness's cache: ``$DECATHLON_HOME``, else ``~/.cache/decathlon``."""
    return Path(os.environ.get("DECATHLON_HOME") or Path.home() / ".cache" / "decathlon")


def spec_key(env: Environment) -> str:
    """A hash of the environment's specification (its key when no lock is used)."""
    payload = json.dumps(
        {
            "python": env.python,
            "requirements": list(env.requirements),
            "pip_args": list(env.pip_args),
            "worker": list(WORKER_REQUIREMENTS),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def requirements_of(env: Environment) -> list[str]:
    """Everything installed: the worker's needs, then the adapter's requirements, each once
    (an adapter may require ``pluggy`` itself)."""
    return list(dict.fromkeys([*WORKER_REQUIREMENTS, *env.requirements]))


# ------------------------------------------------------------------------------------ locks


@dataclass(frozen=True)
class Lock:
    """A lock file: its path, the hash of its bytes, the specification it was compiled for."""

    path: Path
    sha256: str
    spec: str | None

    @property
    def key(self) -> str:
        return self.sha256[:12]


def lock_name(adapter: Adapter) -> str:
    """The lock's file name: ``<environment name>-py<version>.txt``."""
    assert adapter.environment is not None
    env = adapter.environment
    return f"{env.name or adapter.name}-py{env.python}.txt"


def lock_dir(adapter: Adapter) -> Path:
    """Where the adapter's lock lives: ``$DECATHLON_LOCK_DIR`` when set, else the ``locks``
    folder of the package that holds the adapter's module (the built-ins': ``adapters/locks``)."""
    override = os.environ.get("DECATHLON_LOCK_DIR")
    if override:
        return Path(override)
    package = adapter.run.split(":")[0].split(".")[0]
    try:
        folder = resources.files(package) / "locks"
    except (ModuleNotFoundError, TypeError):
        # a module that is not importable here, or a plain module outside any package
        return home() / "locks"
    return folder if isinstance(folder, Path) else home() / "locks"


def lock_path(adapter: Adapter) -> Path:
    return lock_dir(adapter) / lock_name(adapter)


def read_lock(path: Path) -> Lock | None:
    """The lock at ``path``, or None when there is none."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    spec = None
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("# spec: "):
            spec = line.removeprefix("# spec: ").strip()
            break
    return Lock(path=path, sha256=hashlib.sha256(data).hexdigest(), spec=spec)


def lock_platform_ok() -> bool:
    """Whether this machine installs the Linux x86-64 (manylinux 2.28) locks."""
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    libc, version = platform.libc_ver()
    try:
        numbers = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        return False
    return libc == "glibc" and numbers >= _LOCK_GLIBC


def usable_lock(adapter: Adapter) -> tuple[Lock | None, str]:
    """The lock the environment is built from, or None and why none is used."""
    assert adapter.environment is not None
    path = lock_path(adapter)
    lock = read_lock(path)
    if lock is None:
        return None, f"no lock at {path}"
    if lock.spec != spec_key(adapter.environment):
        return None, (
            f"{path.name} was compiled for another specification (refresh it with"
            f" `python -m decathlon lock {adapter.name}`)"
        )
    if not lock_platform_ok():
        return None, f"{path.name} is for Linux x86-64 (glibc 2.28 or later), not this machine"
    return lock, ""


def cache_key(adapter: Adapter) -> str:
    """The environment's cache key: its lock's hash, else its specification's hash."""
    assert adapter.environment is not None
    lock, _ = usable_lock(adapter)
    return lock.key if lock else spec_key(adapter.environment)


def env_dir(adapter: Adapter, root: Path | None = None) -> Path:
    assert adapter.environment is not None
    return (root or home()) / "envs" / cache_key(adapter)


def _env_python(directory: Path) -> Path:
    return directory / "bin" / "python"


def _read_marker(directory: Path) -> dict[str, Any] | None:
    """The environment's ready marker, or None where there is none or it is not one that
    :func:`build` or :func:`adopt` wrote (then the environment counts as not built)."""
    try:
        data = json.loads((directory / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != directory.name:
        return None
    if not isinstance(data.get("installer"), str):
        return None
    lock = data.get("lock")
    if lock is not None and not (
        isinstance(lock, dict) and all(isinstance(lock.get(k), str) for k in ("file", "sha256"))
    ):
        return None
    if data["installer"] == "adopted" and not isinstance(data.get("adopted_from"), str):
        return None
    for name in ("packages", "top_level"):
        value = data.get(name, [])
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return None
    return data


def _top_level(directory: Path) -> list[str]:
    """What the installed packages' RECORD files name at the top of site-packages (each
    package's folders and modules, its ``.dist-info``), relative to the venv ``directory``."""
    found: set[str] = set()
    for record in directory.glob("lib/python*/site-packages/*.dist-info/RECORD"):
        try:
            lines = record.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = [record.parent.name]
        heads = {  # fast: a RECORD of TensorFlow has tens of thousands of lines
            (next(csv.reader([line]))[0] if line.startswith('"') else line).split("/", 1)[0]
            for line in lines
            if line
        }
        site = record.parent.parent.relative_to(directory)
        found.update(
            str(site / head.split(",", 1)[0])
            for head in heads
            if head and not head.startswith(("..", "/"))
        )
    return sorted(found)


def damage(adapter: Adapter, root: Path | None = None) -> str | None:
    """Why the adapter's environment cannot be used as it is, or None when it can (or the
    adapter runs in the harness's): ``"not built"``, or what of it is gone (its interpreter, a
    package's folder). Cheap: a marker and a few hundred file look-ups, no interpreter run."""
    if adapter.environment is None:
        return None
    directory = env_dir(adapter, root)
    marker = _read_marker(directory)
    if marker is None:
        return "not built"
    if marker["installer"] == "adopted":
        needed = [_env_python(directory), Path(marker["adopted_from"])]
    else:  # markers written before top_level was recorded: read the RECORD files now
        top = marker["top_level"] if "top_level" in marker else _top_level(directory)
        if not top:
            return f"no package is installed in {directory}"
        needed = [_env_python(directory), *(directory / t for t in top)]
    missing = [p for p in needed if not p.exists()]  # a venv's python: its link's target too
    if not missing:
        return None
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return f"{missing[0]}{more} is gone"


def is_ready(adapter: Adapter, root: Path | None = None) -> bool:
    """True when the adapter runs in the harness's environment or its own is built and intact
    (:func:`damage`)."""
    return damage(adapter, root) is None


def interpreter(adapter: Adapter, root: Path | None = None) -> Path:
    """The Python that runs the adapter's worker (its environment must be ready)."""
    if adapter.environment is None:
        return Path(sys.executable)
    return _env_python(env_dir(adapter, root))


# ---------------------------------------------------------------------------- installers


def uv_binary() -> str | None:
    """The uv executable that came with the harness (the ``uv`` package), else the PATH's."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def choose_installer(requested: str | None = None) -> str:
    """``uv`` or ``pip``: ``requested``, else ``$DECATHLON_INSTALLER``, else uv when present."""
    name = (requested or os.environ.get("DECATHLON_INSTALLER") or "uv").strip().lower()
    if name not in INSTALLERS:
        raise EnvironmentBuildError(
            f"DECATHLON_INSTALLER={name!r}: choose {' or '.join(INSTALLERS)}"
        )
    if name == "uv" and uv_binary() is None:
        log.warning("uv not found; building adapter environments with pip")
        return "pip"
    return name


def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = out.stdout.split()
    return " ".join(words[:2]) if out.returncode == 0 and len(words) >= 2 else "unknown"


#: pip options in ``Environment.pip_args`` and what uv calls them (None: the same).
_UV_EQUIVALENTS: dict[str, tuple[str, ...] | None] = {
    "--no-cache-dir": ("--no-cache",),
    "--pre": ("--prerelease", "allow"),
    "--no-build-isolation": None,
    "--no-index": None,
}
_UV_WITH_VALUE = (
    "--only-binary",
    "--no-binary",
    "--index-url",
    "--extra-index-url",
    "--find-links",
)


def uv_pip_args(pip_args: Sequence[str], adapter_name: str) -> list[str]:
    """An environment's ``pip_args`` as uv options; one line naming any that uv lacks."""
    out: list[str] = []
    args = list(pip_args)
    while args:
        arg = args.pop(0)
        name = arg.split("=", 1)[0]
        if name in _UV_WITH_VALUE:
            out.append(arg)
            if "=" not in arg and args:
                out.append(args.pop(0))
        elif name in _UV_EQUIVALENTS:
            out += list(_UV_EQUIVALENTS[name] or (arg,))
        else:
            raise EnvironmentBuildError(
                f"adapter '{adapter_name}': pip option {arg} has no uv equivalent here;"
                " build with DECATHLON_INSTALLER=pip"
            )
    return out


# --------------------------------------------------------------------------- interpreters


def _ask(python: str | Path, code: str) -> str | None:
    """What ``python -c CODE`` prints, or None where it cannot run or says nothing."""
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _version_of(python: str | Path) -> str | None:
    return _ask(python, "import sys; print('%d.%d' % sys.version_info[:2])")


def downloads_allowed() -> bool:
    """Whether uv may fetch a managed CPython: not when ``$DECATHLON_PYTHON_DOWNLOADS`` or
    ``$UV_PYTHON_DOWNLOADS`` say never, nor when ``$UV_OFFLINE`` is set."""
    ours = os.environ.get("DECATHLON_PYTHON_DOWNLOADS", "").strip().lower()
    theirs = os.environ.get("UV_PYTHON_DOWNLOADS", "").strip().lower()
    offline = os.environ.get("UV_OFFLINE", "").strip().lower() not in ("", *_OFF)
    return ours not in _OFF and theirs not in ("never", "manual") and not offline


def _uv_managed(version: str, install: bool, say: Callable[[str], None]) -> tuple[Path | None, str]:
    """A uv-managed CPython of ``version`` (fetched first when ``install``), and why not."""
    uv = uv_binary()
    if uv is None:
        return None, "uv is not installed"
    try:
        if install:
            say(f"no Python {version} on this machine: uv is fetching a managed CPython {version}")
            fetched = subprocess.run(
                [uv, "python", "install", version],
                capture_output=True,
                text=True,
                timeout=FETCH_TIMEOUT,
            )
            if fetched.returncode != 0:
                lines = [x.strip() for x in fetched.stderr.splitlines() if x.strip()]
                last = lines[-1][:200] if lines else "no output"
                return None, f"uv could not fetch one ({last})"
        found = subprocess.run(
            [uv, "python", "find", "--managed-python", "--no-python-downloads", version],
            capture_output=True,
            text=True,
            timeout=FIND_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        return None, f"uv python {exc.cmd[2]} did not end in {exc.timeout:g} s"
    except OSError as exc:
        return None, f"uv does not run ({exc.strerror or exc})"
    path = found.stdout.strip()
    if found.returncode == 0 and path and _version_of(path) == version:
        return Path(path), ""
    return None, "uv manages none"


def find_python(
    version: str,
    explicit: str | Path | None = None,
    *,
    downloads: bool | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Path:
    """An interpreter of ``version`` ("3.9").

    In order: ``explicit`` or ``$DECATHLON_PYTHON_3_9`` (for 3.9), which must be that version;
    the harness's own Python; ``python3.9`` in each folder of the PATH (a pyenv shim that does
    not run, because that version is not selected, is passed over); pyenv's versions folder
    (``$PYENV_ROOT/versions/3.9.*``, newest first); uv's managed Pythons; and a managed CPython
    that uv fetches, when ``downloads`` (default: :func:`downloads_allowed`) allows.
    """
    say = on_step or (lambda message: log.info(message))
    variable = "DECATHLON_PYTHON_" + version.replace(".", "_")
    chosen = explicit or os.environ.get(variable)
    if chosen:
        found = _version_of(chosen)
        if found != version:
            what = f"runs Python {found}" if found else "does not run"
            raise EnvironmentBuildError(
                f"{chosen} (from {'setup --python' if explicit else '$' + variable}) {what};"
                f" need {version}"
            )
        return Path(chosen)
    candidates: list[Path] = []
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        candidates.append(Path(sys.executable))
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder:
            candidates.append(Path(folder) / f"python{version}")
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    versions = sorted(
        (pyenv_root / "versions").glob(f"{version}.*"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.name.split(".")],
        reverse=True,
    )
    candidates += [v / "bin" / f"python{version}" for v in versions]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            if _version_of(candidate) == version:
                return candidate
    allowed = downloads_allowed() if downloads is None else downloads
    managed, why = _uv_managed(version, install=False, say=say)
    if managed is None and allowed:
        managed, why = _uv_managed(version, install=True, say=say)
    if managed is not None:
        return managed
    looked = (
        f"looked at ${variable}, python{version} on the PATH, pyenv's versions in"
        f" {pyenv_root / 'versions'} and uv's managed Pythons"
    )
    fetch = why if allowed else "fetching is off (DECATHLON_PYTHON_DOWNLOADS=never)"
    raise EnvironmentBuildError(
        f"no Python {version} found ({looked}; {fetch}); install one (uv python install"
        f" {version}, pyenv install {version}, conda) and set {variable}=/path/to/python{version}"
        " or pass it to `python -m decathlon setup --python PATH`"
    )


# ------------------------------------------------------------------------------- building


def build(
    adapter: Adapter,
    *,
    root: Path | None = None,
    python: str | Path | None = None,
    force: bool = False,
    installer: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Path:
    """Build the adapter's environment if it is not ready; return its interpreter.

    Safe to call from several processes at once (a file lock serialises builds); a build that
    fails or is killed leaves no ready marker, so the next call starts over.
    """
    env = adapter.environment
    if env is None:
        return Path(sys.executable)
    directory = env_dir(adapter, root)
    why = files.why_not_writable(directory.parent)
    if why and not force and damage(adapter, root) is None:
        return _env_python(directory)  # built, in a cache this user cannot write: used as it is
    if why:
        raise _unwritable(adapter, directory.parent, why)
    say = on_step or (lambda message: log.info(message))

    def busy() -> None:
        say(
            f"the environment of '{adapter.name}' is being built by another setup or run"
            " (or by the installer of one that was killed): waiting for it to end"
        )

    with _build_lock(directory, busy) as lock_fd:
        problem = damage(adapter, root)
        if problem is None and not force:
            return _env_python(directory)
        if problem not in (None, "not built"):
            say(f"the environment of '{adapter.name}' is damaged ({problem}): building it again")
        lock, why_not = usable_lock(adapter)
        tool = choose_installer(installer)
        base = find_python(env.python, python, on_step=say)
        if directory.exists():
            try:
                shutil.rmtree(directory)
            except OSError as exc:
                raise EnvironmentBuildError(
                    f"cannot remove the unfinished environment {directory}"
                    f" ({exc.strerror or exc}); delete it and run setup again"
                ) from None
        source = f"lock {lock.path.name}" if lock else f"its requirements ({why_not})"
        say(f"building the environment of '{adapter.name}' in {directory} (Python {env.python})")
        started = time.monotonic()
        log_path = directory.parent / f"{directory.name}.build.log"
        with open(log_path, "w") as build_log:
            steps = _Steps(adapter, build_log, log_path, lock_fd)
            if tool == "uv":
                version, packages = _build_with_uv(steps, env, base, directory, lock, adapter.name)
            else:
                version, packages = _build_with_pip(steps, env, base, directory, lock)
            _probe(steps, adapter, directory, lock)
        seconds = round(time.monotonic() - started, 1)
        marker = {
            "adapter": adapter.name,
            "python": env.python,
            "python_version": _full_version(_env_python(directory)),
            "base_interpreter": str(base),
            "requirements": list(env.requirements),
            "pip_args": list(env.pip_args),
            "installer": version,
            "key": directory.name,
            "lock": {"file": lock.path.name, "sha256": lock.sha256} if lock else None,
            "resolved_at_setup": None if lock else why_not,
            "packages": packages,
            "top_level": _top_level(directory),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": seconds,
        }
        files.write_text(directory / _MARKER, files.json_text(marker, indent=2))
        say(f"environment of '{adapter.name}' built by {version} from {source} in {seconds:.0f} s")
        return _env_python(directory)


@contextlib.contextmanager
def _build_lock(directory: Path, busy: Callable[[], None]) -> Iterator[int]:
    """Hold the build lock of the environment in ``directory`` (``.<name>.lock`` beside it) and
    yield its descriptor. When another process holds it, ``busy()`` is called first: it says so,
    and this then waits for the lock, or it raises."""
    with open(directory.parent / f".{directory.name}.lock", "w") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy()
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield lock_file.fileno()


def _unwritable(adapter: Adapter, folder: Path, why: str) -> EnvironmentBuildError:
    return EnvironmentBuildError(
        f"cannot write the environment of '{adapter.name}' into {folder} ({why}); set"
        " DECATHLON_HOME to a folder you can write"
    )


class _Steps:
    """Runs build commands into the build log; a failure is one line naming the log."""

    def __init__(self, adapter: Adapter, build_log: IO[str], log_path: Path, lock_fd: int) -> None:
        self.adapter, self.build_log, self.log_path = adapter, build_log, log_path
        # Each installer holds the build's file lock too: when setup is killed (SIGKILL, the
        # OOM killer), its installer goes on writing into the environment, and the next build
        # must wait for it rather than remove the folder under it. Through _HOLDER: a daemon
        # the installer leaves (a compiler server) must not hold it for ever.
        self.lock_fd = lock_fd

    def note(self, text: str) -> None:
        self.build_log.write(f"# {text}\n")
        self.build_log.flush()

    def run(self, cmd: list[str], environ: dict[str, str] | None = None) -> None:
        self.build_log.write("$ " + " ".join(cmd) + "\n")
        self.build_log.flush()
        returncode, _ = self._holding(cmd, environ, stdout=self.build_log, stderr=subprocess.STDOUT)
        if returncode != 0:
            self.build_log.flush()
            text = self.log_path.read_text(errors="replace")
            tail = [line for line in text.splitlines() if line.strip()]
            last = tail[-1].strip() if tail else ""
            program = cmd[2] if cmd[1] == "-m" else Path(cmd[0]).name
            raise EnvironmentBuildError(
                f"building the environment of '{self.adapter.name}' failed ({program} exited"
                f" {returncode}): {last[:200]}; full log: {self.log_path}"
            )

    def output(self, cmd: list[str], environ: dict[str, str] | None = None) -> str:
        returncode, out = self._holding(
            cmd, environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        return out if returncode == 0 else ""

    def _holding(
        self, cmd: list[str], environ: dict[str, str] | None, **streams: Any
    ) -> tuple[int, str]:
        """Run ``cmd`` under :data:`_HOLDER`, which alone gets the lock; its exit status and
        its output where ``streams`` pipe it. Interrupted, the installer is killed, as before."""
        holder = [sys.executable, "-I", "-c", _HOLDER, *cmd]
        with subprocess.Popen(holder, env=environ, pass_fds=(self.lock_fd,), **streams) as process:
            try:
                out, _ = process.communicate()
            except BaseException:
                process.terminate()  # the holder kills the installer, then ends
                process.wait()
                raise
        return process.returncode, out or ""


#: Runs an installer and waits for it, holding the build lock it was given; the installer gets
#: no copy (close_fds), so neither does what it leaves running. SIGTERM kills the installer.
_HOLDER = """
import signal, subprocess, sys
installer = subprocess.Popen(sys.argv[1:])
signal.signal(signal.SIGINT, lambda number, _: installer.send_signal(number))
signal.signal(signal.SIGTERM, lambda number, _: installer.kill())
code = installer.wait()
sys.exit(code if code >= 0 else 128 - code)
"""


def _requirement_names(requirements: Iterable[str]) -> list[str]:
    """The normalized distribution names of plain requirements (``Flaml[automl]==2.7`` ->
    ``flaml``); requirements with an environment marker, URLs and paths are left out."""
    names = []
    for requirement in requirements:
        found = re.match(
            r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([<>=!~@]|$)", requirement
        )
        if found and ";" not in requirement:
            names.append(re.sub(r"[-_.]+", "-", found[1]).lower())
    return names


def _probe(steps: _Steps, adapter: Adapter, directory: Path, lock: Lock | None) -> None:
    """Check the new environment for real before it is marked ready: every requirement is
    installed, and its interpreter imports what the worker imports (numpy, pluggy) and the
    adapter's module, mounted as the worker mounts it."""
    from decathlon import launcher  # launcher -> rundir -> datasets: kept out of list's imports

    assert adapter.environment is not None
    names = _requirement_names(requirements_of(adapter.environment))
    module = adapter.run.partition(":")[0]
    code = (
        "import importlib, importlib.metadata as m, re, sys\n"
        "have = {re.sub(r'[-_.]+', '-', d.metadata['Name'] or '').lower()"
        " for d in m.distributions()}\n"
        f"missing = [n for n in {names!r} if n not in have]\n"
        "if missing: sys.exit('not installed: ' + ', '.join(missing))\n"
        f"for name in {list(WORKER_REQUIREMENTS)!r}: importlib.import_module(name)\n"
    ) + launcher.import_check_code(adapter, module)
    python = str(_env_python(directory))
    steps.note(f"checking that {python} imports numpy, pluggy and {module}")
    # In a process of its own, sealed as a task is: the adapter's module runs its top-level code
    # here, and must not find the data (nor leave it where its tasks would read it).
    probe_log = directory.parent / f".{directory.name}.probe.log"
    passed, last = launcher.probe(adapter, python, code, timeout=600, log_path=probe_log)
    steps.build_log.write(files.tail_of(probe_log, 2**20))
    steps.build_log.flush()
    probe_log.unlink(missing_ok=True)
    if not passed:
        source = (
            f"is the lock {lock.path} complete? `python -m decathlon lock {adapter.name}`"
            " compiles it again"
            if lock
            else "see the build log"
        )
        raise EnvironmentBuildError(
            f"the environment of '{adapter.name}' was built in {directory} but does not work:"
            f" {last[:200]} ({source}); full log: {steps.log_path}"
        )


def _build_with_uv(
    steps: _Steps,
    env: Environment,
    base: Path,
    directory: Path,
    lock: Lock | None,
    name: str,
) -> tuple[str, list[str]]:
    uv = uv_binary()
    assert uv is not None
    settings = pipconfig.read()
    steps.note(settings.describe())
    environ = pipconfig.uv_environ(settings)
    carried = pipconfig.uv_args(settings) + uv_pip_args(env.pip_args, name)
    # Compiled to bytecode at install, as pip does: otherwise the first imports of every
    # process (auto-sklearn starts one per model) compile the frameworks again and again.
    target = ["--python", str(_env_python(directory)), "--compile-bytecode"]
    steps.run([uv, "venv", "--quiet", "--python", str(base), str(directory)], environ)
    if lock:
        steps.run([uv, "pip", "sync", *target, *carried, str(lock.path)], environ)
    else:
        steps.run([uv, "pip", "install", *target, *carried, *requirements_of(env)], environ)
    frozen = steps.output([uv, "pip", "freeze", "--python", str(_env_python(directory))], environ)
    return _tool_version([uv, "--version"]), frozen.split()


def _build_with_pip(
    steps: _Steps, env: Environment, base: Path, directory: Path, lock: Lock | None
) -> tuple[str, list[str]]:
    steps.run([str(base), "-m", "venv", str(directory)])
    pip = [str(_env_python(directory)), "-m", "pip"]
    install = [*pip, "install", "--disable-pip-version-check"]
    steps.run([*install, "--upgrade", "pip"])
    if lock:  # a fresh venv and every pin with --no-deps: exactly the lock's packages
        # --ignore-requires-python: uv ignores upper bounds of Requires-Python when it compiles
        # a lock (backports-strenum 1.3.1, "<3.11", is in automl_vision's Python 3.11 lock), so
        # pip, which honours them, would refuse a package that uv installs from the same lock.
        steps.run(
            [*install, *env.pip_args, "--no-deps", "--ignore-requires-python", "-r", str(lock.path)]
        )
    else:
        steps.run([*install, *env.pip_args, *requirements_of(env)])
    frozen = steps.output([*pip, "freeze", "--disable-pip-version-check"])
    return _tool_version([*pip, "--version"]), frozen.split()


def _full_version(python: Path) -> str | None:
    return _ask(python, "import platform; print(platform.python_version())")


# ---------------------------------------------------------------------------------- lock


def lock(
    adapters: Iterable[Adapter], *, on_step: Callable[[str], None] | None = None
) -> list[tuple[Path, bool]]:
    """Compile the lock of each adapter environment; return (path, changed) per lock written.

    Adapters that share an environment share one lock. The lock is compiled with
    ``uv pip compile`` for the declared Python on Linux x86-64 from the worker's and the
    adapter's requirements, with pip's configuration carried over (indexes, links,
    constraints), so that what a machine's pip may install is what the lock pins.
    """
    say = on_step or (lambda message: log.info(message))
    uv = uv_binary()
    if uv is None:
        raise EnvironmentBuildError("`decathlon lock` needs uv (pip install uv)")
    adapters = list(adapters)
    for folder in dict.fromkeys(lock_dir(a) for a in adapters if a.environment is not None):
        # Before compiling, which takes minutes: a folder that cannot take the lock says so now.
        why = files.why_not_writable(folder)
        if why:
            raise EnvironmentBuildError(
                f"cannot write locks into {folder} ({why}); set DECATHLON_LOCK_DIR to a folder"
                " you can write"
            )
    settings = pipconfig.read()
    environ = pipconfig.uv_environ(settings)
    done: dict[Path, tuple[Path, bool]] = {}
    for adapter in adapters:
        env = adapter.environment
        if env is None:
            continue
        path = lock_path(adapter)
        if path in done:
            continue
        say(f"{adapter.name}: compiling {path.name} (Python {env.python}, Linux x86-64)")
        with tempfile.TemporaryDirectory(prefix="decathlon-lock-") as tmp:
            source = Path(tmp) / "requirements.in"
            source.write_text("\n".join(requirements_of(env)) + "\n")
            out = Path(tmp) / "lock.txt"
            cmd = [
                uv, "pip", "compile", str(source), "--output-file", str(out),
                "--python-version", env.python, "--python-platform", LOCK_PLATFORM,
                "--no-header", "--no-annotate", "--quiet",
                *pipconfig.uv_args(settings), *uv_pip_args(env.pip_args, adapter.name),
            ]  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, env=environ)
            if result.returncode != 0:
                lines = [x.strip() for x in result.stderr.splitlines() if x.strip()]
                detail = " ".join(lines)[-300:] if lines else f"exit {result.returncode}"
                raise EnvironmentBuildError(f"locking '{adapter.name}' failed: {detail}")
            body = out.read_text()
        header = (
            f"# decathlon lock of the environment '{env.name or adapter.name}':"
            f" Python {env.python} on Linux x86-64 ({LOCK_PLATFORM})\n"
            f"# spec: {spec_key(env)}\n"
            f"# requirements: {json.dumps(requirements_of(env))}\n"
            f"# pip options: {json.dumps(list(env.pip_args))}\n"
            "# refresh: python -m decathlon lock all (uv pip compile); setup installs it exactly\n"
        )
        text = header + body
        old = path.read_text() if path.is_file() else None
        if old != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            files.write_text(path, text)
        done[path] = (path, old != text)
        pins = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        state = "written" if old != text else "unchanged"
        say(f"{adapter.name}: {path} {state} ({pins} packages)")
    return list(done.values())


def adopt(
    adapter: Adapter,
    python: str | Path,
    *,
    root: Path | None = None,
    extra_paths: tuple[Path, ...] = (),
) -> Path:
    """Use an existing interpreter, with its own packages, as the adapter's environment.

    For machines where the frameworks are already installed (a GPU image, a cluster module,
    a container) and nothing can be downloaded. The environment's ``bin/python`` becomes a
    small wrapper that runs ``python`` with ``extra_paths`` on its path: a wrapper rather than a
    venv, because ``python`` may itself be a venv whose packages a new venv would not see.
    Its Python version must be the adapter's; nothing is checked against the adapter's
    requirements: the user vouches for them.
    """
    if adapter.environment is None:
        raise EnvironmentBuildError(f"adapter '{adapter.name}' runs in the harness's environment")
    executable = Path(shutil.which(str(python)) or python).absolute()  # a venv link: not resolved
    found = _version_of(executable)
    if found is None:
        raise EnvironmentBuildError(f"setup --adopt {python}: does not run as a Python interpreter")
    needed = adapter.environment.python
    if found != needed:  # its lock, and the frameworks' wheels, are that version's
        raise EnvironmentBuildError(
            f"setup --adopt {python}: '{adapter.name}' needs Python {needed}, this is Python"
            f" {found}; adopt a Python {needed} interpreter"
        )
    directory = env_dir(adapter, root)
    why = files.why_not_writable(directory.parent)
    if why:
        raise _unwritable(adapter, directory.parent, why)

    def busy() -> None:
        raise EnvironmentBuildError(
            f"setup --adopt {python}: the environment of '{adapter.name}' is being built by"
            " another setup or run (or by the installer of one that was killed); adopt"
            " again when it has ended"
        ) from None

    # The build lock, as build() takes it: an adopt beside a build of the same environment
    # would remove the folder under the installer, which would then write into the wrapper's.
    with _build_lock(directory, busy):
        return _write_adopted(adapter, directory, executable, extra_paths)


def _write_adopted(
    adapter: Adapter, directory: Path, executable: Path, extra_paths: tuple[Path, ...]
) -> Path:
    if directory.exists():
        try:
            shutil.rmtree(directory)
        except OSError as exc:
            raise EnvironmentBuildError(
                f"cannot remove the environment {directory} ({exc.strerror or exc}); delete it"
                " and run setup --adopt again"
            ) from None
    (directory / "bin").mkdir(parents=True)
    path = os.pathsep.join(str(Path(p).absolute()) for p in extra_paths)
    wrapper = _env_python(directory)
    # Quoted for the shell: a path with a space, a quote, a $ or a backquote is taken as it is.
    wrapper.write_text(
        "#!/bin/sh\n"
        + (f"PYTHONPATH={shlex.quote(path)} " if path else "")
        + f'exec {shlex.quote(str(executable))} "$@"\n'
    )
    wrapper.chmod(0o755)
    marker = {
        "adapter": adapter.name,
        "adopted_from": str(executable),
        "extra_paths": [str(p) for p in extra_paths],
        "python": _version_of(executable),
        "installer": "adopted",
        "key": directory.name,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    files.write_text(directory / _MARKER, files.json_text(marker, indent=2))
    return wrapper


def record(adapter: Adapter, root: Path | None = None) -> dict | None:
    """What the adapter's environment was built from (its ready marker), for a run's record."""
    if adapter.environment is None:
        return None
    return _read_marker(env_dir(adapter, root))


def describe(adapter: Adapter, root: Path | None = None) -> str:
    """'harness env' for adapters without an environment, else 'ready', 'not built' or
    'damaged (what is gone)'."""
    if adapter.environment is None:
        return "harness env"
    problem = damage(adapter, root)
    if problem is None:
        return "ready"
    return problem if problem == "not built" else f"damaged ({problem})"


def provenance(adapter: Adapter, root: Path | None = None) -> str:
    """One cell for the leaderboard: what the adapter's environment was built from."""
    if adapter.environment is None:
        return "harness"
    built = record(adapter, root) or {}
    if built.get("installer") == "adopted":
        return f"adopted {built.get('adopted_from', '')}".strip()
    lock = built.get("lock")
    if lock:
        return f"lock {lock['file']} sha256:{lock['sha256'][:12]}"
    if built:
        return f"resolved at setup {built.get('key', '')}".strip()
    return ""
