"""The session's record of file changes: ``file_changes/change_log.json`` and one patch per task.

``change_log.json`` maps each task id to its commit, the files it changed and the line counts;
``file_changes/snapshots/<task-id>.patch`` holds the commit as ``git format-patch`` writes it,
so it can be read, or applied elsewhere with ``git am``. Recording replaces the task's entry,
so recording twice (a resumed finish) gives the same files. The read-modify-write of
``change_log.json`` is made under a lock of its own (``.change_log.json.lock`` beside it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import git
from pydantic import BaseModel, Field

from aca_flows._files import readable
from aca_flows.session.files import write_json_atomic, write_text_atomic
from aca_flows.session.layout import SessionPaths
from aca_flows.session.redact import redact
from aca_flows.workspace.file_lock import FileLock
from aca_flows.workspace.repository import git_meanwhile

__all__ = ["ChangeRecord", "describe_commit", "read_change_log", "record_task_change"]


class ChangeRecord(BaseModel):
    """What one task's commit changed."""

    task_id: str
    commit: str
    parent: str | None = None
    files: list[str] = Field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    recorded_at: datetime = Field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))


def describe_commit(repo: git.Repo, task_id: str, sha: str) -> ChangeRecord:
    """Files, insertions and deletions of one commit against its first parent."""
    # One git command: the parents line, then the numstat against the first parent (against
    # the empty tree with --root, for the first commit of --init-git). Task commits are never
    # merges. -z: paths as they are (without it, git quotes a name with a space or an accent);
    # the parents line then ends with a NUL and a newline, each entry with a NUL.
    out = repo.git.diff_tree("--numstat", "--no-renames", "-r", "--root", "--format=%P", "-z", sha)
    head, _, numstat = out.partition("\0")
    parents = head.split()
    parent = parents[0] if parents else None
    files: list[str] = []
    insertions = deletions = 0
    for entry in numstat.lstrip("\n").split("\0"):
        if not entry:
            continue
        added, removed, path = entry.split("\t", 2)
        # A name that is not UTF-8: the change log, the journal and the report are JSON.
        files.append(readable(path))
        # Binary files show '-' for both counts.
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    return ChangeRecord(
        task_id=task_id,
        commit=sha,
        parent=parent,
        files=files,
        insertions=insertions,
        deletions=deletions,
    )


def record_task_change(repo: git.Repo, paths: SessionPaths, task_id: str, sha: str) -> ChangeRecord:
    """Write the task's patch and its entry in ``change_log.json``; returns the entry."""
    with git_meanwhile(repo.git, "format_patch", "-1", "--stdout", "--binary", sha) as patch:
        record = describe_commit(repo, task_id, sha)
        text = patch()
    write_text_atomic(paths.snapshot_patch(task_id), text)
    lock = paths.change_log_json.with_name(f".{paths.change_log_json.name}.lock")
    with FileLock(lock):
        log = _read_raw(paths)
        # Only the new entry is redacted: the file holds redacted entries already, and
        # redacting the whole log at every task made a task's record O(tasks).
        log.setdefault("tasks", {})[task_id] = redact(record.model_dump(mode="json"))
        write_json_atomic(paths.change_log_json, log, redact=False)
    return record


def read_change_log(
    paths: SessionPaths, touching: set[str] | None = None
) -> dict[str, ChangeRecord]:
    """Task id -> its recorded change; empty when nothing was recorded yet. ``touching``: only
    the changes of one of these files (only those are validated: every task reads the log,
    and validating all of it took 10 ms a task once 500 had landed)."""
    tasks = _read_raw(paths).get("tasks", {})
    return {
        task_id: ChangeRecord.model_validate(data)
        for task_id, data in tasks.items()
        if touching is None
        or not isinstance(data, dict)  # malformed: refused by validation, as before
        or not touching.isdisjoint(data.get("files") or ())
    }


def _read_raw(paths: SessionPaths) -> dict:
    if not paths.change_log_json.exists():
        return {"schema_version": 1, "tasks": {}}
    return json.loads(paths.change_log_json.read_text(encoding="utf-8"))
