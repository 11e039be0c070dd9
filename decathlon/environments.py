"""Adapter environments: one virtual environment per adapter specification, built once, cached.

Frameworks the decathlon drives cannot share an environment (auto-sklearn 0.15 needs numpy<1.24
on Python 3.9; AutoKeras 3 needs numpy 2), so, as in the OpenML AutoML Benchmark, each adapter
that declares an :class:`~decathlon.contract.Environment` runs in its own venv under
``$DECATHLON_HOME/envs/HASH`` where HASH covers the interpreter version and requirements, so
adapters that declare the same environment (the four ResNets) share one folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from decathlon.contract import Adapter, Environment
from decathlon.errors import EnvironmentBuildError

log = logging.getLogger(__name__)

#: What the worker itself needs inside every adapter environment.
WORKER_REQUIREMENTS = ("numpy", "pluggy")
_MARKER = "decathlon-env.json"


def home() -> Path:
    """The harness's cache: ``$DECATHLON_HOME``, else ``~/.cache/decathlon``."""
    return Path(os.environ.get("DECATHLON_HOME") or Path.home() / ".cache" / "decathlon")


def spec_key(env: Environment) -> str:
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


def env_dir(adapter: Adapter, root: Path | None = None) -> Path:
    assert adapter.environment is not None
    return (root or home()) / "envs" / spec_key(adapter.environment)


def _env_python(directory: Path) -> Path:
    return directory / "bin" / "python"


def is_ready(adapter: Adapter, root: Path | None = None) -> bool:
    """True when the adapter runs in the harness's environment or its own is built."""
    if adapter.environment is None:
        return True
    return (env_dir(adapter, root) / _MARKER).is_file()


def interpreter(adapter: Adapter, root: Path | None = None) -> Path:
    """The Python that runs the adapter's worker (its environment must be ready)."""
    if adapter.environment is None:
        return Path(sys.executable)
    return _env_python(env_dir(adapter, root))


def _version_of(python: str | Path) -> str | None:
    try:
        out = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(version: str, explicit: str | Path | None = None) -> Path:
    """An interpreter of ``version`` ("3.9"): explicit setting, then PATH, then pyenv.

    The explicit setting is ``explicit`` or the environment variable ``DECATHLON_PYTHON_3_9``
    (for version 3.9). A shim that exists but does not run (pyenv's when that version is not
    selected) is skipped.
    """
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
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(Path(on_path))
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    versions = sorted(
        (pyenv_root / "versions").glob(f"{version}.*"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.name.split(".")],
        reverse=True,
    )
    candidates += [v / "bin" / f"python{version}" for v in versions]
    for candidate in candidates:
        if candidate.exists() and _version_of(candidate) == version:
            return candidate
    raise EnvironmentBuildError(
        f"no Python {version} found (looked at ${variable}, python{version} on the PATH and"
        f" pyenv's versions in {pyenv_root / 'versions'}); install one (pyenv install {version},"
        f" uv python install {version}, conda) and set {variable}=/path/to/python{version}"
        " or pass it to `python -m decathlon setup --python PATH`"
    )


def build(
    adapter: Adapter,
    *,
    root: Path | None = None,
    python: str | Path | None = None,
    force: bool = False,
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
    directory.parent.mkdir(parents=True, exist_ok=True)
    say = on_step or (lambda message: log.info(message))
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_ready(adapter, root) and not force:
            return _env_python(directory)
        base = find_python(env.python, python)
        if directory.exists():
            shutil.rmtree(directory)
        say(f"building the environment of '{adapter.name}' in {directory} (Python {env.python})")
        started = time.monotonic()
        log_path = directory.parent / f"{directory.name}.build.log"
        with open(log_path, "w") as build_log:
            _step([str(base), "-m", "venv", str(directory)], build_log, adapter, log_path)
            pip = [
                str(_env_python(directory)),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
            ]
            _step(pip + ["--upgrade", "pip"], build_log, adapter, log_path)
            requirements = [*WORKER_REQUIREMENTS, *env.requirements]
            _step(pip + [*env.pip_args, *requirements], build_log, adapter, log_path)
        marker = {
            "adapter": adapter.name,
            "python": env.python,
            "base_interpreter": str(base),
            "requirements": list(env.requirements),
            "pip_args": list(env.pip_args),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        tmp = directory / (_MARKER + ".tmp")
        tmp.write_text(json.dumps(marker, indent=2))
        os.replace(tmp, directory / _MARKER)
        say(f"environment of '{adapter.name}' ready after {marker['build_seconds']:.0f} s")
        return _env_python(directory)


def _step(cmd: list[str], build_log, adapter: Adapter, log_path: Path) -> None:
    build_log.write("$ " + " ".join(cmd) + "\n")
    build_log.flush()
    result = subprocess.run(cmd, stdout=build_log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        build_log.flush()
        tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        last = tail[-1].strip() if tail else ""
        program = cmd[2] if cmd[1] == "-m" else Path(cmd[0]).name
        raise EnvironmentBuildError(
            f"building the environment of '{adapter.name}' failed ({program} exited"
            f" {result.returncode}): {last[:200]}; full log: {log_path}"
        )


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
    Nothing is checked against the adapter's requirements: the user vouches for them.
    """
    if adapter.environment is None:
        raise EnvironmentBuildError(f"adapter '{adapter.name}' runs in the harness's environment")
    executable = Path(shutil.which(str(python)) or python).absolute()  # a venv link: not resolved
    if _version_of(executable) is None:
        raise EnvironmentBuildError(f"setup --adopt {python}: does not run as a Python interpreter")
    directory = env_dir(adapter, root)
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "bin").mkdir(parents=True)
    path = os.pathsep.join(str(Path(p).absolute()) for p in extra_paths)
    wrapper = _env_python(directory)
    wrapper.write_text(
        "#!/bin/sh\n" + (f'PYTHONPATH="{path}" ' if path else "") + f'exec "{executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    marker = {
        "adapter": adapter.name,
        "adopted_from": str(executable),
        "extra_paths": [str(p) for p in extra_paths],
        "python": _version_of(executable),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (directory / _MARKER).write_text(json.dumps(marker, indent=2))
    return wrapper


def record(adapter: Adapter, root: Path | None = None) -> dict | None:
    """What the adapter's environment was built from (its ready marker), for a run's record."""
    if adapter.environment is None:
        return None
    try:
        return json.loads((env_dir(adapter, root) / _MARKER).read_text())
    except (OSError, ValueError):
        return None


def describe(adapter: Adapter, root: Path | None = None) -> str:
    """'harness' for adapters without an environment, else 'ready' or 'not built'."""
    if adapter.environment is None:
        return "harness env"
    return "ready" if is_ready(adapter, root) else "not built"
