"""Usage records: tokens and USD per task, totalled by provider and model.

A ``UsageEntry`` is what one provider and model cost: the four token counts, USD and the
number of calls, and how many of them aca had no price for (their cost is not in the USD: a
spend shown with them says so, never a bare figure). Lists of entries are kept merged, one
entry per ``(provider, model)``, sorted by provider then model, so totals are stable to print
and compare.
``aca usage`` and ``aca sessions show`` read these from ``meta/session.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from aca_flows.providers.base import Usage

if TYPE_CHECKING:
    from aca_flows.session.record import SessionRecord

__all__ = [
    "UsageEntry",
    "add_usage",
    "merge_usage",
    "summed_cost",
    "total_cost",
    "total_tokens",
    "unpriced_calls",
    "usage_by_provider_model",
]


class UsageEntry(BaseModel):
    """Tokens and cost spent with one provider and model (``model`` may be empty)."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    model: str = ""
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = Field(default=0.0, ge=0)
    calls: int = Field(default=1, ge=0)
    unpriced_calls: int = Field(default=0, ge=0)

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider, self.model)

    @property
    def total_tokens(self) -> int:
        return self.usage.total_tokens

    def __add__(self, other: UsageEntry) -> UsageEntry:
        return UsageEntry(
            provider=self.provider,
            model=self.model,
            usage=self.usage + other.usage,
            cost_usd=summed_cost((self.cost_usd, other.cost_usd)),
            calls=self.calls + other.calls,
            unpriced_calls=self.unpriced_calls + other.unpriced_calls,
        )


def merge_usage(entries: Iterable[UsageEntry]) -> list[UsageEntry]:
    """One entry per ``(provider, model)``, summed, sorted by provider then model."""
    merged: dict[tuple[str, str], UsageEntry] = {}
    for entry in entries:
        if entry.key in merged:
            merged[entry.key] = merged[entry.key] + entry
        else:
            merged[entry.key] = entry.model_copy(deep=True)
    return [merged[key] for key in sorted(merged)]


def add_usage(into: list[UsageEntry], new: Iterable[UsageEntry]) -> list[UsageEntry]:
    """``into`` plus ``new``, merged (a new list; ``into`` is not changed)."""
    return merge_usage([*into, *new])


def total_tokens(entries: Iterable[UsageEntry]) -> int:
    return sum(entry.total_tokens for entry in entries)


def total_cost(entries: Iterable[UsageEntry]) -> float:
    return summed_cost(entry.cost_usd for entry in entries)


def unpriced_calls(entries: Iterable[UsageEntry]) -> int:
    """The calls whose cost ``total_cost`` leaves out: aca had no price for their model."""
    return sum(entry.unpriced_calls for entry in entries)


def summed_cost(costs: Iterable[float]) -> float:
    """Dollars added up to the nano-dollar: what a float sum adds beyond that
    (0.041999999999999996 for 0.024 + 0.018) is no cost, and showed in every JSON view."""
    return round(sum(costs), 9)


def usage_by_provider_model(sessions: Iterable[SessionRecord]) -> list[UsageEntry]:
    """What ``aca usage`` prints: the spend of several sessions, per provider and model."""
    return merge_usage(entry for session in sessions for entry in session.usage)
