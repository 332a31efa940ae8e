"""What a run spends: every provider call passes ``SpendGuard``, which keeps the budget and
puts each paid call on the session's ledger.

The budget (``--budget-usd``, ``[session] budget_usd``) caps the session's spend, all of its
runs together. A call is made only while the spend so far is under it; and because calls in
flight are paid only when they return, a call is also held back while the spend plus the
calls in flight, each counted at the costliest call the session has made, would pass it: it
goes once they return and the budget still has room. So tasks running at once cannot take
the spend past the budget by more than about one call, where a check of the spend alone let
each of them make one more (8 tasks: 8 calls over).

Until a call of the session has returned paid, each call in flight is counted at the most a
call may cost, known before it is made (``call_ceiling``): an API call's input, estimated from
its characters, and its ``max_tokens`` of output at its model's price; a Claude Code call (a
whole run of the agent) at ``[claude_code] max_budget_usd_per_task``. So the first calls are
held too when the budget has no room for them all, and all go at once when it has. A Claude
Code run without a per-task budget, or a model with no price, has no such bound: those first
calls go unheld.

A paid call (tokens used) that costs $0 is never silent: no price was found for its model
(aca's, the config's, Claude Code's own), so neither the budget nor the session's cost counts
it; the run's log says so once per model, naming the price to set. Providers whose calls are
free (an Ollama on this machine) or replayed are not warned of.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from aca_flows.errors import PermanentProviderError, ProviderError
from aca_flows.prices import unpriced_call
from aca_flows.providers.base import (
    EventCallback,
    Provider,
    ProviderRequest,
    ProviderResponse,
    Usage,
)
from aca_flows.providers.pricing import price_for
from aca_flows.providers.ratelimit import estimate_tokens
from aca_flows.providers.readiness import default_model
from aca_flows.settings import AcaConfig

__all__ = [
    "CALL_OWNER",
    "BudgetGate",
    "BudgetReached",
    "CallLedger",
    "CallOwner",
    "SpendGuard",
    "SpendMeter",
    "budget_reached",
    "call_ceiling",
    "unbounded_runs_warning",
    "with_final_spend",
]

# How often a call held back for the budget looks again (only near the budget).
HELD_CALL_POLL_SECONDS = 0.05


class BudgetReached(PermanentProviderError):
    """The session's spend reached ``budget_usd``: the run stops (exit 3) and can be resumed."""

    exit_code = 3


@dataclass(frozen=True)
class CallOwner:
    """Who a provider call is made for: a task and its attempt (1, 2, ...)."""

    task_id: str
    attempt: int


# Set by ``execute_plan_task`` around the agent's work, read by ``SpendGuard`` for the ledger.
CALL_OWNER: ContextVar[CallOwner | None] = ContextVar("aca_call_owner", default=None)

# Puts one returned call on the session's ledger: (provider, model, response, owner,
# unpriced: paid, but aca has no price for the model, calls: 1, or 0 for the part of a call
# in flight journalled before it returns).
CallLedger = Callable[
    [str, str, ProviderResponse, "CallOwner | None", bool, int], Awaitable[object]
]

# The most one call may cost, in USD, known before it is made (0.0: unknown).
CallCeiling = Callable[[ProviderRequest], float]


