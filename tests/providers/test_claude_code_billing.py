"""What a claude-code call puts on the bill: each run its own turns, once, also when the run is
resumed (a verify fix round), killed or interrupted. The real bundled ``claude`` binary runs
against the fake server, which says what each model call used."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from aca_flows.errors import PermanentProviderError, TransientProviderError
from aca_flows.providers import get_provider
from aca_flows.providers.base import Message, ProviderRequest, Usage
from aca_flows.settings import AcaConfig, ClaudeCodeSection, ProviderSection
from tests.providers.conftest import run

MODEL = "claude-sonnet-4-6"


def _price(usage: Usage) -> float:
    """The list price of claude-sonnet-4-6 (what Claude Code charges the fake's tokens at)."""
    return (
        usage.input_tokens * 3
        + usage.output_tokens * 15
        + usage.cache_read_tokens * 0.3
        + usage.cache_write_tokens * 3.75
    ) / 1_000_000


def _provider():
    config = AcaConfig(
        claude_code=ClaudeCodeSection(), providers={"claude-code": ProviderSection(model=MODEL)}
    )
    return get_provider("claude-code", config)


def _request(worktree: Path, text: str, **options) -> ProviderRequest:
    return ProviderRequest(
        messages=[Message(role="user", text=text)], options={"cwd": str(worktree), **options}
    )


def test_each_run_of_a_resumed_claude_session_bills_its_own_turns_only(
    claude_env, llm_server, tmp_path
):
    # A verify fix round resumes the Claude session, whose cost Claude Code reports summed
    # over the whole session: each round was billed every earlier round again.
    provider = _provider()
    write = {"file_path": str(tmp_path / "a.txt"), "content": "a"}
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Write", "arguments": write}],
        usage={"input_tokens": 100, "output_tokens": 20},
    )
    llm_server.anthropic.enqueue(text="First.", usage={"input_tokens": 100, "output_tokens": 20})
    first = run(provider.complete(_request(tmp_path, "Write a.txt")))
    round_two = {"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 50}
    llm_server.anthropic.enqueue(text="Second.", usage=round_two)
    second = run(provider.complete(_request(tmp_path, "Fix it", resume=first.session_id)))
    llm_server.anthropic.enqueue(text="Third.", usage={"input_tokens": 100, "output_tokens": 20})
    third = run(provider.complete(_request(tmp_path, "Fix it", resume=first.session_id)))

    assert first.usage == Usage(input_tokens=200, output_tokens=40)
    assert second.usage == Usage(input_tokens=100, output_tokens=20, cache_read_tokens=50)
    assert third.usage == Usage(input_tokens=100, output_tokens=20)
    # Tokens and cost of one call agree, and the bill is what the server served.
    for response in (first, second, third):
        assert response.cost_usd == pytest.approx(_price(response.usage))
    served = Usage(input_tokens=400, output_tokens=80, cache_read_tokens=50)
    total = first.cost_usd + second.cost_usd + third.cost_usd
    assert total == pytest.approx(_price(served))

    # A resumed run that fails after it paid (its turn limit) carries its own turns, too.
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Write", "arguments": write}],
        usage={"input_tokens": 300, "output_tokens": 10},
    )
    with pytest.raises(PermanentProviderError, match="turn limit") as caught:
        run(provider.complete(_request(tmp_path, "Again", resume=first.session_id, max_turns=1)))

    billed = caught.value.billed
    assert billed.usage == Usage(input_tokens=300, output_tokens=10)
    assert billed.cost_usd == pytest.approx(_price(billed.usage))


