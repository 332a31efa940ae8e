"""The openai provider on the wire: Bearer auth, string arguments, cached tokens, quotas."""

from __future__ import annotations

import pytest

from aca_flows.errors import CreditExhausted, PermanentProviderError
from aca_flows.providers import get_provider
from aca_flows.providers.base import (
    Message,
    ProviderRequest,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from aca_flows.settings import AcaConfig, ProviderSection
from tests.providers.conftest import run

TOOL = ToolDefinition(name="run", description="Run a command.", input_schema={"type": "object"})


def _provider(**section):
    config = AcaConfig(providers={"openai": ProviderSection(model="gpt-4o", **section)})
    return get_provider("openai", config)


def _request(**extra) -> ProviderRequest:
    fields = {"system": "Be terse.", "messages": [Message(role="user", text="hi")]}
    return ProviderRequest(**(fields | extra))


def test_the_key_is_sent_as_a_bearer_token_and_tools_as_functions(llm_server):
    llm_server.openai.enqueue(text="ok")

    run(_provider().complete(_request(tools=[TOOL])))

    sent = llm_server.openai.requests[0]
    assert sent.headers["authorization"] == "Bearer test-key"
    assert sent.json["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent.json["tools"][0]["function"]["name"] == "run"


def test_tool_results_go_back_as_tool_messages_with_string_arguments(llm_server):
    llm_server.openai.enqueue(text="done")
    messages = [
        Message(role="user", text="list files"),
        Message(
            role="assistant", tool_calls=[ToolCall(id="c1", name="run", arguments={"cmd": "ls"})]
        ),
        Message(role="user", tool_results=[ToolResult(tool_call_id="c1", content="README.md")]),
    ]

    run(_provider().complete(_request(messages=messages, tools=[TOOL])))

    sent = llm_server.openai.requests[0].json["messages"]
    assert sent[2]["tool_calls"][0]["function"]["arguments"] == '{"cmd": "ls"}'
    assert sent[3] == {"role": "tool", "tool_call_id": "c1", "content": "README.md"}


def test_cached_prompt_tokens_are_split_from_fresh_input(llm_server):
    llm_server.openai.enqueue(
        text="ok", usage={"input_tokens": 200, "output_tokens": 10, "cache_read_tokens": 1800}
    )

    response = run(_provider().complete(_request()))

    assert response.usage.input_tokens == 200
    assert response.usage.cache_read_tokens == 1800
    # gpt-4o: $2.50 input, $1.25 cached, $10 output per million
    assert response.cost_usd == pytest.approx((200 * 2.5 + 1800 * 1.25 + 10 * 10) / 1_000_000)


def test_arguments_that_are_not_json_are_handed_back_unparsed(llm_server):
    llm_server.openai.enqueue(tool_calls=[{"name": "run", "arguments": '{"cmd": "ls'}])

    response = run(_provider().complete(_request(tools=[TOOL])))

    assert response.tool_calls[0].arguments == {"_unparsed_arguments": '{"cmd": "ls'}


def test_calls_without_ids_or_names_and_text_in_parts_are_answers_not_errors(llm_server):
    # Compatible servers answer so: each was a ValidationError failing the task, the paid
    # call on no bill.
    calls = [
        {"id": None, "type": "function", "function": {"name": "run", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": None, "arguments": "{}"}},
    ]
    parts = [{"type": "text", "text": "one "}, {"type": "text", "text": "two"}]
    llm_server.openai.enqueue(message={"role": "assistant", "content": parts, "tool_calls": calls})

    response = run(_provider().complete(_request(tools=[TOOL])))

    assert response.text == "one two"
    assert [(c.name, bool(c.id)) for c in response.tool_calls] == [("run", True), ("", True)]
    assert response.usage.input_tokens == 10  # billed


def test_an_exhausted_quota_is_permanent_not_a_rate_limit(llm_server):
    llm_server.openai.enqueue(status=429, error="You exceeded your current quota, check billing.")

    # A run starts no more openai tasks then (test_run_ends.py).
    with pytest.raises(CreditExhausted, match="spend limit") as raised:
        run(_provider().complete(_request()))
    # The server's sentence goes on as aca's: one period, not "billing.. Add credit".
    assert "check billing. Add credit" in str(raised.value)


def test_a_missing_key_says_how_to_fix_it(llm_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")

    with pytest.raises(PermanentProviderError, match="Set OPENAI_API_KEY"):
        run(_provider().complete(_request()))


def test_a_compatible_server_gets_max_tokens_and_its_headers_are_kept(llm_server):
    llm_server.openai.enqueue(
        text="ok",
        headers={"x-ratelimit-remaining-requests": "9", "x-ratelimit-reset-requests": "6s"},
    )

    response = run(_provider(max_tokens=256).complete(_request()))

    assert llm_server.openai.requests[0].json["max_tokens"] == 256
    assert response.rate_limit_headers["x-ratelimit-remaining-requests"] == "9"


def test_a_response_schema_is_sent_as_a_json_schema_format(llm_server):
    llm_server.openai.enqueue(text='{"ok": true}')
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}

    response = run(_provider().complete(_request(response_schema=schema)))

    assert response.text == '{"ok": true}'
    sent = llm_server.openai.requests[0].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == schema


def test_an_answer_naming_a_model_of_its_own_is_billed_at_the_price_of_the_model_asked(llm_server):
    usage = {"input_tokens": 1000, "output_tokens": 100}
    llm_server.openai.enqueue(text="ok", usage=usage, model="openai/gpt-4o")

    response = run(_provider().complete(_request()))

    assert response.model == "openai/gpt-4o"
    assert response.cost_usd == pytest.approx((1000 * 2.5 + 100 * 10) / 1_000_000)
