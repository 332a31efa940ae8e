"""TOML task files: ``[plan]``, ``[[setup_commands]]`` and ``[[tasks]]`` with nested subtasks.

The schema is written as pydantic models that forbid unknown keys, so a typo such as
``depend_on`` is an error naming the key instead of a silently ignored line.
See docs/task-files.md for the whole schema with examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aca_flows.errors import TaskFileError
from aca_flows.plan.builder import TaskTreeBuilder
from aca_flows.plan.models import (
    Complexity,
    ExecutionPlan,
    Priority,
    SetupCommand,
    Strategy,
    Task,
    TaskMetadata,
)

__all__ = ["TaskFileSpec", "load_toml_task_file", "pydantic_problems"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Spec):
    id: str | None = None
    title: str = Field(min_length=1)
    description: str = ""
    priority: Priority = Priority.normal
    complexity: Complexity | None = None
    depends_on: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list, description="Files whose text is attached.")
    repositories: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    verify: str | None = None
    provider: str | None = None
    model: str | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    network: bool | None = None
    done: bool = Field(default=False, description="Load the task as already completed.")
    subtasks: list[TaskSpec] = Field(default_factory=list)


class PlanSpec(_Spec):
    name: str | None = None
    description: str = ""
    strategy: Strategy = Strategy.intelligent
    max_concurrent: int | None = Field(default=None, ge=1, le=64)
    context: list[str] = Field(default_factory=list)
    append_system_prompt: str | None = None
    verify: str | None = None


class TaskFileSpec(_Spec):
    plan: PlanSpec = Field(default_factory=PlanSpec)
    setup_commands: list[SetupCommand] = Field(default_factory=list)
    tasks: list[TaskSpec] = Field(min_length=1)


def load_toml_task_file(
    path: Path, data: dict[str, Any], base_dir: Path | None = None
) -> ExecutionPlan:
    try:
        spec = TaskFileSpec.model_validate(data)
    except ValidationError as exc:
        raise TaskFileError(
            f"{path}: {pydantic_problems(exc)}. See docs/task-files.md for the TOML schema."
        ) from None
    builder = TaskTreeBuilder(path, base_dir)
    builder.reserve_ids(list(_explicit_ids(spec.tasks)))
    for task_spec in spec.tasks:
        _add(task_spec, None, builder)
    return ExecutionPlan(
        name=spec.plan.name or path.stem,
        description=spec.plan.description,
        strategy=spec.plan.strategy,
        max_concurrent=spec.plan.max_concurrent,
        setup_commands=spec.setup_commands,
        context_hints=spec.plan.context,
        append_system_prompt=spec.plan.append_system_prompt,
        verify=spec.plan.verify,
        tasks=builder.tasks,
    )


def _add(spec: TaskSpec, parent: Task | None, builder: TaskTreeBuilder) -> None:
    if spec.id is not None:
        try:
            Task(id=spec.id, title=spec.title)
        except ValidationError:
            raise TaskFileError(
                f"{builder.task_file}: task id '{spec.id}' is not valid; use letters, digits, "
                "'.', '_' and '-', starting with a letter or digit."
            ) from None
    task = builder.add(
        parent,
        task_id=spec.id,
        title=spec.title,
        description=spec.description.strip(),
        dependencies=spec.depends_on,
        verify=spec.verify,
        provider=spec.provider,
        model=spec.model,
        max_attempts=spec.max_attempts,
        network=spec.network,
        status="completed" if spec.done else "pending",
        metadata=TaskMetadata(
            priority=spec.priority,
            estimated_complexity=spec.complexity,
            repository_refs=spec.repositories,
            file_refs=[builder.file_ref(f) for f in spec.files],
            tags=spec.tags,
        ),
    )
    for child in spec.subtasks:
        _add(child, task, builder)


def _explicit_ids(specs: list[TaskSpec]):
    for spec in specs:
        if spec.id:
            yield spec.id
        yield from _explicit_ids(spec.subtasks)


# Keys of the original aca's files (and of other tools') that a reader may carry over, with
# what aca calls them.
_RENAMED = {
    "dependencies": "aca calls it depends_on",
    "timeout": "aca calls it timeout_seconds",
    "args": "write the arguments into command",
}


def pydantic_problems(exc: ValidationError) -> str:
    """Every validation error on one line: ``'tasks[2].priority': Input should be ...``."""
    parts = []
    for err in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        where = where.lstrip(".") or "(top level)"
        if err["type"] == "extra_forbidden":
            renamed = _RENAMED.get(str(err["loc"][-1]))
            parts.append(f"unknown key '{where}'" + (f" ({renamed})" if renamed else ""))
        elif err["type"] == "missing":
            parts.append(f"missing key '{where}'")
        else:
            parts.append(f"'{where}': {err['msg']}")
    return "; ".join(parts)
