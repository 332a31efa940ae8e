"""What models cost: the published price table, USD per million tokens, and the lookup.

The one source of truth for prices, low in the layers (it imports nothing of aca's): the
settings' type of a price (``ModelPrice``, ``[providers.<name>.prices]``), what a cloned
repository's config may not undercut (``cloned_config.py``), and what the providers charge a
call (``providers/pricing.py``, ``cost_usd``) all read it from here.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_PRICES",
    "PRICED_BY_TABLE",
    "ModelPrice",
    "price_for",
    "unpriced_call",
    "with_cache_prices",
]


class ModelPrice(BaseModel):
    """USD per million tokens. A price the config gives without its cache prices gets them
    from ``with_cache_prices``."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)
    cache_read: float = Field(default=0, ge=0, allow_inf_nan=False)
    cache_write: float = Field(default=0, ge=0, allow_inf_nan=False)


# A model whose list price aca does not know: a cache read at most costs an input token, a
# cache write 1.25 times one (Anthropic's rate, the dearest there is).
_CACHE_RATIOS = {"cache_read": 1.0, "cache_write": 1.25}


def with_cache_prices(model: str, price: ModelPrice) -> ModelPrice:
    """``price`` (of ``model``, from the config) with the cache prices it leaves out, in the
    proportion to its input price that ``model``'s list price has, else ``_CACHE_RATIOS``:
    a config that names only ``input`` and ``output`` made every cache token free, 20 times
    under the bill of a long agent conversation."""
    missing = [name for name in _CACHE_RATIOS if name not in price.model_fields_set]
    if not missing:
        return price
    known = price_for(model)
    ratios = {
        name: getattr(known, name) / known.input if known and known.input else ratio
        for name, ratio in _CACHE_RATIOS.items()
    }
    return price.model_copy(update={name: price.input * ratios[name] for name in missing})


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

# Providers whose calls aca prices from this table: a model it has no price for costs $0.
# (Claude Code reports its own cost; replay plays recorded ones; Ollama is too when its server
# is not on this machine: ``run_providers.refuse_a_budget_without_prices``.)
PRICED_BY_TABLE = ("anthropic", "openai")

# The providers whose every answer says what it used (its server's ``usage``).
_APIS = ("anthropic", "openai", "ollama")


def unpriced_call(provider: str, cost_usd: float, tokens: int, *, free: bool) -> bool:
    """Whether a call that returned was paid, but counts $0 because aca has no price for its
    model: not a ``free`` provider's (a local Ollama, a replay), nothing counted, and tokens
    used (or an API's answer, which always says what it used)."""
    return not free and cost_usd == 0 and bool(tokens or provider in _APIS)


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
