"""Adapter environments: interpreters found or not, locks as cache keys, pip's settings carried
over to uv, built once and reused, a failed build leaves nothing ready, adoption."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from helpers import TinyData

from decathlon import environments, leaderboard, pipconfig
from decathlon.contract import Adapter, Environment
from decathlon.errors import EnvironmentBuildError
from decathlon.hookspecs import hookimpl
from decathlon.plugins import make_registry
from decathlon.runner import RunConfig, Runner

HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _adapter(requirements: tuple[str, ...] = ()) -> Adapter:
    return Adapter(
        name="envprobe",
        run="decathlon_adapters.baseline:run",
        environment=Environment(python=HERE, requirements=requirements),
        options={"pca_components": 8, "max_iter": 5, "learning_rate": 0.1},
        default_budgets={"quick": {"hard_limit_seconds": 120}},
    )


class _Plugin:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    @hookimpl
    def decathlon_register_adapters(self, register) -> None:
        register(self.adapter)


def test_spec_key_follows_the_specification() -> None:
    a, b = _adapter(), _adapter(("numpy<3",))
    assert environments.spec_key(a.environment) != environments.spec_key(b.environment)
    assert environments.spec_key(a.environment) == environments.spec_key(_adapter().environment)


def test_a_failed_build_is_one_line_and_leaves_nothing_ready(tmp_path: Path) -> None:
    adapter = _adapter(("decathlon-no-such-package-anywhere==0.0.1",))
    with pytest.raises(EnvironmentBuildError) as caught:
        environments.build(adapter, root=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "envprobe" in message and "uv exited" in message and "build.log" in message
    assert not environments.is_ready(adapter, tmp_path)


def test_a_cache_that_cannot_be_written_is_one_line_and_a_built_one_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$DECATHLON_HOME read-only (here: under a file, which stops root too) ended setup and
    setup --adopt in an OSError traceback; a cache built elsewhere and mounted read-only could
    not be run from, as build took its file lock there."""
    (tmp_path / "file").write_text("not a folder")
    root = tmp_path / "file" / "home"
    adapter = _adapter()
    for attempt in (
        lambda: environments.build(adapter, root=root),
        lambda: environments.adopt(adapter, sys.executable, root=root),
    ):
        with pytest.raises(EnvironmentBuildError, match="cannot write the environment") as caught:
            attempt()
        assert "DECATHLON_HOME" in str(caught.value) and "is a file, not a folder" in str(
            caught.value
        )
    built = tmp_path / "built"
    wrapper = environments.adopt(adapter, sys.executable, root=built)
    monkeypatch.setattr(
        environments.files, "why_not_writable", lambda folder: "Read-only file system"
    )
    assert environments.build(adapter, root=built) == wrapper
    with pytest.raises(EnvironmentBuildError, match="Read-only file system"):
        environments.build(adapter, root=built, force=True)


KILLED_SETUP = """
import sys
from pathlib import Path
from decathlon import environments
from decathlon.contract import Adapter, Environment
environments.uv_binary = lambda: sys.argv[2]
adapter = Adapter(name="envprobe", run="decathlon_adapters.baseline:run",
                  environment=Environment(python=sys.argv[3]))
environments.build(adapter, root=Path(sys.argv[1]))
"""

SLOW_UV = """#!/bin/sh
if [ "$1" = venv ]; then mkdir -p "$5/bin"; exit 0; fi
echo $$ > "{started}"
exec sleep 60
"""


def test_a_setup_killed_mid_install_holds_the_build_lock_until_its_installer_ends(
    tmp_path: Path,
) -> None:
    """setup killed by SIGKILL (its installer left running, writing into the environment): the
    next setup took the lock at once and removed the folder under the installer, an OSError
    traceback ("Directory not empty"); now the installer holds the lock, and the next setup
    waits for it."""
    started = tmp_path / "installer.pid"
    uv = tmp_path / "slow-uv"
    uv.write_text(SLOW_UV.format(started=started))
    uv.chmod(0o755)
    root = tmp_path / "home"
    setup = subprocess.Popen([sys.executable, "-c", KILLED_SETUP, str(root), str(uv), HERE])
    installer = None
    try:
        for _ in range(300):
            if started.is_file() and started.read_text().strip():
                installer = int(started.read_text())
                break
            time.sleep(0.1)
        assert installer is not None, "the installer never started"
        setup.kill()
        setup.wait()
        (lock,) = (root / "envs").glob(".*.lock")
        with open(lock) as held:
            with pytest.raises(BlockingIOError):
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.kill(installer, signal.SIGKILL)
            for _ in range(100):
                try:
                    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.1)
            else:
                pytest.fail("the lock outlived the installer")
    finally:
        setup.kill()
        if installer is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(installer, signal.SIGKILL)


