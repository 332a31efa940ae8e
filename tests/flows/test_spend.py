"""The budget is a cap: calls in flight count against it, so tasks running at once stop
within about one call of it instead of each making one more call past it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest

from aca_flows.flows import run_flow
from aca_flows.flows.spend import BudgetReached, SpendGuard, SpendMeter
from aca_flows.providers.base import Message, ProviderRequest
from aca_flows.session.store import load_session
from tests.fakes.scripted_provider import final
from tests.flows.test_run_ends import load_session_log
from tests.flows.test_task_run import MODEL, TurnsAgent

REQUEST = ProviderRequest(messages=[Message(role="user", text="go")])


class PaidCalls:
    """A provider whose every call takes 50 ms and costs $0.001."""

    name = "scripted"

    def __init__(self):
        self.made = 0

    async def complete(self, request, on_event=None):
        self.made += 1
        await asyncio.sleep(0.05)
        return final("done", cost_usd=0.001)


def test_eight_agents_at_once_stop_within_a_call_of_the_budget():
    provider = PaidCalls()
    spent = [0.0]
    held: list[str] = []

    async def ledger(_provider, _model, response, _owner):
        spent[0] += response.cost_usd

    meter = SpendMeter(lambda: spent[0], 0.0125, on_hold=held.append)
    guard = SpendGuard(provider, meter, ledger)

    async def agent():  # calls until the budget refuses one
        with contextlib.suppress(BudgetReached):
            while True:
                await guard.complete(REQUEST)

    async def eight():
        await asyncio.gather(*(agent() for _ in range(8)))

    asyncio.run(eight())
    # 8 calls, then 4 that fit beside each other, then 1 alone: $0.013. A check of the spend
    # alone let all 8 make one more call each: 16 calls, $0.016.
    assert provider.made == 13
    assert spent[0] == pytest.approx(0.013)
    assert meter.in_flight == 0
    assert "would pass the budget of $0.0125" in held[0]


def test_a_call_fits_when_nothing_is_in_flight_and_none_once_the_budget_is_spent():
    spent = [0.0]
    meter = SpendMeter(lambda: spent[0], 0.01, costliest_call_usd=0.05)

    async def calls():
        await meter.admit()  # alone: the spend decides, however dear a call was before
        meter.returned(0.02)
        spent[0] = 0.02
        with pytest.raises(BudgetReached, match=r"budget of \$0.01 reached \(spent \$0.0200\)"):
            await meter.admit()

    asyncio.run(calls())
    assert meter.in_flight == 0 and meter.costliest_call_usd == 0.05


def test_a_run_of_eight_tasks_stops_within_a_call_of_its_budget(tmp_path, repo, anthropic_fake):
    agent = TurnsAgent(3)
    for _ in range(40):
        # Each call takes 0.3 s, so the tasks' calls are in flight together.
        anthropic_fake.anthropic.enqueue(lambda request: replace(agent(request), delay=0.3))
    tasks = tmp_path / "tasks.md"
    tasks.write_text("".join(f"- write the files {{#t{i}}}\n" for i in range(8)))
    # About $0.00062 a call: the first 8 calls spend $0.0050, the budget holds 11.
    budget = 0.007
    outcome = run_flow(
        task_file=str(tasks), workdir=str(repo), model=MODEL, max_concurrent=8, budget_usd=budget
    )
    summary = outcome.summary
    assert outcome.state_name == "Stopped" and summary["status"] == "stopped"
    one_call = max(u["input_tokens"] * 3 + u["output_tokens"] * 15 for u in agent.paid) / 1e6
    # Each of the 8 tasks made its next call at once before: 16 calls, $0.0099.
    assert len(agent.paid) <= 12
    assert budget <= summary["cost_usd"] < budget + one_call
    session = load_session(repo, summary["session_id"])
    assert session.usage[0].calls == len(agent.paid)  # every paid call is on the bill
    log = load_session_log(repo, summary["session_id"])
    assert "a provider call waits: $" in log and "would pass the budget of $0.007" in log
