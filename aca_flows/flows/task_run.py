"""One plan task as one Prefect task run: retries, caching, logging, its artifact.

- Two depths of retry. A transient error on one provider call is retried on that call
  (``providers.retry``, keeping the conversation). Only when those retries are used up does
  the attempt fail with ``TransientProviderError``; then, and only then, Prefect retries the
  task run (a retry condition), as a clean attempt from a new worktree. ``max_attempts``
  counts these attempts of the whole task; each is journalled (``task_started``;
  ``task_failed`` with ``will_retry`` when another follows). The exponential backoff with
  jitter before an attempt is waited inside the task run, not by Prefect: a stop of the run
  ends the wait at once, and the attempt never starts (the task run ends Cancelled).
- A task run cut off by the run's stop (its grace period over, a second signal, a cancel from
  the UI, a lost server) ends Cancelled ("Interrupted"), as one that ended unfinished inside
  the grace period does, not Crashed: the stop cancels a task run only while it is in its
  task function (``ActiveRun.cut_short``), which catches the cancellation. Prefect calls a
  cancellation anywhere else (its engine starting the task run, writing its result) a crash.
- A failed verification or a permanent provider error fails the task run without retrying.
- Every provider call passes ``SpendGuard`` (``spend.py``): it keeps the budget and puts each
  call that returns on the session's ledger at once, with the task and attempt that made it
  (``CALL_OWNER``), so no spend is lost whatever happens to the attempt.
- Results are stored as JSON in ``.aca/sessions/<id>/results/<task-id>-<task-run-id>.json``.
  Prefect's cache is not used: the storage key is unique to the task run, so nothing is ever
  read back from it. A resumed session skips completed tasks from its record and its branch
  before any task run starts; a cached result could claim work the branch no longer holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.concurrency.asyncio import concurrency
from prefect.context import TaskRunContext
from prefect.states import Cancelled, State
from prefect.utilities.math import clamped_poisson_interval

from aca_flows._files import readable, readable_data
from aca_flows._words import shown
from aca_flows.agent.execute import TaskOutcome, execute_task, make_worktree
from aca_flows.agent.run_worktrees import RunWorktrees
from aca_flows.errors import (
    AcaError,
    ProviderCannotServe,
    TransientProviderError,
)
from aca_flows.flows.artifacts import first_line
from aca_flows.flows.log_batch import LineBatch
from aca_flows.flows.log_lines import describe_record
from aca_flows.flows.spend import CALL_OWNER, CallOwner
from aca_flows.flows.stop_reasons import (
    SLOT_REFUSED,
    WAIT_ANSWERS,
    branch_lost_stop,
    branch_reset_stop,
    cannot_serve_stop,
    concurrency_limit_stop,
    rate_limited_stop,
    resume_of_run,
)
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers.base import EventCallback, Provider, ProviderRequest, ProviderResponse
from aca_flows.providers.ratelimit import UsageLimitReached
from aca_flows.session.events import StopTrigger
from aca_flows.session.redact import redact, redact_error, redact_text
from aca_flows.settings import AcaConfig
from aca_flows.workspace.repository import (
    SessionBranchCheckedOut,
    SessionBranchLost,
    SessionBranchReset,
)

if TYPE_CHECKING:
    from aca_flows.flows.publishing import ProgressArtifact
    from aca_flows.session.record import PendingQuestion
    from aca_flows.session.store import SessionStore

__all__ = [
    "LIMIT_STOPPED",
    "ActiveRun",
    "TaskRunFailed",
    "execute_plan_task",
    "limit_reached",
    "options_for",
    "run_tags",
    "runner_for",
    "task_run_name",
    "task_tags",
    "worktrees_removed",
]


class TaskRunFailed(AcaError):
    """The agent finished but the task failed (verify never passed, a merge conflict stayed).
    Carries the outcome for the session and the report (its spend is on the ledger already)."""

    exit_code = 1

    def __init__(self, outcome: TaskOutcome):
        super().__init__(outcome.failure_reason or "task failed")
        self.outcome = outcome


async def _never_lost(_error: BaseException) -> bool:
    return False


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
    store: SessionStore | None = None
    """The session's writer: task runs journal their attempts into it."""
    runners: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict)
    """``execute_plan_task`` with each set of options the run's tasks need (``runner_for``)."""
    stopping: Callable[[], bool] = lambda: False
    """Whether the run was asked to stop (the flow's ``Interrupt``)."""
    stop_if_server_lost: Callable[[BaseException], Awaitable[bool]] = _never_lost
    """Stops the run when an error came from a Prefect server that is gone; ``True`` then
    (the flow's ``interrupt.stop_for_lost_server``)."""
    retry_waits: dict[str, float] = field(default_factory=dict)
    """Seconds a task waits before its next attempt, set when an attempt fails."""
    working: dict[str, asyncio.Task] = field(default_factory=dict)
    """The asyncio task running each task's task function, while it runs (``cut_short``)."""
    cannot_serve: dict[str, str] = field(default_factory=dict)
    """Providers that cannot serve this run (a refused key, spent credit), each with the run's
    stop reason: none of their tasks starts again (``cannot_serve_stop``)."""

    worktrees: RunWorktrees = field(init=False)
    """The tasks' worktrees made ahead and removed after their task runs (``run_worktrees``),
    all settled by ``worktrees_removed``."""
    stop_triggers: dict[str, StopTrigger] = field(default_factory=dict)
    """What each reason a task run stopped the run with is (``limit_reached``): the trigger
    of the stop's checkpoint."""
    progress: ProgressArtifact | None = None
    """The run's progress artifact, from its plan's start to its end's artifacts
    (``publish_end``): a run cut off by a signal between the two publishes its end."""
    left_question: PendingQuestion | None = None
    """A resume's: the question an earlier run left waiting when its process died
    (``take_answer_left``)."""

    def __post_init__(self) -> None:
        make = partial(make_worktree, self.workdir, self.session_id)
        # As many spares as tasks run at once: each that ends leaves one for the next. None
        # unsandboxed: a process the agent left running may still work in its worktree.
        sandboxed = self.config.sandbox.mode != "off"
        spares = self.config.session.max_concurrent_tasks if sandboxed else 0
        self.worktrees = RunWorktrees(make, spares=spares)

    def provider_for(self, task: Task) -> Provider:
        return self.providers[task.provider or self.default_provider]

    def cut_short(self, task_id: str) -> bool:
        """Cancel ``task_id``'s task run if it is in its task function, which ends it
        Cancelled ("Interrupted"); whether it is. Outside it the task run is in Prefect's
        engine (being started, its result written), where a cancellation ends it Crashed;
        there it reaches its task function, which stops at once, or its end."""
        worker = self.working.get(task_id)
        if worker is not None:
            worker.cancel()
        return worker is not None


