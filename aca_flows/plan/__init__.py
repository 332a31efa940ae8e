"""Plans: pydantic models of tasks and plans, loaders, validation and rendering."""

from aca_flows.plan.io import load_execution_plan, load_task_file, load_task_text, plan_to_text
from aca_flows.plan.models import (
    Complexity,
    ExecutionPlan,
    FileRef,
    Plan,
    Priority,
    SetupCommand,
    Strategy,
    Task,
    TaskMetadata,
    TaskStatus,
)
from aca_flows.plan.validate import check_plan

__all__ = [
    "Complexity",
    "ExecutionPlan",
    "FileRef",
    "Plan",
    "Priority",
    "SetupCommand",
    "Strategy",
    "Task",
    "TaskMetadata",
    "TaskStatus",
    "check_plan",
    "load_execution_plan",
    "load_task_file",
    "load_task_text",
    "plan_to_text",
]
