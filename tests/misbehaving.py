"""Adapters that misbehave on purpose, to exercise the runner's enforcement and checks.

A single-module plugin: register it with ``make_registry(extra_plugins=[misbehaving])``
(the worker mounts it by file path) or through a ``decathlon`` entry point. Every adapter runs
in the harness's own environment and ships tiny ``quick`` budgets, so no budgets file is needed.

Adapters that leave processes behind write who they are to ``output_dir/pids.txt`` so tests can
check that each is gone: the pid as the process sees it, and, because a sealed task runs in a PID
namespace of its own where pids mean nothing outside, its start time (clock ticks after boot, the
same in every namespace) and command line, which the tests match against the machine's processes.
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
            "notes_kib": 0,
            "nonfinite_notes": False,
        },
    ),
    _adapter("mis_sleeper", "sleep_forever", _SHORT, options={"ignore_sigterm": False}),
    _adapter("mis_spawner", "spawn", _SHORT, options={"mode": "sleep"}),
    _adapter("mis_raiser", "raise_error", _LONG),
    _adapter("mis_shouter", "raise_unprintable", _LONG),
    _adapter("mis_segfault", "segfault", _LONG, options={"how": "kill"}),
    _adapter("mis_garbage", "garbage", _LONG, options={"mode": "nan"}),
    _adapter("mis_not_predictions", "not_predictions", _LONG),
    _adapter("mis_memory_hog", "memory_hog", _LONG, options={"megabytes": 1024}),
    _adapter("mis_peeker", "peek_for_test_labels", _LONG),
    _adapter("mis_npz_hunter", "hunt_for_npz", _LONG, options={"walk": True}),
    _adapter("mis_network", "fetch_url", _LONG, options={"url": ""}),
    _adapter("mis_planter", "plant_after_exit", _LONG, options={"mode": "link", "target": ""}),
    _adapter("mis_prober", "probe_path", _LONG, options={"probe": ""}),
    _adapter("mis_tracer", "trace_init", _LONG),
    _adapter("mis_forker", "fork_bomb", _LONG, options={"processes": 300, "then": "raise"}),
    _adapter("mis_log_filler", "fill_log", _LONG),
    _adapter("mis_fork_ender", "end_a_fork", _LONG),
    _adapter("mis_temp_writer", "write_temp", _LONG, options={"then": "return"}),
    _adapter("mis_temp_sleeper", "write_temp", _SHORT, options={"then": "sleep"}),
    _adapter("mis_sysctl_writer", "open_kernel_settings", _LONG),
    _adapter("mis_tmpfs_filler", "fill_tmpfs", _LONG, options={"megabytes": 300, "hold": 4.0}),
    _adapter(
        "mis_shm_holder", "hold_shared_memory", _LONG, options={"how": "memfd", "megabytes": 150}
    ),
    _adapter(
        "mis_shm_mapper", "hold_shared_memory", _LONG, options={"how": "shm_file", "megabytes": 150}
    ),
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


def identity(pid: int) -> str:
    """``pid``'s line in pids.txt: pid, start time in clock ticks after boot, command line (hex)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        start = handle.read().rsplit(")", 1)[1].split()[19]
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return f"{pid} {start} {handle.read().hex()}"


def _record_pid(task: Task, pid: int) -> None:
    with open(task.output_dir / "pids.txt", "a", encoding="ascii") as handle:
        handle.write(identity(pid) + "\n")


# A grandchild that sleeps. "ignore": it ignores SIGTERM; "setsid": it also leaves the process
# group; "daemon": a classic daemon (fork, setsid, fork), no longer a descendant of the worker,
# ignoring SIGTERM. It records itself as _record_pid does.
_GRANDCHILD = """
import os, signal, sys, time
mode, pidfile = sys.argv[1], sys.argv[2]
if mode == "vanish" and len(sys.argv) == 3:  # away from the worker's tree, group and tag
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    code = open("/proc/self/cmdline", "rb").read().split(b"\\0")[2].decode()
    os.execve(sys.executable, [sys.executable, "-c", code, mode, pidfile, "again"], {})
if mode == "daemon" and os.fork() > 0:
    os._exit(0)
if mode in ("setsid", "daemon"):
    os.setsid()
if mode == "daemon" and os.fork() > 0:
    os._exit(0)
if mode in ("ignore", "setsid", "daemon", "vanish"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
start = open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]
cmdline = open("/proc/self/cmdline", "rb").read().hex()
with open(pidfile, "a") as f:
    f.write("%d %s %s\\n" % (os.getpid(), start, cmdline))
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
    notes: dict[str, Any] = {"behaviour": "good"}
    if task.options.get("notes_kib"):  # an honest adapter's long notes (say, every trial)
        notes["trials"] = [
            {"trial": i, "score": 0.5} for i in range(40 * task.options["notes_kib"])
        ]
    if task.options.get("nonfinite_notes"):  # numbers JSON has no word for
        notes["nan"], notes["inf"], notes["minus_inf"] = float("nan"), float("inf"), -np.inf
        notes["nested"] = {"trials": [{"score": float("nan")}, {"score": np.float32("nan")}]}
        notes["array"] = np.array([0.5, np.nan])
    predictions = valid_predictions(task, notes)
    if not task.options["train_scores"]:
        predictions.train = None
    return predictions


def end_a_fork(task: Task) -> Predictions:
    """What auto-sklearn does with a helper process: fork it, later end it with
    SIGTERM (``Process.terminate()``), then go on to predict."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    child.start()
    time.sleep(0.5)
    child.terminate()
    child.join(10)
    return valid_predictions(task, {"child_exit": child.exitcode})


