"""Flow and task runs left ``Running`` by a process that died (SIGKILL, an OOM kill, a
reboot) end ``Crashed`` when their session is resumed: nothing else tells the server that
they stopped, and the UI, automations and counts of running runs would see them forever.
So do flow runs left ``Paused`` by a process killed while it waited for approval or for an
answer (``aca answer``): the UI would offer to resume them forever, and nothing would.

The resuming run holds the session's lock, so no other live process runs the session: every
other run of it still ``Running``, or paused with its process waiting, was abandoned. A
*suspended* run (a deployment run waiting for approval) has no process by design: its resume
schedules it again, so it is left as it is.

A task run left ``Running`` whose task the session records completed (its process landed the
work, then died or lost the server before the task run's end reached it) ends ``Completed``
instead, saying so: it did not end without finishing.

A Prefect retry of a flow run (the UI's Retry after a worker's process was killed) runs the
same flow run again: the task runs and subflow runs its earlier attempt left ``Running`` are
under it, so every ``Running`` task run of the session ends too, the current flow run's
included. The resume calls this before it starts any run of its own, so all of them are an
earlier run's or an earlier attempt's. A crashed subflow run is not reattached by the retry:
Prefect starts a new one for its group.

A run with a ``repo`` holds the lock of its own working area only: the earlier run may have
worked on another machine, and no record tells whether its process is gone. It ends those
runs all the same, saying so: a resume with ``--repo`` takes the session over (it pushes the
same branch, and an earlier run still going could push no more), so the earlier run no longer
runs the session whatever became of its process. An earlier run that is still alive (on
another machine, or a process that was stopped and continued) sees its flow run ``Crashed``
and stops (``interrupt.watch_for_cancel``), saying why (``taken_over_reason``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
    TaskRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Completed, Crashed

from aca_flows.flows.local_servers import RECORDER_FLUSH_SECONDS

__all__ = ["crash_abandoned_runs", "taken_over_reason"]


async def crash_abandoned_runs(
    session_id: str,
    current_flow_run_id: str | None,
    taken_over_on: str | None = None,
    finished: dict[str, str] | None = None,
) -> None:
    """End as ``Crashed`` the session's ``Running`` and ``Paused`` flow runs but the current
    one, and every ``Running`` task run of the session: call it before this run starts any.
    ``taken_over_on``: the host of a resume with a ``repo``, which takes the session over from
    runs it cannot see end. ``finished``: what each task the session records completed left
    (its commit), whose task runs end ``Completed``. A server that cannot be asked is no
    reason to fail the run."""
    tag = [f"session:{session_id}"]
    running = [StateType.RUNNING]
    unfinished = [StateType.RUNNING, StateType.PAUSED]
    crashed = Crashed(message=_crash_message(session_id, taken_over_on))
    with contextlib.suppress(Exception):
        async with get_client() as client:
            flow_runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=tag),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
                )
            )
            if any(str(flow_run.id) != current_flow_run_id for flow_run in flow_runs):
                # A run died just now, maybe: the server records task runs from their events
                # in batches, a second apart (local_servers.py), so its last ones may be on the way.
                await asyncio.sleep(RECORDER_FLUSH_SECONDS + 0.5)
            task_runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    tags=TaskRunFilterTags(all_=tag),
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=running)),
                )
            )
            for flow_run in flow_runs:
                if str(flow_run.id) != current_flow_run_id and not _suspended(flow_run.state):
                    await client.set_flow_run_state(flow_run.id, crashed, force=True)
            for task_run in task_runs:
                task_id = task_run.name.split(" ", 1)[0]  # named "<task-id> <title>"
                left = (finished or {}).get(task_id)
                state = crashed if left is None else _finished_unrecorded(left)
                await client.set_task_run_state(task_run.id, state, force=True)


def _finished_unrecorded(left: str):
    return Completed(
        message=f"finished ({left}), but its end never reached the server: its process "
        "stopped first"
    )


def _crash_message(session_id: str, taken_over_on: str | None) -> str:
    if taken_over_on is None:  # the lock proves the process gone
        return f"its process ended without finishing; session {session_id} resumed"
    return (
        f"its process ended without finishing, or no longer runs the session: session "
        f"{session_id} was resumed on {taken_over_on}, which took it over"
    )


_TAKEN_OVER = re.compile(r"session (\S+) was resumed on (.+), which took it over$")


def taken_over_reason(message: str | None) -> str | None:
    """Why a run stopped whose flow run was ended ``Crashed`` (``message``) by someone else
    while it ran, when that was a resume with a ``repo`` (``_crash_message``), which took the
    session over: it names the host. ``None`` for any other message."""
    found = _TAKEN_OVER.search(message or "")
    if found is None:
        return None
    return (
        f"session {found.group(1)} was taken over by a resume on {found.group(2)}; this run stopped"
    )


def _suspended(state) -> bool:
    """Paused with no process waiting (``suspend_flow_run``): Prefect runs it again once resumed."""
    return state.is_paused() and bool(state.state_details.pause_reschedule)
