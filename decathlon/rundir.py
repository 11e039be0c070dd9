"""The run directory: this module alone knows its layout; everybody else asks it.

::

    RUN_DIR/
      config.json                 the request, the adapter, the budgets file, versions, host
      .lock                       held by the one harness working on the run (see hold)
      leaderboard.csv             every finished task's rows, then the decathlon means
      tasks/<dataset>/seed<N>/    one folder per task
        task.json                 the worker's task (its ``tag`` names its process tree)
        log.txt                   the worker's output
        result.json               the task's rows: a task is finished when this file exists
        predictions/ output/ evaluator/
        scratch/                  the adapter's scratch folder, removed when the task ends

An unsealed task's TMPDIR is a folder of its own, ``/tmp/dcl-XXXXXXXX`` (see ``private_tmp``),
named in its ``task.json`` (``tmp_dir``, with the ``tmp_host`` it is on) so that a run killed
mid-task has it removed by the next one, as it has ``scratch/``.
        attempts/<K>/             earlier attempts (``run --retry-failed``)

The runner, the Dask executor, the conformance check, ``compare`` and ``show`` read and write it
through the functions below.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from decathlon import datasets, files, leaderboard
from decathlon.enforcement import kill_tree
from decathlon.errors import DecathlonError

CONFIG = "config.json"
LEADERBOARD = "leaderboard.csv"
TASKS = "tasks"
TASK_SPEC = "task.json"
LOG = "log.txt"
RESULT = "result.json"
PREDICTIONS = "predictions"
OUTPUT = "output"
EVALUATOR = "evaluator"
#: What the worker may leave in ``predictions/`` beside the scores (the worker, standalone,
#: spells these names too): the adapter's notes, and the exception that ended it.
WORKER_INFO = "info.json"
WORKER_ERROR = "error.json"
SCRATCH = "scratch"
ATTEMPTS = "attempts"
LOCK = ".lock"
#: The prefix of a task's private temporary folder, directly under the temporary folder.
TMP_PREFIX = "dcl-"


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process alone while the block runs.

    A second harness on the same folder (a ``--resume`` typed while the run still goes) would
    take the first one's tasks for interrupted ones and stop their workers; it is refused with
    one line instead. The lock is the kernel's (``flock``): it goes with the process, so a
    harness killed with SIGKILL leaves nothing that blocks the resume.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise DecathlonError(f"{run_dir} is a file, not a run folder; choose another --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise DecathlonError(f"cannot use {run_dir} as a run folder: {exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DecathlonError(
                f"{run_dir} is in use by another decathlon process (pid {holder}); wait for it"
                " to end, or stop it, then resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def holder(run_dir: Path) -> str | None:
    """The pid of the harness holding ``run_dir`` now (see :func:`hold`), or None if none does."""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    except OSError:
        return None
    finally:
        os.close(fd)  # also releases the shared lock taken just now
    return None


def task_dir(run_dir: Path, flag: str, seed: int) -> Path:
    """The folder of one task (dataset ``flag``, ``seed``)."""
    return Path(run_dir) / TASKS / flag / f"seed{seed}"


def tasks_dir(run_dir: Path) -> Path:
    return Path(run_dir) / TASKS


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG


def leaderboard_path(run_dir: Path) -> Path:
    return Path(run_dir) / LEADERBOARD


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run (its ``tasks/`` folder)."""
    return (Path(path) / TASKS).is_dir()


def read_json(path: Path) -> Any:
    """A JSON file's content, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: nested past Python's stack
        return None


#: The most a task's notes (``info.json``) or error record may hold.
TASK_JSON_LIMIT = 16 * 2**20


def read_task_json(path: Path) -> dict[str, Any] | None:
    """A JSON record the task's worker left in its predictions folder, or ``None`` when it is
    missing, unreadable, not a record, or not a plain file (see
    :func:`decathlon.files.read_left_by_task`)."""
    try:
        record = json.loads(files.read_left_by_task(path, TASK_JSON_LIMIT))
    except (OSError, ValueError, RecursionError):  # RecursionError: "[[[[...", nested too deep
        return None
    return record if isinstance(record, dict) else None


def write_json(path: Path, payload: Any) -> None:
    files.write_text(path, files.json_text(payload, indent=2))


#: The parts of ``config.json`` that are records of their own.
CONFIG_RECORDS = ("config", "adapter", "budgets_file", "host")


def config_record(record: Any) -> dict[str, Any] | None:
    """``record`` when it has the shape of a run's configuration (each of
    :data:`CONFIG_RECORDS` a record, ``config`` among them), else ``None``."""
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        return None
    if any(not isinstance(record.get(key, {}), dict) for key in CONFIG_RECORDS):
        return None
    return record


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``config.json``, or ``None`` when there is none, it is unreadable, or it is not
    a run's configuration (:func:`config_record`)."""
    return config_record(read_json(config_path(run_dir)))


