"""TOML task files: ``[plan]``, ``[[setup_commands]]`` and ``[[tasks]]`` with nested subtasks.

The schema is written as pydantic models that forbid unknown keys, so a typo such as
``depend_on`` is an error naming the key instead of a silently ignored line.
See docs/task-files.md for the whole schema with examples.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from aca_flows.errors import TaskFileError
from aca_flows.plan.builder import TaskTreeBuilder, bad_task_id, valid_task_id
from aca_flows.plan.models import (
    Complexity,
    ExecutionPlan,
    Priority,
    SetupCommand,
    Strategy,
    Task,
    TaskMetadata,
    Title,
)
from aca_flows.plan.validate import check_plan, raise_file_problems

__all__ = ["TaskFileSpec", "load_toml_task_file", "pydantic_problem_list", "pydantic_problems"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Spec):
    id: str | None = None
    title: Title
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
    max_attempts: StrictInt | None = Field(default=None, ge=1, le=20)
    network: StrictBool | None = None
    done: StrictBool = Field(default=False, description="Load the task as already completed.")
    subtasks: list[TaskSpec] = Field(default_factory=list)


class PlanSpec(_Spec):
    name: str | None = None
    description: str = ""
    strategy: Strategy = Strategy.intelligent
    max_concurrent: StrictInt | None = Field(default=None, ge=1, le=64)
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
    """The task file as a plan that passed ``check_plan``. Every problem is raised at once: a
    key the schema refuses is left out so the rest (ids, referenced files, dependencies) is
    still checked; only a file whose tasks cannot be read at all stops at its schema problems."""
    builder = TaskTreeBuilder(path, base_dir)
    spec = _task_file_spec(path, data, builder.problems)
    builder.reserve_ids(list(_explicit_ids(spec.tasks)))
    for task_spec in spec.tasks:
        _add(task_spec, None, builder)
    plan = ExecutionPlan(
        name=(spec.plan.name or "").strip() or path.stem,  # blank: named after the file too
        description=spec.plan.description,
        strategy=spec.plan.strategy,
        max_concurrent=spec.plan.max_concurrent,
        setup_commands=spec.setup_commands,
        context_hints=spec.plan.context,
        append_system_prompt=spec.plan.append_system_prompt,
        verify=spec.plan.verify,
        tasks=builder.tasks,
    )
    return check_plan(plan, str(path), found_before=builder.problems)


def _task_file_spec(path: Path, data: dict[str, Any], problems: list[str]) -> TaskFileSpec:
    _refuse_a_configuration_file(path, data)
    try:
        return TaskFileSpec.model_validate(data)
    except ValidationError as exc:
        refused = exc
    try:  # without the refused keys, to check the rest of the file too
        spec = TaskFileSpec.model_validate(
            _without_keys(data, [e["loc"] for e in refused.errors()])
        )
    except ValidationError:
        # Listed as every other file's problems are, not joined on one line.
        found = [_schema_message(path, p) for p in pydantic_problem_list(refused)]
        raise_file_problems(str(path), found)
    problems.extend(_schema_message(path, p) for p in pydantic_problem_list(refused))
    return spec


# The top-level keys of the original aca's configuration file (docs/configuration.md).
_ORIGINAL_CONFIG_KEYS = ("session_config", "task_config", "claude_config", "workspace_path")


def _refuse_a_configuration_file(path: Path, data: dict[str, Any]) -> None:
    """A configuration file given as the task file (``aca run aca.toml``) is told as such,
    not as a task file missing ``tasks`` with every section unknown."""
    from aca_flows.settings import AcaConfig

    if "tasks" in data or "plan" in data:
        return
    sections = [key for key in data if key in AcaConfig.model_fields]
    if sections:
        named = ", ".join(f"[{key}]" for key in sections)
        raise TaskFileError(
            f"{path} is a configuration file ({named}), not a task file: give it with "
            f"--config {path}, and the task file to run beside it (docs/task-files.md)."
        )
    original = [key for key in data if key in _ORIGINAL_CONFIG_KEYS]
    if original:
        raise TaskFileError(
            f"{path} is the original aca's configuration file ({', '.join(original)}), not a "
            f"task file: `aca config show --config {path}` names each key's replacement in "
            "aca's configuration (docs/configuration.md)."
        )


def _schema_message(path: Path, problem: str) -> str:
    return f"{path}: {problem}. See docs/task-files.md for the TOML schema."


def _without_keys(data: dict[str, Any], locations: list[tuple]) -> dict[str, Any]:
    """``data`` without the innermost table key of each location (``tasks[0].colour``, or
    ``tasks[0].depends_on`` for a bad item in it); a missing key stays missing."""
    data = copy.deepcopy(data)
    for loc in locations:
        node: Any = data
        key_at = None
        for part in loc:
            if isinstance(node, dict) and isinstance(part, str):
                key_at = (node, part)
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
        if key_at is not None:
            key_at[0].pop(key_at[1], None)
    return data


def _add(spec: TaskSpec, parent: Task | None, builder: TaskTreeBuilder) -> None:
    task_id = spec.id
    if task_id is not None and not valid_task_id(task_id):
        builder.problems.append(f"{builder.task_file}: {bad_task_id(task_id)}.")
        task_id = None  # a generated one, so the rest of the file is still checked
    task = builder.add(
        parent,
        task_id=task_id,
        title=spec.title,
        description=spec.description.strip(),
        dependencies=spec.depends_on,
        verify=spec.verify,
        provider=spec.provider,
        model=spec.model,
        max_attempts=spec.max_attempts,
        network=spec.network,
        status="completed" if _all_done(spec) else "pending",
        metadata=TaskMetadata(
            priority=spec.priority,
            estimated_complexity=spec.complexity,
            repository_refs=spec.repositories,
            tags=spec.tags,
        ),
    )
    # Read once the task has its id, which a problem with a file names.
    task.metadata.file_refs = builder.file_refs(
        spec.files, f"{builder.task_file}: task '{task.id}'"
    )
    for child in spec.subtasks:
        _add(child, task, builder)


def _all_done(spec: TaskSpec) -> bool:
    """A group is done when its tasks are, as a checked Markdown item is (markdown_loader)."""
    return spec.done and all(_all_done(child) for child in spec.subtasks)


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


# A task id that is a string, but not one an id may be.
_BAD_ID = ("string_pattern_mismatch", "string_too_long")


def pydantic_problems(exc: ValidationError) -> str:
    """Every validation error on one line: ``'tasks[2].priority': Input should be ...``."""
    return "; ".join(pydantic_problem_list(exc))


def pydantic_problem_list(exc: ValidationError) -> list[str]:
    """Each validation error as ``pydantic_problems`` words it."""
    parts = []
    for err in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        where = where.lstrip(".") or "(top level)"
        if err["type"] == "extra_forbidden":
            renamed = _RENAMED.get(str(err["loc"][-1]))
            parts.append(f"unknown key '{where}'" + (f" ({renamed})" if renamed else ""))
        elif err["type"] == "missing":
            parts.append(f"missing key '{where}'")
        elif err["loc"][-1] == "id" and err["type"] in _BAD_ID:
            parts.append(f"'{where}': {bad_task_id(err['input'])}")
        elif err["type"] == "list_type" and where == "tasks":
            # `tasks = "hello"`: a list of strings is no better.
            parts.append(
                "'tasks' must be a list of tasks, each with a title (in TOML: a [[tasks]] "
                f"table per task, with title = ...), not {json.dumps(err['input'])}"
            )
        elif err["type"] == "list_type" and isinstance(err["input"], str):
            # `depends_on = "a"`: the list it meant, written out (the same in TOML and JSON);
            # `tags = "a,b"` meant two.
            items = [item.strip() for item in err["input"].split(",") if item.strip()]
            meant = ", ".join(json.dumps(item) for item in items or [err["input"]])
            quoted = json.dumps(err["input"])
            parts.append(f"'{where}' must be a list, e.g. [{meant}], not the string {quoted}")
        else:
            # A validator's own message, without pydantic's "Value error, " before it.
            parts.append(f"'{where}': {err['msg'].removeprefix('Value error, ')}")
    return parts
