"""What Claude Code keeps of a run in the user's home, removed once aca is done with it.

Claude Code writes every run's conversation to ``~/.claude/projects/<its cwd, as a name>/
<session id>.jsonl`` (``CLAUDE_CONFIG_DIR`` in place of ``~/.claude`` when set), unredacted:
the prompt, each command and what it printed, the files it read, a secret among them. It keeps
the backups of the files it edited (``file-history/<session id>/``) and a folder per session
(``session-env/<session id>/``) too. aca resumes a session only within one run of a task (its
fix attempts), and keeps the conversation itself, redacted, in ``.aca``; so when a run of a
task ends, these go. The credentials and settings in that folder are the user's and stay.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["remove_claude_transcripts", "remove_worktree_transcripts"]

# Claude Code names a project's folder by its path, every other character a dash; a name
# longer than this is cut and given a hash aca does not compute (found by session id then).
_LONGEST_NAME = 200


def remove_claude_transcripts(
    cwd: str | Path,
    session_ids: Iterable[str | None] = (),
    environ: Mapping[str, str] | None = None,
) -> list[Path]:
    """Remove Claude Code's transcripts of the runs in ``cwd``, and whatever it kept of those
    sessions and of ``session_ids``; return what was removed."""
    environ = os.environ if environ is None else environ
    config = Path(environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")
    projects = config / "projects"
    names = {_project_name(str(cwd)), _project_name(str(Path(cwd).resolve()))}
    folders = [projects / name for name in names if len(name) <= _LONGEST_NAME]
    sessions = {session for session in session_ids if session and "/" not in session}
    for folder in folders:
        sessions.update(path.stem for path in folder.glob("*.jsonl"))
    doomed = [folder for folder in folders if folder.is_dir()]
    for session in sorted(sessions):
        doomed += projects.glob(f"*/{session}.jsonl")
        doomed += projects.glob(f"*/{session}")  # a session's subagents
        doomed += [config / "session-env" / session, config / "file-history" / session]
        doomed += (config / "todos").glob(f"{session}*.json")
    removed = []
    for path in dict.fromkeys(doomed):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path)
    return removed


def remove_worktree_transcripts(worktrees: Path, task_ids: Iterable[str]) -> list[Path]:
    """Remove what Claude Code kept of the runs in the worktrees ``worktrees/<task id>``: a
    run killed outright (SIGKILL, a power cut) never reached its task's own cleanup. Those
    folders are named after aca's worktrees only, never a project of the user's."""
    return [path for task_id in task_ids for path in remove_claude_transcripts(worktrees / task_id)]


def _project_name(path: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]", "-", path)
