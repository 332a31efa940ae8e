"""Getting a run ready: configuration, repository, session (new or resumed), providers.

Every provider the plan uses is checked to be able to work (``providers.require_providers``:
free checks, cached in the process) before the session is created or resumed, so a run that
cannot work ends Failed with the fix before anything is spent, written or committed.

A resumed session keeps its id, branch and task tree; tasks that were running at a crash are
pending again; a task whose ``Aca-Task:`` commit is already on the session branch is recorded
complete whatever the journal says, so it never runs again.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from aca_flows.errors import InputError
from aca_flows.flows.task_run import ActiveRun, GlobalLimitProvider, SpendGuard, SpendMeter
from aca_flows.plan import ExecutionPlan, TaskStatus, load_execution_plan, load_task_file
from aca_flows.plan.io import MARKDOWN_SUFFIXES
from aca_flows.providers import get_provider, rate_limiter_for, require_providers
from aca_flows.providers.base import Provider
from aca_flows.session.events import TaskResult
from aca_flows.session.layout import AcaDir
from aca_flows.session.store import SessionStore, load_session
from aca_flows.settings import AcaConfig, load_config
from aca_flows.workspace import (
    discard_worktree,
    ensure_session_branch,
    open_repository,
    record_landed_task,
)
from aca_flows.workspace.commit import completed_task_commits
from aca_flows.workspace.repository import remove_stale_branch_lock

__all__ = ["RunRequest", "open_run", "recorded_state"]


class RunRequest(BaseModel):
    """The flow's parameters, validated."""

    # Empty strings are refused, not read as "here": a deployment run's current folder is the
    # project clone, and an empty event field must not send aca to work on it.
    task_file: str | None = Field(default=None, min_length=1)
    execution_plan: str | None = Field(default=None, min_length=1)
    workdir: str = Field(default=".", min_length=1)
    provider: str | None = None
    model: str | None = None
    max_concurrent: int | None = Field(default=None, ge=1, le=64)
    budget_usd: float | None = Field(default=None, gt=0)
    session_id: str | None = None
    session_name: str | None = None
    context: list[str] = Field(default_factory=list)
    append_system_prompt: str | None = None
    use_intelligent_parser: bool = False
    init_git: bool = False
    config_file: str | None = None
    record: str | None = None

    def overrides(self) -> dict[str, object]:
        return {
            "session.provider": self.provider,
            "session.model": self.model,
            "session.max_concurrent_tasks": self.max_concurrent,
            "session.budget_usd": self.budget_usd,
        }


def open_run(request: RunRequest) -> tuple[SessionStore, ActiveRun]:
    """The session store (locked) and what the task runs share. Raises ``AcaError`` on bad
    input before anything is written."""
    workdir = Path(request.workdir).expanduser().resolve()
    config_file = Path(request.config_file) if request.config_file else None
    resuming = bool(request.session_id and _session_exists(workdir, request.session_id))
    overrides = request.overrides()
    if resuming:
        # A resumed session keeps the provider and model it was started with, unless the
        # caller names others.
        recorded = load_session(workdir, request.session_id)
        overrides["session.provider"] = request.provider or recorded.provider
        overrides["session.model"] = request.model or recorded.model
    config = load_config(workdir, config_file, overrides).config
    repo = open_repository(workdir, init_git=request.init_git)
    if resuming:
        require_providers(_provider_names(recorded.plan, config), config)
        store = SessionStore.open(workdir, request.session_id)
        store.resumed()
    else:
        plan = _load_plan(request, config)
        require_providers(_provider_names(plan, config), config)
        store = SessionStore.create(
            workdir,
            plan,
            provider=config.session.provider,
            model=config.session.model,
            name=request.session_name,
            session_id=request.session_id,
        )
    # The session lock is ours: a ref lock on the session branch is a crash's leftover.
    remove_stale_branch_lock(repo, store.session_id)
    ensure_session_branch(repo, store.session_id)
    for task_id, sha in completed_task_commits(repo, store.session_id).items():
        if recorded_state(store, task_id) not in (None, "completed"):
            # Landed, but the crash came before the journal entry: finish its bookkeeping
            # (change log, its worktree) as the task itself would have.
            record_landed_task(repo, store.session_id, task_id)
            discard_worktree(repo, AcaDir(workdir).worktrees_dir(store.session_id) / task_id)
            store.task_completed(task_id, TaskResult(commit=sha))
    plan = store.session.plan.model_copy(deep=True)
    if resuming:
        _retry_unfinished(plan)
    providers = _build_providers(plan, config, store, request)
    run = ActiveRun(
        plan=plan,
        workdir=workdir,
        session_id=store.session_id,
        config=config,
        providers=providers,
        default_provider=config.session.provider,
    )
    return store, run


