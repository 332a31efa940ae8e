"""The ``aca-run`` flow: a plan runs as a DAG of Prefect task runs.

One task run per leaf task, named ``<task-id> <title>``, started when its dependencies have
completed (``wait_for`` draws the edges in the UI's run graph), higher priority first, at most
``max_concurrent`` at once. Subtasks proposed at run time become new task runs of the same
flow run. A failed task skips its dependents (NotReady in Prefect, Skipped in the session);
independent branches go on; the flow run ends Failed if any task failed.

The session (``.aca/sessions/<id>/``) mirrors every step, so the layout always matches what
Prefect recorded; a re-run with the same session id resumes it and never calls a provider for
a task that completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.context import get_run_context
from prefect.states import Cancelled, Failed, State

from aca_flows.agent.execute import TaskOutcome
from aca_flows.agent.subtasks import SubtaskProposalError, accept_subtasks
from aca_flows.errors import AcaError
from aca_flows.flows.artifacts import (
    plan_graph_markdown,
    plan_table,
    summary_markdown,
)
from aca_flows.flows.run_setup import RunRequest, open_run, recorded_state
from aca_flows.flows.task_run import (
    ACTIVE_RUNS,
    ActiveRun,
    TaskRunFailed,
    execute_plan_task,
    options_for,
    spec_hash,
)
from aca_flows.plan.dag import DagProgress
from aca_flows.providers.sdk_client import close_clients
from aca_flows.session.checkpoints import CheckpointPolicy, create_checkpoint
from aca_flows.session.events import TaskResult
from aca_flows.session.store import SessionStore
from aca_flows.session.usage import UsageEntry

__all__ = ["Interrupt", "aca_run", "interrupt_on_signals"]

INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Set by ``interrupt_on_signals`` (the CLI): the flow then turns SIGINT/SIGTERM into a stop.
_SIGNALS_WANTED = False


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within this block, a flow run started in this thread's event loop handles SIGINT and
    SIGTERM as an interrupt (see ``Interrupt``) instead of Prefect's crash handling.

    For the ``aca`` command only: a deployment run leaves SIGTERM to Prefect's runner, which
    uses it to cancel flow runs.
    """
    global _SIGNALS_WANTED
    previous, _SIGNALS_WANTED = _SIGNALS_WANTED, True
    try:
        yield
    finally:
        _SIGNALS_WANTED = previous