def test_a_daemon_left_by_an_installer_does_not_hold_the_build_lock(tmp_path: Path) -> None:
    """The installer held the build lock's descriptor, and so did whatever it left running (a
    compiler server started by a package's build): every later setup, and every run of the
    adapter, waited for that daemon forever. Now the lock is held by a process that waits for
    the installer alone."""
    lock, log, pid = tmp_path / ".env.lock", tmp_path / "build.log", tmp_path / "daemon.pid"
    with open(lock, "w") as lock_file, open(log, "w") as build_log:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        steps = environments._Steps(_adapter(), build_log, log, lock_file.fileno())
        steps.run(["sh", "-c", f"sleep 60 >/dev/null 2>&1 & echo $! > {pid}"])
    daemon = int(pid.read_text())
    try:
        with open(lock) as again:
            fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: the daemon's
    finally:
        os.kill(daemon, signal.SIGKILL)


def test_missing_interpreter_is_one_line_naming_the_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.delenv("DECATHLON_PYTHON_2_7", raising=False)
    monkeypatch.setenv("DECATHLON_PYTHON_DOWNLOADS", "never")
    with pytest.raises(EnvironmentBuildError) as caught:
        environments.find_python("2.7")
    message = str(caught.value)
    assert "\n" not in message
    assert "DECATHLON_PYTHON_2_7" in message and "--python" in message


def test_an_adopted_interpreter_runs_the_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_catalog: TinyData
) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    adapter = _adapter(("a-requirement-that-is-never-installed",))
    wrapper = environments.adopt(adapter, sys.executable)
    assert environments.is_ready(adapter)
    assert environments.interpreter(adapter) == wrapper
    test = _run_test_row(adapter, tmp_path, tiny_catalog)
    assert test["status"] == "ok", test["reason"]


def test_adopting_a_python_of_another_version_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """setup --adopt took any interpreter: one of another version than the adapter declares
    was adopted, and its tasks failed on import. It is refused, naming both versions."""
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    adapter = dataclasses.replace(
        _adapter(), environment=Environment(python="3.4", requirements=())
    )
    with pytest.raises(EnvironmentBuildError) as caught:
        environments.adopt(adapter, sys.executable)
    message = str(caught.value)
    assert "\n" not in message
    assert "needs Python 3.4" in message and f"this is Python {HERE}" in message
    assert not environments.is_ready(adapter)


