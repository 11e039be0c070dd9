"""Hook specifications: the reference for plugin authors.

A plugin is a module (or object) with functions marked ``@hookimpl`` and named like the specs
below. Plugins are found through the ``decathlon`` entry-point group, the same way for the
built-in adapters and for outside packages. Every hook name starts with ``decathlon_``. An
implementation may take any subset of a hook's parameters, by name (pluggy's rule).

Each hook's signature is also in the README's "Writing an adapter" section; a test keeps the two
the same.

This module runs inside adapter environments too (Python 3.9, numpy and pluggy only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import argparse

    from decathlon.contract import Adapter

PROJECT = "decathlon"
ENTRY_POINT_GROUP = "decathlon"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def decathlon_register_adapters(register: Callable[[Adapter], None]) -> None:
    """Register the adapters this plugin provides.

    Called once, when the registry of adapters is made. Names must be unique across all plugins;
    a clash is an error that names both plugins.

    :param register: call ``register(adapter)`` with a :class:`decathlon.contract.Adapter` for
        each adapter this plugin provides.
    """


@hookspec
def decathlon_add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this plugin's commands to ``python -m decathlon`` (as pytest's ``pytest_addoption``
    and datasette's ``register_commands``).

    Called each time the command line is parsed. A name that is already taken (a built-in
    command or another plugin's) is an error that names the plugin.

    :param commands: the command line's ``add_subparsers()`` object. Call
        ``commands.add_parser(NAME, help=...)``, add the command's arguments to the parser it
        returns, and ``parser.set_defaults(handler=FUNCTION)``: ``FUNCTION(args)`` gets the
        parsed ``argparse.Namespace`` and returns the exit code. Raise
        :class:`decathlon.errors.DecathlonError` for an expected problem (one line, exit code 2).
        Import heavy modules inside ``FUNCTION``, not here.
    """


@hookspec
def decathlon_task_finished(rows: list[dict[str, Any]], task_dir: Path) -> None:
    """Called in the harness process each time a task (adapter, dataset, seed) has ended.

    Use it to send results to an experiment tracker, for example. An exception here is logged and
    does not stop the run.

    :param rows: the task's leaderboard rows, one per split, columns as in
        :data:`decathlon.leaderboard.COLUMNS`, whatever their status (``ok``, ``timeout``,
        ``error`` or ``invalid``).
    :param task_dir: the task's folder: its log, predictions and artifacts.
    """


@hookspec
def decathlon_run_finished(run_dir: Path, leaderboard: Path) -> None:
    """Called once when a ``run`` command has gone through all its tasks.

    :param run_dir: the run directory.
    :param leaderboard: the run's ``leaderboard.csv``.
    """