def _claude_processes() -> list[int]:
    """The claude processes this test process started."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"claude" in command:
            found.append(int(entry.name))
    return found


def _kill_claude_at(llm_server, model_calls: int, signum: int) -> threading.Thread:
    """Send ``signum`` to claude once its ``model_calls``-th model call is being answered."""

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            calls = [r for r in llm_server.anthropic.requests if r.json.get("tools")]
            if len(calls) >= model_calls:
                time.sleep(1)  # the call is held by the server: claude waits for its answer
                for pid in _claude_processes():
                    os.kill(pid, signum)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    return killer


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_claude_run_killed_mid_way_bills_the_turns_it_was_answered_once(
    signum, claude_env, llm_server, tmp_path
):
    provider = _provider()
    llm_server.anthropic.enqueue(text="First.", usage={"input_tokens": 100, "output_tokens": 20})
    first = run(provider.complete(_request(tmp_path, "Say hi")))
    # A fix round: one turn answered in full (a text and a tool call), the next held until
    # claude is killed.
    write = {"file_path": str(tmp_path / "a.txt"), "content": "a"}
    llm_server.anthropic.enqueue(
        text="Writing it.",
        tool_calls=[{"name": "Write", "arguments": write}],
        usage={"input_tokens": 1000, "output_tokens": 200, "cache_read_tokens": 400},
    )
    llm_server.anthropic.enqueue(text="Late.", delay=30)
    killer = _kill_claude_at(llm_server, 3, signum)
    orphans = _orphaned_bridges()  # other sessions' killed runs

    with pytest.raises(TransientProviderError) as caught:
        run(provider.complete(_request(tmp_path, "Write a.txt", resume=first.session_id)))
    killer.join()
    # Its sandbox's network bridge went with it (it outlived claude, re-parented to pid 1).
    assert _gone(_orphaned_bridges() - orphans)

    # The answered turn is on the bill, once, though no result came.
    killed = caught.value.billed
    assert killed.usage == Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400)
    assert killed.cost_usd == pytest.approx(_price(killed.usage))
    # The next round of the session bills its own turn: not the killed run's again (which
    # Claude Code keeps in the session's spend when it had time to save it: SIGTERM).
    llm_server.anthropic.enqueue(text="Third.", usage={"input_tokens": 100, "output_tokens": 20})
    third = run(provider.complete(_request(tmp_path, "Go on", resume=first.session_id)))

    assert third.usage == Usage(input_tokens=100, output_tokens=20)
    assert third.cost_usd == pytest.approx(_price(third.usage))


def test_a_killed_runs_turns_of_a_model_aca_has_no_price_for_cost_what_claude_charges(
    claude_env, llm_server, tmp_path
):
    # Claude Code prices a model aca's table does not list (its default model may be one):
    # the turns of a run killed before its result are priced as Claude Code prices them.
    model = "claude-opus-5-5"
    provider = _provider()
    provider.model = model
    llm_server.anthropic.enqueue(text="First.", usage={"input_tokens": 100, "output_tokens": 20})
    first = run(provider.complete(_request(tmp_path, "Say hi")))
    assert first.cost_usd > 0
    # (Input and output: an estimate from the proportions of Anthropic's prices, which this
    # model's cache reads do not keep exactly.)
    turn = {"input_tokens": 1000, "output_tokens": 200}
    write = {"file_path": str(tmp_path / "a.txt"), "content": "a"}
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Write", "arguments": write}], usage=turn)
    llm_server.anthropic.enqueue(text="Late.", delay=30)
    killer = _kill_claude_at(llm_server, 3, signal.SIGKILL)

    with pytest.raises(TransientProviderError) as caught:
        run(provider.complete(_request(tmp_path, "Write a.txt")))
    killer.join()

    # What Claude Code charges for the same turn, in a run that ends with its result.
    llm_server.anthropic.enqueue(text="Same.", usage=turn)
    same = run(provider.complete(_request(tmp_path, "Say it")))
    killed = caught.value.billed
    assert killed.usage == same.usage == Usage(**turn)
    assert killed.cost_usd == pytest.approx(same.cost_usd)


def test_a_resumed_session_of_a_model_aca_has_no_price_for_costs_what_claude_charges(
    claude_env, llm_server, tmp_path
):
    # A resumed aca session's provider never saw its Claude sessions end: their results sum
    # the whole session, so the run is priced from its own tokens, which for a model aca
    # has no price for counted $0 against the budget, unsaid.
    model = "claude-opus-5-5"
    first_provider = _provider()
    first_provider.model = model
    turn = {"input_tokens": 1000, "output_tokens": 200}
    llm_server.anthropic.enqueue(text="First.", usage=turn)
    first = run(first_provider.complete(_request(tmp_path, "Say hi")))
    assert first.cost_usd > 0

    resumed = _provider()  # the next run's: a new process
    resumed.model = model
    llm_server.anthropic.enqueue(text="Again.", usage=turn)
    again = run(resumed.complete(_request(tmp_path, "Go on", resume=first.session_id)))

    assert again.usage == first.usage == Usage(**turn)
    assert again.cost_usd == pytest.approx(first.cost_usd)


def test_a_claude_run_cancelled_by_the_runs_stop_puts_its_answered_turns_on_the_ledger(
    claude_env, llm_server, tmp_path
):
    # The stop's grace period over (or a second Ctrl-C), the task is cancelled while Claude
    # Code works: the turns it was answered were paid for all the same.
    import asyncio

    from aca_flows.flows.spend import SpendGuard, SpendMeter

    recorded = []

    async def ledger(provider, model, response, owner, unpriced, calls=1):
        recorded.append((response, calls))

    guard = SpendGuard(_provider(), SpendMeter(lambda: 0.0, None), ledger)
    turn = {"input_tokens": 1000, "output_tokens": 200}
    write = {"file_path": str(tmp_path / "a.txt"), "content": "a"}
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Write", "arguments": write}], usage=turn)
    llm_server.anthropic.enqueue(text="Late.", delay=30)
    on_the_ledger_while_it_ran = []

    async def cancel_mid_way() -> None:
        working = asyncio.create_task(guard.complete(_request(tmp_path, "Write a.txt")))
        while len([r for r in llm_server.anthropic.requests if r.json.get("tools")]) < 2:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)
        on_the_ledger_while_it_ran.extend(recorded)
        working.cancel()
        with pytest.raises(asyncio.CancelledError):
            await working

    run(cancel_mid_way())

    # The answered turn reached the ledger as it ended, before the run did: a process killed
    # outright (SIGKILL) had left the whole run off the bill.
    assert [(r.usage, calls) for r, calls in on_the_ledger_while_it_ran] == [(Usage(**turn), 0)]
    # In all, the turn once, and one call.
    assert sum((r.usage for r, _ in recorded), Usage()) == Usage(**turn)
    assert sum(r.cost_usd for r, _ in recorded) == pytest.approx(_price(Usage(**turn)))
    assert sum(calls for _, calls in recorded) == 1
    assert _claude_processes() == []


def _orphaned_bridges() -> set[int]:
    """Pids of Claude Code sandbox bridges (socat on a socket in an aca run's scratch folder)
    whose folder is gone: their run has ended."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            program, _, args = (entry / "cmdline").read_bytes().partition(b"\0")
        except OSError:
            continue
        listen = [a for a in args.split(b"\0") if a.startswith(b"UNIX-LISTEN:")]
        if program.endswith(b"socat") and listen and b"/aca-scratch-" in listen[0]:
            socket = Path(os.fsdecode(listen[0].split(b":", 1)[1].split(b",", 1)[0]))
            if not socket.parent.exists():
                found.add(int(entry.name))
    return found


def _gone(pids: set[int]) -> bool:
    """Whether the processes ``pids`` have ended (each is given a few seconds to)."""
    for _ in range(50):
        if not pids & _orphaned_bridges():
            return True
        time.sleep(0.1)
    return False
