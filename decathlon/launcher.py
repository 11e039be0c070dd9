"""Launching a worker: the harness-side half of :mod:`decathlon.worker`.

The pair is named as the AutoML Benchmark's ``caller.py`` / ``callee.py``: ``worker.py`` runs
inside the adapter's environment (Python 3.9+, numpy and pluggy only, standalone); this module
is its caller in the harness. It says how the worker is started (its command line), what it
imports from (the mounts), the environment it gets, and what its ending means (the failure
reasons of a task's rows). The runner decides when; :mod:`decathlon.enforcement` watches it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import tempfile
from pathlib import Path

import decathlon
from decathlon import datasets, environments, files, leaderboard, rundir, sandbox
from decathlon.contract import Adapter, Budget
from decathlon.enforcement import Outcome, new_tag, run_limited
from decathlon.errors import DataError, DecathlonError

#: The most of an import check's log that is read: its last line is what it says.
LOG_TAIL = 2**16
#: The worker script, run by the adapter environment's interpreter.
WORKER = Path(__file__).resolve().parent / "worker.py"


def command(python: str | Path, task_file: Path) -> list[str]:
    """The worker's command line: ``PYTHON worker.py TASK.json``."""
    return [str(python), str(WORKER), str(task_file)]


def mounts_for(adapter: Adapter) -> dict[str, str]:
    """Where the worker imports from: the harness's package folder and the adapter's top-level
    package folder (or module file, for a single-module plugin)."""
    top = adapter.run.split(":")[0].split(".")[0]
    mounts = {"decathlon": str(Path(decathlon.__file__).resolve().parent)}
    if top == "decathlon":
        return mounts
    spec = importlib.util.find_spec(top)
    if spec is not None and spec.submodule_search_locations:
        mounts[top] = str(Path(list(spec.submodule_search_locations)[0]).resolve())
    elif spec is not None and spec.origin:
        mounts[top] = str(Path(spec.origin).resolve())
    else:
        raise DecathlonError(f"adapter '{adapter.name}': cannot find '{top}' of {adapter.run}")
    return mounts


def import_check_code(adapter: Adapter, module: str) -> str:
    """Python code that mounts the packages exactly as the worker does, then imports
    ``module``: the conformance check runs it in the adapter's environment. On a failure its
    last line of stderr is the worker's one-line reason (the exception and the file that raised
    it), and it exits 1."""
    return (
        "import importlib, importlib.util as u, sys\n"
        f"s = u.spec_from_file_location('decathlon_worker', {str(WORKER)!r})\n"
        "w = u.module_from_spec(s); s.loader.exec_module(w)\n"
        f"f = w.import_adapter({mounts_for(adapter)!r}, {module!r})\n"
        "if f: sys.exit(f['type'] + ': ' + f['message'])\n"
    )


def _link_folders(data_dir: Path) -> set[str]:
    """The folders the ``.npz`` files of ``data_dir`` really are in; a link in a loop (which
    ``Path.resolve`` raises ``RuntimeError`` for) leads to no file and is left out."""
    folders = set()
    for path in data_dir.glob("*.npz"):
        try:
            folders.add(str(path.resolve().parent))
        except (OSError, RuntimeError):
            continue
    return folders


def data_locations(data_dir: Path | None = None) -> list[str]:
    """Every folder that may hold the data (the test labels), emptied in a sealed task's view
    wherever something bound would show it: ``data_dir``, where its files really are when they
    are links, the default data folder and ``~/.medmnist`` (the same for their files), the
    harness's array and Dask caches."""
    found = []
    for folder in (data_dir, datasets.default_data_dir(), Path.home() / ".medmnist"):
        if folder is None:
            continue
        try:
            folder = datasets.full_data_dir(folder)
        except DataError:  # a loop of links (DECATHLON_DATA_DIR left so): it holds no file
            continue
        found += [str(folder), *sorted(_link_folders(folder))]
    return [
        *dict.fromkeys(found),
        str(environments.home() / "arrays"),
        str(environments.home() / "dask-runs"),
    ]


