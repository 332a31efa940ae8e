"""What the intelligent parser asks for: the proposed-plan models, their JSON Schema, the prompts.

``ProposedPlan`` is the compact structure the model fills in (a tree of tasks with ids,
dependencies, priority, complexity and duration, plus a strategy and context); its JSON Schema,
generated from the models, is what every provider is asked to follow. ``PROMPT_VERSION`` is part
of the parse cache key: change it whenever the prompts or the models change, so old answers are
not reused.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aca_flows.plan.intelligent_source import ParseSource
from aca_flows.plan.models import Complexity, Priority, Strategy, Title

__all__ = [
    "PROMPT_VERSION",
    "SYSTEM_PROMPT",
    "ProposedPlan",
    "ProposedTask",
    "proposal_schema",
    "repair_prompt",
    "user_prompt",
]

PROMPT_VERSION = "1"

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class _Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProposedTask(_Proposal):
    id: str = Field(
        pattern=_ID_PATTERN,
        max_length=80,
        description="Short unique kebab-case id, e.g. 'database-setup'.",
    )
    # Title: a title of spaces is an answer to repair, not a Task that cannot be made.
    title: Title = Field(max_length=200, description="What is done, in a few words.")
    description: str = Field(
        default="",
        description="Everything the source says about this task, its details and requirements "
        "in the source's own words.",
    )
    depends_on: list[str] = Field(
        default_factory=list, description="Ids of tasks that must be finished before this one."
    )
    priority: Priority = Priority.normal
    complexity: Complexity | None = None
    estimated_duration: str | None = Field(
        default=None, description="As the source states it or as estimated, e.g. '2 weeks'."
    )
    files: list[str] = Field(
        default_factory=list,
        description="Referenced files this task needs, exactly as the source names them.",
    )
    subtasks: list[ProposedTask] = Field(
        default_factory=list,
        description="Parts of this task. A task with subtasks is only a group: its subtasks "
        "do all the work.",
    )


class ProposedPlan(_Proposal):
    name: str = Field(min_length=1, description="The plan's name: the document's title.")
    description: str = Field(default="", description="What the whole plan achieves.")
    strategy: Strategy = Field(
        default=Strategy.intelligent,
        description="sequential: one task at a time in order; parallel or intelligent: "
        "independent tasks at once.",
    )
    context: list[str] = Field(
        default_factory=list,
        description="Source text that is not a task (notes, background, constraints), kept "
        "for every task.",
    )
    tasks: list[ProposedTask] = Field(min_length=1)


def proposal_schema() -> dict[str, Any]:
    """The JSON Schema of ``ProposedPlan``, generated from the models."""
    return ProposedPlan.model_json_schema()


SYSTEM_PROMPT = """\
You turn a free-form Markdown task file into an execution plan for coding agents.

Rules:
- Tasks form a tree. Top-level tasks are the main phases or pieces of work the document
  describes. A list item becomes a subtask when it is a separate piece of work, or stays a
  detail in its task's description when it is part of one piece of work. A task with
  subtasks does no work itself.
- depends_on names ids of tasks that must finish first. Read dependencies from the text
  ("requires X", "after X", "task #2") and from order only where the text implies it. Never
  create a cycle; refer only to ids that exist in your plan.
- Priority is one of low, normal, high, critical; complexity one of trivial, simple,
  moderate, complex, epic. Give an estimated duration where the source states one.
- Choose the strategy: sequential when every task waits for the previous one, otherwise
  intelligent.
- Nothing may be lost: every heading, list item and paragraph of the source must appear, in
  its own words, in some task's title or description or in the plan's context. Copy
  requirements verbatim; do not summarise them away.
- Use the project context and the additional instructions to understand the work; they
  are not tasks and need not be copied into the plan.
- Answer only with the plan in the required JSON structure.
"""


def user_prompt(source: ParseSource, context: list[str], append_system_prompt: str | None) -> str:
    """The request: the task file, each referenced file, the context and extra instructions."""
    parts = [f"Task file `{source.path.name}`:\n\n{source.text.strip()}"]
    for reference, text in source.references.items():
        parts.append(f"Referenced file `{reference}`:\n\n{text.strip()}")
    if context:
        parts.append("Project context:\n" + "\n".join(f"- {hint}" for hint in context))
    if append_system_prompt:
        parts.append(f"Additional instructions:\n{append_system_prompt.strip()}")
    parts.append("Answer with the execution plan.")
    return "\n\n---\n\n".join(parts)


def repair_prompt(problems: list[str]) -> str:
    """The message that sends an unusable answer back, naming every problem."""
    listed = "\n".join(f"- {p}" for p in problems)
    return (
        f"Your plan cannot be used:\n{listed}\n\n"
        "Answer again with the complete, corrected plan in the same JSON structure."
    )
