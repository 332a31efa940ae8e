"""DagProgress: what may run now, in which order, and what a failure skips."""

from __future__ import annotations

from aca_flows.plan import ExecutionPlan, Task
from aca_flows.plan.dag import DagProgress


def plan_of(*tasks: Task, strategy: str = "intelligent") -> ExecutionPlan:
    return ExecutionPlan(name="p", strategy=strategy, tasks=list(tasks))


def ids(tasks) -> list[str]:
    return [t.id for t in tasks]


def test_dependencies_gate_and_priority_orders_ready_tasks():
    dag = DagProgress(
        plan_of(
            Task(id="a", title="A"),
            Task(id="b", title="B", metadata={"priority": "critical"}),
            Task(id="c", title="C", dependencies=["a"]),
            Task(id="d", title="D", metadata={"priority": "low"}),
        )
    )
    assert ids(dag.ready()) == ["b", "a", "d"]
    dag.start("a")
    assert ids(dag.ready()) == ["b", "d"]
    dag.complete("a")
    assert ids(dag.ready()) == ["b", "c", "d"]


def test_groups_do_no_work_and_complete_with_their_children():
    dag = DagProgress(
        plan_of(
            Task(id="g", title="G", children=["x", "y"]),
            Task(id="x", title="X", parent_id="g"),
            Task(id="y", title="Y", parent_id="g"),
            Task(id="after", title="After", dependencies=["g"]),
        )
    )
    assert ids(dag.ready()) == ["x", "y"]
    dag.start("x")
    dag.complete("x")
    assert dag.task("g").status.state == "pending"
    dag.start("y")
    dag.complete("y")
    assert dag.task("g").status.state == "completed"
    assert ids(dag.ready()) == ["after"]


def test_children_inherit_their_parents_dependencies():
    dag = DagProgress(
        plan_of(
            Task(id="db", title="DB"),
            Task(id="api", title="API", dependencies=["db"], children=["route"]),
            Task(id="route", title="Route", parent_id="api"),
        )
    )
    assert ids(dag.ready()) == ["db"]
    assert dag.dependency_ids(dag.task("route")) == ["db"]


def test_failure_skips_dependents_transitively_and_independent_work_goes_on():
    dag = DagProgress(
        plan_of(
            Task(id="a", title="A"),
            Task(id="b", title="B", dependencies=["a"]),
            Task(id="c", title="C", dependencies=["b"]),
            Task(id="free", title="Free"),
        )
    )
    dag.start("a")
    dag.fail("a", "verify failed")
    assert dag.task("b").status.reason == "dependency `a` failed"
    assert dag.task("c").status.reason == "dependency `b` was skipped"
    assert ids(dag.ready()) == ["free"]
    dag.start("free")
    dag.complete("free")
    assert not dag.running and not dag.ready()  # nothing runs and nothing can start
    assert dag.counts() == {"failed": 1, "skipped": 2, "completed": 1}


LEFT_OUT = {"state": "skipped", "reason": "left out at approval"}


def chain_with_b_left_out() -> DagProgress:
    # b is left out (at approval, or in the task file) before a ran: c still builds on a.
    return DagProgress(
        plan_of(
            Task(id="a", title="A"),
            Task(id="b", title="B", dependencies=["a"], status=LEFT_OUT),
            Task(id="c", title="C", dependencies=["b"]),
        )
    )


def test_a_skipped_task_passes_its_own_dependencies_on_to_its_dependents():
    dag = chain_with_b_left_out()
    assert ids(dag.ready()) == ["a"]
    assert dag.dependency_ids(dag.task("c")) == ["a", "b"]
    dag.start("a")
    dag.complete("a")
    assert ids(dag.ready()) == ["c"]


def test_a_failure_before_a_skipped_task_skips_the_tasks_after_it():
    dag = chain_with_b_left_out()
    dag.start("a")
    dag.fail("a", "verify failed")
    assert dag.task("c").status.reason == "dependency `a` failed"
    assert not dag.running and not dag.ready() and not dag.stuck()


def test_failed_member_fails_its_group_and_skips_the_groups_dependents():
    dag = DagProgress(
        plan_of(
            Task(id="g", title="G", children=["x"]),
            Task(id="x", title="X", parent_id="g"),
            Task(id="later", title="Later", dependencies=["g"]),
        )
    )
    dag.start("x")
    dag.fail("x", "boom")
    assert str(dag.task("g").status) == "failed: subtask x failed"
    assert str(dag.task("later").status) == "skipped: dependency `g` failed"


