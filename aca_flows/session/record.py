"""``meta/session.json``: the session's state, a fold of its journal (``fold.py``).

``SessionRecord`` is everything ``aca sessions show`` needs: identity, status, branch,
provider and model, the whole plan with each task's status, each task's attempts, commit,
summary and spend, and totals by provider and model. It is never edited directly: the store
applies journal events with ``fold.apply_event``, so ``fold_events(journal)`` always rebuilds
exactly what was written.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aca_flows.plan.models import ExecutionPlan
from aca_flows.session.events import (
    CheckpointTrigger,
    SourceFile,
)
from aca_flows.session.usage import (
    UsageEntry,
    total_cost,
    total_tokens,
    unpriced_calls,
)

__all__ = [
    "SESSION_SCHEMA_VERSION",
    "Approval",
    "PendingQuestion",
    "CheckpointRef",
    "PullRequestState",
    "RemoteState",
    "SessionRecord",
    "SessionStatus",
    "TaskRun",
    "counts_after_a_kill",
    "describe_counts",
]

SESSION_SCHEMA_VERSION = 1

SessionStatus = Literal["running", "completed", "failed", "interrupted", "stopped", "rejected"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskRun(_Model):
    """What happened to one task: attempts, times, the provider used, commit, summary, spend."""

    task_id: str
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    provider: str | None = None
    model: str | None = None
    commit: str | None = None
    outcome: Literal["changed", "no_change"] | None = None
    no_change_reason: str | None = None
    summary: str | None = None
    usage: list[UsageEntry] = Field(default_factory=list)
    # A reviewer's hints (answers "retry" with a hint), in order: every later run of the task
    # gets them, a resume's too.
    hints: list[str] = Field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return total_tokens(self.usage)

    @property
    def no_change(self) -> bool:
        """Completed with the agent's verified "no change needed" rather than a commit."""
        return self.outcome == "no_change"

    @property
    def cost_usd(self) -> float:
        return total_cost(self.usage)

    @property
    def unpriced_calls(self) -> int:
        """Paid calls whose cost ``cost_usd`` leaves out: aca had no price for their model."""
        return unpriced_calls(self.usage)

    @property
    def never_ran(self) -> bool:
        """No attempt and no commit: for a completed task, one the task file marked done
        (``- [x]``, ``done = true``)."""
        return self.attempts == 0 and self.commit is None


class Approval(_Model):
    """The plan's approval (``--require-approval``): where the waiting flow run is, and what
    a person decided. ``state`` is ``waiting`` until a decision arrives."""

    state: Literal["waiting", "approved", "rejected"] = "waiting"
    flow_run_id: str
    api_url: str | None = None
    mode: Literal["pause", "suspend"] = "pause"
    requested_at: datetime
    expires_at: datetime | None = None
    decided_at: datetime | None = None
    skip: list[str] = Field(default_factory=list)
    max_concurrent: int | None = None
    note: str = ""
    reason: str = ""
    timed_out: bool = False


class PendingQuestion(_Model):
    """A failed task that waits for a person's answer, and where its flow run waits."""

    task_id: str
    question: str
    flow_run_id: str
    api_url: str | None = None
    asked_at: datetime
    expires_at: datetime | None = None
    input_key: str | None = None  # where its flow run keeps the answer (``take_answer_left``)


class RemoteState(_Model):
    """Where the session's work is pushed (a run with ``--repo``), and whether the remote holds
    all of it: ``unpushed`` says why the last push failed; ``None`` once one succeeds."""

    url: str
    pushed_head: str | None = None
    pushed_at: datetime | None = None
    unpushed: str | None = None


class PullRequestState(_Model):
    """The session's pull request (``open_pr``) as its last run left it: its URL, or why it
    was not delivered."""

    url: str | None = None
    error: str | None = None
    at: datetime


class CheckpointRef(_Model):
    id: str
    created_at: datetime
    trigger: CheckpointTrigger
    description: str = ""