def test_an_adopted_interpreter_whose_path_the_shell_would_read_runs(tmp_path: Path) -> None:
    """The wrapper wrote the path between double quotes: a path with a quote gave a wrapper
    that did not run ("Unterminated quoted string"), a $ or a backquote was expanded."""
    folder = tmp_path / 'py $HOME "x`echo y`'
    folder.mkdir()
    (folder / "python").symlink_to(sys.executable)
    extra = tmp_path / "it's $PATH"
    extra.mkdir()
    wrapper = environments.adopt(
        _adapter(), folder / "python", root=tmp_path / "home", extra_paths=(extra,)
    )
    out = subprocess.run(
        [
            str(wrapper),
            "-c",
            "import os, sys; print(sys.executable); print(os.environ['PYTHONPATH'])",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(folder / "python"), str(extra)]


def test_an_adopt_beside_a_build_of_the_same_environment_is_one_line(tmp_path: Path) -> None:
    """setup --adopt took no build lock: beside a build of the same environment it removed the
    folder the installer was writing into. It now says the build goes on and leaves it alone."""
    adapter = _adapter()
    root = tmp_path / "home"
    directory = environments.env_dir(adapter, root)
    (directory / "lib").mkdir(parents=True)
    (directory / "lib" / "being-installed").write_text("x")
    with open(directory.parent / f".{directory.name}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a build in progress
        with pytest.raises(EnvironmentBuildError) as caught:
            environments.adopt(adapter, sys.executable, root=root)
    message = str(caught.value)
    assert "\n" not in message and "is being built by another setup or run" in message
    assert (directory / "lib" / "being-installed").is_file()
    wrapper = environments.adopt(adapter, sys.executable, root=root)  # the build has ended
    assert environments.is_ready(adapter, root) and wrapper.is_file()


def _run_test_row(adapter: Adapter, tmp_path: Path, tiny_catalog: TinyData) -> dict[str, str]:
    """Run ``adapter`` on breastmnist (quick profile) through the harness; its test row."""
    registry = make_registry([_Plugin(adapter)], entry_points=False)
    config = RunConfig(
        adapter=adapter.name,
        profile="quick",
        datasets=("breastmnist",),
        data_dir=str(tiny_catalog.data_dir),
        info_path=str(tiny_catalog.info_path),
        download=False,
        budgets_path=str(_budgets(tmp_path)),
    )
    path = Runner(config, registry).run(tmp_path / "run")
    return next(r for r in leaderboard.read(path) if r["split"] == "test")


def _budgets(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.toml"
    path.write_text('[profiles.quick]\ndescription = "test"\n')
    return path


# ------------------------------------------------------------------- interpreter search

OTHER = "3.9"  # a version the harness itself is not: its interpreter cannot answer for it
#: The machine's pyenv, read before any test points PYENV_ROOT elsewhere.
PYENV_ROOT = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _real_python(version: str) -> Path:
    """A working interpreter of ``version`` from the machine's pyenv, else skip."""
    root = PYENV_ROOT
    for candidate in sorted((root / "versions").glob(f"{version}.*/bin/python{version}")):
        if environments._version_of(candidate) == version:
            return candidate
    pytest.skip(f"no Python {version} under {root}/versions on this machine")


def _broken_shim(folder: Path, version: str) -> Path:
    """What pyenv's shim does when that version is not selected."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / f"python{version}"
    shim.write_text(f"#!/bin/sh\necho 'pyenv: python{version}: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    return shim


@pytest.fixture
def bare_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Python OTHER anywhere: a broken shim on the PATH, empty pyenv and uv folders."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == OTHER:
        pytest.skip(f"the harness itself runs on {OTHER}")
    _broken_shim(tmp_path / "shims", OTHER)
    monkeypatch.setenv("PATH", str(tmp_path / "shims"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "uv-pythons"))
    monkeypatch.delenv("DECATHLON_PYTHON_" + OTHER.replace(".", "_"), raising=False)
    return tmp_path


def test_interpreter_found_on_the_path_past_a_broken_shim(
    bare_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _real_python(OTHER)
    folder = bare_machine / "bin"
    folder.mkdir()
    (folder / f"python{OTHER}").symlink_to(real)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bare_machine / "shims"), str(folder)]))
    found = environments.find_python(OTHER, downloads=False)
    assert found == folder / f"python{OTHER}"


def test_interpreter_found_under_pyenv_newest_first(bare_machine: Path) -> None:
    real = _real_python(OTHER)
    for patch in ("2", "18", "7"):
        binary = bare_machine / "pyenv" / "versions" / f"{OTHER}.{patch}" / "bin"
        binary.mkdir(parents=True)
        (binary / f"python{OTHER}").symlink_to(real)
    found = environments.find_python(OTHER, downloads=False)
    assert found == bare_machine / "pyenv" / "versions" / f"{OTHER}.18" / "bin" / f"python{OTHER}"


def test_no_interpreter_and_fetching_off_is_one_line_saying_what_to_install(
    bare_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECATHLON_PYTHON_DOWNLOADS", "never")
    with pytest.raises(EnvironmentBuildError) as caught:
        environments.find_python(OTHER)
    message = str(caught.value)
    assert "\n" not in message
    assert f"no Python {OTHER} found" in message and "fetching is off" in message
    assert f"uv python install {OTHER}" in message and f"pyenv install {OTHER}" in message
    assert not (bare_machine / "uv-pythons").exists() or not any(
        (bare_machine / "uv-pythons").iterdir()
    )


def test_a_uv_that_hangs_fetching_a_python_is_one_line(
    bare_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv asked for a managed Python (a network that swallows packets) past its time: the
    TimeoutExpired of subprocess ended setup in a traceback."""
    uv = bare_machine / "hanging-uv"
    uv.write_text(f"#!/bin/sh\nexec {shutil.which('sleep', path=os.defpath)} 30\n")
    uv.chmod(0o755)
    monkeypatch.setattr(environments, "uv_binary", lambda: str(uv))
    monkeypatch.setattr(environments, "FIND_TIMEOUT", 0.5)
    monkeypatch.setattr(environments, "FETCH_TIMEOUT", 0.5)
    with pytest.raises(EnvironmentBuildError) as caught:
        environments.find_python(OTHER, downloads=True)
    message = str(caught.value)
    assert "\n" not in message
    assert "uv python install did not end in 0.5 s" in message, message


# ------------------------------------------------------------------------------- locks


def _pin(environment_python: Path, package: str) -> str:
    out = subprocess.run(
        [str(environment_python), "-c", f"import {package}; print({package}.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_a_lock_change_rebuilds_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DECATHLON_LOCK_DIR", str(tmp_path / "locks"))
    adapter = _adapter(("pluggy>=1.4",))
    ((path, changed),) = environments.lock([adapter])
    assert changed and path == tmp_path / "locks" / f"envprobe-py{HERE}.txt"
    pins = dict(line.split("==") for line in path.read_text().splitlines() if "==" in line)
    assert {"numpy", "pluggy"} <= set(pins)

    first = environments.build(adapter)
    built = environments.record(adapter)
    assert built is not None and built["installer"].startswith("uv ")
    assert built["lock"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert first.parent.parent.name == built["lock"]["sha256"][:12]  # the lock's hash is the key
    assert _pin(first, "pluggy") == pins["pluggy"]
    assert environments.provenance(adapter).startswith(f"lock {path.name} sha256:")

    older = "1.5.0" if pins["pluggy"] != "1.5.0" else "1.4.0"
    path.write_text(path.read_text().replace(f"pluggy=={pins['pluggy']}", f"pluggy=={older}"))
    assert not environments.is_ready(adapter)  # a new key: not built yet
    second = environments.build(adapter)
    assert second != first
    assert _pin(second, "pluggy") == older  # installed exactly as the lock says
    assert _pin(first, "pluggy") == pins["pluggy"]  # the old environment is untouched


def test_without_a_usable_lock_requirements_are_resolved_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DECATHLON_LOCK_DIR", str(tmp_path / "locks"))
    locked = _adapter(("pluggy>=1.4",))
    environments.lock([locked])
    changed = _adapter(("pluggy>=1.4", "threadpoolctl"))  # a lock made for another spec
    lock, why = environments.usable_lock(changed)
    assert lock is None and "another specification" in why and "decathlon lock" in why
    python = environments.build(changed)
    built = environments.record(changed)
    assert built is not None and built["lock"] is None
    assert "another specification" in built["resolved_at_setup"]
    assert any(p.startswith("threadpoolctl==") for p in built["packages"])
    assert python.parent.parent.name == environments.spec_key(changed.environment)
    assert environments.provenance(changed).startswith("resolved at setup")


def test_the_built_in_locks_are_current_and_autosklearn_keeps_pkg_resources() -> None:
    registry = make_registry()
    stale = []
    for adapter in registry.adapters.values():
        if adapter.environment is None:
            continue
        lock = environments.read_lock(environments.lock_path(adapter))
        if lock is None or lock.spec != environments.spec_key(adapter.environment):
            stale.append(adapter.name)
    assert not stale, (
        f"no current lock for {stale}: run `python -m decathlon lock all`"
        " and commit adapters/locks/"
    )
    text = environments.lock_path(registry.get("autosklearn")).read_text()
    (setuptools,) = [line for line in text.splitlines() if line.startswith("setuptools==")]
    assert int(setuptools.split("==")[1].split(".")[0]) < 81


# --------------------------------------------------------------------- pip's settings


def _wheel(folder: Path, name: str, version: str, requires_python: str = "") -> Path:
    """A real, minimal wheel of a package that exists on no index."""
    folder.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if requires_python:
        metadata += f"Requires-Python: {requires_python}\n"
    files = {
        f"{module}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for member, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{member},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_pip_settings_are_read_as_pip_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith("PIP_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "etc"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    (tmp_path / "etc" / "pip").mkdir(parents=True)
    (tmp_path / "etc" / "pip" / "pip.conf").write_text(
        "[global]\nconstraint = /c/one.txt\nfind-links = /global/wheels\n"
    )
    (tmp_path / ".config" / "pip").mkdir(parents=True)
    (tmp_path / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nextra-index-url =\n    https://a.example/simple\n    file:///b/simple\n"
        "[install]\nfind-links = /user/wheels\n"
    )
    monkeypatch.setenv("PIP_FIND_LINKS", "/env/wheels /env/more")
    settings = pipconfig.read()
    assert settings.extra_index_urls == ("https://a.example/simple", "file:///b/simple")
    assert settings.find_links == ("/env/wheels", "/env/more")  # the variable wins over files
    assert settings.constraints == ("/c/one.txt",)
    args = pipconfig.uv_args(settings)
    assert args[args.index("--constraint") + 1] == "/c/one.txt"
    assert ["--index-strategy", "unsafe-best-match"] == args[-2:]  # pip looks at every source
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    assert pipconfig.read().constraints == ()


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_package_only_pip_knows_where_to_find_installs(
    installer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel that lies only in a folder named by pip's configuration: uv must find it too."""
    _wheel(tmp_path / "wheels", "decathlon-probe-only-here", "1.2.3")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DECATHLON_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("DECATHLON_INSTALLER", installer)
    adapter = _adapter(("decathlon-probe-only-here==1.2.3",))
    steps: list[str] = []
    python = environments.build(adapter, on_step=steps.append)
    assert _pin(python, "decathlon_probe_only_here") == "1.2.3"
    built = environments.record(adapter)
    assert built is not None and built["installer"].startswith(f"{installer} ")
    assert any(f"built by {installer} " in step for step in steps)  # one line says which
    assert "decathlon-probe-only-here==1.2.3" in built["packages"]


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_lock_installs_the_same_with_pip_and_uv_despite_requires_python_bounds(
    installer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv ignores an upper bound of Requires-Python when it locks; pip must install the lock too
    (automl_vision's lock has backports-strenum 1.3.1, which says "<3.11", for Python 3.11)."""
    _wheel(tmp_path / "wheels", "decathlon-probe-bounded", "1.0.0", requires_python=">=3.8,<3.9")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DECATHLON_LOCK_DIR", str(tmp_path / "locks"))
    adapter = _adapter(("decathlon-probe-bounded==1.0.0",))
    ((path, _),) = environments.lock([adapter])
    assert "decathlon-probe-bounded==1.0.0" in path.read_text().splitlines()
    monkeypatch.setenv("DECATHLON_INSTALLER", installer)
    python = environments.build(adapter)
    assert _pin(python, "decathlon_probe_bounded") == "1.0.0"
    built = environments.record(adapter)
    assert built is not None and built["lock"] is not None
    assert built["installer"].startswith(f"{installer} ")


def test_an_unknown_installer_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DECATHLON_INSTALLER", "conda")
    with pytest.raises(
        EnvironmentBuildError, match="DECATHLON_INSTALLER='conda': choose uv or pip"
    ):
        environments.choose_installer()


# ------------------------------------------------------ damaged environments, bad markers


@pytest.mark.parametrize(
    "marker",
    ["[1, 2]", '{"lock": "x"}', '{"installer": "uv", "key": "KEY", "lock": "x"}', "not json"],
)
def test_a_malformed_marker_means_not_built(
    marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A marker holding [1, 2] or {"lock": "x"} counted as ready, and provenance() then
    crashed the run at its end (AttributeError, TypeError) with no leaderboard written."""
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    adapter = _adapter()
    environments.adopt(adapter, sys.executable)
    directory = environments.env_dir(adapter)
    (directory / "decathlon-env.json").write_text(marker.replace("KEY", directory.name))
    assert not environments.is_ready(adapter)
    assert environments.record(adapter) is None
    assert environments.provenance(adapter) == ""
    assert environments.describe(adapter) == "not built"


def test_a_run_rebuilds_an_environment_whose_marker_is_malformed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_catalog: TinyData
) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DECATHLON_LOCK_DIR", str(tmp_path / "locks"))  # none: resolved
    adapter = _adapter(("scikit-learn",))  # the baseline adapter's framework
    environments.adopt(adapter, sys.executable)
    (environments.env_dir(adapter) / "decathlon-env.json").write_text('{"lock": "x"}')
    test = _run_test_row(adapter, tmp_path, tiny_catalog)
    assert test["status"] == "ok", test["reason"]
    assert test["environment"].startswith("resolved at setup")
    assert environments.is_ready(adapter)


def _site_packages(python: Path) -> Path:
    (site,) = python.parent.parent.glob("lib/python*/site-packages")
    return site


def test_a_damaged_environment_is_not_ready_and_is_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rm -rf site-packages/flaml` after setup: setup still said ready, and the task failed
    with ModuleNotFoundError."""
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DECATHLON_LOCK_DIR", str(tmp_path / "locks"))
    adapter = _adapter()
    python = environments.build(adapter)
    assert environments.is_ready(adapter)
    shutil.rmtree(_site_packages(python) / "pluggy")
    assert not environments.is_ready(adapter)
    assert environments.describe(adapter).startswith("damaged (")
    assert environments.describe(adapter).endswith("/pluggy is gone)")
    steps: list[str] = []
    assert environments.build(adapter, on_step=steps.append) == python  # no --force needed
    assert any("is damaged" in step and "building it again" in step for step in steps)
    assert environments.is_ready(adapter) and _pin(python, "pluggy")
    # A marker written before the installed folders were recorded: the RECORD files tell.
    marker_path = python.parent.parent / "decathlon-env.json"
    marker = json.loads(marker_path.read_text())
    del marker["top_level"]
    marker_path.write_text(json.dumps(marker))
    assert environments.is_ready(adapter)
    shutil.rmtree(_site_packages(python) / "numpy")
    assert not environments.is_ready(adapter)


def test_an_environment_that_cannot_import_what_the_worker_needs_is_never_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock truncated to a few pins: setup said "built ... ready", and every task then
    failed with "No module named 'pluggy'"."""
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DECATHLON_LOCK_DIR", str(tmp_path / "locks"))
    adapter = _adapter()
    ((path, _),) = environments.lock([adapter])
    path.write_text(
        "".join(line for line in path.read_text().splitlines(True) if "pluggy" not in line)
    )
    with pytest.raises(EnvironmentBuildError) as caught:
        environments.build(adapter)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the environment of 'envprobe' was built in ")
    assert "does not work: not installed: pluggy" in message
    assert f"is the lock {path} complete?" in message and "build.log" in message
    assert not environments.is_ready(adapter)
    assert not (environments.env_dir(adapter) / "decathlon-env.json").exists()


def test_a_task_that_cannot_import_in_an_adapter_environment_names_setup_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_catalog: TinyData
) -> None:
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    package = tmp_path / "plugin" / "decathlon_probe_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "adapter.py").write_text(
        "import decathlon_probe_framework_not_installed\n\ndef run(task):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(package.parent))
    adapter = dataclasses.replace(_adapter(), run="decathlon_probe_plugin.adapter:run")
    environments.adopt(adapter, sys.executable)
    test = _run_test_row(adapter, tmp_path, tiny_catalog)
    assert test["status"] == "error"
    assert test["reason"].startswith("ModuleNotFoundError: No module named 'decathlon_probe_fr")
    assert test["reason"].endswith("; a damaged environment? `decathlon setup --force envprobe`")


def test_the_setup_probe_of_an_adapters_module_is_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_catalog: TinyData
) -> None:
    """setup imports the adapter's module in its new environment before marking it ready. A
    hostile review's module read the test labels there (the probe ran unsealed) and could leave
    them in the environment, which every task of the adapter reads. Now the probe is sealed as
    a task: the data is not there, and the environment is read-only."""
    from decathlon import sandbox

    if sandbox.bwrap_problem():
        pytest.skip(f"no sandbox here: {sandbox.bwrap_problem()}")
    monkeypatch.setenv("DECATHLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DECATHLON_LOCK_DIR", str(tmp_path / "locks"))
    data = tiny_catalog.data_dir / "breastmnist.npz"
    package = tmp_path / "plugin" / "decathlon_thief_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "adapter.py").write_text(
        "import os, sys, sysconfig\n"
        "where = os.path.join(sysconfig.get_paths()['purelib'], 'stolen.txt')\n"
        "try:\n"
        f"    got = str(len(open({str(data)!r}, 'rb').read()))\n"
        "except OSError as exc:\n"
        "    got = type(exc).__name__\n"
        "try:\n"
        "    open(where, 'w').write(got)\n"
        "except OSError as exc:\n"
        "    print('could not write', where, type(exc).__name__, got, file=sys.stderr)\n"
        "\ndef run(task):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(package.parent))
    adapter = dataclasses.replace(_adapter(), run="decathlon_thief_plugin.adapter:run")
    environments.build(adapter)
    assert environments.is_ready(adapter)
    stolen = list(environments.env_dir(adapter).rglob("stolen.txt"))
    assert stolen == [], [p.read_text() for p in stolen]
    log = environments.env_dir(adapter).parent.glob("*.log")
    said = " ".join(p.read_text(errors="replace") for p in log)
    assert "could not write" in said and "FileNotFoundError" in said, said[-2000:]


FAKE_UV = """#!/bin/sh
# Stands in for uv pip compile: records the call, writes two pins to --output-file.
echo called >> "{calls}"
while [ "$#" -gt 0 ]; do
    if [ "$1" = "--output-file" ]; then printf 'numpy==2.0.0\\npluggy==1.5.0\\n' > "$2"; fi
    shift
done
"""


def _fake_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "uv-calls"
    uv = tmp_path / "fake-uv"
    uv.write_text(FAKE_UV.format(calls=calls))
    uv.chmod(0o755)
    monkeypatch.setattr(environments, "uv_binary", lambda: str(uv))
    return calls


def test_the_lock_header_names_each_requirement_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter that requires pluggy itself (the worker needs it too) had it listed twice."""
    _fake_uv(tmp_path, monkeypatch)
    monkeypatch.setenv("DECATHLON_LOCK_DIR", str(tmp_path / "locks"))
    ((path, _),) = environments.lock([_adapter(("pluggy", "threadpoolctl"))])
    (line,) = [x for x in path.read_text().splitlines() if x.startswith("# requirements: ")]
    assert json.loads(line.removeprefix("# requirements: ")) == ["numpy", "pluggy", "threadpoolctl"]


def test_a_lock_folder_that_cannot_be_written_stops_before_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DECATHLON_LOCK_DIR=/proc/x`` ended in a FileNotFoundError traceback, and only after the
    compile (minutes) had run: now one line, before uv is started."""
    calls = _fake_uv(tmp_path, monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for folder, why in ((blocker / "locks", f"{blocker} is a file"), (Path("/proc/x"), "")):
        monkeypatch.setenv("DECATHLON_LOCK_DIR", str(folder))
        with pytest.raises(EnvironmentBuildError) as info:
            environments.lock([_adapter()])
        message = str(info.value)
        assert message.startswith(f"cannot write locks into {folder} (")
        assert why in message and "set DECATHLON_LOCK_DIR" in message and "\n" not in message
    assert not calls.exists()


def test_lock_of_an_adapter_in_the_harness_environment_says_why_there_is_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from decathlon import cli

    assert cli.main(["lock", "baseline"]) == 0
    out = capsys.readouterr().out
    assert out == "baseline: runs in the harness's environment; nothing to lock\n"
