"""What a run records of the tasks it does not run, and of the groups the DAG closes: the
session's skips and group ends (once each, with their events), and the task runs that end
``Skipped`` or ``Cached`` so the UI draws them (``skipped.py``), each after the task runs it
waits for (``edges``)."""

from __future__ import annotations

import asyncio
from functools import partial

from prefect import get_run_logger
from prefect.client.schemas.objects import StateDetails
from prefect.states import State

from aca_flows.flows.events import emit_task_event
from aca_flows.flows.flow_tree import FlowTree
from aca_flows.flows.publishing import publish_report
from aca_flows.flows.run_setup import recorded_status
from aca_flows.flows.skipped import record_finished_task, record_skipped_task
from aca_flows.flows.task_run import ActiveRun, task_run_name, task_tags
from aca_flows.plan.dag import DagProgress
from aca_flows.session.events import TaskResult
from aca_flows.session.store import SessionStore

__all__ = ["close_groups", "edges", "record_finished_before", "record_skip", "run_skips"]


def edges(states: dict[str, State], dependency_ids) -> list[State]:
    """What a task run waits for: its dependencies' task runs, each as its state without its
    result. Prefect walks every ``wait_for`` value whole, result included, twice per task run
    (once for the UI's edges, once to check it completed) and reads a persisted result back;
    the edge needs only the type and the task run's id. The data is the task's id, so the
    check finds a value and nothing to walk."""
    return [
        State(
            type=states[d].type,
            name=states[d].name,
            message=states[d].message,
            data=d,
            state_details=StateDetails(task_run_id=states[d].state_details.task_run_id),
        )
        for d in dependency_ids
        if d in states
    ]


def _record_settled(store: SessionStore, dag: DagProgress, recorded: set[str]) -> list[str]:
    """Skips and closed groups decided by the DAG go into the session once; returns the
    groups recorded now."""
    closed = []
    for task in dag.plan.tasks:
        state = task.status.state
        # Only skipped tasks and groups are recorded here, and this runs over every task after
        # every finished one: the others are passed over before the session is asked.
        if task.id in recorded or (state != "skipped" and not task.children):
            continue
        known = recorded_status(store, task.id)
        if state == "skipped":
            # Skipped again (its dependency failed again on a resume): the session knows it,
            # the event is this run's. One left out at approval is in the session already.
            if known != task.status:
                store.task_skipped(task.id, task.status.reason or "skipped")
            emit_task_event(store, task.id, "skipped", task.status.reason)
            recorded.add(task.id)
        elif (
            task.children
            and state in ("completed", "failed")
            # A group that failed in an earlier run of the session may complete in this one.
            and (known is None or known.state != state)
        ):
            if state == "completed":
                store.task_completed(task.id, TaskResult())
            else:
                store.task_failed(task.id, task.status.reason or "failed")
            if (run := store.session.tasks.get(task.id)) and run.attempts:
                # A task that proposed subtasks ends with them: its event is sent now, before
                # its dependents' skips, as the DAG decided them.
                emit_task_event(store, task.id, state, task.status.reason)
                if state == "failed":
                    get_run_logger().warning(f"{task.id} failed: {task.status.reason}")
            recorded.add(task.id)
            closed.append(task.id)
    return closed


async def close_groups(
    store: SessionStore, run: ActiveRun, dag: DagProgress, states, recorded: set[str]
) -> None:
    """Records what the DAG settled; a task that did work of its own and proposed subtasks
    (it has a task run) gets its report again when its group closes."""
    for group_id in _record_settled(store, dag, recorded):
        if group_id in states:
            publish_report(store, run, group_id, states[group_id])


async def record_finished_before(
    store: SessionStore, run: ActiveRun, dag: DagProgress, states, tree: FlowTree
) -> None:
    """Each task finished in an earlier run gets a task run that ends ``Cached`` (its commit
    in the message), in its group's flow run: the UI shows what a resume reused, and its
    dependents are drawn after it; so does a task the plan marked done (an ``[x]`` in the
    task file, ``done = true``, a completed task of an execution plan). No provider is
    called."""
    finished = [
        task
        for task in dag.plan.tasks
        if task.status.state == "completed" and not task.children and task.id not in states
    ]
    slots = asyncio.Semaphore(8)  # a burst of task runs makes SQLite answer "locked"

    async def record(task) -> None:
        done = store.session.tasks.get(task.id)
        if done is None or not done.attempts:  # never started: the plan said it was done
            message = "marked done in the plan the run was given; not run"
        else:
            landed = f"commit {done.commit[:10]}" if done.commit else "no change needed"
            message = f"finished in an earlier run of session {run.session_id}: {landed}"
        tags = task_tags(run, task)
        make = partial(record_finished_task, task_run_name(task), task.id, message, tags)
        async with slots:
            states[task.id] = await tree.run(task, make)

    await asyncio.gather(*(record(task) for task in finished))
    tree.close_settled()


async def run_skips(
    store: SessionStore, run: ActiveRun, dag: DagProgress, states, tree: FlowTree
) -> None:
    """Each leaf skipped because a dependency failed gets a task run that ends Skipped (drawn
    after its dependencies' task runs) and a report saying why."""
    for task in dag.plan.tasks:
        if task.status.skipped_for_failure and not task.children and task.id not in states:
            waits = edges(states, dag.dependency_ids(task))
            tags = task_tags(run, task)
            skip = partial(
                record_skipped_task, task_run_name(task), task.id, str(task.status), waits, tags
            )
            states[task.id] = await tree.run(task, skip)
            publish_report(store, run, task.id, states[task.id])


async def record_skip(
    store: SessionStore, run: ActiveRun, states, tree: FlowTree, task_id: str
) -> None:
    """A task a person left out (at approval, or by answering its question) gets a task run
    that ends Skipped with its status as the message, and its report."""
    task = run.plan.task(task_id)
    # Tagged as its other task runs are: the UI's filters by session found no such run.
    tags = task_tags(run, task)
    skip = partial(record_skipped_task, task_run_name(task), task_id, str(task.status), [], tags)
    states[task_id] = await tree.run(task, skip)
    publish_report(store, run, task_id, states[task_id])
