"""``execute_task``: one plan task becomes one verified commit on the session branch.

worktree (from the session branch head) -> the plan's setup commands -> prompt -> provider
(tool loop, or Claude Code in the worktree) -> evidence check -> verify, sending failures back
up to ``max_fix_attempts`` times -> commit -> merge under the lock (``landing.py``) -> change
log -> worktree removed. A merge conflict starts the task again on the new head, at most
``max_runs`` times, then fails it naming the files. Unverified work is never committed, and
nothing is committed without a change.

A task completes with evidence (``no_change.py``): a verified change committed
(``outcome="changed"``), or the agent's explicit "no change needed" with its reason, the
worktree untouched and the verify command passing (``outcome="no_change"``, no commit). An
agent that stops with neither fails the task; so does one that asks for a person
(``needs_human.py``), with its question as the reason. A failed task's outcome holds the
worktree's diff (``diff``), taken before the worktree is removed, for a person to judge.

Safe to call again for the same task: a task whose ``Aca-Task:`` commit is already on the
session branch is reported completed without calling the provider (its change-log entry is
rewritten, which changes nothing). Provider errors propagate unchanged so the caller (the
Prefect flow) decides about retries; the task's worktree is removed either way.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import git
from pydantic import BaseModel, Field

from aca_flows._threads import in_thread
from aca_flows._words import resume_command
from aca_flows.agent.dependency_contexts import dependency_contexts, task_commit_summary
from aca_flows.agent.landing import (
    ChangeAlreadyLanded,
    land_checked,
)
from aca_flows.agent.loop import AgentConversation
from aca_flows.agent.no_change import (
    with_refusals,
    work_in,
)
from aca_flows.agent.prompt import (
    build_system_prompt,
)
from aca_flows.agent.rounds import CLAUDE_CODE, RoundsResult, run_agent_and_verify
from aca_flows.agent.run_worktrees import RunWorktrees
from aca_flows.agent.setup import run_setup_commands
from aca_flows.agent.subtasks import ProposedSubtask, proposed_before_landing
from aca_flows.agent.transcript import ConversationStore, LogCallback, TaskLog
from aca_flows.plan.models import ExecutionPlan, Task, verify_command_for
from aca_flows.plan.vacuous_check import edited_checks
from aca_flows.providers.base import Provider, Usage
from aca_flows.providers.claude_code_transcripts import remove_claude_transcripts
from aca_flows.session.layout import AcaDir
from aca_flows.session.usage import summed_cost
from aca_flows.settings import AcaConfig
from aca_flows.workspace import (
    ChecksFailedOnHead,
    GitIdentity,
    LandedTask,
    MergeConflictError,
    SessionBranchCheckedOut,
    TaskWorktree,
    commit_identity,
    discard_worktree,
    ensure_session_branch,
    hand_merge,
    keep_unlanded_change,
    open_repository,
    record_landed_task,
)
from aca_flows.workspace.hardened_git import AcaRepo

__all__ = ["TaskOutcome", "execute_task"]

# A failed task's diff, as kept in its outcome (the persisted result) and shown to a person.
DIFF_LIMIT = 20_000


class TaskOutcome(BaseModel):
    """The result of ``execute_task``; what the flow persists and shows."""

    task_id: str
    status: Literal["completed", "failed"]
    outcome: Literal["changed", "no_change"] | None = Field(
        default=None, description="The evidence of a completed task; None for a failed one."
    )
    no_change_reason: str | None = Field(
        default=None, description="Why the agent said the task needs no change."
    )
    summary: str = ""
    failure_reason: str | None = None
    human_question: str | None = Field(
        default=None, description="The agent's question when it asked for a person."
    )
    diff: str = Field(
        default="", description="A failed task's changes against its base, clipped (DIFF_LIMIT)."
    )
    commit_sha: str | None = None
    files_changed: list[str] = Field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    turns: int = Field(default=0, description="Provider calls, over all runs and attempts.")
    attempts: int = Field(default=0, description="Agent rounds of the last run: 1 + fixes.")
    runs: int = Field(default=0, description="Runs started; a merge conflict starts another.")
    verify_command: str | None = None
    verify_passed: bool | None = None
    verify_output: str = ""
    proposed_subtasks: list[ProposedSubtask] = Field(default_factory=list)
    conflict_files: list[str] = Field(default_factory=list)
    already_completed: bool = Field(
        default=False, description="Found on the session branch; the provider was not called."
    )
    provider: str = ""
    model: str | None = None

    @property
    def completed_without_change(self) -> bool:
        """Completed on the agent's verified "no change needed", without a commit."""
        return self.status == "completed" and self.outcome == "no_change"

    @property
    def display_status(self) -> str:
        """How people read the outcome: ``completed``, ``completed, no change`` or ``failed``."""
        return "completed, no change" if self.completed_without_change else self.status


