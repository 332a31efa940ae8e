"""Landing checked work: a task's verified change goes onto the session branch only as checked.

``run_checks_on_the_work`` runs a task's checks on its worktree and undoes what they write, so
that what is committed is the work they checked. ``land_checked`` commits and merges it under
the merge lock; when work landed meanwhile in the same files, the change is first put onto the
new head and checked there (``BranchMovedError``), and a check that fails there raises
``ChecksFailedOnHead`` for the task to start again on that head.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable

from aca_flows._threads import in_thread
from aca_flows._words import listed
from aca_flows.agent.ignored_writes import set_aside
from aca_flows.agent.no_change import work_in
from aca_flows.agent.transcript import TaskLog
from aca_flows.agent.verify import (
    FAILURE_OUTPUT_LIMIT,
    Check,
    VerifyResult,
    describe_failure,
    run_checks,
    task_checks,
)
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.plan.vacuous_check import proved_nothing
from aca_flows.sandbox import Sandbox
from aca_flows.session.layout import SessionPaths
from aca_flows.session.redact import redacted_tail
from aca_flows.settings import AcaConfig, SandboxSection
from aca_flows.workspace import (
    BranchMovedError,
    ChecksFailedOnHead,
    GitIdentity,
    LandedTask,
    TaskWorktree,
    land_task,
)
from aca_flows.workspace.hardened_git import AcaRepo

__all__ = [
    "ChangeAlreadyLanded",
    "land_checked",
    "run_checks_on_the_work",
    "sandbox_for_check",
    "sandbox_of",
]


class ChangeAlreadyLanded(Exception):
    """Work that landed meanwhile made the very change the task made: put onto the new head,
    the task changes nothing, and its checks pass there. Its work is on the branch, so the
    task completes, with no change of its own and this ``reason``."""

    def __init__(self, files: list[str]):
        super().__init__(files)
        self.reason = (
            f"its change is on the session branch already: work that landed meanwhile made "
            f"the same change (in {listed(files, _SHOWN_FILES)})"
        )


_SHOWN_FILES = 5


async def land_checked(
    plan: ExecutionPlan,
    task: Task,
    worktree: TaskWorktree,
    summary: str,
    identity: GitIdentity,
    first_attempt: bool,
    config: AcaConfig,
    paths: SessionPaths,
    log: TaskLog,
) -> LandedTask:
    """Land the verified work. Work that landed meanwhile in files this task changed too was
    never checked together with it: the worktree is put onto the new head, the task's checks
    run there, and only then does it land. A check that fails there starts the task again on
    the new head (``ChecksFailedOnHead``, handled as a conflict)."""
    while True:  # again each time yet another task landed in the same files meanwhile
        try:
            return await _to_its_end(
                in_thread(_land, worktree, task.title, summary, identity, first_attempt)
            )
        except BranchMovedError as moved:
            worktree = await in_thread(worktree.onto, moved.head, moved.commit)
            log.write("caught_up", base=moved.head, files=moved.files)
            changed = await in_thread(work_in, worktree)
            checks = await in_thread(task_checks, plan, task, changed, paths, worktree.contains)
            sandbox_for = functools.partial(sandbox_for_check, worktree, config)
            results = await run_checks_on_the_work(worktree, checks, sandbox_for, config, log)
            if results and not results[-1].passed:
                check = checks[len(results) - 1]
                failed = f"{check.describe()} ({describe_failure(results[-1])})"
                raise ChecksFailedOnHead(
                    task.id, moved.files, failed, commit=moved.commit
                ) from None
            if not changed:  # checked as any "no change" is: its own check passes there
                raise ChangeAlreadyLanded(moved.files) from None


async def _to_its_end(landing: Awaitable[LandedTask]) -> LandedTask:
    """The landing, awaited to its end even if the task is cancelled meanwhile, once or more
    (a second Ctrl-C, the end of a stop's grace period, a UI cancel and then the worker's
    SIGTERM): its thread merges all the same, and work that landed must not be recorded as
    unfinished. A landing that fails after a cancel ends cancelled, as the task would have."""
    landing = asyncio.ensure_future(landing)
    cancels: list[asyncio.CancelledError] = []
    while True:
        try:
            landed = await asyncio.shield(landing)  # milliseconds: a merge, or its lock's turn
            break
        except asyncio.CancelledError as cancelled:
            if landing.done() and landing.cancelled():
                raise
            cancels.append(cancelled)
        except Exception:
            if cancels:
                raise cancels[0] from None
            raise
    current = asyncio.current_task()
    for _ in cancels if current is not None else ():
        current.uncancel()  # handled: the task ends as its work did, landed
    return landed


async def run_checks_on_the_work(
    worktree: TaskWorktree,
    checks: list[Check],
    sandbox_for: Callable[[bool | None], Sandbox],
    config: AcaConfig,
    log: TaskLog,
    attempt: int | None = None,
    agent_since: float | None = None,
) -> list[VerifyResult]:
    """The checks' results on the work as it is now, each in the task log. What the checks
    write themselves (a cache, a generated file, an edit, a deletion) is undone after them:
    what is committed is the work they checked, not what checking it left behind. With
    ``agent_since`` (when the agent started), the files git ignores that it wrote since are
    set aside while the checks run (``ignored_writes``): no commit holds them."""
    aside = await in_thread(set_aside, worktree, agent_since) if agent_since else None
    if aside is not None:
        log.write("ignored_set_aside", files=aside.paths)
    tree = await in_thread(worktree.snapshot)
    results = await run_checks(checks, sandbox_for, config.agent)
    if aside is not None and results and not results[-1].passed:
        note = aside.note(await in_thread(aside.put_back))
        results[-1] = results[-1].model_copy(update={"output": results[-1].output + note})
    elif aside is not None:
        await in_thread(aside.discard)
    for check, result in zip(checks, results, strict=False):
        log.write(
            "verify",
            attempt=attempt,
            command=check.command,
            of_task=check.owner,
            passed=result.passed,
            # Its pass proved nothing: the log and the report say so (vacuous_check.py).
            checks_nothing=proved_nothing(result.passed, check.command),
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            out_of_memory=result.out_of_memory,
            output=redacted_tail(result.output, FAILURE_OUTPUT_LIMIT),
        )
    undone = await in_thread(worktree.restore, tree)
    if undone:
        log.write("checks_undone", files=undone)
    return results


def sandbox_for_check(
    worktree: TaskWorktree, config: AcaConfig, network: bool | None, made: Sandbox | None = None
) -> Sandbox:
    """The sandbox of a command in the worktree with ``network`` (None: [sandbox] network);
    ``made`` when it is that one already. Its mounts come from ``made`` or from what was
    recorded when the worktree was made, never from the ``.git`` file the agent may have
    rewritten since."""
    wanted = config.sandbox.network if network is None else network
    if made is not None:
        return made if made.network == wanted else dataclasses.replace(made, network=wanted)
    return sandbox_of(worktree, config.sandbox, network=network)


def sandbox_of(
    worktree: TaskWorktree, settings: SandboxSection, *, network: bool | None
) -> Sandbox:
    """A sandbox of the task's worktree, its mounts from the git directory and repository
    recorded when the worktree was made (never from the ``.git`` file the agent may have
    rewritten since)."""
    return Sandbox.for_worktree(
        worktree.path,
        settings,
        network=network,
        git_dir=worktree.git_dir,
        repository=worktree.repo_root,
    )


def _land(
    worktree: TaskWorktree, title: str, summary: str, identity: GitIdentity, first_attempt: bool
) -> LandedTask:
    # Runs in a worker thread: a Repo object of its own, and the event loop stays free while
    # the merge lock is waited for.
    return land_task(
        AcaRepo(worktree.repo_root),
        worktree,
        title=title,
        summary=summary,
        identity=identity,
        first_attempt=first_attempt,
        refuse_unchecked=True,
    )
