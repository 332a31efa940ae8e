"""One plan task as one Prefect task run: retries, caching, logging, its artifact.

- Retries only for ``TransientProviderError`` (a retry condition), with exponential backoff and
  jitter; a ``retry_after`` from the server is waited out before the retry. Every run starts
  from a clean worktree (``execute_task`` creates it anew).
- A failed verification or a permanent provider error fails the task run without retrying.
- The cache key is the session id, the task id and a hash of the task's spec and its
  dependencies' commits; results are stored as JSON in ``.aca/sessions/<id>/results/``. So a
  re-run or resume of the session returns completed tasks from cache without calling a
  provider, and no other session can hit this session's cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.concurrency.asyncio import concurrency

from aca_flows.agent.execute import TaskOutcome, execute_task
from aca_flows.errors import AcaError, PermanentProviderError, TransientProviderError
from aca_flows.flows.artifacts import task_markdown
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers.base import EventCallback, Provider, ProviderRequest, ProviderResponse
from aca_flows.settings import AcaConfig

__all__ = [
    "ActiveRun",
    "BudgetReached",
    "SpendGuard",
    "TaskRunFailed",
    "execute_plan_task",
    "options_for",
    "spec_hash",
]

RETRY_AFTER_CAP_SECONDS = 600


class TaskRunFailed(AcaError):
    """The agent finished but the task failed (verify never passed, a merge conflict stayed).
    Carries the outcome so its spend is still accounted."""

    exit_code = 1

    def __init__(self, outcome: TaskOutcome):
        super().__init__(outcome.failure_reason or "task failed")
        self.outcome = outcome


@dataclass
class ActiveRun:
    """What task runs of one flow run share in this process (providers are not parameters:
    they hold clients, limiters and locks)."""

    plan: ExecutionPlan
    workdir: Path
    session_id: str
    config: AcaConfig
    providers: dict[str, Provider]
    default_provider: str
    outcomes: dict[str, TaskOutcome] = field(default_factory=dict)

    def provider_for(self, task: Task) -> Provider:
        return self.providers[task.provider or self.default_provider]


# The flow registers its run here; task runs find it by session id.
ACTIVE_RUNS: dict[str, ActiveRun] = {}


class BudgetReached(PermanentProviderError):
    """The session's spend reached ``budget_usd``: the run stops (exit 3) and can be resumed."""

    exit_code = 3


class SpendMeter:
    """The session's spend in USD, as every provider call of the run adds to it."""

    def __init__(self, spent_usd: float, budget_usd: float | None):
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd

    def check(self) -> None:
        if self.budget_usd is not None and self.spent_usd >= self.budget_usd:
            raise BudgetReached(
                f"budget of ${self.budget_usd:.2f} reached (spent ${self.spent_usd:.4f}); "
                "`aca resume` with a higher --budget-usd continues",
                provider="",
            )


class SpendGuard:
    """The one place every provider call passes that knows the session's spend: it refuses a
    call once the budget is reached, so a running task cannot overspend it by much."""

    def __init__(self, inner: Provider, meter: SpendMeter):
        self.inner = inner
        self.name = inner.name
        self.meter = meter

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        self.meter.check()
        response = await self.inner.complete(request, on_event)
        self.meter.spent_usd += response.cost_usd
        return response


class GlobalLimitProvider:
    """Holds a slot of a Prefect global concurrency limit around every provider call, so
    several workers share one provider's capacity."""

    def __init__(self, inner: Provider, limit_name: str):
        self.inner = inner
        self.name = inner.name
        self.limit_name = limit_name

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        async with concurrency(self.limit_name, occupy=1):
            return await self.inner.complete(request, on_event)


def spec_hash(task: Task, dependency_commits: dict[str, str | None]) -> str:
    """What the task's result depends on: its spec and its dependencies' commits."""
    spec = task.model_dump(
        mode="json", include={"id", "title", "description", "dependencies", "verify", "metadata"}
    )
    blob = json.dumps({"spec": spec, "deps": dependency_commits}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_key(_context: Any, parameters: dict[str, Any]) -> str:
    raw = f"{parameters['session_id']}:{parameters['task_id']}:{parameters['spec_digest']}"
    return "aca-" + hashlib.sha256(raw.encode()).hexdigest()


def _is_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    return isinstance(state.data, TransientProviderError)


@task(cache_key_fn=_cache_key, persist_result=True, result_serializer="json")
async def execute_plan_task(session_id: str, task_id: str, spec_digest: str) -> dict[str, Any]:
    """Run one plan task with its coding agent; return its outcome as JSON-able data.

    Args:
        session_id: the session whose ``ActiveRun`` holds the plan and providers.
        task_id: the plan task to run.
        spec_digest: ``spec_hash`` of the task; part of the cache key.

    Returns:
        ``TaskOutcome`` as a dict: summary, commit, files, usage, cost, attempts, subtasks.

    Example:
        state = await execute_plan_task.with_options(**options_for(run, task))(
            run.session_id, task.id, spec_hash(task, {}), return_state=True
        )
    """
    run = ACTIVE_RUNS[session_id]
    task_ = run.plan.task(task_id)
    logger = get_run_logger()

    def log_line(record: dict[str, Any]) -> None:
        if run.config.logging.log_tool_calls:
            logger.info(_one_line(record))

    try:
        outcome = await execute_task(
            run.plan,
            task_id,
            workdir=run.workdir,
            session_id=session_id,
            provider=run.provider_for(task_),
            config=run.config,
            dependency_outcomes=run.outcomes,
            on_log=log_line,
        )
    except TransientProviderError as exc:
        if exc.retry_after:
            wait = min(exc.retry_after, RETRY_AFTER_CAP_SECONDS)
            logger.warning(f"{exc}; waiting {wait:.0f} s as the provider asked, then retrying")
            await asyncio.sleep(wait)
        raise
    await acreate_markdown_artifact(
        key=_artifact_key(session_id, task_id),
        markdown=task_markdown(task_, outcome),
        description=f"{task_id}: {outcome.display_status}",
    )
    if outcome.status != "completed":
        raise TaskRunFailed(outcome)
    return outcome.model_dump(mode="json")


def options_for(run: ActiveRun, task_: Task) -> dict[str, Any]:
    """``with_options`` for one task: name, result storage, retries with backoff."""
    retries = max((task_.max_attempts or run.config.session.max_attempts) - 1, 0)
    base = run.config.session.retry_backoff_seconds
    return {
        "name": "execute_plan_task",
        "task_run_name": f"{task_.id} {task_.title}"[:120],
        # A Path is local result storage that needs no saved block.
        "result_storage": run.workdir / ".aca" / "sessions" / run.session_id / "results",
        "retries": retries,
        "retry_delay_seconds": [base * 2**i for i in range(retries)] or 0,
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": _is_transient,
    }


def _artifact_key(session_id: str, task_id: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    raw = f"aca-{session_id}-{task_id}".lower()
    return "".join(ch if ch.isalnum() else "-" for ch in raw)[:100]


def _one_line(record: dict[str, Any]) -> str:
    kind = record.get("kind", "event")
    rest = {k: v for k, v in record.items() if k not in ("kind", "ts", "task_id")}
    text = json.dumps(rest, ensure_ascii=False, default=str)
    return f"{kind} {text[:300]}"
