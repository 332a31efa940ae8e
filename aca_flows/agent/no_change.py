"""Evidence of a finished task: a change, or an explicit "no change needed" with its reason.

A task completes only with one of two kinds of evidence (``TaskOutcome.outcome``):

- ``changed``: the agent changed files, the verify command passed, the change is committed;
- ``no_change``: the agent stated that the task needs no change and why, left the worktree
  untouched, and the verify command (when there is one) passed on the unchanged code.

How an agent states it: a tool-loop agent calls ``report_no_change(reason)``; Claude Code ends
its answer with one line ``NO CHANGE NEEDED: <reason>``, parsed strictly (the last non-empty
line, the marker in capitals at its start, a non-empty reason). An agent that stops with
neither a change nor that statement fails its task; so does one that states it but leaves
changes behind, and a tool-loop agent that does not call ``finish`` (an answer without a tool
call, reminded once, then another: ``unfinished_reason``). Nothing is committed in any of
these cases. What tools leave behind when tests run (``__pycache__``, ``.pytest_cache`` and
the like) is not a change, unless the start commit holds it (``real_changes``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aca_flows._words import counted, listed, quoted_clause
from aca_flows.providers.claude_code_results import refused_outside

if TYPE_CHECKING:
    from aca_flows.agent.loop import AgentRound
    from aca_flows.workspace import TaskWorktree

__all__ = [
    "CACHE_FOLDERS",
    "CACHE_SUFFIXES",
    "NO_CHANGE_MARKER",
    "evidence_problem",
    "parse_no_change",
    "changes_and_work",
    "real_changes",
    "unfinished_reason",
    "with_ignored_writes",
    "with_refusals",
    "work_in",
    "with_refused_writes",
]

NO_CHANGE_MARKER = "NO CHANGE NEEDED:"
_SHOWN_ANSWER = 300
_SHOWN_FILES = 10
# Caches that running a project's tests or linters writes into a repository without a
# .gitignore for them: byproducts, not work.
CACHE_FOLDERS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
CACHE_SUFFIXES = (".pyc", ".pyo")


def parse_no_change(text: str) -> str | None:
    """The reason of a final ``NO CHANGE NEEDED: <reason>`` line, else ``None``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith(NO_CHANGE_MARKER):
        return None
    return lines[-1][len(NO_CHANGE_MARKER) :].strip() or None


def real_changes(worktree: TaskWorktree, paths: list[str]) -> list[str]:
    """``paths`` without the tool caches running tests leaves. A cache file the start commit
    holds is work when it changes (a cleanup of committed bytecode failed "without changing
    anything"). Runs git: call it off the event loop."""
    caches = {
        path
        for path in paths
        if CACHE_FOLDERS.intersection(path.split("/")) or path.endswith(CACHE_SUFFIXES)
    }
    if caches:
        caches -= worktree.paths_at_base()
    return [path for path in paths if path not in caches]


def changes_and_work(worktree: TaskWorktree) -> tuple[list[str], list[str]]:
    """Every change of the worktree (what `git add -A` would take), and those that are work
    (``real_changes``). Runs git: off the loop, in one hop."""
    every_change = worktree.changed_files()
    return every_change, real_changes(worktree, every_change)


def work_in(worktree: TaskWorktree) -> list[str]:
    """The worktree's changes that are work (``real_changes``). Runs git: off the loop."""
    return changes_and_work(worktree)[1]


def evidence_problem(
    no_change_reason: str | None, changed_files: list[str], last_answer: str
) -> str | None:
    """Why a finished agent round is not evidence of done work, or ``None`` when it is."""
    if no_change_reason is None and not changed_files:
        answer = quoted_clause(last_answer, _SHOWN_ANSWER) or "(empty)"
        return (
            "the agent stopped without changing anything and without stating that no change "
            f"is needed; nothing was committed. Its last answer: {answer}. Make the task "
            "description say what to change, or run it again."
        )
    if no_change_reason is not None and changed_files:
        shown = listed(changed_files, _SHOWN_FILES)
        return (
            f"the agent said no change is needed ({no_change_reason}) but left changes in "
            f"{len(changed_files)} file(s): {shown}; nothing was committed. Run the task "
            "again."
        )
    return None


def unfinished_reason(agent_round: AgentRound, max_turns: int) -> str:
    """Why a round that did not finish fails its task: out of turns, or two answers in a row
    without a tool call (the first answered with a reminder to call ``finish``)."""
    if agent_round.stop != "no_finish":
        turns = counted(max_turns, "turn")
        return f"the agent did not finish within {turns}; raise agent.max_turns or split the task"
    answer = quoted_clause(agent_round.summary, _SHOWN_ANSWER) or "(empty)"
    return (
        "the agent stopped without calling finish (or report_no_change), also after aca asked "
        f"it to, so the task is not known to be done; nothing was committed. Its last answer: "
        f"{answer}. An error passed on as text (a gateway's) ends a task so; a model that does "
        "not call tools reliably cannot run aca's tool loop."
    )


def with_ignored_writes(problem: str, ignored: list[str]) -> str:
    """``problem`` (the agent changed nothing) with the files it wrote that git ignores: the
    agent did write, where no commit can hold it."""
    if not ignored:
        return problem
    shown = listed(ignored, _SHOWN_FILES)
    return (
        f"{problem} It did write {shown}, but git ignores those paths (.gitignore or "
        ".git/info/exclude), so no commit can hold them: have the task write elsewhere, or "
        "change the ignore rules as part of the task."
    )


def with_refused_writes(problem: str, refused: list[str]) -> str:
    """``problem`` (the agent changed nothing) with the writes aca refused it: the agent did
    try, where aca does not let it write."""
    if not refused:
        return problem
    shown = "; ".join(refusal.rstrip(".") for refusal in refused[:_SHOWN_FILES])
    hidden = len(refused) - _SHOWN_FILES
    more = f"; and {hidden} more" if hidden > 0 else ""
    return f"{problem} aca refused its writes: {shown}{more}."


def with_refusals(reason: str | None, refused: int, sandbox_failed: int = 0) -> str | None:
    """``reason`` a task failed for, with the calls its agent was refused outside the worktree
    and the commands Claude Code's sandbox could not start (they may be why): at the end of
    its first line, the one every view shows, before the output a failed check quotes."""
    if not (refused or sandbox_failed) or reason is None:
        return reason
    said = refused_outside(refused, sandbox_failed)
    head, output, tail = reason.partition(" Output:\n")
    if output:
        return f"{head} {said}{output}{tail}"
    first, newline, rest = reason.partition("\n")
    return f"{first} {said}{newline}{rest}"
