"""Plans as people read them: an indented tree, a Mermaid graph, the JSON Schema."""

from __future__ import annotations

from typing import Any

from aca_flows._words import counted, one_line, shown
from aca_flows.plan.dag import sequential_order
from aca_flows.plan.models import ExecutionPlan, Strategy, Task

__all__ = ["plan_json_schema", "plan_size", "render_mermaid", "render_tree"]

_MARKS = {
    "pending": "[ ]",
    "in_progress": "[~]",
    "blocked": "[!]",
    "completed": "[x]",
    "failed": "[F]",
    "skipped": "[-]",
}


def plan_size(plan: ExecutionPlan) -> str:
    """ "3 tasks in 2 groups": the tasks that run, counted as a run counts them (groups run
    nothing of their own), then the groups."""
    tasks = counted(len(plan.leaves()), "task")
    groups = len(plan.tasks) - len(plan.leaves())
    return f"{tasks} in {counted(groups, 'group')}" if groups else tasks


def render_tree(plan: ExecutionPlan) -> str:
    """``plan.name`` then one line per task, children indented under their parent."""
    by_id = {t.id: t for t in plan.tasks}
    lines = [f"{_field(plan.name)}  ({plan_size(plan)}, strategy {plan.strategy.value})"]
    if plan.verify:  # the check of every task that names none: a reviewer must see it
        lines.append(f"default verify: {_field(plan.verify)}")
    for setup in plan.setup_commands:  # runs in every task's worktree: a reviewer must see it
        lines.append(f"setup, before every task: {_field(setup.name)}: {_field(setup.command)}")
    if hints := [
        _field(h.splitlines()[0].rstrip(":")[:60]) for h in plan.context_hints if h.strip()
    ]:
        # A heading without items is context, not work: a reviewer must see it runs no task.
        lines.append(f"context, given to every task (no task of its own): {'; '.join(hints)}")

    def walk(task: Task, prefix: str, last: bool) -> None:
        branch = "└── " if last else "├── "
        lines.append(f"{prefix}{branch}{_task_line(task)}")
        kids = [by_id[c] for c in task.children if c in by_id]
        for i, child in enumerate(kids):
            walk(child, prefix + ("    " if last else "│   "), i == len(kids) - 1)

    roots = plan.roots()
    for i, task in enumerate(roots):
        walk(task, "", i == len(roots) - 1)
    return "\n".join(lines)


def _task_line(task: Task) -> str:
    parts = [_MARKS[task.status.state], task.id, "—", task.title]
    extras = []
    if task.dependencies:
        extras.append("after " + ", ".join(dict.fromkeys(task.dependencies)))  # a,a: once
    if task.metadata.priority.value != "normal":
        extras.append(task.metadata.priority.value)
    if task.verify:
        extras.append(f"verify: {task.verify}")
    # What a reviewer must see of a task that runs unlike the others: its provider, model,
    # network and attempts (each only when the task sets it).
    if task.provider or task.model:
        extras.append("on " + "/".join(filter(None, (task.provider, task.model))))
    if task.network is not None:
        extras.append("network" if task.network else "no network")
    if task.max_attempts is not None:
        extras.append(f"at most {task.max_attempts} attempt(s)")
    if task.metadata.file_refs:
        extras.append("files: " + ", ".join(r.path for r in task.metadata.file_refs))
    if task.status.reason:
        extras.append(task.status.reason)
    line = _field(" ".join(parts))
    return f"{line}  ({_field('; '.join(extras))})" if extras else line


def _field(text: str) -> str:
    """A task file's text on its one line of the tree, as a terminal will show it: a line
    break or an escape sequence in a title would draw lines the plan does not have."""
    return one_line(shown(text))


def render_mermaid(plan: ExecutionPlan) -> str:
    """A Mermaid flowchart: solid arrows for dependencies, dotted ones from parent to child,
    and with ``strategy = sequential`` thick ones for the order its tasks run in, one at a
    time (where no dependency says it already)."""
    node = {t.id: f"t{i}" for i, t in enumerate(plan.tasks)}
    lines = ["flowchart TD"]
    for task in plan.tasks:
        label = _mermaid_label(_field(f"{task.id}: {task.title}"))
        lines.append(f'    {node[task.id]}["{label}"]')
    for task in plan.tasks:
        for child in task.children:
            if child in node:
                lines.append(f"    {node[task.id]} -.-> {node[child]}")
        for dep in task.dependencies:
            if dep in node:
                lines.append(f"    {node[dep]} --> {node[task.id]}")
    if plan.strategy is Strategy.sequential:
        order = sequential_order(plan)
        for before, after in zip(order, order[1:], strict=False):
            if before.id not in after.dependencies:
                lines.append(f"    {node[before.id]} ==> {node[after.id]}")
    return "\n".join(lines)


def _mermaid_label(text: str) -> str:
    """``text`` inside a quoted Mermaid label, shown as written: ``#`` and ``"`` as Mermaid's
    entity codes (a bare ``"`` ends the label; ``#...;`` would read as an entity)."""
    return text.replace("#", "#35;").replace('"', "#quot;")


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of execution plans, generated from the models."""
    schema = ExecutionPlan.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "aca execution plan"
    return schema
