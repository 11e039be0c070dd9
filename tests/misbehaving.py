"""Adapters that misbehave on purpose, to exercise the runner's enforcement and checks.

A single-module plugin: register it with ``make_plugin_manager(extra_plugins=[misbehaving])``
(the worker mounts it by file path) or through a ``decathlon`` entry point. Every adapter runs
in the harness's own environment and ships tiny ``quick`` budgets, so no budgets file is needed.

Adapters that leave processes behind write their pids to ``output_dir/pids.txt`` so tests can
check that each is gone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from decathlon.contract import MULTI_LABEL, Adapter, Predictions, Task
from decathlon.hookspecs import hookimpl

log = logging.getLogger(__name__)

#: The hard limit of adapters that are meant to be stopped by it (seconds).
SHORT_LIMIT = 3
#: The hard limit of adapters that are meant to finish (seconds): generous for a loaded machine.
LONG_LIMIT = 60

_SHORT = {"quick": {"hard_limit_seconds": SHORT_LIMIT}}
_LONG = {"quick": {"hard_limit_seconds": LONG_LIMIT}}


def _adapter(name: str, function: str, budgets: dict[str, Any], **kwargs: Any) -> Adapter:
    return Adapter(
        name=name,
        run=f"misbehaving:{function}",
        description=f"misbehaves on purpose: {function}",
        default_budgets=budgets,
        version="0-test",
        **kwargs,
    )


ADAPTERS = (
    _adapter(
        "mis_good",
        "good",
        _LONG,
        options={
            "sleep_seconds": 0.0,
            "fail_on": [],
            "fail_while": "",
            "write_marker": "",
            "train_scores": True,
        },
    ),
    _adapter("mis_sleeper", "sleep_forever", _SHORT, options={"ignore_sigterm": False}),
    _adapter("mis_spawner", "spawn", _SHORT, options={"mode": "sleep"}),
    _adapter("mis_raiser", "raise_error", _LONG),
    _adapter("mis_segfault", "segfault", _LONG, options={"how": "kill"}),
    _adapter("mis_garbage", "garbage", _LONG, options={"mode": "nan"}),
    _adapter("mis_not_predictions", "not_predictions", _LONG),
    _adapter("mis_memory_hog", "memory_hog", _LONG, options={"megabytes": 1024}),
    _adapter("mis_peeker", "peek_for_test_labels", _LONG),
)

#: The message :func:`raise_error` raises, to find in the row's reason.
ERROR_MESSAGE = "the adapter broke on purpose (code 4711)"


@hookimpl
def decathlon_register_adapters(register) -> None:
    for adapter in ADAPTERS:
        register(adapter)


# ---------------------------------------------------------------------------- helpers


def scores_for(task: Task, n: int, rng: np.random.Generator) -> np.ndarray:
    """Valid scores for ``n`` images: rows of probabilities, or per-label ones for multi-label."""
    k = task.dataset.n_classes
    if task.dataset.task == MULTI_LABEL:
        return rng.random((n, k))
    return rng.dirichlet(np.ones(k), size=n)


def valid_predictions(task: Task, info: dict[str, Any] | None = None) -> Predictions:
    rng = np.random.default_rng(task.seed)
    return Predictions(
        train=scores_for(task, len(task.x_train), rng),
        val=scores_for(task, len(task.x_val), rng),
        test=scores_for(task, len(task.x_test), rng),
        info=dict(info or {}),
    )


def _record_pid(task: Task, pid: int) -> None:
    with open(task.output_dir / "pids.txt", "a", encoding="ascii") as handle:
        handle.write(f"{pid}\n")


# A grandchild that sleeps; with "setsid" it leaves the process group and ignores SIGTERM; with
# "daemon" it double-forks first, so that it is no longer a descendant of the worker.
_GRANDCHILD = """
import os, signal, sys, time
mode, pidfile = sys.argv[1], sys.argv[2]
if mode == "daemon" and os.fork() > 0:
    os._exit(0)
if mode in ("setsid", "daemon"):
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(pidfile, "a") as f:
    f.write(str(os.getpid()) + "\\n")
while True:
    time.sleep(1)
