"""A plan's setup commands, run in each task's worktree before its agent starts.

Every task works in a fresh worktree, so what setup prepares (installed dependencies, a build)
must be prepared there: the commands run in order, in every run of every task, in the task's
sandbox with the limits of the verify command. They are the plan author's own commands, not
the agent's, and usually install dependencies: the network is on for them. A ``required``
command that fails fails the task before any provider call; an optional one is logged and the
task goes on.

Setup must not change what the task commits: a command that leaves files git would commit
(neither ignored nor unchanged) fails the task, naming them, so the fix (ignore them) is clear.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from aca_flows._threads import in_thread
from aca_flows.agent.tools import ToolRefused, resolve_inside
from aca_flows.agent.transcript import TaskLog
from aca_flows.plan.models import SetupCommand
from aca_flows.sandbox import CommandResult, Sandbox
from aca_flows.settings import AgentSection
from aca_flows.workspace import TaskWorktree

__all__ = ["run_setup_commands"]

OUTPUT_TAIL = 4000


async def run_setup_commands(
    commands: list[SetupCommand],
    worktree: TaskWorktree,
    sandbox: Sandbox,
    settings: AgentSection,
    log: TaskLog,
) -> str | None:
    """Run ``commands`` in ``worktree`` (in ``sandbox``); returns why the task cannot start,
    or None."""
    for command in commands:
        try:
            cwd = resolve_inside(worktree.path, command.working_dir or ".")
        except ToolRefused as exc:
            return f"setup command '{command.name}': working_dir {command.working_dir!r}: {exc}"
        where = cwd.relative_to(worktree.path.resolve())
        line = command.command
        if where != Path("."):
            line = f"cd {shlex.quote(str(where))} && {line}"
        result = await sandbox.run(
            line,
            timeout_seconds=command.timeout_seconds,
            output_limit_bytes=settings.command_output_limit_bytes,
        )
        log.write(
            "setup",
            name=command.name,
            command=command.command,
            passed=result.ok,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            output=result.output[-OUTPUT_TAIL:],
        )
        if not result.ok and command.required:
            return (
                f"setup command '{command.name}' (`{command.command}`) {_how(result)}; the "
                f"agent was not started. Output:\n{result.output[-OUTPUT_TAIL:]}"
            )
    if not commands:
        return None
    leftovers = await in_thread(_uncommitted_paths, worktree)
    if leftovers:
        listed = ", ".join(leftovers[:10]) + (" ..." if len(leftovers) > 10 else "")
        return (
            f"the setup commands left changes that would be committed with the task's work: "
            f"{listed}. Add them to .gitignore (or to .git/info/exclude of the repository), "
            "or have the setup commands write elsewhere."
        )
    return None


def _how(result: CommandResult) -> str:
    if result.timed_out:
        return f"timed out after {result.duration_seconds:.0f}s"
    return f"failed with exit code {result.exit_code}"


def _uncommitted_paths(worktree: TaskWorktree) -> list[str]:
    status = worktree.git.status("--porcelain", "--untracked-files=all")
    return [line[3:] for line in status.splitlines() if line.strip()]