class SessionRecord(_Model):
    """The content of ``meta/session.json`` (schema version 1)."""

    schema_version: Literal[1] = SESSION_SCHEMA_VERSION
    id: str
    name: str
    status: SessionStatus = "running"
    status_reason: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    workdir: str
    branch: str
    provider: str
    model: str | None = None
    plan: ExecutionPlan
    tasks: dict[str, TaskRun] = Field(default_factory=dict)
    usage: list[UsageEntry] = Field(
        default_factory=list, description="Totals by provider and model, all tasks and planning."
    )
    last_checkpoint: CheckpointRef | None = None
    approval: Approval | None = None
    question: PendingQuestion | None = Field(
        default=None, description="The task waiting for a person's answer, while it waits."
    )
    remote: RemoteState | None = None
    pull_request: PullRequestState | None = None
    resumes: int = 0
    budget_usd: float | None = Field(
        default=None, description="The spend cap: a resume keeps it unless given another."
    )
    source: SourceFile | None = Field(
        default=None, description="The task file or plan the session was started from."
    )
    config_file: str | None = Field(
        default=None, description="The --config file it was started with; resumes read it."
    )
    resumed_at: datetime | None = Field(default=None, description="Start of the latest run.")
    earlier_runs_seconds: float = Field(
        default=0.0, description="Wall time of the runs before the latest one, idle time not."
    )
    last_seq: int = Field(default=0, description="seq of the last journal event applied.")

    @property
    def tasks_total(self) -> int:
        """The tasks that run (groups left out), as ``task_counts`` counts them."""
        return len(self.plan.leaves())

    @property
    def tasks_done(self) -> int:
        """Completed or left-out tasks (groups left out): the ones a resume will not run."""
        return sum(1 for task in self.plan.leaves() if task.status.is_done)

    @property
    def task_counts(self) -> dict[str, int]:
        """How many tasks that run are in each state: what every view counts
        (``ExecutionPlan.counts``)."""
        return self.plan.counts()

    @property
    def completed_task_ids(self) -> list[str]:
        return [task.id for task in self.plan.tasks if task.status.state == "completed"]

    @property
    def typical_call_usd(self) -> float:
        """What a call of the session cost, on average, with its costliest model (0.0 before
        a paid call)."""
        return max((e.cost_usd / e.calls for e in self.usage if e.calls), default=0.0)

    @property
    def completed_without_change(self) -> list[TaskRun]:
        """The tasks completed on the agent's verified "no change needed". As the plan says:
        a parent whose split was its "no change" fails with a failed subtask, and is not."""
        completed = set(self.completed_task_ids)
        return [run for run in self.tasks.values() if run.no_change and run.task_id in completed]

    @property
    def total_tokens(self) -> int:
        return total_tokens(self.usage)

    @property
    def cost_usd(self) -> float:
        return total_cost(self.usage)

    @property
    def unpriced_calls(self) -> int:
        """Paid calls whose cost ``cost_usd`` leaves out: aca had no price for their model."""
        return unpriced_calls(self.usage)

    @property
    def duration(self) -> timedelta:
        """Wall time the session ran: each run from its start (or resume) to its end, or to
        its last event while unfinished. A day between an interrupt and its resume is not in
        it."""
        latest = (self.finished_at or self.updated_at) - (self.resumed_at or self.created_at)
        return timedelta(seconds=self.earlier_runs_seconds) + latest

    def task_run(self, task_id: str) -> TaskRun:
        if task_id not in self.tasks:
            self.plan.task(task_id)  # KeyError for a task the plan does not have
            self.tasks[task_id] = TaskRun(task_id=task_id)
        return self.tasks[task_id]


_COUNT_ORDER = (
    "completed",
    "failed",
    "skipped",
    "blocked",
    "in_progress",
    "interrupted",
    "pending",
)


def counts_after_a_kill(counts: dict[str, int]) -> dict[str, int]:
    """``counts`` of a session whose process ended without recording its end (killed): its
    tasks "in progress" are interrupted, as its task table says; nothing is in progress."""
    counts = dict(counts)
    if stopped := counts.pop("in_progress", 0):
        counts["interrupted"] = stopped
    return counts


def describe_counts(counts: dict[str, int]) -> str:
    """``"1 completed, 1 failed, 1 skipped of 3"``: each state on its own, never lumped."""
    total = sum(counts.values())
    parts = [
        f"{counts[state]} {state.replace('_', ' ')}" for state in _COUNT_ORDER if counts.get(state)
    ]
    return f"{', '.join(parts) or 'nothing'} of {total}"
