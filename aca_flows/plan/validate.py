"""Plan validation: every problem at once, never just the first.

Checks duplicate ids, unknown and self dependencies, dependency cycles (reported with their
path), and the tree's consistency (``parent_id`` and ``children`` agree, no parent loops).
"""

from __future__ import annotations

from aca_flows.errors import PlanValidationError
from aca_flows.plan.models import ExecutionPlan

__all__ = ["check_plan", "find_cycles", "plan_problems"]


def check_plan(plan: ExecutionPlan, source: str) -> ExecutionPlan:
    """Return ``plan`` unchanged, or raise ``PlanValidationError`` listing every problem."""
    problems = plan_problems(plan)
    if problems:
        raise PlanValidationError(source, problems)
    return plan


def plan_problems(plan: ExecutionPlan) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for task in plan.tasks:
        if task.id in seen:
            problems.append(f"duplicate task id '{task.id}'; give each task its own id")
        seen.add(task.id)
    by_id = {t.id: t for t in plan.tasks}

    for task in plan.tasks:
        for dep in task.dependencies:
            if dep == task.id:
                problems.append(f"task '{task.id}' depends on itself")
            elif dep not in by_id:
                problems.append(
                    f"task '{task.id}' depends on unknown task '{dep}'{_did_you_mean(dep, by_id)}"
                )
        if task.parent_id is not None:
            parent = by_id.get(task.parent_id)
            if parent is None:
                problems.append(f"task '{task.id}' has unknown parent '{task.parent_id}'")
            elif task.id not in parent.children:
                problems.append(
                    f"task '{task.id}' names parent '{task.parent_id}', "
                    f"but '{task.parent_id}' does not list it in children"
                )
        for child_id in task.children:
            child = by_id.get(child_id)
            if child is None:
                problems.append(f"task '{task.id}' lists unknown child '{child_id}'")
            elif child.parent_id != task.id:
                problems.append(
                    f"task '{task.id}' lists child '{child_id}', "
                    f"but '{child_id}' names parent '{child.parent_id}'"
                )

    problems.extend(_parent_loops(by_id))
    graph: dict[str, list[str]] = {}
    for task in plan.tasks:  # duplicates merge, so no edge hides behind a repeated id
        graph.setdefault(task.id, []).extend(d for d in task.dependencies if d in by_id)
    for cycle in find_cycles(graph):
        problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems


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


def _parent_loops(by_id) -> list[str]:
    problems = []
    reported: set[str] = set()
    for task in by_id.values():
        chain = [task.id]
        node = task
        while node.parent_id is not None and node.parent_id in by_id:
            if node.parent_id in chain:
                loop = chain[chain.index(node.parent_id) :] + [node.parent_id]
                if not reported.intersection(loop):
                    problems.append("parent loop: " + " -> ".join(loop))
                    reported.update(loop)
                break
            chain.append(node.parent_id)
            node = by_id[node.parent_id]
    return problems


def _did_you_mean(name: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
