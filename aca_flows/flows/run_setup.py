"""Getting a run ready: configuration, repository, session (new or resumed), providers.

Every provider the plan uses is checked to be able to work (``providers.require_providers``:
free checks, cached in the process) before the session is created or resumed, so a run that
cannot work ends Failed with the fix before anything is spent, written or committed.

A resumed session keeps its id, branch and task tree; tasks that were running at a crash are
pending again; a task whose ``Aca-Task:`` commit is already on the session branch is recorded
complete whatever the journal says, so it never runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, field_validator

from aca_flows.agent.subtasks import proposed_before_landing, take_subtasks
from aca_flows.config_loader import load_config, run_overrides
from aca_flows.errors import InputError
from aca_flows.flows.blocks import load_config_block
from aca_flows.flows.events import emit_session_event
from aca_flows.flows.remote_sync import resume_of
from aca_flows.flows.run_inputs import (
    changed_source_warning,
    refuse_a_spent_budget,
    refuse_checked_out_session_branch,
    refuse_lost_work,
    refuse_redacted_work,
    setup_network_warning,
    source_of,
    uncommitted_work_warning,
)
from aca_flows.flows.run_providers import (
    build_providers,
    import_sdks_in_background,
    providers_left,
    require_working_providers,
    run_logger,
)
from aca_flows.flows.secret_keys import provider_environ
from aca_flows.flows.task_help import add_hint
from aca_flows.flows.task_run import ActiveRun
from aca_flows.flows.unpriced import free_provider, refuse_a_budget_without_prices
from aca_flows.plan import (
    ExecutionPlan,
    Task,
    TaskStatus,
    check_plan,
    load_execution_plan,
    load_task_file,
    load_task_text,
)
from aca_flows.plan.io import MARKDOWN_SUFFIXES
from aca_flows.providers import require_providers
from aca_flows.providers.claude_code_transcripts import remove_worktree_transcripts
from aca_flows.session.events import TaskResult
from aca_flows.session.layout import AcaDir, linked_aca_folder
from aca_flows.session.reading import load_session
from aca_flows.session.redact import redact
from aca_flows.session.store import SessionStore
from aca_flows.settings import AcaConfig
from aca_flows.workspace import (
    discard_spare_worktrees,
    discard_worktree,
    ensure_session_branch,
    open_repository,
    record_landed_task,
)
from aca_flows.workspace.commit import completed_task_commits
from aca_flows.workspace.repository import (
    checkout_tracking_aca_files,
    refuse_a_branch_named_aca,
    remove_stale_branch_lock,
)

if TYPE_CHECKING:
    from aca_flows.plan.intelligent import IntelligentParse

__all__ = [
    "RunRequest",
    "open_run",
    "plan_name_of",
    "prose_warning_said_by_caller",
    "recorded_status",
]

# Whether the caller that starts a flow run here said the prose-dependencies warning already
# (``aca run`` says it on the terminal as it loads the task file).
_PROSE_WARNING_SAID: ContextVar[bool] = ContextVar("aca_prose_warning_said", default=False)


# As aca makes them (20261207-140857-296048); it names a folder, a branch and Prefect's
# artifact keys, which take no "_" or ".".
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,99}")


class RunRequest(BaseModel):
    """The flow's parameters, validated."""

    # Empty strings are refused, not read as "here": a deployment run's current folder is the
    # project clone, and an empty event field must not send aca to work on it.
    task_file: str | None = Field(default=None, min_length=1)
    execution_plan: str | None = Field(default=None, min_length=1)
    workdir: str = Field(default=".", min_length=1)
    plan_text: str | None = None
    plan_format: Literal["toml", "markdown"] | None = None
    plan: ExecutionPlan | None = None
    provider: str | None = None
    model: str | None = None
    max_concurrent: int | None = Field(default=None, ge=1, le=64)
    budget_usd: float | None = Field(default=None, gt=0)
    session_id: str | None = None
    """Of a session to continue, or of the new one (letters, digits and ``-``: it names a
    folder under ``.aca/sessions``, a branch and artifacts)."""
    session_name: str | None = None
    context: list[str] = Field(default_factory=list)
    append_system_prompt: str | None = None
    use_intelligent_parser: bool = False
    init_git: bool = False
    config_file: str | None = None
    config_block: str | None = Field(default=None, min_length=1)
    record: str | None = None
    require_approval: bool = False
    open_pr: bool = False
    github_repo: str | None = None
    repo: str | None = None
    """The ``--repo`` URL the run works on (its checkout is ``workdir`` by now)."""

    @field_validator("session_id")
    @classmethod
    def _a_name_not_a_path(cls, value: str | None) -> str | None:
        # "../x" or "/tmp/x" wrote a session record outside .aca before git refused it.
        if value is not None and not SESSION_ID.fullmatch(value):
            raise ValueError(f"{value!r} is no session id: use letters, digits and '-' only")
        return value


