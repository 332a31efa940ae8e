"""A real ``Provider`` that plays a script: a queue of responses and a history of requests.

Like simonw/llm's ``MockModel``: tests ``enqueue`` what the model will answer and read
``history`` for what aca sent. A queued item may be

- a ``ProviderResponse``, returned as is;
- a string, returned as a final answer with that text;
- an exception instance, raised (e.g. ``TransientProviderError``);
- a callable ``(request) -> any of the above`` (or an awaitable of it), for answers that
  depend on the request or act on the worktree, like Claude Code editing files in
  ``request.options["cwd"]``.

``name`` is the provider name aca sees: ``"claude-code"`` makes the agent treat each call as a
whole delegated run; anything else runs aca's own tool loop.
"""

from __future__ import annotations

import inspect
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from aca_flows.providers.base import (
    EventCallback,
    ProviderEvent,
    ProviderRequest,
    ProviderResponse,
    ToolCall,
    Usage,
)

__all__ = ["ScriptedProvider", "final", "tool_calls", "tool_use"]

_ids = itertools.count(1)


def tool_use(name: str, **arguments: Any) -> ToolCall:
    """One tool call with a fresh id."""
    return ToolCall(id=f"call_{next(_ids)}", name=name, arguments=arguments)


def tool_calls(*calls: ToolCall, text: str = "", cost_usd: float = 0.001) -> ProviderResponse:
    """An assistant turn asking for tools, with a small usage so accounting can be checked."""
    return ProviderResponse(
        text=text,
        tool_calls=list(calls),
        stop_reason="tool_use",
        usage=Usage(input_tokens=100, output_tokens=10),
        cost_usd=cost_usd,
        provider="scripted",
        model="scripted-model",
    )


def final(text: str, *, cost_usd: float = 0.001, session_id: str | None = None) -> ProviderResponse:
    """A final answer without tool calls."""
    return ProviderResponse(
        text=text,
        usage=Usage(input_tokens=100, output_tokens=10),
        cost_usd=cost_usd,
        provider="scripted",
        model="scripted-model",
        session_id=session_id,
    )


class ScriptedProvider:
    """A provider whose answers are queued by the test."""

    def __init__(self, *responses: Any, name: str = "scripted"):
        self.name = name
        self.queue: deque[Any] = deque(responses)
        self.history: list[ProviderRequest] = []
        self.events: list[ProviderEvent] = []

    def enqueue(self, *responses: Any) -> ScriptedProvider:
        self.queue.extend(responses)
        return self

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        self.history.append(request.model_copy(deep=True))
        if not self.queue:
            raise AssertionError(
                f"ScriptedProvider {self.name!r} has no response left for request "
                f"#{len(self.history)}; enqueue more"
            )
        item = self.queue.popleft()
        if callable(item) and not isinstance(item, ProviderResponse):
            item = _call(item, request)
            if inspect.isawaitable(item):
                item = await item
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, str):
            item = final(item)
        if on_event is not None:
            event = ProviderEvent(kind="result", data={"text": item.text[:200]})
            self.events.append(event)
            on_event(event)
        return item


def _call(function: Callable[..., Any], request: ProviderRequest) -> Any:
    return function(request)
