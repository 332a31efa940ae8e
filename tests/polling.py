"""Waiting for what arrives later in a test: a server's records, a process's output."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.02
) -> object:
    """Poll ``condition`` until it returns something truthy, and return that; fail naming
    ``what`` after ``timeout`` seconds."""
    value = last_read(condition, bool, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
    return value


def last_read(
    read: Callable[[], T], until: Callable[[T], bool], timeout: float, interval: float = 0.02
) -> T:
    """``read()`` again until ``until`` holds for what it gave, or ``timeout`` seconds have
    passed; the last read either way, for the test to assert on what is there."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if until(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)