async def execute_task(
    plan: ExecutionPlan,
    task_id: str,
    *,
    workdir: Path,
    session_id: str,
    provider: Provider,
    config: AcaConfig | None = None,
    dependency_outcomes: Mapping[str, TaskOutcome] | None = None,
    on_log: LogCallback | None = None,
    init_git: bool = False,
    max_runs: int | None = None,
    first_attempt: bool = False,
    stop_requested: Callable[[], bool] = lambda: False,
    resume: str | None = None,
    worktrees: RunWorktrees | None = None,
) -> TaskOutcome:
    """Run one task of ``plan`` to a verified commit on ``aca/<session_id>``.

    ``dependency_outcomes`` gives the summaries of finished dependencies (those missing are
    read back from the session branch and change log). ``on_log`` receives every task-log
    record as it is written. ``max_runs`` bounds runs after merge conflicts (default: the
    task's ``max_attempts``, else ``session.max_attempts``). ``first_attempt``: the session
    never started this task before, so no commit of it can be on the session branch and the
    two looks for one (before the work, and under the merge lock) are skipped.
    ``stop_requested``: the run is stopping; a failed verify then ends the task instead of
    going back to the agent (the stop's signal may be what failed it). ``resume``: the
    session's ``aca resume`` as the reader runs it (``_words.resume_command``, with the
    run's ``--repo``), named by a failure that a resume undoes. ``worktrees``: the run's
    (``run_worktrees``): the task's worktree may have been made ahead, once it lands the next
    task's is, and it is removed after the outcome is returned (its dependents start
    meanwhile); the caller awaits ``worktrees.settled()`` before it ends. Without it, the
    worktree is made here and removed before the outcome is returned.
    """
    config = config or AcaConfig()
    workdir = Path(workdir)
    task = plan.task(task_id)
    # Git runs in worker threads: on the event loop it would stall every other task's turn.
    repo, identity = await in_thread(_open_session_repo, workdir, session_id, init_git)
    paths = AcaDir(workdir).session(session_id)
    log = TaskLog(paths, task_id, on_log)
    model = config.model_for(provider.name, task.model)

    own_worktrees = worktrees is None
    if worktrees is None:
        worktrees = RunWorktrees(functools.partial(TaskWorktree.create, repo, session_id))
    await worktrees.removed(task_id)  # an earlier attempt's worktree, at this one's path
    landed = None
    if not first_attempt:
        landed = await in_thread(_record_landed, workdir, session_id, task_id)
    if landed is not None:
        # Finish what a crash may have left: the worktree of a task that already landed.
        await worktrees.take(task_id)  # and one made ahead for it: the same folder
        await in_thread(discard_worktree, repo, AcaDir(workdir).worktrees_dir(session_id) / task_id)
        log.write("already_completed", commit=landed.commit_sha)
        return _completed(
            landed,
            task_id=task_id,
            summary=task_commit_summary(repo, landed.commit_sha),
            provider=provider.name,
            model=model,
            verify_command=verify_command_for(plan, task),
            already_completed=True,
            proposed_subtasks=await in_thread(proposed_before_landing, log.path),
        )

    dependencies = await in_thread(
        dependency_contexts, plan, task, repo, paths, dependency_outcomes or {}
    )
    total_runs = max_runs or task.max_attempts or config.session.max_attempts
    totals = _Totals()
    conflict: MergeConflictError | None = None
    kept: str | None = None
    made = await worktrees.take(task_id)
    for run in range(1, total_runs + 1):
        await worktrees.removed(task_id)  # the last run's worktree, at this run's path
        worktree = made or await in_thread(worktrees.make, task_id)
        made = None
        log.write("run_started", run=run, base=worktree.base_sha, worktree=str(worktree.path))
        try:
            setup_failure = None
            if plan.setup_commands:
                # The network as the task's commands have it (agents' files run there too),
                # or the author's opt-in while the worktree holds none of that (setup.py).
                task_network = config.sandbox.network if task.network is None else task.network
                setup_failure = await run_setup_commands(
                    plan.setup_commands,
                    worktree,
                    config.sandbox,
                    task_network,
                    config.agent,
                    log,
                )
            if setup_failure:
                log.write("task_failed", reason=setup_failure)
                return TaskOutcome(
                    task_id=task_id,
                    status="failed",
                    failure_reason=setup_failure,
                    runs=run,
                    verify_command=verify_command_for(plan, task),
                    provider=provider.name,
                    model=model,
                )
            conversation = AgentConversation(
                provider,
                system=build_system_prompt(plan, claude_code=provider.name == CLAUDE_CODE),
                model=model,
                max_tokens=config.provider(provider.name).max_tokens,
                log=log,
                store=ConversationStore(paths, task_id),
            )
            try:
                result = await run_agent_and_verify(
                    plan, task, worktree, conversation, dependencies, config, paths, stop_requested
                )
            finally:
                totals.add(conversation)
                if provider.name == CLAUDE_CODE:  # its transcripts in the home, unredacted
                    remove_claude_transcripts(worktree.path, [conversation.session_id])
            fields = _run_fields(plan, task, result, totals, run=run, provider=provider)
            fields["model"] = model
            summary = result.last_round.summary if result.last_round else ""
            if not result.passed:
                reason = with_refusals(
                    result.failure_reason, conversation.refused_outside, conversation.sandbox_failed
                )
                log.write("task_failed", reason=reason)
                changed = await in_thread(work_in, worktree)
                return TaskOutcome(
                    status="failed",
                    failure_reason=reason,
                    human_question=result.human_question,
                    diff=await in_thread(_failed_diff, worktree, changed),
                    summary=summary,
                    **fields,
                )
            if result.no_change_reason is not None:
                log.write("no_change", reason=result.no_change_reason)
                return TaskOutcome(
                    status="completed",
                    outcome="no_change",
                    no_change_reason=result.no_change_reason,
                    summary=result.no_change_reason,
                    **fields,
                )
            if fields["proposed_subtasks"]:
                # Where a resume finds them, should aca die once the work lands and before
                # the run journals them (``proposed_before_landing``).
                proposed = [p.model_dump() for p in fields["proposed_subtasks"]]
                log.write("subtasks_proposed", subtasks=proposed)
            try:
                landed = await land_checked(
                    plan, task, worktree, summary, identity, first_attempt, config, paths, log
                )
            except ChangeAlreadyLanded as already:
                log.write("no_change", reason=already.reason)
                return TaskOutcome(
                    status="completed",
                    outcome="no_change",
                    no_change_reason=already.reason,
                    summary=summary,
                    **fields,
                )
            except MergeConflictError as exc:
                # Start again from a clean worktree on the head that now holds the other work.
                # A conflicting change is kept meanwhile: paid for, and checked on its base, it
                # may be merged by hand. Not one that fails its checks on the new head: merged
                # as it is, it would land failing them.
                conflict = exc
                failing = isinstance(exc, ChecksFailedOnHead)
                kept = None if failing else await in_thread(_kept, repo, session_id, exc)
                log.write("merge_conflict", run=run, files=exc.files, kept=kept)
                continue
            except SessionBranchCheckedOut as exc:
                # Nothing landed, the branch is as it was. No verdict on the work, and no
                # later task could land either: the run stops (``task_run``), and once the
                # checkout is on another branch a resume runs the task again. Failed, it
                # went on starting tasks whose work was bound to be thrown away.
                log.write("stopped", reason=str(exc))
                if resume is not None:
                    raise SessionBranchCheckedOut(
                        exc.session_id, exc.path, exc.task_id, resume
                    ) from None
                raise
            worktrees.landed(task_id)
            log.write("merged", commit=landed.commit_sha, files=landed.change.files)
            command = fields["verify_command"]
            if fields["verify_passed"] and (edited := edited_checks(command, landed.change.files)):
                # A task may have to change its tests; a reviewer should know all the same.
                log.write("check_edited", command=command, files=edited)
            return _completed(landed, summary=summary, **fields)
        finally:
            # In a worker thread, as all git here: the event loop runs the other tasks.
            removal = worktrees.remove(task_id, worktree)
            if own_worktrees:
                await removal

    assert conflict is not None
    reason = str(conflict)
    if kept is not None:
        again = resume or resume_command(session_id, workdir)
        reason += " " + hand_merge(kept, session_id, str(workdir.resolve()), again)
    # One run is one attempt of the caller (the flow), which counts its attempts itself.
    if total_runs > 1:
        reason += f" (gave up after {total_runs} run(s))"
    log.write("task_failed", reason=reason, conflict_files=conflict.files)
    return TaskOutcome(
        task_id=task_id,
        status="failed",
        failure_reason=reason,
        conflict_files=conflict.files,
        usage=totals.usage,
        cost_usd=totals.cost_usd,
        turns=totals.turns,
        runs=total_runs,
        verify_command=verify_command_for(plan, task),
        provider=provider.name,
        model=model,
    )