def write_config(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(config_path(run_dir), record)


def _rows_of(result: Any, task_folder: Path) -> list[dict[str, Any]] | None:
    """The rows a ``result.json`` holds, or ``None`` when it is not this task's (truncated,
    edited, another task's or another file's contents): such a task counts as not finished, so
    ``--resume`` runs it again rather than dropping its rows from the leaderboard or adding
    another task's. A task's rows are one per split, each naming its folder's dataset and seed."""
    if not isinstance(result, dict) or not isinstance(result.get("rows"), list):
        return None
    rows = result["rows"]
    flag, seed = task_folder.parent.name, task_folder.name.removeprefix("seed")
    if not all(
        isinstance(row, dict)
        and row.get("dataset") == flag
        and isinstance(row.get("seed"), (int, str))
        and not isinstance(row["seed"], bool)
        and str(row["seed"]) == seed
        for row in rows
    ):
        return None
    splits = sorted(str(row.get("split")) for row in rows)
    return rows if splits == sorted(leaderboard.SPLITS) else None


def is_finished(task_folder: Path) -> bool:
    return read_rows(task_folder) is not None


def read_rows(task_folder: Path) -> list[dict[str, Any]] | None:
    """A finished task's rows, or ``None`` when it has not finished (or its ``result.json``
    cannot be read as one)."""
    rows = _rows_of(read_json(task_folder / RESULT), task_folder)
    return list(rows) if rows is not None else None


def write_rows(task_folder: Path, rows: list[dict[str, Any]]) -> None:
    """Record a task's rows: from now on the task is finished."""
    task_folder.mkdir(parents=True, exist_ok=True)
    write_json(task_folder / RESULT, {"rows": rows})


def pending(folders: Iterable[Path]) -> list[Path]:
    """The task folders without a readable ``result.json``."""
    return [f for f in folders if not is_finished(f)]


def collect_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of every finished task of a run, in dataset and seed order, each with the
    folder's name as it is now for ``run_id``: a run folder moved or renamed, then resumed,
    still gives one run (its earlier tasks' rows kept the old name, and its decathlon mean was
    split in two incomplete rows)."""
    rows = []
    run_id = Path(run_dir).resolve().name
    for result in sorted(tasks_dir(run_dir).glob(f"*/seed*/{RESULT}")):
        task_rows = read_rows(result.parent)
        for row in task_rows or []:
            row.setdefault("size", datasets.DEFAULT_SIZE)  # written before sizes existed
            row["run_id"] = run_id
            rows.append(row)
    order = {flag: i for i, flag in enumerate(datasets.DECATHLON_FLAGS)}
    split_order = {s: i for i, s in enumerate(leaderboard.SPLITS)}
    rows.sort(
        key=lambda r: (
            order.get(r["dataset"], 99),
            r["dataset"],
            int(r["seed"]),
            split_order.get(r["split"], 9),
        )
    )
    return rows


def predictions_file(run_dir: Path, flag: str, seed: int, split: str) -> Path:
    """Where a task's worker left its ``split`` scores."""
    return task_dir(run_dir, flag, seed) / PREDICTIONS / f"{split}.npy"


def _task_spec(task_folder: Path) -> dict[str, Any]:
    """What a task's ``task.json`` says, or ``{}`` when it is missing, truncated, or JSON of
    another shape (``[]``, ``"x"``): the task could write in its folder, and a resume must not
    stop on what it left there."""
    spec = read_json(task_folder / TASK_SPEC)
    return spec if isinstance(spec, dict) else {}


def stop_leftovers(task_folder: Path, kill_grace: float) -> None:
    """Stop the process tree a task's worker left (it may have outlived the harness that started
    it): the tree is named by the ``tag`` in the task's ``task.json``."""
    tag = _task_spec(task_folder).get("tag")
    if tag and isinstance(tag, str):
        kill_tree(None, tag, grace=kill_grace)


def private_tmp() -> Path:
    """A new temporary folder for one unsealed task, to be its TMPDIR (a sealed task has a
    private ``/tmp`` already): what it leaves there goes when the task ends, not into the
    harness's own temporary folder, shared by every task. The name is short, directly under
    the harness's temporary folder (``/tmp/dcl-XXXXXXXX``): multiprocessing's forkserver puts
    an AF_UNIX socket under TMPDIR, and a socket's path may have 108 bytes at the most."""
    return Path(tempfile.mkdtemp(prefix=TMP_PREFIX))


def tmp_record(tmp: Path | None) -> dict[str, str | None]:
    """What ``task.json`` says of the task's private temporary folder (``None`` when sealed)."""
    return {"tmp_dir": None if tmp is None else str(tmp), "tmp_host": platform.node()}


def remove_recorded_tmp(task_folder: Path) -> None:
    """Remove the private temporary folder a task's ``task.json`` names, which a harness (or a
    Dask worker) killed mid-task left. Only a real folder of ours on this machine, named as
    :func:`private_tmp` names them and directly under the temporary folder, is removed: the
    file is the task's folder's, which the task could write in."""
    spec = _task_spec(task_folder)
    raw = spec.get("tmp_dir")
    if not isinstance(raw, str) or spec.get("tmp_host") != platform.node():
        return
    path = Path(raw)
    if path.parent != Path(tempfile.gettempdir()) or not re.fullmatch(
        re.escape(TMP_PREFIX) + r"[A-Za-z0-9_]{8}", path.name
    ):
        return
    try:
        info = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
        remove_tree(path)


def clear_stale_task(task_folder: Path, kill_grace: float) -> None:
    """A task folder left by a run that was killed mid-task: stop its worker, empty it (earlier
    attempts stay)."""
    stop_leftovers(task_folder, kill_grace)
    remove_recorded_tmp(task_folder)
    clear_task_dir(task_folder)


def clear_scratch(task_folder: Path, kill_grace: float) -> None:
    """Remove the scratch folder and the private temporary folder an interrupted task left,
    after stopping its worker."""
    scratch = task_folder / SCRATCH
    if not scratch.exists() and not _task_spec(task_folder).get("tmp_dir"):
        return
    stop_leftovers(task_folder, kill_grace)
    remove_tree(scratch)
    remove_recorded_tmp(task_folder)


def archive_attempt(task_folder: Path) -> Path:
    """Move everything in a task's folder (but earlier attempts) to ``attempts/K/``, K = 1, 2...

    The files gather in ``attempts/.incoming/``, ``result.json`` last, and the folder takes its
    number once all are there. A harness killed half way leaves the task still finished (its
    ``result.json`` in place), so the next retry archives the rest into the same attempt, rather
    than taking the task for an unfinished one and deleting what was not yet moved.
    """
    regain(task_folder)
    attempts = task_folder / ATTEMPTS
    incoming = attempts / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    entries = [e for e in task_folder.iterdir() if e.name != ATTEMPTS]
    for entry in sorted(entries, key=lambda e: e.name == RESULT):
        shutil.move(str(entry), str(incoming / entry.name))
    numbers = [int(p.name) for p in attempts.glob("*") if p.name.isdigit()]
    target = attempts / str(max(numbers, default=0) + 1)
    incoming.rename(target)
    return target


def clear_task_dir(task_folder: Path) -> None:
    """Delete what a task's folder holds, except its earlier attempts."""
    regain(task_folder)
    for entry in task_folder.iterdir():
        if entry.name == ATTEMPTS:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def remove_tree(folder: Path) -> None:
    """Delete a folder a task wrote in, whatever permissions the task left on its folders."""
    shutil.rmtree(folder, ignore_errors=True)
    if os.path.lexists(folder):
        regain(folder)
        shutil.rmtree(folder, ignore_errors=True)


def regain(folder: Path) -> None:
    """Make every folder under ``folder`` readable, writable and searchable by its owner again.

    A task runs as the harness's user, so it may ``chmod 000`` a folder of its own; for a user
    without root's override, that folder could then be neither listed, deleted nor moved
    (``--retry-failed`` would stop with a PermissionError). Links are never followed: only real
    folders' modes change.
    """
    pending = [os.fspath(folder)]
    while pending:
        path = pending.pop()
        try:
            mode = os.lstat(path).st_mode
            if not stat.S_ISDIR(mode):
                continue
            if mode & stat.S_IRWXU != stat.S_IRWXU:
                os.chmod(path, stat.S_IMODE(mode) | stat.S_IRWXU)
            with os.scandir(path) as entries:
                pending += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:  # not ours, or gone: what cannot be regained stays as it is
            continue