def open_run(request: RunRequest) -> tuple[SessionStore, ActiveRun]:
    """The session store (locked) and what the task runs share. Raises ``AcaError`` on bad
    input before anything is written."""
    workdir = Path(request.workdir).expanduser().resolve()
    if problem := linked_aca_folder(workdir) or checkout_tracking_aca_files(workdir):
        raise InputError(problem)
    config_file = Path(request.config_file) if request.config_file else None
    resuming = bool(request.session_id and _session_exists(workdir, request.session_id))
    overrides = run_overrides(request)
    if resuming:
        # A resumed session keeps the provider and model it was started with, unless the
        # caller names others.
        recorded = load_session(workdir, request.session_id)
        refuse_redacted_work(recorded.plan, recorded.id)
        refuse_a_spent_budget(recorded, request.budget_usd, workdir, request.repo)
        overrides["session.provider"] = request.provider or recorded.provider
        overrides["session.model"] = request.model or recorded.model
        # and its budget: a nightly `aca resume` must not lose the cap `aca run` was given.
        if request.budget_usd is None and recorded.budget_usd is not None:
            overrides["session.budget_usd"] = recorded.budget_usd
        # and its --config: the resume a run prints names none (`aca resume ID`). Only where
        # it started: a record fetched from a remote (--repo) names a file of another
        # machine, or one its pusher chose.
        if (
            config_file is None
            and not request.config_block
            and recorded.config_file
            and not request.repo
            and Path(recorded.workdir) == workdir
        ):
            if Path(recorded.config_file).is_file():
                config_file = Path(recorded.config_file)
            else:
                _warn(
                    f"the session was started with --config {recorded.config_file}, which is "
                    "not here: the configuration is read from the workdir (--config names "
                    "another)"
                )
    block = None
    if request.config_block:  # settings from the Prefect server: nothing read from disk
        block = (request.config_block, load_config_block(request.config_block))
    loaded = load_config(workdir, config_file, overrides, block=block)
    for line in loaded.ignored:  # settings a cloned repository may not make (cloned_config)
        _warn(line)
    config = loaded.config
    repo = open_repository(workdir, init_git=request.init_git)
    refuse_a_branch_named_aca(repo)
    if resuming:
        refuse_lost_work(repo, recorded)
        names = providers_left(recorded.plan, config.session.provider)
        if names:  # tasks are left to land (a finished session's branch does not move)
            refuse_checked_out_session_branch(repo, recorded.id)
        require_working_providers(names, config, recorded.plan)
        refuse_a_budget_without_prices(recorded.plan, config)
        import_sdks_in_background(names)
        store = SessionStore.open(workdir, request.session_id, request.repo)
        # A question its killed run waited on: answered in the UI meanwhile, maybe.
        left_question = store.session.question
        store.resumed(budget_usd=request.budget_usd)
        # A run killed outright left Claude Code's transcripts of its tasks in the home.
        worktrees = AcaDir(workdir).worktrees_dir(recorded.id)
        remove_worktree_transcripts(worktrees, [task.id for task in recorded.plan.tasks])
        _warn(changed_source_warning(recorded))
        asked = None
    else:
        if request.session_id:  # else the run names a new branch: no one has it out yet
            refuse_checked_out_session_branch(repo, request.session_id)
        plan, parse = _load_plan(request, config)
        if request.task_file and parse is None:  # read as written: its prose is text
            _warn_of_prose_dependencies(request.task_file, plan)
        names = providers_left(plan, config.session.provider)  # none when all is marked done
        require_working_providers(names, config, plan)
        refuse_a_budget_without_prices(plan, config)
        import_sdks_in_background(names)
        asked, left_question = plan, None
        store = SessionStore.create(
            workdir,
            plan,
            provider=config.session.provider,
            model=config.session.model,
            name=request.session_name,
            session_id=request.session_id,
            budget_usd=config.session.budget_usd,
            source=source_of(request),
            config_file=str(config_file.resolve()) if config_file else None,
        )
        if parse is not None:
            _bill_parse(store, parse)
            _keep_parse(store, parse)
    kept_failed: set[str] = set()  # landed, its subtasks refused: a retry would change nothing
    with _ended_on_error(store):
        # The session lock is ours: a ref lock on the session branch is a crash's leftover.
        remove_stale_branch_lock(repo, store.session_id)
        ensure_session_branch(repo, store.session_id)
        discard_spare_worktrees(repo, store.session_id)  # set aside by a run that crashed
        if asked is not None:
            _warn(uncommitted_work_warning(repo, request))
        for task_id, sha in completed_task_commits(repo, store.session_id).items():
            if (recorded := recorded_status(store, task_id)) and recorded.state != "completed":
                # Landed, but the crash came before the journal entry: finish its bookkeeping
                # (change log, its worktree) as the task itself would have.
                record_landed_task(repo, store.session_id, task_id)
                discard_worktree(repo, AcaDir(workdir).worktrees_dir(store.session_id) / task_id)
                refused = _subtasks_proposed_before_landing(store, task_id)
                if refused is None:
                    store.task_completed(task_id, TaskResult(commit=sha))
                    continue
                kept_failed.add(task_id)
                if recorded.state != "failed":
                    store.task_failed(task_id, refused)
        # The record holds the plan redacted; what runs is the plan as the user wrote it.
        if asked is not None:
            plan = _with_statuses(asked, store.session.plan)
        else:
            plan = store.session.plan.model_copy(deep=True)
            _retry_unfinished(plan, kept_failed)
        config = _with_plan_concurrency(config, plan, request)
        _warn(setup_network_warning(plan, config.sandbox))
        providers = build_providers(names, config, store, request)
        run = ActiveRun(
            plan=plan,
            workdir=workdir,
            session_id=store.session_id,
            config=config,
            providers=providers,
            default_provider=config.session.provider,
            store=store,
            left_question=left_question,
        )
        for task_id, done in store.session.tasks.items():
            for hint in done.hints if not run.plan.task(task_id).status.is_done else ():
                add_hint(run, task_id, hint)  # a reviewer's answer outlives its run
    return store, run