class _NoTracebackForAcaErrors(logging.Filter):
    """Prefect logs the exception that ends a task run with its traceback. aca's own errors
    are messages for the user that name the fix, not bugs: keep the message, drop the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, AcaError):
            record.exc_info = None
            record.exc_text = None
        return True


class _NothingATerminalActsOn(logging.Filter):
    """A run's log lines quote agents and servers (a question, a reason): a character a
    terminal acts on (an escape sequence that clears the screen or retitles it) is written
    as its escape, on the terminal and in the UI alike (``_words.shown``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a call whose arguments miss its format: logging's
            return True
        if (safe := shown(message)) != message:
            record.msg, record.args = safe, None
        return True


# The flow's logger too: a run that lost its server ends by raising ``ServerLost``.
for _logger in map(logging.getLogger, ("prefect.task_runs", "prefect.flow_runs")):
    for _filter in (_NoTracebackForAcaErrors, _NothingATerminalActsOn):
        if not any(isinstance(f, _filter) for f in _logger.filters):
            _logger.addFilter(_filter())


class _RetryStartsAfterBackoff(logging.Filter):
    """Prefect starts a task's retry at once and says so ("Retry 1/2 will start
    immediately"); the task run then waits its backoff itself (``_wait_to_retry``), as the
    warning before that line says: Prefect's line is corrected to agree."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("Task run failed with %s: %r - Retry %s/%s will start")
            and isinstance(record.args, tuple)
            and record.args[-1:] == ("immediately",)
        ):
            record.args = (*record.args[:-1], "after the backoff in the warning above")
        return True


_task_logger = logging.getLogger("prefect.task_runs")
if not any(isinstance(f, _RetryStartsAfterBackoff) for f in _task_logger.filters):
    _task_logger.addFilter(_RetryStartsAfterBackoff())

# The flow registers its run here; task runs find it by session id.
ACTIVE_RUNS: dict[str, ActiveRun] = {}


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


def _another_attempt_helps(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a task only after a transient provider error whose call retries ran out, or a
    merge conflict (the next attempt starts on the new head)."""
    error = state.data
    if isinstance(error, TaskRunFailed):
        return bool(error.outcome.conflict_files)
    return isinstance(error, TransientProviderError)


def _attempt() -> tuple[int, int]:
    """This task run's attempt (1, 2, ...) and how many retries Prefect may make."""
    context = TaskRunContext.get()
    if context is None:
        return 1, 0
    return max(context.task_run.run_count, 1), context.task.retries


# A storage key and no cache policy: Prefect persists the result under a key no other task run
# has, so it is written but never served from cache. ``refresh_cache``: nor looked up (a file
# read for each task run that could only find nothing).
@task(
    persist_result=True,
    result_serializer="json",
    result_storage_key="{parameters[task_id]}-{task_run.id}.json",
    refresh_cache=True,
)
async def execute_plan_task(session_id: str, task_id: str) -> dict[str, Any] | State:
    """Run one plan task with its coding agent; return its outcome as JSON-able data.

    Args:
        session_id: the session whose ``ActiveRun`` holds the plan and providers.
        task_id: the plan task to run.

    Returns:
        ``TaskOutcome`` as a dict: summary, commit, files, usage, cost, attempts, subtasks.

    Example:
        state = await runner_for(run, task)(run.session_id, task.id, return_state=True)
    """
    run = ACTIVE_RUNS[session_id]
    run.working[task_id] = asyncio.current_task()
    try:
        return await _run_attempt(run, task_id)
    except Exception as error:
        if (sealed := redact_error(error)) is error:
            raise
        raise sealed from None
    except asyncio.CancelledError:
        # The run's stop cancelled the task (``cut_short``: the grace period ended, a second
        # signal, a cancel from the UI, a lost server), or its process is ending under it (a
        # worker's SIGTERM, Prefect's own cancel of the flow): returned as Cancelled, else
        # Prefect calls it a crash. The task is unfinished either way: a resume runs it.
        return _cancelled()
    finally:
        run.working.pop(task_id, None)


async def _run_attempt(run: ActiveRun, task_id: str) -> dict[str, Any] | State:
    """One attempt of ``task_id`` in its task run: the backoff before a retry, the agent's
    work, its outcome."""
    task_ = run.plan.task(task_id)
    logger = get_run_logger()
    attempt, retries = _attempt()
    provider = run.provider_for(task_)
    if (refused := run.cannot_serve.get(task_.provider or run.default_provider)) is not None:
        # No call: it would be refused as the last one was.
        return limit_reached(run, refused, "provider")
    if attempt > 1:
        if await _wait_to_retry(run, task_id):
            # No new attempt once the run is stopping: the task is pending, `aca resume` runs it.
            return _stopped(f"attempt {attempt} did not start")
        if run.store is not None:
            # The flow journalled the first attempt's start; Prefect's retries start the others.
            run.store.task_started(task_id, provider=provider.name)
    elif run.stopping():
        # Handed to Prefect just before the stop: nothing is paid for it after the Ctrl-C.
        return _stopped("it had not started when the run stopped")

    lines = LineBatch(logger)

    def log_line(record: dict[str, Any]) -> None:
        level = _log_level(record)
        if record.get("kind") == "run_started":
            record = {**record, "run": number}  # the task's attempt, not the agent's run in it
        if level == logging.ERROR and (
            run.stopping() or (record.get("conflict_files") and attempt <= retries)
        ):
            level = logging.WARNING  # not the task's end: it runs again (a retry, or a resume)
        if run.config.logging.log_tool_calls or level > logging.INFO:
            lines.add(level, _one_line(record))

    # The ledger numbers attempts as the session does: across resumes, not per flow run.
    number = run.store.session.tasks[task_id].attempts if run.store is not None else attempt
    owner = CALL_OWNER.set(CallOwner(task_id, max(number, 1)))
    try:
        outcome = await execute_task(
            run.plan,
            task_id,
            workdir=run.workdir,
            session_id=run.session_id,
            provider=provider,
            config=run.config,
            dependency_outcomes=run.outcomes,
            on_log=log_line,
            max_runs=1,  # a merge conflict is a failed attempt too: max_attempts counts them
            # The flow journals each start first: the session's first start of this task.
            first_attempt=run.store is not None and number == 1,
            stop_requested=run.stopping,
            resume=resume_of_run(run),
            worktrees=run.worktrees,  # made ahead, removed after: git's work beside the tasks
        )
    except Exception as exc:
        lines.flush()  # before the warnings below
        # A Prefect server that went away (a provider limit's slot) is no verdict either.
        if run.stopping() or await run.stop_if_server_lost(exc):
            return _stopped(str(exc))
        if getattr(exc, "exit_code", None) == 3:
            limit = "usage-limit" if isinstance(exc, UsageLimitReached) else "budget"
            return limit_reached(run, str(exc), limit)
        # No verdict on the work, and every later task would end the same: the task stays
        # pending and the scheduler starts no more (of that provider, or at all).
        if isinstance(exc, ProviderCannotServe):
            return limit_reached(run, cannot_serve_stop(run, task_, exc), "provider")
        if isinstance(exc, SessionBranchLost):
            return limit_reached(run, branch_lost_stop(run, exc), "branch-lost")
        if isinstance(exc, SessionBranchReset):
            return limit_reached(run, branch_reset_stop(run, exc), "branch-reset")
        if isinstance(exc, SessionBranchCheckedOut):
            return limit_reached(run, str(exc), "branch-checked-out")
        if isinstance(exc, SLOT_REFUSED):
            return limit_reached(run, concurrency_limit_stop(run, task_, exc), "usage-limit")
        if isinstance(exc, TransientProviderError):
            if exc.status_code in WAIT_ANSWERS and attempt > retries:
                # Its last attempt: the provider still says wait. No verdict on the task.
                return limit_reached(run, rate_limited_stop(run, task_, exc), "usage-limit")
            _journal_retry(run, task_id, attempt, retries, str(exc), logger)
        raise
    finally:
        CALL_OWNER.reset(owner)
        lines.flush()
    # What leaves from here (the persisted result in results/, the failure) is a record, so it
    # is redacted; the work itself is done. Its report is written by the flow, from the
    # session, once the task run has ended.
    # And readable: a reason or a diff naming a file that is not UTF-8 must reach the server.
    outcome = TaskOutcome.model_validate(readable_data(redact(outcome.model_dump(mode="json"))))
    if outcome.status != "completed":
        if run.stopping():
            return _stopped(outcome.failure_reason or "failed")
        if outcome.conflict_files:
            _journal_retry(run, task_id, attempt, retries, outcome.failure_reason or "", logger)
        raise TaskRunFailed(outcome)
    return outcome.model_dump(mode="json")


async def worktrees_removed(run: ActiveRun) -> None:
    """Until git has removed the worktree of every task run of ``run``, and those made ahead
    for tasks that did not start. A removal that failed is warned of: the task's work is on
    the session branch already, and the next run of the session clears the folder."""
    for error in await run.worktrees.settled():
        get_run_logger().warning(f"a task's worktree was not removed: {error}")


def _stopped(why: str) -> State:
    """A task that ended unfinished after the run was asked to stop. The signal reaches the
    task's processes too (a check, a setup command, Claude Code), so its failure is no verdict
    on the work: its task run ends Cancelled, the task stays pending, `aca resume` runs it."""
    why = readable(redact_text(first_line(why)))  # its end reaches the server as JSON
    return Cancelled(name="Interrupted", message=f"stopped by the interrupt: {why}")


def limit_reached(run: ActiveRun, why: str, trigger: StopTrigger) -> State:
    """A task stopped before its next call by what stops the run (a budget or usage limit, a
    provider that cannot serve it, the session branch gone): no failure of the task, which
    stays pending (its calls are on the bill). Its task run ends Cancelled, "Stopped", as the
    flow run does; the message is the reason the flow stops the run with, and ``trigger``,
    kept in ``run.stop_triggers``, labels the stop's checkpoint."""
    message = readable(redact_text(why))  # its end reaches the server as JSON
    run.stop_triggers[message] = trigger
    return Cancelled(name=LIMIT_STOPPED, message=message)


# The name of a task run a budget or usage limit stopped (``_limit_reached``).
LIMIT_STOPPED = "Stopped"


def _cancelled() -> State:
    """The task run's coroutine was cancelled by the run's stop: it ends Cancelled like any
    task the stop cut short."""
    current = asyncio.current_task()
    if current is not None:
        current.uncancel()  # handled here: the engine records the state and returns it
    return _stopped("cancelled before it finished")


RETRY_POLL_SECONDS = 0.1


async def _wait_to_retry(run: ActiveRun, task_id: str) -> bool:
    """The backoff before a task's next attempt, or until the run is asked to stop; whether
    it was."""
    deadline = time.monotonic() + run.retry_waits.pop(task_id, 0.0)
    while not run.stopping():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(left, RETRY_POLL_SECONDS))
    return True


