"""Rate limits that wait, never crash: one ``RateLimiter`` per provider.

Before a call, ``acquire`` waits (never raises, unless told to stop at a usage budget) until:
- the requests-per-minute bucket has a request (capacity = per minute + burst allowance),
- the tokens-per-minute bucket has the call's estimated tokens,
- fewer than ``max_concurrent_requests`` calls are in flight,
- any pause asked by the server (``retry-after`` on 429/529) is over: never longer than
  ``max_pause_seconds`` (``[session] call_retry_max_wait_seconds``, the longest a call waits
  before its own retry), so one answer asking for an hour cannot park every run for an hour,
- the current 5-hour usage block is under ``max_tokens_per_session`` (else it waits for the
  block's end, or raises ``UsageLimitReached`` — exit 3, resumable — with
  ``on_session_limit = "stop"``).

After a call, ``release`` charges the actual tokens (input + output + cache writes: cache reads
do not count against Anthropic's token limits), records the usage in the 5-hour blocks, and
sets the buckets from ``anthropic-ratelimit-*`` and ``x-ratelimit-*`` response headers: each
limit they give is followed up or down, never above the configured one.

Limits every worker must share (requests and tokens per minute, calls in flight) can be held
elsewhere: ``RateLimitedProvider(provider, limiter, shared=...)`` takes a ``SharedLimits`` (the
flows layer backs it with Prefect global concurrency limits, ``flows/provider_limits.py``), and
the limiter is built with ``local_rates=False`` so it keeps only what a server cannot: the
server's retry-after pause and the 5-hour usage blocks.

A wait is never silent: a wait expected (or found) to last ``NOTICE_AFTER_SECONDS`` (5 s) or
more is told to ``on_notice`` with its reason and length when it starts, and again when the
call goes.

``RateLimitedProvider(provider, limiter)`` does all of that around any provider. The clock
(epoch seconds) and the sleep are injectable, so tests run minutes of limits in milliseconds.
The state (buckets, pause, blocks, last headers) is saved to ``state_file`` after every call,
under the limiter's ``state_key`` (the provider name), and restored from it when the limiter is
built again (a limit learned from headers only while younger than a 5-hour block, so a restart
does not overrun the server yet does not keep an old limit for ever). A run keeps one file per
account (``account_state_file``: the provider and a hash of its key and endpoint, under
``~/.aca/rate_limits/``), so every session and process of this machine spending on one account
counts against one 5-hour block: each save merges, under a file lock, the usage other processes
recorded there since. The file is
``{"schema_version": 1, "providers": {"<name>": {...snapshot...}}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aca_flows._files import write_json_atomic
from aca_flows._threads import in_thread_to_its_end
from aca_flows._words import counted
from aca_flows.errors import PermanentProviderError, TransientProviderError
from aca_flows.providers.base import (
    EventCallback,
    Provider,
    ProviderRequest,
    ProviderResponse,
    Usage,
)
from aca_flows.providers.token_bucket import TokenBucket
from aca_flows.providers.usage_blocks import UsageBlocks
from aca_flows.settings import RateLimitingSection

__all__ = [
    "RateLimitedProvider",
    "RateLimiter",
    "SharedLimits",
    "WaitNotice",
    "UsageLimitReached",
    "account_state_file",
    "estimate_tokens",
    "in_flight_to_end",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
# How often a held call looks whether the run is stopping.
STOP_POLL_SECONDS = 0.5
# The waits of a held call that a stop ends: the clock's, not a turn behind other calls.
_TIMED_WAITS = ("server retry-after", "5-hour usage budget")
_TIMED_WAITS += ("requests per minute", "tokens per minute")

# The longest pause when none is given: [session] call_retry_max_wait_seconds's default.
MAX_PAUSE_SECONDS = 120.0
WaitCallback = Callable[[float, str], None]
NoticeCallback = Callable[[str], None]
STATE_VERSION = 1
# Waits shorter than this pass unremarked; longer ones are always told.
NOTICE_AFTER_SECONDS = 5.0


class UsageLimitReached(PermanentProviderError):
    """The 5-hour block's token budget is spent and the config says stop: exit 3, resumable."""

    exit_code = 3


@dataclass(frozen=True)
class Permit:
    """One admitted call; hand it back to ``release``."""

    estimated_tokens: int
    spilled_at_start: float = 0.0


