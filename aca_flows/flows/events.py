"""Prefect events for automations: what happens to a session and its tasks, as it happens.

- ``aca.session.started``: the session is open, before any task starts;
- ``aca.session.completed`` / ``failed`` / ``stopped`` / ``interrupted`` / ``rejected`` (the
  plan rejected at approval): the run ended so; ``failed`` too for work done but not delivered
  (its push or pull request failed: the flow run fails, exit 4).
  Their resource is ``aca.session.<session-id>``, named after the session.
- ``aca.task.completed`` / ``failed`` / ``skipped``: a task ended so; resource
  ``aca.task.<session-id>.<task-id>``, named ``<task-id> <title>``. A task that proposed
  subtasks sends ``completed`` when its own work lands and ``failed`` when one of them fails.

Every event names the session's flow run as a related resource (role ``flow-run``); task
events also name their session (role ``aca-session``). Prefect adds the flow, the deployment,
the work pool and the run's tags from the run's context, so an automation can match on
``match_related`` (e.g. the deployment named ``nightly-fix-tests``). The payload carries the
session id, branch and cost; task events add the task id, title and commit; failures and stops
their reason. Payloads are redacted: they leave aca for the Prefect server.

A task event's id is fixed by what it tells (``task_event_id``): the server keeps one event of
an id, so one sent twice is one. A server lost mid-run drops the events Prefect had not sent
yet; a resume asks the server which ``aca.task.completed`` of the tasks completed before it
has, and sends the missing ones again, as they were (``resend_lost_task_events``): those
tasks never end again, so nothing else would. A session's end lost so (``interrupted``) is
not sent again: by the resume the session runs, and an automation resuming interrupted
sessions would start a second run of it; the resume's own ``started`` and end tell instead.
``deployments/automations.yaml`` has examples; docs/deployments.md, "Automations".
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.events.filters import EventFilter, EventIDFilter, EventOccurredFilter

from aca_flows.flows.artifacts import first_line
from aca_flows.session.redact import redact, redact_text

if TYPE_CHECKING:
    from aca_flows.session.record import SessionRecord
    from aca_flows.session.store import SessionStore

__all__ = [
    "SESSION_ENDS",
    "TASK_ENDS",
    "emit_session_event",
    "emit_task_event",
    "resend_lost_task_events",
    "task_event_id",
]

# The namespace of task events' ids (uuid5): fixed, so every aca names an event alike.
_EVENT_IDS = uuid.UUID("5b0e3c52-8f0c-4d7e-9a51-3f4e6c1d2a90")
# Ids asked about in one read of the server's events (its page size is larger).
_IDS_PER_READ = 50
# Prefect's server keeps events this long by default (PREFECT_EVENTS_RETENTION_PERIOD): an
# older event it lacks may have been dropped as old, and sent again would fire automations twice.
_RESEND_WITHIN = timedelta(days=7)

SESSION_ENDS = ("completed", "failed", "stopped", "interrupted")
# A reason's first line, this long at most: an event has a size limit, and a verify's output
# is in the session and the task's report.
REASON_LIMIT = 1000
TASK_ENDS = ("completed", "failed", "skipped")


def session_resource(store: SessionStore) -> dict[str, str]:
    return {
        "prefect.resource.id": f"aca.session.{store.session.id}",
        "prefect.resource.name": redact_text(store.session.name)[:200],
    }


def emit_session_event(store: SessionStore, what: str, reason: str | None = None) -> None:
    """``aca.session.<what>`` (started, or one of ``SESSION_ENDS``) for the session ``store``
    holds, with its counts and spend so far."""
    session = store.session
    payload = {
        "session_id": session.id,
        "plan": session.plan.name,
        "branch": store.branch,
        "status": what,
        "reason": _short(reason),
        "counts": session.task_counts,
        "cost_usd": round(session.cost_usd, 6),
    }
    _emit(f"aca.session.{what}", session_resource(store), [], payload)


def task_event_id(session: SessionRecord, task_id: str, what: str) -> uuid.UUID:
    """The id of ``aca.task.<what>`` for the end of ``task_id`` the session recorded last. A
    task completes once, at the time its record keeps: that id is the same whenever it is
    sent (a resume sends it again). A failure or a skip may come again in a later run (a
    skip records no time): each run's is another event."""
    record = session.tasks.get(task_id)
    ended = record.finished_at if record is not None else None
    when = ended.isoformat() if ended is not None else ""
    if what != "completed":
        when += f" run {session.resumes}"
    return uuid.uuid5(_EVENT_IDS, f"{session.id}/{task_id}/{what}/{when}")


