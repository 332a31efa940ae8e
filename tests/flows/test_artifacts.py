"""What the Prefect UI shows after a failed run matches the session: task run states (skips end
``Completed`` named ``Skipped``, never NotReady), one report per task saying why it failed or
was skipped, the progress and plan artifacts, and failures logged above INFO."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    ArtifactFilterTaskRunId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterName,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterTags,
)
from prefect.client.schemas.objects import Artifact, StateType
from prefect.logging.handlers import APILogHandler

from aca_flows.flows import run_flow
from aca_flows.session.layout import AcaDir
from aca_flows.session.reading import load_session
from tests.fakes.coding_agent import coding_agent, task_of
from tests.fakes.llm_server import Reply


def agent(request) -> Reply:
    """The coding agent, except that every call for task ``e`` is refused (a permanent error)."""
    if task_of(request)[0] == "e":
        return Reply(status=400, error="prompt is too long for this model")
    return coding_agent(request)


async def read_prefect(name: str, session_id: str):
    """The session's flow run (named after ``name``), its task runs and their logs (also
    those in its groups' subflow runs), its artifacts' latest versions by key, and each
    task's report (its task run's artifact, which has no key) by task id."""
    await APILogHandler.aflush()
    async with get_client() as client:
        (flow_run,) = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name))
        )
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"session:{session_id}"]))
        )
        of_runs = FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs]))
        subflows = {r.parent_task_run_id for r in runs}
        task_runs = [
            r for r in await client.read_task_runs(flow_run_filter=of_runs) if r.id not in subflows
        ]
        latest = await client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=f"%{session_id.lower()}%"))
        )
        ids = [r.id for r in runs]
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        reports = await task_reports(client, task_runs)
    return flow_run, task_runs, {a.key: a for a in latest}, logs, reports


def reports_of(session_id: str) -> dict[str, Artifact]:
    """Each task's report in the session, by task id."""

    async def read() -> dict[str, Artifact]:
        async with get_client() as client:
            tagged = TaskRunFilterTags(all_=[f"session:{session_id}"])
            runs = await client.read_task_runs(task_run_filter=TaskRunFilter(tags=tagged))
            return await task_reports(client, runs)

    return asyncio.run(read())


async def task_reports(client, task_runs) -> dict[str, Artifact]:
    """Each task's report, by task id: the artifact on its task run (named "<id> ...")."""
    task_ids = {r.id: r.name.split(" ", 1)[0] for r in task_runs}
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(task_run_id=ArtifactFilterTaskRunId(any_=list(task_ids)))
    )
    return {task_ids[a.task_run_id]: a for a in sorted(artifacts, key=lambda a: a.created)}


def test_after_a_failed_run_prefect_shows_what_the_session_holds(tmp_path, repo, anthropic_fake):
    for _ in range(30):
        anthropic_fake.anthropic.enqueue(agent)
    name = f"Failing {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# {name}\n\n"
        '- write a.txt {#a verify="echo checking a.txt; echo no such check >&2; false"}\n'
        "- write b.txt {#b depends_on=a}\n"
        "- write c.txt {#c depends_on=b}\n"
        "- write d.txt {#d}\n"
        "- write e.txt {#e}\n"
    )
    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")
    summary = outcome.summary
    session = load_session(repo, summary["session_id"])
    status = {t.id: str(t.status) for t in session.plan.tasks}
    assert summary["counts"] == session.task_counts == {"completed": 1, "failed": 2, "skipped": 2}
    assert status["b"] == "skipped: dependency `a` failed"
    assert status["c"] == "skipped: dependency `b` was skipped"

    flow_run, task_runs, artifacts, logs, reports = asyncio.run(read_prefect(name, session.id))
    assert flow_run.state.type == StateType.FAILED

    # Task runs: every one ended; the skipped ones are Completed named Skipped, with the reason.
    runs = {r.name.split(" ")[0]: r for r in task_runs}
    assert set(runs) == {"a", "b", "c", "d", "e"}
    assert {k: (r.state.type, r.state.name) for k, r in runs.items()} == {
        "a": (StateType.FAILED, "Failed"),
        "b": (StateType.COMPLETED, "Skipped"),
        "c": (StateType.COMPLETED, "Skipped"),
        "d": (StateType.COMPLETED, "Completed"),
        "e": (StateType.FAILED, "Failed"),
    }
    assert runs["b"].state.message == "skipped: dependency `a` failed"
    assert runs["c"].state.message == "skipped: dependency `b` was skipped"
    # The run graph still draws the edges to the skipped task runs.
    assert [i.id for i in runs["b"].task_inputs["wait_for"]] == [runs["a"].id]
    assert [i.id for i in runs["c"].task_inputs["wait_for"]] == [runs["b"].id]

    # One report per task, on its own task run's page, agreeing with the session.
    sid = session.id.lower()
    assert set(reports) == set(runs)
    for task_id, report in reports.items():
        assert report.task_run_id == runs[task_id].id
        first_status = status[task_id].splitlines()[0].removesuffix(" Output:")
        assert f"**Status:** {first_status}" in report.data
        assert f"**Attempts:** {session.tasks[task_id].attempts}\n" in report.data
        assert not any(line.rstrip().endswith("Output:") for line in report.data.splitlines())
    a_report = reports["a"].data
    assert "## Why it failed" in a_report
    assert "Verify command `echo checking a.txt; echo no such check >&2; false`" in a_report
    assert "checking a.txt" in a_report and "no such check" in a_report
    assert "## The agent's last message" in a_report and "## Summary" not in a_report
    assert "prompt is too long for this model" in reports["e"].data
    assert "skipped: dependency `a` failed" in reports["b"].data
    assert f"${session.tasks['d'].cost_usd:.4f}" in reports["d"].data

    # Progress: the share completed, each kind of end counted on its own.
    progress = artifacts[f"aca-progress-{sid}"]
    assert progress.data == 20.0
    assert progress.description == "Tasks completed: 1 completed, 2 failed, 2 skipped of 5"
    # The plan table's latest version holds the final states.
    table = json.loads(artifacts[f"aca-plan-{sid}"].data)
    assert {row["id"]: row["status"] for row in table} == status

    # Failures stand out: a failed verify is a warning, a failed task an error.
    levels = {(log.level, log.task_run_id) for log in logs}
    verify_warnings = [
        log for log in logs if log.level == logging.WARNING and log.message.startswith("verify ")
    ]
    assert verify_warnings and all(log.task_run_id == runs["a"].id for log in verify_warnings)
    errors = [log.message for log in logs if log.level == logging.ERROR]
    assert any(m.startswith("a failed: verify command") for m in errors)
    assert any(m.startswith("e failed: ") for m in errors)
    assert not any(log.message.rstrip().endswith("Output:") for log in logs)
    assert (logging.INFO, runs["d"].id) in levels


