"""The ``aca-run`` flow: a plan runs as a DAG of Prefect task runs, in the flow named after the
plan, each group of its tree a subflow run holding its task runs (flow_tree.py).

One task run per leaf task, named ``<task-id> <title>``, started when its dependencies have
completed (``wait_for`` draws the edges in the UI's run graph), higher priority first, at most
``max_concurrent`` at once. Subtasks proposed at run time become new task runs of the same
flow run. A failed task skips its dependents (their task runs end ``Completed`` named
``Skipped``, and the session says why); independent branches go on. When pending tasks remain
and none can start, the run has stalled: it ends failed, naming each stuck task and what it
waits on. How each end of a run shows in the exit code, the flow run's state, the session and
the summary: docs/engine.md, "How a run ends", and ``flow_state`` below.

The session (``.aca/sessions/<id>/``) mirrors every step, so the layout always matches what
Prefect recorded; a re-run with the same session id resumes it and never calls a provider for
a task that completed.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from prefect import Flow, flow, get_run_logger
from prefect.artifacts import (
    MarkdownArtifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.context import get_run_context
from prefect.exceptions import TerminationSignal
from prefect.states import Cancelled, Failed, State
from prefect.utilities.annotations import allow_failure

from aca_flows.agent.execute import TaskOutcome
from aca_flows.agent.subtasks import SubtaskProposalError, accept_subtasks
from aca_flows.errors import AcaError
from aca_flows.flows.approval import apply_decision, approval_needed, wait_for_approval
from aca_flows.flows.artifacts import (
    first_line,
    md,
    plan_table,
    plan_tree_markdown,
    progress_percent,
    summary_markdown,
    task_artifact_key,
    task_markdown,
)
from aca_flows.flows.deployment_guard import deployment_refusal, resolve_job_paths
from aca_flows.flows.events import emit_session_event, emit_task_event
from aca_flows.flows.flow_tree import FlowTree, plan_flow_name
from aca_flows.flows.interrupt import (
    UI_CANCEL,
    Interrupt,
    interrupt_on_signals,
    watch_for_cancel,
)
from aca_flows.flows.publishing import (
    ProgressArtifact,
    progress_text,
    published,
    send_in_background,
)
from aca_flows.flows.pull_requests import (
    PULL_REQUESTS,
    deliver,
    pull_request_target,
)
from aca_flows.flows.remote_sync import (
    open_remote,
    push_landed_work,
    push_session_work,
    register_remote,
    run_working_area,
)
from aca_flows.flows.run_setup import RunRequest, open_run, recorded_state
from aca_flows.flows.session_log import session_log
from aca_flows.flows.skipped import record_finished_task, record_skipped_task
from aca_flows.flows.summary import RunSummary, run_summary
from aca_flows.flows.task_help import add_hint, ask_about_failed_task, reviewed_reason
from aca_flows.flows.task_run import (
    ACTIVE_RUNS,
    ActiveRun,
    TaskRunFailed,
    execute_plan_task,
    options_for,
    run_tags,
)
from aca_flows.plan.dag import DagProgress
from aca_flows.plan.models import ExecutionPlan, TaskStatus
from aca_flows.providers.sdk_client import close_clients
from aca_flows.session.checkpoints import CheckpointPolicy, create_checkpoint
from aca_flows.session.events import TaskResult
from aca_flows.session.record import TaskRun, describe_counts
from aca_flows.session.redact import redact, redact_log_handlers, redact_text
from aca_flows.session.store import SessionStore

__all__ = [
    "Interrupt",
    "aca_run",
    "deployment_session_id",
    "flow_state",
    "interrupt_on_signals",
    "plan_flow",
]


@flow(
    name="aca-run",
    validate_parameters=True,
    log_prints=False,
    persist_result=True,
    result_serializer="json",
)
async def aca_run(
    task_file: str | None = None,
    execution_plan: str | None = None,
    workdir: str = ".",
    plan_text: str | None = None,
    plan_format: Literal["toml", "markdown"] | None = None,
    plan: ExecutionPlan | None = None,
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
    config_block: str | None = None,
    record: str | None = None,
    require_approval: bool = False,
    open_pr: bool = False,
    github_repo: str | None = None,
    repo: str | None = None,
) -> RunSummary:
    """Run a plan in ``workdir``; returns the run's ``RunSummary``.

    The plan is one of: ``task_file`` (a Markdown or TOML task file), ``execution_plan`` (a
    plan written by ``--dump-plan``), ``plan_text`` (Markdown or TOML text; ``plan_format``
    ``"toml"`` or ``"markdown"`` if it cannot be told from the text) or ``plan`` (an
    ``aca_flows.Plan`` built in code). Give ``session_id`` of an existing session to resume
    it: completed tasks are not run again (nor is any provider called for them).

    The flow run is Failed if any task failed (Cancelled if a budget, a usage limit or an
    interrupt stopped it); the summary is its state's data either way:
    ``state.result(raise_on_failure=False)``. docs/python-api.md shows it called from a flow.
    With ``require_approval`` the run waits, once its plan is published, for a person to
    approve it (docs/approval.md).

    Args:
        task_file: The task file to run (Markdown checklist or TOML); relative paths resolve
            against the deployment's folder. Give this or execution_plan.
        execution_plan: A reviewed execution plan (JSON, from `aca --dump-plan`) to run
            instead of a task file.
        plan_text: A plan as Markdown or TOML text, instead of a file.
        plan_format: "toml" or "markdown", when plan_text cannot be told apart by itself.
        plan: A plan built in code (aca_flows.Plan), instead of a file or text.
        workdir: The git repository worked on; its .aca folder holds the session. The
            checkout itself is never changed: the work lands on the branch aca/<session-id>.
        provider: The coding agent's provider (claude-code, anthropic, openai, ollama,
            replay); default: the configuration's.
        model: The model to use; default: the configuration's for the provider.
        max_concurrent: How many tasks run at once (1-64); default: the configuration's.
        budget_usd: Stop starting tasks once the session has spent this many US dollars
            (resumable).
        session_id: Continue this session instead of starting a new one.
        context: Hints about the project, added to the plan and every task's prompt.
        append_system_prompt: Extra instructions added to every task's system prompt.
        use_intelligent_parser: Let a model read a free-form task file into a plan.
        init_git: Create a git repository in workdir if there is none.
        config_file: An aca config file; default: <workdir>/aca.toml or
            <workdir>/.aca/config.toml.
        config_block: The name of an Aca Config block on the Prefect server to take the
            configuration from instead of a file (provider keys from the Secret blocks it
            names): a worker then needs nothing on its disk.
        record: Record every provider call to this cassette file (for the replay provider).
        require_approval: Wait for a person to approve the plan (in the Prefect UI, or with
            `aca approve`) before any task starts.
        open_pr: Open (or update) one GitHub pull request for the session branch, with the
            plan, each task's outcome, verify results and cost (docs/deployments.md). Needs
            GITHUB_TOKEN or [github] token_secret.
        github_repo: The GitHub repository (OWNER/NAME) of the pull request, when the
            repository's remote URL does not name one.
        repo: A git repository URL (or the path of a bare repository) to work on instead of
            a local checkout: it is cloned or fetched into workdir (default, or ".":
            ~/.aca/repos/<name>-<hash>), and the session branch and record are pushed to it
            after each task lands; with session_id, a session the remote holds is resumed.
    """
    parameters = dict(locals(), context=context or [])
    # Every record this run logs, to the server or the terminal, passes the redactor.
    redact_log_handlers()
    session_name = None
    flow_run = getattr(get_run_context(), "flow_run", None)
    deployed = flow_run is not None and flow_run.deployment_id is not None
    if deployed:
        # A deployment run: the session is named after the flow run, and its id is derived
        # from the flow run, so a Prefect retry of the run resumes the same session.
        session_name = flow_run.name
        parameters["session_id"] = session_id or deployment_session_id(flow_run)
        parameters = resolve_job_paths(parameters)
    if repo:  # the run works in its own checkout of the repository
        parameters["workdir"] = run_working_area(repo, workdir)
    request = RunRequest(session_name=session_name, **parameters)
    if deployed:
        refusal = deployment_refusal(parameters)
        if refusal is not None:
            # Before the session, git or a provider: a refused run leaves nothing behind.
            get_run_logger().error(f"refused: {refusal}")
            return Failed(message=f"refused: {refusal}")
    try:
        remote = None
        if repo:
            remote = await asyncio.to_thread(open_remote, repo, workdir, request.session_id)
        store, run = open_run(request)
    except AcaError as exc:
        # Bad input, or the session is in use: a message for the user, not a traceback.
        get_run_logger().error(str(exc))
        return Failed(message=str(exc), data=exc)
    if request.open_pr:
        try:
            PULL_REQUESTS[run.session_id] = pull_request_target(
                run.config, run.workdir, request.github_repo
            )
        except AcaError as exc:
            # Before any task: a run that could not deliver its work spends nothing.
            store.finish("failed", str(exc))
            store.close()
            get_run_logger().error(str(exc))
            return Failed(message=str(exc), data=exc)
    ACTIVE_RUNS[run.session_id] = run
    register_remote(run.session_id, remote)
    interrupt = Interrupt(run.config.session.interrupt_grace_seconds)
    watcher = asyncio.create_task(watch_for_cancel(interrupt))
    logs = session_log(
        store.paths.system_log, run.config.logging.level, flow_run and str(flow_run.id)
    )
    try:
        with interrupt.installed(), logs:
            send_in_background(
                run.session_id, _label_flow_run(store, run, rename=session_name is None)
            )
            emit_session_event(store, "started")
            summary = await _drive(store, run, request, interrupt)
            await _deliver_pull_request(store, run, summary)
            emit_session_event(store, summary.status, summary.stopped_reason)
    except (asyncio.CancelledError, KeyboardInterrupt, TerminationSignal):
        # Interrupted (a runner's cancel arrives as TerminationSignal): what finished is
        # recorded; running tasks start again on resume.
        create_checkpoint(store, trigger="interrupt", description="interrupted")
        store.finish("interrupted", "interrupted; `aca resume` continues")
        emit_session_event(store, "interrupted", "interrupted; `aca resume` continues")
        raise
    except Exception as exc:
        store.finish("failed", f"{type(exc).__name__}: {exc}")
        emit_session_event(store, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(KeyError):  # a run that stopped abruptly ends its subflows
            _TREES.pop(run.session_id).abandon()
        ACTIVE_RUNS.pop(run.session_id, None)
        PULL_REQUESTS.pop(run.session_id, None)
        register_remote(run.session_id, None)
        store.close()
        with contextlib.suppress(Exception):  # a client that cannot close is no reason to fail
            await close_clients()
        with contextlib.suppress(Exception):  # a run that ended early still sends its reports
            await published(run.session_id)
    return flow_state(summary, cancelled_from_ui=interrupt.signal_name == UI_CANCEL)


def flow_state(summary: RunSummary, cancelled_from_ui: bool = False) -> State | RunSummary:
    """The flow run's final state for a run summary (docs/engine.md, "How a run ends")."""
    if summary.status == "interrupted":
        name = "Cancelled" if cancelled_from_ui else "Interrupted"
        return Cancelled(name=name, message=summary.stopped_reason, data=summary)
    if summary.status == "stopped":
        return Cancelled(name="Stopped", message=summary.stopped_reason, data=summary)
    if summary.status == "rejected":
        return Cancelled(name="Rejected", message=summary.stopped_reason, data=summary)
    if summary.status == "failed":
        return Failed(message=summary.stopped_reason or "failed", data=summary)
    return summary


