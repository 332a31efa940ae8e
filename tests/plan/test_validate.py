"""Plan validation reports every problem, with cycle paths."""

from __future__ import annotations

import pytest

from aca_flows.errors import PlanValidationError
from aca_flows.plan import ExecutionPlan, Task, load_task_file
from aca_flows.plan.models import TaskStatus
from aca_flows.plan.validate import find_cycles, plan_problems, stall_problems


def plan_of(*tasks: Task) -> ExecutionPlan:
    return ExecutionPlan(name="p", tasks=list(tasks))


def test_valid_plan_has_no_problems():
    plan = plan_of(
        Task(id="a", title="A", children=["b"]),
        Task(id="b", title="B", parent_id="a"),
        Task(id="c", title="C", dependencies=["a", "b"]),
    )
    assert plan_problems(plan) == []


def test_ids_that_differ_only_in_case_are_refused():
    # Ids name worktrees and logs: on macOS or Windows `Login` and `login` would share them.
    problems = plan_problems(plan_of(Task(id="Login", title="A"), Task(id="login", title="B")))
    assert problems == [
        "task ids 'Login' and 'login' differ only in case: a file system that ignores case "
        "(macOS, Windows) would give both one worktree and one log; rename one"
    ]


def test_self_dependency_and_unknown_dependency_with_suggestion():
    problems = plan_problems(
        plan_of(
            Task(id="build", title="B", dependencies=["build", "biuld2", "nothing", "build"]),
            Task(id="test", title="T", dependencies=["biuld2"]),
        )
    )
    assert problems.count("task 'build' depends on itself") == 1  # named twice, said once
    assert not any("cycle" in p for p in problems)  # said once, not again as a cycle of one
    assert "task 'test' depends on unknown task 'biuld2' (did you mean 'build'?)" in problems
    # Never the task itself: its fix was the next error, "depends on itself".
    assert "task 'build' depends on unknown task 'biuld2'" in problems
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
    # A child without a parent was said to name parent 'None'.
    orphan = plan_problems(
        plan_of(Task(id="p", title="P", children=["y"]), Task(id="y", title="Y"))
    )
    assert "task 'p' lists child 'y', but 'y' has no parent" in orphan


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


def test_sequential_plan_with_a_task_depending_on_a_later_one_is_refused():
    plan = ExecutionPlan(
        name="p",
        strategy="sequential",
        tasks=[
            Task(id="deploy", title="Deploy", dependencies=["build"]),
            Task(id="build", title="Build"),
        ],
    )
    assert plan_problems(plan) == [
        "with strategy sequential tasks run one at a time in plan order, but 'deploy' depends "
        "on 'build', which comes after it: move 'build' above 'deploy', or use strategy "
        "intelligent"
    ]
    # The same graph in another strategy runs: build first, then deploy.
    assert plan_problems(plan.model_copy(update={"strategy": "intelligent"})) == []


def test_sequential_order_puts_subtasks_in_their_parents_place():
    plan = ExecutionPlan(
        name="p",
        strategy="sequential",
        tasks=[
            Task(id="g", title="G", children=["g.1"]),
            Task(id="after", title="After", dependencies=["g"]),
            Task(id="g.1", title="G1", parent_id="g"),  # appended, as run-time subtasks are
        ],
    )
    assert plan_problems(plan) == []


def test_a_subtask_depending_on_its_own_group_can_never_start():
    plan = plan_of(
        Task(id="p", title="P", children=["c"]),
        Task(id="c", title="C", parent_id="p", dependencies=["p"]),
    )
    (problem,) = plan_problems(plan)
    assert problem.startswith("tasks wait for each other and can never start: ")
    assert set(problem.split(": ", 1)[1].split(" (")[0].split(" -> ")) == {"p", "c"}


def test_a_group_depending_on_its_own_subtask_is_told_through_the_group():
    # It read "a -> a": a subtask waiting for itself, the group that makes it wait unnamed.
    plan = plan_of(
        Task(id="g", title="G", children=["h"], dependencies=["a"]),
        Task(id="h", title="H", parent_id="g", children=["a"]),
        Task(id="a", title="A", parent_id="h"),
    )
    (problem,) = plan_problems(plan)
    path = problem.split(": ", 1)[1].split(" (")[0].split(" -> ")
    assert {"g", "a"} <= set(path) and path[0] == path[-1]  # was ["a", "a"]


