"""Cost from the price table: dated model names, config overrides, unknown models."""

from __future__ import annotations

import pytest

from aca_flows.providers.base import Usage
from aca_flows.providers.pricing import cost_usd, price_for
from aca_flows.settings import ModelPrice


def test_a_dated_model_name_is_priced_as_its_family():
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_usd("claude-sonnet-4-5-20250929", usage) == pytest.approx(18.0)


def test_the_longest_matching_prefix_wins():
    assert price_for("gpt-4o-mini-2024-07-18").input == 0.15
    assert price_for("gpt-4o-2024-08-06").input == 2.5


def test_a_configured_price_overrides_the_default():
    override = {"claude-sonnet-4-6": ModelPrice(input=1, output=2)}
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000)
    assert cost_usd("claude-sonnet-4-6", usage, override) == pytest.approx(2.0)


def test_all_four_token_kinds_are_billed():
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=1_000_000,
        cache_write_tokens=1_000_000,
    )
    assert cost_usd("claude-haiku-4-5", usage) == pytest.approx(1 + 5 + 0.1 + 1.25)


def test_an_unknown_model_costs_nothing_rather_than_a_guess():
    assert cost_usd("my-local-llama", Usage(input_tokens=10**6, output_tokens=10**6)) == 0.0


@pytest.mark.parametrize(
    ("model", "cache_read", "cache_write"),
    [
        ("claude-sonnet-4-5", 0.6, 7.5),  # in the list price's proportion: 0.1 and 1.25 of input
        ("gpt-4o", 3.0, 0.0),  # half the input price; OpenAI charges no cache writes
        ("my-gateway-model", 6.0, 7.5),  # unknown: a read an input token, a write 1.25 of one
    ],
)
def test_a_configured_price_without_cache_prices_never_makes_cache_tokens_free(
    model, cache_read, cache_write
):
    # `input = ..., output = ...` alone (what aca's own advice names) priced a long agent
    # conversation's cache reads at $0: a twentieth of its bill against the budget.
    from aca_flows.settings import ProviderSection

    section = ProviderSection(prices={model: {"input": 6, "output": 30}})
    price = section.prices[model]
    assert (price.cache_read, price.cache_write) == pytest.approx((cache_read, cache_write))
    given = ProviderSection(prices={model: {"input": 6, "output": 30, "cache_read": 0.1}})
    assert given.prices[model].cache_read == 0.1  # what the config says, it keeps


def test_a_price_of_infinity_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="finite"):
        ModelPrice(input=float("inf"), output=1)
