"""``meta/session.json``: the session's state, a fold of its journal.

``SessionRecord`` is everything ``aca sessions show`` needs: identity, status, branch,
provider and model, the whole plan with each task's status, each task's attempts, commit,
summary and spend, and totals by provider and model. It is never edited directly: the store
applies journal events with ``apply_event``, so ``fold_events(journal)`` always rebuilds
exactly what was written.

Applying an event is idempotent where a crash can make the engine repeat it: a second
``task_completed`` for a completed task, or a repeated ``subtasks_added``, changes nothing
(``apply_event`` returns ``False`` and the store does not journal it). Events that would break
the resume guarantee -- starting a task that already completed -- raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aca_flows.plan.models import ExecutionPlan, TaskStatus
from aca_flows.session.events import (
    ApprovalDecided,
    ApprovalRequested,
    BranchPushed,
    CallRecorded,
    CheckpointCreated,
    CheckpointTrigger,
    Event,
    PullRequestDelivered,
    SessionFinished,
    SessionResumed,
    SessionStarted,
    SourceFile,
    SubtasksAdded,
    TaskAnswered,
    TaskBlocked,
    TaskCompleted,
    TaskFailed,
    TaskQuestion,
    TaskResult,
    TaskSkipped,
    TaskStarted,
)
from aca_flows.session.usage import (
    UsageEntry,
    add_usage,
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
    "apply_event",
    "describe_counts",
    "fold_events",
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


def fold_events(events: Iterable[Event]) -> SessionRecord:
    """The record a journal describes. Raises ``ValueError`` if the events are inconsistent."""
    record: SessionRecord | None = None
    for event in events:
        if record is None:
            if not isinstance(event, SessionStarted):
                raise ValueError(f"event {event.seq} ({event.type}) comes before session_started")
            record = _start(event)
        else:
            apply_event(record, event)
    if record is None:
        raise ValueError("the journal holds no events")
    return record


def apply_event(record: SessionRecord, event: Event) -> bool:
    """Apply ``event`` to ``record`` in place. ``False``: it repeated a known fact, no change."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise ValueError(f"event {event.type} cannot be applied to a started session")
    changed = handler(record, event)
    if changed:
        record.last_seq = max(record.last_seq, event.seq)
        record.updated_at = max(record.updated_at, event.at)
    return changed


def _start(event: SessionStarted) -> SessionRecord:
    plan = event.plan.model_copy(deep=True)
    return SessionRecord(
        id=event.session_id,
        name=event.name,
        created_at=event.at,
        updated_at=event.at,
        workdir=event.workdir,
        branch=event.branch,
        provider=event.provider,
        model=event.model,
        plan=plan,
        budget_usd=event.budget_usd,
        source=event.source,
        config_file=event.config_file,
        tasks={task.id: TaskRun(task_id=task.id) for task in plan.tasks},
        last_seq=event.seq,
    )


def _set_status(record: SessionRecord, task_id: str, status: TaskStatus, at: datetime) -> None:
    task = _task(record, task_id)
    task.status = status
    task.updated_at = at


def _task(record: SessionRecord, task_id: str):
    try:
        return record.plan.task(task_id)
    except KeyError:
        raise ValueError(f"task {task_id!r} is not in the session's plan") from None


def _started(record: SessionRecord, event: SessionStarted) -> bool:
    raise ValueError(f"session {record.id} was already started")


def _resumed(record: SessionRecord, event: SessionResumed) -> bool:
    # The run before ended at its finish, or at its last event if it crashed.
    record.earlier_runs_seconds = record.duration.total_seconds()
    record.resumed_at = event.at
    if event.budget_usd is not None:
        record.budget_usd = event.budget_usd
    if event.workdir is not None:
        record.workdir = event.workdir
    # Tasks running at the crash start again from a clean worktree: they are pending now.
    for task in record.plan.tasks:
        if task.status.state == "in_progress":
            task.status = TaskStatus(state="pending")
            task.updated_at = event.at
    record.status = "running"
    record.status_reason = None
    record.finished_at = None
    record.question = None  # its flow run is gone; the task runs again and may ask again
    record.resumes += 1
    return True


