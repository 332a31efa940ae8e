"""Committing a task's work, and finding the tasks whose commits are on the session branch.

Every task commit carries two trailers, ``Aca-Session: <session-id>`` and
``Aca-Task: <task-id>``. The session branch is the record of finished work: on resume a task
whose commit is on the branch is complete, whatever the journal says.
"""

from __future__ import annotations

import re

import git

from aca_flows.session.layout import session_branch
from aca_flows.session.redact import redact_text
from aca_flows.workspace.repository import GitIdentity, WorkspaceError, ref_exists
from aca_flows.workspace.worktree import TaskWorktree

__all__ = [
    "commit_message",
    "commit_task_work",
    "completed_task_commits",
    "find_task_commit",
    "session_tasks_in",
    "task_trailers",
]

SESSION_TRAILER = "Aca-Session"
TASK_TRAILER = "Aca-Task"


def commit_message(session_id: str, task_id: str, title: str, summary: str = "") -> str:
    """``aca(<task-id>): <title>``, the summary as the body, the trailers last; redacted, since
    a commit travels wherever the branch is pushed. Control characters go: git refuses a NUL,
    and the others split or end the records aca reads back (``\x1e``: an agent's summary made
    its commit read as another task's)."""
    title, summary = _printable(redact_text(title)), _printable(redact_text(summary))
    subject = f"aca({task_id}): {title.strip().splitlines()[0] if title.strip() else task_id}"
    parts = [subject]
    if summary.strip():
        parts.append(summary.strip())
    parts.append(f"{SESSION_TRAILER}: {session_id}\n{TASK_TRAILER}: {task_id}")
    return "\n\n".join(parts) + "\n"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _printable(text: str) -> str:
    return _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))


def task_trailers(message: str) -> dict[str, str]:
    """The ``Aca-Session`` and ``Aca-Task`` values of a commit message: of its last paragraph,
    where aca writes them (a summary above that names others names no task)."""
    found: dict[str, str] = {}
    for line in message.strip().rsplit("\n\n", 1)[-1].splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in (SESSION_TRAILER, TASK_TRAILER):
            found[key.strip()] = value.strip()
    return found


def commit_task_work(
    worktree: TaskWorktree, *, title: str, summary: str, identity: GitIdentity
) -> str:
    """Commit everything in the worktree as the task's commit; returns its sha.

    Safe to repeat: if the worktree's HEAD already is this task's commit, it is returned as is.
    A worktree without changes is refused with ``WorkspaceError``: aca never makes an empty
    commit (a task that needs no change completes without one). Hooks are skipped: aca's
    verify command is the gate.
    """
    wt = worktree.git
    head = worktree.head()
    if head != worktree.base_sha and _is_task_commit(
        wt.log("-1", "--format=%B", head), worktree.session_id, worktree.task_id
    ):
        return head
    wt.add("-A")
    message = commit_message(worktree.session_id, worktree.task_id, title, summary)
    try:
        # --cleanup=whitespace keeps summary lines that start with '#' (Markdown headings).
        # Without --allow-empty, git itself refuses a commit of nothing.
        wt.execute(
            [
                "git",
                *identity.config_args(),
                "commit",
                "--no-verify",
                "--cleanup=whitespace",
                "-q",
                "-m",
                message,
            ]
        )
    except git.GitCommandError:
        if not wt.diff("--cached", "--name-only", "HEAD").strip():
            raise WorkspaceError(
                f"task {worktree.task_id} changed nothing, and aca never makes an empty "
                "commit; a task that needs no change is completed without one."
            ) from None
        raise
    return worktree.head()


def completed_task_commits(repo: git.Repo, session_id: str) -> dict[str, str]:
    """Task id -> sha of its commit on ``aca/<session-id>``, for every task of this session.

    A missing session branch means no task has completed. Commits of other sessions that the
    branch inherited from the user's history are ignored.
    """
    branch = f"refs/heads/{session_branch(session_id)}"
    try:
        # "--" ends the revisions: a missing branch is an error, never read as a path.
        out = repo.git.log(branch, f"--grep=^{TASK_TRAILER}: ", "--format=%H%x00%B%x1e", "--")
    except git.GitCommandError:
        if ref_exists(repo, branch):
            raise
        return {}
    found: dict[str, str] = {}
    for record in out.split("\x1e"):
        sha, sep, message = record.strip().partition("\x00")
        if not sep:
            continue
        trailers = task_trailers(message)
        task_id = trailers.get(TASK_TRAILER)
        # git log lists newest first; keep the newest commit of a task.
        if trailers.get(SESSION_TRAILER) == session_id and task_id and task_id not in found:
            found[task_id] = sha
    return found


def find_task_commit(repo: git.Repo, session_id: str, task_id: str) -> str | None:
    """The sha of the task's commit on the session branch, or None if it has not landed."""
    branch = f"refs/heads/{session_branch(session_id)}"
    try:
        # git keeps only the commits naming both (fixed strings, so an id's "." is a dot),
        # instead of handing every task commit of the branch to Python: it runs for every
        # task, twice, and the branch grows with the session. Newest first.
        out = repo.git.log(
            branch,
            "-F",
            "--all-match",
            f"--grep={TASK_TRAILER}: {task_id}",
            f"--grep={SESSION_TRAILER}: {session_id}",
            "--format=%H%x00%B%x1e",
            "--",
        )
    except git.GitCommandError:
        if ref_exists(repo, branch):
            raise
        return None
    for record in out.split("\x1e"):
        sha, sep, message = record.strip().partition("\x00")
        if sep and _is_task_commit(message, session_id, task_id):
            return sha
    return None


def session_tasks_in(git_cmd: git.Git, session_id: str, commit: str) -> list[str]:
    """Ids of this session's tasks whose commits ``commit`` holds (itself or an ancestor):
    agents' work, as opposed to the history the session started from. Newest first."""
    # Only aca commits on the session branch, always with both trailers; an agent cannot
    # commit (``.git`` is read-only in the sandbox).
    out = git_cmd.log(
        commit, "-F", f"--grep={SESSION_TRAILER}: {session_id}", "--format=%B%x1e", "--"
    )
    found: list[str] = []
    for message in out.split("\x1e"):
        trailers = task_trailers(message)
        task_id = trailers.get(TASK_TRAILER)
        if trailers.get(SESSION_TRAILER) == session_id and task_id and task_id not in found:
            found.append(task_id)
    return found


def _is_task_commit(message: str, session_id: str, task_id: str) -> bool:
    trailers = task_trailers(message)
    return trailers.get(SESSION_TRAILER) == session_id and trailers.get(TASK_TRAILER) == task_id