class Interrupt:
    """A stop asked for by a signal. The first signal stops new tasks from starting and gives
    the running ones ``grace_seconds`` to finish; after that, or at a second signal, they are
    cancelled."""

    def __init__(self, grace_seconds: float):
        self.grace_seconds = grace_seconds
        self.signal_name: str | None = None
        self.count = 0
        self.announced = False
        self._since: float | None = None
        self._changed = asyncio.Event()

    @property
    def requested(self) -> bool:
        return self.count > 0

    def request(self, signum: int) -> None:
        self.count += 1
        if self._since is None:
            self._since = time.monotonic()
            self.signal_name = signal.Signals(signum).name
        self._changed.set()

    def cancel_now(self) -> bool:
        """Running tasks must be cancelled: a second signal, or the grace period is over."""
        return self.count > 1 or (self.requested and self.grace_left() <= 0)

    def grace_left(self) -> float:
        if self._since is None:
            return float("inf")
        return self.grace_seconds - (time.monotonic() - self._since)

    async def wait(self, seen: int) -> None:
        """Until more than ``seen`` signals have arrived."""
        while self.count <= seen:
            self._changed.clear()
            await self._changed.wait()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM in the running loop while the block runs (if the CLI asked
        for it); the handlers found before are put back after."""
        if not _SIGNALS_WANTED:
            yield
            return
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in INTERRUPT_SIGNALS}
        try:
            for sig in INTERRUPT_SIGNALS:
                loop.add_signal_handler(sig, self.request, sig)
        except (ValueError, RuntimeError):  # not the main thread: signals are not ours
            installed = False
        else:
            installed = True
        if not installed:
            yield
            return
        try:
            yield
        finally:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)


@flow(name="aca-run", validate_parameters=True, log_prints=False)
async def aca_run(
    task_file: str | None = None,
    execution_plan: str | None = None,
    workdir: str = ".",
    provider: str | None = None,
    model: str | None = None,
    max_concurrent: int | None = None,
    budget_usd: float | None = None,
    session_id: str | None = None,
    context: list[str] | None = None,
    append_system_prompt: str | None = None,
    use_intelligent_parser: bool = False,
    init_git: bool = False,
    config_file: str | None = None,
    record: str | None = None,
) -> dict[str, Any]:
    """Run a task file or execution plan in ``workdir``; returns the session summary.

    Give ``session_id`` of an existing session to resume it: completed tasks are not run
    again (nor is any provider called for them). Exit status for callers: the flow run is
    Failed if any task failed.
    """
    parameters = dict(locals(), context=context or [])
    session_name = None
    flow_run = getattr(get_run_context(), "flow_run", None)
    if flow_run is not None and flow_run.deployment_id is not None:
        # A deployment run: the session is named after the flow run, and its id is derived
        # from the flow run, so a Prefect retry of the run resumes the same session.
        session_name = flow_run.name
        parameters["session_id"] = session_id or deployment_session_id(flow_run)
    request = RunRequest(session_name=session_name, **parameters)
    try:
        store, run = open_run(request)
    except AcaError as exc:
        # Bad input, or the session is in use: a message for the user, not a traceback.
        get_run_logger().error(str(exc))
        return Failed(message=str(exc), data=exc)
    ACTIVE_RUNS[run.session_id] = run
    interrupt = Interrupt(run.config.session.interrupt_grace_seconds)
    try:
        with interrupt.installed():
            if session_name is None:
                await _rename_flow_run(store.session.name)
            summary = await _drive(store, run, request, interrupt)
    except (asyncio.CancelledError, KeyboardInterrupt):
        # Interrupted: what finished is recorded; running tasks start again on resume.
        create_checkpoint(store, trigger="interrupt", description="interrupted")
        store.finish("interrupted", "interrupted; `aca resume` continues")
        raise
    except Exception as exc:
        store.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        ACTIVE_RUNS.pop(run.session_id, None)
        store.close()
        with contextlib.suppress(Exception):  # a client that cannot close is no reason to fail
            await close_clients()
    if summary["status"] == "interrupted":
        return Cancelled(message=summary["stopped_reason"], data=summary)
    if summary["failed"]:
        return Failed(
            message=f"{summary['failed']} task(s) failed: {', '.join(summary['failed_ids'])}",
            data=summary,
        )
    return summary


async def _drive(
    store: SessionStore, run: ActiveRun, request: RunRequest, interrupt: Interrupt
) -> dict[str, Any]:
    logger = get_run_logger()
    dag = DagProgress(run.plan)
    states: dict[str, State] = {}
    recorded_skips: set[str] = set()
    limit = run.config.session.max_concurrent_tasks
    budget = run.config.session.budget_usd
    policy = CheckpointPolicy.from_config(run.config.session)
    await acreate_table_artifact(
        key=_key("plan", run.session_id), table=plan_table(run.plan), description="The plan"
    )
    await acreate_markdown_artifact(
        key=_key("graph", run.session_id),
        markdown=plan_graph_markdown(run.plan),
        description="The plan as a graph",
    )
    progress_id = await acreate_progress_artifact(
        progress=_percent(dag), key=_key("progress", run.session_id), description="Tasks done"
    )
    create_checkpoint(store, trigger="auto", description="plan compiled")

    running: dict[asyncio.Task, str] = {}
    stopped_reason: str | None = None
    while True:
        _record_settled(store, dag, recorded_skips)
        await _mark_not_ready(run, dag, states, recorded_skips)
        spent = _spent(store)
        if budget is not None and spent >= budget and stopped_reason is None:
            stopped_reason = f"budget of ${budget:.2f} reached (spent ${spent:.4f})"
            logger.warning(f"{stopped_reason}; no new task starts")
        if stopped_reason is None and not interrupt.requested:
            for task in dag.ready():
                if len(running) >= limit:
                    break
                dag.start(task.id)
                store.task_started(task.id, provider=task.provider or run.default_provider)
                waits = [states[d] for d in dag.dependency_ids(task) if d in states]
                running[asyncio.create_task(_run_one(run, task.id, waits))] = task.id
        if not running:
            break
        if interrupt.requested and not interrupt.announced:
            interrupt.announced = True
            logger.warning(
                f"{interrupt.signal_name}: no new task starts; {len(running)} running task(s) "
                f"get {interrupt.grace_seconds:g} s to finish (signal again to stop them now)"
            )
        if interrupt.cancel_now():
            await _cancel_running(store, run, dag, running, states, logger)
            break
        done = await _wait_for_tasks(running, interrupt)
        for finished in done:
            task_id = running.pop(finished)
            state = finished.result()
            states[task_id] = state
            limit_reason = await _finish(store, run, dag, task_id, state, logger)
            if limit_reason and stopped_reason is None:
                stopped_reason = limit_reason
                logger.warning(f"{limit_reason}; no new task starts")
        await aupdate_progress_artifact(progress_id, progress=_percent(dag))
        completed = dag.counts().get("completed", 0)
        now = datetime.now(UTC)
        if policy.due(now, completed):
            create_checkpoint(store, trigger="auto")
            policy.mark(now, completed)

    _record_settled(store, dag, recorded_skips)
    counts = dag.counts()
    failed_ids = [t.id for t in run.plan.tasks if t.status.state == "failed"]
    if interrupt.requested and not _all_settled(dag):
        stopped_reason = f"interrupted by {interrupt.signal_name}"
        logger.warning(f"{stopped_reason}; `aca resume {run.session_id}` continues")
        create_checkpoint(store, trigger="interrupt", description=stopped_reason)
        store.finish("interrupted", f"{stopped_reason}; `aca resume` continues")
        return _summary(run, store, "interrupted", stopped_reason, counts, failed_ids)
    usage = store.session.usage
    await acreate_markdown_artifact(
        key=_key("summary", run.session_id),
        markdown=summary_markdown(run.plan, counts, usage, store.branch),
        description="Tokens and cost by provider and model",
    )
    if stopped_reason:
        create_checkpoint(store, trigger="budget", description=stopped_reason)
        store.finish("stopped", stopped_reason)
    else:
        store.finish("failed" if failed_ids else "completed")
        create_checkpoint(store, trigger="end")
    status = "stopped" if stopped_reason else ("failed" if failed_ids else "completed")
    return _summary(run, store, status, stopped_reason, counts, failed_ids)


def _summary(run, store, status, stopped_reason, counts, failed_ids) -> dict[str, Any]:
    return {
        "session_id": run.session_id,
        "branch": store.branch,
        "status": status,
        "stopped_reason": stopped_reason,
        "counts": counts,
        "failed": len(failed_ids),
        "failed_ids": failed_ids,
        "no_change_ids": [t for t, o in run.outcomes.items() if o.completed_without_change],
        "cost_usd": _spent(store),
    }


async def _wait_for_tasks(
    running: dict[asyncio.Task, str], interrupt: Interrupt
) -> set[asyncio.Task]:
    """Until a task finishes, a signal arrives, or the grace period of an interrupt ends."""
    signalled = asyncio.create_task(interrupt.wait(interrupt.count))
    timeout = interrupt.grace_left() if interrupt.requested else None
    try:
        done, _ = await asyncio.wait(
            [*running, signalled], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        signalled.cancel()
    return {t for t in done if t in running}


async def _cancel_running(
    store, run: ActiveRun, dag: DagProgress, running: dict[asyncio.Task, str], states, logger
) -> None:
    """Cancel the running tasks; a task that finished meanwhile is recorded, the others stay
    unfinished (``aca resume`` starts them again from a clean worktree)."""
    logger.warning(f"cancelling {len(running)} running task(s): {', '.join(running.values())}")
    for task in running:
        task.cancel()
    results = await asyncio.gather(*running, return_exceptions=True)
    for task_id, result in zip(list(running.values()), results, strict=True):
        if isinstance(result, State) and result.is_completed():
            states[task_id] = result
            await _finish(store, run, dag, task_id, result, logger)
    running.clear()


def _all_settled(dag: DagProgress) -> bool:
    return all(t.status.state in ("completed", "failed", "skipped") for t in dag.leaves())


async def _run_one(run: ActiveRun, task_id: str, waits: list[State]) -> State:
    task = run.plan.task(task_id)
    digest = spec_hash(task, {d: _commit_of(run, d) for d in task.dependencies})
    runner = execute_plan_task.with_options(**options_for(run, task))
    return await runner(run.session_id, task_id, digest, wait_for=waits, return_state=True)


async def _finish(
    store, run: ActiveRun, dag: DagProgress, task_id: str, state: State, logger
) -> str | None:
    """Mirror a finished task run into the session and the DAG. Returns why the run must
    stop (a budget or usage limit), if it must."""
    if state.is_completed():
        outcome = TaskOutcome.model_validate(await state.aresult())
        run.outcomes[task_id] = outcome
        store.task_completed(task_id, _task_result(outcome))
        if outcome.proposed_subtasks:
            try:
                children = accept_subtasks(run.plan, task_id, outcome.proposed_subtasks)
            except SubtaskProposalError as exc:
                # The task's own work is verified and landed; bad proposals are dropped.
                logger.warning(f"{task_id}: proposed subtasks ignored: {exc}")
            else:
                store.subtasks_added(task_id, children)
                dag.refresh()
                logger.info(f"{task_id} proposed {len(children)} subtask(s)")
        dag.complete(task_id)
        return None
    error = await state.aresult(raise_on_failure=False)
    if getattr(error, "exit_code", None) == 3:
        # A budget or usage limit stopped the task before it finished: not a failure; it
        # stays unfinished in the session, and `aca resume` runs it again.
        dag.release(task_id)
        return str(error)
    if isinstance(error, TaskRunFailed):
        run.outcomes[task_id] = error.outcome
        reason = error.outcome.failure_reason or "failed"
        store.task_failed(task_id, reason, usage=_usage_entries(error.outcome))
    else:
        reason = f"{type(error).__name__}: {error}" if error else (state.message or "failed")
        store.task_failed(task_id, reason)
    logger.error(f"{task_id} failed: {reason.splitlines()[0]}")
    dag.fail(task_id, reason)


def _record_settled(store: SessionStore, dag: DagProgress, recorded: set[str]) -> None:
    """Skips and closed groups decided by the DAG go into the session once."""
    for task in dag.plan.tasks:
        if task.id in recorded:
            continue
        known = recorded_state(store, task.id)
        if task.status.state == "skipped" and known != "skipped":
            store.task_skipped(task.id, task.status.reason or "skipped")
            recorded.add(task.id)
        elif (
            task.children
            and task.status.state in ("completed", "failed")
            and known
            not in (
                "completed",
                "failed",
            )
        ):
            if task.status.state == "completed":
                store.task_completed(task.id, TaskResult())
            else:
                store.task_failed(task.id, task.status.reason or "failed")
            recorded.add(task.id)


async def _mark_not_ready(run, dag, states, recorded) -> None:
    """Dependents of a failed task get a task run that Prefect leaves NotReady."""
    for task in dag.plan.tasks:
        if (
            task.status.state == "skipped"
            and not task.children
            and task.id not in states
            and (task.status.reason or "").startswith("dependency")
        ):
            waits = [states[d] for d in dag.dependency_ids(task) if d in states]
            if waits:
                states[task.id] = await _run_one(run, task.id, waits)


def _task_result(outcome: TaskOutcome) -> TaskResult:
    return TaskResult(
        commit=outcome.commit_sha,
        outcome=outcome.outcome,
        no_change_reason=outcome.no_change_reason,
        summary=outcome.summary,
        usage=_usage_entries(outcome),
    )


def _usage_entries(outcome: TaskOutcome) -> list[UsageEntry]:
    if outcome.already_completed or not outcome.turns:
        return []
    return [
        UsageEntry(
            provider=outcome.provider,
            model=outcome.model or "",
            usage=outcome.usage,
            cost_usd=outcome.cost_usd,
            calls=outcome.turns,
        )
    ]


def _commit_of(run: ActiveRun, task_id: str) -> str | None:
    outcome = run.outcomes.get(task_id)
    return outcome.commit_sha if outcome else None


def _spent(store: SessionStore) -> float:
    return sum(u.cost_usd for u in store.session.usage)


def _percent(dag: DagProgress) -> float:
    leaves = dag.leaves()
    if not leaves:
        return 100.0
    done = sum(1 for t in leaves if t.status.state in ("completed", "failed", "skipped"))
    return round(100.0 * done / len(leaves), 1)


def _key(kind: str, session_id: str) -> str:
    return f"aca-{kind}-{session_id}".lower()


def deployment_session_id(flow_run) -> str:
    """Stable for the flow run, retries included; sorts by time like other session ids."""
    when = flow_run.expected_start_time or flow_run.created
    return f"{when.astimezone(UTC):%Y%m%d-%H%M%S}-{flow_run.id.hex[:6]}"


async def _rename_flow_run(name: str) -> None:
    """The flow run is named after the session (deployment runs name the session instead)."""
    from prefect.client.orchestration import get_client

    ctx = get_run_context()
    flow_run = getattr(ctx, "flow_run", None)
    if flow_run is None or flow_run.name == name:
        return
    async with get_client() as client:
        await client.update_flow_run(flow_run.id, name=name)
