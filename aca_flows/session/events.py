"""The journal's entries: one model per event type, told apart by ``type``.

Each line of ``meta/events.jsonl`` is one event. Every event carries ``schema_version``,
``seq`` (1, 2, 3, ... in journal order, assigned by the store when it is appended) and ``at``
(UTC). Events are facts that happened, never intentions: the engine records ``task_completed``
after the task's commit is merged, so replaying the journal never invents finished work.

    session_started    the session was created (the whole plan, provider, model, branch)
    session_resumed    a new process took the session over; running tasks go back to pending
    task_started       an attempt at a task began (attempts += 1)
    task_completed     a task finished; ``result`` holds commit and summary
    task_failed        an attempt failed; with ``will_retry`` the task goes back to pending
    task_skipped       a task will not run (``reason``)
    task_blocked       a task cannot run (``reason``), e.g. a dependency failed
    subtasks_added     an agent split a task; the new tasks join the plan under ``parent_id``
    call               one paid provider call returned: the ledger line of its tokens and USD
                       (a task's call, with the task and attempt; or the intelligent parser's)
    checkpoint_created a checkpoint file was written
    approval_requested the run waits for a person to approve its plan (its flow run, server)
    approval_decided   the plan was approved (with changes) or rejected, and why
    task_question      a failed task waits for a person's answer (``on_failure = "ask"``)
    task_answered      the answer came: retry (with a hint), skip or fail
    branch_pushed      the session branch and record were pushed to the run's remote
                       (``pushed``), or a push failed after its retries (``error``)
    pull_request_delivered  the run's pull request (``open_pr``) was opened or updated
                       (``url``), or GitHub did not take it (``error``)
    session_finished   the run ended: completed, failed, interrupted, stopped (by a budget)
                       or rejected (at approval)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers.base import Usage
from aca_flows.session.usage import UsageEntry

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "ApprovalDecided",
    "ApprovalRequested",
    "BranchPushed",
    "CallPurpose",
    "CallRecorded",
    "CheckpointCreated",
    "CheckpointTrigger",
    "StopTrigger",
    "Event",
    "PullRequestDelivered",
    "SessionFinished",
    "SessionResumed",
    "SessionStarted",
    "SourceFile",
    "SubtasksAdded",
    "TaskAnswered",
    "TaskBlocked",
    "TaskCompleted",
    "TaskFailed",
    "TaskQuestion",
    "TaskResult",
    "TaskSkipped",
    "TaskStarted",
    "event_from_json",
    "event_to_json",
]

EVENT_SCHEMA_VERSION = 1

FinalStatus = Literal["completed", "failed", "interrupted", "stopped", "rejected"]
# What stopped a run (session ``stopped``): a budget, a provider's usage limit, a provider that
# cannot serve the run (a refused key, spent credit), the session branch gone.
StopTrigger = Literal[
    "budget", "usage-limit", "provider", "branch-lost", "branch-reset", "branch-checked-out"
]
CheckpointTrigger = Literal["auto", "manual", "interrupt", "end", StopTrigger]
CallPurpose = Literal["task", "parse"]


def _now() -> datetime:
    # Full precision: sessions created in the same second still sort by creation.
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = EVENT_SCHEMA_VERSION
    seq: int = Field(default=0, ge=0, description="Position in the journal; set on append.")
    at: datetime = Field(default_factory=_now)


class SourceFile(BaseModel):
    """The file the plan was read from, as it was when the session started."""

    path: str
    sha256: str


class SessionStarted(_Event):
    type: Literal["session_started"] = "session_started"
    session_id: str
    name: str
    workdir: str
    branch: str
    provider: str
    model: str | None = None
    plan: ExecutionPlan
    budget_usd: float | None = None
    source: SourceFile | None = None
    config_file: str | None = None
    """The ``--config`` file the session was started with: its resumes read it too."""


class SessionResumed(_Event):
    type: Literal["session_resumed"] = "session_resumed"
    pid: int | None = None
    checkpoint_id: str | None = None
    budget_usd: float | None = None
    """The budget from this run on (``aca resume --budget-usd``); None keeps the one before."""
    workdir: str | None = None
    """Where this run works when not where the session began: a ``--repo`` session resumed
    in another working area (another machine's); None keeps the one before."""


class TaskStarted(_Event):
    type: Literal["task_started"] = "task_started"
    task_id: str
    provider: str | None = None
    model: str | None = None


class TaskResult(BaseModel):
    """What a finished task produced: its commit on the session branch and a summary. Its
    spend is in the ``call`` events of its attempts.

    ``outcome`` is the evidence it completed with: ``changed`` (its commit) or ``no_change``
    (no commit; the agent's ``no_change_reason``, confirmed by the verify command)."""

    model_config = ConfigDict(extra="forbid")

    commit: str | None = None
    outcome: Literal["changed", "no_change"] | None = None
    no_change_reason: str | None = None
    summary: str = ""


class TaskCompleted(_Event):
    type: Literal["task_completed"] = "task_completed"
    task_id: str
    result: TaskResult = Field(default_factory=TaskResult)


class TaskFailed(_Event):
    type: Literal["task_failed"] = "task_failed"
    task_id: str
    reason: str = Field(min_length=1)
    will_retry: bool = False


class TaskSkipped(_Event):
    type: Literal["task_skipped"] = "task_skipped"
    task_id: str
    reason: str = Field(min_length=1)


class TaskBlocked(_Event):
    type: Literal["task_blocked"] = "task_blocked"
    task_id: str
    reason: str = Field(min_length=1)


class SubtasksAdded(_Event):
    type: Literal["subtasks_added"] = "subtasks_added"
    parent_id: str
    tasks: list[Task] = Field(min_length=1)


class CallRecorded(_Event):
    """One ledger line: a provider call that returned, journalled as it returns, so its spend
    stays on the bill whatever happens to the task afterwards (a failed or retried attempt, a
    budget stop, a cancel). Totals per task and per session are sums of these."""

    type: Literal["call"] = "call"
    purpose: CallPurpose = "task"
    task_id: str | None = None
    attempt: int | None = Field(default=None, ge=1, description="The task's attempt (1, 2, ...).")
    provider: str
    model: str = ""
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = Field(default=0.0, ge=0)
    calls: int = Field(
        default=1,
        ge=0,
        description="More than 1 only for a parse's calls; 0 for the part of a call in flight "
        "journalled as it came (a Claude Code run's answered turns), its own line after it.",
    )
    unpriced: bool = Field(
        default=False, description="Paid, but aca has no price for the model: not in cost_usd."
    )

    def entry(self) -> UsageEntry:
        return UsageEntry(
            provider=self.provider,
            model=self.model,
            usage=self.usage,
            cost_usd=self.cost_usd,
            calls=self.calls,
            unpriced_calls=self.calls if self.unpriced else 0,
        )


class CheckpointCreated(_Event):
    type: Literal["checkpoint_created"] = "checkpoint_created"
    checkpoint_id: str
    trigger: CheckpointTrigger
    description: str = ""


class ApprovalRequested(_Event):
    """The flow run waits for input (docs/approval.md): ``aca approve`` finds it here."""

    type: Literal["approval_requested"] = "approval_requested"
    flow_run_id: str
    api_url: str | None = Field(default=None, description="The Prefect API the run talks to.")
    mode: Literal["pause", "suspend"] = "pause"
    expires_at: datetime | None = None


class ApprovalDecided(_Event):
    type: Literal["approval_decided"] = "approval_decided"
    decision: Literal["approve", "reject"]
    skip: list[str] = Field(default_factory=list)
    max_concurrent: int | None = Field(default=None, ge=1, le=64)
    note: str = ""
    reason: str = ""
    timed_out: bool = False


class TaskQuestion(_Event):
    """A failed task waits for a person (docs/approval.md): ``aca answer`` finds it here."""

    type: Literal["task_question"] = "task_question"
    task_id: str
    question: str
    flow_run_id: str
    api_url: str | None = Field(default=None, description="The Prefect API the run talks to.")
    expires_at: datetime | None = None
    input_key: str | None = Field(
        default=None, description="Where the flow run keeps the answer to this question."
    )


class TaskAnswered(_Event):
    type: Literal["task_answered"] = "task_answered"
    task_id: str
    action: Literal["retry", "skip", "fail"]
    hint: str = ""
    reason: str = ""
    timed_out: bool = False


class BranchPushed(_Event):
    """A push of the session branch and its record to the run's remote (``workspace/remote.py``):
    ``head`` is the branch's commit pushed (or not, with ``error``)."""

    type: Literal["branch_pushed"] = "branch_pushed"
    remote: str = Field(min_length=1, description="The URL, without credentials.")
    head: str
    pushed: bool
    attempts: int = Field(default=1, ge=1)
    error: str | None = None


class PullRequestDelivered(_Event):
    """The run's last update of its pull request (``open_pr``): its URL, or why GitHub did
    not take it (``error``)."""

    type: Literal["pull_request_delivered"] = "pull_request_delivered"
    url: str | None = None
    error: str | None = None


class SessionFinished(_Event):
    type: Literal["session_finished"] = "session_finished"
    status: FinalStatus
    reason: str | None = None


Event = Annotated[
    SessionStarted
    | SessionResumed
    | TaskStarted
    | TaskCompleted
    | TaskFailed
    | TaskSkipped
    | TaskBlocked
    | SubtasksAdded
    | CallRecorded
    | CheckpointCreated
    | ApprovalRequested
    | ApprovalDecided
    | TaskQuestion
    | TaskAnswered
    | BranchPushed
    | PullRequestDelivered
    | SessionFinished,
    Field(discriminator="type"),
]

_EVENT = TypeAdapter(Event)


def event_from_json(data: str | bytes) -> Event:
    """Parse one journal line. Raises ``pydantic.ValidationError`` if it is not an event."""
    return _EVENT.validate_json(data)


def event_to_json(event: Event) -> dict:
    """The JSON-ready dict of an event, as appended to the journal."""
    return event.model_dump(mode="json")
