"""A plan task's Prefect options: attempts and the backoff between them come from the config."""

from __future__ import annotations

from pathlib import Path

from aca_flows.flows.task_run import ActiveRun, options_for
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.settings import AcaConfig, SessionSection


def active_run(**session) -> ActiveRun:
    plan = ExecutionPlan(
        name="p", tasks=[Task(id="own", title="t", max_attempts=2), Task(id="plain", title="t")]
    )
    config = AcaConfig(session=SessionSection(**session))
    return ActiveRun(plan, Path("/repo"), "s1", config, providers={}, default_provider="x")


def test_max_attempts_and_retry_backoff_set_the_task_runs_retries():
    run = active_run(max_attempts=4, retry_backoff_seconds=5)

    plain = options_for(run, run.plan.task("plain"))
    own = options_for(run, run.plan.task("own"))

    assert plain["retries"] == 3
    assert plain["retry_delay_seconds"] == [5, 10, 20]  # exponential from the backoff
    assert own["retries"] == 1  # the task's own max_attempts wins
    assert options_for(active_run(max_attempts=1), run.plan.task("plain"))["retries"] == 0
