"""Plan validation: every problem at once, never just the first.

Checks duplicate ids (and ids that differ only in case), unknown and self dependencies,
dependency cycles (reported with their path), an empty verify command, provider or model, the
tree's consistency (``parent_id`` and ``children`` agree, no parent loops, no verify command on
a group, which nothing would run), and plans that could never progress (``stall_problems``):
tasks that wait for each other through their groups, and with ``strategy = sequential`` a task
that depends on a later one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from aca_flows.errors import PlanValidationError, TaskFileError, TaskFileProblems
from aca_flows.plan.dag import sequential_order
from aca_flows.plan.models import NUL_PROBLEM, ExecutionPlan, Strategy, Task

__all__ = [
    "check_plan",
    "find_cycles",
    "plan_problems",
    "raise_file_problems",
    "stall_problems",
]


def check_plan(
    plan: ExecutionPlan,
    source: str,
    run_states: bool = False,
    found_before: Sequence[str] = (),
    fix_in: str | None = None,
) -> ExecutionPlan:
    """Return ``plan`` unchanged, or raise ``PlanValidationError`` listing every problem.
    ``run_states``: the plan is one to start a run from (an execution plan file), whose tasks
    are pending, or completed to be passed over. ``found_before``: what the loader already
    found wrong in the file (each a whole message), listed first. ``fix_in``: what the user
    edits (else the task file, or the execution plan with ``run_states``)."""
    problems = plan_problems(plan)
    if run_states:
        problems += _run_state_problems(plan)
    if found_before:
        raise_file_problems(source, [*found_before, *problems])
    if problems:
        # An execution plan is edited itself (or dumped again), not its task file.
        fix_in = fix_in or ("the execution plan" if run_states else "the task file")
        raise PlanValidationError(source, problems, fix_in)
    return plan


def _empty_value_problems(plan: ExecutionPlan) -> list[str]:
    """An empty verify reads as a check but checks nothing, and whether it means "no check"
    or "the plan's default" the file does not say: it is refused, with both ways out. So is
    an empty provider or model, which meant the run's own."""
    problems = []
    if plan.verify is not None and not plan.verify.strip():
        problems.append(
            "the plan's default verify is empty; write the command every task's work must "
            'pass, e.g. verify="pytest -q", or leave verify out for no default'
        )
    problems += [
        f"task '{task.id}' has an empty verify; write the command its work must pass, e.g. "
        'verify="pytest -q", or leave verify out for the plan\'s default'
        for task in plan.tasks
        if task.verify is not None and not task.verify.strip()
    ]
    # An empty model or provider ran on the run's own, silently; `--model ""` is refused.
    problems += [
        f"task '{task.id}' has an empty {field}; name one, or leave {field} out for the run's"
        for task in plan.tasks
        for field in ("provider", "model")
        if (value := getattr(task, field)) is not None and not value.strip()
    ]
    # A setup command of nothing read as set-up ("setup d passed: "); one name twice, as one.
    names: set[str] = set()
    for setup in plan.setup_commands:
        if not setup.name.strip() or not setup.command.strip():
            what = "name" if not setup.name.strip() else "command"
            problems.append(
                f"setup command '{setup.name}' has an empty {what}; give each setup command a "
                "name and the command to run, or leave it out"
            )
        elif setup.name in names:
            problems.append(f"two setup commands are named '{setup.name}'; name each its own")
        names.add(setup.name)
    return problems


def raise_file_problems(source: str, problems: list[str]) -> None:
    """A loader's single problem keeps the message (and class) it always had; several, of any
    stage, are listed together."""
    if len(problems) == 1:
        raise TaskFileError(problems[0])
    raise TaskFileProblems(source, problems)


