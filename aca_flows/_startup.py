"""Start-up of a run: fewer garbage collections while aca's heavy dependencies load.

Importing Prefect and a vendor SDK creates hundreds of thousands of objects that all live to
the end of the process; the collector, run every 700 new objects, walks them again and again
for nothing (about a fifth of the import time). ``collect_less`` raises that threshold for
the start-up; ``collect_as_usual`` puts back what was there once the SDKs are in.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["collect_as_usual", "collect_less"]

_STARTUP_THRESHOLD = 100_000
_saved: tuple[int, int, int] | None = None
_lock = threading.Lock()


def collect_less() -> None:
    """Collect garbage rarely until ``collect_as_usual`` (the CLI calls it before a run)."""
    global _saved
    with _lock:
        if _saved is None:
            _saved = gc.get_threshold()
            gc.set_threshold(_STARTUP_THRESHOLD, *_saved[1:])


def collect_as_usual() -> None:
    """The thresholds as they were before ``collect_less``; nothing if it was not called."""
    global _saved
    with _lock:
        if _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None
