"""The ollama provider on the wire: object arguments, eval counts, OLLAMA_HOST, missing models."""

from __future__ import annotations

import pytest

from aca_flows.errors import PermanentProviderError
from aca_flows.providers import get_provider
from aca_flows.providers.base import (
    Message,
    ProviderRequest,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from aca_flows.providers.ollama_api import normalize_host
from aca_flows.settings import AcaConfig, ProviderSection
from tests.providers.conftest import run

TOOL = ToolDefinition(name="run", description="Run a command.", input_schema={"type": "object"})


def _provider(**section):
    return get_provider("ollama", AcaConfig(providers={"ollama": ProviderSection(**section)}))


def test_a_chat_is_sent_unstreamed_with_tools_and_a_token_limit(llm_server):
    llm_server.ollama.enqueue(text="hello", usage={"input_tokens": 42, "output_tokens": 7})

    response = run(
        _provider(model="qwen-coder", max_tokens=99).complete(
            ProviderRequest(
                system="Be terse.", messages=[Message(role="user", text="hi")], tools=[TOOL]
            )
        )
    )

    sent = llm_server.ollama.requests[0].json
    assert sent["stream"] is False
    assert sent["model"] == "qwen-coder"
    assert sent["options"] == {"num_predict": 99}
    assert sent["tools"][0]["function"]["name"] == "run"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (42, 7)
    assert response.cost_usd == 0.0  # local models are free unless a price is configured


def test_tool_calls_get_stable_ids_and_results_go_back_with_the_tool_name(llm_server):
    llm_server.ollama.enqueue(tool_calls=[{"name": "run", "arguments": {"cmd": "ls"}}])
    first = run(_provider().complete(ProviderRequest(messages=[Message(role="user", text="ls")])))
    assert first.tool_calls == [ToolCall(id="ollama_call_0", name="run", arguments={"cmd": "ls"})]

    llm_server.ollama.enqueue(text="there is a README")
    run(
        _provider().complete(
            ProviderRequest(
                messages=[
                    Message(role="user", text="ls"),
                    Message(role="assistant", tool_calls=first.tool_calls),
                    Message(
                        role="user",
                        tool_results=[ToolResult(tool_call_id="ollama_call_0", content="README")],
                    ),
                ]
            )
        )
    )

    sent = llm_server.ollama.requests[1].json["messages"]
    assert sent[1]["tool_calls"] == [{"function": {"name": "run", "arguments": {"cmd": "ls"}}}]
    assert sent[2] == {"role": "tool", "content": "README", "tool_name": "run"}


def test_flat_and_nameless_tool_calls_are_answers_not_errors(llm_server):
    # Compatible servers send {"name", "arguments"} without "function": a KeyError failed the
    # task, the paid call on no bill.
    calls = [{"name": "run", "arguments": {"cmd": "ls"}}, {"function": {"arguments": {}}}]
    llm_server.ollama.enqueue(message={"role": "assistant", "content": "", "tool_calls": calls})

    response = run(
        _provider().complete(ProviderRequest(messages=[Message(role="user", text="ls")]))
    )

    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("run", {"cmd": "ls"}),
        ("", {}),
    ]
    assert response.usage.input_tokens == 10  # billed


def test_a_missing_model_is_permanent_and_says_what_to_pull(llm_server):
    llm_server.ollama.enqueue(status=404, error="model 'qwen-coder' not found")

    with pytest.raises(PermanentProviderError, match="ollama pull qwen-coder"):
        run(
            _provider(model="qwen-coder").complete(
                ProviderRequest(messages=[Message(role="user", text="x")])
            )
        )


@pytest.mark.parametrize(
    ("value", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("localhost", "http://localhost:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("https://ollama.example.com", "https://ollama.example.com"),
    ],
)
def test_ollama_host_is_read_the_way_ollama_reads_it(value, url):
    assert normalize_host(value) == url
