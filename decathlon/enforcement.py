"""Where a budget is enforced: a subprocess, its whole process tree, a wall clock, a memory cap.

A sealed task (see :mod:`decathlon.sandbox`) runs in its own PID namespace, which the kernel
empties when it ends, and, with a memory cap, in its own memory cgroup; what follows is the
harness's own sweep, which every task gets, sealed or not.

The task's worker starts in a new session (its own process group) with a unique tag in its
environment. At the hard limit, or when the tree's memory passes the cap, every process of the
task gets SIGTERM, then SIGKILL after a short grace. The tree is found three ways, so that no
grandchild survives: the process group, the descendants of the worker (the harness is a child
subreaper on Linux, so orphans re-parent to it rather than to init), and every process that
still carries the task's tag in its environment (which also catches ones that called setsid).
A process that does all three (double fork, setsid, an empty environment) is out of the sweep's
sight; an unsealed task's tracking cgroup (see :mod:`decathlon.cgroups`) catches it.

Where no memory cgroup holds the cap, it is sampled: the tree's proportional set sizes, and for a
sealed task what it holds outside them (:func:`shared_memory_unmapped`: its in-memory folders'
files, memfd files, SysV segments), each page counted once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from decathlon.sandbox import Seal

log = logging.getLogger(__name__)

TAG_VARIABLE = "DECATHLON_TASK_TAG"
_PR_SET_CHILD_SUBREAPER = 36
POLL_SECONDS = 0.2


@dataclass
class Outcome:
    """How a limited subprocess ended."""

    returncode: int | None
    elapsed: float
    timed_out: bool = False
    memory_exceeded: bool = False
    memory_kernel: bool = False  # the kernel stopped it at the cap (a memory cgroup)
    peak_memory_mb: float = 0.0  # the tree's summed PSS, or its memory cgroup's peak when sealed
    processes_killed: int = 0  # how many had to be terminated after the worker ended or stopped
    processes_refused: int = 0  # new processes or threads the kernel refused at the task's cap
    max_processes: int | None = None  # that cap

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None


def new_tag() -> str:
    return uuid.uuid4().hex


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux only); True when it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def task_processes(root: psutil.Process | None, tag: str) -> list[psutil.Process]:
    """Every live process of a task: the root, its descendants, and any that carry its tag.

    ``root`` is the worker as it was found when it started: once the worker has been reaped its
    pid may be handed to another process, which psutil tells apart by its start time, so neither
    it nor its children are taken for the task's.
    """
    found: dict[int, psutil.Process] = {}
    try:
        if root is not None and root.is_running():
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
    except psutil.NoSuchProcess:
        pass
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid == me:
            continue
        try:
            if proc.environ().get(TAG_VARIABLE) == tag:
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return list(found.values())


def kill_tree(
    root: psutil.Process | None,
    tag: str,
    *,
    grace: float = 5.0,
    popen: subprocess.Popen | None = None,
) -> int:
    """SIGTERM every process of the task, SIGKILL what is left after ``grace`` seconds.

    Returns how many processes were signalled. Pass the worker's ``popen`` when this process
    started it: it is then reaped through ``popen`` (which keeps its exit status) rather than by
    psutil.
    """
    procs = [p for p in task_processes(root, tag) if _alive(p)]
    # The sandbox's own processes get no SIGTERM: when they end, the kernel kills the whole PID
    # namespace at once, and the task's processes would get no grace.
    polite = [p for p in procs if not _is_sandbox(p)]
    if root is not None and len(polite) == len(procs) and not _reused(root):
        try:
            os.killpg(root.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in polite:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    own = popen.pid if popen is not None else None
    others = [p for p in procs if p.pid != own]
    _, alive = psutil.wait_procs([p for p in others if p in polite], timeout=grace)
    alive += [p for p in others if p not in polite]
    if popen is not None and _is_sandbox_pid(popen.pid):
        try:
            popen.wait(timeout=0.5)  # the sandbox ends by itself once its worker has
        except subprocess.TimeoutExpired:
            popen.kill()
    if popen is not None:
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            popen.kill()
    # Children forked during the grace period are caught on this second pass.
    rest = {p.pid: p for p in alive + task_processes(root, tag) if p.pid != own}
    for proc in rest.values():
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(rest.values()), timeout=grace)
    if popen is not None:
        popen.wait()
    return len(procs)


def _reused(root: psutil.Process) -> bool:
    """Whether another process holds the worker's pid now (its group id would name that one's
    group: the worker's group, while it has members, keeps the pid from being handed out)."""
    try:
        return not root.is_running() and psutil.pid_exists(root.pid)
    except psutil.Error:
        return False


