"""aca — Automatic Coding Agent: task files run as DAGs of verified coding tasks on Prefect 3.

The public surface is what ``__all__`` lists; everything else may change. Names are imported
when first used (a module ``__getattr__``), so ``aca --help`` pays for none of them.
``prefect block register -m aca_flows`` finds the blocks here (``AcaConfigBlock``).

From a Prefect flow (docs/python-api.md)::

    from aca_flows import Plan, Task, aca_run

    plan = Plan(name="fix tests", tasks=[Task(id="fix", title="Make the tests pass")])
    summary = await aca_run(plan=plan, workdir=".")  # a subflow; returns a RunSummary
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AcaError": "aca_flows.errors",
    "ConfigError": "aca_flows.errors",
    "InputError": "aca_flows.errors",
    "PermanentProviderError": "aca_flows.errors",
    "PlanValidationError": "aca_flows.errors",
    "ProviderError": "aca_flows.errors",
    "TaskFileError": "aca_flows.errors",
    "TransientProviderError": "aca_flows.errors",
    "ExecutionPlan": "aca_flows.plan",
    "Plan": "aca_flows.plan",
    "Task": "aca_flows.plan",
    "TaskStatus": "aca_flows.plan",
    "load_execution_plan": "aca_flows.plan",
    "load_task_file": "aca_flows.plan",
    "plan_to_text": "aca_flows.plan",
    "AcaConfig": "aca_flows.settings",
    "load_config": "aca_flows.config_loader",
    "aca_run": "aca_flows.flows.aca_run",
    "AcaConfigBlock": "aca_flows.flows.blocks",
    "RunSummary": "aca_flows.flows.summary",
    "TaskSummary": "aca_flows.flows.summary",
}

__all__ = [
    "AcaConfig",
    "AcaConfigBlock",
    "AcaError",
    "ConfigError",
    "ExecutionPlan",
    "InputError",
    "PermanentProviderError",
    "Plan",
    "PlanValidationError",
    "ProviderError",
    "RunSummary",
    "Task",
    "TaskFileError",
    "TaskStatus",
    "TaskSummary",
    "TransientProviderError",
    "__version__",
    "aca_run",
    "load_config",
    "load_execution_plan",
    "load_task_file",
    "plan_to_text",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aca_flows' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from aca_flows.config_loader import load_config
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
    from aca_flows.flows.aca_run import aca_run
    from aca_flows.flows.blocks import AcaConfigBlock
    from aca_flows.flows.summary import RunSummary, TaskSummary
    from aca_flows.plan import (
        ExecutionPlan,
        Plan,
        Task,
        TaskStatus,
        load_execution_plan,
        load_task_file,
        plan_to_text,
    )
    from aca_flows.settings import AcaConfig