def _journal_retry(run: ActiveRun, task_id: str, attempt: int, retries: int, why: str, logger):
    """An attempt failed in a way another attempt can fix: when Prefect will retry, say so
    in the log and the journal (the task goes back to pending until its next attempt), and
    pick the backoff before that attempt."""
    if attempt > retries:
        return
    delays = _retry_delays(run, run.plan.task(task_id))
    wait = clamped_poisson_interval(delays[min(attempt, len(delays)) - 1], RETRY_JITTER)
    run.retry_waits[task_id] = wait
    reason = f"attempt {attempt} of {retries + 1} failed: {why}"
    when = f" in {wait:.1f} s" if wait > 0 else ""
    logger.warning(f"{task_id}: {reason}; the task starts again from a clean worktree{when}")
    if run.store is not None:
        run.store.task_failed(task_id, reason, will_retry=True)


RETRY_JITTER = 0.5


def _retries(run: ActiveRun, task_: Task) -> int:
    return max((task_.max_attempts or run.config.session.max_attempts) - 1, 0)


def _retry_delays(run: ActiveRun, task_: Task) -> list[float]:
    """The mean backoff before each retry of a task: exponential from
    ``retry_backoff_seconds``."""
    base = run.config.session.retry_backoff_seconds
    return [base * 2**i for i in range(_retries(run, task_))] or [0.0]


