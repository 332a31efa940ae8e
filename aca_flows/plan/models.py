"""The plan: pydantic models of tasks and execution plans.

An ``ExecutionPlan`` holds its tasks as a flat list; the tree is kept by ``parent_id`` and
``children``, the DAG by ``dependencies``. These models are what ``--dump-plan`` writes and
``--execution-plan`` reads, and the JSON Schema of ``aca plan schema`` is generated from them.
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

SCHEMA_VERSION = 1


def _has_words(title: str) -> str:
    if not title.strip():  # `title = "   "` would send the agent a task of nothing
        raise ValueError("the title is only spaces; say what the task is")
    return title


NUL_PROBLEM = "holds a NUL character (\\u0000), which no command, commit or path can take"


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError(f"it {NUL_PROBLEM}; remove it")
    return text


# A task's title: what its agent is asked to do, so never empty nor only spaces.
Title = Annotated[str, Field(min_length=1), AfterValidator(_has_words)]
# What an agent proposes to become a command line, a commit or a path (the plan's own fields
# are checked when a plan is loaded, ``validate.py``: a session recorded before is read as it
# was written).
Plain = Annotated[str, AfterValidator(_no_nul)]
PlainTitle = Annotated[Title, AfterValidator(_no_nul)]


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class StrictModel(BaseModel):
    """Unknown fields are errors: a typo in an edited plan must not be silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        """Higher runs first among ready tasks."""
        return list(Priority).index(self)


class Complexity(StrEnum):
    trivial = "trivial"
    simple = "simple"
    moderate = "moderate"
    complex = "complex"
    epic = "epic"


class Strategy(StrEnum):
    sequential = "sequential"
    parallel = "parallel"
    intelligent = "intelligent"


StateName = Literal["pending", "in_progress", "blocked", "completed", "failed", "skipped"]
_STATES_WITH_REASON = {"blocked", "failed", "skipped"}


class TaskStatus(StrictModel):
    """Pending | InProgress | Blocked(reason) | Completed | Failed(reason) | Skipped(reason).

    Written as ``{"state": "failed", "reason": "..."}``; a bare state name such as
    ``"pending"`` is accepted on input for states without a reason.
    """

    state: StateName = "pending"
    reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"state": value}
        return value

    @model_validator(mode="after")
    def _reason_matches_state(self) -> TaskStatus:
        if self.state in _STATES_WITH_REASON and not self.reason:
            # Met in a hand-edited plan, whose tasks start pending: that fix first.
            raise ValueError(
                f"status {self.state!r} needs a reason; but a plan to run starts its tasks "
                '"pending" (or "completed", to pass them over)'
            )
        if self.state not in _STATES_WITH_REASON and self.reason is not None:
            raise ValueError(f"status {self.state!r} takes no reason")
        return self

    @property
    def skipped_for_failure(self) -> bool:
        """Skipped because a dependency failed (``dependency `a` failed``): a resume runs the
        failed task again, and this one after it."""
        return self.state == "skipped" and (self.reason or "").startswith("dependency")

    @property
    def is_done(self) -> bool:
        """Completed, or left out: what a resume will not run."""
        return self.state == "completed" or (
            self.state == "skipped" and not self.skipped_for_failure
        )

    def __str__(self) -> str:
        return f"{self.state}: {self.reason}" if self.reason else self.state


class FileRef(StrictModel):
    """A file attached to a task. ``content`` is its text, read when the task file was loaded,
    so a dumped plan is self-contained."""

    path: str
    content: str | None = None


class TaskMetadata(StrictModel):
    priority: Priority = Priority.normal
    estimated_complexity: Complexity | None = None
    repository_refs: list[str] = Field(default_factory=list)
    file_refs: list[FileRef] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class Task(StrictModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=80)
    title: Title
    description: str = ""
    status: TaskStatus = Field(default_factory=TaskStatus)
    parent_id: str | None = None
    children: list[str] = Field(default_factory=list)
    # ``depends_on``: the task files' word for it, and the Python API's (``Task(depends_on=...)``).
    dependencies: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("dependencies", "depends_on")
    )
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    metadata: TaskMetadata = Field(default_factory=TaskMetadata)
    verify: str | None = Field(
        default=None, description="Shell command that must pass before the work is committed."
    )
    provider: str | None = Field(default=None, description="Overrides the run's provider.")
    model: str | None = Field(default=None, description="Overrides the run's model.")
    max_attempts: StrictInt | None = Field(default=None, ge=1, le=20)
    network: StrictBool | None = Field(
        default=None,
        description="Let this task's commands use the network (default: [sandbox] network).",
    )