def probe(
    adapter: Adapter, python: str | Path, code: str, *, timeout: float, log_path: Path
) -> tuple[bool, str]:
    """Run ``code`` (an import check, see :func:`import_check_code`) with ``python`` as a task's
    worker runs: in a process of its own, sealed where this machine allows (no network, the
    data hidden), its whole tree killed at ``timeout`` seconds. An adapter's module runs its
    top-level code when imported: here it can neither reach the harness's own objects (a module
    imported into the harness could replace its scoring) nor the test labels. Returns whether it
    exited 0 and the last line it printed (or why it was stopped); its output goes to
    ``log_path``."""
    try:
        policy = sandbox.Policy.resolve("auto", "off", max_processes=sandbox.DEFAULT_MAX_PROCESSES)
    except DecathlonError:  # no sandbox here: unsealed, in its own process all the same
        policy = sandbox.Policy.resolve("auto", "on", max_processes=sandbox.DEFAULT_MAX_PROCESSES)
    env = worker_environment(1, "cpu")
    with tempfile.TemporaryDirectory(prefix="decathlon-probe-") as folder:
        script, scratch = Path(folder) / "probe.py", Path(folder) / "scratch"
        script.write_text(code, encoding="utf-8")
        scratch.mkdir()
        view = None
        if policy.sealed:
            view = sandbox.task_view(
                python=str(python),
                code=[str(WORKER.parent), *mounts_for(adapter).values()],
                task_dirs=[str(scratch)],
                task_file=str(script),
                arrays=(),
                hidden=data_locations(),
                env=env,
                cwd=str(scratch),
            )
        tag = new_tag()
        outcome = run_limited(
            [str(python), str(script)],
            hard_limit=timeout,
            log_path=log_path,
            env=env,
            cwd=scratch,
            kill_grace=2.0,
            tag=tag,
            seal=sandbox.seal(policy, tag=tag, memory_mb=None, view=view),
        )
    if outcome.timed_out:
        return False, f"still importing after {timeout:.0f} s; stopped"
    lines = [
        x.strip()
        for x in files.tail_of(log_path, LOG_TAIL).splitlines()
        if x.strip() and not x.startswith("[decathlon] exit")
    ]
    if outcome.returncode != 0:  # what it printed is the module's: one printable line
        last = " ".join(leaderboard.printable(lines[-1]).split()) if lines else ""
        return False, last[:300] or f"exit {outcome.returncode}"
    return True, ""


def worker_environment(n_jobs: int, device: str, tmp: Path | None = None) -> dict[str, str]:
    """The worker's environment: the harness's, less its Python paths and the variables that
    say where the data is, with thread counts set, and ``tmp`` (see
    :func:`decathlon.rundir.private_tmp`) as its TMPDIR, TEMP and TMP when given."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", *sandbox.DATA_LOCATION_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    threads = str(max(1, n_jobs))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = threads
    env["PYTHONUNBUFFERED"] = "1"
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if tmp is not None:
        for name in ("TMPDIR", "TEMP", "TMP"):
            env[name] = str(tmp)
    return env


def failure(
    outcome: Outcome, budget: Budget, predictions: Path, log_path: Path
) -> tuple[str, str] | None:
    """How the worker failed, as a row's ``(status, reason)``; ``None`` when it exited 0."""
    refused = (
        f"; the kernel refused it {outcome.processes_refused} new process(es) or thread(s) at"
        f" the cap of {outcome.max_processes} (--max-processes)"
        if outcome.processes_refused
        else ""
    )
    if outcome.timed_out:  # a pool that waits for a thread it was refused hangs till then
        return "timeout", f"killed at the hard limit of {budget.hard_limit_seconds:.0f} s{refused}"
    if outcome.memory_exceeded:
        how = "stopped by the kernel at" if outcome.memory_kernel else "killed over"
        return "error", f"{how} the memory cap of {budget.memory_mb} MB"
    if outcome.returncode != 0:
        return "error", _crash_reason(outcome, predictions, log_path) + refused
    return None


def _crash_reason(outcome: Outcome, predictions: Path, log_path: Path) -> str:
    error = rundir.read_task_json(predictions / rundir.WORKER_ERROR)
    if error and "type" in error and "message" in error:
        return f"{error['type']}: {error['message']}"
    if outcome.signal:
        try:
            name = signal.Signals(outcome.signal).name
        except ValueError:
            name = str(outcome.signal)
        return f"worker died from {name}; see {log_path}"
    return f"worker exited {outcome.returncode}; see {log_path}"