@contextlib.contextmanager
def _ended_on_error(store: SessionStore) -> Iterator[None]:
    """A run that cannot start once its session exists ends the session, lock released: left
    "running", it would list as interrupted and hold its lock until the process exits."""
    from prefect.exceptions import TerminationSignal

    try:
        yield
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError, TerminationSignal)):
            # A Ctrl-C or SIGTERM while the run was set up (a big checkout's `git status`):
            # said as the interrupt it is, with the way on, as one a moment later is.
            how = "SIGTERM" if isinstance(exc, TerminationSignal) else "an interrupt"
            reason = f"interrupted by {how} before its first task; `{resume_of(store)}` continues"
            store.finish("interrupted", reason)
            with contextlib.suppress(Exception):
                emit_session_event(store, "interrupted", reason)
        else:
            store.finish("failed", str(exc) or type(exc).__name__)
        store.close()
        raise


def plan_name_of(parameters: dict[str, object]) -> str | None:
    """The name of the plan ``aca_run`` runs with ``parameters``, read before the flow
    starts (the ``aca`` command runs the flow under the plan's name); ``None`` when only the
    flow can tell (an intelligent parse) or the input is bad (the flow says why)."""
    try:
        known = {k: v for k, v in parameters.items() if k in RunRequest.model_fields}
        request = RunRequest(**known)
        workdir = Path(request.workdir).expanduser().resolve()
        if request.session_id and _session_exists(workdir, request.session_id):
            return load_session(workdir, request.session_id).plan.name
        if request.use_intelligent_parser:
            return None
        return _load_plan(request, None)[0].name
    except Exception:  # bad input: the flow itself refuses it, with the fix
        return None


