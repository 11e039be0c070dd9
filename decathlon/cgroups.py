"""Where the kernel counts and caps a task's processes: its cgroup.

A task gets a cgroup of its own, a child of this process's cgroup in the memory and pids
hierarchies (cgroup v1) or of its cgroup (v2, delegated), in three cases
(:func:`decathlon.sandbox.seal` decides):

- **A memory cap** (``--memory-mb``): the cgroup's memory limit. The kernel stops an allocation
  past it, however fast, and counts the out-of-memory kills and the peak.
- **A cap on processes** (``--max-processes``, on by default): the cgroup's ``pids.max``. The
  kernel refuses a ``fork`` or a new thread past it (EAGAIN), so a fork bomb stays one task's
  problem instead of taking the machine's process table from the harness and the other tasks.
- **An unsealed task** (no bwrap, or ``--sandbox off``): a cgroup with no limit, only to know its
  processes. Membership is inherited on ``fork`` whatever a process does to its session, group
  or environment, so a double-forked daemon with an emptied environment, which the sweep of
  :mod:`decathlon.enforcement` cannot see, is still killed with the task. A sealed task needs
  none: its PID namespace ends everything in it.

Every task cgroup is named ``decathlon-<owner>-<tag>``, the owner being the harness process
that made it (its PID namespace, pid and start time). When the next one is made, the cgroups of
owners that are gone are emptied and removed: an unsealed task's processes that outlived a
harness killed with ``kill -9`` (a sealed task's end with the harness, see
:mod:`decathlon.sandbox`) end then. Those of owners in another PID namespace are left alone.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_CGROUP_PREFIX = "decathlon-"


def _own_cgroups() -> dict[str, str]:
    """This process's cgroups: controller list -> path (``""`` for the v2 hierarchy)."""
    found: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            found[controllers] = path
    except (OSError, ValueError):
        pass
    return found


def _parents() -> dict[str, tuple[str, Path]]:
    """Controller (``memory``, ``pids``) -> (kind, folder where this process's task cgroups
    go): a v1 hierarchy of that controller, else the delegated v2 one."""
    cgroups = _own_cgroups()
    found: dict[str, tuple[str, Path]] = {}
    for controllers, path in cgroups.items():
        for controller, probe in (("memory", "memory.limit_in_bytes"), ("pids", "cgroup.procs")):
            if controller in controllers.split(","):
                folder = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
                if (folder / probe).exists():
                    found[controller] = ("cgroup v1", folder)
    if "" in cgroups and Path("/sys/fs/cgroup/cgroup.controllers").exists():
        folder = Path("/sys/fs/cgroup") / cgroups[""].lstrip("/")
        for controller in ("memory", "pids"):
            found.setdefault(controller, ("cgroup v2", folder))
    return found


def _cgroup_parent() -> tuple[str, Path] | None:
    """(kind, folder) where this process's task memory cgroups can go: v1 memory, or v2."""
    return _parents().get("memory")


def cgroup_kind(controller: str = "memory") -> str:
    """``cgroup v1``, ``cgroup v2`` or ``none``: where this process's task cgroups go."""
    found = _parents().get(controller)
    return found[0] if found else "none"


@functools.cache
def cgroup_problem() -> str | None:
    """``None`` when a task can get a memory cgroup of its own here, else why not (one line)."""
    return _problem("memory")


@functools.cache
def pids_problem() -> str | None:
    """``None`` when a task's processes can be capped by the kernel here, else why not."""
    return _problem("pids")


def _problem(controller: str) -> str | None:
    """Make and remove a task cgroup with a limit of ``controller``; ``None`` when it took it."""
    if not sys.platform.startswith("linux"):
        return f"{controller} cgroups need Linux; this is {sys.platform}"
    try:
        name = f"probe-{os.getpid()}"
        if controller == "memory":
            cap = TaskCgroup.create(name, limit_mb=64)
        else:
            cap = TaskCgroup.create(name, max_processes=64)
    except OSError as exc:
        return f"cannot create a {controller} cgroup ({exc})"
    found = cap is not None and (cap.memory_folder if controller == "memory" else cap.pids_folder)
    if cap is not None:
        cap.remove()
    if not found:
        return (
            f"this process's {controller} cgroup takes no children"
            f" (no v1 {controller} controller, no delegated v2 one)"
        )
    return None


