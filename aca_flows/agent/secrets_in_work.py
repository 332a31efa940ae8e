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

What is searched is what git stores: a file with a ``working-tree-encoding`` attribute (UTF-16,
EBCDIC) as git converts it to UTF-8 when it commits it (git converts it here); a hex dump
of a secret (``xxd``, ``od``) and a run of escapes (``\\x51``, ``%51``, ``&#81;``, ``51:77``) are
read back into their text; a file larger than 16 MB is read
to its end for the plain values.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

import git

from aca_flows._words import listed
from aca_flows.session.escaped_runs import decoded_runs
from aca_flows.session.hex_dumps import redact_hex_dumps
from aca_flows.session.redact import REDACTED, redact_text
from aca_flows.session.secret_values import credential_values
from aca_flows.workspace import TaskWorktree

__all__ = ["secrets_problem"]

# A file larger than this is read this far whole, lines joined and dumps read; beyond it, only
# the plain values are looked for (a key sits in configuration, not in a data file).
_READ_LIMIT = 16 * 1024 * 1024
_SHOWN = 5
_MARK = REDACTED.encode()


def secrets_problem(worktree: TaskWorktree, changed_files: list[str]) -> str | None:
    """Why the changed files cannot be committed, when some add a secret aca knows, or put
    the mark the model is shown for one where a secret was; ``None`` when none does. Reads
    one file at a time (run it off the event loop: a change of many large files takes
    seconds)."""
    values = credential_values()
    secrets = [value.encode() for value in values]
    if not secrets:
        return None
    converted = _converted_paths(worktree, changed_files)
    now = {
        path: _found(_in_dumps(_content(worktree, path, path in converted), values, secrets),
                     secrets)
        for path in changed_files
    }  # fmt: skip
    names = [path for path in changed_files if _named_for_one(worktree, path, secrets)]
    if not names and not any(found or marks for found, marks in now.values()):
        return None  # the common case: no git command is run to look at the start
    with _Start(worktree) as start:
        before = {
            path: _found(_in_dumps(_with_lines_joined(start.read(path)), values, secrets),
                         secrets)
            for path in changed_files
        }  # fmt: skip
    # What any changed file held at the start is the repository's own: moved or renamed
    # (`git mv .npmrc config/.npmrc`), it is no secret the agent added.
    held = set().union(*(found for found, _ in before.values()))
    holding = [path for path in changed_files if now[path][0] - held or path in names]
    if holding:
        return (
            f"the agent's change writes a secret aca knows (a key or token of its environment, "
            f"plain or encoded) into {redact_text(listed(holding, _SHOWN))}; aca commits no "
            "secret, since a commit is pushed and shown where nothing redacts it; nothing was "
            "committed. Keep secrets out of the repository (read them from the environment at "
            "run time), and out of [sandbox] env unless a command needs them."
        )
    marked = [path for path in changed_files if now[path][1] > before[path][1]]
    lost = held - set().union(*(found for found, _ in now.values()))
    if marked and lost:
        return (
            f"the agent's change puts {REDACTED} into {listed(marked, _SHOWN)} where the "
            "repository held a secret aca knows: the model is shown that mark in place of a "
            "secret, and committed it would lose the secret; nothing was committed. Change "
            "those files around the secret, as they are."
        )
    return None


def _found(data: bytes, secrets: list[bytes]) -> tuple[frozenset[bytes], int]:
    """The secrets ``data`` holds, and how many marks (``[REDACTED]``): all that is kept of
    a file, so a change of many large files is never in memory at once."""
    return frozenset(secret for secret in secrets if secret in data), data.count(_MARK)


def _content(worktree: TaskWorktree, path: str, converted: bool = False) -> bytes:
    """What git commits of ``path`` now: a link's target, a file's bytes (lines joined too),
    as git converts them when ``converted`` (a working-tree-encoding); nothing for a file
    removed."""
    file = worktree.path / path
    if file.is_symlink():
        return os.fsencode(os.readlink(file))
    if not file.is_file():
        return b""
    if converted:  # git's own conversion: every encoding it knows, Python or not
        try:
            sha = worktree.git.hash_object("-w", "--path", path, "--", path)
            data = worktree.git.cat_file("blob", sha, stdout_as_string=False)
        except git.GitCommandError:  # not in that encoding: git will not commit it either
            data = file.read_bytes()
        return _with_lines_joined(data)
    with open(file, "rb") as handle:
        data = handle.read(_READ_LIMIT)
        beyond = _plain_values_beyond(handle) if len(data) == _READ_LIMIT else b""
    return _with_lines_joined(data) + beyond


def _plain_values_beyond(handle) -> bytes:
    """The secrets found in a file past ``_READ_LIMIT``, read a chunk at a time (each chunk
    with the end of the one before, where a secret may start), for the search to find them."""
    secrets = [secret.encode() for secret in credential_values()]
    overlap = max(map(len, secrets), default=0)
    found: set[bytes] = set()
    tail = b""
    while chunk := handle.read(_CHUNK):
        window = tail + chunk
        found.update(secret for secret in secrets if secret in window)
        tail = window[-overlap:] if overlap else b""
    return b"".join(b"\0" + secret for secret in sorted(found))


_CHUNK = 4 * 1024 * 1024


def _in_dumps(data: bytes, values: list[str], secrets: list[bytes]) -> bytes:
    """``data``, and each secret a hex dump in it shows (``xxd``, ``od``: its bytes as hex
    groups over lines) or a run of escapes spells (``\\x51\\x77``, ``%51%77``), for the
    search to find them."""
    text = data.decode("utf-8", errors="replace")
    escaped = [decoded for _, decoded in decoded_runs(text)]
    if not escaped and redact_hex_dumps(text, values, REDACTED) == text:
        return data
    shown = [s for v, s in zip(values, secrets, strict=True) if _shows(text, escaped, v)]
    return data + b"".join(b"\0" + s for s in shown)


def _shows(text: str, escaped: list[str], value: str) -> bool:
    return any(value in decoded for decoded in escaped) or (
        redact_hex_dumps(text, [value], REDACTED) != text
    )


def _converted_paths(worktree: TaskWorktree, paths: list[str]) -> set[str]:
    """The paths git converts when it commits them (a ``working-tree-encoding``: UTF-16,
    EBCDIC): a secret written in UTF-16 is committed plain. Asked of git only where an
    attributes file may say so."""
    if not paths or not _attributes_may_apply(worktree, paths):
        return set()
    # On standard input: 30,000 paths on one command line were past the kernel's limit.
    with tempfile.TemporaryFile() as listed:
        listed.write(b"".join(os.fsencode(path) + b"\0" for path in paths))
        listed.seek(0)
        out = worktree.git.check_attr("--stdin", "-z", "working-tree-encoding", istream=listed)
    fields = out.split("\0")
    return {
        path
        for path, _, value in zip(fields[0::3], fields[1::3], fields[2::3], strict=False)
        if value not in ("unspecified", "unset", "set", "")
    }


def _attributes_may_apply(worktree: TaskWorktree, paths: list[str]) -> bool:
    """Whether an attributes file could apply to ``paths``: a ``.gitattributes`` in one of
    their folders, the repository's ``info/attributes``, or the user's own (git reads it)."""
    folders = {worktree.path}
    for path in paths:
        folders.update((worktree.path / path).parents)
    if any(
        (folder / ".gitattributes").exists()
        for folder in folders
        if folder.is_relative_to(worktree.path)
    ):
        return True
    common = worktree.git_dir.parent.parent if worktree.git_dir is not None else None
    if common is not None and (common / "info" / "attributes").exists():
        return True
    return _users_attributes_file() is not None


@functools.cache
def _users_attributes_file() -> Path | None:
    """The user's own attributes file, if there is one (``core.attributesFile``, else git's
    default under ``$XDG_CONFIG_HOME``)."""
    try:
        named = subprocess.run(
            ["git", "config", "--global", "--get", "core.attributesFile"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        named = ""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    file = Path(os.path.expanduser(named)) if named else config / "git" / "attributes"
    return file if file.exists() else None


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


class _Start:
    """The files of the task's start commit, read through one git process (a change of
    30,000 files ran 30,000 of them): the paths it holds, listed once, and their data."""

    def __init__(self, worktree: TaskWorktree):
        self.base = worktree.base_sha
        self.git = worktree.git
        self.paths = worktree.paths_at_base()

    def read(self, path: str) -> bytes:
        """The file as the start commit holds it (empty when it had none)."""
        if path not in self.paths:
            return b""
        name = f"{self.base}:{path}"
        try:
            if "\n" in path:  # the batch reads a name a line
                return self.git.cat_file("blob", name, stdout_as_string=False)
            return self.git.get_object_data(name)[3]
        except (ValueError, git.GitCommandError):  # a submodule's commit: no data here
            return b""

    def __enter__(self) -> _Start:
        return self

    def __exit__(self, *_) -> None:
        self.git.clear_cache()  # its cat-file process ends