"""


# ---------------------------------------------------------------------------- the adapters


def good(task: Task) -> Predictions:
    """Valid random scores; ``sleep_seconds`` first; raises on the datasets in ``fail_on`` (only
    while the file ``fail_while`` exists, when it names one); ``write_marker`` names a file to
    create (to prove the adapter ran); ``train_scores`` false returns no train scores (they are
    optional)."""
    if task.options["write_marker"]:
        Path(task.options["write_marker"]).touch()
    time.sleep(float(task.options["sleep_seconds"]))
    fail_while = task.options.get("fail_while") or ""
    if task.dataset.flag in task.options["fail_on"] and (
        not fail_while or Path(fail_while).exists()
    ):
        raise RuntimeError(f"failing on {task.dataset.flag} as asked")
    predictions = valid_predictions(task, {"behaviour": "good"})
    if not task.options["train_scores"]:
        predictions.train = None
    return predictions


def sleep_forever(task: Task) -> Predictions:
    """Ignores its budget (and, with ``ignore_sigterm``, the polite request to stop)."""
    if task.options["ignore_sigterm"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)


def spawn(task: Task) -> Predictions:
    """Starts a grandchild that sleeps (``mode``: sleep, setsid, daemon), then sleeps forever;
    with mode ``return`` the grandchild sleeps but the adapter returns valid scores at once."""
    mode = task.options["mode"]
    pidfile = task.output_dir / "pids.txt"
    _record_pid(task, os.getpid())
    child = subprocess.Popen([sys.executable, "-c", _GRANDCHILD, mode, str(pidfile)])
    _record_pid(task, child.pid)
    deadline = time.time() + 20
    while time.time() < deadline:  # wait until the grandchild has written its own pid
        if len(pidfile.read_text().split()) >= 3:
            break
        time.sleep(0.05)
    if mode == "return":
        return valid_predictions(task)
    while True:
        time.sleep(1)


def raise_error(task: Task) -> Predictions:
    raise ValueError(ERROR_MESSAGE)


def segfault(task: Task) -> Predictions:
    """Dies from SIGSEGV: by signalling itself (``how`` kill) or by reading address 0 (ctypes)."""
    sys.stdout.flush()
    if task.options["how"] == "ctypes":
        import ctypes

        ctypes.string_at(0)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(30)
    raise AssertionError("still alive after SIGSEGV")


def garbage(task: Task) -> Predictions:
    """Breaks the score contract in the way ``mode`` names."""
    good = valid_predictions(task)
    n_test = len(task.x_test)
    mode = task.options["mode"]
    if mode == "nan":
        good.test[3, 0] = np.nan
    elif mode == "inf":
        good.val[0, -1] = np.inf
    elif mode == "columns":
        good.test = good.test[:, :1]
    elif mode == "rows":
        good.test = good.test[: n_test - 1]
    elif mode == "range":
        good.test = good.test * 3.0 - 1.0
    elif mode == "object":
        good.test = np.array([object()] * n_test, dtype=object)
    elif mode == "no_val":
        good.val = None  # type: ignore[assignment]
    elif mode == "strings":
        good.test = np.full(good.test.shape, "0.5")
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return good


def not_predictions(task: Task) -> Predictions:
    good = valid_predictions(task)
    return {"val": good.val, "test": good.test}  # type: ignore[return-value]


def memory_hog(task: Task) -> Predictions:
    """Allocates ``megabytes`` of memory, touches every page, holds it and sleeps."""
    block = np.ones(int(task.options["megabytes"]) * 2**20 // 8, dtype=np.float64)
    while True:
        block[::512] += 1.0
        time.sleep(0.5)


def peek_for_test_labels(task: Task) -> Predictions:
    """Looks everywhere it is given for test labels; raises if it finds any, else valid scores."""
    found = [name for name in ("y_test", "test_labels", "labels_test") if hasattr(task, name)]
    found += [name for name in vars(task) if "label" in name.lower() and "test" in name.lower()]
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))  # the worker's task file
    if sorted(spec["arrays"]) != ["x_test", "x_train", "x_val", "y_train", "y_val"]:
        found.append(f"task.json arrays {sorted(spec['arrays'])}")
    for path in spec["arrays"].values():  # nor in the folder of arrays the task points at
        found += [str(p) for p in Path(path).parent.iterdir() if "test_labels" in p.name]
    stack: list[Any] = [spec]
    while stack:  # nor under any key of the task file
        item = stack.pop()
        if isinstance(item, dict):
            found += [f"task.json key {k}" for k in item if k in ("y_test", "test_labels")]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    if found:
        raise AssertionError(f"test labels reached the adapter: {found}")
    return valid_predictions(task, {"peeked": "nothing found"})


# ---------------------------------------------------------------------------- test helpers


def tagged_processes(tag: str) -> list[Any]:
    """Live (non-zombie) processes whose environment carries the task tag ``tag``."""
    import psutil

    from decathlon.enforcement import TAG_VARIABLE

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TAG_VARIABLE) == tag:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def live_pids(pids: list[int]) -> list[int]:
    """The pids of ``pids`` that still run (zombies count as gone)."""
    import psutil

    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def task_tag(task_dir: Path) -> str:
    """The enforcement tag the runner gave a task (from its task.json)."""
    return json.loads((task_dir / "task.json").read_text(encoding="utf-8"))["tag"]


def recorded_pids(task_dir: Path) -> list[int]:
    path = task_dir / "output" / "pids.txt"
    return [int(p) for p in path.read_text(encoding="ascii").split()] if path.exists() else []


def install_entry_point(site: Path) -> dict[str, str]:
    """Make this module a third-party plugin found through the ``decathlon`` entry-point group.

    Writes a minimal ``.dist-info`` into ``site``; returns the environment variables under which
    a ``python -m decathlon`` subprocess finds it.
    """
    dist = site / "misbehaving_plugin-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: misbehaving-plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text("[decathlon]\nmisbehaving = misbehaving\n")
    here = str(Path(__file__).resolve().parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), here])
    return env
