"""A write made at most every ``delay`` seconds: ``DelayedWrite``.

``changed()`` writes at once when the last write is older than the delay; otherwise one
thread of its own writes once the delay is up, with every change made until then. It is one
long-lived thread, started at the first delayed write: a thread per delayed write (a
``threading.Timer``) cost a 500-task run about 25 MB of memory, the allocator keeping an arena
for each new thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

__all__ = ["DelayedWrite"]


class DelayedWrite:
    """``write`` made at most every ``delay`` seconds. Every method is called with ``mutex``
    held, the lock that also guards what ``write`` writes."""

    def __init__(self, write: Callable[[], None], delay: float, mutex: threading.Lock, name: str):
        self._write = write
        self._delay = delay
        self._wake = threading.Condition(mutex)
        self._name = name
        self._written_at = -delay  # time.monotonic() of the last write
        self._due: float | None = None  # when the thread writes next
        self._thread: threading.Thread | None = None
        self._stopped = False

    def now(self) -> None:
        """Write at once."""
        self._write()
        self._written_at = time.monotonic()

    def changed(self) -> None:
        """Write at once unless the last write was a moment ago; then once the delay is up."""
        due = self._written_at + self._delay
        if due <= time.monotonic():
            self._due = None  # this write holds the changes the thread was to write
            self.now()
        elif self._due is None:
            self._due = due
            if self._thread is None:
                # A daemon: a process that ends without ``stop`` (a crash, in effect) loses at
                # most this write; a non-daemon thread would keep such a process from ending.
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()

    def stop(self) -> threading.Thread | None:
        """No delayed write from now on. Returns the thread, for the caller to join once it
        has released the mutex (the thread ends as soon as it can take it)."""
        self._stopped = True
        self._wake.notify()
        thread, self._thread = self._thread, None
        return thread

    def _run(self) -> None:
        with self._wake:
            while not self._stopped:
                wait = None if self._due is None else self._due - time.monotonic()
                if wait is None or wait > 0:
                    self._wake.wait(wait)
                    continue
                self._due = None
                # A failed write (a full disk) must not end the thread: the next change or
                # the owner's close writes again.
                with contextlib.suppress(OSError):
                    self.now()