def options_for(run: ActiveRun, task_: Task) -> dict[str, Any]:
    """``with_options`` for one task: name, result storage, retries. Prefect starts a retry
    at once: the task run waits the backoff itself (``_wait_to_retry``), which a stop ends."""
    retries = _retries(run, task_)
    return {
        "name": "execute_plan_task",
        "task_run_name": _task_run_name_of,
        # A Path is local result storage that needs no saved block.
        "result_storage": run.workdir / ".aca" / "sessions" / run.session_id / "results",
        "retries": retries,
        "retry_delay_seconds": 0,
        "retry_condition_fn": _another_attempt_helps,
        "tags": task_tags(run, task_),
    }


def runner_for(run: ActiveRun, task_: Task) -> Any:
    """``execute_plan_task`` with ``task_``'s options, made once for all the run's tasks that
    share them: Prefect reads a task function's source whenever it builds a task (about 3 ms
    of CPU; the task run names itself from its parameters)."""
    key = (_retries(run, task_), tuple(task_tags(run, task_)))
    if key not in run.runners:
        run.runners[key] = execute_plan_task.with_options(**options_for(run, task_))
    return run.runners[key]


def task_run_name(task_: Task) -> str:
    """A plan task's task runs' name: its id and title. It is stored on the server and shown
    in the UI, so it is redacted like a log line."""
    return redact_text(f"{task_.id} {task_.title}")[:120]


