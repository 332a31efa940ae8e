"""One run, one count on every screen: the run's ending line, ``aca sessions show``, ``aca
sessions list``, the ``--json`` summary and the Prefect artifacts count the tasks that run,
never the groups that fail with them (docs/engine.md, "How tasks are counted"). Real Prefect
(the test harness), real git, the fake Anthropic server."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from aca_flows.cli import main
from tests.fakes.coding_agent import coding_agent
from tests.flows.test_run_ends import result_of

REASON = "1 task failed: greet; 2 skipped"
COUNTS = {"completed": 1, "failed": 1, "skipped": 2}
TASKS_LINE = "1 completed, 1 failed, 2 skipped of 4"


def plan_with_a_failing_group(tmp_path, name: str):
    """notes completes; greet, in the group "Greeting module", fails; tests (in the group)
    and readme (outside it) are skipped for it. Four tasks run; the group runs nothing."""
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# {name}\n\n"
        "- write notes.txt {#notes}\n"
        "- write README.md {#readme depends_on=greet}\n\n"
        "## Greeting module\n\n"
        '- write greet.py {#greet verify="false"}\n'
        "- write test_greet.py {#tests depends_on=greet}\n"
    )
    return tasks


def tasks_fact(out: str) -> str:
    """The "tasks" line of ``aca sessions show``'s facts."""
    (line,) = re.findall(r"^  tasks +(.+)$", out, flags=re.MULTILINE)
    return line.strip()


async def progress_description(session_id: str) -> str:
    async with get_client() as client:
        (progress,) = await client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"aca-progress-{session_id.lower()}"])
            )
        )
    return progress.description


def test_a_failed_subtask_is_counted_the_same_on_every_screen(
    tmp_path, repo, anthropic_fake, capsys
):
    for _ in range(40):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"Counts {uuid.uuid4().hex[:8]}"
    tasks = plan_with_a_failing_group(tmp_path, name)

    # The run's end, as the terminal shows it: the session, then the ending line.
    code = main(["run", str(tasks), "--workdir", str(repo), "--model", "claude-test"])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert f"Why: {REASON}. `aca resume" in out
    assert tasks_fact(out) == TASKS_LINE
    (session_id,) = re.findall(r"Session (\S+) failed", out)

    assert main(["sessions", "show", session_id, "--workdir", str(repo)]) == 0
    shown = capsys.readouterr().out
    assert tasks_fact(shown) == TASKS_LINE
    assert f"failed ({REASON})" in shown

    assert main(["sessions", "list", "--workdir", str(repo)]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if session_id in line]
    assert TASKS_LINE in row

    assert main(["sessions", "list", "--workdir", str(repo), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["sessions"]
    assert listed["task_counts"] == COUNTS
    assert (listed["tasks_done"], listed["tasks_total"]) == (1, 4)

    # The flow run: its state's message, its summary (what `--json` prints), its progress.
    state, summary = asyncio.run(result_of(name))
    assert state.message == REASON
    assert summary["counts"] == COUNTS
    assert (summary["failed"], summary["failed_ids"]) == (1, ["greet"])
    description = asyncio.run(progress_description(session_id))
    assert description == f"Tasks completed: {TASKS_LINE}"

    # Resumed with --json, greet fails again: the summary printed counts the same way.
    code = main(["resume", session_id, "--workdir", str(repo), "--json"])
    out, err = capsys.readouterr()
    assert code == 1, err
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["stopped_reason"] == REASON
    assert printed["counts"] == COUNTS
    assert (printed["failed"], printed["failed_ids"]) == (1, ["greet"])