class SetupCommand(StrictModel):
    """A command run in each task's worktree before its agent starts (``agent/setup.py``)."""

    name: str
    command: str
    working_dir: str | None = None
    timeout_seconds: StrictInt = Field(default=600, ge=1)
    required: StrictBool = True
    network: StrictBool | None = Field(
        default=None,
        description="true: the network also while the worktree holds no work of this "
        "session's agents (the commit it started from); false: never. Default: as the "
        "task's commands.",
    )


class ExecutionPlan(StrictModel):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    description: str = ""
    strategy: Strategy = Strategy.intelligent
    max_concurrent: StrictInt | None = Field(default=None, ge=1, le=64)
    setup_commands: list[SetupCommand] = Field(default_factory=list)
    context_hints: list[str] = Field(default_factory=list)
    append_system_prompt: str | None = None
    verify: str | None = Field(
        default=None, description="Default verify command for tasks that name none."
    )
    tasks: list[Task] = Field(default_factory=list)

    def task(self, task_id: str) -> Task:
        """The task with this id (the first, were ids repeated); ``KeyError`` if none.

        Looked up through an index of positions, checked at every use and rebuilt when the
        task list changed, so the engine's lookups stay constant-time in big plans."""
        tasks = self.tasks
        positions = _positions_of(self)
        position = positions.get(task_id) if positions is not None else None
        if position is None or position >= len(tasks) or tasks[position].id != task_id:
            positions = {}
            for index, task in enumerate(tasks):
                positions.setdefault(task.id, index)
            _remember_positions(self, positions)
            position = positions.get(task_id)
            if position is None:
                raise KeyError(task_id)
        return tasks[position]

    def with_run_context(
        self, context: list[str], append_system_prompt: str | None
    ) -> ExecutionPlan:
        """This plan with ``--context`` hints added and ``--append-system-prompt`` set."""
        updates: dict[str, object] = {}
        if context:
            updates["context_hints"] = [*self.context_hints, *context]
        if append_system_prompt:
            updates["append_system_prompt"] = append_system_prompt
        return self.model_copy(update=updates) if updates else self

    def provider_names(self, default: str) -> set[str]:
        """The providers a run of this plan uses: ``default`` (the run's), and any a task
        names."""
        return {default} | {t.provider for t in self.tasks if t.provider}

    def models_by_provider(self, default: str) -> dict[str, set[str | None]]:
        """The models the tasks left to run name, by the provider each runs on (``default``:
        the run's, whose model subtasks proposed at run time use): a task's ``model=``, or
        ``None`` for the model the configuration gives it (``AcaConfig.model_for``)."""
        used: dict[str, set[str | None]] = {default: {None}}
        for task in self.leaves():
            if not task.status.is_done:
                used.setdefault(task.provider or default, set()).add(task.model)
        return used

    def roots(self) -> list[Task]:
        return [t for t in self.tasks if t.parent_id is None]

    def leaves(self) -> list[Task]:
        """The tasks that run: those without subtasks. A group runs nothing of its own."""
        return [t for t in self.tasks if not t.children]

    def counts(self) -> dict[str, int]:
        """How many of the tasks that run (``leaves``) are in each state: what every view of a
        session counts (docs/engine.md, "How tasks are counted"). Groups are left out: a group
        fails with its subtask, so counting it told one failure as two."""
        counts: dict[str, int] = {}
        for task in self.leaves():
            counts[task.status.state] = counts.get(task.status.state, 0) + 1
        return counts


# The Python API's name for it: ``Plan(name=..., tasks=[Task(...), ...])``.
Plan = ExecutionPlan


def verify_command_for(plan: ExecutionPlan, task: Task) -> str | None:
    """The task's own verify command, else the plan's default, else None."""
    return (task.verify or plan.verify or "").strip() or None


# ExecutionPlan.task's index: plan id -> (the plan, weakly; its tasks' positions). Kept out of
# the model, so it is neither dumped, copied nor compared; dropped with its plan.
_TASK_POSITIONS: dict[int, tuple[weakref.ref, dict[str, int]]] = {}


def _positions_of(plan: ExecutionPlan) -> dict[str, int] | None:
    entry = _TASK_POSITIONS.get(id(plan))
    return entry[1] if entry is not None and entry[0]() is plan else None


def _remember_positions(plan: ExecutionPlan, positions: dict[str, int]) -> None:
    key = id(plan)
    _TASK_POSITIONS[key] = (
        weakref.ref(plan, lambda _ref, key=key: _TASK_POSITIONS.pop(key, None)),
        positions,
    )
