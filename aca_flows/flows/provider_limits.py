"""Provider limits every run and worker shares: Prefect global concurrency limits.

``aca limits sync`` writes each provider's ``[rate_limiting]`` (or
``[providers.<name>.rate_limiting]``) to the Prefect server as three global concurrency limits:

    aca-<provider>-requests    rate limit: limit = max_requests_per_minute + burst_allowance,
                               slots decay at max_requests_per_minute / 60 a second
    aca-<provider>-tokens      rate limit: limit = max_tokens_per_minute,
                               slots decay at max_tokens_per_minute / 60 a second
    aca-<provider>-in-flight   concurrency: limit = max_concurrent_requests (held per call)

A run whose server has them (``prefect_limits = "auto"``, the default) holds every call of that
provider to them (``PrefectLimits``), whatever process or worker it runs on; the limits' values
on the server are the ones used. Without them, the limiter of each process does it alone, and
the run says once how to share them. ``prefect_limits = "require"`` fails a run whose server
lacks them; ``"off"`` never looks.

A call larger than the whole tokens limit takes all of it (Prefect refuses more slots than a
limit has): it waits until the bucket is full and then goes alone. Tokens a call used beyond
its estimate, less what the limit refilled while it ran, are charged after it returns (at most
one full bucket), so later calls pace to the real use. Every wait longer than a few seconds is
told (``WaitNotice``). A worker killed mid-call frees its slot within about a minute and a
quarter (the lease, ``LEASE_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from aca_flows.errors import InputError
from aca_flows.providers import check_provider_name
from aca_flows.providers.ratelimit import (
    NoticeCallback,
    SharedLimits,
    WaitNotice,
    in_flight_to_end,
)
from aca_flows.settings import AcaConfig

__all__ = [
    "LIMITED_PROVIDERS",
    "LimitSpec",
    "PrefectLimits",
    "limit_specs",
    "prefect_limits_for",
    "read_limits",
    "sync_limits",
]

# Providers that call a rate-limited service (replay plays a file back).
LIMITED_PROVIDERS = ("claude-code", "anthropic", "openai", "ollama")
KINDS = ("requests", "tokens", "in-flight")
# A call's slot is leased and renewed while it runs; a worker that dies mid-call gives it back
# when its lease runs out. Prefect's shortest lease: a minute (plus its reaper's 15 s).
LEASE_SECONDS = 60


@dataclass(frozen=True)
class LimitSpec:
    """One global concurrency limit as aca wants it on the server."""

    provider: str
    kind: str  # requests | tokens | in-flight
    name: str
    limit: int
    slot_decay_per_second: float


def limit_name(provider: str, kind: str) -> str:
    return f"aca-{provider}-{kind}"


def limit_specs(provider: str, config: AcaConfig) -> list[LimitSpec]:
    """The three limits ``provider`` gets from ``config``."""
    limits = config.rate_limits(provider)
    rpm, tpm = limits.max_requests_per_minute, limits.max_tokens_per_minute
    values = {
        "requests": (rpm + limits.burst_allowance, rpm / 60),
        "tokens": (tpm, tpm / 60),
        "in-flight": (limits.max_concurrent_requests, 0.0),
    }
    return [
        LimitSpec(provider, kind, limit_name(provider, kind), limit, decay)
        for kind, (limit, decay) in values.items()
    ]


def _providers(names: Iterable[str] | None) -> list[str]:
    chosen = list(names or LIMITED_PROVIDERS)
    for name in chosen:
        check_provider_name(name)
        if name not in LIMITED_PROVIDERS:
            raise InputError(
                f"{name} has no rate limits to share; choose from {', '.join(LIMITED_PROVIDERS)}."
            )
    return chosen


def sync_limits(
    config: AcaConfig, providers: Iterable[str] | None = None
) -> list[tuple[LimitSpec, str]]:
    """Create or update the limits of ``providers`` (default: all) on the current Prefect
    server; each with what was done: ``created``, ``updated`` or ``unchanged``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    done: list[tuple[LimitSpec, str]] = []
    with get_client(sync_client=True) as client:
        for provider in _providers(providers):
            for spec in limit_specs(provider, config):
                try:
                    found = client.read_global_concurrency_limit_by_name(spec.name)
                except ObjectNotFound:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(
                            name=spec.name,
                            limit=spec.limit,
                            slot_decay_per_second=spec.slot_decay_per_second,
                            active=True,
                        )
                    )
                    done.append((spec, "created"))
                    continue
                same = (
                    found.limit == spec.limit
                    and abs(found.slot_decay_per_second - spec.slot_decay_per_second) < 1e-9
                    and found.active
                )
                if not same:
                    client.update_global_concurrency_limit(
                        spec.name,
                        GlobalConcurrencyLimitUpdate(
                            limit=spec.limit,
                            slot_decay_per_second=spec.slot_decay_per_second,
                            active=True,
                        ),
                    )
                done.append((spec, "unchanged" if same else "updated"))
    return done


@dataclass(frozen=True)
class LimitOnServer:
    """A limit as the server has it: its slots in use now, after decay."""

    name: str
    limit: int
    slot_decay_per_second: float
    active_slots: int
    active: bool


# Prefect's API answers at most this many objects a request (PREFECT_API_DEFAULT_LIMIT).
_PAGE = 200


