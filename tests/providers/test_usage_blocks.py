"""5-hour usage blocks as ccusage computes them."""

from __future__ import annotations

from aca_flows.providers.usage_blocks import BLOCK_SECONDS, UsageBlocks

HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_a_block_starts_at_the_hour_of_its_first_call():
    blocks = UsageBlocks()
    block = blocks.record(T0 + 2 * HOUR + 25 * 60, tokens=100)
    assert block.start == T0 + 2 * HOUR
    assert block.end == T0 + 7 * HOUR


def test_calls_within_five_hours_of_the_start_share_a_block():
    blocks = UsageBlocks()
    blocks.record(T0 + 10 * 60, 100)
    blocks.record(T0 + 4 * HOUR + 50 * 60, 200)
    assert len(blocks.blocks) == 1
    assert blocks.blocks[0].tokens == 300


def test_a_call_five_hours_after_the_start_opens_a_new_block():
    blocks = UsageBlocks()
    blocks.record(T0 + 10 * 60, 100)
    blocks.record(T0 + 5 * HOUR + 1, 50)
    assert [b.tokens for b in blocks.blocks] == [100, 50]
    assert blocks.blocks[1].start == T0 + 5 * HOUR


def test_a_block_ends_early_after_five_idle_hours():
    blocks = UsageBlocks()
    blocks.record(T0, 100)
    assert blocks.current(T0 + 4 * HOUR) is not None
    assert blocks.current(T0 + BLOCK_SECONDS) is None


def test_blocks_survive_a_round_trip_through_json_data():
    blocks = UsageBlocks()
    blocks.record(T0, 10, cost_usd=0.5)
    again = UsageBlocks.from_list(blocks.to_list())
    assert again.blocks == blocks.blocks
