"""The runner: turns (adapter, datasets, seeds) into isolated, budget-enforced tasks and rows.

It keeps the run's plan and its loop: resolve each task's budget, load its data, start its
worker through :mod:`decathlon.launcher`, score what it wrote, record the rows. The run
directory's layout (``config.json``, ``leaderboard.csv``, ``tasks/DATASET/seedN/`` with the
task's ``task.json``, ``log.txt``, ``predictions/``, ``evaluator/``, ``output/`` and, written
last, ``result.json``) belongs to :mod:`decathlon.rundir`.

``--resume`` skips every task that has a ``result.json`` and reruns the others from scratch.
With ``--retry-failed`` it also reruns the tasks whose rows are ``error``, ``timeout`` or
``invalid``; what the earlier attempt wrote moves to ``tasks/DATASET/seedN/attempts/K/`` first.

Longer than 600 lines: the plan and the loop are one concept (pluggy keeps its ``_manager.py``
whole for the same reason); the helpers below the class (a task's failed rows, scoring its
predictions, the size check, the device, the host facts recorded in ``config.json``) serve the
runner alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import types
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import decathlon
from decathlon import budgets as budgets_module
from decathlon import (
    datasets,
    environments,
    files,
    launcher,
    leaderboard,
    metrics,
    rundir,
    sandbox,
    transfer,
)
from decathlon.contract import Adapter, Budget, DatasetInfo
from decathlon.enforcement import new_tag, run_limited
from decathlon.errors import DecathlonError
from decathlon.plugins import Registry

log = logging.getLogger(__name__)

#: Statuses that ``--retry-failed`` reruns.
RETRY_STATUSES = ("error", "timeout", "invalid")

#: How a run found its data folder or metadata file when none was given (``RunConfig``'s
#: ``data_dir_from`` and ``info_from``).
DATA_DIR_VARIABLE = "DECATHLON_DATA_DIR"
DEFAULT = "default"
INFO_VARIABLE = "DECATHLON_INFO"
BUNDLED = "bundled"


class UnknownSettingsError(DecathlonError):
    """A configuration (a run's ``config.json``, a Dask client's) holding settings this
    harness has no :class:`RunConfig` field for: a newer harness wrote it, and a run here would
    go on without them. ``names`` are those settings."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"written by a newer decathlon: unknown settings {', '.join(names)}")


