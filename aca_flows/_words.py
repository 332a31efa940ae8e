"""Words as a reader sees them: "1 task", "3 tasks", never "1 tasks"; a message on one line."""

from __future__ import annotations

__all__ = ["counted", "one_line"]


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun`` (singular), with an "s" unless the count is one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined, each run of whitespace one space (a message
    that quotes a server's answer may hold newlines)."""
    return " ".join(text.split())
