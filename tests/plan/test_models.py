"""The plan models: statuses with reasons, unknown fields refused, priorities ordered."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aca_flows.plan import ExecutionPlan, Priority, Task, TaskStatus


def test_status_accepts_a_bare_name_and_requires_reasons_where_due():
    assert Task(id="a", title="A", status="completed").status.state == "completed"
    assert str(TaskStatus(state="failed", reason="verify failed")) == "failed: verify failed"
    with pytest.raises(ValidationError, match="needs a reason"):
        TaskStatus(state="skipped")
    with pytest.raises(ValidationError, match="takes no reason"):
        TaskStatus(state="pending", reason="why")


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError, match="depends"):
        Task.model_validate({"id": "a", "title": "A", "depends": ["b"]})


def test_ids_must_be_safe_for_branches_and_files():
    with pytest.raises(ValidationError):
        Task(id="../etc", title="x")
    with pytest.raises(ValidationError):
        Task(id="has space", title="x")


def test_priority_rank_orders_ready_tasks():
    ranked = sorted(Priority, key=lambda p: p.rank, reverse=True)
    assert [p.value for p in ranked] == ["critical", "high", "normal", "low"]


def test_a_task_takes_depends_on_as_task_files_do_and_dumps_dependencies():
    task = Task(id="b", title="write b.txt", depends_on=["a"])
    assert task.dependencies == ["a"]
    assert task.model_dump()["dependencies"] == ["a"] and "depends_on" not in task.model_dump()
    assert "dependencies" in ExecutionPlan.model_json_schema()["$defs"]["Task"]["properties"]
