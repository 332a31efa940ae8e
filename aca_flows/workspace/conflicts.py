"""The ways a task's commit can fail to land on the session branch as it is: the errors
``land_task`` and ``TaskWorktree.onto`` raise, for the caller to start the task again on the
new head (or, for ``BranchMovedError``, to check the work there first)."""

from __future__ import annotations

from aca_flows._files import readable
from aca_flows.errors import AcaError

__all__ = ["BranchMovedError", "ChecksFailedOnHead", "MergeConflictError"]


class MergeConflictError(AcaError):
    """The task's commit conflicts with work another task landed first. ``files`` names them."""

    def __init__(self, task_id: str, files: list[str], message: str | None = None):
        self.task_id = task_id
        self.files = files = _shown(files)
        listed = ", ".join(files) or "(unknown files)"
        super().__init__(
            message
            or f"task {task_id}: its changes conflict with work already on the session branch "
            f"in {listed}. Make the conflicting tasks depend on each other so they run in "
            f"order; {_AGAIN}"
        )


class ChecksFailedOnHead(MergeConflictError):
    """The task's change, put onto work that landed meanwhile in the same files, fails a
    check there. Handled as a conflict: the task starts again on the new head."""

    def __init__(self, task_id: str, files: list[str], check: str):
        files = _shown(files)
        super().__init__(
            task_id,
            files,
            f"task {task_id}: its changes, put onto work that landed meanwhile in "
            f"{', '.join(files)}, fail the check {check}. Make the tasks depend on each other "
            f"so they run in order; {_AGAIN}",
        )


class BranchMovedError(AcaError):
    """Work landed on the session branch since the task's base, in files the task's commit
    changes too: the combination was never checked. ``head`` is the branch's head now, and
    ``commit`` the task's commit in its worktree."""

    def __init__(self, task_id: str, files: list[str], head: str, commit: str):
        self.files = files = _shown(files)
        super().__init__(f"task {task_id}: work landed meanwhile in {', '.join(files)}")
        self.head = head
        self.commit = commit


# What a resume does with the task (it keeps none of this attempt's change: a hand merge on
# the branch was not taken for the task's work, and the task was run and paid again).
_AGAIN = "a resume runs the task again, from the session branch as it is then."


def _shown(files: list[str]) -> list[str]:
    # A name git gave as bytes that are not UTF-8: the outcome and the journal are JSON.
    return [readable(name) for name in files]
