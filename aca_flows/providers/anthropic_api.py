"""The ``anthropic`` provider: the Messages API with tool use, through the official SDK.

What a caller may rely on:
- the key comes from ``ANTHROPIC_API_KEY`` and the endpoint from ``ANTHROPIC_BASE_URL`` (or
  ``[providers.anthropic] base_url``); a missing key fails before any network call;
- the system prompt and the tool definitions carry ``cache_control`` breakpoints, so the shared
  prefix of a tool loop is billed as cache reads from the second call on;
- the response is streamed (long outputs never hit the SDK's non-streaming limit) and returned
  whole; a stream cut off part-way is a ``TransientProviderError`` that carries, as
  ``billed``, the usage the stream reported before it broke (the call was paid for), and so
  does the ``CancelledError`` of a call cancelled mid-stream;
- ``response_schema`` is honoured by forcing a ``respond`` tool whose input is the answer; the
  response's ``text`` is then that JSON;
- SDK retries are off; every failure is a Transient/PermanentProviderError, and so is an answer
  that holds nothing: a refusal, an empty answer, ``max_tokens`` or the context window
  reached before any tool call.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aca_flows.errors import PermanentProviderError, TransientProviderError
from aca_flows.providers.base import (
    UNPARSED_ARGUMENTS,
    EventCallback,
    Message,
    ProviderRequest,
    ProviderResponse,
    ToolCall,
    Usage,
)
from aca_flows.providers.failures import answer_error, error_from_exception, rate_limit_headers
from aca_flows.providers.pricing import cost_usd
from aca_flows.providers.sdk_client import SdkProvider

__all__ = ["DEFAULT_MODEL", "AnthropicProvider", "to_anthropic_messages"]

DEFAULT_MODEL = "claude-sonnet-4-6"
_KEY = "ANTHROPIC_API_KEY"
_RESPOND_TOOL = "respond"
_CACHE = {"type": "ephemeral"}
# The stop reason of an answer the context window cut off (the API's, since late 2025).
_CONTEXT_FULL = "model_context_window_exceeded"
_STOP_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
    "pause_turn": "end_turn",
}


def to_anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Our turns as Messages API turns: tool results lead a user turn, tool calls end an
    assistant turn."""
    out: list[dict[str, Any]] = []
    for message in messages:
        blocks: list[dict[str, Any]] = []
        for result in message.tool_results:
            blocks.append(
                {
                    "type": "tool_result",
                    "tool_use_id": result.tool_call_id,
                    "content": result.content,
                    "is_error": result.is_error,
                }
            )
        if message.text:
            blocks.append({"type": "text", "text": message.text})
        for call in message.tool_calls:
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            )
        out.append({"role": message.role, "content": blocks})
    return out


