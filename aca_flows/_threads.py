"""Blocking work (git, files) off the event loop, in aca's own threads: ``in_thread``, and
``in_thread_to_its_end`` for a write that must not be overtaken by the next one.

asyncio's default executor, which ``asyncio.to_thread`` uses, has min(32, cores + 4) threads:
six on a two-core machine. Eight tasks landing at once each held one of them while waiting
for the merge lock, and every other task's git work (the next task's worktree, a removal)
queued behind those waits. aca's threads mostly wait (on git, on locks, on the disk), so
its pool is sized for waiting, not for the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["in_thread", "in_thread_to_its_end"]

P = ParamSpec("P")
R = TypeVar("R")


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates an arena of its own, up to 8 per core, and an
    arena keeps what it once held: with saves and git's output in aca's threads, a 500-task
    run held 25 MB more (263 against 238 MB after 50 tasks; 235 MB with two arenas). Two
    are plenty for threads that mostly wait. Elsewhere (musl, macOS) nothing changes."""
    import ctypes
    import sys

    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)


_M_ARENA_MAX = -8  # glibc's malloc.h
_few_malloc_arenas()  # before the pool below starts its first thread

# Threads start when work arrives and stay for the next; a fork (the warm runner's) inherits
# none, since the runner never uses the pool itself.
_POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="aca-blocking")


async def in_thread(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``asyncio.to_thread`` on aca's pool: ``func`` runs in a worker thread with the
    caller's context variables, while the event loop runs everything else."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_POOL, call)


async def in_thread_to_its_end(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``in_thread``, awaited to its end even when the caller is cancelled meanwhile (then
    the cancellation is raised once ``func`` has returned): a save left running behind its
    caller could land after the caller's next save, and put older data back."""
    work = asyncio.ensure_future(in_thread(func, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise
