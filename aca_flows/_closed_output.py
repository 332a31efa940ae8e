"""Output nobody reads any more: the run goes on, and what it prints is dropped.

A terminal's Ctrl-C reaches every process of its group: in ``aca run ... 2>&1 | tee run.log``
it ends ``tee`` too, while aca takes its 30 s to let running tasks finish. Rich ends the
process at the first write to that broken pipe (``Console.on_broken_pipe``: ``SystemExit(1)``),
and a print raises ``BrokenPipeError``, or ``EIO`` on a terminal that was closed: a run whose
only fault was that nobody read it any more died mid-way, exit 1, its call in flight lost and
its end never recorded. Here the stream's file descriptor is pointed at ``/dev/null`` at the
first such failure, so every later write to it is dropped, and the run ends as it would have.
"""

from __future__ import annotations

import contextlib
import errno
import os

__all__ = ["READER_GONE", "drop_output_of", "survive_a_gone_reader"]

# A pipe whose reader ended; a terminal that was closed (its session's hang-up).
READER_GONE = (errno.EPIPE, errno.EIO)


def drop_output_of(stream) -> None:
    """From now on, what is written to ``stream`` goes nowhere, silently."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)


def survive_a_gone_reader() -> None:
    """Rich's consoles (Prefect's log handler on the terminal, aca's live view) drop their
    output at a broken pipe instead of ending the process."""
    from rich.console import Console

    def on_broken_pipe(self) -> None:
        drop_output_of(self.file)

    Console.on_broken_pipe = on_broken_pipe  # type: ignore[method-assign]
