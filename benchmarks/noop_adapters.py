"""Adapters that do nothing, or misbehave on purpose, for measuring the harness itself.

Register with ``make_registry(extra_plugins=[noop_adapters])`` (this folder on
``sys.path``); the worker mounts this single module by its file path. All run in the harness's
own environment.

- ``noop``: returns constant, valid scores for every split (a uniform distribution over the
  classes; 0.5 per label for multi-label). Option ``touch=true`` reads every image once first,
  so the worker pays for paging the memory-mapped arrays in.
- ``noop_sleeper``: ignores its budget and sleeps until the harness kills it.
- ``noop_stubborn``: starts two children that ignore SIGTERM (one in its own session, so only
  the task's tag finds it), then sleeps; the harness must SIGKILL them after ``kill_grace``.
- ``noop_hog``: one large allocation (``megabytes``, every page written at once), then sleeps:
  how far past ``--memory-mb`` a task gets before it is stopped.

Budgets: one hard-limit second in the ``quick`` profile, for the sleepers, so that
``scale_factor`` is the hard limit in seconds; 600 s for ``noop``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from decathlon.contract import MULTI_LABEL, Adapter, Predictions, Task
from decathlon.hookspecs import hookimpl

_ONE_SECOND = {"quick": {"hard_limit_seconds": 1}, "paper": {"hard_limit_seconds": 1}}

NOOP = Adapter(
    name="noop",
    run="noop_adapters:constant",
    description="constant valid scores, no work (harness overhead benchmark)",
    default_budgets={"quick": {"hard_limit_seconds": 600}, "paper": {"hard_limit_seconds": 600}},
    options={"touch": False},
    sizes=(28, 64, 128, 224),
)
SLEEPER = Adapter(
    name="noop_sleeper",
    run="noop_adapters:sleeper",
    description="ignores its budget and sleeps (budget precision benchmark)",
    default_budgets=_ONE_SECOND,
)
STUBBORN = Adapter(
    name="noop_stubborn",
    run="noop_adapters:stubborn",
    description="children that ignore SIGTERM (budget precision benchmark)",
    default_budgets=_ONE_SECOND,
)

HOG = Adapter(
    name="noop_hog",
    run="noop_adapters:hog",
    description="one large allocation, then sleeps (memory cap benchmark)",
    default_budgets={"quick": {"hard_limit_seconds": 120}, "paper": {"hard_limit_seconds": 120}},
    options={"megabytes": 4096},
)

_IGNORE_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(100000)"
)


@hookimpl
def decathlon_register_adapters(register) -> None:
    for adapter in (NOOP, SLEEPER, STUBBORN, HOG):
        register(adapter)


def _constant(n: int, task: Task) -> np.ndarray:
    k = task.dataset.n_outputs
    value = 0.5 if task.dataset.task == MULTI_LABEL else 1.0 / k
    return np.full((n, k), value)


def constant(task: Task) -> Predictions:
    """Constant scores for train, val and test; reads the images only with ``touch``."""
    touched = 0
    if task.options.get("touch"):
        touched = sum(
            int(np.asarray(x).sum(dtype=np.uint64) > 0)
            for x in (task.x_train, task.x_val, task.x_test)
        )
    return Predictions(
        train=_constant(len(task.x_train), task),
        val=_constant(len(task.x_val), task),
        test=_constant(len(task.x_test), task),
        info={"touched": touched},
    )


def sleeper(task: Task) -> Predictions:
    """Sleeps far past any budget."""
    time.sleep(100000)
    raise AssertionError("unreachable")


def stubborn(task: Task) -> Predictions:
    """Two SIGTERM-ignoring children (one in a new session), then sleeps."""
    for new_session in (False, True):
        subprocess.Popen(
            [sys.executable, "-c", _IGNORE_TERM],
            start_new_session=new_session,
            cwd=task.scratch_dir,
        )
    time.sleep(100000)
    raise AssertionError("unreachable")


def hog(task: Task) -> Predictions:
    block = np.ones(int(task.options["megabytes"]) * 2**20 // 8)  # one allocation, all pages
    while True:
        block[::512] += 1.0
        time.sleep(0.5)
