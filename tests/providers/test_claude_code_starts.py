"""Claude processes start in turn, one per core: the real claude binary against the fake server,
and the turns themselves (``claude_code_starts.starting``)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from aca_flows.providers import claude_code_starts
from aca_flows.providers.base import Message, ProviderRequest
from aca_flows.providers.claude_code import bundled_claude_cli
from aca_flows.providers.claude_code_starts import starting
from tests.providers.test_claude_code import _provider

ONE_CORE = 1


@pytest.fixture
def one_turn(monkeypatch) -> threading.Semaphore:
    turns = threading.Semaphore(ONE_CORE)
    monkeypatch.setattr(claude_code_starts, "_turns", turns)
    return turns


def _logged_claude(folder: Path) -> Path:
    """A claude that notes the time it was started at, then is the bundled one."""
    script = folder / "claude"
    script.write_text(
        f'#!/bin/sh\ndate +%s.%N >> "{folder / "starts"}"\nexec "{bundled_claude_cli()}" "$@"\n'
    )
    script.chmod(0o755)
    return script


def test_a_second_claude_starts_once_the_first_is_up_not_alongside_it(
    claude_env, llm_server, tmp_path, monkeypatch, one_turn
):
    monkeypatch.setenv("ACA_CLAUDE_CLI", str(_logged_claude(tmp_path)))
    worktrees = [tmp_path / "a", tmp_path / "b"]
    for worktree in worktrees:
        worktree.mkdir()
        llm_server.anthropic.enqueue(text="Nothing to change.")
    provider = _provider()

    async def both():
        requests = [
            ProviderRequest(messages=[Message(role="user", text="hi")], options={"cwd": str(w)})
            for w in worktrees
        ]
        return await asyncio.gather(*(provider.complete(r) for r in requests))

    responses = asyncio.run(both())

    assert [r.text for r in responses] == ["Nothing to change.", "Nothing to change."]
    first, second = sorted(map(float, (tmp_path / "starts").read_text().split()))
    first_request = min(r.received_at for r in llm_server.anthropic.requests)
    # The second claude waits for the first to be up (its init, just before its first
    # request); started alongside it, it would start within milliseconds of it.
    assert second - first > 0.5 * (first_request - first)
    assert one_turn.acquire(blocking=False), "the turn was given back"


def test_a_turn_is_given_back_after_the_hold_by_a_process_that_says_nothing(one_turn):
    async def main():
        entered: list[float] = []

        async def silent():
            async with starting(hold=0.3):
                entered.append(time.monotonic())
                await asyncio.sleep(2)

        async def next_one():
            await asyncio.sleep(0.05)
            async with starting(hold=0.3):
                entered.append(time.monotonic())

        first = asyncio.create_task(silent())
        await next_one()
        first.cancel()
        return entered

    began, then = asyncio.run(main())
    assert 0.25 < then - began < 1.5


def test_a_process_that_ends_or_speaks_gives_its_turn_back_and_a_cancelled_wait_holds_none(
    one_turn,
):
    async def main():
        with pytest.raises(RuntimeError):
            async with starting():
                raise RuntimeError("claude crashed before its first message")
        async with starting() as started:
            waiting = asyncio.create_task(_enter_and_hold())
            await asyncio.sleep(0.1)
            assert not waiting.done()
            waiting.cancel()
            started()
            started()  # every message says it: the turn is given back once
        async with starting():
            pass

    asyncio.run(asyncio.wait_for(main(), 5))
    assert one_turn.acquire(blocking=False)
    assert not one_turn.acquire(blocking=False), "one turn, not two"


async def _enter_and_hold() -> None:
    async with starting():
        await asyncio.sleep(10)
