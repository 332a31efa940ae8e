"""An agent that cannot go on without a person says so, with its question.

A tool-loop agent calls ``ask_human(question)``; Claude Code ends its answer with one line
``NEEDS HUMAN: <question>``, parsed strictly like ``NO CHANGE NEEDED:`` (the last non-empty
line, the marker in capitals at its start, a non-empty question). Either ends the agent's
round at once: nothing is verified or committed, and the task fails with the question as its
reason, or, with ``[approval] on_failure = "ask"``, waits for a person's answer
(docs/approval.md, "A stuck task asks").
"""

from __future__ import annotations

__all__ = ["NEEDS_HUMAN_MARKER", "asks_human_reason", "parse_needs_human"]

NEEDS_HUMAN_MARKER = "NEEDS HUMAN:"


def parse_needs_human(text: str) -> str | None:
    """The question of a final ``NEEDS HUMAN: <question>`` line, else ``None``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith(NEEDS_HUMAN_MARKER):
        return None
    return lines[-1][len(NEEDS_HUMAN_MARKER) :].strip() or None


def asks_human_reason(question: str) -> str:
    """The failure reason of a task whose agent asked a person ``question``."""
    return f"the agent needs a person to decide: {question}"
