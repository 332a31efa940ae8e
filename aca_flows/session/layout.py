"""Where everything of a session lives under ``<workdir>/.aca`` (DESIGN.md's layout, exactly)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AcaDir", "SessionPaths", "linked_aca_folder", "session_branch"]


def session_branch(session_id: str) -> str:
    """The git branch that records a session's finished work: ``aca/<session-id>``."""
    return f"aca/{session_id}"


@dataclass(frozen=True)
class AcaDir:
    """The ``.aca`` folder of a repository worked on."""

    workdir: Path

    @property
    def root(self) -> Path:
        return self.workdir / ".aca"

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def sessions_dir(self) -> Path:
        return self.root / "sessions"

    def worktrees_dir(self, session_id: str) -> Path:
        return self.root / "worktrees" / session_id

    def session(self, session_id: str) -> SessionPaths:
        return SessionPaths(self.sessions_dir / session_id)


def linked_aca_folder(workdir: Path) -> str | None:
    """Why ``workdir``'s ``.aca`` cannot hold aca's files, or ``None``: it, a folder aca keeps
    in it, or an entry aca makes in those (a session's folder, a lock file) is a symbolic
    link. A repository can commit one, pointing anywhere (a home, ``/etc``): aca would write
    its sessions, the tasks' worktrees or a lock file there, outside the checkout and outside
    what the sandboxes keep hidden."""
    root = AcaDir(workdir).root
    folders = (root, root / "sessions", root / "worktrees")
    for path in (*folders, *_entries(root / "sessions"), *_worktree_entries(root / "worktrees")):
        if path.is_symlink():
            what = "not a folder" if path in folders else "where aca keeps its own files"
            return (
                f"{path} is a symbolic link (to {os.readlink(path)}), {what}: aca keeps its "
                "sessions, the tasks' worktrees and their locks in the repository's own .aca "
                "folder, never through a link. If the repository commits it, remove it from "
                "the repository; else remove the link, and aca makes what it needs."
            )
    return None


def _entries(folder: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(folder)]
    except OSError:  # none yet (or a link, named above)
        return []


def _worktree_entries(folder: Path) -> list[Path]:
    # Each session's folder and what is in it: its merge lock, its tasks' worktrees.
    sessions = _entries(folder)
    return [*sessions, *(entry for session in sessions for entry in _entries(session))]


@dataclass(frozen=True)
class SessionPaths:
    """The files of one session, ``.aca/sessions/<session-id>/``."""

    root: Path

    @property
    def session_id(self) -> str:
        return self.root.name

    @property
    def workdir(self) -> Path:
        """The repository the session works in (``<workdir>/.aca/sessions/<id>``)."""
        return self.root.parents[2]

    @property
    def session_json(self) -> Path:
        return self.root / "meta" / "session.json"

    @property
    def events_jsonl(self) -> Path:
        return self.root / "meta" / "events.jsonl"

    @property
    def lock_file(self) -> Path:
        """Held by the one process writing the session (see ``lock.py``); absent otherwise."""
        return self.root / "meta" / "session.lock"

    @property
    def messages_json(self) -> Path:
        return self.root / "claude" / "messages.json"

    @property
    def session_config_json(self) -> Path:
        return self.root / "claude" / "session_config.json"

    @property
    def change_log_json(self) -> Path:
        return self.root / "file_changes" / "change_log.json"

    def snapshot_patch(self, task_id: str) -> Path:
        return self.root / "file_changes" / "snapshots" / f"{task_id}.patch"

    def task_log(self, task_id: str) -> Path:
        return self.root / "execution_logs" / "task_logs" / f"{task_id}.jsonl"

    @property
    def system_log(self) -> Path:
        return self.root / "execution_logs" / "system_logs" / "session.log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, checkpoint_id: str) -> Path:
        return self.checkpoints_dir / f"{checkpoint_id}.json"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"
