"""Where the kernel counts and caps a task's processes: its cgroup.

A task gets a cgroup of its own, a child of this process's memory cgroup (cgroup v1) or of its
cgroup (v2, delegated), in two cases (:func:`decathlon.sandbox.seal` decides):

- **A memory cap** (``--memory-mb``): the cgroup's limit. The kernel stops an allocation past
  it, however fast, and counts the out-of-memory kills and the peak.
- **An unsealed task** (no bwrap, or ``--sandbox off``): a cgroup with no limit, only to know its
  processes. Membership is inherited on ``fork`` whatever a process does to its session, group
  or environment, so a double-forked daemon with an emptied environment, which the sweep of
  :mod:`decathlon.enforcement` cannot see, is still killed with the task. A sealed task needs
  none: its PID namespace ends everything in it.

Every task cgroup is named ``decathlon-<tag>``; empty ones that a killed harness left are
removed the next time one is made.
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


def _cgroup_parent() -> tuple[str, Path] | None:
    """(kind, folder) where this process's task cgroups can go: v1 memory, or v2."""
    cgroups = _own_cgroups()
    for controllers, path in cgroups.items():
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if (folder / "memory.limit_in_bytes").exists():
                return "cgroup v1", folder
    if "" in cgroups and Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "cgroup v2", Path("/sys/fs/cgroup") / cgroups[""].lstrip("/")
    return None


def cgroup_kind() -> str:
    """``cgroup v1``, ``cgroup v2`` or ``none``: where this process's task cgroups go."""
    found = _cgroup_parent()
    return found[0] if found else "none"


@functools.cache
def cgroup_problem() -> str | None:
    """``None`` when a task can get a memory cgroup of its own here, else why not (one line)."""
    if not sys.platform.startswith("linux"):
        return f"memory cgroups need Linux; this is {sys.platform}"
    try:
        cap = MemoryCgroup.create(f"probe-{os.getpid()}", 64)
    except OSError as exc:
        return f"cannot create a memory cgroup ({exc})"
    if cap is None:
        return (
            "this process's memory cgroup takes no children"
            " (no v1 memory controller, no delegated v2 one)"
        )
    cap.remove()
    return None


@dataclass
class MemoryCgroup:
    """One task's memory cgroup: a limit the kernel enforces, its out-of-memory kills, its peak."""

    kind: str
    folder: Path
    limit_mb: int | None

    @classmethod
    def create(cls, name: str, limit_mb: int | None) -> MemoryCgroup | None:
        """A new child of this process's memory cgroup holding at most ``limit_mb`` (no limit
        when ``None``: the cgroup then only tracks the task's processes); ``None`` when there is
        no such cgroup to make. Raises :class:`OSError` when making it fails."""
        parent = _cgroup_parent()
        if parent is None:
            return None
        kind, where = parent
        _remove_stale(where)
        folder = where / f"{_CGROUP_PREFIX}{name}"
        folder.mkdir()
        cap = cls(kind, folder, limit_mb)
        if limit_mb is None:
            return cap
        try:
            limit = str(int(limit_mb) * 2**20)
            if kind == "cgroup v1":
                (folder / "memory.limit_in_bytes").write_text(limit)
                if (folder / "memory.memsw.limit_in_bytes").exists():  # no escape into swap
                    try:
                        (folder / "memory.memsw.limit_in_bytes").write_text(limit)
                    except OSError:
                        pass
            else:
                if not (folder / "memory.max").exists():
                    try:
                        (where / "cgroup.subtree_control").write_text("+memory")
                    except OSError:
                        folder.rmdir()
                        return None
                (folder / "memory.max").write_text(limit)
                try:
                    (folder / "memory.swap.max").write_text("0")
                except OSError:
                    pass
        except OSError:
            folder.rmdir()
            raise
        return cap

    def wrap(self, command: Sequence[str]) -> list[str]:
        """``command`` started inside this cgroup (a shell joins it, then execs the command, so
        that every process of the task is born in it)."""
        procs = str(self.folder / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *command]

    def oom_kills(self) -> int:
        """How many processes the kernel killed for going over the limit."""
        name = "memory.oom_control" if self.kind == "cgroup v1" else "memory.events"
        try:
            for line in (self.folder / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def peak_mb(self) -> float:
        name = "memory.max_usage_in_bytes" if self.kind == "cgroup v1" else "memory.peak"
        try:
            return int((self.folder / name).read_text().split()[0]) / 2**20
        except (OSError, ValueError, IndexError):
            return 0.0

    def kill(self) -> None:
        """SIGKILL every process still in the cgroup."""
        if self.kind == "cgroup v2" and (self.folder / "cgroup.kill").exists():
            try:
                (self.folder / "cgroup.kill").write_text("1")
                return
            except OSError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.folder / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def remove(self) -> None:
        """Kill what is left and delete the cgroup (retried while the kernel reaps)."""
        for _ in range(50):
            try:
                self.folder.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                self.kill()
                time.sleep(0.1)
        log.warning("could not remove the memory cgroup %s", self.folder)


def _remove_stale(parent: Path) -> None:
    """Delete empty task cgroups left by a harness that was killed (rmdir refuses busy ones)."""
    for folder in parent.glob(f"{_CGROUP_PREFIX}*"):
        try:
            folder.rmdir()
        except OSError:
            pass
