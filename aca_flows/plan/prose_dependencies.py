"""Dependencies a Markdown task file states in prose, which the deterministic reader keeps as
text: the original aca's files say "**Dependencies**: Requires Database Setup (task #1)".

The reader invents no edges from prose (only the intelligent parser reads it), so such a plan
runs those tasks as independent; ``prose_dependencies`` finds the lines to warn about.
``aca run`` warns as it loads the task file, and tells the flow it starts, which loads it
again, not to repeat it; any other flow run (a deployment run, ``run_flow`` from Python) warns
in its log.
"""

from __future__ import annotations

import re

from aca_flows.plan.models import ExecutionPlan

__all__ = ["prose_dependencies", "prose_dependencies_warning"]

# "Dependencies: ...", "**Depends on**: ...", "Requires: ...", "Prerequisites - ..."
_LABEL = re.compile(
    r"^(?:dependencies|depends on|requires|prerequisites?)\s*[:\-]\s*(?P<rest>.+)$", re.I
)
_NOTHING = re.compile(r"^(?:none|n/?a|nothing|-)\b", re.I)


def prose_dependencies(plan: ExecutionPlan) -> list[tuple[str, str]]:
    """(task id, line) for each line of a task's description that states dependencies the
    plan does not hold: the task has none of its own."""
    found = []
    for task in plan.tasks:
        if task.dependencies:
            continue  # given as depends_on: the prose only repeats it
        for line in task.description.splitlines():
            if _states_dependencies(line):
                found.append((task.id, line.strip()))
    return found


def prose_dependencies_warning(plan: ExecutionPlan) -> str:
    """The warning for ``prose_dependencies``, for the caller to say; empty when there are
    none."""
    found = prose_dependencies(plan)
    if not found:
        return ""
    lines = "".join(f"\n  - {task_id}: {line}" for task_id, line in found)
    return (
        f"{len(found)} task(s) state dependencies in prose, which the deterministic reader "
        f"keeps as text: they run as if independent.{lines}\n"
        "Read them with --use-intelligent-parser, or give the tasks ids and depends_on "
        "({#id depends_on=...}; docs/task-files.md)."
    )


def _states_dependencies(line: str) -> bool:
    plain = re.sub(r"[*_`]", "", line).strip()
    match = _LABEL.match(plain)
    return bool(match) and not _NOTHING.match(match.group("rest").strip())
