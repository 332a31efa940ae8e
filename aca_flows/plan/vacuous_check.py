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
    """The files of a change (``files``, paths in the repository) that are part of the check
    ``command`` makes, not its subject: a script it starts (``./check.sh``, ``sh check.sh``,
    ``python3 check.py``), the tests a test runner is given (``pytest tests/``), the build
    file of a build tool (``make`` and its Makefile). What it only looks at (``test -f b.txt``,
    ``mypy src``, ``bash -n deploy.sh``) is the subject: not named."""
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
    here = ""  # the folder a `cd` went to, as a prefix of the paths after it
    for part in _split(tokens, _LISTS | _AND_OR | {"|"}):
        words = _words(part)
        while words and words[0] in _WRAPPERS:  # uv run pytest ..., npx jest ...
            words = words[2:] if words[0] in _TWO_WORD_WRAPPERS else words[1:]
        if not words:
            continue
        if words[0] == "cd" and len(words) == 2:
            here = _joined(here, words[1])
            continue
        runs.update(_joined(here, path) for path in _run_by(words))
    return [path for path in files if any(path == r or path.startswith(f"{r}/") for r in runs)]


def _run_by(words: list[str]) -> list[str]:
    """The paths a simple command runs as part of its check (see ``edited_checks``)."""
    program = words[0].rsplit("/", 1)[-1]
    args = words[1:]
    if "/" in words[0]:  # ./check.sh, scripts/check
        return [words[0].removeprefix("./")]
    if program in _BUILD_FILES:
        folder = args[args.index("-C") + 1] if "-C" in args[:-1] else ""
        return [_joined(folder, name) for name in _BUILD_FILES[program]]
    if re.fullmatch(r"python(3(\.\d+)?)?", program) and args[:2] == ["-m", "pytest"]:
        program, args = "pytest", args[2:]
    if program == "pytest":
        return _operands(args, _PYTEST_VALUES)
    if program not in _INTERPRETERS and not re.fullmatch(r"python3(\.\d+)?", program):
        return []
    if any(a in _SYNTAX_ONLY or a.startswith("-c") for a in args if a.startswith("-")):
        return []  # inline code, or a syntax check: nothing of the check's own runs
    operands = _operands(args, {"-m"})
    return operands[:1] if "-m" not in args else []  # the script; what follows is its input


def _operands(args: list[str], taking_values: set[str]) -> list[str]:
    """The words that are not options, nor the values of the options that take one."""
    found, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in taking_values
        else:
            found.append(arg.removeprefix("./").rstrip("/"))
    return found


def _joined(folder: str, path: str) -> str:
    path = path.removeprefix("./").rstrip("/")
    return f"{folder}/{path}" if folder and path and not path.startswith("/") else path


# Programs that run the script they are given first; build tools with the file they run;
# what wraps a command without changing it; options that only check syntax; pytest's options
# that take a value (``--cov src``: src is measured, not run as a test).
_INTERPRETERS = {"sh", "bash", "dash", "zsh", "python", "node", "ruby", "perl", "php"}
_BUILD_FILES = {
    "make": ("Makefile", "makefile", "GNUmakefile"),
    "npm": ("package.json",),
    "yarn": ("package.json",),
    "pnpm": ("package.json",),
    "just": ("justfile", "Justfile"),
    "tox": ("tox.ini",),
    "nox": ("noxfile.py",),
}
_WRAPPERS = {"uv", "poetry", "pipenv", "hatch", "pdm", "npx", "exec", "time", "env"}
_TWO_WORD_WRAPPERS = {"uv", "poetry", "pipenv", "hatch", "pdm"}  # "uv run ..."
_SYNTAX_ONLY = {"-n", "-l", "--check", "--syntax-check"}
_PYTEST_VALUES = {"-k", "-m", "-p", "-c", "-o", "--cov", "--rootdir", "--ignore", "--deselect"}


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
