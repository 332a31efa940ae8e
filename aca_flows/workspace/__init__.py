"""Workspace: the session branch, per-task git worktrees, commits, merges and the change log.

The user's checkout is never modified. What the agent layer and the flow call:

- ``open_repository(workdir, init_git=False)`` then ``ensure_session_branch(repo, session_id)``
- ``TaskWorktree.create(repo, session_id, task_id)`` / ``.remove()``
- ``land_task(repo, worktree, title=, summary=, identity=)``: commit, merge under the lock,
  record the change; raises ``MergeConflictError`` (``ChecksFailedOnHead`` is one), and
  ``BranchMovedError`` when asked to refuse an unchecked merge, and ``SessionBranchCheckedOut``
  (the branch unmoved) when a checkout of the user's has the session branch checked out
- ``keep_unlanded_change(repo, session_id, conflict)``: keep the commit of a task that gave up
  on a conflict (``refs/aca/conflicts/<session-id>/<task-id>``); ``hand_merge`` says how to
  land it
- ``completed_task_commits(repo, session_id)``: task ids whose commit is on the session branch
  (what resume trusts), and ``record_landed_task`` to finish their bookkeeping again
"""

from aca_flows.workspace.change_log import ChangeRecord, read_change_log, record_task_change
from aca_flows.workspace.commit import (
    commit_task_work,
    completed_task_commits,
    find_task_commit,
)
from aca_flows.workspace.conflicts import (
    BranchMovedError,
    ChecksFailedOnHead,
    MergeConflictError,
    hand_merge,
)
from aca_flows.workspace.merge import (
    LandedTask,
    keep_unlanded_change,
    land_task,
    merge_lock,
    record_landed_task,
)
from aca_flows.workspace.repository import (
    DEFAULT_IDENTITY,
    GitIdentity,
    SessionBranchCheckedOut,
    WorkspaceError,
    commit_identity,
    ensure_session_branch,
    open_repository,
    session_branch_head,
)
from aca_flows.workspace.worktree import (
    TaskWorktree,
    changed_since,
    discard_spare_worktrees,
    discard_worktree,
)

__all__ = [
    "DEFAULT_IDENTITY",
    "BranchMovedError",
    "ChangeRecord",
    "ChecksFailedOnHead",
    "GitIdentity",
    "LandedTask",
    "MergeConflictError",
    "SessionBranchCheckedOut",
    "TaskWorktree",
    "changed_since",
    "WorkspaceError",
    "commit_identity",
    "commit_task_work",
    "completed_task_commits",
    "discard_spare_worktrees",
    "discard_worktree",
    "ensure_session_branch",
    "find_task_commit",
    "hand_merge",
    "keep_unlanded_change",
    "land_task",
    "merge_lock",
    "open_repository",
    "read_change_log",
    "record_landed_task",
    "record_task_change",
    "session_branch_head",
]