class WaitNotice:
    """Tells ``say`` about one call's wait once it is long: when it starts (the reason, and the
    length when it is known), and when the call goes (how long it waited)."""

    def __init__(
        self,
        subject: str,
        say: NoticeCallback | None,
        clock: Clock = time.time,
        after: float = NOTICE_AFTER_SECONDS,
    ):
        self.subject = subject
        self.say = say
        self.clock = clock
        self.after = after
        self.started = clock()
        self.told = False

    def waiting(self, reason: str, seconds: float | None = None) -> None:
        """The call waits ``seconds`` more (``None``: unknown) for ``reason``."""
        if self.told or self.say is None:
            return
        if self.clock() - self.started + (seconds or 0.0) < self.after:
            return
        self.told = True
        length = f"about {_duration(seconds)}" if seconds is not None else "until there is room"
        waited = self.clock() - self.started
        if waited >= 1:  # what made the wait long was behind it: "waits about 0 s" said none
            length += " more" if seconds is not None else ""
            self.say(
                f"{self.subject} has waited {_duration(waited)}, and waits {length} for {reason}."
            )
            return
        self.say(f"{self.subject} waits {length} for {reason}.")

    def done(self) -> None:
        """The call goes now."""
        if self.told and self.say is not None:
            waited = _duration(self.clock() - self.started)
            self.say(f"{self.subject} waited {waited} and goes now.")


def in_flight_to_end(limit: int) -> str:
    """What a call waits for when ``limit`` calls are in flight: "one of 4 calls in flight to
    end", "the 1 call in flight to end"."""
    calls = counted(limit, "call")
    return f"the {calls} in flight to end" if limit == 1 else f"one of {calls} in flight to end"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


