"""Checks that cannot fail: a verify command whose exit status does not depend on the work.

``true``, ``:``, ``exit 0``, an ``echo``, a command commented out (``# pytest``); and, as
``/bin/sh`` runs them, a pipeline whose last command always succeeds (``pytest -q | tail -5``:
its status is ``tail``'s), a list whose last part always does (``pytest; echo done``),
``X || true``. Such a check passes whatever the worktree holds, so its pass proves nothing:
aca still runs it, and says so wherever it reports the pass (the log, the task's report, the
pull request, ``aca sessions show``).

Conservative: anything not understood (a subshell, ``if``, a function, ``!``) may fail, so is
never called vacuous.

A check can also pass on the agent's word in part: the change edits a file the command names
(``sh check.sh``, ``pytest tests/test_api.py``). A task may have to change its tests, so that
is no failure; it is said beside the pass (``pass_notes``), for a reviewer to look at.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING

from aca_flows._words import listed

if TYPE_CHECKING:
    from aca_flows.plan.models import ExecutionPlan

__all__ = [
    "VACUOUS_NOTE",
    "checks_nothing",
    "edited_checks",
    "pass_notes",
    "proved_nothing",
    "unchecked_warning",
]

VACUOUS_NOTE = "it checks nothing: it passes whatever the work holds"

_ALWAYS = {"true", ":", "/bin/true", "/usr/bin/true", "echo", "printf"}
# At the end of a pipeline they succeed on any input (their status is the pipeline's).
_SINKS = {"tail", "head", "tee", "cat", "wc", "sort", "uniq", "less", "more"}
_REDIRECTS = {">", ">>", "<", ">&", "<&", ">|", "<>"}
_LISTS = {";", "&", "\n"}
_AND_OR = {"&&", "||"}


def checks_nothing(command: str | None) -> bool:
    """Whether ``command`` succeeds whatever the files it runs on hold (see the module doc)."""
    if not command or not command.strip():
        return False
    # Comment lines (a shebang too) run nothing; the shell runs the lines after them.
    lines = [line for line in command.splitlines() if not line.lstrip().startswith("#")]
    if not any(line.strip() for line in lines):  # "# pytest -q": nothing runs, exit 0
        return True
    try:
        lexer = shlex.shlex(" ; ".join(lines), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: the shell would fail it
        return False
    if any(t in ("(", ")", "!", "{", "}") or t.startswith(("(", ")")) for t in tokens):
        return False
    lists = [part for part in _split(tokens, _LISTS) if part]
    # A list's status is its last command's.
    return bool(lists) and _and_or_always_passes(lists[-1])


def _unchecked_tasks(plan: ExecutionPlan) -> list[str]:
    """The tasks left to run whose work no check can fail: no verify command (their own or
    the plan's), or one that checks nothing. Their changes would be committed on the agent's
    word alone, which the run and the dry run say before anything runs."""
    from aca_flows.plan.models import verify_command_for

    return [
        task.id
        for task in plan.leaves()
        if task.status.state == "pending"
        and ((command := verify_command_for(plan, task)) is None or checks_nothing(command))
    ]


def unchecked_warning(plan: ExecutionPlan) -> str | None:
    """What the run and the dry run say of ``_unchecked_tasks``; None when there are none."""
    unchecked = _unchecked_tasks(plan)
    if not unchecked:
        return None
    shown = listed(unchecked, 10)
    return (
        f"{len(unchecked)} task(s) have no verify command that can fail ({shown}): their "
        'changes are committed on the agent\'s word alone. Give each one (verify="pytest -q"), '
        "or the plan a default for all (docs/task-files.md)."
    )


def proved_nothing(passed: bool | None, command: str | None) -> bool:
    """Whether a check's pass proved nothing: it passed, and would have whatever the work held.
    The one test of it: the log's ``checks_nothing``, the task's report and the commit line."""
    return bool(passed) and checks_nothing(command)


def edited_checks(command: str | None, files: list[str]) -> list[str]:
    """The files of a change (``files``, paths in the repository) that ``command`` runs: a
    script it starts (``./check.sh``), one an interpreter or test runner is given
    (``sh check.sh``, ``pytest tests/``), the build file of a build tool (``make`` and its
    Makefile). A file it only looks at (``test -f b.txt``) is the check's subject: not named."""
    if not command or not files:
        return []
    lines = [line for line in command.splitlines() if not line.lstrip().startswith("#")]
    try:
        lexer = shlex.shlex(" ; ".join(lines), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: the shell would fail it
        return []
    runs: set[str] = set()
    for part in _split(tokens, _LISTS | _AND_OR | {"|"}):
        words = [word.removeprefix("./") for word in _words(part)]
        if not words:
            continue
        program = words[0].rsplit("/", 1)[-1]
        runs.add(words[0])
        if program in _INTERPRETERS or re.fullmatch(r"python3(\.\d+)?", program):
            runs.update(word.rstrip("/") for word in words[1:] if not word.startswith("-"))
        runs.update(_BUILD_FILES.get(program, ()))
    return [path for path in files if any(path == r or path.startswith(f"{r}/") for r in runs)]


# Programs that run the files they are given, and build tools with the file they run.
_INTERPRETERS = {"sh", "bash", "dash", "zsh", "python", "node", "ruby", "perl", "php", "pytest"}
_BUILD_FILES = {
    "make": ("Makefile", "makefile", "GNUmakefile"),
    "npm": ("package.json",),
    "yarn": ("package.json",),
    "pnpm": ("package.json",),
    "just": ("justfile", "Justfile"),
    "tox": ("tox.ini",),
    "nox": ("noxfile.py",),
}


def pass_notes(passed: bool | None, command: str | None, files: list[str]) -> list[str]:
    """What to say beside a check's pass: it checks nothing, or the change it passed on
    edits what it runs (``files``: the change's). Empty for a check that failed."""
    if not passed:
        return []
    notes = [VACUOUS_NOTE] if checks_nothing(command) else []
    if edited := edited_checks(command, files):
        notes.append(f"{EDITED_NOTE} ({listed(edited, 5)})")
    return notes


EDITED_NOTE = "the change it passed on edits what it runs"


def _and_or_always_passes(tokens: list[str]) -> bool:
    passes: bool | None = None
    operator = None
    part: list[str] = []
    for token in [*tokens, "&&"]:
        if token not in _AND_OR:
            part.append(token)
            continue
        this = _pipeline_always_passes(part)
        if passes is None:
            passes = this
        elif operator == "&&":  # fails when either part may
            passes = passes and this
        else:  # ||: the second part runs only when the first failed
            passes = passes or this
        operator, part = token, []
    return bool(passes)


def _pipeline_always_passes(tokens: list[str]) -> bool:
    stages = _split(tokens, {"|"})
    if not all(stages):
        return False
    last = _words(stages[-1])
    if not last:
        return False
    program = last[0]
    if program == "exit":
        return last[1:] == ["0"]
    return program in _ALWAYS or (len(stages) > 1 and program in _SINKS)


def _words(tokens: list[str]) -> list[str]:
    """A simple command's words: its assignments and redirections left out."""
    words: list[str] = []
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token in _REDIRECTS:
            skip = True  # the file or descriptor it names
        elif not words and "=" in token and token.split("=", 1)[0].isidentifier():
            continue  # VAR=value before the program
        else:
            words.append(token)
    return words


def _split(tokens: list[str], separators: set[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in separators:
            parts.append([])
        else:
            parts[-1].append(token)
    return parts