class AnthropicProvider(SdkProvider):
    """Anthropic Messages API. Build with ``from_config`` or directly with keyword arguments."""

    name = "anthropic"
    default_model = DEFAULT_MODEL
    key_variable = _KEY
    base_url_variable = "ANTHROPIC_BASE_URL"
    key_help = "https://console.anthropic.com/settings/keys"

    def new_client(self):
        import anthropic  # lazy: importing the SDK costs seconds

        return anthropic.AsyncAnthropic(
            api_key=self.api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=self.timeout_seconds,
        )

    def build_params(self, request: ProviderRequest) -> dict[str, Any]:
        """The Messages API parameters for ``request`` (without ``stream``)."""
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": request.max_tokens or self.max_tokens,
            "messages": to_anthropic_messages(request.messages),
        }
        if request.system:
            params["system"] = [{"type": "text", "text": request.system, "cache_control": _CACHE}]
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in request.tools
        ]
        if request.response_schema is not None:
            tools.append(
                {
                    "name": _RESPOND_TOOL,
                    "description": "Give the final answer in the required structure.",
                    "input_schema": request.response_schema,
                }
            )
            params["tool_choice"] = {"type": "tool", "name": _RESPOND_TOOL}
        if tools:
            # A breakpoint on the last tool caches the system prompt and every tool before it.
            tools[-1] = dict(tools[-1], cache_control=_CACHE)
            params["tools"] = tools
        return params

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        client = self._client()
        params = self.build_params(request)
        stream = None
        try:
            async with client.messages.stream(**params) as stream:
                message = await stream.get_final_message()
                headers = rate_limit_headers(stream.response.headers)
        except asyncio.CancelledError as cancel:
            # A stop of the run mid-stream: what the stream reported goes on the bill
            # (``SpendGuard`` reads ``billed`` from the cancel).
            cancel.billed = self._streamed_bill(request, stream)
            raise
        except Exception as exc:
            error = error_from_exception(self.name, exc, key_hint=_KEY)
            error.billed = self._streamed_bill(request, stream)
            raise error from None
        if message.stop_reason is None:
            # The stream ended without message_delta/message_stop: the answer is incomplete.
            raise TransientProviderError(
                "anthropic: the response stream was cut off before the end. Retry later.",
                provider=self.name,
                billed=self._response(request, message, headers),
            )
        response = self._response(request, message, headers)
        if message.stop_reason == _CONTEXT_FULL and not response.tool_calls:
            # Cut off as by max_tokens: the answer is no more an end of the task than that.
            raise PermanentProviderError(
                "anthropic: the answer was cut off where the conversation filled the model's "
                "context window, before it called any tool. Split the task, or choose a model "
                "with a larger context window (--model).",
                provider=self.name,
                billed=response,
            )
        error = answer_error(response, max_tokens=params["max_tokens"])
        if error is not None:
            raise error
        return response

    def _streamed_bill(self, request: ProviderRequest, stream: Any) -> ProviderResponse | None:
        """What a stream that broke part-way was paid for: once its ``message_start`` came,
        the server bills the input, and the output it sent; ``None`` before that."""
        try:
            snapshot = stream.current_message_snapshot if stream is not None else None
        except AssertionError:  # the SDK's way of saying no message_start came
            return None
        return self._response(request, snapshot, {}) if snapshot is not None else None

    def _response(
        self, request: ProviderRequest, message: Any, headers: dict[str, str]
    ) -> ProviderResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in message.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                if request.response_schema is not None and block.name == _RESPOND_TOOL:
                    texts.append(json.dumps(block.input))
                else:
                    arguments = block.input
                    if not isinstance(arguments, dict):  # told to the model, as a cut call is
                        arguments = {UNPARSED_ARGUMENTS: json.dumps(block.input)}
                    elif message.stop_reason == "max_tokens" and block is message.content[-1]:
                        # The limit fell inside this call: the SDK parsed what came of its
                        # input, so a file write would run cut short. It is refused instead.
                        arguments = {UNPARSED_ARGUMENTS: json.dumps(block.input)}
                    calls.append(ToolCall(id=block.id, name=block.name, arguments=arguments))
        usage = Usage(
            input_tokens=message.usage.input_tokens or 0,
            output_tokens=message.usage.output_tokens or 0,
            cache_read_tokens=getattr(message.usage, "cache_read_input_tokens", None) or 0,
            cache_write_tokens=getattr(message.usage, "cache_creation_input_tokens", None) or 0,
        )
        stop = _STOP_REASONS.get(message.stop_reason or "", "end_turn")
        if request.response_schema is not None and stop == "tool_use" and not calls:
            stop = "end_turn"
        model = message.model or request.model or self.model
        return ProviderResponse(
            text="".join(texts),
            tool_calls=calls,
            stop_reason=stop,
            usage=usage,
            cost_usd=cost_usd(model, usage, self.prices, asked=request.model or self.model),
            model=model,
            provider=self.name,
            session_id=message.id,
            rate_limit_headers=headers,
        )