class SpendMeter:
    """The budget. The spend is read from the session's ledger (``spent``), so calls of every
    attempt, task and earlier run of the session count. ``costliest_call_usd`` is what a call
    in flight is counted at until it returns: the costliest call of this run so far, from a
    first estimate (a resume's: what its earlier runs paid a call, so a resume near its budget
    holds calls back from its first one). While it is 0.0 (no call has returned paid yet),
    calls in flight are counted at ``ceiling_usd``, the dearest ceiling of a call admitted."""

    def __init__(
        self,
        spent: Callable[[], float],
        budget_usd: float | None,
        costliest_call_usd: float = 0.0,
        on_hold: Callable[[str], None] | None = None,
    ):
        self._spent = spent
        self.budget_usd = budget_usd
        self.costliest_call_usd = costliest_call_usd
        self.ceiling_usd = 0.0
        self.in_flight = 0
        self._on_hold = on_hold  # where the meter's warnings go: a call held, a call unpriced
        self._unpriced: set[tuple[str, str]] = set()

    @property
    def spent_usd(self) -> float:
        return self._spent()

    def check(self) -> None:
        """Raise ``BudgetReached`` once the spend reached the budget."""
        if self.budget_usd is not None and self.spent_usd >= self.budget_usd:
            # No resume hint here: the run's ending names the one that finds the session.
            raise BudgetReached(budget_reached(self.budget_usd), provider="")

    async def admit(self, ceiling_usd: float = 0.0) -> None:
        """Wait until one more call, costing at most ``ceiling_usd`` if known, fits the budget,
        then count it in flight; raise ``BudgetReached`` once the spend reached the budget.
        ``returned`` must follow."""
        self.ceiling_usd = max(self.ceiling_usd, ceiling_usd)
        told = False
        while True:
            self.check()
            if self._fits():
                self.in_flight += 1
                return
            if not told and self._on_hold is not None:
                self._on_hold(self._holding())
                told = True
            await asyncio.sleep(HELD_CALL_POLL_SECONDS)

    def returned(self, cost_usd: float) -> None:
        """A call admitted ended (paid ``cost_usd``, on the ledger already)."""
        self.in_flight -= 1
        self.costliest_call_usd = max(self.costliest_call_usd, cost_usd)

    def unpriced(self, provider: str, model: str, tokens: int) -> None:
        """A call of ``model`` used ``tokens`` (none: its server reported no usage) and cost
        $0: the budget, and the session's cost, cannot count it. Said once per model, with
        what would count it."""
        if (provider, model) in self._unpriced or self._on_hold is None:
            return
        self._unpriced.add((provider, model))
        name = model or "its default model"
        if self.budget_usd is None:  # the cost shown ($0.0000) is not what it costs
            counted, then = "counts $0 in the session's cost", "the cost"
        else:
            counted, then = f"counts $0 against the budget of ${self.budget_usd:g}", "the budget"
        if not tokens:  # an OpenAI-compatible server that leaves `usage` out, or zeroes it
            kept = "the budget cannot be kept there" if self.budget_usd is not None else ""
            self._on_hold(
                f"{provider}: a call of {name} came back without its token usage, so it "
                f"{counted}, and so will every call of its server{kept and ': ' + kept}. Use a "
                "server that reports usage" + (", or run without a budget." if kept else ".")
            )
            return
        self._on_hold(
            f"{provider}: a call of {name} used {tokens:,} tokens and {counted}: aca has no "
            f'price for it. Set [providers.{provider}.prices."{model}"] (input = ..., output = '
            f"..., USD per million tokens) so {then} counts its calls."
        )

    def _fits(self) -> bool:
        if self.budget_usd is None or self.in_flight == 0:
            return True  # with nothing in flight, the spend alone decides
        expected = (self.in_flight + 1) * self._call_usd()
        return self.spent_usd + expected <= self.budget_usd

    def _call_usd(self) -> float:
        # What calls did cost beats what they might: ceilings are far above most calls.
        return self.costliest_call_usd or self.ceiling_usd

    def _holding(self) -> str:
        counted = (
            "as the session's calls so far cost"
            if self.costliest_call_usd
            else "the most a call may cost, as none has returned yet"
        )
        return (
            f"a provider call waits: ${self.spent_usd:.4f} spent and {self.in_flight} call(s) "
            f"in flight, counted at ${self._call_usd():.4f} each ({counted}), would pass the "
            f"budget of ${self.budget_usd:g}; it goes once they return, if the budget still "
            "has room"
        )


