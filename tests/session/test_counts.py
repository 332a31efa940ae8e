"""Every view of a session counts its tasks as the run's ending line does: the tasks that run,
not the groups that fail with them (docs/engine.md, "How tasks are counted"). A session whose
group ``g`` failed with its subtask ``g.a`` (``g.b`` skipped for it), beside ``c`` that
completed."""

from __future__ import annotations

import json

import pytest

from aca_flows.cli import main
from aca_flows.flows import events
from aca_flows.flows.summary import failure_reason
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.checkpoints import create_checkpoint
from aca_flows.session.events import TaskResult
from aca_flows.session.layout import AcaDir
from aca_flows.session.store import SessionStore

REASON = "1 task failed: g.a; 1 skipped"
COUNTS = {"completed": 1, "failed": 1, "skipped": 1}
TASKS_LINE = "1 completed, 1 failed, 1 skipped of 3"


@pytest.fixture
def store(tmp_path):
    plan = ExecutionPlan(
        name="p",
        tasks=[
            Task(id="g", title="a group", children=["g.a", "g.b"]),
            Task(id="g.a", title="write a", parent_id="g"),
            Task(id="g.b", title="write b", parent_id="g", dependencies=["g.a"]),
            Task(id="c", title="write c"),
        ],
    )
    with SessionStore.create(tmp_path, plan, provider="replay") as store:
        store.task_started("c")
        store.task_completed("c", TaskResult(commit="abc"))
        store.task_started("g.a")
        store.task_failed("g.a", "verify failed")
        store.task_skipped("g.b", "dependency `g.a` failed")
        store.task_failed("g", "subtask `g.a` failed")  # a group fails with its subtask
        store.finish("failed", failure_reason(store.session.plan.tasks))
        yield store


def test_the_session_counts_the_tasks_that_run_as_the_ending_line_does(store):
    session = store.session
    assert session.status_reason == REASON
    assert session.task_counts == COUNTS
    assert (session.tasks_done, session.tasks_total) == (1, 3)


def test_sessions_show_and_list_count_as_the_ending_line(store, tmp_path, capsys):
    assert main(["sessions", "show", store.session_id, "--workdir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert f"failed ({REASON})" in shown
    assert f"tasks           {TASKS_LINE}\n" in shown

    assert main(["sessions", "list", "--workdir", str(tmp_path)]) == 0
    assert TASKS_LINE in capsys.readouterr().out
    assert main(["sessions", "list", "--workdir", str(tmp_path), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["sessions"]
    assert listed["task_counts"] == COUNTS
    assert (listed["tasks_done"], listed["tasks_total"]) == (1, 3)


def test_a_checkpoint_counts_as_the_ending_line(store):
    checkpoint = create_checkpoint(store, "end")
    assert (checkpoint.tasks_done, checkpoint.tasks_total) == (1, 3)
    assert checkpoint.description == f"end of run (failed): {TASKS_LINE}"


def test_the_session_event_counts_as_the_ending_line(store, monkeypatch):
    sent = []
    monkeypatch.setattr(events, "_emit", lambda *args: sent.append(args))
    events.emit_session_event(store, "failed", REASON)
    ((name, _, _, payload),) = sent
    assert name == "aca.session.failed" and payload["counts"] == COUNTS


def test_the_live_view_counts_as_the_ending_line(store, tmp_path):
    from rich.console import Console

    from aca_flows.cli.live import render

    console = Console(width=200, record=True)
    console.print(render(store.session, AcaDir(tmp_path)))
    header = console.export_text().splitlines()[0]
    assert "0 running  1 failed  1 skipped  of 3 " in header