def emit_task_event(
    store: SessionStore,
    task_id: str,
    what: str,
    reason: str | None = None,
    occurred: datetime | None = None,
) -> None:
    """``aca.task.<what>`` (one of ``TASK_ENDS``) for one task of the session; ``occurred``
    for an event sent again, when the task ended."""
    session = store.session
    task = session.plan.task(task_id)
    record = session.tasks.get(task_id)
    payload = {
        "session_id": session.id,
        "task_id": task_id,
        "title": task.title[:REASON_LIMIT],
        "branch": store.branch,
        "commit": record.commit if record else None,
        "attempts": record.attempts if record else 0,
        "cost_usd": round(record.cost_usd, 6) if record else 0.0,
        "reason": _short(reason),
    }
    resource = {
        "prefect.resource.id": f"aca.task.{session.id}.{task_id}",
        "prefect.resource.name": redact_text(f"{task_id} {task.title}")[:200],
    }
    session_related = {**session_resource(store), "prefect.resource.role": "aca-session"}
    event_id = task_event_id(session, task_id, what)
    _emit(f"aca.task.{what}", resource, [session_related], payload, event_id, occurred)


async def resend_lost_task_events(store: SessionStore, logger: Any) -> list[str]:
    """Send again the ``aca.task.completed`` of each task completed in an earlier run of the
    session (within the server's default retention) that the server does not have (a server
    lost mid-run dropped it), with its id and time; log and return those tasks. A server that
    cannot say is asked nothing more: a warning, and the run goes on without them."""
    try:
        lost = await _lost_completions(store)
    except Exception as exc:  # no verdict on the run: its tasks go on without them
        logger.warning(f"the server could not say which task events it has ({exc}); none resent")
        return []
    for task_id, when in lost:
        emit_task_event(store, task_id, "completed", occurred=when)
    resent = [task_id for task_id, _ in lost]
    if resent:
        logger.info(
            f"sent again the aca.task.completed event(s) the server lost: {', '.join(resent)}"
        )
    return resent


async def _lost_completions(store: SessionStore) -> list[tuple[str, datetime]]:
    """(task id, end time) of the earlier runs' completions whose events the server lacks."""
    session = store.session
    ended = {
        task_event_id(session, task.id, "completed"): (task.id, record.finished_at)
        for task in session.plan.tasks
        if task.status.state == "completed"
        and not task.children
        and (record := session.tasks.get(task.id)) is not None
        and record.attempts  # run by aca: a task the plan marked done sent nothing
        and record.finished_at is not None
        and record.finished_at > datetime.now(UTC) - _RESEND_WITHIN
    }
    if not ended:
        return []
    ids = list(ended)
    # Without a time filter the server reads only the last day's events.
    first = min(when for _, when in ended.values()) - timedelta(minutes=1)
    window = EventOccurredFilter(since=first, until=datetime.now(UTC) + timedelta(minutes=1))
    known: set[uuid.UUID] = set()
    async with get_client() as client:
        for start in range(0, len(ids), _IDS_PER_READ):
            batch = ids[start : start + _IDS_PER_READ]
            page = await client.read_events(
                EventFilter(id=EventIDFilter(id=batch), occurred=window), limit=len(batch)
            )
            known.update(event.id for event in page.events)
    return [ended[event_id] for event_id in ids if event_id not in known]


def _emit(
    event: str,
    resource: dict[str, str],
    related: list[dict[str, str]],
    payload: dict[str, Any],
    event_id: uuid.UUID | None = None,
    occurred: datetime | None = None,
) -> None:
    flow_run = getattr(FlowRunContext.get(), "flow_run", None)
    if flow_run is not None:
        related = [
            {
                "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                "prefect.resource.role": "flow-run",
                "prefect.resource.name": flow_run.name,
            },
            *related,
        ]
    # An event that cannot be sent is Prefect's to log; the run goes on.
    emit_event(
        event=event,
        resource=resource,
        related=related,
        payload=redact(payload),
        id=event_id,
        occurred=occurred,
    )


def _short(reason: str | None) -> str | None:
    return first_line(reason)[:REASON_LIMIT] if reason else None
