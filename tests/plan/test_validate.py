"""Plan validation reports every problem, with cycle paths."""

from __future__ import annotations

from aca_flows.plan import ExecutionPlan, Task
from aca_flows.plan.validate import find_cycles, plan_problems


def plan_of(*tasks: Task) -> ExecutionPlan:
    return ExecutionPlan(name="p", tasks=list(tasks))


def test_valid_plan_has_no_problems():
    plan = plan_of(
        Task(id="a", title="A", children=["b"]),
        Task(id="b", title="B", parent_id="a"),
        Task(id="c", title="C", dependencies=["a", "b"]),
    )
    assert plan_problems(plan) == []


def test_self_dependency_and_unknown_dependency_with_suggestion():
    problems = plan_problems(
        plan_of(Task(id="build", title="B", dependencies=["build", "biuld2", "nothing"]))
    )
    assert "task 'build' depends on itself" in problems
    assert "task 'build' depends on unknown task 'biuld2' (did you mean 'build'?)" in problems
    assert "task 'build' depends on unknown task 'nothing'" in problems


def test_cycle_path_is_printed():
    problems = plan_problems(
        plan_of(
            Task(id="a", title="A", dependencies=["c"]),
            Task(id="b", title="B", dependencies=["a"]),
            Task(id="c", title="C", dependencies=["b"]),
        )
    )
    assert problems == ["dependency cycle: a -> c -> b -> a"]


def test_parent_child_mismatch():
    problems = plan_problems(
        plan_of(
            Task(id="p", title="P", children=["x", "ghost"]),
            Task(id="x", title="X", parent_id="q"),
            Task(id="q", title="Q"),
        )
    )
    assert "task 'p' lists unknown child 'ghost'" in problems
    assert "task 'p' lists child 'x', but 'x' names parent 'q'" in problems
    assert "task 'x' names parent 'q', but 'q' does not list it in children" in problems


def test_parent_loop():
    problems = plan_problems(
        plan_of(
            Task(id="a", title="A", parent_id="b", children=["b"]),
            Task(id="b", title="B", parent_id="a", children=["a"]),
        )
    )
    assert any(p.startswith("parent loop: ") for p in problems)


def test_long_chain_does_not_overflow():
    graph = {str(i): [str(i + 1)] for i in range(20_000)}
    graph["20000"] = ["0"]
    (cycle,) = find_cycles(graph)
    assert cycle[0] == cycle[-1] == "0" and len(cycle) == 20_002