def budget_reached(budget_usd: float) -> str:
    """Why a run stops for its budget, as given: rounded to cents, $0.042 was "$0.04" and
    $0.096 "$0.10" while the run went on under it. No spend in it: calls in flight when the
    budget was reached return later, paid; the run's end adds the final spend
    (``with_final_spend``)."""
    return f"budget of ${budget_usd:g} reached"


def with_final_spend(reason: str, spent_usd: float) -> str:
    """A budget stop's reason as the run's end says it: with the session's spend once every
    call of the run has returned (what `aca sessions show` says too)."""
    return f"{reason}; the session spent ${spent_usd:.4f} in all"


class BudgetGate:
    """In front of a provider's waits for a rate limit or a concurrency slot: a call is
    admitted to the budget here (``SpendMeter.admit``, told the most it may cost by
    ``ceiling``; counted in flight from then on), so one held for the budget's room holds no
    permit and no slot (a session near its budget held 3 of the server's 4 shared slots, and
    another session's one-task run took 36 s, not 1.3), and a spent budget stops it before a
    wait sized by the call that spent it (49 min, in a deployment run). Its ``SpendGuard``,
    innermost, checks the spend again right before the call is made, and hands it to the
    ledger before the gate counts it returned: a call held back reads the spend with it."""

    def __init__(self, inner: Provider, meter: SpendMeter, ceiling: CallCeiling | None = None):
        self.inner = inner
        self.name = inner.name
        self.meter = meter
        self.ceiling = ceiling

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        await self.meter.admit(self.ceiling(request) if self.ceiling is not None else 0.0)
        paid: ProviderResponse | None = None
        try:
            paid = await self.inner.complete(request, on_event)
            return paid
        except (ProviderError, asyncio.CancelledError) as stopped:
            paid = _billed(stopped)
            raise
        finally:
            self.meter.returned(paid.cost_usd if paid is not None else 0.0)


class SpendGuard:
    """The one place every provider call passes on its way out: it makes a call only while the
    spend is under the budget (the ``BudgetGate`` in front of the waits admitted it), and
    hands every call that returns to ``ledger`` as soon as it returns, with its owner
    (``CALL_OWNER``)."""

    def __init__(
        self,
        inner: Provider,
        meter: SpendMeter,
        ledger: CallLedger | None = None,
        free: bool = False,
    ):
        self.inner = inner
        self.name = inner.name
        self.meter = meter
        self.ledger = ledger
        self.free = free  # its calls cost nothing (an Ollama on this machine): $0 is true

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        self.meter.check()  # the spend may have reached the budget while the call waited
        paid: ProviderResponse | None = None
        journal = _InFlight(self, request)
        try:
            paid = await self.inner.complete(request, journal.heard(on_event))
            return paid
        except (ProviderError, asyncio.CancelledError) as stopped:
            # A call can fail after it was paid for (a Claude Code run stopped mid-way), and
            # so can a call the run's stop cancelled (its answered turns).
            paid = _billed(stopped)
            raise
        finally:
            await journal.settled()
            if paid is not None or journal.journalled is not None:
                await self._record(request, paid or _nothing(self.name), journal.journalled)

    async def _record(
        self,
        request: ProviderRequest,
        response: ProviderResponse,
        journalled: ProviderResponse | None = None,
    ) -> None:
        """The call on the ledger: what it cost beyond the part ``journalled`` while it ran."""
        model = response.model or request.model or ""
        tokens = response.usage.total_tokens
        unpriced = unpriced_call(self.name, response.cost_usd, tokens, free=self.free)
        if self.ledger is not None:
            rest = _beyond(response, journalled) if journalled is not None else response
            await self.ledger(self.name, model, rest, CALL_OWNER.get(), unpriced, 1)
        if unpriced:
            self.meter.unpriced(self.name, model, tokens)


