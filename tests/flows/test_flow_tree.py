"""The task tree as flows (aca_flows/flows/flow_tree.py): a plan's run belongs to a flow named
after the plan, and each group of its tree is a subflow run holding its children's task runs.
Real Prefect (the test harness), real git, the fake Anthropic server; the runs are read back
through Prefect's API."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import git
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentTaskRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

from aca_flows import aca_run
from aca_flows.flows import run_flow
from aca_flows.flows.flow_tree import GROUP_FLOW_NAME, plan_flow_name
from tests.fakes.coding_agent import coding_agent


def two_groups(tmp_path: Path, flag: Path | None = None) -> tuple[Path, str]:
    """A task file with two groups; ``ui`` (in Frontend) depends on ``api`` (in Backend) and
    verifies that api's work is in its worktree. Its plan's name is new to the server."""
    name = f"Two groups {uuid.uuid4().hex[:6]}"
    db_verify = f' verify="test -f {flag}"' if flag else ""
    path = tmp_path / "tasks.md"
    path.write_text(
        f"# {name}\n\n"
        "## Backend {#backend}\n\n"
        "- write api.txt {#api}\n"
        f"- write db.txt {{#db{db_verify}}}\n\n"
        "## Frontend {#frontend}\n\n"
        '- write ui.txt {#ui depends_on=api verify="test -f api.txt"}\n'
    )
    return path, name


class Runs:
    """A flow run and what it holds, as the Prefect API returns them."""

    def __init__(self, flow_run, flow_name: str, task_runs: list, children: list[Runs]):
        self.flow_run = flow_run
        self.flow_name = flow_name
        own = [r for r in task_runs if r.id not in _parents(children)]
        self.task_runs = sorted(r.name for r in own)
        self.states = {r.name: (r.state.name, r.state.message) for r in own}
        self.children = children

    def child(self, run_name: str) -> Runs:
        (found,) = [c for c in self.children if c.flow_run.name == run_name]
        return found


def _parents(children: list[Runs]) -> set:
    return {c.flow_run.parent_task_run_id for c in children}


async def _read(client, flow_run) -> Runs:
    flow_name = (await client.read_flow(flow_run.flow_id)).name
    task_runs = await client.read_task_runs(
        task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run.id]))
    )
    subflows = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[r.id for r in task_runs])
        )
    )
    children = [await _read(client, sub) for sub in subflows]
    return Runs(flow_run, flow_name, task_runs, children)


def runs_of_session(session_id: str) -> Runs:
    """The session's top flow run (the one without a parent), read down its subflows."""

    async def read():
        (top,) = await _session_top_runs(session_id)
        async with get_client() as client:
            return await _read(client, top)

    return asyncio.run(read())


def runs_under(flow_run_id) -> Runs:
    async def read():
        async with get_client() as client:
            (found,) = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            return await _read(client, found)

    return asyncio.run(read())


def test_a_plan_with_two_groups_is_a_flow_named_after_it_with_a_subflow_run_per_group(
    tmp_path, repo, anthropic_fake
):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks, name = two_groups(tmp_path)

    summary = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary

    assert summary["status"] == "completed", summary["stopped_reason"]
    session_id = summary["session_id"]
    top = runs_of_session(session_id)
    # The command's flow run is the plan's: its flow is named after the plan, its run after
    # the plan and the session; no extra flow run between them.
    assert top.flow_name == plan_flow_name(name) == name.lower().replace(" ", "-")
    assert top.flow_run.name == f"{name} · {session_id}"
    assert top.task_runs == []
    assert sorted(c.flow_run.name for c in top.children) == ["backend Backend", "frontend Frontend"]
    backend, frontend = top.child("backend Backend"), top.child("frontend Frontend")
    assert {backend.flow_name, frontend.flow_name} == {GROUP_FLOW_NAME}
    assert backend.task_runs == ["api write api.txt", "db write db.txt"]
    assert frontend.task_runs == ["ui write ui.txt"]
    assert backend.flow_run.state.is_completed() and frontend.flow_run.state.is_completed()
    assert {"aca", f"session:{session_id}"} <= set(backend.flow_run.tags)
    # ui depends on api across the groups: it started on a head holding api's commit (its
    # verify looked for api.txt) and landed after it.
    files = git.Repo(repo).commit(summary["branch"]).tree
    assert {"api.txt", "db.txt", "ui.txt"} <= {b.path for b in files.traverse()}
    order = git.Repo(repo).git.log(
        "--reverse", "--format=%(trailers:key=Aca-Task,valueonly)", summary["branch"]
    )
    landed = [line.strip() for line in order.splitlines() if line.strip()]
    assert landed.index("api") < landed.index("ui")