def read_limits(providers: Iterable[str] | None = None) -> dict[str, LimitOnServer | None]:
    """Every aca limit name of ``providers`` (default: all) -> its state on the current
    server, ``None`` where it does not exist."""
    from prefect.client.orchestration import get_client

    wanted = [limit_name(provider, kind) for provider in _providers(providers) for kind in KINDS]
    found: dict[str, LimitOnServer | None] = dict.fromkeys(wanted)
    # The server's whole list, a page at a time: one request where a lookup by name makes one
    # per limit (three a provider), at the start of every run.
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_global_concurrency_limits(limit=_PAGE, offset=offset)
            for limit in page:
                if limit.name in found:
                    found[limit.name] = LimitOnServer(
                        limit.name,
                        limit.limit,
                        limit.slot_decay_per_second,
                        limit.active_slots,
                        bool(limit.active),
                    )
            if len(page) < _PAGE:
                return found
            offset += _PAGE


# Providers whose run was told, in this process, that their limits are not shared.
_TOLD_NOT_SHARED: set[str] = set()


def prefect_limits_for(
    provider: str, config: AcaConfig, say: NoticeCallback
) -> PrefectLimits | None:
    """The shared limits of ``provider`` on the run's server, or ``None`` when its process
    limiter is to do the work (``prefect_limits`` off, or auto and nothing synced)."""
    mode = config.rate_limits(provider).prefect_limits
    if mode == "off" or provider not in LIMITED_PROVIDERS:
        return None
    on_server = {
        name: limit for name, limit in read_limits([provider]).items() if limit and limit.active
    }
    missing = [limit_name(provider, k) for k in KINDS if limit_name(provider, k) not in on_server]
    if missing and mode == "require":
        raise InputError(
            f'prefect_limits = "require", but the run\'s Prefect server lacks {", ".join(missing)}'
            " (or they are inactive): run `aca limits sync` against it (it creates them from "
            '[rate_limiting]), or set [rate_limiting] prefect_limits = "auto".'
        )
    if not on_server:
        if provider not in _TOLD_NOT_SHARED:
            _TOLD_NOT_SHARED.add(provider)
            say(
                f"{provider}'s rate limits hold in this process only, so other runs and workers "
                "each take the full limit: `aca limits sync` puts them on the Prefect server, "
                "where every run shares them (docs/configuration.md)."
            )
        return None
    return PrefectLimits(provider, on_server)


class PrefectLimits(SharedLimits):
    """``SharedLimits`` on a Prefect server: the limits of one provider found there."""

    def __init__(self, provider: str, on_server: dict[str, LimitOnServer]):
        self.provider = provider
        self.on_server = on_server

    def _limit(self, kind: str) -> LimitOnServer | None:
        return self.on_server.get(limit_name(self.provider, kind))

    @contextlib.asynccontextmanager
    async def hold(self, estimated_tokens: int, notice: WaitNotice) -> AsyncIterator[None]:
        from prefect.concurrency.asyncio import concurrency

        in_flight = self._limit("in-flight")
        async with contextlib.AsyncExitStack() as stack:
            if in_flight is not None:
                why = f"{in_flight_to_end(in_flight.limit)} ({in_flight.name})"
                async with _told(notice, why):
                    await stack.enter_async_context(
                        concurrency(in_flight.name, occupy=1, lease_duration=LEASE_SECONDS)
                    )
            # Rates are taken last, as the call goes: that is when the provider counts them.
            await self._take("requests", 1, notice)
            await self._take("tokens", estimated_tokens, notice)
            notice.done()
            yield

    async def charge(self, tokens: int, seconds: float, notice: WaitNotice) -> None:
        limit = self._limit("tokens")
        if limit is None:
            return
        # A long call (a whole Claude Code run) spent its tokens over its length, while the
        # limit's slots decayed: that decay paid for them.
        owed = int(tokens - limit.slot_decay_per_second * seconds)
        await self._take("tokens", owed, notice, charging=True)
        notice.done()

    async def _take(self, kind: str, amount: int, notice: WaitNotice, charging: bool = False):
        from prefect.concurrency.asyncio import rate_limit

        limit = self._limit(kind)
        if limit is None or amount <= 0 or limit.limit <= 0:
            return
        # Prefect refuses more slots than a limit has: a larger call takes the whole bucket.
        occupy = min(amount, limit.limit)
        why = f"{kind} per minute ({limit.name}: {limit.limit:,} a minute"
        if charging:
            why += f"; charging {amount:,} tokens the last call used beyond its estimate"
        elif amount > limit.limit:
            why += f"; this call's ~{amount:,} are more than a minute's, it goes alone once full"
        async with _told(notice, why + ")", lambda: _rate_wait(limit.name, occupy)):
            await rate_limit(limit.name, occupy=occupy)


async def _rate_wait(name: str, occupy: int) -> float | None:
    """Seconds until ``occupy`` slots of the rate limit ``name`` free up, from its state now."""
    from prefect.client.orchestration import get_client

    try:
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(name)
    except Exception:  # an estimate only: the wait goes on without one
        return None
    if not limit.slot_decay_per_second:
        return None
    missing = limit.active_slots + occupy - limit.limit
    return max(0.0, missing / limit.slot_decay_per_second)


@contextlib.asynccontextmanager
async def _told(
    notice: WaitNotice,
    why: str,
    estimate: Callable[[], Awaitable[float | None]] | None = None,
) -> AsyncIterator[None]:
    """Tells ``notice`` about the wait inside the block once it passes ``notice.after``."""

    async def tell_when_long() -> None:
        await asyncio.sleep(max(0.0, notice.after - (notice.clock() - notice.started)))
        seconds = await estimate() if estimate is not None else None
        notice.waiting(why, seconds)

    teller = asyncio.create_task(tell_when_long())
    try:
        yield
    finally:
        teller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await teller