def test_proposed_subtasks_get_reports_and_rows_that_match_the_session(
    tmp_path, repo, anthropic_fake
):
    for _ in range(30):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"Split {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    # The subtasks inherit the verify command: base.one writes one.txt, so it fails.
    tasks.write_text(
        f'# {name}\n\n- write base.txt {{#base verify="test ! -f one.txt"}}\n  propose: one, two\n'
    )
    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")
    session = load_session(repo, outcome.summary["session_id"])
    status = {t.id: str(t.status) for t in session.plan.tasks}
    # base's own work landed, but it completes only when its subtasks have: it fails with one.
    assert status["base"].startswith("failed") and status["base.two"] == "completed"
    assert status["base.one"].startswith("failed: verify command `test ! -f one.txt`")
    assert outcome.state_name == "Failed" and outcome.summary["failed_ids"] == ["base.one"]

    _, task_runs, artifacts, _, reports = asyncio.run(read_prefect(name, session.id))
    sid = session.id.lower()
    assert {r.name.split(" ")[0] for r in task_runs} == {"base", "base.one", "base.two"}
    for task_id in ("base", "base.one", "base.two"):
        report = reports[task_id].data
        assert f"**Status:** {status[task_id].splitlines()[0].removesuffix(' Output:')}" in report
    table = json.loads(artifacts[f"aca-plan-{sid}"].data)
    assert {row["id"]: row["status"] for row in table} == status


def test_names_tags_log_lines_and_reports_read_as_a_person_would(tmp_path, repo, anthropic_fake):
    """Item 6 of issue 15, read back through the API: a flow run named after the plan and the
    session, tags on flow and task runs, log lines in words, titles with ``<angle>`` brackets
    kept, the tree as a nested list, and a run form that describes every parameter."""
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"Tidy <name> {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# {name}\n\n"
        "## group {#g}\n"
        "- write a.txt {#a}\n"
        '- write b.txt {#b depends_on=a verify="echo no; false"}\n'
    )
    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-sonnet-4-5")
    session_id = outcome.summary["session_id"]

    flow_run, task_runs, artifacts, logs, reports = asyncio.run(read_prefect(name, session_id))
    # Two runs of one file differ, and each names its session, from the run's first log
    # line on (the terminal shows the same lines).
    assert flow_run.name == f"{name} · {session_id}"
    tags = {"aca", f"session:{session_id}", "provider:anthropic"}
    assert tags <= set(flow_run.tags)
    assert {r.name for r in task_runs} == {"a write a.txt", "b write b.txt"}
    assert all(tags <= set(r.tags) for r in task_runs)

    # Log lines for a person; the JSON stays in the task log. Lines that come together are
    # one entry of several lines.
    messages = [line for log in logs for line in log.message.splitlines()]
    assert f"Beginning flow run '{name} · {session_id}' for flow" in " ".join(messages)
    (turn,) = [m for m in messages if m.startswith("a: turn 1, ")]
    assert re.fullmatch(r"a: turn 1, claude-sonnet-4-5, 100 in / 20 out, \$0\.\d{4}: \w+", turn)
    assert turn.endswith(": write_file")
    assert "write_file a.txt (6 chars)" in messages
    assert "-> wrote 6 characters to a.txt" in messages
    assert "verify failed (exit 1): echo no; false" in messages
    assert not any(m.startswith(("turn {", "tool_call {", "verify {")) for m in messages)
    task_log = AcaDir(repo).session(session_id).task_log("a").read_text().splitlines()
    assert any(json.loads(line)["kind"] == "turn" for line in task_log)

    # Titles keep their <angle> brackets: escaped, not swallowed as HTML.
    sid = session_id.lower()
    tree = artifacts[f"aca-tree-{sid}"].data
    assert "&lt;name&gt;" in tree and "<name>" not in tree
    assert "```mermaid" not in tree
    # Its latest version: every task's final state, children under their group.
    assert "- `g` group — *failed*\n  - `a` write a.txt — *completed*\n" in tree
    assert "  - `b` write b.txt — *failed*; after `a`" in tree
    summary = artifacts[f"aca-summary-{sid}"].data
    assert "# Session summary: Tidy &lt;name&gt;" in summary
    report = reports["b"].data
    assert "**Verify:** `echo no; false` → failed" in report


def test_the_run_form_describes_every_parameter():
    from aca_flows.flows.aca_run import aca_run

    properties = aca_run.parameters.properties
    assert set(properties) >= {"task_file", "workdir", "provider", "budget_usd", "session_id"}
    undescribed = [p for p, schema in properties.items() if not schema.get("description")]
    assert undescribed == []
    assert properties["workdir"]["description"].startswith("The git repository worked on")