def _task_run_name_of(parameters: dict[str, Any]) -> str:
    # A callable, not the name itself: Prefect formats a string name with the run's
    # parameters, and a title may hold braces ("fix {name} lookups" failed the whole run).
    run = ACTIVE_RUNS[parameters["session_id"]]
    return task_run_name(run.plan.task(parameters["task_id"]))


def task_tags(run: ActiveRun, task_: Task) -> list[str]:
    """A task run's tags: the run's, with the provider the task uses."""
    return run_tags(run, task_.provider or run.default_provider)


def run_tags(run: ActiveRun, *providers: str) -> list[str]:
    """Tags that find a session's runs in the UI's filters: ``aca``, ``session:<id>`` and
    ``provider:<name>`` for each provider given."""
    return ["aca", f"session:{run.session_id}", *(f"provider:{p}" for p in sorted(providers))]


def _log_level(record: dict[str, Any]) -> int:
    """Failures stand out in the UI's log filter: a failed verify warns, a failed task errs;
    a verify that passed but checks nothing warns too."""
    kind = record.get("kind")
    if kind == "task_failed":
        return logging.ERROR
    refused = (record.get("data") or {}).get("subtype") == "refused_outside_worktree"
    if (
        kind in ("merge_conflict", "subtasks_rejected", "check_edited")
        or refused
        or (kind == "verify" and (not record.get("passed") or record.get("checks_nothing")))
    ):
        return logging.WARNING
    return logging.INFO


def _one_line(record: dict[str, Any]) -> str:
    # For a person (the JSON stays whole in the task log); redacted before it is cut.
    return describe_record(record)
