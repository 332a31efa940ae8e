"""Subtasks an agent proposes while working on a task.

An API-provider agent proposes them with the ``propose_subtasks`` tool; Claude Code, which
has no aca tools, ends its final answer with a fenced block tagged ``aca-subtasks`` holding a
JSON list (``SUBTASK_BLOCK_HELP`` is what its system prompt says). Either way the proposals
are validated, then ``accept_subtasks`` adds them to the plan as children of the task, with
ids prefixed by the parent's (``<parent>.<id>``) and their dependencies mapped the same way.
The parent's own work is committed first; its children run next, from a session branch that
already holds it, and the parent counts as complete only when they all have.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aca_flows.errors import AcaError
from aca_flows.plan.models import ExecutionPlan, Plain, PlainTitle, Task, TaskMetadata
from aca_flows.plan.validate import stall_problems

__all__ = [
    "SUBTASK_BLOCK_HELP",
    "ProposedSubtask",
    "SubtaskProposalError",
    "accept_subtasks",
    "check_proposals",
    "parse_subtask_block",
    "placement_problems",
    "proposed_before_landing",
    "subtask_id",
]

SUBTASK_BLOCK_TAG = "aca-subtasks"
SUBTASK_BLOCK_HELP = f"""\
If the task is too large to finish well in one go, do the part you can, then end your final
answer with a block proposing the rest as subtasks; aca runs them after your work is committed:
```{SUBTASK_BLOCK_TAG}
[{{"id": "tests", "title": "Add tests for the parser", "description": "...",
  "dependencies": [], "verify": "pytest -q tests/test_parser.py"}}]
```
`id` is short (letters, digits, '.', '_', '-'); `dependencies` name other proposed ids."""

_BLOCK = re.compile(rf"```{SUBTASK_BLOCK_TAG}[^\n]*\n(.*?)```", re.DOTALL)
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class SubtaskProposalError(AcaError):
    """Proposed subtasks are malformed or inconsistent; ``problems`` lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "the proposed subtasks were not accepted: " + "; ".join(problems) + ". "
            "Correct the proposal (unique ids, dependencies on proposed or existing tasks, "
            "no cycles, none on the parent task or on what waits for it)."
        )


