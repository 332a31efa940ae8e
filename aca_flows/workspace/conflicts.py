"""The ways a task's commit can fail to land on the session branch as it is: the errors
``land_task`` and ``TaskWorktree.onto`` raise, for the caller to start the task again on the
new head (or, for ``BranchMovedError``, to check the work there first); and where the change of
a task that gave up is kept (``kept_change_ref``), with how to merge it by hand."""

from __future__ import annotations

import re

from aca_flows._files import readable
from aca_flows.errors import AcaError
from aca_flows.session.layout import session_branch

__all__ = [
    "BranchMovedError",
    "ChecksFailedOnHead",
    "MergeConflictError",
    "hand_merge",
    "kept_change_ref",
]


class MergeConflictError(AcaError):
    """The task's commit conflicts with work another task landed first. ``files`` names them;
    ``commit`` is the task's commit that could not land (kept if the task gives up)."""

    def __init__(self, task_id: str, files: list[str], message: str | None = None, *, commit: str):
        self.task_id = task_id
        self.commit = commit
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

    def __init__(self, task_id: str, files: list[str], check: str, *, commit: str):
        files = _shown(files)
        super().__init__(
            task_id,
            files,
            f"task {task_id}: its changes, put onto work that landed meanwhile in "
            f"{', '.join(files)}, fail the check {check}. Make the tasks depend on each other "
            "so they run in order; a resume runs the task again, from the session branch as it "
            "is then.",
            commit=commit,
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


_AGAIN = (
    "unless its change is merged there by hand, a resume runs the task again, from the session "
    "branch as it is then."
)


def kept_change_ref(session_id: str, task_id: str) -> str:
    """Where the commit of a task that gave up on a conflict is kept, so its paid work is not
    lost: ``refs/aca/conflicts/<session-id>/<task-id>``. A dot no ref name may have there
    (one of ``..``, a last ``.``, that of a last ``.lock``) is written ``%2E``: no task id holds
    a ``%``, so no two ids share a ref."""
    name = re.sub(r"\.(?=\.|$|lock$)", "%2E", task_id)
    return f"refs/aca/conflicts/{session_id}/{name}"


def hand_merge(ref: str, session_id: str, repository: str, resume: str) -> str:
    """How to merge a kept change by hand: a resume then finds the task's commit (its
    ``Aca-Task`` and ``Aca-Session`` trailers, which a cherry-pick keeps) on the session branch
    and takes it as the task's work, as it does any landed task's."""
    branch = session_branch(session_id)
    return (
        f"Its change is kept at {ref}. To merge it by hand, in {repository}: `git checkout "
        f"{branch}`, `git cherry-pick {ref}`, resolve the conflict, `git cherry-pick "
        f"--continue`, check out your own branch again; then `{resume}` takes that commit as "
        f"the task's work."
    )


def _shown(files: list[str]) -> list[str]:
    # A name git gave as bytes that are not UTF-8: the outcome and the journal are JSON.
    return [readable(name) for name in files]
