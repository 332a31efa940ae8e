"""Prefect events for automations: what happens to a session and its tasks, as it happens.

- ``aca.session.started``: the session is open, before any task starts;
- ``aca.session.completed`` / ``failed`` / ``stopped`` / ``interrupted``: the run ended so.
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
``deployments/automations.yaml`` has examples; docs/deployments.md, "Automations".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.context import FlowRunContext
from prefect.events import emit_event

from aca_flows.flows.artifacts import first_line
from aca_flows.session.redact import redact, redact_text

if TYPE_CHECKING:
    from aca_flows.session.store import SessionStore

__all__ = ["SESSION_ENDS", "TASK_ENDS", "emit_session_event", "emit_task_event"]

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


def emit_task_event(
    store: SessionStore, task_id: str, what: str, reason: str | None = None
) -> None:
    """``aca.task.<what>`` (one of ``TASK_ENDS``) for one task of the session."""
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
    _emit(f"aca.task.{what}", resource, [session_related], payload)


def _emit(
    event: str, resource: dict[str, str], related: list[dict[str, str]], payload: dict[str, Any]
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
    emit_event(event=event, resource=resource, related=related, payload=redact(payload))


def _short(reason: str | None) -> str | None:
    return first_line(reason)[:REASON_LIMIT] if reason else None