class ProposedSubtask(BaseModel):
    """One subtask as an agent proposes it; ids are local to the proposal."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_ID_PATTERN, max_length=40)
    title: PlainTitle  # not only spaces, no NUL: the plan's checks refuse such a title
    description: str = ""
    dependencies: list[str] = Field(default_factory=list)
    verify: Plain | None = None


def subtask_id(parent_id: str, proposed_id: str) -> str:
    """The plan id of a proposed subtask: ``<parent>.<id>``."""
    prefix = f"{parent_id}."
    return proposed_id if proposed_id.startswith(prefix) else prefix + proposed_id


def parse_proposals(items: object) -> list[ProposedSubtask]:
    """Validate raw JSON (a list, or ``{"subtasks": [...]}``) into proposals."""
    if isinstance(items, dict) and "subtasks" in items:
        items = items["subtasks"]
    if not isinstance(items, list):
        raise SubtaskProposalError(["expected a JSON list of subtasks"])
    proposals: list[ProposedSubtask] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            proposals.append(ProposedSubtask.model_validate(item))
        except ValidationError as exc:
            details = ", ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}" for e in exc.errors()
            )
            problems.append(f"subtask #{index + 1}: {details}")
    if problems:
        raise SubtaskProposalError(problems)
    return proposals


def parse_subtask_block(text: str) -> list[ProposedSubtask]:
    """The proposals in an ``aca-subtasks`` block of a final answer; [] when there is none."""
    match = _BLOCK.search(text or "")
    if match is None:
        return []
    try:
        raw = json.loads(match.group(1))
    except json.JSONDecodeError as exc:
        raise SubtaskProposalError([f"the {SUBTASK_BLOCK_TAG} block is not JSON: {exc}"]) from None
    return parse_proposals(raw)


def check_proposals(
    proposals: list[ProposedSubtask], *, existing_ids: Iterable[str] = ()
) -> list[str]:
    """Every problem of a proposal: duplicate ids, unknown dependencies, cycles."""
    existing = set(existing_ids)
    problems: list[str] = []
    ids = [p.id for p in proposals]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        problems.append(f"duplicate subtask ids: {', '.join(duplicates)}")
    local = set(ids)
    for proposal in proposals:
        for dep in proposal.dependencies:
            if dep == proposal.id:
                problems.append(f"subtask {proposal.id} depends on itself")
            elif dep not in local and dep not in existing:
                problems.append(f"subtask {proposal.id} depends on unknown task {dep!r}")
    cycle = _find_cycle({p.id: [d for d in p.dependencies if d in local] for p in proposals})
    if cycle:
        problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems


def accept_subtasks(
    plan: ExecutionPlan, parent_id: str, proposals: list[ProposedSubtask]
) -> list[Task]:
    """Add the proposals to ``plan`` as children of ``parent_id``; returns the child tasks.

    Safe to repeat: a child already in the plan under this parent is returned, not added again.
    Raises ``SubtaskProposalError`` naming every problem; the plan is then unchanged.
    """
    parent = plan.task(parent_id)
    plan_ids = {t.id for t in plan.tasks}
    problems = check_proposals(proposals, existing_ids=plan_ids)
    local = {p.id for p in proposals}
    for proposal in proposals:
        child_id = subtask_id(parent_id, proposal.id)
        if len(child_id) > 80:
            problems.append(f"subtask id {child_id!r} is longer than 80 characters")
        elif child_id in plan_ids and plan.task(child_id).parent_id != parent_id:
            problems.append(f"subtask id {child_id!r} is already used by another task")
    if problems:
        raise SubtaskProposalError(problems)
    children = [_child_of(plan, parent, p, local) for p in proposals]
    new = [c for c in children if c.id not in plan_ids]
    # Would the plan with these children stall? (A child waiting for its own parent, or for a
    # task that waits for the parent, could never start.)
    trial = plan.model_copy(
        update={
            "tasks": [
                *(
                    t.model_copy(update={"children": _with_children(t, children)})
                    if t.id == parent_id
                    else t
                    for t in plan.tasks
                ),
                *new,
            ]
        }
    )
    stalls = stall_problems(trial, involving={c.id for c in children})
    if stalls:
        raise SubtaskProposalError(stalls)
    plan.tasks.extend(new)
    parent.children = _with_children(parent, children)
    return children


def placement_problems(
    plan: ExecutionPlan, parent_id: str, proposals: list[ProposedSubtask]
) -> list[str]:
    """Why ``accept_subtasks`` would refuse ``proposals`` (``[]``: it would accept them), so
    the agent hears it while it can still correct them. ``plan`` is not changed."""
    return _accepted(plan.model_copy(deep=True), parent_id, proposals)[1]


def take_subtasks(
    plan: ExecutionPlan, parent_id: str, proposals: list[ProposedSubtask]
) -> tuple[list[Task], str | None]:
    """``accept_subtasks``'s children, or why they were refused in the words the parent's
    failure keeps: its work was left to subtasks that can never run, so it is not done."""
    children, problems = _accepted(plan, parent_id, proposals)
    return children, ("proposed subtasks ignored: " + "; ".join(problems) if problems else None)


def _accepted(
    plan: ExecutionPlan, parent_id: str, proposals: list[ProposedSubtask]
) -> tuple[list[Task], list[str]]:
    try:
        return accept_subtasks(plan, parent_id, proposals), []
    except SubtaskProposalError as exc:
        return [], exc.problems
    except ValueError as exc:  # a field no task takes
        return [], [" ".join(str(exc).split())]


def _with_children(parent: Task, children: list[Task]) -> list[str]:
    return list(dict.fromkeys([*parent.children, *(c.id for c in children)]))


def _child_of(
    plan: ExecutionPlan, parent: Task, proposal: ProposedSubtask, local: set[str]
) -> Task:
    """The plan task for ``proposal`` (the one already in the plan when repeated)."""
    child_id = subtask_id(parent.id, proposal.id)
    try:
        return plan.task(child_id)
    except KeyError:
        pass
    return Task(
        id=child_id,
        title=proposal.title,
        description=proposal.description,
        parent_id=parent.id,
        dependencies=[subtask_id(parent.id, d) if d in local else d for d in proposal.dependencies],
        verify=proposal.verify or parent.verify,
        network=parent.network,  # no more reach than the task that proposed it
        provider=parent.provider,
        model=parent.model,
        metadata=TaskMetadata(priority=parent.metadata.priority),
    )


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for dep in graph.get(node, []):
            found = visit(dep)
            if found:
                return found
        visiting.pop()
        done.add(node)
        return None

    for node in graph:
        found = visit(node)
        if found:
            return found
    return None


def proposed_before_landing(task_log: Path) -> list[ProposedSubtask]:
    """The subtasks the run that landed a task proposed, as its log keeps them (a
    ``subtasks_proposed`` record before the landing): aca died once the work landed, before
    the run journalled them, and a resume finds the task done on the branch."""
    proposed: list = []
    with contextlib.suppress(OSError):
        for line in task_log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                record = json.loads(line)
                if record.get("kind") == "run_started":
                    proposed = []  # another run's: it did not land
                elif record.get("kind") == "subtasks_proposed":
                    proposed = record.get("subtasks") or []
    with contextlib.suppress(ValueError, TypeError):
        return [ProposedSubtask.model_validate(p) for p in proposed]
    return []