def test_a_group_whose_every_task_was_skipped_is_skipped_not_failed():
    # h's only task waits for g; g fails: nothing under h ran, and nothing there failed.
    dag = DagProgress(
        plan_of(
            Task(id="g", title="G"),
            Task(id="h", title="H", children=["c"]),
            Task(id="c", title="C", parent_id="h", dependencies=["g"]),
        )
    )
    dag.start("g")
    dag.fail("g", "boom")
    assert str(dag.task("c").status) == "skipped: dependency `g` failed"
    assert str(dag.task("h").status) == "skipped: dependency `g` failed"


def test_a_group_where_work_was_skipped_but_nothing_failed_is_skipped_not_failed():
    # h's c waits for g, which fails; h's d completes. Nothing under h failed: it was
    # "failed: subtask c skipped" in the session and the artifacts, Completed in the UI.
    dag = DagProgress(
        plan_of(
            Task(id="g", title="G"),
            Task(id="h", title="H", children=["c", "d"]),
            Task(id="c", title="C", parent_id="h", dependencies=["g"]),
            Task(id="d", title="D", parent_id="h"),
            Task(id="after", title="After", dependencies=["h"]),
        )
    )
    dag.start("g")
    dag.start("d")
    dag.fail("g", "boom")
    dag.complete("d")
    assert str(dag.task("h").status) == "skipped: dependency `g` failed"
    assert str(dag.task("after").status) == "skipped: dependency `h` was skipped"
    assert dag.task("h").status.skipped_for_failure  # a resume runs what was left


def test_proposed_subtasks_run_before_the_parent_completes():
    dag = DagProgress(
        plan_of(Task(id="p", title="P"), Task(id="next", title="N", dependencies=["p"]))
    )
    dag.start("p")
    dag.plan.tasks.append(Task(id="p.1", title="Sub", parent_id="p"))
    dag.task("p").children = ["p.1"]
    dag.refresh()
    dag.complete("p")
    assert dag.task("p").status.state == "in_progress"
    assert ids(dag.ready()) == ["p.1"]
    dag.start("p.1")
    dag.complete("p.1")
    assert dag.task("p").status.state == "completed"
    assert ids(dag.ready()) == ["next"]


def test_completed_tasks_from_the_file_are_not_run_again():
    dag = DagProgress(plan_of(Task(id="a", title="A", status="completed"), Task(id="b", title="B")))
    assert ids(dag.ready()) == ["b"]


def test_sequential_strategy_runs_one_leaf_at_a_time_in_order():
    dag = DagProgress(
        plan_of(
            Task(id="a", title="A"),
            Task(id="b", title="B", metadata={"priority": "critical"}),
            strategy="sequential",
        )
    )
    assert ids(dag.ready()) == ["a"]
    dag.start("a")
    assert dag.ready() == []
    dag.complete("a")
    assert ids(dag.ready()) == ["b"]


def test_ready_once_a_running_task_completes_is_what_its_completion_makes_ready():
    # The scheduler's guess of the task that takes a landed task's place (run_worktrees.py).
    dag = DagProgress(
        plan_of(
            Task(id="a", title="A"),
            Task(id="b", title="B"),
            Task(id="after-a", title="After A", dependencies=["a"], metadata={"priority": "high"}),
            Task(id="after-ab", title="After A and B", dependencies=["a", "b"]),
            Task(id="later", title="Later", metadata={"priority": "low"}),
        )
    )
    dag.start("a")
    dag.start("b")
    assert ids(dag.ready()) == ["later"]
    assert ids(dag.ready(once="a")) == ["after-a", "later"]  # after-ab still waits for b
    assert ids(dag.ready()) == ["later"]  # nothing changed by asking
    dag.complete("a")
    assert ids(dag.ready()) == ["after-a", "later"]
    assert ids(dag.ready(once="b")) == ["after-a", "after-ab", "later"]


def test_ready_once_in_sequential_order_is_the_next_leaf_only_when_nothing_else_runs():
    dag = DagProgress(
        plan_of(Task(id="a", title="A"), Task(id="b", title="B"), strategy="sequential")
    )
    dag.start("a")
    assert dag.ready() == []
    assert ids(dag.ready(once="a")) == ["b"]
