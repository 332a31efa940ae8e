"""What a call cost: a per-model price table in USD per million tokens, overridable in config.

``cost_usd(model, usage, overrides)`` is all a caller needs. A model is looked up exactly,
then by the longest known prefix (so ``claude-sonnet-4-5-20250929`` is priced as
``claude-sonnet-4-5``). An unknown model costs 0.0: aca never guesses a price; set
``[providers.<name>.prices.<model>]`` in the config to budget it. The table and the lookup
live low in the layers, in ``aca_flows/prices.py``: the settings read them too.
"""

from __future__ import annotations

from collections.abc import Mapping

from aca_flows.prices import DEFAULT_PRICES, ModelPrice, price_for
from aca_flows.providers.base import Usage

__all__ = ["DEFAULT_PRICES", "cost_usd", "price_for"]


def cost_usd(
    model: str,
    usage: Usage,
    overrides: Mapping[str, ModelPrice] | None = None,
    *,
    asked: str | None = None,
) -> float:
    """USD cost of ``usage`` on ``model``, the model the answer names; at the price of
    ``asked``, the model the call asked for, when that one has none (a gateway names its own:
    ``anthropic/claude-sonnet-4.5`` for ``claude-sonnet-4-5``, and its calls counted $0
    against a budget); 0.0 when neither has a known price."""
    price = price_for(model, overrides) or (price_for(asked, overrides) if asked else None)
    if price is None:
        return 0.0
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
    )
    return round(total / 1_000_000, 8)
