"""What a run sends to the Prefect server off the tasks' critical path: artifacts, progress,
the flow run's label. ``published`` waits for all of it before the run ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine

from prefect.artifacts import aupdate_progress_artifact

from aca_flows.flows.artifacts import progress_percent
from aca_flows.session.record import describe_counts

__all__ = ["ProgressArtifact", "progress_text", "published", "send_in_background"]


def progress_text(counts: dict[str, int]) -> str:
    return f"Tasks completed: {describe_counts(counts)}"


# What is on its way to the Prefect server, per session: artifacts and the flow run's name,
# sent off the tasks' critical path (see ``send_in_background``).
_SENDING: dict[str, set[asyncio.Task]] = {}


def send_in_background(session_id: str, call: Coroutine) -> None:
    """Make an API call in the background; ``published`` waits for it."""
    _SENDING.setdefault(session_id, set()).add(asyncio.create_task(call))


async def published(session_id: str) -> None:
    """Until everything sent for the session has reached the server; the first error is
    raised."""
    sending = _SENDING.pop(session_id, set())
    if sending:
        await asyncio.gather(*sending)


class ProgressArtifact:
    """The progress artifact, created and updated off the critical path: one update in flight
    at a time, at most one per ``interval`` seconds, the latest counts win (tasks that end
    close together make one API call, not one each). ``flush`` sends what waits at once."""

    def __init__(self, creating: Coroutine, interval: float = 1.0):
        self._created = asyncio.create_task(creating)
        self._latest: dict[str, int] | None = None
        self._sending: asyncio.Task | None = None
        self._interval = interval
        self._last_sent: float | None = None
        self._hurry = asyncio.Event()

    async def artifact_id(self):
        return await self._created

    def update(self, counts: dict[str, int]) -> None:
        self._latest = dict(counts)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        while self._latest is not None:
            if self._last_sent is not None:
                wait = self._last_sent + self._interval - loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), max(wait, 0))
            counts, self._latest = self._latest, None
            self._last_sent = loop.time()
            await aupdate_progress_artifact(
                await self._created,
                progress=progress_percent(counts),
                description=progress_text(counts),
            )

    async def flush(self) -> None:
        self._hurry.set()
        await self._created
        if self._sending is not None:
            await self._sending
