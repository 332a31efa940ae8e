"""How aca writes amounts a reader types back."""

from __future__ import annotations

import pytest

from aca_flows._words import exact_usd, shown


@pytest.mark.parametrize(
    ("usd", "shown"),
    [(0.000315, "0.000315"), (0.0012, "0.0012"), (0.04842000000001, "0.04842"), (3.0, "3")],
)
def test_a_spend_a_budget_must_pass_is_shown_to_the_micro_dollar(usd, shown):
    """Four decimals showed $0.000315 as $0.0003: "N above $0.0003" refused N = 0.00031."""
    assert exact_usd(usd) == shown


def test_others_text_is_shown_with_what_a_terminal_acts_on_escaped():
    text = "ok \x1b[2J\x07 \x9b1m \u202eevil\u2066 café 日本\tx\r\nnext\roverwrite"
    assert (
        shown(text) == "ok \\x1b[2J\\x07 \\x9b1m \\u202eevil\\u2066 café 日本\tx\nnext\noverwrite"
    )