@pytest.mark.timeout(120)  # the bug hung the run for good: fail instead of waiting
def test_a_group_inside_a_group_gets_one_subflow_run_and_the_run_ends(
    tmp_path, repo, anthropic_fake
):
    # The original aca's shape (numbered `###` phases under a `##` heading): the first two
    # tasks of the inner group are admitted together, before the outer group's run exists.
    # Both made a subflow run of the inner group; the one nobody ended kept the run open.
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"Nested {uuid.uuid4().hex[:6]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# {name}\n\n## Outer\n\n### Inner\n\n- write a.txt\n- write b.txt\n")

    summary = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary

    assert summary["status"] == "completed", summary["stopped_reason"]
    top = runs_of_session(summary["session_id"])
    (outer,) = top.children
    assert outer.flow_run.name == "outer Outer"
    (inner,) = outer.children
    assert inner.flow_run.name == "inner Inner" and inner.flow_run.state.is_completed()
    assert inner.task_runs == ["write-a-txt write a.txt", "write-b-txt write b.txt"]


def test_a_failed_task_fails_its_group_and_a_resume_completes_the_groups(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    for _ in range(40):
        anthropic_fake.anthropic.enqueue(coding_agent)
    flag = tmp_path / "environment" / "ready"
    flag.parent.mkdir()
    # Verify commands run sandboxed: a folder outside the repository is shown only on request.
    monkeypatch.setenv("ACA_SANDBOX__READ_ONLY_PATHS", str(flag.parent))
    tasks, _ = two_groups(tmp_path, flag=flag)

    first = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary

    # The group failed with db; db is the task that failed, counted once.
    assert first["status"] == "failed" and first["failed_ids"] == ["db"]
    assert first["tasks"]["backend"]["state"] == "failed"
    session_id = first["session_id"]
    top = runs_of_session(session_id)
    backend, frontend = top.child("backend Backend"), top.child("frontend Frontend")
    assert backend.flow_run.state.is_failed() and "db" in backend.flow_run.state.message
    assert frontend.flow_run.state.is_completed()
    assert top.flow_run.state.is_failed()

    flag.touch()  # the environment is fixed
    again = run_flow(workdir=str(repo), session_id=session_id).summary

    assert again["status"] == "completed" and again["counts"] == {"completed": 3}  # not groups
    assert again["tasks"]["backend"]["state"] == "completed"
    resumed = [r for r in asyncio.run(_session_top_runs(session_id)) if r.id != top.flow_run.id]
    (second,) = resumed
    second_runs = runs_under(second.id)
    # Only the task that had not landed runs again; the finished ones show as cache hits,
    # each in its group, naming the commit the resume reused.
    names = sorted(c.flow_run.name for c in second_runs.children)
    assert names == ["backend Backend", "frontend Frontend"]
    backend, frontend = second_runs.child("backend Backend"), second_runs.child("frontend Frontend")
    assert {name: state for name, (state, _) in backend.states.items()} == {
        "api write api.txt": "Cached",
        "db write db.txt": "Completed",
    }
    assert [state for state, _ in frontend.states.values()] == ["Cached"]
    (message,) = [message for state, message in frontend.states.values()]
    assert message.startswith(f"finished in an earlier run of session {session_id}: commit ")
    assert backend.flow_run.state.is_completed() and frontend.flow_run.state.is_completed()


def test_a_task_the_task_file_marks_done_shows_as_not_run_not_as_an_earlier_run(
    tmp_path, repo, anthropic_fake
):
    """The session's first run never ran it: no earlier run of the session may be claimed."""
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# Marked {uuid.uuid4().hex[:6]}\n\n- [x] done already {{#d}}\n- write a.txt\n"
    )

    summary = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary

    assert summary["status"] == "completed", summary["stopped_reason"]
    states = runs_of_session(summary["session_id"]).states
    assert states["d done already"] == (
        "Cached",
        "marked done in the plan the run was given; not run",
    )


async def _session_top_runs(session_id: str) -> list:
    async with get_client() as client:
        runs = await client.read_flow_runs()
    return [r for r in runs if f"session:{session_id}" in r.tags and r.parent_task_run_id is None]


def test_a_users_flow_runs_the_plan_as_a_subflow_named_after_it(tmp_path, repo, anthropic_fake):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks, name = two_groups(tmp_path)

    @flow
    async def caller(workdir: str) -> dict:
        state = await aca_run(task_file=str(tasks), workdir=workdir, model="claude-test",
                              max_concurrent=1, return_state=True)  # fmt: skip
        return {"summary": await state.aresult(), "run": state.state_details.flow_run_id}

    result = asyncio.run(caller(str(repo)))

    summary = result["summary"]
    assert summary.status == "completed"
    entry = runs_under(result["run"])
    # The entry flow is the static aca-run; the plan runs as one subflow run of the flow named
    # after it, which holds the groups.
    assert entry.flow_name == "aca-run" and entry.task_runs == []
    (plan_run,) = entry.children
    assert plan_run.flow_name == plan_flow_name(name)
    assert plan_run.flow_run.name == f"{name} · {summary.session_id}"
    assert plan_run.flow_run.state.is_completed()
    assert sorted(c.flow_run.name for c in plan_run.children) == [
        "backend Backend",
        "frontend Frontend",
    ]
    assert plan_run.child("frontend Frontend").task_runs == ["ui write ui.txt"]
