"""``RunSummary``: what a run of ``aca-run`` returns, read from its session.

The flow returns it as its result (Completed), or as the data of its final state when the run
did not complete (Failed, or Cancelled for a stop or an interrupt), so a caller reads it the
same way whatever the end: ``state.result(raise_on_failure=False)``. Prefect persists it as
JSON with the flow run, so another process (``run_deployment``, the UI's API) reads it back,
typed, where ``aca_flows`` is installed. ``aca run --json`` prints ``model_dump(mode="json")``.

Imports no Prefect: the CLI reads it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from aca_flows._words import counted
from aca_flows.plan.models import StateName, Task

if TYPE_CHECKING:
    from prefect.states import State

    from aca_flows.session.record import RemoteState, SessionRecord
    from aca_flows.session.store import SessionStore

__all__ = [
    "RunStatus",
    "RunSummary",
    "TaskSummary",
    "branch_head",
    "delivery_failure",
    "failure_reason",
    "flow_state",
    "run_summary",
    "session_summary",
    "unpushed_work",
]

RunStatus = Literal["completed", "failed", "stopped", "interrupted", "rejected"]


class TaskSummary(BaseModel):
    """How one task of the plan ended."""

    title: str
    state: StateName
    reason: str | None = Field(default=None, description="Why it failed, was skipped or blocked.")
    commit: str | None = Field(default=None, description="Its commit on the session branch.")
    no_change_reason: str | None = Field(
        default=None, description="Completed without a commit: why no change was needed."
    )
    attempts: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = Field(
        default=0, description="Paid calls aca had no price for: their cost is not in cost_usd."
    )


class RunSummary(BaseModel):
    """A run's end: its status, where its work landed, each task's outcome, and its spend."""

    session_id: str
    branch: str = Field(description="The session branch holding one commit per landed task.")
    status: RunStatus
    stopped_reason: str | None = Field(
        default=None, description="Why the run did not complete (failed, stopped, interrupted)."
    )
    counts: dict[str, int] = Field(
        description="Tasks by state, groups left out (they run nothing): {'completed': 3, ...}."
    )
    failed: int = 0
    failed_ids: list[str] = Field(
        default_factory=list, description="The failed tasks, groups left out."
    )
    stuck: dict[str, str] = Field(
        default_factory=dict, description="Tasks that could never start, and what they wait on."
    )
    no_change_ids: list[str] = Field(default_factory=list)
    cost_usd: float = Field(description="The session's spend so far, every run of it.")
    unpriced_calls: int = Field(
        default=0, description="Paid calls aca had no price for: their cost is not in cost_usd."
    )
    budget_usd: float | None = Field(default=None, description="The session's budget, if any.")
    tasks: dict[str, TaskSummary] = Field(default_factory=dict, description="By task id.")
    pull_request: str | None = Field(
        default=None, description="The pull request opened or updated (open_pr), its URL."
    )
    pull_request_error: str | None = Field(
        default=None, description="Why the pull request could not be opened or updated."
    )
    remote: str | None = Field(
        default=None, description="The repository the branch is pushed to (a run with repo)."
    )
    unpushed: str | None = Field(
        default=None,
        description="Why the remote lacks some of the branch's work (the last push failed, "
        "or a run without repo added commits); a run or resume of the session with repo "
        "pushes it.",
    )
    not_delivered: str | None = Field(
        default=None,
        description="Why the work of a run whose tasks all completed did not reach where it "
        "was to go: its push to repo, or its pull request (open_pr), failed. The run ends "
        "'Not delivered' (exit code 4); a resume of the session with repo delivers it.",
    )
    taken_over: bool = Field(
        default=False,
        description="The run stopped because its session was taken over (a resume with "
        "repo elsewhere ended its flow run): the session goes on there.",
    )

    @property
    def commits(self) -> dict[str, str]:
        """The commit each task landed, by task id."""
        return {task_id: t.commit for task_id, t in self.tasks.items() if t.commit}


def run_summary(
    store: SessionStore,
    status: RunStatus,
    stopped_reason: str | None,
    stuck: dict[str, str],
    no_change_ids: list[str],
) -> RunSummary:
    """The summary of the run ``store`` records; ``no_change_ids``: this run's tasks that
    completed without a change."""
    return session_summary(
        store.session, store.paths.workdir, status, stopped_reason, stuck, no_change_ids
    )


def session_summary(
    session: SessionRecord,
    workdir: Path,
    status: RunStatus,
    stopped_reason: str | None = None,
    stuck: dict[str, str] | None = None,
    no_change_ids: list[str] | None = None,
) -> RunSummary:
    """``run_summary`` of a session record read without its store (a run that ran nothing)."""
    tasks = {}
    for task in session.plan.tasks:
        record = session.tasks.get(task.id)
        tasks[task.id] = TaskSummary(
            title=task.title,
            state=task.status.state,
            reason=task.status.reason,
            commit=record.commit if record else None,
            no_change_reason=record.no_change_reason if record else None,
            attempts=record.attempts if record else 0,
            cost_usd=record.cost_usd if record else 0.0,
            unpriced_calls=record.unpriced_calls if record else 0,
        )
    # Counted as ``counts`` counts: the tasks that ran, not the groups that failed with them.
    failed_ids = [t.id for t in session.plan.leaves() if t.status.state == "failed"]
    without_change = {r.task_id for r in session.completed_without_change}
    return RunSummary(
        session_id=session.id,
        branch=session.branch,
        status=status,
        stopped_reason=stopped_reason,
        counts=session.task_counts,
        failed=len(failed_ids),
        failed_ids=failed_ids,
        stuck=stuck or {},
        no_change_ids=[t for t in no_change_ids or [] if t in without_change],
        cost_usd=session.cost_usd,
        unpriced_calls=session.unpriced_calls,
        budget_usd=session.budget_usd,
        tasks=tasks,
        remote=session.remote.url if session.remote else None,
        unpushed=unpushed_work(session.remote, workdir, session.id),
    )


def delivery_failure(summary: RunSummary, pushes: bool) -> str | None:
    """Why a completed run's work is not where the run was to deliver it: on its remote
    (``pushes``: the run was given one) and in its pull request; None when it is, or the run
    did not complete (its own end says more)."""
    if summary.status != "completed":
        return None
    if pushes and summary.unpushed:
        return f"NOT pushed to {summary.remote}: {summary.unpushed}"
    if summary.pull_request_error:
        return f"pull request NOT delivered: {summary.pull_request_error}"
    return None


def failure_reason(tasks: list[Task]) -> str | None:
    """Why ``tasks`` (a plan's, or a group's leaves) ended failed: "1 task failed: greet; 2
    skipped", or None if none failed. Only tasks without subtasks are named and counted: a
    group fails with its subtask, and so does every group above it, so counting them told one
    failure as several. Skipped ones are counted: they run on resume, after the failed one."""
    leaves = [t for t in tasks if not t.children]
    # A group failed with no failed subtask recorded (never expected): it is still named, so
    # the run is never told as completed.
    failed = [t.id for t in leaves if t.status.state == "failed"] or [
        t.id for t in tasks if t.status.state == "failed"
    ]
    if not failed:
        return None
    reason = f"{counted(len(failed), 'task')} failed: {', '.join(failed)}"
    skipped = sum(1 for t in leaves if t.status.skipped_for_failure)
    return f"{reason}; {skipped} skipped" if skipped else reason


def unpushed_work(remote: RemoteState | None, workdir: Path, session_id: str) -> str | None:
    """Why the remote lacks some of the session branch's work in ``workdir``; None when it
    holds all of it, or the session has no remote. A push that failed says why; a branch
    that moved since its last push (a resume without repo pushes nothing) says so."""
    if remote is None:
        return None
    if remote.unpushed:
        return remote.unpushed
    head = branch_head(workdir, session_id)
    if head is None or head == remote.pushed_head:
        return None
    pushed = (remote.pushed_head or "")[:10] or "nothing"
    return (
        f"the branch (at {head[:10]}) is ahead of what was pushed ({pushed}): "
        "a run without --repo pushes nothing"
    )


def branch_head(workdir: Path, session_id: str) -> str | None:
    """The session branch's commit in ``workdir``; None where there is no such branch."""
    import git

    from aca_flows.workspace.hardened_git import AcaRepo
    from aca_flows.workspace.repository import WorkspaceError, session_branch_head

    try:
        return session_branch_head(AcaRepo(workdir), session_id)
    except (git.GitError, OSError, WorkspaceError):  # not a repository (any more), no branch
        return None


def flow_state(summary: RunSummary, cancelled_from_ui: bool = False) -> State | RunSummary:
    """The flow run's final state for a run summary (docs/engine.md, "How a run ends")."""
    from prefect.states import Cancelled, Failed

    if summary.status == "interrupted":
        name = "Cancelled" if cancelled_from_ui else "Interrupted"
        name = "Taken over" if summary.taken_over else name
        return Cancelled(name=name, message=summary.stopped_reason, data=summary)
    if summary.status == "stopped":
        return Cancelled(name="Stopped", message=summary.stopped_reason, data=summary)
    if summary.status == "rejected":
        return Cancelled(name="Rejected", message=summary.stopped_reason, data=summary)
    if summary.status == "failed":
        return Failed(message=summary.stopped_reason or "failed", data=summary)
    if summary.not_delivered:
        # Every task is done, but not where it was to go: a pipeline must not see it green.
        return Failed(name="Not delivered", message=summary.not_delivered, data=summary)
    return summary