def _enable(parent: Path, controller: str, folder: Path, probe: str) -> bool:
    """cgroup v2: let ``folder`` (a child of ``parent``) use ``controller``; whether it can."""
    if (folder / probe).exists():
        return True
    try:
        (parent / "cgroup.subtree_control").write_text(f"+{controller}")
    except OSError:
        return False
    return (folder / probe).exists()


@dataclass
class TaskCgroup:
    """One task's cgroup: a memory limit the kernel enforces, its out-of-memory kills and its
    peak; a cap on its processes and threads and how often the kernel refused one; and the
    list of its processes. Under cgroup v1 the memory and pids controllers are two folders in
    two hierarchies that the task joins both; under v2, one folder."""

    kind: str
    memory_folder: Path | None
    pids_folder: Path | None
    limit_mb: int | None
    max_processes: int | None

    @property
    def folders(self) -> list[Path]:
        """Every folder the task joins, each once."""
        return list(dict.fromkeys(f for f in (self.memory_folder, self.pids_folder) if f))

    @classmethod
    def create(
        cls,
        name: str,
        *,
        limit_mb: int | None = None,
        max_processes: int | None = None,
        track: bool = False,
    ) -> TaskCgroup | None:
        """A new cgroup for one task, child of this process's own: holding at most ``limit_mb``
        of memory and ``max_processes`` processes and threads (each ``None``: no such limit);
        ``track`` asks for one even without a limit, only to list the task's processes.
        ``None`` when there is nothing to make; a limit that cannot be set here is left out
        (its folder is ``None``). Raises :class:`OSError` when making a folder fails."""
        parents = _parents()
        made: dict[Path, Path] = {}  # parent -> the task's folder in it

        def folder_in(parent: Path) -> Path:
            if parent not in made:
                _remove_stale(parent)
                made[parent] = parent / f"{_CGROUP_PREFIX}{_owner_of(os.getpid())}-{name}"
                made[parent].mkdir()
            return made[parent]

        memory = pids = None
        try:
            if (limit_mb is not None or track) and "memory" in parents:
                kind, parent = parents["memory"]
                memory = folder_in(parent)
                if limit_mb is not None and not _limit_memory(kind, parent, memory, limit_mb):
                    memory = None
            if max_processes is not None and "pids" in parents:
                kind, parent = parents["pids"]
                pids = folder_in(parent)
                if not _limit_processes(kind, parent, pids, max_processes):
                    pids = None
        except OSError:
            for folder in made.values():
                _rmdir(folder)
            raise
        for folder in set(made.values()) - {memory, pids}:
            _rmdir(folder)
        if memory is None and pids is None:
            return None
        kind = parents["memory" if memory is not None else "pids"][0]
        return cls(
            kind,
            memory,
            pids,
            limit_mb if memory is not None else None,
            max_processes if pids is not None else None,
        )

    def wrap(self, command: Sequence[str]) -> list[str]:
        """``command`` started inside this cgroup (a shell joins it, then execs the command, so
        that every process of the task is born in it)."""
        procs = [str(f / "cgroup.procs") for f in self.folders]
        joins = " && ".join(f'echo $$ > "${i}"' for i in range(1, len(procs) + 1))
        script = f'{joins} && shift {len(procs)} && exec "$@"'
        return ["/bin/sh", "-c", script, "decathlon-task", *procs, *command]

    def oom_kills(self) -> int:
        """How many processes the kernel killed for going over the limit."""
        if self.memory_folder is None:
            return 0
        name = "memory.oom_control" if self.kind == "cgroup v1" else "memory.events"
        try:
            for line in (self.memory_folder / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def peak_mb(self) -> float:
        if self.memory_folder is None:
            return 0.0
        name = "memory.max_usage_in_bytes" if self.kind == "cgroup v1" else "memory.peak"
        try:
            return int((self.memory_folder / name).read_text().split()[0]) / 2**20
        except (OSError, ValueError, IndexError):
            return 0.0

    def process_refusals(self) -> int:
        """How many times the kernel refused the task a new process or thread at its cap."""
        if self.pids_folder is None:
            return 0
        try:
            for line in (self.pids_folder / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def kill(self) -> None:
        """SIGKILL every process still in the cgroup."""
        for folder in self.folders:
            if self.kind == "cgroup v2" and (folder / "cgroup.kill").exists():
                try:
                    (folder / "cgroup.kill").write_text("1")
                    return
                except OSError:
                    pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def pids(self) -> list[int]:
        found: set[int] = set()
        for folder in self.folders:
            try:
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def remove(self) -> None:
        """Kill what is left and delete the cgroup (retried while the kernel reaps)."""
        for folder in self.folders:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill()
                    time.sleep(0.1)
            else:
                log.warning("could not remove the task cgroup %s", folder)


def _limit_processes(kind: str, parent: Path, folder: Path, max_processes: int) -> bool:
    """Write the cap on a task cgroup's processes and threads; False where it cannot be set
    (v2 gives it no pids controller; the kernel refuses the number), the memory cap kept."""
    if kind == "cgroup v2" and not _enable(parent, "pids", folder, "pids.max"):
        return False
    try:
        (folder / "pids.max").write_text(str(int(max_processes)))
    except OSError as exc:
        log.warning("no cap of %d processes for this task: %s", max_processes, exc)
        return False
    return True


def _limit_memory(kind: str, parent: Path, folder: Path, limit_mb: int) -> bool:
    """Write the memory limit of a task cgroup; False where v2 gives it no memory controller."""
    limit = str(int(limit_mb) * 2**20)
    if kind == "cgroup v1":
        (folder / "memory.limit_in_bytes").write_text(limit)
        if (folder / "memory.memsw.limit_in_bytes").exists():  # no escape into swap
            try:
                (folder / "memory.memsw.limit_in_bytes").write_text(limit)
            except OSError:
                pass
        return True
    if not _enable(parent, "memory", folder, "memory.max"):
        return False
    (folder / "memory.max").write_text(limit)
    try:
        (folder / "memory.swap.max").write_text("0")
    except OSError:
        pass
    return True


def _rmdir(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _pid_namespace() -> str:
    """This process's PID namespace, by its inode (``4026531836``); ``""`` when unknown."""
    try:
        return os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]")
    except OSError:
        return ""


def _owner_of(pid: int) -> str:
    """``<pid namespace>.<pid>.<start time in clock ticks after boot>``: a process of this
    process's PID namespace, told apart from a later one given the same pid; ``""`` when it is
    gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            ticks = handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
    return f"{_pid_namespace()}.{pid}.{ticks}"


def _remove_stale(parent: Path) -> None:
    """Delete the task cgroups of harness processes that are gone (killed), first killing what
    is still in them. Those of a live harness are left alone, even empty: one just made is empty
    until its task joins it (another harness's sweep removed it in between, and the task failed
    to start). So are those of a harness in another PID namespace (a container beside this
    one), whose pids mean nothing here. A cgroup of an older harness (no owner in its name) goes
    once empty for a minute."""
    here = _pid_namespace()
    for folder in parent.glob(f"{_CGROUP_PREFIX}*"):
        owner = folder.name[len(_CGROUP_PREFIX) :].split("-", 1)[0]
        namespace, _, pid = owner.rpartition(".")[0].partition(".")
        if owner.count(".") == 2 and pid.isdigit():
            if not here or namespace != here or _owner_of(int(pid)) == owner:
                continue
            _empty(folder)
        else:
            try:
                if time.time() - folder.stat().st_mtime < 60:
                    continue
            except OSError:
                continue
        try:
            folder.rmdir()
        except OSError:
            pass


def _empty(folder: Path) -> None:
    """SIGKILL every process of a task cgroup whose harness is gone, and wait until they are."""
    for attempt in range(50):
        try:
            pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return
        if not pids:
            return
        if attempt == 0:
            log.warning(
                "killing %d process(es) that a killed harness's task left (%s)", len(pids), folder
            )
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.1)
