"""The contract every provider keeps, run against the fake server for each of them.

Each case scripts the fake in its own protocol and builds its provider from the standard
environment variables (set by the ``llm_server`` fixture). ``replay`` is checked by recording
the same exchange through the anthropic provider and playing the cassette back.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from aca_flows.errors import (
    KeyRejected,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from aca_flows.providers import get_provider
from aca_flows.providers.base import (
    Message,
    ProviderRequest,
    ProviderResponse,
    ToolCall,
    ToolDefinition,
    ToolResult,
)
from aca_flows.providers.replay import RecordingProvider, ReplayProvider
from aca_flows.settings import AcaConfig, ModelPrice, ProviderSection
from tests.fakes.llm_server import FakeLLMServer
from tests.providers.conftest import run

PRICE = ModelPrice(input=3, output=15, cache_read=0.3, cache_write=3.75)
MODEL = "contract-model"
READ_FILE = ToolDefinition(
    name="read_file",
    description="Read a file of the repository.",
    input_schema={"type": "object", "properties": {"path": {"type": "string"}}},
)


def _config(name: str, **section) -> AcaConfig:
    fields = {"model": MODEL, "prices": {MODEL: PRICE}} | section
    return AcaConfig(providers={name: ProviderSection(**fields)})


class Case:
    """One provider under the contract: how to script the fake and how to call it."""

    def __init__(self, name: str, server: FakeLLMServer, tmp_path: Path):
        self.name = name
        self.server = server
        self.tmp_path = tmp_path
        wire = "anthropic" if name in ("replay", "claude-code") else name
        self.queue = getattr(server, wire)

    def enqueue(self, **reply) -> None:
        self.queue.enqueue(**reply)

    def complete(self, request: ProviderRequest, **section) -> ProviderResponse:
        if self.name == "claude-code":
            # Claude Code works in a folder and runs its own loop; our tools are not its tools.
            request = request.model_copy(
                update={"tools": [], "options": {"cwd": str(self.tmp_path)}}
            )
        if self.name != "replay":
            return run(get_provider(self.name, _config(self.name, **section)).complete(request))
        cassette = self.tmp_path / "contract.cassette.json"
        anthropic = get_provider("anthropic", _config("anthropic", **section))
        recorder = RecordingProvider(anthropic, cassette)
        with contextlib.suppress(ProviderError):  # errors are recorded too
            run(recorder.complete(request))
        return run(ReplayProvider(cassette).complete(request))


@pytest.fixture(params=["anthropic", "openai", "ollama", "replay"])
def case(request, llm_server, tmp_path) -> Case:
    return Case(request.param, llm_server, tmp_path)


@pytest.fixture(params=["anthropic", "openai", "ollama", "replay", "claude-code"])
def any_case(request, llm_server, tmp_path) -> Case:
    """Every provider, claude-code included: for the parts of the contract it can keep
    (it runs its own tool loop, and its CLI does not pass retry-after on)."""
    if request.param == "claude-code":
        request.getfixturevalue("claude_env")
    return Case(request.param, llm_server, tmp_path)


def _ask(text: str = "What is in README.md?", **extra) -> ProviderRequest:
    return ProviderRequest(
        system="You are a careful coding agent.",
        messages=[Message(role="user", text=text)],
        tools=[READ_FILE],
        **extra,
    )


def test_a_text_answer_comes_back_with_usage_and_cost(any_case):
    case = any_case
    case.enqueue(text="It describes aca.", usage={"input_tokens": 1200, "output_tokens": 300})

    response = case.complete(_ask())

    assert response.text == "It describes aca."
    assert response.tool_calls == []
    assert response.stop_reason == "end_turn"
    assert response.usage.input_tokens == 1200
    assert response.usage.output_tokens == 300
    # 1200 * $3/M + 300 * $15/M, from the configured price table.
    assert response.cost_usd == pytest.approx(0.0081)
    assert response.model == MODEL


def test_rate_limits_and_overload_are_transient_for_every_provider(any_case):
    for _ in range(2):  # Claude Code retries once; the others leave the second unread
        any_case.enqueue(status=529, error="Overloaded")

    with pytest.raises(TransientProviderError) as caught:
        any_case.complete(_ask())

    assert "529" in str(caught.value)


def test_a_rejected_key_is_permanent_for_every_provider(any_case):
    for _ in range(2):  # Claude Code retries once; the others leave the second unread
        any_case.enqueue(status=401, error="invalid x-api-key")

    with pytest.raises(PermanentProviderError) as caught:
        any_case.complete(_ask())

    assert "401" in str(caught.value) or "authentication" in str(caught.value)


def test_a_tool_call_comes_back_with_parsed_arguments(case):
    case.enqueue(tool_calls=[{"name": "read_file", "arguments": {"path": "README.md"}}])

    response = case.complete(_ask())

    assert response.stop_reason == "tool_use"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("read_file", {"path": "README.md"})
    ]
    assert response.tool_calls[0].id


def test_a_lone_surrogate_in_an_answer_is_kept_as_text_can_be_stored(case):
    # JSON allows "\ud83d" (half an emoji); kept, it failed the task of the paid call when
    # its conversation was saved. (Anthropic's SDK refuses one in a tool's input: the answer
    # cannot be read, a transient error, billed.)
    in_input = case.name in ("openai", "ollama")
    path = "a\ud83d" if in_input else "a"
    case.enqueue(
        text="half \ud83d", tool_calls=[{"name": "read_file", "arguments": {"path": path}}]
    )

    response = case.complete(_ask())

    assert response.text == "half \ufffd"
    assert response.tool_calls[0].arguments == {"path": "a\ufffd" if in_input else "a"}
    response.model_dump_json()  # raised PydanticSerializationError


def test_a_tool_result_round_trip_is_accepted(case):
    case.enqueue(text="The README says hello.")
    request = ProviderRequest(
        system="You are a careful coding agent.",
        tools=[READ_FILE],
        messages=[
            Message(role="user", text="What is in README.md?"),
            Message(
                role="assistant",
                tool_calls=[
                    ToolCall(id="call_1", name="read_file", arguments={"path": "README.md"})
                ],
            ),
            Message(role="user", tool_results=[ToolResult(tool_call_id="call_1", content="hello")]),
        ],
    )

    response = case.complete(request)

    assert response.text == "The README says hello."
    sent = str(case.queue.requests[-1].json)
    assert "hello" in sent and "read_file" in sent


@pytest.mark.parametrize("status", [429, 529, 503])
def test_overload_and_rate_limits_are_transient_with_retry_after(case, status):
    case.enqueue(status=status, retry_after=7)

    with pytest.raises(TransientProviderError) as caught:
        case.complete(_ask())

    assert caught.value.retry_after == 7
    assert str(status) in str(caught.value)


@pytest.mark.parametrize("fault", ["drop", "malformed_json", "truncate"])
def test_broken_responses_are_transient(case, fault):
    case.enqueue(fault=fault)

    with pytest.raises(TransientProviderError) as caught:
        case.complete(_ask())

    # What went wrong, for a person: never the name of a parser's exception.
    assert "AssertionError" not in str(caught.value) and "JSONDecodeError" not in str(caught.value)


@pytest.mark.parametrize("name", ["openai", "ollama"])
def test_an_error_in_a_200s_body_is_transient_in_the_servers_words(name, llm_server, tmp_path):
    # Every view said only "could not be read (not the API's JSON, or cut off)".
    case = Case(name, llm_server, tmp_path)
    case.enqueue(fault="error_in_200", error="model runner has unexpectedly stopped")

    with pytest.raises(TransientProviderError) as caught:
        case.complete(_ask())

    assert "answered with an error instead of an answer" in str(caught.value)
    assert "model runner has unexpectedly stopped" in str(caught.value)


def test_an_error_in_a_200s_body_that_names_its_status_is_that_status():
    # A gateway (OpenRouter) answers a rejected key with a 200 whose error says 401: retried
    # four times as transient, where a 401 stops the provider's tasks.
    from aca_flows.providers.failures import error_in_answer

    said = error_in_answer("openai", '{"error": {"code": 401, "message": "No auth credentials"}}')

    assert isinstance(said, KeyRejected) and "No auth credentials" in str(said)


def test_a_server_slower_than_the_timeout_is_transient(case):
    case.enqueue(text="too late", delay=1.0)

    with pytest.raises(TransientProviderError, match="timed out"):
        case.complete(_ask(), timeout_seconds=0.2)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_rejections_are_permanent(case, status):
    case.enqueue(status=status, error="rejected by the fake")

    with pytest.raises(PermanentProviderError) as caught:
        case.complete(_ask())

    assert caught.value.status_code == status
    assert "rejected by the fake" in str(caught.value)
    # A refused key: a run starts no more tasks of the provider (test_run_ends.py).
    assert isinstance(caught.value, KeyRejected) == (status in (401, 403) and case.name != "replay")


def test_one_call_is_one_request_because_sdk_retries_are_off(case):
    case.enqueue(status=500)

    with pytest.raises(TransientProviderError):
        case.complete(_ask())

    assert len(case.queue.requests) == 1


def test_an_empty_answer_is_a_transient_error_not_a_result(case):
    case.enqueue(text="", usage={"input_tokens": 50, "output_tokens": 0})

    with pytest.raises(TransientProviderError, match="empty answer"):
        case.complete(_ask())


_CUT_OFF = {
    "anthropic": "max_tokens",
    "replay": "max_tokens",
    "openai": "length",
    "ollama": "length",
}


def test_an_answer_cut_off_before_it_did_anything_is_permanent(case):
    case.enqueue(text="Let me think about", stop_reason=_CUT_OFF[case.name])

    with pytest.raises(PermanentProviderError, match="max_tokens") as caught:
        case.complete(_ask())

    wire = "anthropic" if case.name == "replay" else case.name
    assert f"Raise [providers.{wire}] max_tokens" in str(caught.value)
    # Earlier turns of the task may have changed files: only this answer did nothing.
    assert "before it called any tool" in str(caught.value)


def test_a_cut_off_answer_that_calls_a_tool_is_still_an_answer(case):
    case.enqueue(
        tool_calls=[{"name": "read_file", "arguments": {"path": "README.md"}}],
        stop_reason=_CUT_OFF[case.name],
    )

    response = case.complete(_ask())

    assert [c.name for c in response.tool_calls] == ["read_file"]


@pytest.mark.parametrize(
    ("name", "stop_reason"),
    [("anthropic", "refusal"), ("replay", "refusal"), ("openai", "content_filter")],
)
def test_a_refusal_is_a_permanent_error(name, stop_reason, llm_server, tmp_path):
    case = Case(name, llm_server, tmp_path)
    case.enqueue(text="I can't help with that.", stop_reason=stop_reason)

    with pytest.raises(PermanentProviderError, match="refused the request") as caught:
        case.complete(_ask())

    assert "I can't help with that." in str(caught.value)