def _task_started(record: SessionRecord, event: TaskStarted) -> bool:
    if _task(record, event.task_id).status.state == "completed":
        raise ValueError(
            f"task {event.task_id!r} already completed; a completed task never runs again"
        )
    _set_status(record, event.task_id, TaskStatus(state="in_progress"), event.at)
    run = record.task_run(event.task_id)
    run.attempts += 1
    run.started_at = run.started_at or event.at
    run.finished_at = None
    run.provider = event.provider or run.provider
    run.model = event.model or run.model
    return True


def _task_completed(record: SessionRecord, event: TaskCompleted) -> bool:
    task = _task(record, event.task_id)
    if task.status.state == "completed":
        return False  # finishing a task is safe to repeat: the first record stands
    # A task that proposed subtasks (``subtasks_added`` comes first): its own work is in, and
    # it completes when they all have, its group closing (an empty result: the work stays).
    waiting = any(
        _task(record, child).status.state in ("pending", "in_progress") for child in task.children
    )
    _set_status(record, event.task_id, TaskStatus(state="in_progress" if waiting else "completed"),
                event.at)  # fmt: skip
    run = record.task_run(event.task_id)
    if event.result != TaskResult() or not task.children:
        run.finished_at = event.at
        run.commit = event.result.commit
        run.outcome = event.result.outcome
        run.no_change_reason = event.result.no_change_reason
        run.summary = event.result.summary
    return True


def _task_failed(record: SessionRecord, event: TaskFailed) -> bool:
    task = _task(record, event.task_id)
    # Completed work stays completed; but a task whose own work landed fails when a subtask it
    # proposed fails (its group closes failed): it completes only when they all have.
    if task.status.state == "completed" and (event.will_retry or not task.children):
        return False
    status = (
        TaskStatus(state="pending")
        if event.will_retry
        else TaskStatus(state="failed", reason=event.reason)
    )
    _set_status(record, event.task_id, status, event.at)
    run = record.task_run(event.task_id)
    run.summary = event.reason
    if not event.will_retry:
        run.finished_at = event.at
    return True


def _task_skipped(record: SessionRecord, event: TaskSkipped) -> bool:
    return _set_reasoned(record, event, "skipped")


def _task_blocked(record: SessionRecord, event: TaskBlocked) -> bool:
    return _set_reasoned(record, event, "blocked")


def _set_reasoned(record: SessionRecord, event: TaskSkipped | TaskBlocked, state: str) -> bool:
    status = TaskStatus(state=state, reason=event.reason)
    if _task(record, event.task_id).status == status:
        return False
    _set_status(record, event.task_id, status, event.at)
    return True


def _subtasks_added(record: SessionRecord, event: SubtasksAdded) -> bool:
    parent = _task(record, event.parent_id)
    known = {task.id for task in record.plan.tasks}
    new = [task for task in event.tasks if task.id not in known]
    for task in event.tasks:
        if task.id in known and _task(record, task.id).parent_id != event.parent_id:
            raise ValueError(f"subtask id {task.id!r} is already used in the plan")
    if not new:
        return False  # the same split recorded again after a crash
    for task in new:
        task = task.model_copy(update={"parent_id": event.parent_id}, deep=True)
        record.plan.tasks.append(task)
        record.tasks[task.id] = TaskRun(task_id=task.id)
        if task.id not in parent.children:
            parent.children = [*parent.children, task.id]
    return True


def _call_recorded(record: SessionRecord, event: CallRecorded) -> bool:
    # Every call is new spend: a call is never a repeat of another, so it always applies.
    if event.task_id:
        _task(record, event.task_id)
    spent = [event.entry()]
    if event.task_id:
        run = record.task_run(event.task_id)
        run.usage = add_usage(run.usage, spent)
    record.usage = add_usage(record.usage, spent)
    return True


