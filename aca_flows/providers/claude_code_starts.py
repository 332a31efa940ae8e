"""Claude processes start in turn: at most one per core is starting at a time (``starting``).

A claude process spends about half a CPU-second loading itself before its first request, and
little after it: it mostly waits for the model. Eight tasks starting at once on two cores
shared those cores eight ways, and every one of them reached its first request after the
slowest (``bench/peer.py``: the first call 2.6-3.0 s after `aca run`; 1.1-1.4 s in turn). A
process counts as started at its first message (Claude Code's ``init``, sent as it is about
to make its first request), when it ends, or after ``HOLD_SECONDS``: one that is slow to
start (a long resumed transcript, an MCP server) holds a turn no longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable

__all__ = ["HOLD_SECONDS", "starting"]

HOLD_SECONDS = 5.0
_POLL_SECONDS = 0.02


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# A thread's semaphore, not asyncio's: calls come from more than one event loop (a flow's,
# an intelligent parse's thread). Created at first use, so a fork (the warm runner's) starts
# with every turn free.
_turns: threading.Semaphore | None = None
_turns_made = threading.Lock()


def _semaphore() -> threading.Semaphore:
    global _turns
    with _turns_made:
        if _turns is None:
            _turns = threading.Semaphore(_cores())
        return _turns


@contextlib.asynccontextmanager
async def starting(hold: float = HOLD_SECONDS) -> AsyncIterator[Callable[[], None]]:
    """Wait for a turn to start a claude process; yields ``started``, to call at its first
    message. The turn is given back then, after ``hold`` seconds, or on leaving the block,
    whichever comes first. Waiting polls the semaphore: a cancel while waiting holds nothing."""
    turns = _semaphore()
    while not turns.acquire(blocking=False):
        await asyncio.sleep(_POLL_SECONDS)
    given_back = False

    def started() -> None:
        nonlocal given_back
        if not given_back:
            given_back = True
            turns.release()

    timer = asyncio.get_running_loop().call_later(hold, started)
    try:
        yield started
    finally:
        timer.cancel()
        started()
