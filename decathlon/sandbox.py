"""Where a task is sealed: its own PID namespace, its own view of the files, its own memory cgroup.

Every task's worker runs under bubblewrap (``bwrap``, the sandbox Flatpak uses) when the machine
allows it, so that three guarantees do not depend on the adapter behaving:

- **Containment.** The worker and everything it starts live in a new PID namespace whose first
  process is bwrap's own init; when that process ends, the kernel kills every process left in the
  namespace, whatever session, process group or environment they gave themselves. bwrap runs with
  ``--die-with-parent``, so the namespace also ends when the process that started it dies (the
  harness killed with SIGKILL, a Dask worker lost).
- **Data isolation.** The task sees a new root built from an allow-list (:class:`View`): the
  system folders (``/usr``, ``/etc``, ...), its interpreter and every folder on that
  interpreter's ``sys.path``, the harness and adapter code the worker imports, its own task
  folder (read-write) and the five arrays it is given (read-only, without test labels). The
  data folder, ``~/.medmnist``, the harness's caches, the run folder with its ``config.json`` and
  the other tasks' folders are not there: not even as paths to guess. ``/tmp`` and the home
  folder are empty and private; ``/proc`` shows only the task's own processes, so the harness's
  command line is out of reach; bwrap reads its own arguments from a file, so that its command
  line names nothing either. As root (in a container), every capability is dropped inside.
- **Memory.** With ``--memory-mb``, when this process may create a child of its own memory cgroup
  (cgroup v1 ``memory.limit_in_bytes``, or a delegated cgroup v2 ``memory.max``), the task runs in
  a cgroup of its own with that limit: the kernel stops an allocation past the cap, however fast,
  and the task becomes an ``error`` row that says so (the cgroup itself: :mod:`decathlon.cgroups`).
  Elsewhere the sampler in :mod:`decathlon.enforcement` stays.

GPU device files (``/dev/nvidia*``, ``/dev/dri``) are bound in for a task on ``cuda`` (a task on
``cpu`` gets none: it could otherwise unset ``CUDA_VISIBLE_DEVICES`` and train on the GPU, its
row still saying ``cpu``), ``CUDA_VISIBLE_DEVICES`` passes through, and the network is shared
unless ``--network off`` (a network namespace with only a loopback device). ``--sandbox auto``
(the default) runs unsealed, saying so once, where bwrap is missing or cannot create namespaces;
``required`` refuses to start; ``off`` runs as before the sandbox existed (process-group sweep
and sampled memory only). Every leaderboard row records ``sealed``.

An unsealed task (``auto`` without bwrap, or ``off``) still gets a cgroup of its own where one
can be made, without a limit (:mod:`decathlon.cgroups`): it only tracks the task's processes.

Longer than 600 lines: what a task is shown (its view), what is hidden inside it, its
namespaces, its syscall filter, its bounded in-memory folders and the bwrap command they make are
one policy, the seal, and each part is read against the others (a folder bound in may show one
that must be hidden). What the task's memory adds up to, its in-memory folders' files included,
is counted in :mod:`decathlon.enforcement`; its cgroup is :mod:`decathlon.cgroups`.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from decathlon.cgroups import TaskCgroup, cgroup_kind, cgroup_problem, pids_problem
from decathlon.errors import DecathlonError

log = logging.getLogger(__name__)

MODES = ("auto", "required", "off")

# Each task's processes and threads (the kernel's pids cap): far above what a framework starts
# (AutoGluon's Ray workers with their threads, PyTorch's loaders), far below a machine's table.
DEFAULT_MAX_PROCESSES = 4096
#: The most ``pids.max`` takes (the kernel's PID_MAX_LIMIT on 64-bit machines).
MOST_PROCESSES = 4 * 1024 * 1024
NETWORK_MODES = ("on", "off")

#: Top-level system folders bound read-only when they exist (symbolic links stay links).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
#: Device files a GPU framework needs, bound in when present.
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")
#: Variables that name where the data or the harness's caches are: never passed to a worker.
DATA_LOCATION_VARIABLES = ("DECATHLON_DATA_DIR", "DECATHLON_HOME", "DECATHLON_INFO")


# ---------------------------------------------------------------------------- what is possible


@functools.cache
def bwrap_problem() -> str | None:
    """``None`` when bubblewrap can seal a task on this machine, else why not (one line)."""
    if not sys.platform.startswith("linux"):
        return f"sandboxes need Linux namespaces; this is {sys.platform}"
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = [exe, *_namespace_flags(network=False), "--ro-bind", "/", "/", "--proc", "/proc"]
    try:
        done = subprocess.run(
            [*probe, "--dev", "/dev", "true"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not start: {exc}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        return f"bwrap cannot create namespaces here ({lines[-1].strip()})"
    return None


@functools.cache
def bwrap_version() -> str:
    try:
        out = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or "bwrap"
    except (OSError, subprocess.TimeoutExpired):
        return "bwrap"


@functools.cache
def tmpfs_size_supported() -> bool:
    """Whether this bwrap bounds a ``--tmpfs`` it mounts (``--size BYTES``, bubblewrap 0.5+)."""
    try:
        out = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in out.stdout + out.stderr


#: The size of a hidden folder's tmpfs (it stands for a folder the task must not see; nothing
#: of the task's belongs there, and the sampled cap does not look at it).
HIDDEN_TMPFS_BYTES = 2**20


def tmpfs_bytes(memory_mb: int | None) -> int:
    """The size of each in-memory folder of a sealed task (``/tmp``, ``/var/tmp``, ``/run``,
    home, ``/dev/shm``): ``--memory-mb`` each, a cap that counts what they hold in total; else,
    together at most half of physical memory. The kernel's default is half of memory *each*:
    a task with no cap could fill them until the harness or the machine is killed instead
    of it (no process owns a tmpfs page, so the OOM killer does not blame the task)."""
    if memory_mb:
        return int(memory_mb) * 2**20
    folders = len(private_folders()) + 1  # and /dev/shm
    return max(psutil.virtual_memory().total // (2 * folders), 64 * 2**20)


#: The system calls a sealed task is refused (EPERM): with them it could take over bwrap's init
#: (pid 1 of its namespace, same user, no capabilities needed) and clear the signal that ends
#: the namespace with the harness, or rewrite init's environment to hide from the sweep.
#: ``/proc/1/mem`` (the same access through a file) is masked in :func:`bwrap_arguments`.
TRACE_SYSCALLS = ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd")


@functools.cache
def trace_filter() -> bytes | None:
    """The seccomp program (classic BPF, as bwrap's ``--seccomp`` reads it) that refuses
    :data:`TRACE_SYSCALLS`, made by libseccomp; None where libseccomp is missing. System calls
    of another architecture's ABI (32-bit calls on x86_64) are refused whole by libseccomp."""
    try:
        import errno

        import pyseccomp

        program = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
        for name in TRACE_SYSCALLS:
            try:
                program.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
            except (RuntimeError, ValueError, OSError):  # a call this libseccomp does not know
                log.info("seccomp: %s unknown here; not filtered", name)
        with tempfile.TemporaryFile() as out:
            program.export_bpf(out)
            out.seek(0)
            return out.read()
    except (ImportError, OSError, RuntimeError, AttributeError) as exc:
        log.info("no seccomp filter for sealed tasks: %s", exc)
        return None


#: Over the sandbox's own /proc, read-only: the kernel's settings (``/proc/sys``), which a task
#: of root keeps the right to write with every capability dropped: ``kernel.core_pattern`` names
#: a program the kernel runs as root outside every namespace at the next core dump, a way out
#: of the sandbox; ``/proc/sysrq-trigger`` reboots the machine. bwrap covers only some of them.
PROC_COVERS = (
    *("--ro-bind-try", "/proc/sys", "/proc/sys"),
    *("--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger"),
)


def _namespace_flags(*, network: bool) -> list[str]:
    flags = ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"]
    if os.geteuid() != 0:
        flags.append("--unshare-user")  # an ordinary user: namespaces need a user namespace
    else:
        flags += ["--cap-drop", "ALL"]  # root in a container: no mounting, no raw devices
    if not network:
        flags.append("--unshare-net")
    return flags


@dataclass(frozen=True)
class Policy:
    """How a run's tasks are sealed, decided once from ``--sandbox`` and ``--network``.

    ``sealed``: tasks run under bwrap. ``notice``: the one line to tell the user at the start
    (empty when there is nothing to say). ``memory``: how ``--memory-mb`` is enforced here.
    ``max_processes``: the kernel's cap on each task's processes and threads (``None``: none).
    """

    mode: str = "auto"
    network: bool = True
    sealed: bool = False
    notice: str = ""
    memory: str = "sampled"
    max_processes: int | None = None

    @classmethod
    def resolve(
        cls,
        mode: str,
        network: str = "on",
        *,
        memory_mb: int | None = None,
        max_processes: int | None = None,
    ) -> Policy:
        """The policy for ``--sandbox MODE --network NETWORK``; raises :class:`DecathlonError`
        for ``required`` (or ``--network off``) where no sandbox is possible."""
        if mode not in MODES:
            raise DecathlonError(f"unknown --sandbox '{mode}'; use {', '.join(MODES)}")
        if network not in NETWORK_MODES:
            raise DecathlonError(f"unknown --network '{network}'; use on or off")
        if mode == "off":
            if network == "off":
                raise DecathlonError("--network off needs the sandbox; drop --sandbox off")
            return cls(mode, True, False, "", "sampled", None)
        problem = bwrap_problem()
        if problem and mode == "required":
            raise DecathlonError(f"--sandbox required, but no sandbox is possible: {problem}")
        if problem and network == "off":
            raise DecathlonError(
                f"--network off needs the sandbox, and none is possible: {problem}"
            )
        notices = []
        if problem:
            notices.append(f"no sandbox: {problem}; tasks run unsealed (sealed=false in every row)")
        if problem is None and trace_filter() is None:
            notices.append(
                "no libseccomp here: a sealed task could trace its sandbox's first process and"
                " outlive a harness killed with kill -9"
            )
        if problem is None and not tmpfs_size_supported():
            notices.append(
                f"{bwrap_version()} has no --size (0.5+ has): a sealed task's in-memory folders"
                " (/tmp, home, /dev/shm) are bounded only by the kernel's default, half of"
                " memory each"
            )
        memory_problem = cgroup_problem()
        if memory_mb and memory_problem:
            notices.append(f"--memory-mb is sampled, not enforced by the kernel: {memory_problem}")
        memory = "sampled" if memory_problem else f"kernel ({cgroup_kind()})"
        if max_processes and pids_problem():
            if max_processes != DEFAULT_MAX_PROCESSES:  # asked for: say so; else config.json
                notices.append(f"--max-processes is not enforced: {pids_problem()}")
            max_processes = None
        notice = "; ".join(notices)
        return cls(mode, network == "on", problem is None, notice, memory, max_processes or None)

    def record(self) -> dict[str, Any]:
        """What config.json says about the sandbox."""
        return {
            "mode": self.mode,
            "sealed": self.sealed,
            "tool": bwrap_version() if self.sealed else None,
            "network": "on" if self.network else "off",
            "memory_cap": self.memory,
            "process_cap": (
                f"{self.max_processes} (kernel, {cgroup_kind('pids')})"
                if self.max_processes
                else None
                if self.mode == "off" or pids_problem() is None
                else f"none: {pids_problem()}"
            ),
            "tracing": (
                None
                if not self.sealed
                else "refused (seccomp)"
                if trace_filter() is not None
                else "open: no libseccomp here"
            ),
        }


# ---------------------------------------------------------------------------- the file view


@dataclass(frozen=True)
class View:
    """What a sealed task sees of the file system; nothing else exists inside.

    ``readable``: folders and files bound read-only at their own paths. ``writable``: bound
    read-write (the task's scratch, output and predictions folders, the paths the user's
    options name). ``arrays``: bound read-only after everything else (the task's spec, the
    array files it is given).
    ``hidden``: emptied (an empty tmpfs) where they would otherwise show through a readable
    folder: the data folder, the run folder, the caches. ``cwd``: the working directory inside.
    ``gpu``: the GPU device files are bound in (a task on ``cuda``).
    """

    readable: tuple[str, ...]
    writable: tuple[str, ...]
    arrays: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    cwd: str | None = None
    gpu: bool = False


@functools.cache
def interpreter_paths(
    python: str, env_items: tuple[tuple[str, str], ...] = (), hidden: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The folders an interpreter reads its standard library and packages from: its prefixes and
    every folder on its ``sys.path`` (asked of the interpreter itself, once per process).

    The interpreter starts as a task's does, running the ``import`` lines of the ``.pth`` files
    its packages installed: where bwrap works, it is asked sealed (every file read-only, the
    ``hidden`` folders emptied, no network, its processes ended with it), so that this code
    cannot reach the test labels, nor leave them, nor anything running, where a task would
    find them."""
    code = (
        "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix,"
        " sys.base_exec_prefix, *sys.path]))"
    )
    found = {str(Path(python).parent.parent)}  # a venv's own folder (bin/python inside it)
    seal: list[str] = []
    if bwrap_problem() is None:
        seal = ["bwrap", *_namespace_flags(network=False), "--ro-bind", "/", "/"]
        seal += ["--proc", "/proc", *PROC_COVERS, "--dev", "/dev"]
        itself = (os.path.abspath(python), os.path.realpath(python))
        for folder in dict.fromkeys(os.path.realpath(h) for h in hidden):
            # by its real path (bwrap mounts nothing on a link); never over the interpreter
            if os.path.isdir(folder) and not any(_inside(p, folder) for p in itself):
                seal += _tmpfs(folder, HIDDEN_TMPFS_BYTES)
        seal.append("--")
    try:
        out = subprocess.run(
            [*seal, python, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(env_items) or None,
            cwd="/",
        )
        found.update(p for p in json.loads(out.stdout) if p)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        log.warning("could not ask %s for its sys.path (%s); binding its prefix only", python, exc)
    real = Path(os.path.realpath(python))
    found.add(str(real.parent.parent))  # the installation the venv's python links to
    return tuple(sorted(p for p in found if p != "/" and Path(p).exists()))


def task_view(
    *,
    python: str,
    code: Iterable[str],
    task_dirs: Iterable[str],
    task_file: str,
    arrays: Iterable[str],
    shared: Iterable[str] = (),
    hidden: Iterable[str],
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    gpu: bool = False,
) -> View:
    """The view of one task: ``python``'s installation and packages, the ``code`` folders or
    files the worker imports, its ``task_file`` read-only, its ``task_dirs`` (scratch, output,
    predictions) and the ``shared`` paths read-write, the ``arrays`` files read-only,
    with the ``hidden`` folders emptied wherever they fall inside what is bound, and the GPU
    device files when ``gpu`` (a task on ``cuda``).

    The task's own folder is not bound, only those folders in it: what the harness writes
    there after the task (``result.json``, ``evaluator/``) and reads (``task.json`` on a resume)
    is out of the task's reach. A ``shared`` path that holds or lies inside what is bound
    read-only (the interpreter's folders, the code) is left out: code a task could rewrite would
    run unsealed in the next task, in ``setup`` or in the harness."""
    env_items = tuple(sorted((env or os.environ).items()))
    emptied = tuple(os.path.abspath(h) for h in dict.fromkeys(hidden) if h)
    readable = [*interpreter_paths(python, env_items, emptied), *code]
    resolv = os.path.realpath("/etc/resolv.conf")  # often a link into /run
    if os.path.exists(resolv):
        readable.append(resolv)
    real = [os.path.realpath(r) for r in readable]
    shared = [
        p
        for p in shared
        if not any(_inside(os.path.realpath(p), r) or _inside(r, os.path.realpath(p)) for r in real)
    ]
    return View(
        readable=tuple(_outermost(readable)),
        writable=(*task_dirs, *shared),
        arrays=(task_file, *arrays),
        hidden=emptied,
        cwd=cwd,
        gpu=gpu,
    )


def option_paths(options: Mapping[str, Any], hidden: Iterable[str]) -> list[str]:
    """The existing files and folders that options the user gave name by absolute path (such
    as ``model_dir``): a sealed task sees them too, read-write. Pass only the user's options
    (``--option`` and the budgets file), never an adapter's defaults: an adapter must not choose
    what of the machine its sandbox shows. Left out, compared where links lead: anything that
    overlaps a ``hidden`` folder (the data, the run folder), and the system folders (shown
    read-only to every task already)."""
    hidden = [os.path.realpath(h) for h in hidden if h]
    found = []
    for value in options.values():
        if isinstance(value, str) and os.path.isabs(value) and os.path.exists(value):
            path = os.path.realpath(value)
            if _under_system(path) or any(_inside(path, h) or _inside(h, path) for h in hidden):
                continue
            found.append(path)
    return found


def _outermost(paths: Iterable[str]) -> list[str]:
    """``paths`` without those inside another one of them (one bind covers them)."""
    result: list[str] = []
    for path in sorted({os.path.abspath(p) for p in paths}, key=lambda p: (p.count("/"), p)):
        if not any(_inside(path, outer) for outer in result):
            result.append(path)
    return result


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _shown_at(hidden: Iterable[str], shown: Iterable[str]) -> list[str]:
    """Where each ``hidden`` folder would show inside the sandbox through a ``shown`` one (bound
    at its own path): at its own path when it lies in (or is) that folder, and also under the
    shown path when the shown one is a link, or lies under one, that leads to a folder holding
    it (``proj-link/data`` for a hidden ``proj/data``)."""
    found = []
    for h in hidden:
        if not os.path.isdir(h):
            continue
        real = os.path.realpath(h)
        for v in shown:
            if _inside(h, v) and real == os.path.abspath(h):  # bwrap mounts nothing on a link
                found.append(h)
            if _inside(real, os.path.realpath(v)):
                found.append(os.path.join(v, os.path.relpath(real, os.path.realpath(v))))
    return [os.path.normpath(p) for p in dict.fromkeys(found)]


def _under_system(path: str) -> bool:
    return any(_inside(os.path.realpath(path), os.path.realpath(s)) for s in SYSTEM_PATHS)


def private_folders() -> list[str]:
    """The folders a sealed task gets empty and its own: each an in-memory file system (tmpfs)."""
    private = ["/tmp", "/var/tmp", "/run"]
    home = os.path.expanduser("~")
    if home not in ("/", "") and not _under_system(home):
        private.append(home)
    return private


def _tmpfs(path: str, size: int | None) -> list[str]:
    """bwrap's arguments for an empty in-memory folder at ``path`` of at most ``size`` bytes
    (``--size`` goes right before the ``--tmpfs`` it bounds; unbounded where bwrap lacks it)."""
    bound = ["--size", str(size)] if size and tmpfs_size_supported() else []
    return [*bound, "--tmpfs", path]


def bwrap_arguments(
    view: View, command: Sequence[str], *, network: bool, tmpfs_size: int | None = None
) -> list[str]:
    """bwrap's arguments (without the program name) that run ``command`` inside ``view``;
    each in-memory folder of the task holds at most ``tmpfs_size`` bytes (default:
    :func:`tmpfs_bytes` of no cap)."""
    size = tmpfs_size or tmpfs_bytes(None)
    args = _namespace_flags(network=network)
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", *PROC_COVERS, "--dev", "/dev", "--ro-bind-try", "/sys", "/sys"]
    # --dev's /dev/shm is a folder of /dev's tmpfs, which --size cannot bound: a tmpfs of its own
    args += _tmpfs("/dev/shm", size)
    # bwrap's init is pid 1: its memory is not the task's to write (see TRACE_SYSCALLS).
    args += [
        "--ro-bind",
        "/dev/null",
        "/proc/1/mem",
        "--ro-bind",
        "/dev/null",
        "/proc/1/task/1/mem",
    ]
    for pattern in GPU_DEVICES if view.gpu else ():
        for device in sorted(glob.glob(pattern)):
            args += ["--dev-bind", device, device]
    for folder in private_folders():
        args += _tmpfs(folder, size)
    bound = [p for p in view.readable if not _under_system(p)]
    # A hidden folder is emptied only where something bound would show it (elsewhere it is
    # absent already). Mounts go outermost first: a hidden folder inside a bound one is emptied
    # after that bind, and a bound folder inside a hidden one is bound after the emptying; a
    # hidden folder that is itself bound (a folder on the interpreter's sys.path) is emptied
    # after its bind.
    shown = [*(s for s in SYSTEM_PATHS if not os.path.islink(s)), *bound]
    hidden = _shown_at(view.hidden, shown)
    mounts = [(p, "--ro-bind") for p in bound] + [(h, "--tmpfs") for h in hidden]
    for path, how in sorted(mounts, key=lambda m: (m[0].count("/"), m[1] == "--tmpfs")):
        args += _tmpfs(path, HIDDEN_TMPFS_BYTES) if how == "--tmpfs" else [how, path, path]
    for path in view.writable:
        args += ["--bind", path, path]
    for path in view.arrays:
        args += ["--ro-bind", path, path]
    if view.cwd:
        args += ["--chdir", view.cwd]
    # Last, once every mount point is made: bwrap's root and /dev are tmpfs mounts no --size
    # bounds and no sampled cap counts (a task could fill memory writing /x). --remount-ro is
    # not recursive: the folders mounted on them (/tmp, home, its task folder, /dev/shm,
    # /dev/null ...) stay as they are.
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    return [*args, "--", *command]


# ---------------------------------------------------------------------------- one sealed task


@dataclass
class Seal:
    """How one task is started: its command wrapped in bwrap and its cgroup.

    Made by :func:`seal` from a :class:`Policy`; :func:`decathlon.enforcement.run_limited` calls
    :meth:`command` before it starts the task and :meth:`close` once the task is over.
    """

    policy: Policy
    view: View | None = None
    cgroup: TaskCgroup | None = None
    memory_mb: int | None = None
    _args_file: IO[bytes] | None = field(default=None, repr=False)
    _info_file: IO[bytes] | None = field(default=None, repr=False)
    _filter_file: IO[bytes] | None = field(default=None, repr=False)
    _init_pid: int = field(default=0, repr=False)

    @property
    def sealed(self) -> bool:
        return self.view is not None

    def command(self, command: Sequence[str]) -> tuple[list[str], tuple[int, ...]]:
        """The command line that starts ``command`` sealed, and the file descriptors to pass."""
        argv = list(command)
        fds: tuple[int, ...] = ()
        if self.view is not None:
            args = bwrap_arguments(
                self.view,
                argv,
                network=self.policy.network,
                tmpfs_size=tmpfs_bytes(self.memory_mb),
            )
            options, command = args[: args.index("--")], args[args.index("--") :]
            # bwrap reads its options from a file, so that its command line (visible as
            # /proc/1/cmdline inside) names no folder of the harness: only the worker's command.
            handle = tempfile.TemporaryFile()
            # bwrap tells the pid of its init here (see close).
            self._info_file = tempfile.TemporaryFile()
            options += ["--info-fd", str(self._info_file.fileno())]
            fds = (handle.fileno(), self._info_file.fileno())
            program = trace_filter()
            if program is not None:
                self._filter_file = tempfile.TemporaryFile()
                self._filter_file.write(program)
                self._filter_file.flush()
                self._filter_file.seek(0)
                options += ["--seccomp", str(self._filter_file.fileno())]
                fds += (self._filter_file.fileno(),)
            handle.write(b"".join(a.encode() + b"\0" for a in options))
            handle.flush()
            handle.seek(0)
            self._args_file = handle
            argv = [shutil.which("bwrap") or "bwrap", "--args", str(handle.fileno()), *command]
        if self.cgroup is not None:
            argv = self.cgroup.wrap(argv)
        return argv, fds

    def in_memory_folders(self) -> tuple[int, dict[int, int]] | None:
        """The sandbox's first process and what each of the task's in-memory file systems
        holds (bytes, by device number): its private folders and ``/dev`` (``/dev/shm``), tmpfs
        mounts of its own, whose files are pages no process need map. ``None`` before the
        sandbox has started, or unsealed. A sampled cap counts them with
        :func:`decathlon.enforcement.shared_memory_unmapped`."""
        if self._info_file is None:
            return None
        if not self._init_pid:
            try:
                info = os.pread(self._info_file.fileno(), 4096, 0)
                self._init_pid = int(json.loads(info or b"{}").get("child-pid", 0))
            except (OSError, ValueError):
                return None
            if not self._init_pid:
                return None
        held: dict[int, int] = {}  # what each folder holds, by its device
        # Looked up inside the task's own mount namespace, through its init's root.
        for folder in dict.fromkeys([*private_folders(), "/dev", "/dev/shm"]):
            try:
                where = f"/proc/{self._init_pid}/root{folder}"
                fs = os.statvfs(where)
                device = os.stat(where).st_dev
            except OSError:  # not started yet, or over
                continue
            held[device] = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        return self._init_pid, held

    def returncode(self, code: int | None) -> int | None:
        """The worker's exit status as a plain subprocess gives it: bwrap reports a death by
        signal N as 128 + N, which becomes -N again."""
        if self.view is not None and code is not None and 128 < code < 128 + 65:
            return -(code - 128)
        return code

    def close(self) -> None:
        """Once bwrap has exited: reap its init, delete the task's cgroup."""
        if self._args_file is not None:
            self._args_file.close()
            self._args_file = None
        if self._filter_file is not None:
            self._filter_file.close()
            self._filter_file = None
        if self._info_file is not None:
            self._reap_init()
            self._info_file.close()
            self._info_file = None
        if self.cgroup is not None:
            self.cgroup.remove()

    def _reap_init(self) -> None:
        """bwrap's init (the namespace's first process) outlives bwrap by a moment; a harness
        that is a child subreaper (see :mod:`decathlon.enforcement`) then inherits it and must
        reap it, or it stays a zombie until the harness exits."""
        import time

        assert self._info_file is not None
        try:
            self._info_file.seek(0)
            pid = int(json.loads(self._info_file.read() or b"{}").get("child-pid", 0))
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 10
        while pid and time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:  # this process's child now, and ended
                    return
            except ChildProcessError:  # not this process's child: still bwrap's, or gone
                try:
                    if psutil.Process(pid).parent().name() != "bwrap":
                        return  # someone else's to reap
                except (psutil.Error, AttributeError):
                    return  # gone, or its parent is
            time.sleep(0.02)


def seal(
    policy: Policy,
    *,
    tag: str,
    memory_mb: int | None,
    view: View | None,
) -> Seal:
    """The :class:`Seal` of one task under ``policy``: bwrap with ``view`` when the policy seals,
    and a cgroup with a memory cap of ``memory_mb`` when asked for and possible, with the
    policy's cap on processes, and (unsealed) to track the task's processes."""
    kernel = policy.mode != "off" and cgroup_problem() is None
    limit_mb = memory_mb if memory_mb and kernel else None
    cgroup = None
    try:
        cgroup = TaskCgroup.create(
            tag,
            limit_mb=limit_mb,
            max_processes=policy.max_processes,
            # no namespace to empty: a cgroup that also tracks the task's processes
            track=not policy.sealed and cgroup_problem() is None,
        )
    except OSError as exc:
        log.debug("no cgroup for this task: %s", exc)
    if limit_mb and (cgroup is None or cgroup.limit_mb is None):
        log.warning("no memory cgroup for this task; the cap is sampled")
    return Seal(
        policy=policy,
        view=view if policy.sealed else None,
        cgroup=cgroup,
        memory_mb=memory_mb,
    )
