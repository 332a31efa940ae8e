"""A task run's lines in Prefect's log, sent a few at a time.

Lines that come together (a turn, its tool calls, their results) go to the server as one
log entry of several lines: every entry costs the run and the server about half a
millisecond of CPU (the record, its filters, its validation, a thread's wake-up, a row), and
a task writes eight lines or more. A line waits at most ``DELAY`` seconds, less than Prefect
itself holds logs before it sends them (2 s); a warning or an error goes at once, after the
lines before it, so the UI's level filter still finds it alone. Where lines are printed (the
terminal, ``session.log``), each line of an entry keeps its own time, level and run
(``print_each_line``).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from typing import Any

from aca_flows._logging import all_log_handlers

__all__ = ["LineBatch", "console_handlers", "print_each_line"]

DELAY = 0.5
# Marks an entry of joined lines (``LogRecord.aca_lines``).
_JOINED = "aca_lines"


class LineBatch:
    """Lines for ``logger`` (a run logger), joined into entries; ``flush`` when the task ends.
    ``add`` may be called from any thread; the timer runs on the loop that made the batch."""

    def __init__(self, logger: Any, delay: float = DELAY):
        self._logger = logger
        self._delay = delay
        self._loop = asyncio.get_running_loop()
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, level: int, line: str) -> None:
        if level > logging.INFO:
            self.flush()
            self._logger.log(level, line)
            return
        with self._lock:
            self._lines.append(line)
            first = len(self._lines) == 1
        if not first:
            return
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        try:
            self._arm() if on_loop else self._loop.call_soon_threadsafe(self._arm)
        except RuntimeError:  # the loop has closed: nothing would send it later
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if lines:
            self._logger.info("\n".join(lines), extra={_JOINED: True})

    def _arm(self) -> None:
        with self._lock:
            if self._timer is None and self._lines:
                self._timer = self._loop.call_later(self._delay, self.flush)


def print_each_line(handler: logging.Handler) -> None:
    """Have ``handler`` write each line of a ``LineBatch`` entry as a line of its own, with
    the prefix it gives a record (its time, level and run), as they were before they were
    joined. Other records, a traceback's among them, are written as they are."""
    if not isinstance(handler.formatter, _EachLine):
        handler.setFormatter(_EachLine(handler.formatter))


class _EachLine(logging.Formatter):
    """The handler's own formatter, applied to each line of a joined entry."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self._inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, _JOINED, False):
            return self._inner.format(record)
        lines = []
        for line in record.getMessage().split("\n"):
            one = copy.copy(record)
            one.msg, one.args = line, None
            lines.append(self._inner.format(one))
        return "\n".join(lines)


def console_handlers() -> list[logging.Handler]:
    """Prefect's terminal handlers, on whichever loggers there are now."""
    return [h for h in all_log_handlers() if type(h).__name__ == "PrefectConsoleHandler"]