def test_a_stall_is_reported_with_the_other_problems_not_after_they_are_fixed():
    # "Every problem is reported at once": a self-dependency used to hide the stall until fixed.
    plan = plan_of(
        Task(id="p", title="P", children=["c"]),
        Task(id="c", title="C", parent_id="p", dependencies=["p"]),
        Task(id="e", title="E", dependencies=["e", "nope"]),
    )
    problems = plan_problems(plan)
    assert problems[:2] == [
        "task 'e' depends on itself",
        "task 'e' depends on unknown task 'nope'",
    ]
    assert len(problems) == 3 and "can never start: " in problems[2]
    assert "e -> e" not in problems[2]


def test_completed_tasks_block_nothing():
    plan = ExecutionPlan(
        name="p",
        strategy="sequential",
        tasks=[
            Task(id="deploy", title="Deploy", dependencies=["build"]),
            Task(id="build", title="Build", status="completed"),
        ],
    )
    assert stall_problems(plan) == []


def test_a_group_with_a_verify_command_is_refused_naming_where_the_check_goes(tmp_path):
    """A task with subtasks is a group: its own line is not run, so its check never would be,
    and the run said "completed" without it."""
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- [ ] write p.txt {#p verify="test -f p.txt"}\n  - [ ] write p1.txt\n')
    with pytest.raises(PlanValidationError, match="task 'p' has subtasks, so it is a group"):
        load_task_file(tasks)
    # A task that ran, passed its check and then proposed subtasks is a group only afterwards.
    ran = plan_of(
        Task(
            id="p", title="P", verify="true", children=["q"], status=TaskStatus(state="completed")
        ),
        Task(id="q", title="Q", parent_id="p"),
    )
    assert plan_problems(ran) == []


def test_an_unknown_dependency_written_in_other_letter_case_is_told_its_id():
    problems = plan_problems(
        plan_of(Task(id="c", title="C"), Task(id="b", title="B", dependencies=["C"]))
    )
    assert problems == ["task 'b' depends on unknown task 'C' (did you mean 'c'?)"]


def test_an_empty_model_or_provider_of_a_task_is_refused(tmp_path):
    # It ran silently on the run's own; `--model ""` is refused.
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- [ ] a {#a model=""}\n- [ ] b {#b provider="  "}\n')
    with pytest.raises(PlanValidationError) as refused:
        load_task_file(tasks)
    assert refused.value.problems == [
        "task 'a' has an empty model; name one, or leave model out for the run's",
        "task 'b' has an empty provider; name one, or leave provider out for the run's",
    ]


def test_a_plan_nested_deeper_than_a_run_can_open_is_refused_at_load(tmp_path):
    # 500 levels loaded and passed --dry-run; the run then failed opening its groups' flow
    # runs (a RecursionError traceback), and 3,000 levels took minutes to check.
    from aca_flows.plan.validate import MAX_NESTING

    def nested(levels: int) -> str:
        return "".join(f"{'  ' * level}- step {level}\n" for level in range(levels))

    fits = tmp_path / "fits.md"
    fits.write_text(nested(MAX_NESTING))
    assert len(load_task_file(fits).tasks) == MAX_NESTING
    deep = tmp_path / "deep.md"
    deep.write_text(nested(500))
    with pytest.raises(PlanValidationError, match=f"nested 500 levels deep.*at most {MAX_NESTING}"):
        load_task_file(deep)


def test_an_empty_or_repeated_setup_command_is_refused():
    # `command = ""` ran as set-up ("setup d passed: "); two of one name were told as one.
    from aca_flows.plan.models import SetupCommand

    setups = [
        SetupCommand(name="d", command="  "),
        SetupCommand(name="", command="make"),
        SetupCommand(name="deps", command="pip install -e ."),
        SetupCommand(name="deps", command="npm ci"),
    ]
    problems = plan_problems(ExecutionPlan(name="p", setup_commands=setups, tasks=[]))
    assert problems == [
        "setup command 'd' has an empty command; give each setup command a name and the "
        "command to run, or leave it out",
        "setup command '' has an empty name; give each setup command a name and the command "
        "to run, or leave it out",
        "two setup commands are named 'deps'; name each its own",
    ]


def test_a_dependency_written_as_a_toml_list_is_told_the_id_it_holds():
    # {#b depends_on=[a]}: "unknown task '[a]'" without the way out.
    problems = plan_problems(
        plan_of(Task(id="a", title="A"), Task(id="b", title="B", dependencies=["[a]"]))
    )
    assert problems == [
        "task 'b' depends on unknown task '[a]' (did you mean 'a'? Drop the brackets and "
        "quotes; separate ids by commas)"
    ]
