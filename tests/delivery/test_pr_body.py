"""The pull request's body, written from a session record."""

from __future__ import annotations

from aca_flows.delivery.pr_body import pull_request_body
from aca_flows.plan.models import ExecutionPlan, Task, TaskStatus
from aca_flows.session.store import SessionStore


def test_the_verify_column_names_the_command_that_ran_and_none_for_a_blank_one(tmp_path):
    tasks = [
        Task(id="a", title="A", description="d", verify=" pytest -q "),
        Task(id="b", title="B", description="d", verify="   "),  # blank: nothing ran
        Task(id="c", title="C", description="d"),  # the plan's default
    ]
    plan = ExecutionPlan(name="p", tasks=tasks, verify="ruff check")
    with SessionStore.create(tmp_path, plan, provider="replay") as store:
        body = pull_request_body(store.session)
    rows = {line.split("`")[1]: line for line in body.splitlines() if line.startswith("| `")}
    assert "| `pytest -q` |" in rows["a"]
    assert "| none |" in rows["b"]
    assert "| `ruff check` |" in rows["c"]


def test_a_task_marked_done_in_the_task_file_is_not_shown_as_changed(tmp_path):
    done = TaskStatus(state="completed")  # as `- [x]` or `done = true` loads it
    tasks = [Task(id="a", title="A", status=done), Task(id="b", title="B")]
    plan = ExecutionPlan(name="p", tasks=tasks)
    with SessionStore.create(tmp_path, plan, provider="replay") as store:
        body = pull_request_body(store.session)
    row = next(line for line in body.splitlines() if line.startswith("| `a`"))
    assert "| done before |" in row and "changed" not in row
