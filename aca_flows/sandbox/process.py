"""Running one command line to its end: output capped, a wall-clock timeout, nothing left over.

The command runs in its own process group; on timeout or cancellation the group is killed.
Under bubblewrap that kills the sandbox's first process, and with it (``--die-with-parent``,
PID namespace) every process the command started. Where the machine lets aca make cgroups,
the command also runs in cgroups of its own (``cgroups.py``): what its processes take
together is held there, their number and their memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

from aca_flows.sandbox.cgroups import CommandCgroups

__all__ = ["CommandResult", "run_process"]

# After a kill, how long the output left in the pipe may take to reach its end.
_AFTER_KILL_SECONDS = 5.0


class CommandResult(BaseModel):
    command: str
    exit_code: int | None
    output: str
    timed_out: bool = False
    truncated_bytes: int = 0
    duration_seconds: float = 0.0
    # Its processes together went past the sandbox's memory: the kernel killed one.
    out_of_memory: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        """The result as the model reads it: status line, then the output."""
        if self.timed_out:
            status = f"timed out after {self.duration_seconds:.0f}s (killed)"
        elif self.out_of_memory and self.exit_code != 0:
            status = (
                f"killed: its processes together used all the memory the sandbox allows "
                f"(exit code {self.exit_code})"
            )
        elif self.out_of_memory:  # one of them was killed, and the command passed all the same
            status = (
                "exit code 0 (one of its processes was killed: together they used all the "
                "memory the sandbox allows)"
            )
        elif self.exit_code is not None and self.exit_code < 0:
            status = f"killed by signal {-self.exit_code} (exit code {self.exit_code})"
        else:
            status = f"exit code {self.exit_code}"
        return f"{status}\n{self.output}"


async def run_process(
    argv: list[str],
    *,
    command: str,
    cwd: Path,
    environ: Mapping[str, str],
    timeout_seconds: float,
    output_limit_bytes: int,
    max_processes: int | None = None,
    max_memory_bytes: int | None = None,
) -> CommandResult:
    """Run ``argv``; stdout and stderr together, capped to ``output_limit_bytes``.

    ``command`` is what the result reports (the user's command, not the wrapper around it).
    ``max_processes`` and ``max_memory_bytes`` hold the run's processes together, in cgroups
    of its own where the machine allows them.
    """
    started = time.monotonic()
    cgroups = CommandCgroups.create(max_processes=max_processes, max_memory_bytes=max_memory_bytes)
    argv = cgroups.joined(argv)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd),
            env=dict(environ),
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
            _kill(process, cgroups)
            await _reap(process, capture)
        except BaseException:
            # Cancelled (interrupt, flow cancellation): never leave the command running.
            _kill(process, cgroups)
            raise
        out_of_memory = cgroups.ran_out_of_memory()
    finally:
        await cgroups.remove()
    return CommandResult(
        command=command,
        exit_code=None if timed_out else process.returncode,
        output=capture.text(),
        timed_out=timed_out,
        truncated_bytes=capture.dropped,
        duration_seconds=round(time.monotonic() - started, 3),
        out_of_memory=out_of_memory,
    )


async def _drain(process: asyncio.subprocess.Process, capture: _CappedOutput) -> None:
    assert process.stdout is not None
    while chunk := await process.stdout.read(65536):
        capture.add(chunk)
    await process.wait()


async def _reap(process: asyncio.subprocess.Process, capture: _CappedOutput) -> None:
    """After the kill: read the output to its end, then collect the exit status.

    asyncio's ``wait()`` returns only once the output pipe is closed. Left unread, a flood's
    last output fills the pipe and the reader's buffer, reading pauses, and ``wait()`` never
    returns: the run hung there, idle, for good.
    """
    try:
        await asyncio.wait_for(_drain(process, capture), timeout=_AFTER_KILL_SECONDS)
    except TimeoutError:
        # Something outside the process group (mode "off": a daemonized child) holds the pipe
        # open; close our end, the only way left for wait() to return.
        process._transport.close()  # type: ignore[attr-defined]
        await process.wait()


def _kill(process: asyncio.subprocess.Process, cgroups: CommandCgroups) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    cgroups.kill_all()


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
