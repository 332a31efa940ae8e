"""The anthropic provider on the wire: caching, streaming, auth, headers, structured output."""

from __future__ import annotations

import pytest

from aca_flows.errors import ModelRefused, PermanentProviderError, TransientProviderError
from aca_flows.providers import get_provider
from aca_flows.providers.anthropic_api import AnthropicProvider
from aca_flows.providers.base import Message, ProviderRequest, ToolDefinition
from aca_flows.settings import AcaConfig, ProviderSection
from tests.providers.conftest import run

TOOLS = [
    ToolDefinition(name="read_file", description="Read a file.", input_schema={"type": "object"}),
    ToolDefinition(name="run", description="Run a command.", input_schema={"type": "object"}),
]


def _request(**extra) -> ProviderRequest:
    fields = {"system": "Shared long prefix.", "messages": [Message(role="user", text="hi")]}
    return ProviderRequest(**(fields | extra))


def _provider(**section) -> AnthropicProvider:
    config = AcaConfig(
        providers={"anthropic": ProviderSection(model="claude-sonnet-4-6", **section)}
    )
    return get_provider("anthropic", config)


def test_system_prompt_and_tools_carry_cache_breakpoints(llm_server):
    llm_server.anthropic.enqueue(text="ok")

    run(_provider().complete(_request(tools=TOOLS)))

    sent = llm_server.anthropic.requests[0].json
    assert sent["system"] == [
        {"type": "text", "text": "Shared long prefix.", "cache_control": {"type": "ephemeral"}}
    ]
    # Only the last tool needs the breakpoint: it caches everything before it.
    assert "cache_control" not in sent["tools"][0]
    assert sent["tools"][-1]["cache_control"] == {"type": "ephemeral"}


def test_cache_reads_are_reported_and_billed_at_the_cache_price(llm_server):
    llm_server.anthropic.enqueue(
        text="ok",
        usage={
            "input_tokens": 50,
            "output_tokens": 100,
            "cache_read_tokens": 10_000,
            "cache_write_tokens": 0,
        },
    )

    response = run(_provider().complete(_request(tools=TOOLS)))

    assert response.usage.cache_read_tokens == 10_000
    # sonnet list price: 50*$3 + 100*$15 + 10000*$0.30 per million
    assert response.cost_usd == pytest.approx((150 + 1500 + 3000) / 1_000_000)


def test_the_call_streams_and_authenticates_with_the_key(llm_server):
    llm_server.anthropic.enqueue(text="a long answer " * 50)

    response = run(_provider().complete(_request()))

    sent = llm_server.anthropic.requests[0]
    assert sent.json["stream"] is True
    # This SDK sends the key as a Bearer token; the claude binary sends x-api-key.
    assert "test-key" in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    assert response.text == "a long answer " * 50