def _with_plan_concurrency(
    config: AcaConfig, plan: ExecutionPlan, request: RunRequest
) -> AcaConfig:
    """A plan's ``max_concurrent`` knows its tasks better than a config file does; only the
    command line (a flow parameter) overrides it."""
    if plan.max_concurrent is None or request.max_concurrent is not None:
        return config
    session = config.session.model_copy(update={"max_concurrent_tasks": plan.max_concurrent})
    return config.model_copy(update={"session": session})


def _subtasks_proposed_before_landing(store: SessionStore, task_id: str) -> str | None:
    """The subtasks of a task that landed as aca died, journalled before its completion as
    its run would have (its log kept them): they run, and it completes with them. Why they
    cannot be taken, when they cannot: its part landed, the rest of its work was left to
    them, so it is not done (the run that found so failed it; a resume completed it)."""
    proposals = proposed_before_landing(store.paths.task_log(task_id))
    if not proposals:
        return None
    children, refused = take_subtasks(store.session.plan.model_copy(deep=True), task_id, proposals)
    if refused is not None:
        return refused
    store.subtasks_added(task_id, children)
    return None


def _with_statuses(asked: ExecutionPlan, recorded: ExecutionPlan) -> ExecutionPlan:
    """The user's plan, text untouched, with the states the session recorded."""
    plan = asked.model_copy(deep=True)
    for task in plan.tasks:
        task.status = recorded.task(task.id).status.model_copy()
    return plan


def _retry_unfinished(plan: ExecutionPlan, kept_failed: set[str]) -> None:
    """On resume, failed tasks get another chance, and so do the tasks their failure
    skipped and those a stall blocked; completed work is never redone. ``kept_failed``: tasks
    whose work landed with subtasks the plan cannot take, failed as they stand (a run would
    count an attempt and find the same). A task recorded
    completed when its own work landed, whose proposed subtasks did not all finish (a
    stopped run), is a group still open: pending again in the run, so what depends on it
    waits for them (its own commit is found on the branch, not made again)."""
    for task in plan.tasks:
        if task.id in kept_failed:
            continue
        if task.status.state in ("failed", "blocked") or task.status.skipped_for_failure:
            task.status = TaskStatus()
    for task in plan.tasks:
        if task.children and task.status.state == "completed" and _open_group(plan, task):
            task.status = TaskStatus()


def _open_group(plan: ExecutionPlan, group: Task) -> bool:
    """Whether a task under ``group`` is still to run."""
    for child in (plan.task(c) for c in group.children):
        if _open_group(plan, child) if child.children else not child.status.is_done:
            return True
    return False


def _load_plan(
    request: RunRequest, config: AcaConfig | None
) -> tuple[ExecutionPlan, IntelligentParse | None]:
    """The plan to run, and the intelligent parse it came from (if it did)."""
    given = [name for name in PLAN_SOURCES if getattr(request, name) is not None]
    if len(given) > 1:
        raise InputError(
            f"give one plan, not {' and '.join(given)}: task_file, execution_plan, plan_text "
            "or plan."
        )
    if request.use_intelligent_parser and (request.plan_text or request.plan):
        raise InputError(
            "use_intelligent_parser reads a task file: give the Markdown as task_file, or "
            "give plan_text or plan without use_intelligent_parser."
        )
    if request.plan is not None:
        plan = check_plan(request.plan.model_copy(deep=True), "plan", fix_in="the plan you passed")
    elif request.plan_text is not None:
        workdir = Path(request.workdir).expanduser().resolve()
        plan = load_task_text(request.plan_text, workdir, request.plan_format)
    elif request.execution_plan:
        plan = load_execution_plan(Path(request.execution_plan))
    elif (
        request.task_file
        and request.use_intelligent_parser
        and Path(request.task_file).suffix.lower() in MARKDOWN_SUFFIXES
    ):
        parse = _parse_intelligently(Path(request.task_file), request, config)
        return parse.plan, parse
    elif request.task_file:
        plan = load_task_file(Path(request.task_file))
    else:
        raise InputError(
            "give task_file, execution_plan, plan_text or plan (or the session_id to resume)."
        )
    return plan.with_run_context(request.context, request.append_system_prompt), None