@dataclass
class RunConfig:
    """Everything a run was asked to do; saved as ``config.json`` and reused by ``--resume``."""

    adapter: str
    profile: str = "paper"
    size: int = datasets.DEFAULT_SIZE  # image side: 28, or 64 / 128 / 224 (MedMNIST+)
    datasets: tuple[str, ...] | None = None  # None: the profile's, else all ten
    seeds: tuple[int, ...] | None = None  # None: the profile's
    scale_factor: float = 1.0
    data_dir: str | None = None
    # How data_dir was found when it was not given (--data-dir, RunConfig): DATA_DIR_VARIABLE or
    # DEFAULT. The runner records the folder by its full name either way, so that a resume reads
    # it without the variable; a Dask worker still uses its own unless it was given.
    data_dir_from: str | None = None
    mirror: str | None = None
    # config.json keeps the mirror without credentials or query (transfer.shown_url), and says
    # here when it took something out: a resume then downloads from it only with --mirror again
    mirror_withheld: bool = False
    download: bool = True
    redownload: bool = False  # delete each file, download and check it again (once per run)
    allow_unverified: bool = False
    device: str = "auto"
    n_jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory_mb: int | None = None
    max_processes: int = sandbox.DEFAULT_MAX_PROCESSES  # 0: no cap
    options: dict[str, Any] = field(default_factory=dict)
    budgets_path: str | None = None
    info_path: str | None = None
    # How info_path was found when it was not given (check, RunConfig): INFO_VARIABLE or BUNDLED
    # (the harness's own published metadata, read from wherever the harness is installed now).
    info_from: str | None = None
    kill_grace: float = 5.0
    sandbox: str = "auto"  # auto | required | off: see decathlon.sandbox
    network: str = "on"  # off: no network inside a sealed task

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def data_dir_given(self) -> bool:
        """Whether the data folder was named (``--data-dir``, ``RunConfig.data_dir``), not found
        from ``$DECATHLON_DATA_DIR`` or the default: Dask workers read a named one at its path,
        and each uses its own folder otherwise."""
        return self.data_dir is not None and self.data_dir_from is None

    @classmethod
    def unknown_fields(cls, data: dict[str, Any]) -> list[str]:
        """The settings of a ``config.json`` this harness has no field for: a newer harness
        wrote it (every field any earlier layout held is still one), and :meth:`from_json`
        would drop them."""
        return sorted(set(data) - {f.name for f in dataclasses.fields(cls)})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        """The configuration ``config.json`` holds; ValueError names a field of another type,
        :class:`UnknownSettingsError` the settings this harness has no field for (never dropped
        without a word, here or on a Dask worker)."""
        unknown = cls.unknown_fields(data)
        if unknown:
            raise UnknownSettingsError(unknown)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values = {k: v for k, v in data.items() if k in fields}
        for key, value in values.items():
            if not _conforms(value, hints[key]):
                raise ValueError(f"'{key}' is {value!r}, not {fields[key].type}")
        for key in ("datasets", "seeds"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON is of a :class:`RunConfig` field's type."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, list | tuple) and all(_conforms(v, item) for v in value)
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and math.isfinite(value)
    return isinstance(value, hint)


@dataclass(frozen=True)
class PlannedTask:
    dataset: DatasetInfo
    seed: int
    budget: Budget

    @property
    def key(self) -> str:
        return f"{self.dataset.flag}/seed{self.seed}"


class Reporter(Protocol):
    """What the runner tells a display (the command line's progress bar)."""

    def run_started(self, tasks: Sequence[PlannedTask], done: int) -> None: ...
    def message(self, text: str) -> None: ...
    def task_started(self, task: PlannedTask) -> None: ...
    def task_tick(self, task: PlannedTask, elapsed: float) -> None: ...
    def task_finished(self, task: PlannedTask, rows: list[dict[str, Any]]) -> None: ...
    def run_finished(self) -> None: ...


class NullReporter:
    def run_started(self, tasks: Sequence[PlannedTask], done: int) -> None:
        pass

    def message(self, text: str) -> None:
        log.info(text)

    def task_started(self, task: PlannedTask) -> None:
        pass

    def task_tick(self, task: PlannedTask, elapsed: float) -> None:
        pass

    def task_finished(self, task: PlannedTask, rows: list[dict[str, Any]]) -> None:
        pass

    def run_finished(self) -> None:
        pass


class Executor(Protocol):
    """Runs a run's pending tasks somewhere else (a cluster); see ``Runner.run(executor=...)``.

    ``run`` must call ``runner.finish_task(run_dir, task, rows)`` exactly once per task, in the
    calling process, with the rows of ``runner.execute`` run wherever it likes.
    """

    def run(self, runner: Runner, run_dir: Path, tasks: Sequence[PlannedTask]) -> None: ...


class Runner:
    """Runs one adapter over datasets and seeds; see the module docstring for what it writes."""

    def __init__(
        self,
        config: RunConfig,
        registry: Registry,
        *,
        reporter: Reporter | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.reporter: Reporter = reporter or NullReporter()
        self.adapter: Adapter = registry.get(config.adapter)
        check_size(self.adapter, config.size)
        self.catalog = self._catalog(config)
        self.budgets = budgets_module.load(
            Path(config.budgets_path) if config.budgets_path else None,
            datasets=(*self.catalog.flags, *self.catalog.aliases),  # v1 names accepted too
        )
        self.budgets.check_adapters(registry.adapters)
        # The file read, by its full name: a resume from another folder (where ./budgets.toml is
        # another file, or none) reads the same one.
        config.budgets_path = str(self.budgets.path.resolve())
        self.profile = self.budgets.profile(config.profile)
        self.options = self.budgets.options(config.profile, self.adapter, config.options)
        if config.data_dir is None:
            # Recorded by its full name, however it was found: a resume without the variable (or
            # with another one) reads the folder the run started with.
            variable = os.environ.get(DATA_DIR_VARIABLE)
            config.data_dir = str(datasets.full_data_dir(datasets.default_data_dir()))
            config.data_dir_from = DATA_DIR_VARIABLE if variable else DEFAULT
        self.data_dir = Path(config.data_dir)
        self.device = resolve_device(config.device, self.adapter)
        self.sandbox = sandbox.Policy.resolve(
            config.sandbox,
            config.network,
            memory_mb=config.memory_mb,
            max_processes=config.max_processes,
        )
        self._loaded: tuple[str, datasets.LoadedDataset | DecathlonError] | None = None
        self._redownloaded: set[str] = set()

    @staticmethod
    def _catalog(config: RunConfig) -> datasets.Catalog:
        """The metadata file the run reads, recorded in ``config`` by its full name however it
        was found (``info_path``, ``$DECATHLON_INFO``, the bundled file), so that a resume reads
        the same one; the bundled file is read from where the harness is installed now."""
        if config.info_path and config.info_from == BUNDLED:
            catalog = datasets.Catalog.load(datasets.BUNDLED_INFO)
        elif config.info_path:
            catalog = datasets.Catalog.load(Path(config.info_path))
        else:  # a new run, or one whose config.json is older than this field
            catalog = datasets.Catalog.load()
            bundled = catalog.path == datasets.BUNDLED_INFO
            config.info_from = BUNDLED if bundled else INFO_VARIABLE
        config.info_path = str(catalog.path.resolve())
        return catalog

    # ------------------------------------------------------------------ planning

    def flags(self) -> list[str]:
        """The run's datasets, each once (``pathmnist,PathMNIST`` or a v1 name beside its v2
        one would otherwise give two tasks writing one folder)."""
        chosen = self.config.datasets or self.profile.datasets or tuple(self.catalog.flags)
        return list(dict.fromkeys(self.catalog.resolve(name) for name in chosen))

    def seeds(self) -> tuple[int, ...]:
        seeds = self.config.seeds if self.config.seeds is not None else self.profile.seeds
        return tuple(dict.fromkeys(seeds))

    def plan(self) -> list[PlannedTask]:
        """Every task of the run with its budget, in run order; nothing is started."""
        tasks: list[PlannedTask] = []
        for flag in self.flags():
            info = self.catalog.info(flag, self.config.size)
            budget = self.budgets.resolve(
                self.config.profile,
                self.adapter,
                info,
                scale_factor=self.config.scale_factor,
                memory_mb=self.config.memory_mb,
            )
            tasks.extend(PlannedTask(info, seed, budget) for seed in self.seeds())
        return tasks

    # ------------------------------------------------------------------ running

    def run(
        self,
        run_dir: Path,
        *,
        resume: bool = False,
        executor: Executor | None = None,
        retry_failed: bool = False,
    ) -> Path:
        """Run every planned task not yet finished in ``run_dir``; return the leaderboard path.

        Without ``executor`` the tasks run one after another here; an executor (such as
        :class:`decathlon.distributed.DaskExecutor`) runs them elsewhere and records each one
        with :meth:`finish_task` in this process. ``retry_failed`` (with ``resume``) also
        reruns the finished tasks whose status is in :data:`RETRY_STATUSES`, keeping what each
        earlier attempt wrote under its ``attempts/`` folder.
        """
        run_dir = Path(run_dir).resolve()  # the worker runs in another folder
        tasks = self.plan()
        _refuse_a_second_start(run_dir, resume)  # before anything is written, the lock included
        with rundir.hold(run_dir):
            return self._run_held(run_dir, tasks, resume, executor, retry_failed)

    def _run_held(
        self,
        run_dir: Path,
        tasks: list[PlannedTask],
        resume: bool,
        executor: Executor | None,
        retry_failed: bool,
    ) -> Path:
        self._prepare_run_dir(run_dir, resume)
        local = executor is None or self.config.data_dir_given  # else the workers' folders
        if self.config.mirror_withheld and local:
            todo = self.pending(run_dir, tasks)
            if retry_failed:
                todo += [task for task, _ in self.failed(run_dir, tasks)]
            self._refuse_a_mirror_withheld(run_dir, todo)
        if retry_failed:
            self._retry_failed(run_dir, tasks)
        if resume:
            for task in self.pending(run_dir, tasks):
                folder = self.task_dir(run_dir, task)
                if (folder / rundir.RESULT).exists():
                    # Truncated or edited: the task runs again; the damaged file is kept.
                    kept = rundir.archive_attempt(folder)
                    self.reporter.message(
                        f"{folder / rundir.RESULT} cannot be read as a task's result: running"
                        f" the task again (the file is kept in {kept})"
                    )
                self._clear_scratch(folder)
        done = sum(1 for t in tasks if rundir.is_finished(self.task_dir(run_dir, t)))
        self.reporter.run_started(tasks, done)
        if self.sandbox.notice:
            self.reporter.message(self.sandbox.notice)
        if executor is not None:
            executor.run(self, run_dir, self.pending(run_dir, tasks))
        else:
            if not environments.is_ready(self.adapter):
                self.reporter.message(
                    f"first use of '{self.adapter.name}': building its environment (once)"
                )
            environments.build(self.adapter, on_step=self.reporter.message)
            self._record_environment(run_dir)
            for task in self.pending(run_dir, tasks):
                self.reporter.task_started(task)
                rows = self.execute(run_dir, task)
                self.finish_task(run_dir, task, rows)
        path = self.write_leaderboard(run_dir)
        self.reporter.run_finished()
        try:
            self.registry.pm.hook.decathlon_run_finished(run_dir=run_dir, leaderboard=path)
        except (Exception, SystemExit):  # a plugin's sys.exit() must not end the command
            log.exception("a plugin failed in decathlon_run_finished")
        return path

    def _to_download(self, flag: str) -> bool:
        """Whether loading ``flag`` downloads its file from a mirror whose credentials or query
        config.json did not keep (a resume without --mirror)."""
        if not (self.config.mirror and self.config.mirror_withheld):
            return False
        redownload = self.config.redownload and flag not in self._redownloaded
        missing = not datasets.dataset_file(self.data_dir, flag, self.config.size).is_file()
        return redownload or (missing and self.config.download)

    def _withheld_message(self, files: str) -> str:
        return (
            f"{files} must be downloaded from the mirror {self.config.mirror}, whose"
            " credentials or query config.json does not keep: resume with --mirror URL again"
        )

    def _refuse_a_mirror_withheld(self, run_dir: Path, pending: Sequence[PlannedTask]) -> None:
        """One line before any task runs, rather than an error row for each dataset."""
        flags = [f for f in dict.fromkeys(t.dataset.flag for t in pending) if self._to_download(f)]
        if flags:
            names = ", ".join(datasets.file_name(f, self.config.size) for f in flags)
            raise DecathlonError(f"{run_dir}: {self._withheld_message(names)}")

    def _record_environment(self, run_dir: Path) -> None:
        """Add the environment's build record to config.json once it exists (first use)."""
        record = rundir.read_config(run_dir)
        if record and not record.get("adapter", {}).get("environment_built"):
            built = environments.record(self.adapter)
            if built:
                record.setdefault("adapter", {})["environment_built"] = built
                rundir.write_config(run_dir, record)

    def failed(self, run_dir: Path, tasks: Sequence[PlannedTask]) -> list[tuple[PlannedTask, str]]:
        """The finished tasks whose status is in :data:`RETRY_STATUSES`, with that status."""
        out = []
        for task in tasks:
            rows = rundir.read_rows(self.task_dir(run_dir, task))
            if rows is None:
                continue
            test = next((r for r in rows if r.get("split") == "test"), rows[0] if rows else {})
            if test.get("status") in RETRY_STATUSES:
                out.append((task, str(test["status"])))
        return out

    def _retry_failed(self, run_dir: Path, tasks: Sequence[PlannedTask]) -> None:
        """Move each failed task's files to ``attempts/K/`` (so it is pending again); say so."""
        failed = self.failed(run_dir, tasks)
        if not failed:
            self.reporter.message("--retry-failed: no error, timeout or invalid tasks to retry")
            return
        counts = {s: sum(1 for _, st in failed if st == s) for s in RETRY_STATUSES}
        what = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        for task, _ in failed:
            rundir.archive_attempt(self.task_dir(run_dir, task))
        # At once, not when the first retried task ends: a harness killed before then would
        # leave the leaderboard showing rows of attempts that are now archived.
        self.write_leaderboard(run_dir)
        self.reporter.message(
            f"retrying {len(failed)} failed task{'s' if len(failed) > 1 else ''} ({what}); "
            f"earlier attempts kept in tasks/<dataset>/seed<N>/{rundir.ATTEMPTS}/"
        )

    def pending(self, run_dir: Path, tasks: Sequence[PlannedTask]) -> list[PlannedTask]:
        """The tasks without a readable ``result.json``: what a run (or a resumed one) still has
        to do."""
        return [t for t in tasks if not rundir.is_finished(self.task_dir(run_dir, t))]

    def execute(self, run_dir: Path, task: PlannedTask) -> list[dict[str, Any]]:
        """Run one task to its rows: load (or download) its data, start and watch the worker,
        score. Writes only inside the task's folder; any executor may call it."""
        flag = task.dataset.flag
        if self._loaded is None or self._loaded[0] != flag:
            self._loaded = None  # one dataset in memory at a time
            self._loaded = (flag, self._load(flag))
        return self._run_task(run_dir, task, self._loaded[1])

    def _load(self, flag: str) -> datasets.LoadedDataset | DecathlonError:
        if self._to_download(flag):  # on a Dask worker, whose data folder the client cannot see
            name = datasets.file_name(flag, self.config.size)
            return DecathlonError(self._withheld_message(name))
        redownload = self.config.redownload and flag not in self._redownloaded
        self._redownloaded.add(flag)
        try:
            return datasets.load(
                self.catalog,
                flag,
                self.data_dir,
                size=self.config.size,
                mirror=self.config.mirror,
                download=self.config.download,
                allow_unverified=self.config.allow_unverified,
                redownload=redownload,
                progress=getattr(self.reporter, "download_progress", True),
                cache_root=environments.home() / "arrays",
            )
        except DecathlonError as exc:
            # Not logged: the task's rows carry it, and the display prints it once.
            log.debug("%s: %s", flag, exc)
            return exc

    def _clear_scratch(self, task_dir: Path) -> None:
        """Remove the scratch folder an interrupted task left, after stopping its worker."""
        rundir.clear_scratch(task_dir, self.config.kill_grace)

    def _prepare_run_dir(self, run_dir: Path, resume: bool) -> None:
        config_path = rundir.config_path(run_dir)
        _refuse_a_second_start(run_dir, resume)  # again, now that the folder is held
        if resume and not config_path.exists():
            raise DecathlonError(f"{run_dir} holds no run to resume (no config.json)")
        if resume:
            self._check_settings(run_dir)
            self._check_budgets_file(run_dir)
            self._check_options(run_dir)
        rundir.tasks_dir(run_dir).mkdir(parents=True, exist_ok=True)
        if not config_path.exists():
            rundir.write_config(run_dir, self.record())

    def _check_settings(self, run_dir: Path) -> None:
        """Refuse to finish a run that a newer harness started with settings this one has no
        field for (:class:`UnknownSettingsError`): the rest would run without them."""
        recorded = (rundir.read_config(run_dir) or {}).get("config") or {}
        unknown = RunConfig.unknown_fields(recorded)
        if unknown:
            raise DecathlonError(
                f"{rundir.config_path(run_dir)}: {UnknownSettingsError(unknown)};"
                " resume it with that version"
            )

    def _budgets_sha256(self) -> str:
        return hashlib.sha256(self.budgets.path.read_bytes()).hexdigest()

    def _check_budgets_file(self, run_dir: Path) -> None:
        """Refuse to finish a run under budgets other than those it started with."""
        recorded = (rundir.read_config(run_dir) or {}).get("budgets_file") or {}
        now = self._budgets_sha256()
        if recorded.get("sha256") not in (None, now):
            raise DecathlonError(
                f"{self.budgets.path} has changed since this run started (config.json records"
                f" sha256 {str(recorded['sha256'])[:12]}..., it is now {now[:12]}...): its"
                " remaining tasks would run under other budgets; restore the file, or start a"
                " new run"
            )

    def _check_options(self, run_dir: Path) -> None:
        """Refuse to finish a run with adapter options other than those it started with: the
        adapter's defaults live in its code, which an upgrade (of the harness, of a plugin) may
        have changed since, whatever the budgets file says."""
        recorded = ((rundir.read_config(run_dir) or {}).get("adapter") or {}).get("options")
        if not isinstance(recorded, dict):
            return  # a config.json older than the record
        now = json.loads(files.json_text(self.options))  # as config.json spells them
        # An option the adapter has gained or lost since is a change too: the earlier tasks ran
        # without it (or with it), the remaining ones would run with its default (or without).
        absent = object()
        changed = sorted(
            k for k in recorded.keys() | now.keys() if recorded.get(k, absent) != now.get(k, absent)
        )
        if changed:
            key = changed[0]

            def value(options: dict[str, Any]) -> str:
                return repr(options[key]) if key in options else "absent"

            raise DecathlonError(
                f"{rundir.config_path(run_dir)}: adapter '{self.adapter.name}' option '{key}' is"
                f" {value(now)} now, {value(recorded)} when the run started"
                + (f" ({len(changed) - 1} more changed)" if len(changed) > 1 else "")
                + ": its remaining tasks would run otherwise; restore the adapter, or start a"
                " new run"
            )

    def record(self) -> dict[str, Any]:
        """config.json: the request, the adapter, the budgets file, versions, host and devices.
        The mirror is written without its credentials or query: the file is shared."""
        config = self.config.to_json()
        if self.config.mirror and transfer.has_secrets(self.config.mirror):
            config["mirror"] = transfer.shown_mirror(self.config.mirror)
            config["mirror_withheld"] = True
        return {
            "config": config,
            "adapter": {
                "name": self.adapter.name,
                "run": self.adapter.run,
                "version": self.adapter.version,
                "plugin": self.registry.origin.get(self.adapter.name),
                "environment": dataclasses.asdict(self.adapter.environment)
                if self.adapter.environment
                else None,
                "options": self.options,
                "environment_built": environments.record(self.adapter),
            },
            "budgets_file": {
                "path": str(self.budgets.path),
                "sha256": self._budgets_sha256(),
            },
            "datasets": self.flags(),
            "size": self.config.size,
            "seeds": list(self.seeds()),
            "device": self.device,
            "sandbox": self.sandbox.record(),
            "versions": versions(),
            "host": host_facts(),
            "started_at": _now(),
        }

    def task_dir(self, run_dir: Path, task: PlannedTask) -> Path:
        """The task's folder in the run directory."""
        return rundir.task_dir(run_dir, task.dataset.flag, task.seed)

    def base_row(self, run_dir: Path, task: PlannedTask) -> dict[str, Any]:
        """The leaderboard columns a task's rows share, whatever their status."""
        return {
            "run_id": run_dir.name,
            "adapter": self.adapter.name,
            "dataset": task.dataset.flag,
            "size": task.dataset.size,
            "seed": task.seed,
            "task": task.dataset.task,
            "profile": self.config.profile,
            "budget": task.budget.describe(),
            "hard_limit_s": task.budget.hard_limit_seconds,
            "device": self.device,
            "sealed": self.sandbox.sealed,
            "adapter_version": self.adapter.version or decathlon.__version__,
            "harness_version": decathlon.__version__,
            "python": self.adapter.environment.python
            if self.adapter.environment
            else platform.python_version(),
            "environment": environments.provenance(self.adapter),
        }

    def _run_task(
        self, run_dir: Path, task: PlannedTask, data: datasets.LoadedDataset | DecathlonError
    ) -> list[dict[str, Any]]:
        base = self.base_row(run_dir, task)
        task_dir = self.task_dir(run_dir, task)
        if task_dir.exists():  # left by a run that was killed mid-task: start it over
            rundir.clear_stale_task(task_dir, self.config.kill_grace)
        task_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(data, DecathlonError):
            return failed_rows(base, "error", f"data: {data}", elapsed=0.0)
        base["n_images"] = int(sum(data.info.n_samples.values()))
        base["data_verified"] = data.verified
        # The worker's folder of arrays holds no test labels: the harness scores from memory.
        worker_keys = tuple(k for k in datasets.KEYS if k != "test_labels")
        try:
            arrays = datasets.materialize(data, environments.home() / "arrays", worker_keys)
        except DecathlonError as exc:  # a row, as a file that cannot be loaded is
            return failed_rows(base, "error", f"data: {exc}", elapsed=0.0)
        scratch = task_dir / rundir.SCRATCH
        output = task_dir / rundir.OUTPUT
        predictions = task_dir / rundir.PREDICTIONS
        for folder in (scratch, output, predictions):
            folder.mkdir()
        deadline = time.time() + task.budget.hard_limit_seconds
        tag = new_tag()
        spec = {
            "tag": tag,
            "adapter": {"name": self.adapter.name, "run": self.adapter.run},
            "mounts": launcher.mounts_for(self.adapter),
            "dataset": dataclasses.asdict(data.info),
            # Test labels are deliberately absent: the harness alone scores.
            "arrays": {
                "x_train": str(arrays["train_images"]),
                "y_train": str(arrays["train_labels"]),
                "x_val": str(arrays["val_images"]),
                "y_val": str(arrays["val_labels"]),
                "x_test": str(arrays["test_images"]),
            },
            "budget": dataclasses.asdict(task.budget),
            "seed": task.seed,
            "scratch_dir": str(scratch),
            "output_dir": str(output),
            "predictions_dir": str(predictions),
            "device": self.device,
            "n_jobs": self.config.n_jobs,
            "deadline": deadline,
            "options": self.options,
            "sealed": self.sandbox.sealed,
        }
        # Sealed, the task's /tmp is a private one already (see decathlon.sandbox). Unsealed,
        # it has one of its own, named in task.json for the next run to remove if this
        # harness is killed before it does.
        tmp = None if self.sandbox.sealed else rundir.private_tmp()
        try:  # from here on, the folders go whatever stops the task (a task.json not written)
            spec.update(rundir.tmp_record(tmp))
            task_file = task_dir / rundir.TASK_SPEC
            rundir.write_json(task_file, spec)
            python = str(environments.interpreter(self.adapter))
            # Sealed, the harness's TMPDIR may name a folder the sandbox hides: /tmp it is.
            env = launcher.worker_environment(self.config.n_jobs, self.device, tmp or Path("/tmp"))
            outcome = run_limited(
                launcher.command(python, task_file),
                hard_limit=task.budget.hard_limit_seconds,
                log_path=task_dir / rundir.LOG,
                env=env,
                cwd=scratch,
                memory_mb=task.budget.memory_mb,
                kill_grace=self.config.kill_grace,
                on_tick=lambda elapsed: self.reporter.task_tick(task, elapsed),
                tag=tag,
                seal=self._seal(run_dir, task_dir, spec, python, env, tag, task.budget.memory_mb),
            )
        finally:  # also on Ctrl-C or SIGTERM, once run_limited has taken the tree down
            rundir.remove_tree(scratch)
            if tmp is not None:
                rundir.remove_tree(tmp)
        base["elapsed_s"] = round(outcome.elapsed, 2)
        notes = rundir.read_task_json(predictions / rundir.WORKER_INFO) or {}
        failure = launcher.failure(outcome, task.budget, predictions, task_dir / rundir.LOG)
        if failure is not None:
            status, reason = failure
            unimportable = reason.startswith(("ModuleNotFoundError", "ImportError"))
            if unimportable and self.adapter.environment:
                reason += f"; a damaged environment? `decathlon setup --force {self.adapter.name}`"
            crashed = not (outcome.timed_out or outcome.memory_exceeded)
            return failed_rows(base, status, reason, notes=None if crashed else notes)
        return score(base, data, predictions, task_dir / rundir.EVALUATOR, run_dir.name, notes)

    def _seal(
        self,
        run_dir: Path,
        task_dir: Path,
        spec: dict[str, Any],
        python: str,
        env: dict[str, str],
        tag: str,
        memory_mb: int | None,
    ) -> sandbox.Seal:
        """How the task's worker is sealed: it sees its interpreter, the code it imports, its
        folder, its arrays and the folders its options name (``model_dir``); never the data
        folder, the caches or the rest of the run."""
        view = None
        if self.sandbox.sealed:
            hidden = [str(run_dir), *launcher.data_locations(self.data_dir)]
            # Paths only from the options the user gave (the budgets file, the command line),
            # not from the adapter's defaults: neither its options nor its default budgets.
            given = {**self.budgets.file_options(self.config.profile, self.adapter.name)}
            given.update(self.config.options)
            view = sandbox.task_view(
                python=python,
                code=[str(launcher.WORKER.parent), *spec["mounts"].values()],
                task_dirs=[spec["scratch_dir"], spec["output_dir"], spec["predictions_dir"]],
                task_file=str(task_dir / rundir.TASK_SPEC),
                shared=sandbox.option_paths(given, hidden),
                arrays=spec["arrays"].values(),
                hidden=hidden,
                env=env,
                cwd=spec["scratch_dir"],
                gpu=spec["device"] == "cuda",
            )
        return sandbox.seal(self.sandbox, tag=tag, memory_mb=memory_mb, view=view)

    def finish_task(self, run_dir: Path, task: PlannedTask, rows: list[dict[str, Any]]) -> None:
        """Record a task's rows (result.json, then the leaderboard) and tell plugins and display."""
        task_dir = self.task_dir(run_dir, task)
        stamp = _now()
        for row in rows:
            row["finished_at"] = stamp
        rundir.write_rows(task_dir, rows)
        self.write_leaderboard(run_dir)
        try:
            self.registry.pm.hook.decathlon_task_finished(rows=rows, task_dir=task_dir)
        except (Exception, SystemExit):  # a plugin's sys.exit() must not end the run
            log.exception("a plugin failed in decathlon_task_finished")
        self.reporter.task_finished(task, rows)

    def write_leaderboard(self, run_dir: Path) -> Path:
        """Gather every finished task's rows, add the decathlon means, write leaderboard.csv."""
        rows = rundir.collect_rows(run_dir)
        path = rundir.leaderboard_path(run_dir)
        # Over the ten, whatever the metadata file holds: never a "decathlon" mean of fewer.
        rows += leaderboard.summarize(rows, leaderboard.DATASETS)
        leaderboard.write(path, rows)
        return path


def failed_rows(
    base: dict[str, Any],
    status: str,
    reason: str,
    *,
    elapsed: float | None = None,
    notes: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for split in leaderboard.SPLITS:
        row = dict(base, split=split, status=status, reason=_one_line(reason))
        if elapsed is not None:
            row["elapsed_s"] = elapsed
        if notes:
            row["notes"] = files.json_text(notes, sort_keys=True)
        rows.append(row)
    return rows


def score(
    base: dict[str, Any],
    data: datasets.LoadedDataset,
    predictions: Path,
    evaluator_dir: Path,
    run_id: str,
    notes: dict[str, Any],
) -> list[dict[str, Any]]:
    """Check the adapter's scores against the contract and compute AUC and ACC per split."""
    info = data.info
    loaded: dict[str, np.ndarray] = {}
    for split in leaderboard.SPLITS:
        path = predictions / f"{split}.npy"
        # Float64 scores, or complex128 at the most (refused below), plus the file's header.
        limit = 16 * info.n_samples[split] * max(1, info.n_outputs) + 2**20
        try:
            raw = files.read_left_by_task(path, limit)
        except FileNotFoundError:
            if split != "train":
                return failed_rows(base, "invalid", f"no {split} scores returned", notes=notes)
            continue
        except (OSError, ValueError) as exc:
            return failed_rows(base, "invalid", f"{split} scores refused: {exc}", notes=notes)
        try:
            scores = files.load_npy(raw)
        except (ValueError, OSError, EOFError, MemoryError) as exc:
            reason = f"{split} scores unreadable: {exc or type(exc).__name__}"
            return failed_rows(base, "invalid", reason, notes=notes)
        problem = metrics.check_scores(scores, info.n_samples[split], info)
        if problem:
            return failed_rows(base, "invalid", f"{split} {problem}", notes=notes)
        loaded[split] = scores.astype(np.float64)
    results: dict[str, tuple[float, float]] = {}
    undefined: dict[str, str] = {}
    for split, scores in loaded.items():
        y_true = data.arrays[f"{split}_labels"]
        with warnings.catch_warnings():  # scikit-learn warns, then gives NaN, for one class
            warnings.simplefilter("ignore")
            auc_value = metrics.auc(info.task, y_true, scores)
            results[split] = (auc_value, metrics.acc(info.task, y_true, scores))
        if math.isnan(auc_value):
            why = metrics.why_auc_undefined(info.task, y_true, info.n_outputs)
            undefined[split] = f"{split} AUC is undefined: the {split} labels hold {why}"
            if split != "train":  # as getAUC gives it, NaN; train scores are optional
                return failed_rows(base, "error", undefined[split], notes=notes)
    rows = []
    for split in leaderboard.SPLITS:
        row = dict(base, split=split, status="ok", reason="")
        if notes:
            row["notes"] = files.json_text(notes, sort_keys=True)
        if split not in loaded:  # train scores are optional: a status of its own, no scores
            row["status"] = leaderboard.NOT_GIVEN
            row["reason"] = "the adapter gave no train scores"
            rows.append(row)
            continue
        row["auc"], row["acc"] = results[split]
        if split in undefined:  # the train row keeps its ACC; val and test are scored
            row["auc"], row["reason"] = None, undefined[split]
            rows.append(row)
            continue
        metrics.save_evaluator_csv(
            evaluator_dir,
            info.flag,
            split,
            loaded[split],
            row["auc"],
            row["acc"],
            run_id,
            size=info.size,
        )
        rows.append(row)
    return rows


def check_size(adapter: Adapter, size: int) -> None:
    """Refuse, in one line, a size that MedMNIST does not publish or the adapter does not take."""
    datasets.check_size(size)
    if size not in adapter.sizes:
        supported = ", ".join(str(s) for s in adapter.sizes)
        raise DecathlonError(
            f"adapter '{adapter.name}' does not take {size}x{size} images (it declares sizes"
            f" {supported}); choose --size {adapter.sizes[0]}"
            + (" or another adapter" if len(adapter.sizes) == 1 else "")
        )


def resolve_device(requested: str, adapter: Adapter) -> str:
    """'cpu' or 'cuda': ``auto`` gives CUDA to adapters that use a GPU when one is present."""
    if requested not in ("auto", "cpu", "cuda"):
        raise DecathlonError(f"unknown device '{requested}'; use auto, cpu or cuda")
    if requested != "auto":
        return requested
    return "cuda" if adapter.uses_gpu and gpu_names() else "cpu"


def gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return (
        [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0
        else []
    )


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"decathlon": decathlon.__version__, "python": platform.python_version()}
    for name in ("numpy", "scikit-learn", "pluggy", "psutil"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def host_facts() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpu_names(),
        "python_executable": sys.executable,
    }


def _refuse_a_second_start(run_dir: Path, resume: bool) -> None:
    if rundir.config_path(run_dir).exists() and not resume:
        raise DecathlonError(
            f"{run_dir} already holds a run; pass --resume {run_dir} to finish it,"
            " or choose another --run-dir"
        )


def _one_line(text: str) -> str:
    """A reason as one printable line of at most 300 characters: what a task said may hold
    newlines, terminal escapes (which would redraw the user's screen) and lone surrogates (from
    undecodable file names, which no UTF-8 file can hold)."""
    line = " ".join(leaderboard.printable(str(text)).split())
    return line if len(line) <= 300 else line[:297] + "..."


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
