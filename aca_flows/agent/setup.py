"""A plan's setup commands, run in each task's worktree before its agent starts.

Every task works in a fresh worktree, so what setup prepares (installed dependencies, a build)
must be prepared there: the commands run in order, in every run of every task, in the task's
sandbox with the limits of the verify command. A ``required`` command that fails fails the task
before any provider call; an optional one is logged and the task goes on.

The network: the commands are the plan author's, but what they run (``setup.py``, a build
backend, npm's lifecycle scripts, a script of the repository) is the worktree's, which holds
what earlier tasks' agents committed. So a setup command has the network only when the task's
own commands have it (the task's ``network``, else ``[sandbox] network``), or when it says
``network = true`` itself *and* the worktree holds no work of this session's agents yet (it is
the commit the session started from): the author vouches for their own files, not for what an
agent wrote since. Where this machine started the session, that commit is the one recorded
then (``session_start``), never a commit found in the branch's history: a ``--repo`` session's
branch is fast-forwarded to its remote's on resume, and commits pushed there carry no marks.
``network = false`` keeps it off even where the task has the network. A failure of a command
that ran without the network says so, naming the options.

Setup must not change what the task commits: a command that leaves files git would commit
(neither ignored nor unchanged) fails the task, naming them, so the fix (ignore them) is clear.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from aca_flows._threads import in_thread
from aca_flows._words import listed
from aca_flows.agent.landing import sandbox_of
from aca_flows.agent.tools import ToolRefused, resolve_inside
from aca_flows.agent.transcript import TaskLog
from aca_flows.plan.models import SetupCommand
from aca_flows.sandbox import CommandResult, Sandbox
from aca_flows.session.redact import redacted_tail
from aca_flows.settings import AgentSection, SandboxSection
from aca_flows.workspace import TaskWorktree
from aca_flows.workspace.commit import session_tasks_in
from aca_flows.workspace.repository import session_start

__all__ = ["run_setup_commands"]

OUTPUT_TAIL = 4000


async def run_setup_commands(
    commands: list[SetupCommand],
    worktree: TaskWorktree,
    sandbox_settings: SandboxSection,
    task_network: bool,
    settings: AgentSection,
    log: TaskLog,
) -> str | None:
    """Run ``commands`` in ``worktree``, each in a sandbox with the network as the module
    docstring says (``task_network``: the task's own commands have it); returns why the task
    cannot start, or None."""
    sandboxes: dict[bool, Sandbox] = {}
    agents_work: list[str] | None = None  # looked up once, and only when a command needs it
    for command in commands:
        try:
            cwd = resolve_inside(worktree.path, command.working_dir or ".")
        except ToolRefused as exc:
            return f"setup command '{command.name}': working_dir {command.working_dir!r}: {exc}"
        where = cwd.relative_to(worktree.path.resolve())
        line = command.command
        if where != Path("."):
            # `cd dir && command`: with no such folder only the first command was skipped,
            # the rest ran in the worktree's root and the setup "passed".
            line = f"cd {shlex.quote(str(where))} || exit 1\n{line}"
        network, withheld = task_network, []
        if command.network is False:
            network = False
        elif command.network and not task_network:
            if agents_work is None:
                agents_work = await in_thread(_work_since_start, worktree)
            network, withheld = not agents_work, agents_work
        if network not in sandboxes:  # a sandbox's mounts take file system look-ups to plan
            sandboxes[network] = sandbox_of(worktree, sandbox_settings, network=network)
        result = await sandboxes[network].run(
            line,
            timeout_seconds=command.timeout_seconds,
            output_limit_bytes=settings.command_output_limit_bytes,
        )
        tail = redacted_tail(result.output, OUTPUT_TAIL)
        log.write(
            "setup",
            name=command.name,
            command=command.command,
            passed=result.ok,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            network=network,
            **({"network_withheld_for_work_of": withheld} if withheld else {}),
            output=tail,
        )
        if not result.ok and command.required:
            offline = ""
            if not network and command.network is not False and sandbox_settings.mode != "off":
                offline = " " + _without_network(withheld)
            return (
                f"setup command '{command.name}' (`{command.command}`) {_how(result)}; the "
                f"agent was not started.{offline} Output:\n{tail}"
            )
    if not commands:
        return None
    leftovers = await in_thread(_uncommitted_paths, worktree)
    if leftovers:
        return (
            f"the setup commands left changes that would be committed with the task's work: "
            f"{listed(leftovers, 10)}. Add them to .gitignore (or to .git/info/exclude of the "
            "repository), or have the setup commands write elsewhere."
        )
    return None


def _work_since_start(worktree: TaskWorktree) -> list[str]:
    """What the worktree holds beyond the commit the session started from: the ids of this
    session's tasks whose work it holds, else (a branch moved otherwise, by a fetch) the
    commit it is at; empty when it is that commit."""
    tasks = session_tasks_in(worktree.git, worktree.session_id, worktree.base_sha)
    start = session_start(worktree.git, worktree.session_id)
    if tasks or start is None or start == worktree.base_sha:
        return tasks
    return [f"{UNTRACED}{worktree.base_sha[:12]}"]


# How ``_work_since_start`` names a commit that is not the start and holds no task's work.
UNTRACED = "commit "


def _without_network(withheld: list[str]) -> str:
    """Why a setup command that failed ran without the network, and how to give it one."""
    if withheld and withheld[0].startswith(UNTRACED):
        return (
            "It ran without the network: its `network = true` holds only in the commit the "
            f"session started from, and this worktree is at {withheld[0]}, which the session "
            "branch holds since (pushed to it, or fetched from its remote). If the task's "
            "setup needs the network there, give the task `network = true` (docs/security.md, "
            '"Setup commands").'
        )
    if withheld:
        shown = listed(withheld, 5)
        return (
            "It ran without the network: its `network = true` holds only in a worktree "
            "without work of this session's agents, and this one holds the work of task(s) "
            f"{shown}, whose files the command may run. If the task's setup needs the network "
            'there, give the task `network = true` (docs/security.md, "Setup commands").'
        )
    return (
        "It ran without the network, as the task's own commands do. If it needs the network, "
        "give the setup command `network = true` (it holds while the worktree has no work of "
        "this session's agents) or the task `network = true` (docs/task-files.md, "
        '"Setup commands").'
    )


def _how(result: CommandResult) -> str:
    if result.timed_out:
        return f"timed out after {result.duration_seconds:.0f}s"
    return f"failed with exit code {result.exit_code}"


def _uncommitted_paths(worktree: TaskWorktree) -> list[str]:
    status = worktree.git.status("--porcelain", "--untracked-files=all")
    return [line[3:] for line in status.splitlines() if line.strip()]
