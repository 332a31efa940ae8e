"""Sandbox: every command aca runs for an agent (its ``run_command`` tool, verify commands)
runs under bubblewrap, confined to the task's worktree. Imports no prefect.

- ``Sandbox.for_worktree(path, settings, git_dir=..., repository=...)`` (what was recorded
  when the worktree was made) then ``await sandbox.run(command, ...)``
- ``check_sandbox(settings)``: refuses (``SandboxUnavailable``) when bubblewrap cannot start
- ``bwrap_argv`` / ``mount_plan``: the command line itself, for inspection and tests
- for Claude Code's own sandbox: ``Sandbox.claude_code_options`` (what it may not write, may
  not read, and may read inside that; a ``git`` that reads the repository's config without
  credentials, ``git_shadow.py``, or a note for the agent when git cannot run there) and
  ``placeholders_removed`` around a run (the empty files it leaves in a worktree, and in the
  folders the repository's runs share once none uses them)
"""

from aca_flows.sandbox.bwrap import (
    INSTALL_HINT,
    Limits,
    MountPlan,
    bwrap_argv,
    mount_plan,
    protected_paths,
)
from aca_flows.sandbox.placeholders import (
    existing_placeholders,
    placeholders_removed,
    remove_new_placeholders,
)
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
    "existing_placeholders",
    "mount_plan",
    "protected_paths",
    "placeholders_removed",
    "remove_new_placeholders",
    "run_process",
    "sandbox_environment",
]
