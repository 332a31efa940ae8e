"""The ``ollama`` provider: Ollama's ``/api/chat`` with ``stream: false``, through httpx.

What a caller may rely on:
- the server is ``OLLAMA_HOST`` (``host``, ``host:port`` or a URL; default
  ``http://127.0.0.1:11434``) unless ``[providers.ollama] base_url`` is set; no key is needed;
- tool call arguments arrive as JSON objects; Ollama gives tool calls no ids, so they get
  stable ones (``ollama_call_<n>``) and results are sent back with the tool's name;
- usage is ``prompt_eval_count`` (input) and ``eval_count`` (output); cost is 0 unless a price
  is configured;
- ``response_schema`` is sent as Ollama's ``format``;
- every failure is a Transient/PermanentProviderError (a missing model is permanent, with the
  ``ollama pull`` to run), and so is an empty answer or one cut off (``length``) before any
  tool call.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aca_flows.errors import PermanentProviderError
from aca_flows.providers.base import (
    UNPARSED_ARGUMENTS,
    EventCallback,
    Message,
    ProviderRequest,
    ProviderResponse,
    ToolCall,
    Usage,
)
from aca_flows.providers.failures import (
    answer_error,
    error_for_status,
    error_from_exception,
    error_in_answer,
)
from aca_flows.providers.openai_api import function_tools
from aca_flows.providers.pricing import cost_usd
from aca_flows.settings import ModelPrice, ProviderSection

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MODEL",
    "host_of",
    "runs_here",
    "OllamaProvider",
    "normalize_host",
    "to_ollama_messages",
]

DEFAULT_MODEL = "llama3.1"
DEFAULT_HOST = "http://127.0.0.1:11434"
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def normalize_host(value: str | None) -> str:
    """``OLLAMA_HOST`` as a base URL: a scheme and port are added when missing."""
    if not value:
        return DEFAULT_HOST
    bare = "://" not in value
    if bare:
        value = f"http://{value}"
    scheme, rest = value.split("://", 1)
    hostport = rest.split("/", 1)[0]
    if bare and ":" not in hostport.rsplit("]", 1)[-1]:  # Ollama's own default port
        rest = rest.replace(hostport, f"{hostport}:11434", 1)
    if hostport.startswith("0.0.0.0"):  # a bind address, not one to connect to
        rest = rest.replace("0.0.0.0", "127.0.0.1", 1)
    return f"{scheme}://{rest}".rstrip("/")


def host_of(section: ProviderSection, environ: Mapping[str, str] | None = None) -> str:
    """The server a provider built from ``section`` calls: ``base_url``, else ``OLLAMA_HOST``."""
    env = os.environ if environ is None else environ
    return normalize_host(section.base_url or env.get("OLLAMA_HOST"))


def runs_here(host: str) -> bool:
    """Whether the Ollama server at ``host`` (a URL, ``normalize_host``'s) is on this machine:
    a loopback address, ``localhost`` or a unix socket. Elsewhere it may bill its calls (a
    hosted Ollama), which aca cannot know without a configured price."""
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https"):
        return True  # http+unix:// and the like: a socket, on this machine
    name = (parts.hostname or "").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name: some other machine's


def to_ollama_messages(system: str, messages: list[Message]) -> list[dict[str, Any]]:
    """Our turns as Ollama chat messages; tool results name their tool, as Ollama expects."""
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        for result in message.tool_results:
            out.append(
                {
                    "role": "tool",
                    "content": result.content,
                    "tool_name": names.get(result.tool_call_id, ""),
                }
            )
        if message.role == "assistant":
            turn: dict[str, Any] = {"role": "assistant", "content": message.text}
            if message.tool_calls:
                turn["tool_calls"] = [
                    {"function": {"name": c.name, "arguments": c.arguments}}
                    for c in message.tool_calls
                ]
            out.append(turn)
        elif message.text or not message.tool_results:
            out.append({"role": "user", "content": message.text})
    return out


class OllamaProvider:
    """A local (or remote) Ollama server."""

    name = "ollama"

    def __init__(
        self,
        *,
        host: str | None = None,
        model: str = DEFAULT_MODEL,
        max_tokens: int = 8192,
        timeout_seconds: float = 600,
        prices: Mapping[str, ModelPrice] | None = None,
    ):
        self.host = normalize_host(host)
        self.model = model
        self.max_tokens = max_tokens
        self.timeout_seconds = timeout_seconds
        self.prices = dict(prices or {})

    @classmethod
    def from_config(
        cls, section: ProviderSection, environ: Mapping[str, str] | None = None
    ) -> OllamaProvider:
        env = os.environ if environ is None else environ
        return cls(
            host=host_of(section, env),
            model=section.model or DEFAULT_MODEL,
            max_tokens=section.max_tokens,
            timeout_seconds=section.timeout_seconds,
            prices=section.prices,
        )

    def build_body(self, request: ProviderRequest) -> dict[str, Any]:
        """The ``/api/chat`` body for ``request``."""
        body: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": to_ollama_messages(request.system, request.messages),
            "stream": False,
            "options": {"num_predict": request.max_tokens or self.max_tokens},
        }
        if request.tools:
            body["tools"] = function_tools(request.tools)
        if request.response_schema is not None:
            body["format"] = request.response_schema
        return body

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        import httpx

        body = self.build_body(request)
        try:
            async with httpx.AsyncClient(base_url=self.host, timeout=self.timeout_seconds) as http:
                reply = await http.post("/api/chat", json=body)
        except Exception as exc:
            raise error_from_exception(self.name, exc) from None
        if reply.status_code >= 400:
            raise self._status_error(reply.status_code, reply.text, body["model"], reply.headers)
        try:
            data = reply.json()
        except ValueError as exc:
            raise error_in_answer(self.name, reply.text) or error_from_exception(
                self.name, exc
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise error_in_answer(self.name, reply.text) or error_from_exception(
                self.name, ValueError("no message in the response")
            )
        message = data["message"]
        calls = [
            ToolCall(
                id=f"ollama_call_{index}",
                name=str(function.get("name") or ""),
                arguments=_arguments(function.get("arguments")),
            )
            for index, call in enumerate(message.get("tool_calls") or [])
            if isinstance(call, dict)
            # {"function": {"name", "arguments"}}, or (some compatible servers) flat
            for function in [call["function"] if isinstance(call.get("function"), dict) else call]
        ]
        usage = Usage(
            input_tokens=data.get("prompt_eval_count") or 0,
            output_tokens=data.get("eval_count") or 0,
        )
        model = data.get("model") or body["model"]
        stop = "tool_use" if calls else _STOP_REASONS.get(data.get("done_reason"), "end_turn")
        response = ProviderResponse(
            text=str(message.get("content") or ""),
            tool_calls=calls,
            stop_reason=stop,
            usage=usage,
            cost_usd=cost_usd(model, usage, self.prices, asked=body["model"]),
            model=model,
            provider=self.name,
        )
        error = answer_error(response, max_tokens=body["options"]["num_predict"])
        if error is not None:
            raise error
        return response

    def _status_error(self, status: int, text: str, model: str, headers: Any):
        if status == 404 and "not found" in text.lower():
            return PermanentProviderError(
                f"ollama: model '{model}' is not on the server at {self.host}. "
                f"Run `ollama pull {model}` there, or set [providers.ollama] model.",
                provider=self.name,
                status_code=status,
                body=text[:2000],
            )
        return error_for_status(self.name, status, text, headers)


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:  # some Ollama-compatible servers send arguments as a JSON string
        parsed = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {UNPARSED_ARGUMENTS: raw}
    return parsed if isinstance(parsed, dict) else {UNPARSED_ARGUMENTS: raw}
