"""A command's own cgroups: what its processes take together, bounded.

``RLIMIT_NPROC`` does not bind root, and ``RLIMIT_AS`` holds one process's address space: no
limit of a process holds a fork bomb run as root, nor memory outside every address space
(a ``memfd_create``, SysV shared memory, a tmpfs file). Where the machine lets aca make
cgroups (root on most Linux hosts: v1 hierarchies, or v2 where aca's own cgroup delegates
the controller), each command runs in cgroups of its own, made under aca's own so the
machine's limits on aca still hold: ``pids`` (``max_processes``) and ``memory`` (all its
processes' memory, page cache and tmpfs files included). It joins them before it starts, so
its first fork is counted; when it ends or is killed, everything left in them is killed, and
they are removed (those an aca killed outright left, by the next). Where a cgroup cannot be
made, the command runs without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import signal
from pathlib import Path

__all__ = ["CommandCgroups"]

_MOUNT = Path("/sys/fs/cgroup")
_counter = itertools.count()


class CommandCgroups:
    """The throwaway cgroups of one command."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    @classmethod
    def create(cls, *, max_processes: int | None, max_memory_bytes: int | None) -> CommandCgroups:
        """Cgroups holding the command to ``max_processes`` and ``max_memory_bytes``, as far as
        the machine lets aca make them (none: no ``paths``)."""
        name = f"aca-{os.getpid()}-{next(_counter)}"
        limits = {"pids": ("pids.max", max_processes)}
        limits["memory"] = (_memory_file(), max_memory_bytes)
        made: dict[Path, list[tuple[str, int]]] = {}
        for controller, (file, value) in limits.items():
            parent = _own_cgroup(controller) if value else None
            if parent is not None:
                _remove_left_behind(parent)
                made.setdefault(parent / name, []).append((file, value))
        paths = []
        for path, settings in made.items():
            try:
                path.mkdir()
                for file, value in settings:
                    (path / file).write_text(str(value))
                paths.append(path)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
        return cls(paths)

    def joined(self, argv: list[str]) -> list[str]:
        """``argv`` started in the cgroups: a shell writes its own pid into each, then
        becomes the command."""
        if not self.paths:
            return argv
        join = 'n=$0; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done'
        procs = [str(path / "cgroup.procs") for path in self.paths]
        return ["/bin/sh", "-c", f'{join}; exec "$@"', str(len(procs)), *procs, *argv]

    def ran_out_of_memory(self) -> bool:
        """Whether the kernel killed a process of the command for the memory limit."""
        for path in self.paths:
            for file in ("memory.events", "memory.oom_control"):  # v2, v1
                for line in _read(path / file).splitlines():
                    key, _, count = line.partition(" ")
                    if key == "oom_kill" and count.strip() not in ("", "0"):
                        return True
        return False

    def kill_all(self) -> None:
        # Parents first: a shell whose child was killed first ran on to its next command
        # (it wrote a file after the timeout's kill). The sandbox's first process is its PID
        # namespace's init; once it is killed the kernel kills the rest of the namespace at once.
        for pid in _parents_first(self._pids()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    async def remove(self) -> None:
        # Processes killed a moment ago may still be exiting; rmdir fails until they are gone.
        for path in self.paths:
            delay = 0.002
            for _ in range(100):
                self.kill_all()
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.1)

    def _pids(self) -> set[int]:
        pids: set[int] = set()
        for path in self.paths:
            with contextlib.suppress(ValueError):
                pids.update(int(p) for p in _read(path / "cgroup.procs").split())
        return pids


def _parents_first(pids: set[int]) -> list[int]:
    parents = {pid: _parent_of(pid) for pid in pids}

    def depth(pid: int) -> int:
        seen = {pid}
        while (pid := parents.get(pid, 0)) in parents and pid not in seen:
            seen.add(pid)
        return len(seen)

    return sorted(pids, key=depth)


def _parent_of(pid: int) -> int:
    fields = _read(Path(f"/proc/{pid}/stat")).rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 else 0


@functools.cache
def _remove_left_behind(parent: Path) -> None:
    """Remove the cgroups an aca killed outright left (once a process): empty, their aca
    process gone."""
    for path in parent.glob("aca-*-*"):
        try:
            os.kill(int(path.name.split("-")[1]), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                path.rmdir()  # refused while a process is in it
        except (ValueError, PermissionError):
            pass


def _memory_file() -> str:
    return "memory.max" if (_MOUNT / "cgroup.controllers").exists() else "memory.limit_in_bytes"


def _own_cgroup(controller: str) -> Path | None:
    """aca's own cgroup of ``controller``, where aca may make one: its v1 hierarchy's, or
    its v2 cgroup when that delegates ``controller`` to the cgroups it holds."""
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        number, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            own = _MOUNT / controllers / path.lstrip("/")
            if (own / "cgroup.procs").exists() and os.access(own, os.W_OK):
                return own
        elif number == "0" and not controllers:
            own = _MOUNT / path.lstrip("/")
            delegated = _read(own / "cgroup.subtree_control").split()
            if controller in delegated and os.access(own, os.W_OK):
                return own
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
