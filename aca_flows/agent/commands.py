"""The deny list: a fast refusal, with a reason, of commands an aca task should never run.

It is not the security boundary: every command runs in the sandbox (``aca_flows.sandbox``),
which is what keeps a command that slips past this list inside the task's worktree. The list
only saves a round trip and tells the model why (``git push``: aca merges the work itself).

A command is split like a shell would (``shlex``, with ``;``, ``&&``, ``|``, ``$(``, backticks
and parentheses as separators); an entry matches when its words appear as consecutive words of
one of the simple commands, starting at its program (``/usr/bin/curl`` is ``curl``), after
variable assignments and wrappers such as ``env``, ``time`` or ``xargs``: ``grep ssh notes``
is allowed, ``env X=1 ssh host`` is not.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

__all__ = ["command_words", "denied_by"]

_SEPARATORS = ";&|()`<>\n"
# Programs that run the program named after them.
_WRAPPERS = {"env", "time", "nohup", "nice", "exec", "command", "builtin", "xargs", "timeout"}


def command_words(command: str) -> list[list[str]]:
    """The words of each simple command in ``command`` (quotes removed)."""
    text = command.replace("$(", " ( ").replace("`", " ` ")
    lexer = shlex.shlex(text, posix=True, punctuation_chars=_SEPARATORS)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: fall back to plain words
        tokens = text.split()
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token and all(c in _SEPARATORS for c in token):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def denied_by(command: str, deny_list: Iterable[str]) -> str | None:
    """The deny-list entry ``command`` matches, or None if it is allowed."""
    entries = [(entry, entry.split()) for entry in deny_list if entry.split()]
    for words in command_words(command):
        for start in _program_positions(words):
            program = [_program(words[start]), *words[start + 1 :]]
            for entry, wanted in entries:
                if program[: len(wanted)] == wanted:
                    return entry
    return None


def _program_positions(words: list[str]) -> list[int]:
    """Where a program name stands: after assignments, and after each wrapper's options."""
    positions = []
    expecting = True
    for index, word in enumerate(words):
        if not expecting:
            break
        if "=" in word.split("/", 1)[0] or word.startswith("-") or word.isdigit():
            continue  # NAME=value, a wrapper's option, timeout's duration
        positions.append(index)
        expecting = _program(word) in _WRAPPERS
    return positions


def _program(word: str) -> str:
    return word.rsplit("/", 1)[-1]
