"""Shell commands run for a task: the model's ``run_command`` and the verify command.

A command runs in the task's worktree, in its own process group (so a timeout kills its
children too), with an environment stripped of secrets, and with its combined output capped:
the head and the tail are kept, because a test run's verdict is usually at the end.

The deny list is a guard against obvious mistakes (``git push``, ``sudo``, network tools), not
a sandbox: a determined command can evade a pattern match.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel

from aca_flows.session.redact import is_secret_variable

__all__ = [
    "CommandResult",
    "clean_environment",
    "denied_by",
    "run_shell",
]

# Inherited git plumbing variables would point commands at the user's checkout, not the worktree.
_GIT_LOCATION_VARS = {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"}

_BOUNDARY_BEFORE = r"(?:^|(?<=[\s;&|()`$'\"/]))"
_BOUNDARY_AFTER = r"(?=$|[\s;&|()`'\"])"


class CommandResult(BaseModel):
    command: str
    exit_code: int | None
    output: str
    timed_out: bool = False
    truncated_bytes: int = 0
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """The result as the model reads it: status line, then the output."""
        if self.timed_out:
            status = f"timed out after {self.duration_seconds:.0f}s (killed)"
        else:
            status = f"exit code {self.exit_code}"
        return f"{status}\n{self.output}"


def clean_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment without secrets or git location variables."""
    environ = os.environ if environ is None else environ
    clean = {
        name: value
        for name, value in environ.items()
        if not is_secret_variable(name) and name not in _GIT_LOCATION_VARS
    }
    # Byte-code caches written by a verify command are byproducts, not the agent's work:
    # without this, a verify that imports a module commits its __pycache__.
    clean["PYTHONDONTWRITEBYTECODE"] = "1"
    return clean


def denied_by(command: str, deny_list: Iterable[str]) -> str | None:
    """The deny-list entry the command matches (as whole words), or None if it is allowed."""
    for entry in deny_list:
        words = entry.split()
        if not words:
            continue
        pattern = _BOUNDARY_BEFORE + r"\s+".join(re.escape(w) for w in words) + _BOUNDARY_AFTER
        if re.search(pattern, command):
            return entry
    return None


async def run_shell(
    command: str,
    cwd: Path,
    *,
    timeout_seconds: float,
    output_limit_bytes: int,
    environ: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run ``command`` with ``/bin/sh`` in ``cwd``; stdout and stderr together, capped."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_shell(
        command,
        cwd=str(cwd),
        env=clean_environment(environ),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    capture = _CappedOutput(output_limit_bytes)
    timed_out = False
    try:
        await asyncio.wait_for(_drain(process, capture), timeout=timeout_seconds)
    except TimeoutError:
        timed_out = True
        _kill_group(process)
        await process.wait()
    except BaseException:
        # Cancelled (interrupt, flow cancellation): never leave the command running.
        _kill_group(process)
        raise
    return CommandResult(
        command=command,
        exit_code=None if timed_out else process.returncode,
        output=capture.text(),
        timed_out=timed_out,
        truncated_bytes=capture.dropped,
        duration_seconds=round(time.monotonic() - started, 3),
    )


async def _drain(process: asyncio.subprocess.Process, capture: _CappedOutput) -> None:
    assert process.stdout is not None
    while chunk := await process.stdout.read(65536):
        capture.add(chunk)
    await process.wait()


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class _CappedOutput:
    """Keeps the first and the last ``limit // 2`` bytes; counts what falls between."""

    def __init__(self, limit: int):
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.half:
            excess = len(self.tail) - self.half
            self.dropped += excess
            del self.tail[:excess]

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if self.dropped:
            return f"{head}\n[... {self.dropped} bytes omitted ...]\n{tail}"
        return head + tail