def _checkpoint_created(record: SessionRecord, event: CheckpointCreated) -> bool:
    record.last_checkpoint = CheckpointRef(
        id=event.checkpoint_id,
        created_at=event.at,
        trigger=event.trigger,
        description=event.description,
    )
    return True


def _approval_requested(record: SessionRecord, event: ApprovalRequested) -> bool:
    record.approval = Approval(
        flow_run_id=event.flow_run_id,
        api_url=event.api_url,
        mode=event.mode,
        requested_at=event.at,
        expires_at=event.expires_at,
    )
    return True


def _approval_decided(record: SessionRecord, event: ApprovalDecided) -> bool:
    if record.approval is None:
        raise ValueError("an approval was decided that was never requested")
    record.approval = record.approval.model_copy(
        update={
            "state": "approved" if event.decision == "approve" else "rejected",
            "decided_at": event.at,
            **event.model_dump(include={"skip", "max_concurrent", "note", "reason", "timed_out"}),
        }
    )
    return True


def _task_question(record: SessionRecord, event: TaskQuestion) -> bool:
    _task(record, event.task_id)
    record.question = PendingQuestion(
        task_id=event.task_id,
        question=event.question,
        flow_run_id=event.flow_run_id,
        api_url=event.api_url,
        asked_at=event.at,
        expires_at=event.expires_at,
        input_key=event.input_key,
    )
    return True


def _task_answered(record: SessionRecord, event: TaskAnswered) -> bool:
    # What the answer does to the task is journalled as its own events (failed, skipped).
    if record.question is not None and record.question.task_id == event.task_id:
        record.question = None
    if event.action == "retry" and event.hint:
        record.task_run(event.task_id).hints.append(event.hint)
    return True


def _branch_pushed(record: SessionRecord, event: BranchPushed) -> bool:
    known = record.remote if record.remote and record.remote.url == event.remote else None
    if event.pushed:
        record.remote = RemoteState(url=event.remote, pushed_head=event.head, pushed_at=event.at)
    else:
        record.remote = RemoteState(
            url=event.remote,
            pushed_head=known.pushed_head if known else None,
            pushed_at=known.pushed_at if known else None,
            unpushed=event.error or "the push failed",
        )
    return True


def _pull_request_delivered(record: SessionRecord, event: PullRequestDelivered) -> bool:
    record.pull_request = PullRequestState(url=event.url, error=event.error, at=event.at)
    return True


def _finished(record: SessionRecord, event: SessionFinished) -> bool:
    # Nothing runs once the session has ended: tasks cut short (a stop, an interrupt, or an
    # error that failed the run) start again on resume, and the record says so now.
    for task in record.plan.tasks:
        if task.status.state == "in_progress" and not task.children:
            task.status = TaskStatus(state="pending")
            task.updated_at = event.at
    record.status = event.status
    record.status_reason = event.reason
    record.finished_at = event.at
    record.question = None  # nothing waits for its answer any more; a resume asks again
    return True


_HANDLERS = {
    SessionStarted: _started,
    SessionResumed: _resumed,
    TaskStarted: _task_started,
    TaskCompleted: _task_completed,
    TaskFailed: _task_failed,
    TaskSkipped: _task_skipped,
    TaskBlocked: _task_blocked,
    SubtasksAdded: _subtasks_added,
    CallRecorded: _call_recorded,
    CheckpointCreated: _checkpoint_created,
    ApprovalRequested: _approval_requested,
    ApprovalDecided: _approval_decided,
    TaskQuestion: _task_question,
    TaskAnswered: _task_answered,
    BranchPushed: _branch_pushed,
    PullRequestDelivered: _pull_request_delivered,
    SessionFinished: _finished,
}


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
