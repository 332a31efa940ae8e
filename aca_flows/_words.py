"""Counts as a reader says them: "1 task", "3 tasks", never "1 tasks"."""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun`` (singular), with an "s" unless the count is one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
