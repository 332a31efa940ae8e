"""Running a task and the subtasks it proposes, without Prefect.

``execute_task_tree`` is the reference for how proposed subtasks run: the parent's own work is
committed first; its proposals are validated and added to the plan as its children
(``accept_subtasks``); the children run in dependency order, each on a session branch that
holds the parent's and its earlier siblings' work, and may propose subtasks in turn; the parent
completes only when every child has. The Prefect flow does the same with task runs; this
driver runs them one after another and is what the tests and a Prefect-free caller use.
Statuses are recorded on the plan's tasks, so the tree is complete when it returns. Children
already in the plan (recorded before a crash) run too, so a resumed parent, which is not asked
again, still gets its subtasks done; those that landed before are not run again.
"""

from __future__ import annotations

from typing import Any

from aca_flows.agent.execute import TaskOutcome, execute_task
from aca_flows.agent.subtasks import SubtaskProposalError, accept_subtasks
from aca_flows.plan.models import ExecutionPlan, Task, TaskStatus

__all__ = ["execute_task_tree", "run_order"]


async def execute_task_tree(
    plan: ExecutionPlan,
    task_id: str,
    *,
    outcomes: dict[str, TaskOutcome] | None = None,
    **execute_options: Any,
) -> dict[str, TaskOutcome]:
    """Execute ``task_id`` and, recursively, the subtasks it proposes; returns every outcome.

    ``execute_options`` are passed to ``execute_task`` (workdir, session_id, provider, ...).
    ``outcomes`` holds earlier outcomes (used as dependency context) and is filled in place.
    """
    outcomes = {} if outcomes is None else outcomes
    task = plan.task(task_id)
    task.status = TaskStatus(state="in_progress")
    outcome = await execute_task(plan, task_id, dependency_outcomes=outcomes, **execute_options)
    outcomes[task_id] = outcome
    if outcome.status != "completed":
        task.status = TaskStatus(state="failed", reason=outcome.failure_reason or "failed")
        return outcomes
    if outcome.proposed_subtasks:
        try:
            accept_subtasks(plan, task_id, outcome.proposed_subtasks)
        except SubtaskProposalError as exc:
            return _fail(plan, task_id, outcomes, str(exc))
    # Children recorded earlier count too: a resumed parent does not propose them again.
    children = [plan.task(child_id) for child_id in task.children]
    sibling_ids = {c.id for c in children}
    for child in run_order(children):
        if child.id in outcomes and outcomes[child.id].status == "completed":
            continue
        blocked = [
            d
            for d in child.dependencies
            if (d in sibling_ids and plan.task(d).status.state != "completed")
            or (d in outcomes and outcomes[d].status != "completed")
        ]
        if blocked:
            child.status = TaskStatus(state="skipped", reason=f"dependency `{blocked[0]}` failed")
            continue
        await execute_task_tree(plan, child.id, outcomes=outcomes, **execute_options)
    unfinished = [c.id for c in children if c.status.state != "completed"]
    if unfinished:
        reason = f"subtask(s) not completed: {', '.join(unfinished)}"
        return _fail(plan, task_id, outcomes, reason)
    task.status = TaskStatus(state="completed")
    return outcomes


def run_order(tasks: list[Task]) -> list[Task]:
    """Siblings ordered so each comes after the siblings it depends on (stable otherwise)."""
    remaining = list(tasks)
    ids = {t.id for t in tasks}
    placed: set[str] = set()
    ordered: list[Task] = []
    while remaining:
        ready = [t for t in remaining if all(d in placed or d not in ids for d in t.dependencies)]
        if not ready:  # a cycle; accept_subtasks refuses those, so this is only a guard
            ready = remaining[:1]
        for t in ready:
            ordered.append(t)
            placed.add(t.id)
            remaining.remove(t)
    return ordered


def _fail(
    plan: ExecutionPlan, task_id: str, outcomes: dict[str, TaskOutcome], reason: str
) -> dict[str, TaskOutcome]:
    plan.task(task_id).status = TaskStatus(state="failed", reason=reason)
    outcomes[task_id] = outcomes[task_id].model_copy(
        update={"status": "failed", "failure_reason": reason}
    )
    return outcomes
