"""What a call cost: a per-model price table in USD per million tokens, overridable in config.

``cost_usd(model, usage, overrides)`` is all a caller needs. A model is looked up exactly,
then by the longest known prefix (so ``claude-sonnet-4-5-20250929`` is priced as
``claude-sonnet-4-5``). An unknown model costs 0.0: aca never guesses a price; set
``[providers.<name>.prices.<model>]`` in the config to budget it.
"""

from __future__ import annotations

from collections.abc import Mapping

from aca_flows.providers.base import Usage
from aca_flows.settings import ModelPrice

__all__ = ["DEFAULT_PRICES", "cost_usd", "price_for"]


def _p(input: float, output: float, cache_read: float, cache_write: float = 0.0) -> ModelPrice:
    return ModelPrice(input=input, output=output, cache_read=cache_read, cache_write=cache_write)


# Public list prices, USD per million tokens. Anthropic cache writes are the 5-minute TTL
# price (1.25x input); OpenAI has no cache-write charge.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-opus-4-6": _p(5, 25, 0.5, 6.25),
    "claude-opus-4-5": _p(5, 25, 0.5, 6.25),
    "claude-opus-4-1": _p(15, 75, 1.5, 18.75),
    "claude-opus-4": _p(15, 75, 1.5, 18.75),
    "claude-sonnet-4-6": _p(3, 15, 0.3, 3.75),
    "claude-sonnet-4-5": _p(3, 15, 0.3, 3.75),
    "claude-sonnet-4": _p(3, 15, 0.3, 3.75),
    "claude-3-7-sonnet": _p(3, 15, 0.3, 3.75),
    "claude-haiku-4-5": _p(1, 5, 0.1, 1.25),
    "claude-3-5-haiku": _p(0.8, 4, 0.08, 1.0),
    "gpt-5.1": _p(1.25, 10, 0.125),
    "gpt-5": _p(1.25, 10, 0.125),
    "gpt-5-mini": _p(0.25, 2, 0.025),
    "gpt-5-nano": _p(0.05, 0.4, 0.005),
    "gpt-4.1": _p(2, 8, 0.5),
    "gpt-4.1-mini": _p(0.4, 1.6, 0.1),
    "gpt-4.1-nano": _p(0.1, 0.4, 0.025),
    "gpt-4o": _p(2.5, 10, 1.25),
    "gpt-4o-mini": _p(0.15, 0.6, 0.075),
}


def price_for(
    model: str,
    overrides: Mapping[str, ModelPrice] | None = None,
    *,
    include_defaults: bool = True,
) -> ModelPrice | None:
    """The price of ``model``: config overrides first, then the defaults; exact, then prefix."""
    if not model:
        return None  # every name starts with "": no prefix may match an unknown model
    tables = [overrides or {}] + ([DEFAULT_PRICES] if include_defaults else [])
    for table in tables:
        if model in table:
            return table[model]
    for table in tables:
        prefixes = [name for name in table if model.startswith(name)]
        if prefixes:
            return table[max(prefixes, key=len)]
    return None


def cost_usd(model: str, usage: Usage, overrides: Mapping[str, ModelPrice] | None = None) -> float:
    """USD cost of ``usage`` on ``model``; 0.0 when the model has no known price."""
    price = price_for(model, overrides)
    if price is None:
        return 0.0
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
    )
    return round(total / 1_000_000, 8)