PLAN_SOURCES = ("task_file", "execution_plan", "plan_text", "plan")


def _bill_parse(store: SessionStore, parse: IntelligentParse) -> None:
    """The parse's spend goes on the bill of the session made from it, once: journal first
    (spend is never lost), then the cache entry forgets it."""
    from aca_flows.plan.intelligent import mark_parse_billed

    spend = parse.unbilled
    if spend is None or spend.calls == 0:
        return
    store.call_recorded(
        purpose="parse",
        provider=spend.provider,
        model=spend.model,
        usage=spend.usage,
        cost_usd=spend.cost_usd,
        calls=spend.calls,
        unpriced=spend.unpriced,
    )
    mark_parse_billed(parse)


def _keep_parse(store: SessionStore, parse: IntelligentParse) -> None:
    """The parse's result, in the session's results (redacted, like all of the session)."""
    from aca_flows.flows.parse_task import PARSE_TASK_NAME
    from aca_flows.session.files import write_json_atomic

    write_json_atomic(
        store.paths.results_dir / f"{PARSE_TASK_NAME}.json",
        {
            "plan": parse.plan.model_dump(mode="json"),
            "lost": [str(item) for item in parse.lost],
            "from_cache": parse.from_cache,
            "provider_calls": parse.provider_calls,
            "cost_usd": parse.cost_usd,
            "unpriced_calls": parse.unpriced_calls,
        },
    )


def _parse_intelligently(
    task_file: Path, request: RunRequest, config: AcaConfig
) -> IntelligentParse:
    """The LLM's parse of ``task_file``, as the flow's ``parse-task-file`` task run (cached
    by Prefect; flows/parse_task.py)."""
    from aca_flows.flows.parse_task import parse_in_flow
    from aca_flows.plan.intelligent import parse_provider

    name = config.session.provider
    environ = provider_environ(name, config)
    require_providers([name], config, environ)  # the parser spends on it
    return parse_in_flow(
        task_file,
        parse_provider(config, environ=environ, scrub=redact),
        model=config.session.model,
        context=request.context,
        append_system_prompt=request.append_system_prompt,
        free=free_provider(name, config),
    )


@contextlib.contextmanager
def prose_warning_said_by_caller(said: bool) -> Iterator[None]:
    """Inside, with ``said``, a flow run started does not log the warning of dependencies its
    task file states in prose: the caller said it (``aca run``, on its terminal)."""
    token = _PROSE_WARNING_SAID.set(said)
    try:
        yield
    finally:
        _PROSE_WARNING_SAID.reset(token)


def _warn_of_prose_dependencies(task_file: str, plan: ExecutionPlan) -> None:
    """As ``aca run`` warns as it loads the task file (cli/run.py): every flow run it did not
    start warns in its log."""
    from aca_flows.plan.prose_dependencies import prose_dependencies_warning

    if _PROSE_WARNING_SAID.get():
        return
    if warning := prose_dependencies_warning(plan):
        _warn(f"{task_file}: {warning}")


def _warn(message: str | None) -> None:
    if message:
        run_logger().warning(message)


def _session_exists(workdir: Path, session_id: str) -> bool:
    return (AcaDir(workdir).session(session_id).root / "meta").is_dir()


def recorded_status(store: SessionStore, task_id: str) -> TaskStatus | None:
    """The task's status as the session records it; ``None`` for a task it does not know."""
    try:
        return store.session.plan.task(task_id).status
    except KeyError:
        return None
