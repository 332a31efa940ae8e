"""Retries at the depth of one call: a transient error is retried on that call.

``RetryingProvider(provider, retries=4)`` calls the provider again, with the same request
(the conversation so far), or the one the error names (``retry_request``: a Claude Code run
that may have done work resumes its session), when it raises ``TransientProviderError`` (429,
5xx, 529, timeouts, dropped connections), at most ``retries`` times. Before each retry it
waits:

- the server's ``retry_after`` when it sent one (honoured, up to ``max_wait_seconds``);
- else ``backoff_seconds * 2**n`` with full jitter (a random part of it, so that many tasks
  hit by the same overload do not come back at the same instant), up to ``max_wait_seconds``.

Every wait is reported to ``on_wait(seconds, error, retry_number, retries)`` before it
starts, so no retry is silent. When the retries are used up the last error propagates: the
caller's attempt fails and a retry at a higher level (a clean attempt of the whole task) may
follow. ``PermanentProviderError`` and anything else pass through at once.

An empty answer (``EmptyAnswerError``: a 200 holding no text and no tool call) was paid for:
it is retried at most ``EMPTY_ANSWER_RETRIES`` times in a row (within ``retries``), then
fails the call as a ``PermanentProviderError`` counting the empty answers, so no clean attempt
follows (it would send its first request again, and be paid again).

No retry starts once ``stopping()`` says the run is stopping (a Ctrl-C, a cancel): the
error propagates at once, or when the stop comes during the wait, as soon as it comes. The
failure may be the stop's own doing (the signal reached the provider's process too, as it
does Claude Code's), and a new call would be paid for after the user asked to stop.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from aca_flows.errors import EmptyAnswerError, PermanentProviderError, TransientProviderError
from aca_flows.providers.base import EventCallback, Provider, ProviderRequest, ProviderResponse
from aca_flows.settings import SessionSection

__all__ = [
    "EMPTY_ANSWER_RETRIES",
    "RetryingProvider",
    "RetryWaitCallback",
    "describe_retry",
    "retry_wait_seconds",
    "with_call_retries",
]

# (seconds, error, retry number, retries this error gets)
RetryWaitCallback = Callable[[float, TransientProviderError, int, int], None]
Sleep = Callable[[float], Awaitable[None]]

# How often a retry's wait looks whether the run is stopping.
STOP_POLL_SECONDS = 0.2
# Retries of an empty answer: each is paid, and a model that keeps answering nothing to a
# request rarely stops doing so.
EMPTY_ANSWER_RETRIES = 2


def retry_wait_seconds(
    error: TransientProviderError,
    retry_number: int,
    *,
    backoff_seconds: float,
    max_wait_seconds: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry ``retry_number`` (1, 2, ...) after ``error``."""
    if error.retry_after is not None:
        return min(max(error.retry_after, 0.0), max_wait_seconds)
    ceiling = min(backoff_seconds * 2 ** (retry_number - 1), max_wait_seconds)
    return (rng or random).uniform(0, ceiling)


def describe_retry(
    error: TransientProviderError, seconds: float, number: int, retries: int, call: str
) -> str:
    """The line that tells of a retry's wait (``call``: whose, "this call"); a wait shorter
    than the server asked for names the setting that shortened it."""
    capped = ""
    if error.retry_after is not None and error.retry_after > seconds:
        capped = ", the most [session] call_retry_max_wait_seconds allows"
    return f"{error} Retrying {call} in {seconds:.1f} s{capped} (retry {number} of {retries})."


class RetryingProvider:
    """Any provider whose transient errors are retried on the call (see module doc)."""

    def __init__(
        self,
        inner: Provider,
        *,
        retries: int = 4,
        backoff_seconds: float = 2.0,
        max_wait_seconds: float = 120.0,
        on_wait: RetryWaitCallback | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        stopping: Callable[[], bool] | None = None,
    ):
        self.inner = inner
        self.name = inner.name
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_wait_seconds = max_wait_seconds
        self.on_wait = on_wait
        self.sleep = sleep
        self.rng = rng
        self.stopping = stopping

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        retry_number = 0
        empty = 0  # empty answers in a row
        while True:
            try:
                return await self.inner.complete(request, on_event)
            except TransientProviderError as error:
                if self._stopping():
                    raise
                empty = empty + 1 if isinstance(error, EmptyAnswerError) else 0
                # This retry's number and how many this error gets, as the log tells them.
                number, retries = retry_number + 1, self.retries
                if empty:  # its own few, and no more than the call's retries left allow
                    left = self.retries - retry_number
                    number, retries = empty, min(EMPTY_ANSWER_RETRIES, empty - 1 + left)
                if number > retries or retry_number >= self.retries:
                    if empty:
                        raise _empty_answers(error, empty) from error
                    raise
                retry_number += 1
                wait = retry_wait_seconds(
                    error,
                    retry_number,
                    backoff_seconds=self.backoff_seconds,
                    max_wait_seconds=self.max_wait_seconds,
                    rng=self.rng,
                )
                if self.on_wait is not None:
                    self.on_wait(wait, error, number, retries)
                if await self._stopped_during(wait):
                    raise
                request = error.retry_request or request

    def _stopping(self) -> bool:
        return self.stopping is not None and self.stopping()

    async def _stopped_during(self, wait: float) -> bool:
        """Wait ``wait`` seconds, or until the run is stopping; whether it is."""
        if self.stopping is None:
            await self.sleep(wait)
            return False
        left = wait
        while not self.stopping():
            if left <= 0:
                return False
            step = min(left, STOP_POLL_SECONDS)
            await self.sleep(step)
            left -= step
        return True


def _empty_answers(error: EmptyAnswerError, calls: int) -> PermanentProviderError:
    """The call's end after ``calls`` empty answers in a row, each paid (already billed)."""
    provider = error.provider or "the provider"
    return PermanentProviderError(
        f"{provider}: the model answered {calls} time(s) in a row with nothing (HTTP 200, no "
        "text and no tool call; each call billed). Retry later; if it keeps happening, choose "
        "another model with --model.",
        provider=error.provider,
        status_code=error.status_code,
        body=error.body,
        billed=error.billed,
    )


def with_call_retries(
    provider: Provider,
    session: SessionSection,
    on_wait: RetryWaitCallback | None = None,
    stopping: Callable[[], bool] | None = None,
) -> RetryingProvider:
    """``provider`` with the call retries of ``[session]``: ``call_retries``,
    ``call_retry_backoff_seconds`` and ``call_retry_max_wait_seconds``; none once
    ``stopping()``."""
    return RetryingProvider(
        provider,
        retries=session.call_retries,
        backoff_seconds=session.call_retry_backoff_seconds,
        max_wait_seconds=session.call_retry_max_wait_seconds,
        on_wait=on_wait,
        stopping=stopping,
    )
