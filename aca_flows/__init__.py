"""aca — Automatic Coding Agent: task files run as DAGs of verified coding tasks on Prefect 3.

The public surface is what ``__all__`` lists; everything else may change.
"""

from aca_flows.errors import (
    AcaError,
    ConfigError,
    InputError,
    PermanentProviderError,
    PlanValidationError,
    ProviderError,
    TaskFileError,
    TransientProviderError,
)
from aca_flows.plan import (
    ExecutionPlan,
    Task,
    TaskStatus,
    load_execution_plan,
    load_task_file,
    plan_to_text,
)
from aca_flows.settings import AcaConfig, load_config

__version__ = "0.1.0"

__all__ = [
    "AcaConfig",
    "AcaError",
    "ConfigError",
    "ExecutionPlan",
    "InputError",
    "PermanentProviderError",
    "PlanValidationError",
    "ProviderError",
    "Task",
    "TaskFileError",
    "TaskStatus",
    "TransientProviderError",
    "__version__",
    "load_config",
    "load_execution_plan",
    "load_task_file",
    "plan_to_text",
]