class SharedLimits:
    """Limits held where every run and worker sees them (requests and tokens per minute, calls
    in flight). The flows layer implements it on a Prefect server; this is the interface."""

    def hold(
        self, estimated_tokens: int, notice: WaitNotice
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Take a request, ``estimated_tokens`` tokens and a call slot; keep the call slot
        until the block ends. Long waits are told to ``notice``."""
        raise NotImplementedError

    async def charge(self, tokens: int, seconds: float, notice: WaitNotice) -> None:
        """Charge ``tokens`` a call of ``seconds`` used beyond its estimate."""
        raise NotImplementedError


def estimate_tokens(request: ProviderRequest) -> int:
    """A rough input-token count (4 characters a token): enough to pace a bucket."""
    size = len(request.system) + sum(
        len(m.text) + sum(len(r.content) for r in m.tool_results) for m in request.messages
    )
    size += sum(len(json.dumps(t.input_schema)) + len(t.description) for t in request.tools)
    return max(1, size // 4)


class RateLimiter:
    """Per-provider limits (see the module docstring). Safe to share between threads."""

    def __init__(
        self,
        limits: RateLimitingSection,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        state_file: Path | None = None,
        state_key: str = "default",
        on_wait: WaitCallback | None = None,
        poll_seconds: float = 0.25,
        local_rates: bool = True,
        on_notice: NoticeCallback | None = None,
        label: str | None = None,
        max_pause_seconds: float = MAX_PAUSE_SECONDS,
        stopping: Callable[[], bool] | None = None,
    ):
        self.limits = limits
        # Whether the run is stopping (a Ctrl-C): a call held back then is not made at all.
        self.stopping = stopping
        self.max_pause_seconds = max_pause_seconds
        # False: requests, tokens and calls in flight are held by ``SharedLimits`` instead.
        self.local_rates = local_rates
        self.on_notice = on_notice
        self.label = label or state_key
        self.state_key = state_key
        self.clock = clock
        self.sleep = sleep
        self.state_file = Path(state_file) if state_file else None
        self.on_wait = on_wait
        self.poll_seconds = poll_seconds
        now = clock()
        self.requests = TokenBucket(limits.max_requests_per_minute, limits.burst_allowance, now)
        self.tokens = TokenBucket(limits.max_tokens_per_minute, 0, now)
        self.paused_until = 0.0
        self.blocks = UsageBlocks()
        self.last_headers: dict[str, str] = {}
        self.in_flight = 0
        self._waiting: deque[object] = deque()  # calls held, in the order they came
        self._lock = threading.Lock()
        if self.state_file is not None:
            saved = _read_state_file(self.state_file).get(state_key)
            if saved:
                self.restore(saved)

    # ------------------------------------------------------------------ admission

    async def acquire(self, estimated_tokens: int = 1) -> Permit:
        """Wait until a call of ``estimated_tokens`` may start; never raises except
        ``UsageLimitReached`` when the config says stop at the block budget."""
        notice = self.notice()
        self._refresh_blocks()
        ticket = object()
        try:
            while True:
                with self._lock:
                    now = self.clock()
                    waits = {
                        "server retry-after": self.paused_until - now,
                        "5-hour usage budget": self._block_wait(now),
                    }
                    if self.local_rates:
                        waits["requests per minute"] = self.requests.wait_time(1, now)
                        waits["tokens per minute"] = self.tokens.wait_time(estimated_tokens, now)
                    reason, wait = max(waits.items(), key=lambda item: item[1])
                    room = (
                        not self.local_rates or self.in_flight < self.limits.max_concurrent_requests
                    )
                    # First come, first served: a task's next turn, waiting, goes before the
                    # first calls of tasks that started after it (each paid turn of a task
                    # that is stopped before its end is paid again on resume).
                    turn = not self._waiting or self._waiting[0] is ticket
                    if wait <= 0 and room and turn:
                        if self.local_rates:
                            self.requests.take(1, now)
                            self.tokens.take(estimated_tokens, now)
                        self.in_flight += 1
                        notice.done()
                        return Permit(estimated_tokens, self.tokens.spilled)
                    if ticket not in self._waiting:
                        self._waiting.append(ticket)
                    if wait <= 0 and room:  # an earlier call goes first
                        reason, wait = "calls that came first", self.poll_seconds / 5
                    elif wait <= 0:
                        reason, wait = "calls in flight", self.poll_seconds
                        told = in_flight_to_end(self.limits.max_concurrent_requests)
                        notice.waiting(f"{told} (max_concurrent_requests)")
                    else:
                        notice.waiting(self._why(reason, estimated_tokens), wait)
                    # A wait below the clock's resolution would never move it: round it up.
                    wait = max(wait, 0.001)
                if reason in _TIMED_WAITS and self.stopping is not None and self.stopping():
                    # A run told to stop held its Ctrl-C's grace period (30 s) for a call
                    # it would never make: it ends unfinished now, as a retry's wait does.
                    # (A turn behind calls in flight comes soon: it may finish its task.)
                    raise TransientProviderError(
                        f"{self.label}: the run is stopping; the call waiting for {reason} "
                        "was not made",
                        provider=self.state_key,
                    )
                if self.on_wait is not None:
                    self.on_wait(wait, reason)
                await self.sleep(wait if self.stopping is None else min(wait, STOP_POLL_SECONDS))
        finally:
            with self._lock:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)

    def notice(self) -> WaitNotice:
        """A ``WaitNotice`` for one call of this limiter's provider."""
        return WaitNotice(f"a call to {self.label}", self.on_notice, self.clock)

    def _why(self, reason: str, estimated_tokens: int) -> str:
        """``reason`` with the numbers a reader needs to understand the wait."""
        if reason == "tokens per minute":
            limit = self.tokens.per_minute
            why = f"tokens per minute (about {estimated_tokens:,} tokens; limit {limit:,.0f}/min"
            if limit < self.tokens.configured:
                why += ", from the server's rate-limit headers"
            if estimated_tokens > self.tokens.capacity:
                why += "; larger than a minute's tokens, it goes alone once the bucket is full"
            elif self.tokens.level < 0:
                why += f"; {-self.tokens.level:,.0f} tokens of earlier calls still to pay back"
            return why + ")"
        if reason == "requests per minute":
            return f"requests per minute (limit {self.requests.per_minute:,.0f}/min)"
        if reason == "server retry-after":
            return "the provider's retry-after (it answered 429 or 529, or its headers said 0 left)"
        return f"the {reason} (max_tokens_per_session) to reset"

    def _block_wait(self, now: float) -> float:
        budget = self.limits.max_tokens_per_session
        block = self.blocks.current(now)
        if budget is None or block is None or block.tokens < budget:
            return 0.0
        if self.limits.on_session_limit == "stop":
            resets = datetime.fromtimestamp(block.end).astimezone().strftime("%H:%M")
            raise UsageLimitReached(
                f"the 5-hour usage budget of {budget} tokens is spent ({block.tokens} used); "
                f"it resets at {resets}. Resume the session then, or set "
                '[rate_limiting] on_session_limit = "wait" to wait automatically.',
            )
        return block.end - now

    async def release(
        self,
        permit: Permit,
        usage: Usage | None = None,
        headers: Mapping[str, str] | None = None,
        cost_usd: float = 0.0,
    ) -> None:
        """Hand back a permit, charging the call's actual usage and learning from headers; the
        permit is back before the first ``await``, the state file saved in a worker thread (a
        file replaced on the event loop held up every other task's turn)."""
        with self._lock:
            now = self.clock()
            self.in_flight = max(0, self.in_flight - 1)
            if usage is not None:
                extra = _counted(usage) - permit.estimated_tokens
                if extra > 0:
                    # A long call (a whole Claude Code run) spent its tokens over its duration,
                    # while the full bucket spilled its refill: that refill paid for them.
                    self.tokens.wait_time(0, now)  # refill up to now
                    extra = max(0.0, extra - (self.tokens.spilled - permit.spilled_at_start))
                self.tokens.take(extra, now)
                if self.state_file is None:
                    self.blocks.record(now, usage.total_tokens, cost_usd)
            if headers:
                self._tighten(headers, now)
        recorded = (now, usage.total_tokens, cost_usd) if usage is not None else None
        await in_thread_to_its_end(self.save, recorded)

    def pause(self, seconds: float) -> None:
        """Hold every call back for ``seconds`` (a server's retry-after)."""
        with self._lock:
            now = self.clock()
            self.paused_until = max(self.paused_until, self._capped(now + seconds, now))
        self.save()  # on the caller's thread: a 429 is rare, and other processes must see it

    def _capped(self, paused_until: float, now: float) -> float:
        """``paused_until`` no later than ``max_pause_seconds`` from ``now``: a call would not
        wait longer before its own retry, and a pause read back from the account's file (maybe
        written by an older aca, or a run with a longer cap) must not hold this run longer."""
        return min(paused_until, now + self.max_pause_seconds)

    # ------------------------------------------------------------------ headers

    def _tighten(self, headers: Mapping[str, str], now: float) -> None:
        h = {k.lower(): v for k, v in headers.items()}
        self.last_headers = {k: v for k, v in h.items() if "ratelimit" in k or k == "retry-after"}
        for bucket, kinds in (
            (self.requests, ("requests",)),
            (self.tokens, ("tokens", "input-tokens")),
        ):
            for kind in kinds:
                remaining = _number(h.get(f"anthropic-ratelimit-{kind}-remaining"))
                limit = _number(h.get(f"anthropic-ratelimit-{kind}-limit"))
                reset = _reset_at(h.get(f"anthropic-ratelimit-{kind}-reset"), now)
                if remaining is None and limit is None:
                    remaining = _number(h.get(f"x-ratelimit-remaining-{kind}"))
                    limit = _number(h.get(f"x-ratelimit-limit-{kind}"))
                    reset = _reset_at(h.get(f"x-ratelimit-reset-{kind}"), now)
                if remaining is None and limit is None:
                    continue
                bucket.tighten(remaining=remaining, limit=limit, now=now)
                if remaining is not None and remaining <= 0 and reset is not None:
                    self.paused_until = max(self.paused_until, self._capped(reset, now))

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """Everything worth keeping across a restart, as JSON data."""
        with self._lock:
            now = self.clock()
            return {
                "schema_version": STATE_VERSION,
                "saved_at": now,
                "requests": self.requests.to_dict(),
                "tokens": self.tokens.to_dict(),
                "paused_until": self._capped(self.paused_until, now),
                "blocks": self.blocks.to_list(),
                "last_headers": dict(self.last_headers),
            }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a ``snapshot``; configured limits stay the ceiling."""
        if state.get("schema_version") != STATE_VERSION:
            return  # an unknown format: start fresh rather than misread it
        with self._lock:
            self.requests.restore(state.get("requests", {}))
            self.tokens.restore(state.get("tokens", {}))
            saved_pause = float(state.get("paused_until", 0.0))
            self.paused_until = self._capped(saved_pause, self.clock())
            self.blocks = UsageBlocks.from_list(state.get("blocks", []))
            self.last_headers = dict(state.get("last_headers", {}))

    def _refresh_blocks(self) -> None:
        """Take the usage blocks other processes of this account saved since."""
        if self.state_file is None:
            return
        saved = _read_state_file(self.state_file).get(self.state_key)
        if saved and saved.get("schema_version") == STATE_VERSION:
            with self._lock:
                self.blocks = UsageBlocks.from_list(saved.get("blocks", []))
                saved_pause = self._capped(float(saved.get("paused_until", 0)), self.clock())
                self.paused_until = max(self.paused_until, saved_pause)

    def save(self, recorded: tuple[float, int, float] | None = None) -> None:
        """Write this limiter's state under its ``state_key``, keeping other providers'; with
        ``recorded`` (time, tokens, cost), add that call to the file's usage blocks, which
        hold every process's calls of this account."""
        if self.state_file is None:
            return
        with _STATE_FILE_LOCK, _locked(self.state_file):
            self._refresh_blocks()
            if recorded is not None:
                with self._lock:
                    self.blocks.record(*recorded)
            providers = _read_state_file(self.state_file)
            providers[self.state_key] = self.snapshot()
            # Saved after every call: no fsync (an OS crash may cost the latest state, which
            # the next response's headers bring back; a process crash costs nothing).
            write_json_atomic(
                self.state_file,
                {"schema_version": STATE_VERSION, "providers": providers},
                durable=False,
            )


# Limiters of one process sharing a state file save one at a time; _locked keeps other
# processes out.
_STATE_FILE_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(state_file: Path):
    """An exclusive lock on ``state_file`` between processes (a ``.lock`` file beside it)."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    with open(state_file.with_name(state_file.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# What tells one account from another, per provider: its key and its endpoint.
ACCOUNT_VARIABLES = {
    "claude-code": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "openai": ("OPENAI_API_KEY", "OPENAI_ORG_ID", "OPENAI_BASE_URL"),
    "ollama": ("OLLAMA_HOST",),
}


def account_state_file(
    name: str,
    environ: Mapping[str, str] | None = None,
    base_url: str | None = None,
    home: Path | None = None,
) -> Path:
    """``~/.aca/rate_limits/<provider>-<account>.json``: the limiter state of one account,
    shared by every session of this machine. The account is a hash of the provider's key and
    endpoint (``environ``, default the process's; ``base_url`` from the config); the key itself
    is never written."""
    environ = os.environ if environ is None else environ
    parts = [name, base_url or "", *(environ.get(v, "") for v in ACCOUNT_VARIABLES.get(name, ()))]
    account = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    return (home or Path.home() / ".aca") / "rate_limits" / f"{name}-{account}.json"


def _read_state_file(path: Path) -> dict[str, Any]:
    """The per-provider states in ``path``; empty when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema_version") != STATE_VERSION:
        return {}
    providers = data.get("providers")
    return dict(providers) if isinstance(providers, dict) else {}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def _reset_at(value: str | None, now: float) -> float | None:
    """A reset time: RFC 3339 (Anthropic) or a duration like ``6m0s`` / ``20ms`` (OpenAI)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts:
        return None
    return now + sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in parts)


class RateLimitedProvider:
    """Any provider behind a ``RateLimiter``. Errors pass through unchanged (retries belong
    to the flow), but a server's ``retry_after`` pauses every later call first."""

    def __init__(self, inner: Provider, limiter: RateLimiter, shared: SharedLimits | None = None):
        self.inner = inner
        self.limiter = limiter
        self.shared = shared
        self.name = inner.name

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        estimated = estimate_tokens(request)
        permit = await self.limiter.acquire(estimated)
        started = self.limiter.clock()
        try:
            if self.shared is None:
                response = await self.inner.complete(request, on_event)
            else:
                async with self.shared.hold(estimated, self.limiter.notice()):
                    response = await self.inner.complete(request, on_event)
        except TransientProviderError as exc:
            # The pause first: a call waiting for this slot must not go, while the release's
            # save is written, to a server that just said wait.
            if exc.retry_after:
                self.limiter.pause(exc.retry_after)
            await self.limiter.release(permit)
            raise
        except BaseException:
            await self.limiter.release(permit)
            raise
        usage, headers = response.usage, response.rate_limit_headers
        await self.limiter.release(permit, usage, headers, response.cost_usd)
        if self.shared is not None:
            extra = _counted(response.usage) - estimated
            if extra > 0:
                seconds = self.limiter.clock() - started
                await self.shared.charge(extra, seconds, self.limiter.notice())
        return response


def _counted(usage: Usage) -> int:
    """Tokens that count against a tokens-per-minute limit (cache reads do not)."""
    return usage.input_tokens + usage.output_tokens + usage.cache_write_tokens