def _run_fields(
    plan: ExecutionPlan,
    task: Task,
    result: RoundsResult,
    totals: _Totals,
    *,
    run: int,
    provider: Provider,
) -> dict:
    """The outcome fields shared by a failed and a completed run."""
    last_round = result.last_round
    return {
        "task_id": task.id,
        "usage": totals.usage,
        "cost_usd": totals.cost_usd,
        "turns": totals.turns,
        "attempts": result.attempts,
        "runs": run,
        "verify_command": verify_command_for(plan, task),
        "verify_passed": result.verify.passed if result.verify else None,
        "verify_output": result.verify.output if result.verify else "",
        "proposed_subtasks": last_round.proposed_subtasks if last_round else [],
        "provider": provider.name,
    }


class _Totals:
    def __init__(self) -> None:
        self.usage = Usage()
        self.cost_usd = 0.0
        self.turns = 0

    def add(self, conversation: AgentConversation) -> None:
        self.usage = self.usage + conversation.usage
        self.cost_usd = summed_cost((self.cost_usd, conversation.cost_usd))
        self.turns += conversation.turns


def _kept(repo: git.Repo, session_id: str, conflict: MergeConflictError) -> str | None:
    """The ref the conflicting change is kept at; None when git could not keep it (the reason
    then names none: the task's outcome does not hang on it)."""
    try:
        return keep_unlanded_change(repo, session_id, conflict)
    except (git.GitCommandError, OSError):
        return None


