"""The ``openai`` provider: Chat Completions with tool calls, through the official SDK.

What a caller may rely on:
- the key comes from ``OPENAI_API_KEY`` and the endpoint from ``OPENAI_BASE_URL`` (or
  ``[providers.openai] base_url``), so any OpenAI-compatible server works; a missing key
  fails before any network call;
- tool call arguments arrive as JSON strings and are returned parsed; arguments that are not
  valid JSON are returned as ``{"_unparsed_arguments": "<the string>"}`` so the caller can
  tell the model;
- usage splits OpenAI's ``prompt_tokens`` into fresh input and cached reads;
- ``response_schema`` is sent as a strict ``json_schema`` response format;
- SDK retries are off; every failure is a Transient/PermanentProviderError, and so is an answer
  that holds nothing: a refusal (``content_filter``, or the message's ``refusal``), an empty
  answer, ``max_tokens`` reached before any tool call.
"""

from __future__ import annotations

import json
from typing import Any

from aca_flows.providers.base import (
    UNPARSED_ARGUMENTS,
    EventCallback,
    Message,
    ProviderRequest,
    ProviderResponse,
    ToolCall,
    ToolDefinition,
    Usage,
)
from aca_flows.providers.failures import (
    answer_error,
    error_from_exception,
    error_in_answer,
    rate_limit_headers,
)
from aca_flows.providers.pricing import cost_usd
from aca_flows.providers.sdk_client import SdkProvider

__all__ = ["DEFAULT_MODEL", "OpenAIProvider", "to_openai_messages"]

DEFAULT_MODEL = "gpt-5.1"
_KEY = "OPENAI_API_KEY"
_FINISH_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


def to_openai_messages(system: str, messages: list[Message]) -> list[dict[str, Any]]:
    """Our turns as Chat Completions messages: each tool result is its own ``tool`` message."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        for result in message.tool_results:
            out.append(
                {"role": "tool", "tool_call_id": result.tool_call_id, "content": result.content}
            )
        if message.role == "assistant":
            turn: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            if message.tool_calls:
                turn["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                    for call in message.tool_calls
                ]
            out.append(turn)
        elif message.text or not message.tool_results:
            out.append({"role": "user", "content": message.text})
    return out


def _text_of(content: Any) -> str:
    """An answer's text: a string, or (some compatible servers) a list of parts."""
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content or "")


def _parse_arguments(raw: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or "{}")
    except ValueError:
        return {UNPARSED_ARGUMENTS: raw}
    return parsed if isinstance(parsed, dict) else {UNPARSED_ARGUMENTS: raw}


def function_tools(tools: list[ToolDefinition]) -> list[dict[str, Any]]:
    """Tool definitions in the ``{"type": "function", ...}`` shape OpenAI and Ollama share."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.input_schema,
            },
        }
        for t in tools
    ]


class OpenAIProvider(SdkProvider):
    """OpenAI Chat Completions (or any compatible server)."""

    name = "openai"
    default_model = DEFAULT_MODEL
    key_variable = _KEY
    base_url_variable = "OPENAI_BASE_URL"
    key_help = (
        "https://platform.openai.com/api-keys; for a local OpenAI-compatible server set "
        "OPENAI_BASE_URL and any non-empty key"
    )

    def new_client(self):
        import openai  # lazy: importing the SDK costs seconds

        return openai.AsyncOpenAI(
            api_key=self.api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=self.timeout_seconds,
        )

    def build_params(self, request: ProviderRequest) -> dict[str, Any]:
        """The Chat Completions parameters for ``request``."""
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": to_openai_messages(request.system, request.messages),
        }
        limit = request.max_tokens or self.max_tokens
        # api.openai.com's newer models only take max_completion_tokens; compatible servers
        # (vLLM, llama.cpp, LM Studio) mostly only know max_tokens.
        if self.base_url is None or "api.openai.com" in self.base_url:
            params["max_completion_tokens"] = limit
        else:
            params["max_tokens"] = limit
        if request.tools:
            params["tools"] = function_tools(request.tools)
        if request.response_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": request.response_schema},
            }
        return params

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        client = self._client()
        params = self.build_params(request)
        try:
            raw = await client.chat.completions.with_raw_response.create(**params)
            completion = raw.parse()
            headers = rate_limit_headers(raw.headers)
        except Exception as exc:
            raise error_from_exception(self.name, exc, key_hint=_KEY) from None
        if not getattr(completion, "choices", None):
            raise error_in_answer(self.name, raw.http_response.text) or error_from_exception(
                self.name, ValueError("no choices in the response")
            )
        choice = completion.choices[0]
        # Compatible servers send calls without ids, or names: the model hears of the call it
        # made (an unknown tool), the paid answer is billed, not an internal error.
        calls = [
            ToolCall(
                id=call.id or f"call_{index}",
                name=call.function.name or "",
                arguments=_parse_arguments(call.function.arguments),
            )
            for index, call in enumerate(choice.message.tool_calls or [])
            if getattr(call, "function", None) is not None
        ]
        usage = _usage(completion.usage)
        model = completion.model or params["model"]
        refusal = getattr(choice.message, "refusal", None)
        stop = _FINISH_REASONS.get(choice.finish_reason or "", "end_turn")
        response = ProviderResponse(
            text=refusal or _text_of(choice.message.content),
            tool_calls=calls,
            stop_reason="refusal" if refusal else stop,
            usage=usage,
            cost_usd=cost_usd(model, usage, self.prices, asked=params["model"]),
            model=model,
            provider=self.name,
            session_id=completion.id,
            rate_limit_headers=headers,
        )
        error = answer_error(response, max_tokens=request.max_tokens or self.max_tokens)
        if error is not None:
            raise error
        return response


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    details = getattr(raw, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
    prompt = raw.prompt_tokens or 0
    return Usage(
        input_tokens=max(0, prompt - cached),
        output_tokens=raw.completion_tokens or 0,
        cache_read_tokens=cached,
    )
