"""The Python API (docs/python-api.md): a user's own flow calls ``aca_run`` as a subflow with a
plan built in code or given as text, and reads a ``RunSummary``. Real Prefect (the test
harness), real git, the fake Anthropic server."""

from __future__ import annotations

import asyncio
import subprocess

import git
import pytest
from prefect import flow
from prefect.client.orchestration import get_client

from aca_flows import Plan, RunSummary, Task, aca_run
from tests.fakes.coding_agent import coding_agent

PRICED = "claude-sonnet-4-6"  # $3 in / $15 out per million tokens


def branch_files(repo, branch: str) -> dict[str, str]:
    tree = git.Repo(repo).commit(branch).tree
    return {b.path: b.data_stream.read().decode() for b in tree.traverse() if b.type == "blob"}


def commit_of(repo, branch: str, task_id: str) -> str:
    """The sha of the session branch's commit for ``task_id`` (its ``Aca-Task:`` trailer)."""
    return git.Repo(repo).git.log(branch, "--format=%H", f"--grep=Aca-Task: {task_id}").strip()


async def parent_of(flow_run_id) -> str | None:
    """The flow run that started this one as a subflow, if one did."""
    async with get_client() as client:
        child = await client.read_flow_run(flow_run_id)
        if child.parent_task_run_id is None:
            return None
        return str((await client.read_task_run(child.parent_task_run_id)).flow_run_id)


def test_a_users_flow_runs_a_plan_built_in_code_and_reads_the_summary(repo, anthropic_fake):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)

    @flow
    async def nightly_fix(workdir: str) -> dict:
        # The user's tests: they fail while b.txt is missing.
        tests = subprocess.run(["test", "-f", "b.txt"], cwd=workdir)
        assert tests.returncode != 0
        plan = Plan(
            name="fix the tests",
            tasks=[
                Task(id="a", title="write a.txt", description="the base"),
                Task(id="b", title="write b.txt", depends_on=["a"], verify="test -f a.txt"),
            ],
        )
        state = await aca_run(plan=plan, workdir=workdir, model=PRICED, return_state=True)
        summary = await state.aresult()
        return {"summary": summary, "child": state.state_details.flow_run_id}

    result = asyncio.run(nightly_fix(str(repo)))
    summary = result["summary"]

    assert isinstance(summary, RunSummary)
    assert summary.status == "completed" and summary.counts == {"completed": 2}
    assert branch_files(repo, summary.branch) == {
        "README.md": "demo\n", "a.txt": "a.txt\n", "b.txt": "b.txt\n"
    }  # fmt: skip
    assert summary.tasks["a"].state == "completed"
    assert summary.commits == {
        "a": commit_of(repo, summary.branch, "a"),
        "b": commit_of(repo, summary.branch, "b"),
    }
    # Two calls a task (write, finish), each 100 tokens in, 20 out: $0.0006 at $3/$15 per M.
    assert summary.tasks["b"].cost_usd == pytest.approx(0.0012)
    assert summary.cost_usd == pytest.approx(0.0024)
    # aca ran as a subflow: its flow run is a child of the user's flow run.
    assert asyncio.run(parent_of(result["child"])) is not None
    # The user's checkout is untouched; the work is on the session branch.
    assert git.Repo(repo).active_branch.name == "main" and not (repo / "a.txt").exists()


TOML_PLAN = """\
[plan]
name = "from toml"

[[tasks]]
id = "a"
title = "write a.txt"

[[tasks]]
id = "b"
title = "write b.txt"
depends_on = ["a"]
"""

MARKDOWN_PLAN = """\
# From markdown

- write a.txt {#a}
- write b.txt {#b depends_on=a}
"""


def test_plan_text_in_toml_and_in_markdown_and_a_task_file_run_from_a_users_flow(
    tmp_path, repo, anthropic_fake
):
    for _ in range(30):
        anthropic_fake.anthropic.enqueue(coding_agent)
    task_file = tmp_path / "tasks.md"
    task_file.write_text(MARKDOWN_PLAN)

    @flow
    async def caller(workdir: str, given: dict) -> RunSummary:
        return await aca_run(workdir=workdir, model="claude-test", **given)

    for given in (
        {"plan_text": TOML_PLAN},
        {"plan_text": MARKDOWN_PLAN},
        {"task_file": str(task_file)},
    ):
        summary = asyncio.run(caller(str(repo), given))
        assert isinstance(summary, RunSummary)
        assert summary.status == "completed", summary.stopped_reason
        assert list(summary.tasks) == ["a", "b"]
        assert set(summary.commits) == {"a", "b"}
        assert branch_files(repo, summary.branch)["b.txt"] == "b.txt\n"


def test_a_failed_task_fails_the_subflow_and_its_summary_is_readable(repo, anthropic_fake):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    plan = Plan(
        name="one fails",
        tasks=[
            Task(id="bad", title="write bad.txt", verify="false"),
            Task(id="after", title="write after.txt", depends_on=["bad"]),
            Task(id="good", title="write good.txt"),
        ],
    )

    @flow
    async def caller(workdir: str) -> dict:
        state = await aca_run(plan=plan, workdir=workdir, model="claude-test", return_state=True)
        # The user's flow goes on: it decides what a failed fix means.
        return {
            "failed": state.is_failed(),
            "summary": await state.aresult(raise_on_failure=False),
            "child": state.state_details.flow_run_id,
        }

    result = asyncio.run(caller(str(repo)))

    assert result["failed"]
    summary = result["summary"]
    assert isinstance(summary, RunSummary)
    assert summary.status == "failed" and summary.failed_ids == ["bad"]
    assert summary.tasks["bad"].state == "failed"
    assert "verify command `false`" in summary.tasks["bad"].reason
    assert summary.tasks["after"].state == "skipped" and summary.tasks["after"].commit is None
    assert summary.commits == {"good": commit_of(repo, summary.branch, "good")}

    # Another process reads the same summary from the server and result storage.
    async def from_server():
        async with get_client() as client:
            state = (await client.read_flow_run(result["child"])).state
        return state, await state.aresult(raise_on_failure=False)

    state, stored = asyncio.run(from_server())
    assert state.is_failed() and state.message == "1 task failed: bad; 1 skipped"
    assert stored == summary


def test_a_bad_plan_fails_the_subflow_with_every_problem_before_any_call(repo, anthropic_fake):
    plan = Plan(
        name="bad",
        tasks=[
            Task(id="a", title="write a.txt", depends_on=["nope"]),
            Task(id="b", title="write b.txt", depends_on=["b"]),
        ],
    )

    @flow
    async def caller(workdir: str, **given) -> list:
        state = await aca_run(workdir=workdir, return_state=True, **given)
        return [state.is_failed(), state.message]

    failed, message = asyncio.run(caller(str(repo), plan=plan))
    assert failed
    assert "task 'a' depends on unknown task 'nope'" in message
    assert "task 'b' depends on itself" in message
    assert message.endswith("Fix these in the plan you passed and run again.")  # no task file
    # Two plans at once are refused, naming them.
    failed, message = asyncio.run(caller(str(repo), plan=plan, plan_text="- write a.txt\n"))
    assert failed and "give one plan, not plan_text and plan" in message
    assert anthropic_fake.anthropic.requests == []
    assert not (repo / ".aca" / "sessions").exists()
