"""The session's record as a fold of its journal: ``fold_events`` rebuilds a
``SessionRecord`` from the events, ``apply_event`` applies one as the store journals it.

Applying an event is idempotent where a crash can make the engine repeat it: a second
``task_completed`` for a completed task, or a repeated ``subtasks_added``, changes nothing
(``apply_event`` returns ``False`` and the store does not journal it). Events that would break
the resume guarantee -- starting a task that already completed -- raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from aca_flows.plan.models import TaskStatus
from aca_flows.session.events import (
    ApprovalDecided,
    ApprovalRequested,
    BranchPushed,
    CallRecorded,
    CheckpointCreated,
    Event,
    PullRequestDelivered,
    SessionFinished,
    SessionResumed,
    SessionStarted,
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
from aca_flows.session.record import (
    Approval,
    CheckpointRef,
    PendingQuestion,
    PullRequestState,
    RemoteState,
    SessionRecord,
    TaskRun,
)
from aca_flows.session.usage import add_usage

__all__ = ["apply_event", "fold_events"]


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
