"""Verification: the checks a task's change must pass, run in its worktree after the agent
finishes.

The checks (``task_checks``) are the task's own verify command, then those of the tasks that
landed earlier in the session and whose files the change touches too: a change that breaks an
earlier task's check is not verified work, whatever its own check says. Only verified work is
committed. A failing check's output goes back to the agent in the same conversation
(``fix_request``, naming the earlier task when the check is its) and it tries again, up to
``agent.max_fix_attempts`` times; a task without checks passes as is.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from aca_flows.plan.models import ExecutionPlan, Task, verify_command_for
from aca_flows.sandbox import Sandbox
from aca_flows.session.layout import SessionPaths
from aca_flows.settings import AgentSection
from aca_flows.workspace import read_change_log

__all__ = [
    "FAILURE_OUTPUT_LIMIT",
    "Check",
    "VerifyResult",
    "describe_failure",
    "fix_request",
    "missing_from_worktree",
    "run_checks",
    "run_verify",
    "task_checks",
]

# The end of a failed check's output kept in the task log and a failure reason.
FAILURE_OUTPUT_LIMIT = 4000


@dataclass(frozen=True)
class Check:
    """A command the change must pass; ``owner`` is the landed task it belongs to (None: the
    task's own verify command)."""

    command: str
    owner: str | None = None
    network: bool | None = None  # None: [sandbox] network

    def describe(self) -> str:
        own = "" if self.owner is None else f" of task {self.owner} (landed earlier)"
        return f"`{self.command}`{own}"


def task_checks(
    plan: ExecutionPlan,
    task: Task,
    changed: list[str],
    paths: SessionPaths,
    contains: Callable[[str], bool],
) -> list[Check]:
    """The task's own check, then the check of each landed task whose files ``changed`` touches
    and whose commit the worktree ``contains`` (what landed after it started is checked once
    the work is put onto it). A command already listed is not run twice: a plan-wide default
    covers every task at once."""
    own = verify_command_for(plan, task)
    checks = [Check(own, network=task.network)] if own else []
    touched = set(changed)
    for task_id, change in read_change_log(paths, touching=touched).items():
        if task_id == task.id:
            continue
        if not contains(change.commit):
            continue
        landed = next((t for t in plan.tasks if t.id == task_id), None)
        command = verify_command_for(plan, landed) if landed is not None else None
        if command and all(command != c.command for c in checks):
            network = _both(landed.network, task.network)
            checks.append(Check(command, owner=task_id, network=network))
    return checks


def _both(owners: bool | None, tasks: bool | None) -> bool | None:
    """The network of a landed task's check in this task's worktree: only where both tasks
    have it (``None``: ``[sandbox] network``). The owner's alone would hand this task's code,
    which the check runs, a network the task was never given."""
    if owners is False or tasks is False:
        return False
    return tasks if owners else None


async def run_checks(
    checks: list[Check], sandbox_for: Callable[[bool | None], Sandbox], settings: AgentSection
) -> list[VerifyResult]:
    """Each check's result, in order, up to the first that fails; each runs in the sandbox
    ``sandbox_for`` gives for its network setting."""
    results = []
    for check in checks:
        results.append(await run_verify(check.command, sandbox_for(check.network), settings))
        if not results[-1].passed:
            break
    return results


class VerifyResult(BaseModel):
    command: str
    passed: bool
    exit_code: int | None
    output: str
    timed_out: bool = False
    duration_seconds: float = 0.0
    # Its processes together went past the sandbox's memory: the kernel killed one.
    out_of_memory: bool = False


async def run_verify(command: str, sandbox: Sandbox, settings: AgentSection) -> VerifyResult:
    """Run the verify command in the task's sandbox, with the limits of ``run_command``."""
    result = await sandbox.run(
        command,
        timeout_seconds=settings.command_timeout_seconds,
        output_limit_bytes=settings.command_output_limit_bytes,
    )
    return VerifyResult(
        command=command,
        passed=result.ok,
        exit_code=result.exit_code,
        output=result.output,
        timed_out=result.timed_out,
        duration_seconds=result.duration_seconds,
        out_of_memory=result.out_of_memory,
    )


def describe_failure(result: VerifyResult) -> str:
    """How a failed check ended, as a task's failure reason says it: "exit code 1", or
    "timed out after 5s" (a killed command has no exit code, and "exit code None" explained
    nothing)."""
    if result.timed_out:
        return f"timed out after {result.duration_seconds:.0f}s"
    if result.out_of_memory:
        return (
            "killed: its processes together used all the memory the sandbox allows, "
            f"[sandbox] memory_mb (exit code {result.exit_code})"
        )
    return f"exit code {result.exit_code}"


def missing_from_worktree(result: VerifyResult, worktree: Path, checkout: Path) -> str | None:
    """Why a check that exited 127 (no such command) cannot pass however the agent works:
    the program it runs is in the user's checkout but not in the task's worktree, which holds
    only what git tracks (a virtualenv, a build), or is named by its path in the checkout,
    whose files the sandbox does not show. None when that is not the case."""
    if result.exit_code != 127:
        return None
    with contextlib.suppress(ValueError, IndexError, OSError):
        program = shlex.split(result.command)[0]
        relative = "/" in program and not Path(program).is_absolute()
        if relative and (checkout / program).exists() and not (worktree / program).exists():
            return (
                f"{program} is in your checkout but not in the task's worktree, which holds "
                "only what git tracks (it is ignored, or not committed): make it in the "
                "worktree with [[setup_commands]] (docs/task-files.md), or call a program "
                "on PATH"
            )
        path, checkout = Path(program), checkout.resolve()
        outside = path.is_absolute() and worktree.resolve() not in path.resolve().parents
        if outside and checkout in path.resolve().parents and path.exists():
            return (
                f"{program} is in your checkout, whose files sandboxed commands do not see "
                "(only its .git and the task's worktree): list its folder in [sandbox] "
                "read_only_paths (docs/security.md), make it in the worktree with "
                "[[setup_commands]], or call a program on PATH"
            )
        said_missing = f"{program}: not found" in result.output or (
            f"{program}: command not found" in result.output
        )
        if "/" not in program and said_missing and shutil.which(program) is None:
            # A name looked up on PATH only: no change in the worktree can make it exist.
            return (
                f"{program} is not a command on PATH: check the verify command's spelling, "
                "or install the program"
            )
    return None


def fix_request(result: VerifyResult, *, attempts_left: int, owner: str | None = None) -> str:
    """The message that sends a failed check back to the agent; ``owner``: the landed task
    whose check the change broke."""
    how = describe_failure(result)
    if not result.timed_out:
        how = f"was {how}" if result.out_of_memory else f"failed with {how}"
    whose = "The verify command"
    if owner is not None:
        whose = (
            f"Your change touches files of task {owner}, which landed earlier, and that task's "
            "verify command"
        )
    return (
        f"{whose} `{result.command}` {how}. Its output:\n```\n{result.output}\n```\n"
        f"Fix the problem so that it passes ({attempts_left} attempt(s) left), then finish again "
        "with a summary of all your changes."
    )
