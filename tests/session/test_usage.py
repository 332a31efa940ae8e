"""Usage totals by provider and model, per session and across sessions."""

from __future__ import annotations

import pytest

from aca_flows.providers.base import Usage
from aca_flows.session.usage import (
    UsageEntry,
    add_usage,
    merge_usage,
    total_cost,
    total_tokens,
    usage_by_provider_model,
)


def entry(provider, model, tokens, cost):
    return UsageEntry(
        provider=provider,
        model=model,
        usage=Usage(input_tokens=tokens, output_tokens=1, cache_read_tokens=2),
        cost_usd=cost,
    )


def test_entries_merge_per_provider_and_model_in_a_stable_order():
    merged = merge_usage(
        [entry("openai", "gpt", 10, 0.1), entry("anthropic", "m", 5, 0.2),
         entry("openai", "gpt", 20, 0.3)]
    )  # fmt: skip
    assert [(e.provider, e.model, e.calls) for e in merged] == [
        ("anthropic", "m", 1),
        ("openai", "gpt", 2),
    ]
    assert merged[1].usage.input_tokens == 30
    assert merged[1].cost_usd == pytest.approx(0.4)
    assert total_tokens(merged) == 35 + 3 * 3
    assert total_cost(merged) == pytest.approx(0.6)


def test_adding_usage_leaves_the_original_list_alone():
    before = [entry("anthropic", "m", 5, 0.2)]
    after = add_usage(before, [entry("anthropic", "m", 5, 0.2)])
    assert before[0].calls == 1 and after[0].calls == 2


def test_usage_across_sessions(tmp_path):
    from aca_flows.plan.models import ExecutionPlan, Task
    from aca_flows.session.reading import list_sessions
    from aca_flows.session.store import SessionStore

    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="a")])
    for cost in (0.5, 0.25):
        with SessionStore.create(tmp_path, plan, provider="anthropic") as store:
            store.call_recorded(
                provider="anthropic", model="m", usage=Usage(input_tokens=100), cost_usd=cost
            )
    (total,) = usage_by_provider_model(list_sessions(tmp_path))
    assert (total.calls, total.usage.input_tokens, total.cost_usd) == (2, 200, 0.75)


def test_a_session_s_spend_shows_in_json_without_float_noise(tmp_path, capsys):
    """0.024 + 0.018 is 0.041999999999999996 in floats: `aca sessions list --json`, the run's
    summary and `aca usage --json` said so."""
    import json

    from aca_flows.cli import main
    from aca_flows.plan.models import ExecutionPlan, Task
    from aca_flows.session.store import SessionStore

    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="a")])
    with SessionStore.create(tmp_path, plan, provider="anthropic") as store:
        for cost in (0.024, 0.018):
            store.call_recorded(
                provider="anthropic", model="m", usage=Usage(input_tokens=100), cost_usd=cost
            )
    capsys.readouterr()
    assert main(["sessions", "list", "--json", "-w", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"][0]["cost_usd"] == 0.042
    assert main(["usage", "--json", "-w", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["cost_usd"] == 0.042
