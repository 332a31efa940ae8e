"""Verification: the task's verify command, run in its worktree after the agent finishes.

Only verified work is committed. A failing command's output goes back to the agent in the
same conversation (``fix_request``) and it tries again, up to ``agent.max_fix_attempts``
times; a task without a verify command (and no plan default) passes as is.
"""

from __future__ import annotations

from pydantic import BaseModel

from aca_flows.sandbox import Sandbox
from aca_flows.settings import AgentSection

__all__ = ["VerifyResult", "fix_request", "run_verify"]


class VerifyResult(BaseModel):
    command: str
    passed: bool
    exit_code: int | None
    output: str
    timed_out: bool = False
    duration_seconds: float = 0.0


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
    )


def fix_request(result: VerifyResult, *, attempts_left: int) -> str:
    """The message that sends a failed verification back to the agent."""
    how = (
        f"timed out after {result.duration_seconds:.0f}s"
        if result.timed_out
        else f"failed with exit code {result.exit_code}"
    )
    return (
        f"The verify command `{result.command}` {how}. Its output:\n```\n{result.output}\n```\n"
        f"Fix the problem so that it passes ({attempts_left} attempt(s) left), then finish again "
        "with a summary of all your changes."
    )
