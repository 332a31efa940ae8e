"""The providers of a run: checked able to work before anything is spent, then built, each
wrapped in what every call passes (rate limits, the Prefect concurrency limit, the budget and
the session's ledger, retries), and their SDKs imported while the run sets up.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from aca_flows._startup import collect_as_usual
from aca_flows.agent.transcript import TaskLog
from aca_flows.flows.provider_limits import prefect_limits_for
from aca_flows.flows.run_inputs import tasks_left
from aca_flows.flows.secret_keys import provider_environ, providers_environ
from aca_flows.flows.spend import (
    CALL_OWNER,
    BudgetGate,
    CallLedger,
    CallOwner,
    SpendGuard,
    SpendMeter,
    call_ceiling,
    unbounded_runs_warning,
)
from aca_flows.flows.task_run import ACTIVE_RUNS, GlobalLimitProvider
from aca_flows.flows.unpriced import free_provider
from aca_flows.plan import ExecutionPlan
from aca_flows.prices import PRICED_BY_TABLE
from aca_flows.providers import get_provider, rate_limiter_for, require_providers
from aca_flows.providers.base import Provider, ProviderResponse
from aca_flows.providers.ratelimit import account_state_file
from aca_flows.providers.retry import describe_retry, with_call_retries
from aca_flows.session.redact import redact
from aca_flows.session.store import SessionStore
from aca_flows.settings import AcaConfig

if TYPE_CHECKING:
    from aca_flows.flows.run_setup import RunRequest

__all__ = [
    "PRICED_BY_TABLE",
    "build_providers",
    "import_sdks_in_background",
    "providers_left",
    "require_working_providers",
    "run_logger",
]


def build_providers(
    names: set[str], config: AcaConfig, store: SessionStore, request: RunRequest
) -> dict[str, Provider]:
    from aca_flows.providers import RateLimitedProvider

    # Budget checks read the session's ledger: spend of earlier runs of the session counts.
    meter = SpendMeter(
        lambda: store.session.cost_usd,
        config.session.budget_usd,
        costliest_call_usd=store.session.typical_call_usd,
        on_hold=_tell_wait,
    )
    ledger = _ledger_of(store)
    if warning := unbounded_runs_warning(names, config):
        run_logger().warning(warning)
    built: dict[str, Provider] = {}
    for name in sorted(names):
        environ = provider_environ(name, config)
        provider = get_provider(
            name,
            config,
            environ=environ,
            record=Path(request.record) if request.record else None,
            scrub=redact,
        )
        # The spend checked innermost, right before a call is made, after every wait for a
        # rate limit or a concurrency slot: checked only before them, calls that waited went
        # out long after the spend had reached the budget (7 calls over it).
        provider = SpendGuard(provider, meter, ledger, free=free_provider(name, config))
        if name != "replay":  # a cassette has no rate limits to respect
            shared = prefect_limits_for(name, config, say=run_logger().info)
            limiter = rate_limiter_for(
                name,
                config,
                # Per account, not per session: the 5-hour block is the account's.
                state_file=account_state_file(name, environ, config.provider(name).base_url),
                local_rates=shared is None,
                on_notice=_tell_wait,
                stopping=functools.partial(_run_stopping, store.session_id),
            )
            provider = RateLimitedProvider(provider, limiter, shared)
        limit_name = config.provider(name).concurrency_limit
        if limit_name:
            provider = GlobalLimitProvider(provider, limit_name)
        # The budget's room first, before any permit or slot is held.
        provider = BudgetGate(provider, meter, call_ceiling(name, config))
        # Retries outermost: each try passes the budget check and its spend reaches the
        # ledger, and a retry's wait holds no concurrency slot.
        built[name] = with_call_retries(
            provider,
            config.session,
            on_wait=_log_call_retry(store),
            # No call retried once the run is stopping: its Ctrl-C may be what failed it.
            stopping=functools.partial(_run_stopping, store.session_id),
        )
    return built


def _run_stopping(session_id: str) -> bool:
    """Whether the session's run, registered once it started (``ACTIVE_RUNS``), is stopping."""
    run = ACTIVE_RUNS.get(session_id)
    return run is not None and run.stopping()


def _tell_wait(message: str) -> None:
    """A provider call's long wait (rate limits, calls in flight), or a paid call the budget
    cannot count (no price), goes to the run's log: the terminal and the Prefect UI."""
    run_logger().warning(message)


def _ledger_of(store: SessionStore) -> CallLedger:
    """Journal each returned provider call as a ``call`` event of the session (off the event
    loop: other tasks go on while it is fsynced)."""

    def record(
        provider: str,
        model: str,
        response: ProviderResponse,
        owner: CallOwner | None,
        unpriced: bool,
        calls: int,
    ):
        return store.off_loop(
            store.call_recorded,
            provider=provider,
            model=model,
            usage=response.usage,
            cost_usd=response.cost_usd,
            task_id=owner.task_id if owner else None,
            attempt=owner.attempt if owner else None,
            calls=calls,
            unpriced=unpriced,
        )

    return record


def _log_call_retry(store: SessionStore):
    """A call's retry is never silent: it goes to the task run's log (else aca's log) and to
    the task's own log in the session."""

    def log(seconds: float, error: Exception, retry_number: int, retries: int) -> None:
        owner = CALL_OWNER.get()
        task = f"{owner.task_id}: " if owner is not None else ""  # session.log: whose call
        run_logger().warning(
            task + describe_retry(error, seconds, retry_number, retries, "this call")
        )
        if owner is not None:
            TaskLog(store.paths, owner.task_id).write(
                "call_retry",
                attempt=owner.attempt,
                retry=retry_number,
                of=retries,
                wait_seconds=round(seconds, 3),
                error=str(error),
            )

    return log


def run_logger():
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("aca_flows")


# Vendor SDKs take a second to import. A thread imports them while the run sets up (the
# session, git, the plan's artifacts: mostly waits), instead of before it; a provider's own
# ``import`` waits for the thread's (the import lock), so nothing runs half-imported.
_SDK_MODULES = {"anthropic": "anthropic", "openai": "openai", "claude-code": "claude_agent_sdk"}


def import_sdks_in_background(names: set[str]) -> None:
    threading.Thread(target=_import_sdks, args=(names,), name="aca-sdk-import").start()


def _import_sdks(names: set[str]) -> None:
    import importlib

    try:
        for name in names:
            if name in _SDK_MODULES:
                # A failed import is the provider's to report: it imports the SDK when used.
                with contextlib.suppress(Exception):
                    importlib.import_module(_SDK_MODULES[name])
    finally:
        collect_as_usual()  # start-up is over (aca_flows/_startup.py)


def providers_left(plan: ExecutionPlan, default: str) -> set[str]:
    """The providers of the tasks a resume may still run: none when every task completed, so
    a finished session resumes (and ends completed) without its keys or its config."""
    left = tasks_left(plan)
    # The run's own provider too while work is left: subtasks a task proposes use it.
    return {default} | {t.provider for t in left if t.provider} if left else set()


def require_working_providers(names, config: AcaConfig, plan: ExecutionPlan) -> None:
    """Each provider in ``names`` can work (keys from Secret blocks included) with every
    model ``plan``'s tasks left use with it, or the run ends here, before anything is spent
    or committed."""
    models = plan.models_by_provider(config.session.provider)
    require_providers(names, config, providers_environ(names, config), models)
