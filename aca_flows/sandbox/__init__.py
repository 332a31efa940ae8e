"""Sandbox: every command aca runs for an agent (its ``run_command`` tool, verify commands)
runs under bubblewrap, confined to the task's worktree. Imports no prefect.

- ``Sandbox.for_worktree(path, settings)`` then ``await sandbox.run(command, ...)``
- ``check_sandbox(settings)``: refuses (``SandboxUnavailable``) when bubblewrap cannot start
- ``bwrap_argv`` / ``mount_plan``: the command line itself, for inspection and tests
"""

from aca_flows.sandbox.bwrap import INSTALL_HINT, Limits, MountPlan, bwrap_argv, mount_plan
from aca_flows.sandbox.process import CommandResult, run_process
from aca_flows.sandbox.sandbox import (
    OFF_WARNING,
    Sandbox,
    SandboxUnavailable,
    check_sandbox,
    clean_environment,
    sandbox_environment,
)

__all__ = [
    "INSTALL_HINT",
    "OFF_WARNING",
    "CommandResult",
    "Limits",
    "MountPlan",
    "Sandbox",
    "SandboxUnavailable",
    "bwrap_argv",
    "check_sandbox",
    "clean_environment",
    "mount_plan",
    "run_process",
    "sandbox_environment",
]
