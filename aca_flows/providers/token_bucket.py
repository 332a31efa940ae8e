"""``TokenBucket``: a rate per minute with a burst allowance, followed down (and back up, never
above the configured rate) to the limits a server's rate-limit headers give. ``RateLimiter``
(``ratelimit.py``) keeps one for requests and one for tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LEARNED_LIMIT_SECONDS", "TokenBucket"]

# A limit learned from headers and read back from the state file holds this long (one 5-hour
# usage block) or until the next headers say otherwise.
LEARNED_LIMIT_SECONDS = 5 * 3600.0


class TokenBucket:
    """``per_minute`` units refill evenly; up to ``per_minute + burst`` can be spent at once.

    Spending more than is there leaves a debt that later callers wait out, so one call larger
    than the whole bucket still goes through (once the bucket is full) instead of never.
    The rate is the configured one, or a server's lower limit (``learned`` at ``learned_at``)
    while the latest headers say so.
    """

    def __init__(self, per_minute: float, burst: float, now: float):
        self.configured = float(per_minute)
        self.per_minute = self.configured
        self.learned: float | None = None
        self.learned_at = 0.0
        self.burst = float(burst)
        self.level = self.capacity
        self.updated = now
        # Refill lost because the bucket was full; see RateLimiter.release.
        self.spilled = 0.0

    @property
    def capacity(self) -> float:
        return self.per_minute + self.burst

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        raw = self.level + elapsed * self.per_minute / 60
        self.spilled += max(0.0, raw - self.capacity)
        self.level = min(self.capacity, raw)
        self.updated = max(self.updated, now)

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` (at most a full bucket) is available."""
        self._refill(now)
        missing = min(amount, self.capacity) - self.level
        return 0.0 if missing <= 0 else missing * 60 / self.per_minute

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level - amount)

    def tighten(self, *, remaining: float | None, limit: float | None, now: float) -> None:
        """Follow a server's ``limit`` (up or down, never above the configured rate); lower the
        level to its ``remaining``."""
        self._refill(now)
        if limit is not None and limit > 0:
            self.learned, self.learned_at = limit, now
            self.per_minute = min(self.configured, limit)
            self.level = min(self.level, self.capacity)
        if remaining is not None:
            self.level = min(self.level, remaining)

    def to_dict(self) -> dict[str, float | None]:
        return {
            "per_minute": self.per_minute,
            "level": self.level,
            "updated": self.updated,
            "learned": self.learned,
            "learned_at": self.learned_at,
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Take back ``to_dict``'s data. A limit the server's headers gave holds for
        ``LEARNED_LIMIT_SECONDS`` (so a restart does not overrun it) under the configured rate,
        until new headers come; a saved ``per_minute`` alone (an older aca's) is not trusted."""
        learned, learned_at = data.get("learned"), float(data.get("learned_at") or 0.0)
        if learned and float(learned) > 0 and self.updated - learned_at < LEARNED_LIMIT_SECONDS:
            self.learned, self.learned_at = float(learned), learned_at
            self.per_minute = min(self.configured, self.learned)
        self.level = min(self.capacity, float(data.get("level", self.level)))
        self.updated = float(data.get("updated", self.updated))