def test_a_wrong_key_is_permanent_and_the_message_names_the_variable(llm_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-secret")

    with pytest.raises(PermanentProviderError) as caught:
        run(_provider().complete(_request()))

    assert caught.value.status_code == 401
    assert "ANTHROPIC_API_KEY" in str(caught.value)
    assert "sk-ant-wrong-secret" not in str(caught.value)


def test_a_model_the_account_may_not_use_is_not_called_a_rejected_key(llm_server):
    denied = "Your organization does not have access to this model"
    llm_server.anthropic.enqueue(status=403, error=denied)

    with pytest.raises(PermanentProviderError) as caught:
        run(_provider().complete(_request()))

    assert caught.value.status_code == 403
    assert f"the account may not use this model (403): {denied}." in str(caught.value)
    assert "ANTHROPIC_API_KEY" not in str(caught.value)
    # It stops the run's tasks of that provider, saying so (not "refused its credentials").
    assert isinstance(caught.value, ModelRefused)
    assert caught.value.what == "refused the model to this account"


def test_a_missing_key_fails_before_any_request(llm_server, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")

    with pytest.raises(PermanentProviderError, match="Set ANTHROPIC_API_KEY"):
        run(_provider().complete(_request()))

    assert llm_server.requests == []


def test_a_tool_input_that_is_no_object_goes_back_to_the_model_unparsed(llm_server):
    # A ValidationError failed the task, the paid call on no bill; openai and ollama told the
    # model.
    use = {"type": "tool_use", "id": "toolu_1", "name": "run", "input": ["ls", "-l"]}
    llm_server.anthropic.enqueue(message={"content": [use]}, stop_reason="tool_use")

    response = run(_provider().complete(_request()))

    assert response.tool_calls[0].arguments == {"_unparsed_arguments": '["ls", "-l"]'}
    assert response.usage.input_tokens == 10  # billed


def test_rate_limit_headers_are_returned_for_the_limiter(llm_server):
    llm_server.anthropic.enqueue(
        text="ok",
        headers={
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-requests-reset": "2026-01-01T00:01:00Z",
        },
    )

    response = run(_provider().complete(_request()))

    assert response.rate_limit_headers == {
        "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-requests-reset": "2026-01-01T00:01:00Z",
    }


def test_a_retry_after_date_is_turned_into_seconds(llm_server):
    llm_server.anthropic.enqueue(
        status=429, headers={"retry-after": "Thu, 01 Jan 2099 00:00:00 GMT"}
    )

    with pytest.raises(TransientProviderError) as caught:
        run(_provider().complete(_request()))

    assert caught.value.retry_after > 3600


def test_a_spent_credit_balance_is_permanent(llm_server):
    llm_server.anthropic.enqueue(
        status=400, error="Your credit balance is too low to access the Anthropic API."
    )

    with pytest.raises(PermanentProviderError, match="spend limit or credit"):
        run(_provider().complete(_request()))


def test_a_secret_in_an_error_body_is_redacted_as_shown_not_as_sent(llm_server):
    # The body was redacted as JSON text, where the quotes are escaped (\"), then read: the
    # message shown held the password the redactor finds in the text as shown.
    llm_server.anthropic.enqueue(status=400, error='password: "hunter2hunter2" rejected')

    with pytest.raises(PermanentProviderError) as caught:
        run(_provider().complete(_request()))

    assert "hunter2hunter2" not in f"{caught.value} {caught.value.body}"
    assert 'password: "[REDACTED]" rejected' in str(caught.value)


def test_a_response_schema_is_answered_as_json_text(llm_server):
    schema = {"type": "object", "properties": {"tasks": {"type": "array"}}}
    llm_server.anthropic.enqueue(tool_calls=[{"name": "respond", "arguments": {"tasks": ["a"]}}])

    response = run(_provider().complete(_request(response_schema=schema)))

    assert response.text == '{"tasks": ["a"]}'
    assert response.tool_calls == []
    assert response.stop_reason == "end_turn"
    assert llm_server.anthropic.requests[0].json["tool_choice"] == {
        "type": "tool",
        "name": "respond",
    }


def test_base_url_from_config_wins_over_the_environment(llm_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    llm_server.anthropic.enqueue(text="from config")

    response = run(_provider(base_url=llm_server.url).complete(_request()))

    assert response.text == "from config"


def test_an_answer_naming_a_model_of_its_own_is_billed_at_the_price_of_the_model_asked(llm_server):
    # A gateway (LiteLLM, OpenRouter) answers with its own name for the model: its calls
    # counted $0, and a run with a budget of a cent spent five times that, exit 0.
    usage = {"input_tokens": 1000, "output_tokens": 100}
    llm_server.anthropic.enqueue(text="ok", usage=usage, model="anthropic/claude-sonnet-4.6")

    response = run(_provider().complete(_request()))

    assert response.model == "anthropic/claude-sonnet-4.6"
    assert response.cost_usd == pytest.approx((1000 * 3 + 100 * 15) / 1_000_000)