def write_temp(task: Task) -> Predictions:
    """Writes where its temporary files go to ``output_dir/temp.json`` (TMPDIR, TEMP, TMP and
    ``tempfile.gettempdir()``), leaves a file there and a read-only folder holding a read-only
    file, then returns (``then``: ``return``) or sleeps past its hard limit (``sleep``)."""
    import tempfile

    where = tempfile.gettempdir()
    (Path(where) / "left.txt").write_text("left behind")
    nested = Path(tempfile.mkdtemp())
    (nested / "deeper").mkdir()
    (nested / "deeper" / "locked.txt").write_text("read-only")
    for path in (nested / "deeper" / "locked.txt", nested / "deeper", nested):
        path.chmod(0o500 if path.is_dir() else 0o400)
    found = {name: os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")}
    found["gettempdir"] = where
    found["nested"] = str(nested)
    (task.output_dir / "temp.json").write_text(json.dumps(found))
    if task.options["then"] == "sleep":
        while True:
            time.sleep(1)
    return valid_predictions(task)


def sleep_forever(task: Task) -> Predictions:
    """Ignores its budget (and, with ``ignore_sigterm``, the polite request to stop)."""
    if task.options["ignore_sigterm"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)


def spawn(task: Task) -> Predictions:
    """Starts a grandchild that sleeps (``mode``: sleep, ignore, setsid, daemon, or setsid_env: a
    ``setsid env -i sleep`` in a new session with an emptied environment; vanish: a double-forked
    daemon in its own session that execs itself with an empty environment, so that it is neither
    in the task's group nor under its worker nor tagged), then sleeps forever; with mode
    ``return`` (or ``vanish_return``) the grandchild sleeps but the adapter returns valid scores
    at once."""
    mode = task.options["mode"]
    pidfile = task.output_dir / "pids.txt"
    _record_pid(task, os.getpid())
    if mode == "setsid_env":
        child = subprocess.Popen(["setsid", "env", "-i", "sleep", "100000"])
        while not Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(b"sleep"):
            time.sleep(0.01)  # setsid and env exec the next program in the same process
        _record_pid(task, child.pid)
        _record_pid(task, child.pid)  # it is both the child and the "grandchild"
        while True:
            time.sleep(1)
    grandchild = "vanish" if mode == "vanish_return" else mode
    child = subprocess.Popen([sys.executable, "-c", _GRANDCHILD, grandchild, str(pidfile)])
    _record_pid(task, child.pid)
    deadline = time.time() + 20
    while time.time() < deadline:  # wait until the grandchild has written its own pid
        if len(pidfile.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    if mode in ("return", "vanish_return"):
        return valid_predictions(task)
    while True:
        time.sleep(1)


def raise_error(task: Task) -> Predictions:
    raise ValueError(ERROR_MESSAGE)


#: What :func:`raise_unprintable` says: an undecodable file name and terminal escapes that would
#: clear the user's screen and print a false status.
UNPRINTABLE_MESSAGE = (
    "cannot read " + os.fsdecode(b"img_\xff.png") + "\x1b[2J\x1b[1;1Hall tasks ok\x07\nsecond line"
)


def raise_unprintable(task: Task) -> Predictions:
    raise RuntimeError(UNPRINTABLE_MESSAGE)


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


def hunt_for_npz(task: Task) -> Predictions:
    """A cheat: looks for the original ``.npz`` (with ``test_labels``) through everything it can
    learn, and when it finds it, returns the test labels as its test scores (test AUC 1.0).

    Routes, in order: the folders of every path in the task (and every folder above them, where a
    run's ``config.json`` names its ``data_dir``), the command lines of every process it can see
    (the harness's ``--data-dir``), its environment, the home folder and ``~/.medmnist``; then,
    with option ``walk``, every file it can reach from ``/``. Writes what it tried and found to
    the row's notes (``found``: the files that held test labels).
    """
    wanted = f"{task.dataset.flag}.npz"
    folders: list[Path] = []
    for value in (task.scratch_dir, task.output_dir, getattr(task.x_test, "filename", None)):
        if value:
            path = Path(value).resolve()
            folders += [path, *path.parents]
    for folder in list(folders):
        config = folder / "config.json"
        if config.is_file():
            try:
                record = json.loads(config.read_text())
                folders.append(Path(record["config"]["data_dir"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        folders += [Path(a) for a in args if a.startswith("/")]
        folders += [Path(a).parent for a in args if a.startswith("/")]
    folders += [Path(v) for v in os.environ.values() if v.startswith("/")]
    folders += [Path.home(), Path.home() / ".medmnist"]
    found = _npz_with_test_labels(folders, wanted)
    walked = 0
    if not found and task.options["walk"]:
        for root, dirs, files in os.walk("/"):
            if root == "/":
                dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
            walked += len(files)
            found = _npz_with_test_labels([Path(root)], wanted, names=files)
            if found:
                break
    info: dict[str, Any] = {"found": found, "folders_tried": len(folders), "files_walked": walked}
    predictions = valid_predictions(task, info)
    if found:
        with np.load(found[0]) as data:
            labels = data["test_labels"]
        if task.dataset.task == MULTI_LABEL:
            predictions.test = labels.astype(np.float64)
        else:
            predictions.test = np.eye(task.dataset.n_classes)[labels.ravel()]
    return predictions


def fetch_url(task: Task) -> Predictions:
    """Fetches ``url`` and records in its notes what came back (or the error)."""
    import urllib.request

    try:
        with urllib.request.urlopen(task.options["url"], timeout=10) as response:
            got: dict[str, Any] = {"body": response.read(100).decode(errors="replace")}
    except OSError as exc:
        got = {"error": f"{type(exc).__name__}: {exc}"}
    return valid_predictions(task, got)


def plant_after_exit(task: Task) -> Predictions:
    """A cheat that strikes after the worker wrote its scores: an ``atexit`` handler (run after
    the worker's own clean-up) replaces ``predictions/test.npy`` by, per ``mode``: ``link``, a
    symbolic link to ``target`` (another adapter's scores, which the task itself cannot see);
    ``fifo``, a named pipe (a reader would block for ever); ``empty``, an empty file; ``dir``, a
    folder; ``huge_header``, an ``.npy`` header that declares 16 TB over 16 bytes of data (which
    ``np.load`` would try to allocate); ``nested_notes``, notes (``info.json``) nested far past
    Python's recursion limit; ``nested_error``, such an ``error.json``, then exit 1. It also
    tries to plant a ``result.json`` and an ``evaluator`` link in its task folder, which the
    harness writes after the task."""
    import atexit

    predictions = task.output_dir.parent / "predictions"
    task_folder = task.output_dir.parent

    def plant() -> None:
        test = predictions / "test.npy"
        mode = task.options["mode"]
        if not mode.startswith("nested_"):
            test.unlink(missing_ok=True)
        if mode == "link":
            test.symlink_to(task.options["target"])
        elif mode == "fifo":
            os.mkfifo(test)
        elif mode == "empty":
            test.write_bytes(b"")
        elif mode == "dir":
            test.mkdir()
        elif mode == "huge_header":
            header = {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)}
            with open(test, "wb") as handle:
                np.lib.format.write_array_header_1_0(handle, header)
                handle.write(b"\0" * 16)
        elif mode in ("nested_notes", "nested_error"):
            deep = "[" * 200_000 + "]" * 200_000
            name = "info.json" if mode == "nested_notes" else "error.json"
            (predictions / name).write_text(deep)
            if mode == "nested_error":
                os._exit(1)
        for name, make in (
            ("result.json", lambda p: p.mkdir()),
            ("evaluator", lambda p: p.symlink_to("/")),
        ):
            try:
                make(task_folder / name)
            except OSError:
                pass

    atexit.register(plant)
    return valid_predictions(task)


def trace_init(task: Task) -> Predictions:
    """Tries to take over the first process of its PID namespace (bwrap's init when sealed),
    as a task that wants to outlive the harness would: ``ptrace`` attach, and its memory
    through ``/proc``. The notes say what each attempt gave (``"ok"`` or the error)."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    notes: dict[str, Any] = {}
    if libc.ptrace(16, 1, None, None) == 0:  # PTRACE_ATTACH
        notes["ptrace"] = "ok"
        os.waitpid(1, 0x40000000)  # __WALL: until it stops, then let it go
        libc.ptrace(17, 1, None, None)  # PTRACE_DETACH
    else:
        notes["ptrace"] = errno.errorcode[ctypes.get_errno()]
    for name in ("/proc/1/mem", "/proc/1/task/1/mem"):
        try:
            with open(name, "r+b"):
                notes[name] = "ok"
        except OSError as exc:
            notes[name] = errno.errorcode.get(exc.errno or 0, str(exc))
    return valid_predictions(task, notes)


def probe_path(task: Task) -> Predictions:
    """Reads ``probe/hello.txt`` and tries to write ``probe/written.txt``; the notes say what
    happened (``read``: the text or the error, ``wrote``: ``true`` or the error)."""
    folder = Path(task.options["probe"])
    notes: dict[str, Any] = {}
    try:
        notes["read"] = (folder / "hello.txt").read_text()
    except OSError as exc:
        notes["read"] = f"{type(exc).__name__}"
    try:
        (folder / "written.txt").write_text("the adapter was here")
        notes["wrote"] = True
    except OSError as exc:
        notes["wrote"] = f"{type(exc).__name__}"
    return valid_predictions(task, notes)


def _npz_with_test_labels(
    folders: list[Path], wanted: str, names: list[str] | None = None
) -> list[str]:
    """The ``.npz`` files in ``folders`` (not below them) that hold ``test_labels``: the one
    named ``wanted`` first."""
    found = []
    for folder in dict.fromkeys(folders):
        try:
            listed = names if names is not None else os.listdir(folder)
        except OSError:
            continue
        for name in sorted(n for n in listed if n.endswith(".npz")):
            try:
                with np.load(folder / name) as data:
                    if "test_labels" in data.files:
                        found.append(str(folder / name))
            except (OSError, ValueError):
                continue
    return sorted(found, key=lambda f: not f.endswith(wanted))


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


def live_pids(pids: list[str]) -> list[str]:
    """The processes of ``pids`` (lines of pids.txt) that still run on this machine, matched by
    start time and command line, whatever PID namespace they ran in (zombies count as gone)."""
    import psutil

    wanted = {tuple(p.split()[1:3]): p for p in pids}
    alive = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            key = tuple(identity(proc.pid).split()[1:3])
        except (psutil.NoSuchProcess, psutil.ZombieProcess, OSError, IndexError):
            continue
        if key in wanted:
            alive.append(wanted[key])
    return alive


def task_tag(task_dir: Path) -> str:
    """The enforcement tag the runner gave a task (from its task.json)."""
    return json.loads((task_dir / "task.json").read_text(encoding="utf-8"))["tag"]


def recorded_pids(task_dir: Path) -> list[str]:
    """The processes the adapter recorded, as lines of pids.txt (see :func:`identity`)."""
    path = task_dir / "output" / "pids.txt"
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="ascii").splitlines() if line.count(" ") == 2]


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


def fork_bomb(task: Task) -> Predictions:
    """Starts up to ``processes`` children that sleep (a fork bomb, bounded so that the test
    cannot take the machine down when no cap stops it), records each, then raises (``then``:
    ``raise``), hangs (``hang``) or predicts with notes saying how many it started and how the
    next one failed."""
    started, failure = 0, ""
    for _ in range(int(task.options["processes"])):
        try:
            pid = os.fork()
        except OSError as exc:
            failure = type(exc).__name__
            break
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        started += 1
        _record_pid(task, pid)
    notes = {"started": started, "failure": failure}
    while task.options["then"] == "hang":  # as a pool that waits for a worker it was refused
        time.sleep(1)
    if task.options["then"] == "raise":
        raise RuntimeError(f"started {started} processes, then {failure or 'none failed'}")
    return valid_predictions(task, notes)


def largest_length(fd: int) -> int:
    """Make the file open as ``fd`` as long as its file system allows (a sparse file: no disk
    is used), so that nothing more can be appended to it; returns that length."""
    low, high = os.fstat(fd).st_size, 2**63 - 1
    while low < high:
        middle = (low + high + 1) // 2
        try:
            os.ftruncate(fd, middle)
            low = middle
        except OSError:  # EFBIG, or EINVAL past what the kernel takes
            high = middle - 1
    os.ftruncate(fd, low)
    return low


def fill_log(task: Task) -> Predictions:
    """Makes its log (its stdout, which the harness opened) as long as the file system allows,
    then predicts: the harness can append nothing more to it."""
    sys.stdout.flush()
    return valid_predictions(task, {"log_length": largest_length(sys.stdout.fileno())})


def fill_tmpfs(task: Task) -> Predictions:
    """Holds ``megabytes`` in files of its private, in-memory folders (a sealed task's ``/tmp``
    and home folder are tmpfs mounts) rather than in its own address space: pages no process
    maps, so no process's resident size shows them. Holds them ``hold`` seconds, then predicts
    with notes saying how much it wrote where."""
    chunk = b"\1" * 2**20
    written: dict[str, int] = {}
    total = int(task.options["megabytes"])
    for folder in ("/tmp", str(Path.home())):
        with open(Path(folder) / "held.bin", "wb") as handle:
            for _ in range(total // 2):
                handle.write(chunk)
        written[folder] = total // 2
    time.sleep(float(task.options["hold"]))
    return valid_predictions(task, {"written_mb": written})


#: Files of /proc that change the whole machine when written: ``core_pattern`` names a program
#: the kernel runs as root outside every namespace when any process dumps core (a way out of
#: the sandbox: a script in the task's folder, a crash), ``sysrq-trigger`` reboots it.
KERNEL_SETTINGS = (
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/printk_ratelimit",
    "/proc/sys/vm/drop_caches",
    "/proc/sysrq-trigger",
)


def open_kernel_settings(task: Task) -> Predictions:
    """Opens each of :data:`KERNEL_SETTINGS` for writing, and writes nothing (a write to these
    would change the machine the tests run on); the notes say what each open gave: ``"opened"``,
    or the error (``EROFS``, ``EACCES``; ``ENOENT`` where the kernel has no such file)."""
    import errno

    notes: dict[str, Any] = {}
    for name in KERNEL_SETTINGS:
        try:
            os.close(os.open(name, os.O_WRONLY))
            notes[name] = "opened"
        except OSError as exc:
            notes[name] = errno.errorcode.get(exc.errno or 0, str(exc))
    return valid_predictions(task, notes)


def hold_shared_memory(task: Task) -> Predictions:
    """Holds ``megabytes`` of shared memory that no process's resident size shows: written
    into a ``memfd_create`` file it keeps open but never maps (``how="memfd"``), or into a SysV
    segment it detaches and leaves (``how="sysv"``); or into a file of ``/dev/shm`` it maps and
    reads, as PyTorch's loader workers share tensors (``how="shm_file"``: its PSS shows it, and
    so does the folder). Holds it 6 s, then predicts."""
    size = int(task.options["megabytes"]) * 2**20
    if task.options["how"] == "shm_file":
        import mmap

        with open("/dev/shm/shared-tensors", "w+b") as handle:
            chunk = b"\1" * 2**20
            for _ in range(size // len(chunk)):
                handle.write(chunk)
            handle.flush()
            mapped = mmap.mmap(handle.fileno(), size)
        sum(mapped[i] for i in range(0, size, 4096))  # every page resident in its PSS
    elif task.options["how"] == "memfd":
        fd = os.memfd_create("held")
        chunk = b"\1" * 2**20
        for _ in range(size // len(chunk)):
            os.write(fd, chunk)
    else:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.shmat.restype = ctypes.c_void_p
        libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        libc.shmdt.argtypes = [ctypes.c_void_p]
        shmid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
        address = libc.shmat(shmid, None, 0)
        ctypes.memset(address, 1, size)
        libc.shmdt(address)
    time.sleep(6.0)
    return valid_predictions(task, {"held_mb": size // 2**20, "how": task.options["how"]})
