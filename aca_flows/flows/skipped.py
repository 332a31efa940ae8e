"""Tasks that do not run in this flow run still get a task run: one that ends ``Completed``
named ``Skipped`` (the task will not run), or named ``Cached`` (it finished in an earlier run of
the session, so a resume shows it as a cache hit).

Prefect's ``NotReady`` (what a task run waiting on a failed upstream gets) is a pending state
that never ends: the run graph's timeline stretches to now and the page names an upstream
task-run UUID. Prefect documents ``Completed(name="Skipped", message=...)`` for work that will
not run (prefect-dbt records its skips so); the message is the session's reason. The session's
journal and branch are what decide a task is done (docs/engine.md, "Resume"), not Prefect's
result cache, which is off: the ``Cached`` run only shows that answer in the UI.
"""

from __future__ import annotations

from prefect import task
from prefect.states import Completed, State
from prefect.utilities.annotations import allow_failure

__all__ = ["record_finished_task", "record_skipped_task"]


@task(name="skip_plan_task", persist_result=False)
async def _skip(task_id: str, message: str) -> State:
    return Completed(name="Skipped", message=message)


@task(name="finished_plan_task", persist_result=False)
async def _finished(task_id: str, message: str) -> State:
    return Completed(name="Cached", message=message)


async def record_finished_task(task_name: str, task_id: str, message: str, tags: list[str]):
    """A task run named ``task_name`` for ``task_id``, finished in an earlier run of the
    session, that ends ``Cached`` with ``message``; returns its final state."""
    # A callable name: Prefect formats a string one with the run's parameters, and a title may
    # hold braces.
    runner = _finished.with_options(task_run_name=lambda: task_name, tags=tags)
    return await runner(task_id, message, return_state=True)


async def record_skipped_task(
    task_name: str, task_id: str, message: str, waits: list[State], tags: list[str] | None = None
):
    """A task run named ``task_name`` (tagged ``tags``) for ``task_id`` that ends Skipped with
    ``message``, drawn after ``waits`` (its dependencies' task runs, failed ones included) in
    the run graph.

    Returns its final state.
    """
    runner = _skip.with_options(task_run_name=lambda: task_name, tags=tags or [])
    return await runner(
        task_id, message, wait_for=[allow_failure(s) for s in waits], return_state=True
    )
