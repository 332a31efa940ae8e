"""The ``aca-run`` flow: a plan runs as a DAG of Prefect task runs, in the flow named after the
plan, each group of its tree a subflow run holding its task runs (flow_tree.py).

One task run per leaf task, named ``<task-id> <title>``, started when its dependencies have
completed (``wait_for`` draws the edges in the UI's run graph), higher priority first, at most
``max_concurrent`` at once. Subtasks proposed at run time become new task runs of the same
flow run. A failed task skips its dependents (their task runs end ``Completed`` named
``Skipped``, and the session says why); independent branches go on. When pending tasks remain
and none can start, the run has stalled: it ends failed, naming each stuck task and what it
waits on. How each end of a run shows in the exit code, the flow run's state, the session and
the summary: docs/engine.md, "How a run ends", and ``summary.flow_state``.

The session (``.aca/sessions/<id>/``) mirrors every step, so the layout always matches what
Prefect recorded; a re-run with the same session id resumes it and never calls a provider for
a task that completed. This module opens and closes the run; ``scheduler.drive_plan`` runs
its tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import socket
import sys
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

from prefect import Flow, flow, get_run_logger
from prefect.context import get_run_context
from prefect.exceptions import TerminationSignal
from prefect.states import Failed, State
from pydantic import ValidationError

from aca_flows._files import readable
from aca_flows._startup import stop_if_signalled, take_signal
from aca_flows._threads import in_thread
from aca_flows.errors import AcaError
from aca_flows.flows.abandoned_runs import crash_abandoned_runs
from aca_flows.flows.deployment_guard import deployment_refusal, resolve_job_paths
from aca_flows.flows.events import emit_session_event
from aca_flows.flows.flow_tree import plan_flow_name
from aca_flows.flows.interrupt import (
    UI_CANCEL,
    Interrupt,
    cancelled_from_outside,
    interrupt_on_signals,
    stop_for_lost_server,
    task_runs_recorded_ended,
    watch_for_cancel,
)
from aca_flows.flows.log_batch import console_handlers, print_each_line
from aca_flows.flows.lost_server import ServerLost, lost_server, run_lost_server
from aca_flows.flows.publishing import (
    publish_end,
    published,
    send_in_background,
)
from aca_flows.flows.pull_requests import (
    PULL_REQUESTS,
    deliver_pull_request,
    pull_request_target,
)
from aca_flows.flows.remote_sync import (
    claim_session,
    open_remote,
    push_session_work,
    register_remote,
    resume_of,
    run_working_area,
)
from aca_flows.flows.run_setup import RunRequest, open_run
from aca_flows.flows.scheduler import TREES, drive_plan
from aca_flows.flows.session_log import session_log
from aca_flows.flows.summary import RunSummary, delivery_failure, flow_state, run_summary
from aca_flows.flows.task_help import take_answer_left
from aca_flows.flows.task_run import (
    ACTIVE_RUNS,
    ActiveRun,
    run_tags,
    worktrees_removed,
)
from aca_flows.plan.models import ExecutionPlan
from aca_flows.providers.sdk_client import close_clients
from aca_flows.session.checkpoints import create_checkpoint
from aca_flows.session.redact import redact, redact_log_handlers, redact_text
from aca_flows.session.store import SessionStore
from aca_flows.workspace.merge import remove_idle_merge_folder

__all__ = [
    "Interrupt",
    "aca_run",
    "deployment_session_id",
    "flow_state",
    "interrupt_on_signals",
    "plan_flow",
]


SWITCH_INTERVAL = 0.001
# How long a run cut off (a cancel, a signal) gives the remote its session's end: a worker
# sends SIGKILL 30 s after its SIGTERM.
PUSH_AT_STOP = 15.0


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
        budget_usd: Cap on the session's spend in US dollars, every run of it: no provider
            call starts once it is spent, and calls in flight count against it. Reached, the
            run stops, resumable.
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
    # Git runs in aca's threads beside the flow's own work (the next task's worktree is made
    # while a task's run ends, run_worktrees.py): a thread back from git waits this long at
    # most for the interpreter while the event loop is busy, not Python's 5 ms a time.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Every record this run logs, to the server or the terminal, passes the redactor.
    redact_log_handlers()
    for handler in console_handlers():
        print_each_line(handler)  # a task run's lines as they were before they were joined
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
    try:
        request = RunRequest(session_name=session_name, **parameters)
    except ValidationError as exc:  # a parameter's value: named, as a refusal is, no traceback
        refused = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()
        )
        get_run_logger().error(f"refused: {refused}")
        return Failed(message=f"refused: {refused}")
    refusal = deployment_refusal(parameters) if deployed else None
    if refusal is None and session_id and not repo:
        refusal, request = _continued_session(request, session_id, deployed)
    if refusal is not None:
        # Before the session, git or a provider: a refused run leaves nothing behind.
        get_run_logger().error(f"refused: {refusal}")
        return Failed(message=f"refused: {refusal}")
    # A Ctrl-C to the ``aca`` command that was swallowed on its way here (_startup.py): the
    # run ends before it makes its session, as it would have, had the signal not been lost.
    stop_if_signalled()
    try:
        remote = None
        if repo:
            remote = await in_thread(open_remote, repo, workdir, request.session_id)
        store, run = open_run(request)
        if remote is not None and store.session.resumes:
            await claim_session(remote, store, get_run_logger())
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
    run.stopping = lambda: interrupt.requested
    run.stop_if_server_lost = functools.partial(stop_for_lost_server, interrupt)
    # A takeover (a resume with repo elsewhere) leaves the session's pushes to the resume.
    taken_over = functools.partial(register_remote, run.session_id, None)
    watcher = asyncio.create_task(watch_for_cancel(interrupt, taken_over, run.session_id))
    logs = session_log(
        store.paths.system_log, run.config.logging.level, flow_run and str(flow_run.id)
    )
    try:
        with interrupt.installed(), logs:
            early = take_signal()  # came before the flow's handlers were in, and was lost
            if early is not None:
                interrupt.request(early)
            send_in_background(
                run.session_id, _label_flow_run(store, run, rename=session_name is None)
            )
            emit_session_event(store, "started")
            if store.session.remote is not None and not repo:
                _warn_nothing_is_pushed(store)
            if not request.open_pr:
                _warn_of_an_undelivered_pull_request(store)
            if store.session.resumes or _retried(flow_run):
                # Before this run starts any run of its own (abandoned_runs.py).
                await crash_abandoned_runs(
                    run.session_id,
                    flow_run and str(flow_run.id),
                    taken_over_on=socket.gethostname() if repo else None,
                    finished=_finished_tasks(store),
                )
                await take_answer_left(run)
            summary = await drive_plan(store, run, request, interrupt)
            if interrupt.server_lost:  # the session says how it ended already
                raise _lost_server_error(store, run, summary)
            await deliver_pull_request(store, run, summary)
            if summary.pull_request or summary.pull_request_error:
                # `aca sessions show` tells it after the run, as the ending does.
                store.pull_request_delivered(summary.pull_request, summary.pull_request_error)
            summary.not_delivered = delivery_failure(summary, pushes=bool(repo))
            if summary.not_delivered and not summary.pull_request_error:  # that one is logged
                get_run_logger().error(f"the run's work is {summary.not_delivered}")
            end = summary.stopped_reason or summary.not_delivered
            # Work done but not delivered fails the flow run (exit 4): an automation of a
            # completed session would take it for green.
            emit_session_event(store, "failed" if summary.not_delivered else summary.status, end)
    except (asyncio.CancelledError, KeyboardInterrupt, TerminationSignal) as stop:
        # Interrupted: what finished is recorded; running tasks start again on resume. A
        # worker ends a deployment run cancelled from the UI with SIGTERM, often before the
        # run's own look sees the cancel: said as the cancel it is, and the remote gets the
        # session's end (its record said the run went on).
        cut_off = not isinstance(stop, KeyboardInterrupt)  # a person's Ctrl-C wants out now
        by = ""
        # A second cancel while it looks (or pushes, below) ends the look, not the record.
        with contextlib.suppress(BaseException):
            if cut_off and await cancelled_from_outside(interrupt, flow_run):
                by = f" by {UI_CANCEL}"
        create_checkpoint(store, trigger="interrupt", description=f"interrupted{by}")
        reason = f"interrupted{by}; `{resume_of(store)}` continues"
        store.finish("interrupted", reason)
        emit_session_event(store, "interrupted", reason)
        if cut_off:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(push_session_work(store, get_run_logger()), PUSH_AT_STOP)
            if run.progress is not None:  # the UI's artifacts say where it stopped, as ever
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(
                        publish_end(store, run, run.progress, "interrupted"), PUSH_AT_STOP
                    )
        raise
    except ServerLost:
        raise
    except Exception as exc:
        if await in_thread(lost_server, exc):
            # Nothing failed: the run was cut off. It ends as an interrupt does, or as its
            # session did when that had ended.
            _interrupted_by_lost_server(store)
            raise _lost_server_error(store, run) from None
        reason = readable(f"{type(exc).__name__}: {exc}")
        store.finish("failed", reason)
        emit_session_event(store, "failed", reason)
        raise
    finally:
        watcher.cancel()
        if (tree := TREES.pop(run.session_id, None)) is not None:
            await tree.abandon()  # a run that stopped abruptly ends its subflows
        with contextlib.suppress(Exception):  # a removal's failure is logged there
            await worktrees_removed(run)
        ACTIVE_RUNS.pop(run.session_id, None)
        PULL_REQUESTS.pop(run.session_id, None)
        register_remote(run.session_id, None)
        store.close()
        with contextlib.suppress(OSError):  # every run left its folder of worktrees behind
            remove_idle_merge_folder(run.workdir, run.session_id)
        with contextlib.suppress(Exception):  # a client that cannot close is no reason to fail
            await close_clients()
        with contextlib.suppress(Exception):  # a run that ended early still sends its reports
            await published(run.session_id)
    state = flow_state(summary, cancelled_from_ui=interrupt.signal_name == UI_CANCEL)
    if isinstance(state, State) and state.is_cancelled():  # each task run shows its own end
        await task_runs_recorded_ended()
    return state


def _continued_session(
    request: RunRequest, given: str, deployed: bool
) -> tuple[str | None, RunRequest]:
    """The session ``session_id`` continues: the id, or a prefix of one, as everywhere ids
    are asked for (a prefix made a new session of that id, which paid for all the work
    again). A deployment run's must name one; a direct call's may name a new session (the
    command line picks its id before the run)."""
    from aca_flows.session.errors import UnknownSessionError
    from aca_flows.session.reading import resolve_session_id

    try:
        found = resolve_session_id(Path(request.workdir).expanduser(), given)
    except UnknownSessionError as exc:
        if exc.ambiguous or deployed:
            return f"session_id continues a session of the workdir: {exc}", request
        return None, request
    return None, request.model_copy(update={"session_id": found})


def _finished_tasks(store: SessionStore) -> dict[str, str]:
    """What each task the session records completed left: its commit, or no change."""
    session = store.session
    finished = {}
    for task_id in session.completed_task_ids:
        commit = run.commit if (run := session.tasks.get(task_id)) else None
        finished[task_id] = f"commit {commit[:10]}" if commit else "no change needed"
    return finished


def _retried(flow_run) -> bool:
    """A Prefect retry of the flow run: its earlier attempt may have left runs even when the
    session is new here (killed before its record reached this disk or the remote)."""
    return flow_run is not None and flow_run.run_count > 1


def _warn_nothing_is_pushed(store: SessionStore) -> None:
    """A session started with a repo, run here without one: its new work stays local."""
    url = store.session.remote.url
    get_run_logger().warning(
        f"session {store.session_id} was started with --repo {url}; this run was given no "
        f"--repo, so nothing it does is pushed: `{resume_of(store)}` pushes it"
    )


def _warn_of_an_undelivered_pull_request(store: SessionStore) -> None:
    """A session whose pull request an earlier run could not open, run without --open-pr:
    this run opens none, and its own end would say all is delivered."""
    pull_request = store.session.pull_request
    if pull_request is not None and pull_request.error and not pull_request.url:
        get_run_logger().warning(
            f"session {store.session_id}'s pull request was not delivered "
            f"({pull_request.error}); this run was given no --open-pr, so it opens none: "
            f"`{resume_of(store)} --open-pr` (with the --github-repo it was given, if any) "
            "delivers it"
        )


def _interrupted_by_lost_server(store: SessionStore) -> None:
    """The session ends interrupted (tasks cut short are pending again), unless the run's
    stop already ended it so."""
    from prefect.settings import PREFECT_API_URL

    if store.session.status != "running":
        return
    reason = f"the Prefect server at {PREFECT_API_URL.value()} stopped answering"
    create_checkpoint(store, trigger="interrupt", description=reason)
    reason += f"; `{resume_of(store)}` continues"
    store.finish("interrupted", reason)
    emit_session_event(store, "interrupted", reason)


def _lost_server_error(
    store: SessionStore, run: ActiveRun, summary: RunSummary | None = None
) -> ServerLost:
    """What ends a run whose server is gone. A session that ended before (every task settled,
    its end in the journal) keeps that end: the error carries its summary, and the command
    tells the session's outcome; only the flow run's final state is lost with the server."""
    status = store.session.status
    if status in ("running", "interrupted"):
        return run_lost_server(run.session_id, status, resume=resume_of(store))
    if summary is None:  # the server went while the run sent its last reports
        no_change_ids = [t for t, o in run.outcomes.items() if o.completed_without_change]
        reason = store.session.status_reason
        summary = run_summary(store, status, reason, {}, no_change_ids)
    return run_lost_server(run.session_id, status, summary)


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


def plan_flow(plan_name: str, run_name: str | None = None) -> Flow:
    """``aca_run`` as the flow named after the plan ``plan_name`` (docs/engine.md, "The plan's
    flow"): what the ``aca`` command runs, so its flow run is the plan's and no subflow run
    is needed for it. ``run_name``: the flow run's name (redacted, as it is stored)."""
    # A copy under the plan's name (a slug, a valid flow name): ``with_options`` would build
    # the flow's parameter schema again, the same for every plan, 30 ms of each run's start.
    named = copy.copy(aca_run)
    named.name = plan_flow_name(plan_name)
    if run_name is not None:
        shown = redact_text(run_name)
        named.flow_run_name = lambda: shown  # a callable: a string would be .format()ted
    return named


def deployment_session_id(flow_run) -> str:
    """Stable for the flow run, retries included; sorts by time like other session ids. The
    id's last digits, its random ones: Prefect's scheduler makes time-ordered ids (UUIDv7),
    whose first six digits every run it schedules within hours shares, and two jobs scheduled
    for one minute shared one session (the second "completed" on the first's tasks)."""
    when = flow_run.expected_start_time or flow_run.created
    return f"{when.astimezone(UTC):%Y%m%d-%H%M%S}-{flow_run.id.hex[-6:]}"


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
