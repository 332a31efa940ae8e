"""Proposed subtasks: parsed, validated, and added to the plan as children."""

from __future__ import annotations

import pytest

from aca_flows.agent.subtasks import (
    ProposedSubtask,
    SubtaskProposalError,
    accept_subtasks,
    parse_subtask_block,
)
from aca_flows.plan.models import ExecutionPlan, Task


def plan() -> ExecutionPlan:
    return ExecutionPlan(
        name="p",
        tasks=[Task(id="setup", title="Setup"), Task(id="api", title="API", verify="make")],
    )


def test_the_block_in_a_final_answer_is_parsed():
    text = (
        "Did the models.\n```aca-subtasks\n"
        '[{"id": "routes", "title": "Routes"}, '
        '{"id": "docs", "title": "Docs", "dependencies": ["routes"]}]\n```\n'
    )
    assert [p.id for p in parse_subtask_block(text)] == ["routes", "docs"]
    assert parse_subtask_block("no block here") == []


def test_a_malformed_block_is_an_error_naming_the_problem():
    with pytest.raises(SubtaskProposalError, match="not JSON"):
        parse_subtask_block("```aca-subtasks\n[oops\n```")
    with pytest.raises(SubtaskProposalError, match="title"):
        parse_subtask_block('```aca-subtasks\n[{"id": "x"}]\n```')
    # A title of spaces is the agent's to correct, not a Task the plan cannot make.
    with pytest.raises(SubtaskProposalError, match="title: Value error, the title is only"):
        parse_subtask_block('```aca-subtasks\n[{"id": "x", "title": "  "}]\n```')
    # A NUL no commit or command takes: the proposal is refused, never a Task raising later
    # (past the parent's landed work, before it was recorded).
    with pytest.raises(SubtaskProposalError, match="verify: Value error, it holds a NUL"):
        parse_subtask_block('```aca-subtasks\n[{"id": "x", "title": "X", "verify": "\\u0000"}]```')


def test_accepted_subtasks_become_children_with_mapped_dependencies():
    p = plan()
    children = accept_subtasks(
        p,
        "api",
        [
            ProposedSubtask(id="routes", title="Routes", dependencies=["setup"]),
            ProposedSubtask(id="docs", title="Docs", dependencies=["routes"], verify="mkdocs"),
        ],
    )
    assert [c.id for c in children] == ["api.routes", "api.docs"]
    assert p.task("api").children == ["api.routes", "api.docs"]
    assert p.task("api.routes").parent_id == "api"
    assert p.task("api.routes").dependencies == ["setup"]
    assert p.task("api.docs").dependencies == ["api.routes"]
    assert p.task("api.routes").verify == "make" and p.task("api.docs").verify == "mkdocs"
    again = accept_subtasks(p, "api", [ProposedSubtask(id="routes", title="Routes")])
    assert [c.id for c in again] == ["api.routes"] and len(p.tasks) == 4


@pytest.mark.parametrize(
    ("proposals", "problem"),
    [
        ([("a", []), ("a", [])], "duplicate"),
        ([("a", ["nowhere"])], "unknown task 'nowhere'"),
        ([("a", ["b"]), ("b", ["a"])], "cycle"),
        ([("a", ["a"])], "itself"),
    ],
)
def test_inconsistent_proposals_are_refused_and_the_plan_unchanged(proposals, problem):
    p = plan()
    with pytest.raises(SubtaskProposalError, match=problem):
        accept_subtasks(
            p, "api", [ProposedSubtask(id=i, title=i, dependencies=d) for i, d in proposals]
        )
    assert len(p.tasks) == 2 and p.task("api").children == []


@pytest.mark.parametrize(
    ("dependency", "strategy"),
    [
        ("api", "intelligent"),  # its own parent: the parent finishes only after it
        ("release", "intelligent"),  # a task that waits for the parent
        ("later", "sequential"),  # a task that runs after it, one at a time
    ],
)
def test_proposals_that_would_stall_are_refused_with_the_reason(dependency, strategy):
    p = ExecutionPlan(
        name="p",
        strategy=strategy,
        tasks=[
            Task(id="api", title="API", status="in_progress"),
            Task(id="release", title="Release", dependencies=["api"]),
            Task(id="later", title="Later"),
        ],
    )
    with pytest.raises(SubtaskProposalError) as refused:
        accept_subtasks(p, "api", [ProposedSubtask(id="x", title="X", dependencies=[dependency])])
    message = str(refused.value)
    assert "api.x" in message and dependency in message
    assert "can never start" in message or "comes after it" in message
    assert [t.id for t in p.tasks] == ["api", "release", "later"]
    assert p.task("api").children == []