def plan_problems(plan: ExecutionPlan) -> list[str]:
    problems: list[str] = []
    # Problems that leave the tree and graph sound (the stall checks can still look): a task
    # depending on itself or on an unknown task, a group's verify, an empty value.
    harmless: list[str] = []
    seen: set[str] = set()
    by_lower_case: dict[str, str] = {}
    for task in plan.tasks:
        if task.id in seen:
            problems.append(f"duplicate task id '{task.id}'; give each task its own id")
        elif (other := by_lower_case.setdefault(task.id.lower(), task.id)) != task.id:
            problems.append(
                f"task ids '{other}' and '{task.id}' differ only in case: a file system that "
                "ignores case (macOS, Windows) would give both one worktree and one log; "
                "rename one"
            )
        seen.add(task.id)
    by_id = {t.id: t for t in plan.tasks}
    # Each task runs them in its own worktree: a folder outside it was refused mid-run.
    problems += [
        f"setup command '{setup.name}': working_dir {setup.working_dir!r} leads outside the "
        'repository; name a folder inside it, relative to its root (e.g. "backend")'
        for setup in plan.setup_commands
        if setup.working_dir and _leaves_the_repository(setup.working_dir)
    ]

    for task in plan.tasks:
        for dep in dict.fromkeys(task.dependencies):  # depends_on=a,a: said once
            if dep == task.id:
                harmless.append(f"task '{task.id}' depends on itself")
                problems.append(harmless[-1])
            elif dep not in by_id:
                others = [known for known in by_id if known != task.id]  # never itself
                harmless.append(
                    f"task '{task.id}' depends on unknown task '{dep}'{_did_you_mean(dep, others)}"
                )
                problems.append(harmless[-1])
        if task.parent_id is not None:
            parent = by_id.get(task.parent_id)
            if parent is None:
                problems.append(f"task '{task.id}' has unknown parent '{task.parent_id}'")
            elif task.id not in parent.children:
                problems.append(
                    f"task '{task.id}' names parent '{task.parent_id}', "
                    f"but '{task.parent_id}' does not list it in children"
                )
        if task.children and task.verify and task.status.state != "completed":
            # A group's own title is not a piece of work: nothing would ever run its check.
            harmless.append(
                f"task '{task.id}' has subtasks, so it is a group and its verify command "
                f"`{task.verify}` would never run; give the check to one of its subtasks, or "
                f"to a task that depends on '{task.id}'"
            )
            problems.append(harmless[-1])
        for child_id in task.children:
            child = by_id.get(child_id)
            if child is None:
                problems.append(f"task '{task.id}' lists unknown child '{child_id}'")
            elif child.parent_id != task.id:
                names = f"names parent '{child.parent_id}'" if child.parent_id else "has no parent"
                problems.append(
                    f"task '{task.id}' lists child '{child_id}', but '{child_id}' {names}"
                )

    problems += _nul_problems(plan)
    empty_values = _empty_value_problems(plan)
    harmless.extend(empty_values)
    problems.extend(empty_values)
    problems.extend(_parent_loops(by_id))
    graph: dict[str, list[str]] = {}
    for task in plan.tasks:  # duplicates merge, so no edge hides behind a repeated id
        # A task that depends on itself is reported above, not again as a cycle of one.
        graph.setdefault(task.id, []).extend(
            d for d in task.dependencies if d in by_id and d != task.id
        )
    for cycle in find_cycles(graph):
        problems.append("dependency cycle: " + " -> ".join(cycle))
    if len(problems) == len(harmless):  # the stall checks need a sound tree and graph
        problems.extend(stall_problems(_without_self_dependencies(plan)))
    return problems


def _without_self_dependencies(plan: ExecutionPlan) -> ExecutionPlan:
    """``plan`` with no task depending on itself (reported once already, not again as a stall)."""
    if not any(t.id in t.dependencies for t in plan.tasks):
        return plan
    tasks = [
        t.model_copy(update={"dependencies": [d for d in t.dependencies if d != t.id]})
        if t.id in t.dependencies
        else t
        for t in plan.tasks
    ]
    return plan.model_copy(update={"tasks": tasks})


def stall_problems(plan: ExecutionPlan, involving: set[str] | None = None) -> list[str]:
    """Why ``plan`` would stop with tasks that can never start (the engine's rules: a task waits
    for its dependencies and those of its groups; a dependency on a group waits for all of it;
    with ``strategy = sequential`` one leaf runs at a time in ``sequential_order``).

    ``involving``: report only problems that name one of these task ids (new subtasks).
    Tasks already completed or skipped wait for nothing and block nothing.
    """
    by_id = {t.id: t for t in plan.tasks}
    waits = {t.id: _waits_of(t, by_id) for t in plan.tasks}
    problems: list[str] = []
    for cycle in find_cycles(waits):
        if involving is not None and involving.intersection(cycle):
            # Told from the new task's side: "api.t -> api -> api.t".
            start = next(i for i, t in enumerate(cycle) if t in involving)
            cycle = cycle[start:-1] + cycle[:start] + [cycle[start]]
        if involving is None or involving.intersection(cycle):
            problems.append(
                "tasks wait for each other and can never start: "
                + " -> ".join(cycle)
                + " (a task waits for its dependencies and its group's; a group finishes when "
                "all its subtasks have); remove one of these dependencies"
            )
    if problems or plan.strategy is not Strategy.sequential:
        return problems
    order = sequential_order(plan)
    position = {t.id: i for i, t in enumerate(order)}
    for index, leaf in enumerate(order):
        if leaf.status.is_done:
            continue
        later = [
            m
            for d in waits[leaf.id]
            for m in _leaves_of(by_id[d], by_id)
            if position.get(m.id, -1) > index and not m.status.is_done
        ]
        if later and (involving is None or involving & {leaf.id, *(m.id for m in later)}):
            problems.append(
                f"with strategy sequential tasks run one at a time in plan order, but "
                f"'{leaf.id}' depends on '{later[0].id}', which comes after it: move "
                f"'{later[0].id}' above '{leaf.id}', or use strategy intelligent"
            )
    return problems


def _waits_of(task: Task, by_id: dict[str, Task]) -> list[str]:
    """What ``task`` cannot finish before: its and its groups' dependencies, its subtasks."""
    if task.status.is_done:
        return []
    deps: list[str] = []
    node: Task | None = task
    while node is not None:
        # A group that depends on its own subtask: the subtask waits for the group (which
        # waits for it), so the path reads "g -> a -> g", not "a -> a".
        deps.extend(node.id if d == task.id and node is not task else d for d in node.dependencies)
        node = by_id.get(node.parent_id) if node.parent_id else None
    deps.extend(task.children)
    return [d for d in dict.fromkeys(deps) if d in by_id and not by_id[d].status.is_done]


