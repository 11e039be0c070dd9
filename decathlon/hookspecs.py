"""Hook specifications: the reference for plugin authors.

A plugin is a module (or object) with functions marked ``@hookimpl`` and named like the specs
below. Plugins are found through the ``decathlon`` entry-point group, the same way for the
built-in adapters and for outside packages. Every hook name starts with ``decathlon_``.

This module runs inside adapter environments too (Python 3.9, numpy and pluggy only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pluggy

PROJECT = "decathlon"
ENTRY_POINT_GROUP = "decathlon"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def decathlon_register_adapters(register: Callable[..., None]) -> None:
    """Register the adapters this plugin provides.

    Called once, when the plugin manager is made. Call ``register(adapter)`` with a
    :class:`decathlon.contract.Adapter` for each adapter. Names must be unique across all plugins;
    a clash is an error that names both plugins. Return nothing.
    """


@hookspec
def decathlon_task_finished(rows: list[dict[str, Any]], task_dir: Path) -> None:
    """Called in the harness process each time a task (adapter, dataset, seed) has ended.

    ``rows`` are the task's leaderboard rows (one per split, columns as in
    :data:`decathlon.leaderboard.COLUMNS`), whatever their status: ``ok``, ``timeout``, ``error``
    or ``invalid``. ``task_dir`` holds the task's log, predictions and artifacts. Use it to send
    results to an experiment tracker, for example. Return nothing; an exception here is logged and
    does not stop the run.
    """


@hookspec
def decathlon_run_finished(run_dir: Path, leaderboard: Path) -> None:
    """Called once when a ``run`` command has gone through all its tasks.

    ``run_dir`` is the run directory and ``leaderboard`` its ``leaderboard.csv``. Return nothing.
    """