def _stored_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters as the Prefect server stores them (the UI shows them): redacted. The run
    itself gets them as given; this is only what Prefect sends when it creates the flow run."""
    if all(_plain(value) for value in parameters.values()):
        # Already what Prefect's serializer would make of them; it imports FastAPI's encoder
        # for that, which costs start-up time (up to a second on a busy machine).
        return redact(dict(parameters))
    return redact(Flow.serialize_parameters(aca_run, parameters))


def _plain(value: Any) -> bool:
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return value is None or type(value) in (str, int, float, bool)


aca_run.serialize_parameters = _stored_parameters


def plan_flow(plan_name: str) -> Flow:
    """``aca_run`` as the flow named after the plan ``plan_name`` (docs/engine.md, "The plan's
    flow"): what the ``aca`` command runs, so its flow run is the plan's and no subflow run
    is needed for it."""
    named = aca_run.with_options(name=plan_flow_name(plan_name))
    named.serialize_parameters = _stored_parameters
    return named


# Each running session's flow runs (the plan's, its groups'), so the flow can end them.
_TREES: dict[str, FlowTree] = {}


async def _drive(
    store: SessionStore, run: ActiveRun, request: RunRequest, interrupt: Interrupt
) -> RunSummary:
    logger = get_run_logger()
    dag = DagProgress(run.plan)
    states: dict[str, State] = {}
    recorded_skips: set[str] = set()
    limit = run.config.session.max_concurrent_tasks
    budget = run.config.session.budget_usd
    policy = CheckpointPolicy.from_config(run.config.session)
    tree = _TREES[run.session_id] = FlowTree(run.plan, run.session_id, run_tags(run))
    send_in_background(
        run.session_id,
        acreate_table_artifact(
            key=_key("plan", run.session_id), table=plan_table(run.plan), description="The plan"
        ),
    )
    send_in_background(
        run.session_id,
        acreate_markdown_artifact(
            key=_key("tree", run.session_id),
            markdown=plan_tree_markdown(run.plan),
            description="The plan as a tree, with dependencies",
        ),
    )
    counts = store.session.task_counts
    progress = ProgressArtifact(
        acreate_progress_artifact(
            progress=progress_percent(counts),
            key=_key("progress", run.session_id),
            description=progress_text(counts),
        )
    )
    create_checkpoint(store, trigger="auto", description="plan compiled")
    # Written before the first task starts: a SQLite server takes one writer at a time, and
    # the first task runs' own calls (their tags' concurrency checks) got 503s behind these
    # writes, then waited 2+ s for Prefect's retry.
    await published(run.session_id)
    await progress.artifact_id()
    if approval_needed(request.require_approval, store):
        decided = await wait_for_approval(store, run.plan, limit, run.config.approval, interrupt)
        if decided is not None and decided.decision == "reject":
            logger.warning(f"the plan was rejected: {decided.reason}")
            store.finish("rejected", decided.reason)
            create_checkpoint(store, trigger="end", description="rejected")
            return run_summary(store, "rejected", decided.reason, {}, [])
        if decided is not None:
            apply_decision(decided, run, store)
            limit = decided.max_concurrent or limit
            for task_id in decided.skip:  # a task run that ends Skipped, and its report
                task = run.plan.task(task_id)
                name = options_for(run, task)["task_run_name"]
                skip = partial(record_skipped_task, name, task_id, str(task.status), [])
                states[task_id] = await tree.run(task, skip)
                await _publish_report(store, run, task_id, states[task_id])

    await _record_finished_before(store, run, dag, states, tree)
    running: dict[asyncio.Task, str] = {}
    stopped_reason: str | None = None
    while True:
        _record_settled(store, dag, recorded_skips)
        await _run_skips(store, run, dag, states, tree)
        tree.close_settled()
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
                # The DAG decided it may start; a dependency skipped after it failed (a
                # person's decision, task_help.py) has a failed task run all the same.
                deps = [states[d] for d in dag.dependency_ids(task) if d in states]
                waits = [allow_failure(s) for s in deps]
                running[asyncio.create_task(_run_one(run, task.id, waits, tree))] = task.id
        if not running:
            break
        if interrupt.requested and not interrupt.announced and not interrupt.cancel_now():
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
            limit_reason = await _finish(store, run, dag, task_id, state, logger, interrupt)
            if limit_reason and stopped_reason is None:
                stopped_reason = limit_reason
                logger.warning(f"{limit_reason}; no new task starts")
        progress.update(store.session.task_counts)
        completed = dag.counts().get("completed", 0)
        now = datetime.now(UTC)
        if policy.due(now, completed):
            create_checkpoint(store, trigger="auto")
            policy.mark(now, completed)

    _record_settled(store, dag, recorded_skips)
    if interrupt.signal_name != UI_CANCEL:  # a cancelled flow run starts no task run
        await _run_skips(store, run, dag, states, tree)
    stuck: dict[str, str] = {}
    if interrupt.requested and not _all_settled(dag):
        stopped_reason = f"interrupted by {interrupt.signal_name}"
        logger.warning(f"{stopped_reason}; `aca resume {run.session_id}` continues")
        create_checkpoint(store, trigger="interrupt", description=stopped_reason)
        store.finish("interrupted", f"{stopped_reason}; `aca resume` continues")
        status = "interrupted"
    elif stopped_reason and not _all_settled(dag):
        create_checkpoint(store, trigger="budget", description=stopped_reason)
        store.finish("stopped", stopped_reason)
        status = "stopped"
    else:
        stopped_reason = None
        stuck = dag.stuck()
        for task_id, why in stuck.items():
            store.task_blocked(task_id, f"can never start: {why}")
            logger.error(f"{task_id} can never start: it {why}")
        failed_ids = _failed_ids(store)
        if stuck:
            stopped_reason = "stalled: " + "; ".join(f"{t} {why}" for t, why in stuck.items())
        elif failed_ids:
            stopped_reason = f"{len(failed_ids)} task(s) failed: {', '.join(failed_ids)}"
        status = "failed" if stopped_reason else "completed"
        store.finish(status, stopped_reason)
        create_checkpoint(store, trigger="end")
    await push_session_work(store, logger)  # with a repo: the remote gets the end, too
    counts = store.session.task_counts
    await progress.flush()
    await published(run.session_id)
    await aupdate_progress_artifact(
        await progress.artifact_id(),
        progress=progress_percent(counts),
        description=progress_text(counts),
    )
    # The plan table again under its key (a new version): every task's final state.
    await acreate_table_artifact(
        key=_key("plan", run.session_id),
        table=plan_table(store.session.plan),
        description=f"The plan, {status}: {describe_counts(counts)}",
    )
    await acreate_markdown_artifact(
        key=_key("tree", run.session_id),
        markdown=plan_tree_markdown(store.session.plan),
        description=f"The plan as a tree, {status}",
    )
    await acreate_markdown_artifact(
        key=_key("summary", run.session_id),
        markdown=summary_markdown(store.session.plan, counts, store.session.usage, store.branch),
        description="Tokens and cost by provider and model",
    )
    no_change_ids = [t for t, o in run.outcomes.items() if o.completed_without_change]
    summary = run_summary(store, status, stopped_reason, stuck, no_change_ids)
    await tree.close(flow_state(summary))
    return summary


def _failed_ids(store: SessionStore) -> list[str]:
    return [t.id for t in store.session.plan.tasks if t.status.state == "failed"]


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


async def _run_one(run: ActiveRun, task_id: str, waits: list[State], tree: FlowTree) -> State:
    task = run.plan.task(task_id)
    runner = execute_plan_task.with_options(**options_for(run, task))
    # In the flow run of the task's group (flow_tree.py).
    return await tree.run(
        task, partial(runner, run.session_id, task_id, wait_for=waits, return_state=True)
    )


async def _finish(
    store, run: ActiveRun, dag: DagProgress, task_id: str, state: State, logger, interrupt=None
) -> str | None:
    """Mirror a finished task run into the session and the DAG. Returns why the run must
    stop (a budget or usage limit), if it must."""
    if state.is_completed():
        outcome = TaskOutcome.model_validate(await state.aresult())
        run.outcomes[task_id] = outcome
        store.task_completed(task_id, _task_result(outcome))
        emit_task_event(store, task_id, "completed")
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
        push_landed_work(store, logger)  # with a repo: the remote gets what landed
        await _publish_report(store, run, task_id, state)
        return None
    error = await state.aresult(raise_on_failure=False)
    if getattr(error, "exit_code", None) == 3:
        # A budget or usage limit stopped the task before it finished: not a failure; it
        # is pending again in the session (its calls are on the bill), and `aca resume`
        # runs it again.
        store.task_failed(task_id, str(error), will_retry=True)
        dag.release(task_id)
        return str(error)
    attempts = store.session.tasks[task_id].attempts
    if isinstance(error, TaskRunFailed):
        run.outcomes[task_id] = error.outcome
        reason = error.outcome.failure_reason or "failed"
        if error.outcome.conflict_files:
            reason += f" (gave up after {attempts} attempt(s))"
        elif interrupt is not None and run.config.approval.on_failure == "ask":
            # A person decides (docs/approval.md, "A stuck task asks").
            answer = await ask_about_failed_task(run, task_id, error.outcome, attempts, interrupt)
            if answer.action == "retry":
                store.task_failed(task_id, reason, will_retry=True)
                add_hint(run, task_id, answer.hint, error.outcome.human_question)
                dag.release(task_id)
                return None
            reason = reviewed_reason(reason, answer)
            if answer.action == "skip":
                dag.release(task_id)
                why = f"skipped after it failed: {first_line(reason)}"
                run.plan.task(task_id).status = TaskStatus(state="skipped", reason=why)
                store.task_skipped(task_id, why)
                await _publish_report(store, run, task_id, state)
                return None
    elif isinstance(error, AcaError):
        # A provider error names its fix already: say it plainly, with the attempts it took.
        reason = f"{error} (gave up after {attempts} attempt(s))"
    else:
        reason = f"{type(error).__name__}: {error}" if error else (state.message or "failed")
    store.task_failed(task_id, reason)
    emit_task_event(store, task_id, "failed", reason)
    logger.error(f"{task_id} failed: {first_line(reason)}")
    dag.fail(task_id, reason)
    await _publish_report(store, run, task_id, state)


async def _publish_report(store: SessionStore, run: ActiveRun, task_id: str, state: State) -> None:
    """The task's report, on its task run's page, written from what the session recorded
    now. It is sent to the server in the background: the next task need not wait for it
    (``published`` waits for all of them before the run ends)."""
    task = store.session.plan.task(task_id)
    record = store.session.tasks.get(task_id) or TaskRun(task_id=task_id)
    status = str(task.status).splitlines()[0][:200]
    artifact = MarkdownArtifact(
        key=task_artifact_key(run.session_id, task_id),
        markdown=task_markdown(task, record, run.outcomes.get(task_id)),
        # Prefect renders a description as Markdown: escaped, like the report.
        description=f"{md(task_id)}: {md(status, keep_code=True)}",
        task_run_id=state.state_details.task_run_id,
    )
    send_in_background(run.session_id, artifact.acreate())
    target = PULL_REQUESTS.get(run.session_id)
    if target is not None:  # the pull request tells how far the run got
        send_in_background(
            run.session_id, deliver(target, store.session, _verify_results(run), _flow_run_url())
        )


async def _deliver_pull_request(store: SessionStore, run: ActiveRun, summary: RunSummary) -> None:
    """The pull request's last update, once the session's end is recorded; its URL or
    GitHub's refusal goes into the summary and the log."""
    target = PULL_REQUESTS.get(run.session_id)
    if target is None:
        return
    await published(run.session_id)  # the per-task updates first: this one is the last word
    await deliver(target, store.session, _verify_results(run), _flow_run_url())
    summary.pull_request, summary.pull_request_error = target.url, target.error
    if target.error:
        get_run_logger().error(f"pull request not delivered: {target.error}")
    else:
        get_run_logger().info(f"pull request: {target.url}")


def _verify_results(run: ActiveRun) -> dict[str, str]:
    """What each task's verify command said in this run, for the pull request."""
    results = {}
    for task_id, outcome in run.outcomes.items():
        if outcome.verify_command and outcome.verify_passed is not None:
            said = "passed" if outcome.verify_passed else "failed"
            results[task_id] = f"{said}: `{outcome.verify_command}`"
    return results


def _flow_run_url() -> str | None:
    from prefect.utilities.urls import url_for

    flow_run = getattr(get_run_context(), "flow_run", None)
    return url_for(flow_run) if flow_run is not None else None


def _record_settled(store: SessionStore, dag: DagProgress, recorded: set[str]) -> None:
    """Skips and closed groups decided by the DAG go into the session once."""
    for task in dag.plan.tasks:
        if task.id in recorded:
            continue
        known = recorded_state(store, task.id)
        if task.status.state == "skipped" and known != "skipped":
            store.task_skipped(task.id, task.status.reason or "skipped")
            emit_task_event(store, task.id, "skipped", task.status.reason)
            recorded.add(task.id)
        elif (
            task.children
            and task.status.state in ("completed", "failed")
            # A group that failed in an earlier run of the session may complete in this one.
            and known != task.status.state
        ):
            if task.status.state == "completed":
                store.task_completed(task.id, TaskResult())
            else:
                store.task_failed(task.id, task.status.reason or "failed")
            recorded.add(task.id)


async def _record_finished_before(
    store: SessionStore, run: ActiveRun, dag: DagProgress, states, tree: FlowTree
) -> None:
    """On resume, each task finished in an earlier run gets a task run that ends ``Cached``
    (its commit in the message), in its group's flow run: the UI shows what a resume reused,
    and its dependents are drawn after it. No provider is called."""
    finished = [
        task
        for task in dag.plan.tasks
        if task.status.state == "completed" and not task.children and task.id not in states
    ]
    slots = asyncio.Semaphore(8)  # a burst of task runs makes SQLite answer "locked"

    async def record(task) -> None:
        done = store.session.tasks.get(task.id)
        landed = f"commit {done.commit[:10]}" if done and done.commit else "no change needed"
        message = f"finished in an earlier run of session {run.session_id}: {landed}"
        options = options_for(run, task)
        make = partial(
            record_finished_task, options["task_run_name"], task.id, message, options["tags"]
        )
        async with slots:
            states[task.id] = await tree.run(task, make)

    await asyncio.gather(*(record(task) for task in finished))
    tree.close_settled()


async def _run_skips(
    store: SessionStore, run: ActiveRun, dag: DagProgress, states, tree: FlowTree
) -> None:
    """Each leaf skipped because a dependency failed gets a task run that ends Skipped (drawn
    after its dependencies' task runs) and a report saying why."""
    for task in dag.plan.tasks:
        if (
            task.status.state == "skipped"
            and not task.children
            and task.id not in states
            and (task.status.reason or "").startswith("dependency")
        ):
            waits = [states[d] for d in dag.dependency_ids(task) if d in states]
            options = options_for(run, task)
            skip = partial(
                record_skipped_task,
                options["task_run_name"], task.id, str(task.status), waits, options["tags"],
            )  # fmt: skip
            states[task.id] = await tree.run(task, skip)
            await _publish_report(store, run, task.id, states[task.id])


def _task_result(outcome: TaskOutcome) -> TaskResult:
    # Its spend is on the ledger already: one ``call`` event per provider call.
    return TaskResult(
        commit=outcome.commit_sha,
        outcome=outcome.outcome,
        no_change_reason=outcome.no_change_reason,
        summary=outcome.summary,
    )


def _spent(store: SessionStore) -> float:
    """The session's spend so far, from its ledger: every call of every attempt and run."""
    return store.session.cost_usd


def _key(kind: str, session_id: str) -> str:
    return f"aca-{kind}-{session_id}".lower()


def deployment_session_id(flow_run) -> str:
    """Stable for the flow run, retries included; sorts by time like other session ids."""
    when = flow_run.expected_start_time or flow_run.created
    return f"{when.astimezone(UTC):%Y%m%d-%H%M%S}-{flow_run.id.hex[:6]}"


async def _label_flow_run(store: SessionStore, run: ActiveRun, rename: bool) -> None:
    """Tags the flow run ``aca``, ``session:<id>`` and ``provider:<name>`` (each provider its
    tasks use), and when ``rename``, names it ``<session name> · <session id>``, so two runs
    of one file differ and each names its session (a deployment run keeps its name: the
    session is named after it)."""
    from prefect.client.orchestration import get_client

    flow_run = getattr(get_run_context(), "flow_run", None)
    if flow_run is None:
        return
    name = redact_text(f"{store.session.name} · {run.session_id}") if rename else flow_run.name
    tags = run_tags(run, *{t.provider or run.default_provider for t in run.plan.tasks})
    tags = [*flow_run.tags, *(t for t in tags if t not in flow_run.tags)]
    async with get_client() as client:
        await client.update_flow_run(flow_run.id, name=name, tags=tags)
    # Events and logs sent from here on name the run as the server now does.
    flow_run.name, flow_run.tags = name, tags