class _InFlight:
    """What a call in flight says it has cost so far (``spend`` events: a Claude Code run's
    answered turns), put on the ledger part by part as it comes, so a process killed outright
    leaves it on the bill; the call's own line then holds only the rest."""

    def __init__(self, guard: SpendGuard, request: ProviderRequest):
        self.guard = guard
        self.request = request
        self.journalled: ProviderResponse | None = None
        self._writes: list[asyncio.Future] = []

    def heard(self, on_event: EventCallback | None) -> EventCallback:
        def heard(event) -> None:
            if event.kind != "spend":
                if on_event is not None:
                    on_event(event)
                return
            so_far = ProviderResponse(
                usage=Usage(**event.data["usage"]),
                cost_usd=event.data["cost_usd"],
                model=event.data["model"],
                provider=self.guard.name,
            )
            part = _beyond(so_far, self.journalled) if self.journalled is not None else so_far
            self.journalled = so_far
            if self.guard.ledger is not None and part.usage.total_tokens:
                owner = CALL_OWNER.get()
                model = so_far.model or self.request.model or ""
                write = self.guard.ledger(self.guard.name, model, part, owner, False, 0)
                self._writes.append(asyncio.ensure_future(write))

        return heard

    async def settled(self) -> None:
        """Every part on the ledger (journalled in order, before the call's own line)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def _beyond(response: ProviderResponse, journalled: ProviderResponse) -> ProviderResponse:
    """``response`` less what was journalled of it already; never below nothing."""
    usage = response.usage.since(journalled.usage)
    cost = max(response.cost_usd - journalled.cost_usd, 0.0)
    return response.model_copy(update={"usage": usage, "cost_usd": cost})


def _nothing(provider: str) -> ProviderResponse:
    """A call that failed with no bill of its own, after parts of it were journalled."""
    return ProviderResponse(provider=provider, stop_reason="error")


def call_ceiling(provider: str, config: AcaConfig) -> CallCeiling:
    """The most one call of ``provider`` may cost, known before it is made; 0.0 when nothing
    bounds it. A Claude Code call is a whole run of the agent: ``[claude_code]
    max_budget_usd_per_task``, where claude ends the run (after the turn that reaches it).
    An API call is its input (about 4 characters a token), at the dearer of its model's input
    and cache-write prices, and its ``max_tokens`` of output at the output price."""
    if provider == "claude-code":
        per_run = config.claude_code.max_budget_usd_per_task or 0.0
        return lambda request: per_run
    section = config.provider(provider)
    default = section.model or default_model(provider)

    def ceiling(request: ProviderRequest) -> float:
        price = price_for(request.model or default or "", section.prices)
        if price is None:
            return 0.0
        output_tokens = request.max_tokens or section.max_tokens
        input_usd = estimate_tokens(request) * max(price.input, price.cache_write)
        return (input_usd + output_tokens * price.output) / 1_000_000

    return ceiling


def unbounded_runs_warning(providers: Iterable[str], config: AcaConfig) -> str | None:
    """Why a run's budget may be passed by far more than a call, unless the user sets the cap
    that bounds it: a Claude Code call is a task's whole agent run, checked against the budget
    when it starts, not while it works."""
    budget = config.session.budget_usd
    if budget is None or config.claude_code.max_budget_usd_per_task is not None:
        return None
    if "claude-code" not in providers:
        return None
    return (
        f"with a budget of ${budget:g}, a claude-code task's agent run is checked against the "
        "budget before it starts, not while it works, and has no cap of its own: one run, and "
        "the runs beside it, may spend past the budget. Set [claude_code] "
        "max_budget_usd_per_task to cap each run (runs the budget has no room for then wait)."
    )


def _billed(stopped: BaseException) -> ProviderResponse | None:
    """What a call that failed or was cancelled was paid for, if anything."""
    billed = getattr(stopped, "billed", None)
    if isinstance(billed, ProviderResponse) and (
        billed.cost_usd > 0 or billed.usage.total_tokens > 0
    ):
        return billed
    return None
