"""The one interface every LLM provider implements.

A provider turns a ``ProviderRequest`` into a ``ProviderResponse`` with one async method,
``complete``. It raises only ``TransientProviderError`` or ``PermanentProviderError``
(from ``aca_flows.errors``); no SDK exception escapes. Providers know nothing of tasks,
sessions or Prefect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aca_flows._files import readable, readable_data

__all__ = [
    "UNPARSED_ARGUMENTS",
    "EventCallback",
    "Message",
    "Provider",
    "ProviderEvent",
    "ProviderRequest",
    "ProviderResponse",
    "ToolCall",
    "ToolDefinition",
    "ToolResult",
    "Usage",
]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolDefinition(WireModel):
    name: str
    description: str
    input_schema: dict[str, Any]


# A tool call's arguments that were not a JSON object, as a wire format had them: the tools
# tell the model so rather than run the call with none.
UNPARSED_ARGUMENTS = "_unparsed_arguments"


class ToolCall(WireModel):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arguments")
    @classmethod
    def _storable_arguments(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        # JSON allows a lone surrogate ("\ud83d", half an emoji): kept, it failed the paid
        # call's task where its conversation was saved.
        return readable_data(arguments)


class ToolResult(WireModel):
    tool_call_id: str
    content: str
    is_error: bool = False


class Message(WireModel):
    """One conversation turn. An assistant turn may carry tool calls; the user turn after it
    carries their results."""

    role: Literal["user", "assistant"]
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_results: list[ToolResult] = Field(default_factory=list)


class Usage(WireModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )

    def since(self, before: Usage) -> Usage:
        """What was used after ``before`` (never below nothing)."""
        return Usage(
            input_tokens=max(self.input_tokens - before.input_tokens, 0),
            output_tokens=max(self.output_tokens - before.output_tokens, 0),
            cache_read_tokens=max(self.cache_read_tokens - before.cache_read_tokens, 0),
            cache_write_tokens=max(self.cache_write_tokens - before.cache_write_tokens, 0),
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


class ProviderRequest(WireModel):
    system: str = ""
    messages: list[Message]
    tools: list[ToolDefinition] = Field(default_factory=list)
    model: str | None = None
    max_tokens: int | None = None
    response_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema the answer must follow (structured output)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Provider-specific options, e.g. claude-code's cwd, resume, max_budget_usd.",
    )


StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal", "error"]


class ProviderResponse(WireModel):
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    stop_reason: StopReason = "end_turn"
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    model: str = ""
    provider: str = ""
    session_id: str | None = None
    rate_limit_headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("text")
    @classmethod
    def _storable_text(cls, text: str) -> str:
        return readable(text)  # as a tool call's arguments


class ProviderEvent(WireModel):
    """A live event from a provider (Claude Code's stream messages): for logs and displays;
    ``spend`` (``data``: ``model``, ``usage``, ``cost_usd``) is what a call in flight has cost
    so far, for the ledger (``flows.spend.SpendGuard``), never shown."""

    kind: Literal[
        "assistant_text", "tool_use", "tool_result", "result", "system", "stderr", "spend"
    ]
    data: dict[str, Any] = Field(default_factory=dict)


EventCallback = Callable[[ProviderEvent], None]


@runtime_checkable
class Provider(Protocol):
    name: str

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse: ...
