"""A Prefect retry of a flow run (the UI's Retry of a deployment run whose worker process was
killed) ends what its killed attempt left ``Running`` as ``Crashed``, before it starts a task.

The killed attempt is simulated on the server, as a SIGKILL leaves it: the flow run, a task
run under it, and a subflow run with a task run of its own, all ``Running`` and tagged with the
session; the worker then marked the flow run ``Crashed``, and the Retry set it
``AwaitingRetry``. The retry is Prefect's engine running that same flow run again, as a
worker's process does. The session is new on this disk: the attempt was killed before its
record reached it (a retry on another worker, with nothing pushed yet).
"""

from __future__ import annotations

import asyncio

from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterTags,
)
from prefect.flow_engine import run_flow_async
from prefect.states import AwaitingRetry, Crashed, Running

from aca_flows.flows.aca_run import aca_run
from tests.fakes.coding_agent import coding_agent

SESSION_ID = "20261203-180658-0aeaf1"
CRASHED = f"its process ended without finishing; session {SESSION_ID} resumed"


@task(name="a write a.txt")
def _earlier_task() -> None: ...


@flow(name="deployed-job")
def _earlier_subflow() -> None: ...


async def _killed_attempt(client, parameters: dict) -> tuple:
    """The flow run as the killed attempt left it, and the runs it left ``Running``."""
    tags = ["aca", f"session:{SESSION_ID}"]
    flow_run = await client.create_flow_run(aca_run, parameters=parameters, tags=tags)
    await client.set_flow_run_state(flow_run.id, Running(), force=True)

    async def running_task(flow_run_id, key: str, name: str = "a write a.txt"):
        return await client.create_task_run(
            _earlier_task, flow_run_id, key, name=name, extra_tags=tags, state=Running()
        )

    # A task run of the flow run itself (as in a plan's own flow run), and a subflow run (a
    # group's, through the task run Prefect makes for it) with one of its own.
    under_flow_run = await running_task(flow_run.id, "0")
    parent = await running_task(flow_run.id, "1", name="deployed-job")
    subflow = await client.create_flow_run(
        _earlier_subflow, tags=tags, parent_task_run_id=parent.id, state=Running()
    )
    under_subflow = await running_task(subflow.id, "0")
    # The worker saw its process die; the UI's Retry sent the flow run back to it.
    await client.set_flow_run_state(flow_run.id, Crashed(), force=True)
    await client.set_flow_run_state(flow_run.id, AwaitingRetry(), force=True)
    return flow_run, [under_flow_run.id, under_subflow.id], subflow.id


async def _session_runs(client) -> tuple[list, list]:
    tag = FlowRunFilterTags(all_=[f"session:{SESSION_ID}"])
    flow_runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=tag))
    task_tag = TaskRunFilterTags(all_=[f"session:{SESSION_ID}"])
    task_runs = await client.read_task_runs(task_run_filter=TaskRunFilter(tags=task_tag))
    return flow_runs, task_runs


def test_a_retried_flow_run_ends_the_runs_its_killed_attempt_left_running_crashed(
    tmp_path, repo, anthropic_fake
):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Deployed job\n\n- write a.txt {#a}\n")
    parameters = {
        "task_file": str(tasks),
        "workdir": str(repo),
        "model": "claude-test",
        "session_id": SESSION_ID,
    }

    async def retry() -> tuple:
        async with get_client() as client:
            flow_run, leftovers, earlier_subflow = await _killed_attempt(client, parameters)
            flow_run = await client.read_flow_run(flow_run.id)
            state = await run_flow_async(
                aca_run, flow_run=flow_run, parameters=parameters, return_type="state"
            )
            return state, flow_run.id, leftovers, earlier_subflow, *await _session_runs(client)

    state, flow_run_id, leftovers, earlier_subflow, flow_runs, task_runs = asyncio.run(retry())

    assert state.is_completed(), state
    flow_states = {r.id: r.state for r in flow_runs}
    assert flow_states[flow_run_id].is_completed()
    assert flow_states[earlier_subflow].is_crashed()
    assert flow_states[earlier_subflow].message == CRASHED
    task_states = {r.id: r.state for r in task_runs}
    for leftover in leftovers:
        assert task_states[leftover].is_crashed(), task_states[leftover]
        assert task_states[leftover].message == CRASHED
    assert not [s for s in task_states.values() if s.is_running()]
    # The retry ran the task again, in a new task run of its own, which completed.
    assert [
        r.state.type.value for r in task_runs if r.name.startswith("a ") and r.id not in leftovers
    ] == ["COMPLETED"]


def test_a_task_run_whose_task_landed_before_its_end_reached_the_server_ends_completed(
    tmp_path, repo, anthropic_fake
):
    """The server was lost (or the process killed) after ``a`` landed and before its task
    run's end reached the server: the resume ends that task run ``Completed``, naming the
    commit, not "ended without finishing"; ``b``'s, which did not finish, ends ``Crashed``."""
    from aca_flows.flows import run_flow
    from aca_flows.session.reading import load_session

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- write a.txt {#a}\n- write b.txt {#b verify="false"}\n')
    first = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
    sid = first["session_id"]
    commit = load_session(repo, sid).tasks["a"].commit

    async def left_running() -> list:
        tags = ["aca", f"session:{sid}"]
        async with get_client() as client:
            flow_run = await client.create_flow_run(_earlier_subflow, tags=tags, state=Running())
            return [
                (
                    await client.create_task_run(
                        _earlier_task, flow_run.id, key, name=name, extra_tags=tags, state=Running()
                    )
                ).id
                for key, name in (("0", "a write a.txt"), ("1", "b write b.txt"))
            ]

    landed, unfinished = asyncio.run(left_running())
    run_flow(workdir=str(repo), session_id=sid)

    async def states() -> dict:
        async with get_client() as client:
            return {i: (await client.read_task_run(i)).state for i in (landed, unfinished)}

    ended = asyncio.run(states())
    assert ended[landed].is_completed(), ended[landed]
    assert ended[landed].message == (
        f"finished (commit {commit[:10]}), but its end never reached the server: its process "
        "stopped first"
    )
    assert ended[unfinished].is_crashed()
    assert (
        ended[unfinished].message == f"its process ended without finishing; session {sid} resumed"
    )