def _leaves_of(task: Task, by_id: dict[str, Task]) -> list[Task]:
    if not task.children:
        return [task]
    return [leaf for c in task.children if c in by_id for leaf in _leaves_of(by_id[c], by_id)]


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each cycle found by a depth-first walk, as a closed path ``[a, b, ..., a]``.

    Iterative, so a 5,000-task chain cannot overflow the stack.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    cycles: list[list[str]] = []
    for start in graph:
        if colour[start] != white:
            continue
        path: list[str] = [start]
        stack = [iter(graph[start])]
        colour[start] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                stack.pop()
            elif colour.get(nxt, black) == grey:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif colour.get(nxt) == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append(iter(graph[nxt]))
    return cycles


# Deeper, a plan reaches Python's recursion limit where the run opens a flow run for each of
# its groups, and the views draw its tree: it loaded, then the run failed with a traceback.
MAX_NESTING = 32


def _nul_problems(plan: ExecutionPlan) -> list[str]:
    """The fields that become a command line, a commit or a path, holding a NUL (a TOML or
    JSON escape can): the plan passed every check, then the paid task failed at its commit
    or its command ("embedded null byte"), and again on every resume."""
    fields = [("the plan's name", plan.name), ("the plan's verify", plan.verify)]
    for task in plan.tasks:
        fields += [(f"task '{task.id}': its title", task.title)]
        fields += [(f"task '{task.id}': its verify", task.verify)]
    for setup in plan.setup_commands:
        fields += [(f"setup command '{setup.name}'", f"{setup.name}{setup.command}")]
        fields += [(f"setup command '{setup.name}': its working_dir", setup.working_dir)]
    return [f"{where} {NUL_PROBLEM}; remove it" for where, text in fields if "\x00" in (text or "")]


def _parent_loops(by_id) -> list[str]:
    """Loops of parents, and tasks nested deeper than ``MAX_NESTING``: each task's chain of
    parents walked once (a chain known to reach the top is not walked again)."""
    problems = []
    reported: set[str] = set()
    depth: dict[str, int] = {}  # of the tasks whose chain reaches the top
    for task in by_id.values():
        chain, on_chain = [task.id], {task.id}
        node = task
        while node.parent_id is not None and node.parent_id in by_id:
            if node.parent_id in depth:
                break
            if node.parent_id in on_chain:
                loop = chain[chain.index(node.parent_id) :] + [node.parent_id]
                if not reported.intersection(loop):
                    problems.append("parent loop: " + " -> ".join(loop))
                    reported.update(loop)
                chain = []
                break
            chain.append(node.parent_id)
            on_chain.add(node.parent_id)
            node = by_id[node.parent_id]
        below = depth.get(node.parent_id, 0) if node.parent_id in by_id else 0
        for level, task_id in enumerate(reversed(chain), start=below + 1):
            depth[task_id] = level
    deepest = max(depth.items(), key=lambda item: item[1], default=("", 0))
    if deepest[1] > MAX_NESTING:
        problems.append(
            f"task '{deepest[0]}' is nested {deepest[1]} levels deep (subtasks of subtasks); "
            f"aca runs plans at most {MAX_NESTING} levels deep: flatten it"
        )
    return problems


def _leaves_the_repository(folder: str) -> bool:
    return os.path.isabs(folder) or os.path.normpath(folder).split(os.sep)[0] == ".."


def _did_you_mean(name: str, known) -> str:
    import difflib

    same_letters = [k for k in known if k.lower() == name.lower()]  # `C` for `c`
    bare = name.strip("[]\"' ")  # depends_on=[a] or "a", as TOML writes a list
    if bare != name and bare in known:
        return f" (did you mean '{bare}'? Drop the brackets and quotes; separate ids by commas)"
    close = same_letters or difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _run_state_problems(plan: ExecutionPlan) -> list[str]:
    """A state a run gives its tasks (in_progress, failed, ...) in a plan a run starts from:
    the run would wait on it for ever, or skip what depends on it, and never run the task."""
    problems = [
        f"task '{task.id}' is {task.status.state}: a plan starts its tasks pending (or "
        'completed, to pass them over); set its status to {"state": "pending"}'
        for task in plan.tasks
        if task.status.state not in ("pending", "completed")
    ]
    # A group completes with its subtasks: one marked completed over pending ones ended its
    # subflow before they ran, and the run failed.
    by_id = {task.id: task for task in plan.tasks}
    for task in plan.tasks:
        left = [c for c in task.children if c in by_id and by_id[c].status.state != "completed"]
        if task.status.state == "completed" and left:
            problems.append(
                f"group '{task.id}' is completed but its subtasks {', '.join(left)} are not: a "
                'group completes with its subtasks; set its status to {"state": "pending"}, '
                "or mark them completed too"
            )
    return problems
