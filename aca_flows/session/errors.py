"""The errors of the session layer; all are ``AcaError`` (the CLI prints them, exit 2).

AcaError
├── SessionFileError        a file under .aca/sessions/<id>/ is damaged; names the path and fix
├── SessionLockedError      another live aca process writes this session; names its pid
└── InputError
    ├── UnknownSessionError     no session matches the id given
    ├── UnknownCheckpointError  no checkpoint matches the id given
    └── NothingToResumeError    `--latest` found no session to resume
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aca_flows._words import listed
from aca_flows.errors import AcaError, InputError

__all__ = [
    "NothingToResumeError",
    "SessionFileError",
    "SessionLockedError",
    "UnknownCheckpointError",
    "UnknownSessionError",
    "refuse_newer_schema",
]


class SessionFileError(AcaError):
    """A session file cannot be read and cannot be rebuilt. ``path`` is the damaged file."""

    def __init__(self, path: Path, problem: str, fix: str):
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}. {fix}")


def refuse_newer_schema(
    path: Path, version: Any, reads: int, *, kind: str = "schema", line: int | None = None
) -> None:
    """Raise ``SessionFileError`` if ``version`` (a file's or a journal line's
    ``schema_version``) is newer than the ``reads`` this aca understands; else nothing."""
    if not (isinstance(version, int) and version > reads):
        return
    where = "" if line is None else f"line {line} was "
    raise SessionFileError(
        path,
        f"{where}written by a newer aca ({kind} {version}, this aca reads {reads})",
        "Upgrade aca (`pip install -U aca-flows`) to read this session.",
    ) from None


class SessionLockedError(AcaError):
    """Another process holds the session's lock. ``pid``/``host`` name it when known."""

    def __init__(
        self,
        session_id: str,
        lock_file: Path,
        pid: int | None,
        host: str | None,
        resume: str | None = None,
    ):
        self.session_id = session_id
        self.lock_file = lock_file
        self.pid = pid
        self.host = host
        who = f"pid {pid}" if pid is not None else "another process"
        if host:
            who += f" on {host}"
        # ``resume``: the session's resume as the reader runs it (``_words.resume_command``).
        super().__init__(
            f"session {session_id} is in use by {who} (lock {lock_file}). Only one aca process "
            f"may run a session: wait for it to finish, or stop it (kill {pid if pid else 'it'}"
            f") and run `{resume or 'aca resume'}` again."
        )


class UnknownSessionError(InputError):
    """No session, or several (``matches``: ``ambiguous``), match the id given."""

    def __init__(
        self,
        session_id: str,
        workdir: Path,
        problem: str = "no session",
        listing: str = "`aca sessions list`",
        *,
        matches: list[str] | tuple[str, ...] = (),
    ):
        self.session_id = session_id
        self.ambiguous = bool(matches)
        among = ""
        if matches:  # the ids to choose from: the first few, newest first
            among = f": it begins {listed(sorted(matches, reverse=True), 5)}"
        super().__init__(
            f"{problem} {session_id!r} in {workdir / '.aca' / 'sessions'}{among}. "
            f"{listing} with `--workdir {workdir}` shows the ids of this workdir "
            "(use --workdir for another repository)."
        )


class UnknownCheckpointError(InputError):
    def __init__(self, checkpoint_id: str, workdir: Path, problem: str = "no checkpoint"):
        self.checkpoint_id = checkpoint_id
        super().__init__(
            f"{problem} {checkpoint_id!r} in {workdir / '.aca' / 'sessions'}. "
            f"`aca checkpoints list --all-sessions --workdir {workdir}` shows the checkpoint "
            "ids of this workdir (use --workdir for another repository)."
        )


class NothingToResumeError(InputError):
    """``aca resume --latest`` found no unfinished session."""