def _failed_diff(worktree: TaskWorktree, changed: list[str]) -> str:
    """A failed task's diff; one git cannot take does not turn the failure into a crash."""
    try:
        return worktree.diff(changed, DIFF_LIMIT)
    except (git.GitCommandError, OSError) as exc:
        return f"[the diff could not be taken: {str(exc).strip().splitlines()[0]}]\n"


# A session's repository is checked, its branch ensured and its commit identity read once per
# process: each task of a run would otherwise repeat the same git commands.
_SESSION_REPOS: dict[tuple[str, str], GitIdentity] = {}


def make_worktree(
    workdir: Path, session_id: str, task_id: str, spare: TaskWorktree | None = None
) -> TaskWorktree:
    """``task_id``'s worktree at the session branch head (``spare`` taken up, if given),
    made before its task runs (``RunWorktrees.make``)."""
    repo, _ = _open_session_repo(Path(workdir), session_id, init_git=False)
    return TaskWorktree.create(repo, session_id, task_id, spare)


def _open_session_repo(
    workdir: Path, session_id: str, init_git: bool
) -> tuple[git.Repo, GitIdentity]:
    key = (str(workdir.resolve()), session_id)
    identity = _SESSION_REPOS.get(key)
    if identity is None:
        with _OPENING:  # the tasks that start together: one opens it, the others wait
            identity = _SESSION_REPOS.get(key)
            if identity is None:
                repo = open_repository(workdir, init_git=init_git)
                ensure_session_branch(repo, session_id)
                identity = _SESSION_REPOS[key] = commit_identity(repo)
                return repo, identity
    return AcaRepo(workdir), identity  # hardened, as open_repository's


_OPENING = threading.Lock()


def _record_landed(workdir: Path, session_id: str, task_id: str) -> LandedTask | None:
    return record_landed_task(AcaRepo(workdir), session_id, task_id)


def _completed(landed: LandedTask, *, summary: str, **fields) -> TaskOutcome:
    return TaskOutcome(
        status="completed",
        outcome="changed",
        summary=summary,
        commit_sha=landed.commit_sha,
        files_changed=landed.change.files,
        insertions=landed.change.insertions,
        deletions=landed.change.deletions,
        **fields,
    )