def _retry_unfinished(plan: ExecutionPlan) -> None:
    """On resume, failed tasks get another chance, and so do the tasks their failure
    skipped; completed work is never redone."""
    for task in plan.tasks:
        state, reason = task.status.state, task.status.reason or ""
        if state == "failed" or (state == "skipped" and reason.startswith("dependency")):
            task.status = TaskStatus()


def _load_plan(request: RunRequest, config: AcaConfig) -> ExecutionPlan:
    if request.execution_plan:
        plan = load_execution_plan(Path(request.execution_plan))
    elif (
        request.task_file
        and request.use_intelligent_parser
        and Path(request.task_file).suffix.lower() in MARKDOWN_SUFFIXES
    ):
        return _parse_intelligently(Path(request.task_file), request, config)
    elif request.task_file:
        plan = load_task_file(Path(request.task_file))
    else:
        raise InputError("give task_file or execution_plan (or the session_id to resume).")
    return plan.with_run_context(request.context, request.append_system_prompt)


def _parse_intelligently(task_file: Path, request: RunRequest, config: AcaConfig) -> ExecutionPlan:
    """The LLM's plan of ``task_file``; the CLI's parse left it in the cache, so a run started
    from the command line makes no second provider call."""
    import logging

    from aca_flows.plan.intelligent import PARSE_CACHE_FOLDER, parse_with_llm_sync

    require_providers([config.session.provider], config)  # the parser spends on it
    provider = get_provider(config.session.provider, config)
    parse = parse_with_llm_sync(
        task_file,
        provider,
        model=config.session.model,
        context=request.context,
        append_system_prompt=request.append_system_prompt,
        cache_dir=AcaDir(Path(request.workdir).expanduser().resolve()).root / PARSE_CACHE_FOLDER,
    )
    if parse.lost:
        logging.getLogger(__name__).warning("%s: %s", task_file, parse.lost_warning())
    return parse.plan


def _build_providers(
    plan: ExecutionPlan, config: AcaConfig, store: SessionStore, request: RunRequest
) -> dict[str, Provider]:
    from aca_flows.providers import RateLimitedProvider

    names = _provider_names(plan, config)
    _import_sdks(names)
    spent = sum(entry.cost_usd for entry in store.session.usage)
    meter = SpendMeter(spent, config.session.budget_usd)
    built: dict[str, Provider] = {}
    for name in sorted(names):
        provider = get_provider(
            name, config, record=Path(request.record) if request.record else None
        )
        if name != "replay":  # a cassette has no rate limits to respect
            state_file = store.paths.rate_limit_state_json
            provider = RateLimitedProvider(
                provider, rate_limiter_for(name, config, state_file=state_file)
            )
        limit_name = config.provider(name).concurrency_limit
        if limit_name:
            provider = GlobalLimitProvider(provider, limit_name)
        built[name] = SpendGuard(provider, meter)
    return built


def _provider_names(plan: ExecutionPlan, config: AcaConfig) -> set[str]:
    """The providers a run of ``plan`` uses: the session's, and any a task names."""
    return {config.session.provider} | {t.provider for t in plan.tasks if t.provider}


# Vendor SDKs take seconds to import; importing one inside the first task run would stall
# every task run sharing the event loop, so the run imports them before it starts.
_SDK_MODULES = {"anthropic": "anthropic", "openai": "openai", "claude-code": "claude_agent_sdk"}


def _import_sdks(names: set[str]) -> None:
    import importlib

    for name in names:
        if name in _SDK_MODULES:
            importlib.import_module(_SDK_MODULES[name])


def _session_exists(workdir: Path, session_id: str) -> bool:
    return (AcaDir(workdir).session(session_id).root / "meta").is_dir()


def recorded_state(store: SessionStore, task_id: str) -> str | None:
    """The task's state as the session records it; ``None`` for a task it does not know."""
    try:
        return store.session.plan.task(task_id).status.state
    except KeyError:
        return None