def _is_sandbox(proc: psutil.Process) -> bool:
    try:
        return proc.name() == "bwrap"
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _is_sandbox_pid(pid: int) -> bool:
    try:
        return _is_sandbox(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def _processes(pids: Sequence[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tree_pss_mb(root: psutil.Process, tag: str) -> float:
    """The tree's memory: the sum of proportional set sizes (PSS) where Linux gives them, so
    that pages shared after a fork count once; resident sizes elsewhere."""
    total = 0
    for proc in task_processes(root, tag):
        try:
            try:
                total += proc.memory_full_info().pss
            except (AttributeError, psutil.AccessDenied):
                total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return total / 2**20


def run_limited(
    cmd: Sequence[str],
    *,
    hard_limit: float,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    memory_mb: float | None = None,
    kill_grace: float = 5.0,
    on_tick: Callable[[float], None] | None = None,
    tag: str | None = None,
    seal: Seal | None = None,
) -> Outcome:
    """Run ``cmd`` until it exits or ``hard_limit`` seconds pass; never leave a process behind.

    stdout and stderr go to ``log_path``. ``memory_mb`` caps the memory of the whole tree: by
    the kernel when ``seal`` holds a memory cgroup, else checked every few tenths of a second.
    ``seal`` (from :func:`decathlon.sandbox.seal`) starts the command sealed; it is closed here.
    ``on_tick(elapsed)`` is called while it runs.
    """
    tag = tag or new_tag()
    full_env = dict(os.environ if env is None else env)
    full_env[TAG_VARIABLE] = tag
    become_subreaper()
    argv, fds = seal.command(cmd) if seal is not None else (list(cmd), ())
    cgroup = seal.cgroup if seal is not None else None
    kernel_cap = cgroup is not None and cgroup.limit_mb is not None
    started = time.monotonic()
    try:
        # Unbuffered: the footer's write, which can fail (below), is not left to the close.
        with open(log_path, "ab", buffering=0) as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
                pass_fds=fds,
            )
            # Taken before the worker can be reaped, so that its start time tells it apart from
            # a process given its pid afterwards.
            root = psutil.Process(proc.pid)
            outcome = Outcome(returncode=None, elapsed=0.0)
            try:
                sampled = None if kernel_cap else memory_mb
                _watch(proc, root, tag, outcome, started, hard_limit, sampled, on_tick, seal)
            except BaseException:  # Ctrl-C or SIGTERM to the harness: take the task down with it
                kill_tree(root, tag, grace=kill_grace, popen=proc)
                raise
            outcome.elapsed = time.monotonic() - started
            # Always sweep: a worker that exited normally may have left children running.
            leftovers = [p for p in task_processes(root, tag) if _alive(p)]
            if leftovers or outcome.returncode is None:
                outcome.processes_killed = kill_tree(root, tag, grace=kill_grace, popen=proc)
            if outcome.returncode is None:
                outcome.returncode = proc.wait()
            if cgroup is not None and not (seal is not None and seal.sealed):
                # What the sweep could not find: it left the group, the tree and the tag.
                stray = _processes(cgroup.pids())
                if stray:
                    log.warning("%d process(es) of the task escaped the sweep; killed", len(stray))
                    cgroup.kill()
                    psutil.wait_procs(stray, timeout=kill_grace)  # reaps the ones adopted here
                    outcome.processes_killed += len(stray)
            if seal is not None:
                outcome.returncode = seal.returncode(outcome.returncode)
            if cgroup is not None:
                outcome.processes_refused = cgroup.process_refusals()
                outcome.max_processes = cgroup.max_processes
            if kernel_cap:
                assert cgroup is not None
                outcome.peak_memory_mb = cgroup.peak_mb()
                if cgroup.oom_kills() and outcome.returncode != 0:
                    outcome.memory_exceeded = outcome.memory_kernel = True
            _footer(out, outcome, hard_limit, memory_mb)
    finally:
        if seal is not None:
            seal.close()
    return outcome


def _footer(out: IO[bytes], outcome: Outcome, hard_limit: float, memory_mb: float | None) -> None:
    footer = f"\n[decathlon] exit {outcome.returncode}, {outcome.elapsed:.1f} s"
    if outcome.timed_out:
        footer += f", killed at the hard limit of {hard_limit:.0f} s"
    if outcome.memory_kernel:
        footer += f", stopped by the kernel at the memory cap of {memory_mb:.0f} MB"
    elif outcome.memory_exceeded:
        footer += f", killed over the memory cap of {memory_mb:.0f} MB"
    if outcome.processes_killed:
        footer += f", {outcome.processes_killed} process(es) terminated"
    if outcome.processes_refused:
        footer += (
            f", {outcome.processes_refused} new process(es) or thread(s) refused"
            f" at the cap of {outcome.max_processes}"
        )
    try:
        out.write((footer + "\n").encode())
    except OSError as exc:  # the task made its log as long as its file system allows (EFBIG)
        log.warning("could not end the task's log with %r: %s", footer.strip(), exc)


def _watch(
    proc: subprocess.Popen,
    root: psutil.Process,
    tag: str,
    outcome: Outcome,
    started: float,
    hard_limit: float,
    memory_mb: float | None,
    on_tick: Callable[[float], None] | None,
    seal: Seal | None = None,
) -> None:
    """Wait for the worker; stop at the hard limit or the memory cap (recorded in ``outcome``).
    A sealed task's memory is its processes' and what its in-memory folders hold (``/tmp``)."""
    ticks = 0
    while True:
        try:
            outcome.returncode = proc.wait(timeout=POLL_SECONDS)
            return
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.monotonic() - started
        ticks += 1
        if memory_mb and ticks % 3 == 1:  # the tree scan costs a few ms: not every tick
            pss = _tree_pss_mb(root, tag)
            held = seal.in_memory_folders() if seal is not None else None
            if held is not None:
                pss += shared_memory_unmapped(*held) / 2**20
            outcome.peak_memory_mb = max(outcome.peak_memory_mb, pss)
            if pss > memory_mb:
                outcome.memory_exceeded = True
                log.warning("task exceeded its memory cap: %.0f MB > %.0f MB", pss, memory_mb)
                return
        if elapsed >= hard_limit:
            outcome.timed_out = True
            log.warning("task reached its hard limit of %.0f s; killing its tree", hard_limit)
            return
        if on_tick is not None:
            on_tick(elapsed)


# ------------------------------------------------ memory a sealed task holds outside its processes


def shared_memory_unmapped(init_pid: int, folders: Mapping[int, int] | None = None) -> int:
    """Bytes of shared memory the processes under ``init_pid`` (a sandbox's init) hold that
    their proportional set sizes do not show: ``memfd_create`` files (held by a descriptor or
    a mapping), the SysV segments of the sandbox's own IPC namespace (attached or not) and the
    files of its in-memory folders (``folders``: the bytes each holds, by its device number).

    Such memory is counted once: its resident pages less the PSS of the task's mappings of it
    (a page a task process maps is in that process's PSS already, which the sampled cap adds:
    a file of ``/dev/shm`` that PyTorch's loader workers map is not counted twice).
    A memfd the task has handed to a process outside it, and then closed, is not seen."""
    try:
        init = psutil.Process(init_pid)
        pids = [init_pid, *(c.pid for c in init.children(recursive=True))]
    except psutil.Error:
        return sum((folders or {}).values())
    # ("memfd" | "sysv" | "folder", inode, shmid or device): resident bytes
    held: dict[tuple[str, int], int] = {("folder", dev): n for dev, n in (folders or {}).items()}
    for pid in pids:
        for kind in ("fd", "map_files"):  # map_files: a mapping whose descriptor was closed
            try:
                names = os.listdir(f"/proc/{pid}/{kind}")
            except OSError:
                continue
            for name in names:
                try:
                    if not os.readlink(f"/proc/{pid}/{kind}/{name}").startswith("/memfd:"):
                        continue
                    st = os.stat(f"/proc/{pid}/{kind}/{name}")
                except OSError:
                    continue
                held[("memfd", st.st_ino)] = st.st_blocks * 512  # allocated, not its length
    held.update(_sysv_segments(init_pid))
    if not held:
        return 0
    for pid in pids:  # what the task's own mappings of them show already
        try:
            with open(f"/proc/{pid}/smaps", "rb") as handle:
                key: tuple[str, int] | None = None
                for line in handle:
                    fields = line.split()
                    if fields and b"-" in fields[0] and len(fields) >= 5:  # a mapping's header
                        path = fields[5] if len(fields) > 5 else b""
                        if path.startswith((b"/memfd:", b"/SYSV")):
                            kind = "memfd" if path.startswith(b"/memfd:") else "sysv"
                            key = (kind, int(fields[4]))
                        else:  # a file of an in-memory folder, by its device (major:minor)
                            major, minor = (int(n, 16) for n in fields[3].split(b":"))
                            key = ("folder", os.makedev(major, minor))
                    elif key in held and fields[0] == b"Pss:":
                        held[key] -= int(fields[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return sum(max(0, n) for n in held.values())


def _sysv_segments(init_pid: int) -> dict[tuple[str, int], int]:
    """The resident bytes of each SysV shared memory segment of the sandbox's IPC namespace
    (its own: empty when it starts), read from inside it (``/proc/sysvipc`` shows the reader's
    namespace). Nothing where ``nsenter`` is missing or may not enter it."""
    try:
        if os.readlink(f"/proc/{init_pid}/ns/ipc") == os.readlink("/proc/self/ns/ipc"):
            return {}  # not a namespace of its own: the machine's segments are not the task's
        done = subprocess.run(
            ["nsenter", f"--ipc=/proc/{init_pid}/ns/ipc", "cat", "/proc/sysvipc/shm"],
            capture_output=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    lines = done.stdout.splitlines()
    if done.returncode != 0 or not lines:
        return {}
    header = lines[0].split()
    for line in lines[1:]:
        row = dict(zip(header, line.split()))
        try:
            found[("sysv", int(row[b"shmid"]))] = int(row[b"rss"])
        except (KeyError, ValueError):
            continue
    return found
