"""The budget is a cap: calls in flight count against it, so tasks running at once stop
within about one call of it instead of each making one more call past it. Before any call has
returned, calls in flight count at the most a call may cost (its ceiling)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest

from aca_flows.flows import run_flow
from aca_flows.flows.spend import (
    BudgetGate,
    BudgetReached,
    SpendGuard,
    SpendMeter,
    call_ceiling,
    unbounded_runs_warning,
)
from aca_flows.providers.base import Message, ProviderRequest
from aca_flows.session.reading import load_session
from aca_flows.settings import AcaConfig
from tests.fakes.llm_server import llm_server  # noqa: F401  (fixture)
from tests.fakes.scripted_provider import ScriptedProvider, final
from tests.flows.test_run_ends import load_session_log
from tests.flows.test_task_run import MODEL, TurnsAgent

REQUEST = ProviderRequest(messages=[Message(role="user", text="go")])


class PaidCalls:
    """A provider whose every call takes 50 ms and costs $0.001."""

    name = "scripted"

    def __init__(self):
        self.made = 0
        self.in_flight = 0
        self.most_at_once = 0

    async def complete(self, request, on_event=None):
        self.made += 1
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        await asyncio.sleep(0.05)
        self.in_flight -= 1
        return final("done", cost_usd=0.001)


def calls_until_refused(guard: BudgetGate, agents: int = 8) -> None:
    """``agents`` agents at once, each calling until the budget refuses a call."""

    async def agent():
        with contextlib.suppress(BudgetReached):
            while True:
                await guard.complete(REQUEST)

    async def all_of_them():
        await asyncio.gather(*(agent() for _ in range(agents)))

    asyncio.run(all_of_them())


def test_eight_agents_at_once_stop_within_a_call_of_the_budget():
    provider = PaidCalls()
    spent = [0.0]
    held: list[str] = []

    async def ledger(_provider, _model, response, _owner, _unpriced, _calls):
        spent[0] += response.cost_usd

    meter = SpendMeter(lambda: spent[0], 0.0125, on_hold=held.append)
    calls_until_refused(BudgetGate(SpendGuard(provider, meter, ledger), meter))
    # 8 calls, then 4 that fit beside each other, then 1 alone: $0.013. A check of the spend
    # alone let all 8 make one more call each: 16 calls, $0.016.
    assert provider.made == 13
    assert spent[0] == pytest.approx(0.013)
    assert meter.in_flight == 0
    assert "would pass the budget of $0.0125" in held[0]


def test_the_first_calls_are_held_by_their_ceiling_under_a_small_budget():
    provider = PaidCalls()
    spent = [0.0]
    held: list[str] = []

    async def ledger(_provider, _model, response, _owner, _unpriced, _calls):
        spent[0] += response.cost_usd

    meter = SpendMeter(lambda: spent[0], 0.0035, on_hold=held.append)
    # A call may cost $0.002, known before any returned: room for one of them alone.
    calls_until_refused(
        BudgetGate(SpendGuard(provider, meter, ledger), meter, ceiling=lambda request: 0.002)
    )
    # 1 alone, then 2 at $0.001 (what it cost) beside each other, then 1 alone: $0.004. Unheld,
    # the first 8 calls all went at once: $0.008, 4.5 calls past the budget.
    assert provider.made == 4
    assert spent[0] == pytest.approx(0.004)
    assert held[0].startswith("a provider call waits: $0.0000 spent and 1 call(s) in flight")
    assert "$0.0020 each (the most a call may cost, as none has returned yet)" in held[0]


def test_the_first_calls_all_go_at_once_when_the_budget_has_room_for_them():
    provider = PaidCalls()
    held: list[str] = []
    meter = SpendMeter(lambda: 0.0, 1.0, on_hold=held.append)
    guard = BudgetGate(SpendGuard(provider, meter), meter, ceiling=lambda request: 0.1)

    async def eight():  # 8 calls of at most $0.1 each: $0.8 fits the budget of $1
        await asyncio.gather(*(guard.complete(REQUEST) for _ in range(8)))

    asyncio.run(eight())
    assert provider.most_at_once == 8 and not held


def test_a_paid_call_that_counts_nothing_against_the_budget_is_said_once_per_model():
    # A call no price was found for (a Claude Code run killed before any result, of a model
    # aca has no price for) was billed $0: the budget did not count it, and nothing said so.
    free_call = ScriptedProvider(*(final("done", cost_usd=0.0) for _ in range(4)))
    said: list[str] = []

    def guard(budget_usd, **free) -> SpendGuard:
        meter = SpendMeter(lambda: 0.0, budget_usd, on_hold=said.append)
        return SpendGuard(free_call, meter, **free)

    budgeted = guard(1.0)
    for _ in range(2):
        asyncio.run(budgeted.complete(REQUEST))
    assert said == [
        "scripted: a call of scripted-model used 110 tokens and counts $0 against the budget of "
        '$1: aca has no price for it. Set [providers.scripted.prices."scripted-model"] (input '
        "= ..., output = ..., USD per million tokens) so the budget counts its calls."
    ]
    asyncio.run(guard(1.0, free=True).complete(REQUEST))  # an Ollama on this machine
    assert len(said) == 1
    # Without a budget the cost shown ($0.0000) is not what the calls cost: said too.
    asyncio.run(guard(None).complete(REQUEST))
    assert said[1] == (
        "scripted: a call of scripted-model used 110 tokens and counts $0 in the session's cost: "
        'aca has no price for it. Set [providers.scripted.prices."scripted-model"] (input = '
        "..., output = ..., USD per million tokens) so the cost counts its calls."
    )


def test_a_call_s_ceiling_is_its_size_at_its_price_or_a_claude_code_run_s_cap():
    config = AcaConfig.model_validate(
        {
            "claude_code": {"max_budget_usd_per_task": 0.5},
            "providers": {"openai": {"max_tokens": 1000}},
        }
    )
    request = ProviderRequest(messages=[Message(role="user", text="x" * 4000)], max_tokens=2000)
    # 1,000 tokens in at $3.75 (sonnet's cache write, dearer than its $3 input), 2,000 out at $15.
    assert call_ceiling("anthropic", config)(request) == pytest.approx(0.03375)
    # gpt-5.1, the default model: 1,000 in at $1.25, and the config's 1,000 out at $10.
    assert call_ceiling("openai", config)(
        request.model_copy(update={"max_tokens": None})
    ) == pytest.approx(0.01125)
    assert call_ceiling("claude-code", config)(request) == 0.5
    assert call_ceiling("claude-code", AcaConfig())(request) == 0.0  # no cap: unheld
    assert call_ceiling("ollama", config)(request) == 0.0  # no price: unheld


def test_a_budget_says_a_claude_code_run_without_a_cap_of_its_own_may_pass_it():
    # A claude-code call is a task's whole run: with no per-run cap, the runs going at once
    # could spend past the budget by whole runs, and nothing said that they could.
    budget = AcaConfig.model_validate({"session": {"budget_usd": 1.0}})
    warning = unbounded_runs_warning({"claude-code"}, budget)
    assert warning is not None and warning.startswith("with a budget of $1, a claude-code task")
    assert "Set [claude_code] max_budget_usd_per_task to cap each run" in warning
    capped = AcaConfig.model_validate(
        {"session": {"budget_usd": 1.0}, "claude_code": {"max_budget_usd_per_task": 0.5}}
    )
    assert unbounded_runs_warning({"claude-code"}, capped) is None
    assert unbounded_runs_warning({"anthropic"}, budget) is None  # each call is bounded
    assert unbounded_runs_warning({"claude-code"}, AcaConfig()) is None  # no budget


def test_a_call_fits_when_nothing_is_in_flight_and_none_once_the_budget_is_spent():
    spent = [0.0]
    meter = SpendMeter(lambda: spent[0], 0.01, costliest_call_usd=0.05)

    async def calls():
        await meter.admit()  # alone: the spend decides, however dear a call was before
        meter.returned(0.02)
        spent[0] = 0.02
        with pytest.raises(BudgetReached, match=r"^budget of \$0.01 reached$"):
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
    # The calls in flight when the budget was reached returned after: the end says the total.
    final = f"budget of $0.007 reached; the session spent ${session.cost_usd:.4f} in all"
    assert summary["stopped_reason"] == final and session.status_reason == final
    log = load_session_log(repo, summary["session_id"])
    assert "a provider call waits: $" in log and "would pass the budget of $0.007" in log


def test_a_run_of_eight_tasks_holds_its_first_calls_under_a_small_budget(
    tmp_path, repo, anthropic_fake
):
    agent = TurnsAgent(3)
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(lambda request: replace(agent(request), delay=0.3))
    tasks = tmp_path / "tasks.md"
    tasks.write_text("".join(f"- write the files {{#t{i}}}\n" for i in range(8)))
    # About $0.0006 a call; a call may cost $0.12 (8192 tokens of output): the first goes
    # alone, then the budget holds two more beside each other, then one alone.
    budget = 0.002
    outcome = run_flow(
        task_file=str(tasks), workdir=str(repo), model=MODEL, max_concurrent=8, budget_usd=budget
    )
    summary = outcome.summary
    assert outcome.state_name == "Stopped"
    one_call = max(u["input_tokens"] * 3 + u["output_tokens"] * 15 for u in agent.paid) / 1e6
    # The 8 tasks' first calls all went at once before: 8 calls, $0.0049.
    assert len(agent.paid) == 4
    assert budget <= summary["cost_usd"] < budget + one_call
    log = load_session_log(repo, summary["session_id"])
    assert "(the most a call may cost, as none has returned yet)" in log


def test_a_spent_budget_stops_a_call_before_its_rate_limit_wait_and_holds_no_slot():
    # The call that spent the budget filled the limiter's token window: the next waited 49
    # min (a deployment run's default limits), then stopped for the budget. And calls held
    # for the budget's room held the server's shared in-flight slots meanwhile.
    from aca_flows.providers.ratelimit import RateLimitedProvider, RateLimiter
    from aca_flows.settings import RateLimitingSection

    spent = [0.0]
    meter = SpendMeter(lambda: spent[0], budget_usd=0.001, costliest_call_usd=0.001)
    limiter = RateLimiter(RateLimitingSection(max_tokens_per_minute=10_000, burst_allowance=0))
    paid = PaidCalls()
    provider = BudgetGate(RateLimitedProvider(SpendGuard(paid, meter), limiter), meter)

    async def two_calls() -> float:
        await provider.complete(REQUEST)
        spent[0] = 0.001  # the ledger has the first call: the budget is spent
        limiter.tokens.take(1_000_000, limiter.clock())  # its tokens fill the minute's window
        started = asyncio.get_running_loop().time()
        with pytest.raises(BudgetReached):
            await provider.complete(REQUEST)
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(asyncio.wait_for(two_calls(), 10)) < 1
    assert paid.made == 1

    # Calls held for the budget's room wait in front of the slots, holding none.
    spent[0] = 0.0

    async def ledger(_provider, _model, response, _owner, _unpriced, _calls):
        spent[0] += response.cost_usd

    meter = SpendMeter(lambda: spent[0], budget_usd=0.0125)
    calls = PaidCalls()
    slots = {"held": 0, "idle": 0}

    class Slot:  # a concurrency slot around the call, as RateLimitedProvider's shared one
        name = "scripted"

        def __init__(self, inner):
            self.inner = inner

        async def complete(self, request, on_event=None):
            slots["held"] += 1
            try:
                return await self.inner.complete(request, on_event)
            finally:
                slots["held"] -= 1

    async def watch():  # slots held by calls not being made
        while True:
            slots["idle"] = max(slots["idle"], slots["held"] - calls.in_flight)
            await asyncio.sleep(0.002)

    async def agents():
        watcher = asyncio.create_task(watch())
        guarded = BudgetGate(Slot(SpendGuard(calls, meter, ledger)), meter)

        async def agent():
            with contextlib.suppress(BudgetReached):
                while True:
                    await guarded.complete(REQUEST)

        await asyncio.gather(*(agent() for _ in range(8)))
        watcher.cancel()

    asyncio.run(agents())
    assert calls.made == 13  # 8, then 4 beside each other, then 1 alone, as ever
    assert slots["idle"] == 0  # 7 slots were held by calls waiting for the budget's room


def test_calls_that_wait_for_a_rate_limit_are_checked_against_the_budget_when_they_go(
    tmp_path, repo, anthropic_fake
):
    # One call at a time (the limiter's in-flight slot): the 8 tasks' calls wait in turn. They
    # were admitted before that wait, when only a cheap first call had returned ($0.0006 a
    # call in flight), and went out one after another after the spend reached the budget:
    # $0.72 on a $0.10 budget.
    agent = TurnsAgent(3)

    def priced(request):
        reply = agent(request)
        if len(agent.paid) > 1:  # every call but the first: $0.09
            agent.paid[-1] = {"input_tokens": 20_000, "output_tokens": 2_000}
            reply = replace(reply, usage=agent.paid[-1])
        return replace(reply, delay=0.1)

    for _ in range(40):
        anthropic_fake.anthropic.enqueue(priced)
    config = tmp_path / "aca.toml"
    config.write_text(
        "[rate_limiting]\nmax_concurrent_requests = 1\nmax_requests_per_minute = 10000\n"
        "max_tokens_per_minute = 100000000\n"
    )
    tasks = tmp_path / "tasks.md"
    tasks.write_text("".join(f"- write the files {{#t{i}}}\n" for i in range(8)))
    outcome = run_flow(
        task_file=str(tasks),
        workdir=str(repo),
        model=MODEL,
        max_concurrent=8,
        budget_usd=0.10,
        config_file=str(config),
    )
    assert outcome.state_name == "Stopped"
    # The first call and two at $0.09: the second took the spend to $0.09, under the budget;
    # the third passed it, as a call with nothing in flight may (by one call).
    assert len(agent.paid) == 3
    assert outcome.summary["cost_usd"] == pytest.approx(0.0006 + 2 * 0.09)


@pytest.mark.parametrize(("budget", "said"), [(0.042, "$0.042"), (0.096, "$0.096"), (5, "$5")])
def test_a_budget_stop_names_the_budget_as_it_was_given(budget, said):
    # Rounded to cents: $0.042 was "$0.04", and $0.096 "$0.10" while the run went on under it.
    meter = SpendMeter(lambda: budget, budget)
    with pytest.raises(BudgetReached) as stopped:
        asyncio.run(meter.admit())
    assert str(stopped.value) == f"budget of {said} reached"


def test_a_server_that_reports_no_usage_is_said_to_defeat_the_budget(llm_server):  # noqa: F811
    # An OpenAI-compatible server that leaves its usage at zero: every call counted $0 against
    # a budget, silently, and the run completed far past it.
    from aca_flows.providers import get_provider
    from aca_flows.settings import ProviderSection

    for _ in range(2):
        llm_server.openai.enqueue(text="ok", usage={"input_tokens": 0, "output_tokens": 0})
    config = AcaConfig(providers={"openai": ProviderSection(model="gpt-4o")})
    said: list[str] = []
    guard = SpendGuard(
        get_provider("openai", config), SpendMeter(lambda: 0.0, 1.0, on_hold=said.append)
    )
    for _ in range(2):
        asyncio.run(guard.complete(REQUEST))
    assert said == [
        "openai: a call of gpt-4o came back without its token usage, so it counts $0 against the "
        "budget of $1, and so will every call of its server: the budget cannot be kept there. "
        "Use a server that reports usage, or run without a budget."
    ]
