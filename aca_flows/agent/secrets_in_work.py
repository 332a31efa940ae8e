"""Secrets aca knows, in a task's work: never committed.

The redactor's credentials (``credential_values``: provider keys and secret-named variables
of aca's environment, the Secret blocks in use, of 12 characters or more, no URL or
sentence, and their encoded forms, wrapped across lines or not) are kept out of every record
aca writes; a commit is one too, and it is pushed and shown in pull requests, where no
redactor runs. An agent holds such a value when it was given one (``[sandbox] env``) or ran
unsandboxed. A change that adds one to a file, to a symbolic link's target (git stores it as
the link's content) or to a new file's name is never committed: the task fails, naming the
files (redacted), never the value. A file that held it already when the task started is the
repository's own content, not the agent's doing, and passes.
"""

from __future__ import annotations

import os

import git

from aca_flows._words import listed
from aca_flows.session.redact import REDACTED, redact_text
from aca_flows.session.secret_values import credential_values
from aca_flows.workspace import TaskWorktree

__all__ = ["secrets_problem"]

# A file larger than this is read this far: a key sits in configuration, not in a dump.
_READ_LIMIT = 16 * 1024 * 1024
_SHOWN = 5
_MARK = REDACTED.encode()


def secrets_problem(worktree: TaskWorktree, changed_files: list[str]) -> str | None:
    """Why the changed files cannot be committed, when some add a secret aca knows, or put
    the mark the model is shown for one where a secret was; ``None`` when none does."""
    secrets = [value.encode() for value in credential_values()]
    if not secrets:
        return None
    now = {path: _content(worktree, path) for path in changed_files}
    names = [path for path in changed_files if _named_for_one(worktree, path, secrets)]
    if not names and not any(
        _MARK in data or any(secret in data for secret in secrets) for data in now.values()
    ):
        return None  # the common case: no git command is run to look at the start
    before = {path: _with_lines_joined(_at_start(worktree, path)) for path in changed_files}
    # What any changed file held at the start is the repository's own: moved or renamed
    # (`git mv .npmrc config/.npmrc`), it is no secret the agent added.
    held = {secret for secret in secrets if any(secret in data for data in before.values())}
    holding = [
        path
        for path in changed_files
        if any(secret in now[path] for secret in secrets if secret not in held) or path in names
    ]
    if holding:
        return (
            f"the agent's change writes a secret aca knows (a key or token of its environment, "
            f"plain or encoded) into {redact_text(listed(holding, _SHOWN))}; aca commits no "
            "secret, since a commit is pushed and shown where nothing redacts it; nothing was "
            "committed. Keep secrets out of the repository (read them from the environment at "
            "run time), and out of [sandbox] env unless a command needs them."
        )
    marked = [path for path in changed_files if now[path].count(_MARK) > before[path].count(_MARK)]
    lost = held - {secret for secret in secrets if any(secret in d for d in now.values())}
    if marked and lost:
        return (
            f"the agent's change puts {REDACTED} into {listed(marked, _SHOWN)} where the "
            "repository held a secret aca knows: the model is shown that mark in place of a "
            "secret, and committed it would lose the secret; nothing was committed. Change "
            "those files around the secret, as they are."
        )
    return None


def _content(worktree: TaskWorktree, path: str) -> bytes:
    """What git commits of ``path`` now: a link's target, a file's bytes (lines joined too);
    nothing for a file removed."""
    file = worktree.path / path
    if file.is_symlink():
        return os.fsencode(os.readlink(file))
    if file.is_file():
        with open(file, "rb") as handle:
            return _with_lines_joined(handle.read(_READ_LIMIT))
    return b""


def _named_for_one(worktree: TaskWorktree, path: str, secrets: list[bytes]) -> bool:
    """A new file whose name holds a secret: git commits the name as it does the content."""
    name = os.fsencode(path)
    return any(secret in name for secret in secrets) and not _at_start_at_all(worktree, path)


def _with_lines_joined(data: bytes) -> bytes:
    # base64 wraps its output at 76 characters: an encoded secret is whole only once the
    # lines are joined. The data as written stays beside them: a secret of several lines.
    if b"\n" not in data:
        return data
    return data + b"\0" + data.replace(b"\r", b"").replace(b"\n", b"")


def _at_start_at_all(worktree: TaskWorktree, path: str) -> bool:
    try:
        worktree.git.cat_file("-e", f"{worktree.base_sha}:{path}")
    except git.GitCommandError:
        return False
    return True


def _at_start(worktree: TaskWorktree, path: str) -> bytes:
    """The file as the task's start commit holds it (empty when it had none)."""
    try:
        return worktree.git.cat_file("blob", f"{worktree.base_sha}:{path}", stdout_as_string=False)
    except git.GitCommandError:
        return b""
