"""Ending the ``aca`` process without the interpreter's teardown.

After a run, Python's own teardown (every module and object of Prefect, pydantic and a
provider SDK freed one by one) took 0.6-0.8 s on this project's 2-core machine: the last
part of the time between a run's last provider call and the shell getting its prompt back.
Nothing a user sees depends on it, so ``exit_process`` does what ends a process visibly —
waits for the threads Python would wait for, runs the exit handlers (Prefect sends its last
logs and events there; logging flushes its files), flushes stdout and stderr — and then
ends it at once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

__all__ = ["exit_process"]


def exit_process(code: int) -> NoReturn:
    """Exit with ``code`` as ``sys.exit(code)`` would from the main thread of a command, minus
    the interpreter's teardown."""
    # What the interpreter's exit does first: threading's own exit calls (they stop thread
    # pools' idle workers, which would otherwise wait for work forever), then it waits for
    # every non-daemon thread.
    threading._shutdown()
    atexit._run_exitfuncs()  # what sys.exit would run, in the same order
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream (``None`` when the fd was closed at start): nothing to deliver.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)
