"""5-hour usage blocks, computed the way ccusage computes them.

Claude's subscription limits reset in 5-hour windows. A block starts at the hour (UTC) of its
first call, floored; a call opens a new block when it comes 5 h or more after the block's start
or after the previous call (a 5-hour gap). A block is active until 5 h after its start, unless
nothing happened for 5 h.

Times are epoch seconds, so a caller (and a test) can supply any clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["BLOCK_SECONDS", "UsageBlock", "UsageBlocks"]

BLOCK_SECONDS = 5 * 3600
_KEEP_BLOCKS = 50


@dataclass
class UsageBlock:
    start: float
    first_activity: float
    last_activity: float
    tokens: int = 0
    cost_usd: float = 0.0
    requests: int = 0

    @property
    def end(self) -> float:
        return self.start + BLOCK_SECONDS

    def is_active(self, now: float) -> bool:
        return now < self.end and now - self.last_activity < BLOCK_SECONDS


class UsageBlocks:
    """The recent blocks, oldest first. Not thread-safe: its owner holds the lock."""

    def __init__(self, blocks: list[UsageBlock] | None = None):
        self.blocks: list[UsageBlock] = list(blocks or [])

    def record(self, when: float, tokens: int, cost_usd: float = 0.0) -> UsageBlock:
        """Add one call's usage, opening a new block when the rules say so."""
        last = self.blocks[-1] if self.blocks else None
        if (
            last is None
            or when - last.start >= BLOCK_SECONDS
            or when - last.last_activity >= BLOCK_SECONDS
        ):
            start = when - (when % 3600)
            last = UsageBlock(start=start, first_activity=when, last_activity=when)
            self.blocks.append(last)
            del self.blocks[:-_KEEP_BLOCKS]
        last.last_activity = max(last.last_activity, when)
        last.tokens += tokens
        last.cost_usd += cost_usd
        last.requests += 1
        return last

    def current(self, now: float) -> UsageBlock | None:
        """The active block at ``now``, if any."""
        if self.blocks and self.blocks[-1].is_active(now):
            return self.blocks[-1]
        return None

    def to_list(self) -> list[dict]:
        return [asdict(block) for block in self.blocks]

    @classmethod
    def from_list(cls, data: list[dict]) -> UsageBlocks:
        return cls([UsageBlock(**item) for item in data])
