"""Shared fixtures for provider tests: the fake LLM server, a fake clock, a claude environment."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from tests.fakes.llm_server import FakeLLMServer, llm_server  # noqa: F401  (fixture)

__all__ = ["FakeClock", "run"]


def run(coro):
    """Run one coroutine to completion (tests stay plain functions)."""
    return asyncio.run(coro)


class FakeClock:
    """Epoch-seconds clock whose ``sleep`` jumps time instead of waiting.

    Concurrent sleepers wake in time order: a sleeper only advances the clock once every
    other runnable task has had its turn and no other sleeper is due earlier.
    """

    def __init__(self, start: float = 1_767_225_600.0):  # 2026-01-01T00:00:00Z, on the hour
        self.now = start
        self._sleepers: dict[int, float] = {}
        self._ids = itertools.count()
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        ident = next(self._ids)
        self._sleepers[ident] = self.now + max(0.0, seconds)
        try:
            while True:
                for _ in range(3):  # let every runnable task reach its next await
                    await asyncio.sleep(0)
                due = self._sleepers[ident]
                if due <= min(self._sleepers.values()):
                    self.now = max(self.now, due)
                    return
        finally:
            del self._sleepers[ident]


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def claude_env(llm_server: FakeLLMServer, tmp_path: Path, monkeypatch) -> dict[str, str]:  # noqa: F811
    """Variables for running the real claude binary against the fake server, quietly."""
    home = tmp_path / "claude-home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": llm_server.url,
        "ANTHROPIC_API_KEY": "test-key",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # One retry, as Claude Code's own ten for users: its Bun client now and then sees a
        # fresh connection to a local server reset (ECONNRESET, about once in a CI run). Tests
        # of errors script one answer per attempt.
        "CLAUDE_CODE_MAX_RETRIES": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Claude Code makes side calls (titles, quota checks) without tools: only its agent
    # loop, which always sends tools, takes the scripted replies.
    llm_server.anthropic.scripted_for = lambda request: bool((request.json or {}).get("tools"))
    return env
