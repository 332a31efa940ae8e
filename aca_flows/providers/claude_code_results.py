"""What a Claude Code run says back: its stream messages as aca's provider events, and its
result message as an answer or a classified error (``result_error``), never as work.

Error results without an HTTP status are told apart by what Claude Code says: a login, a
rejected key, spent credit, a refusal, output cut off are permanent; a dropped connection is
transient; anything else is transient too, its message quoting Claude Code.
"""

from __future__ import annotations

from typing import Any

from aca_flows._words import counted, quoted_clause
from aca_flows.errors import PermanentProviderError, ProviderError, TransientProviderError
from aca_flows.providers.base import ProviderEvent, Usage
from aca_flows.providers.failures import error_for_status

__all__ = ["LOGIN_FIX", "events_of", "model_usage", "result_error"]

NAME = "claude-code"

LOGIN_FIX = (
    "log Claude Code in with `claude auth login` (or create a token with `claude setup-token` "
    "and set CLAUDE_CODE_OAUTH_TOKEN), or set ANTHROPIC_API_KEY"
)
# Error results without an HTTP status are told apart by what Claude Code says.
_LOGIN_MARKERS = ("not logged in", "/login", "please log in", "oauth token has expired")
_REFUSAL_MARKERS = (
    "/legal/aup",  # every refusal message links the usage policy
    "safeguards flagged",
    "usage policy",
    "can't help with",
    "can't respond",
)
_OUTPUT_LIMIT_MARKERS = ("output token maximum", "max_output_tokens")
_CONNECTION_MARKERS = (
    "connection",
    "econn",
    "etimedout",
    "timed out",
    "timeout",
    "socket",
    "network",
    "overloaded",
    "rate limit",
)
_SPEND_MARKERS = ("credit balance", "spend limit", "billing", "usage limit")
# What each kind of error result tells the user, first match wins: (markers, error, message).
_BY_MESSAGE = (
    (
        _LOGIN_MARKERS,
        PermanentProviderError,
        "Claude Code is not logged in{said}. To fix it, "
        + LOGIN_FIX
        + "; `aca providers list` then shows it ready.",
    ),
    (
        ("api key",),
        PermanentProviderError,
        "the API key was rejected{said}. Check ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL), or "
        "unset it to use Claude Code's login.",
    ),
    (
        _SPEND_MARKERS,
        PermanentProviderError,
        "the account's credit or usage limit is exhausted{said}. Add credit or wait for the "
        "limit to reset, then resume the session.",
    ),
    (
        _REFUSAL_MARKERS,
        PermanentProviderError,
        "the model refused the request{said}. Rephrase the task, or choose another model with "
        "--model.",
    ),
    (
        _OUTPUT_LIMIT_MARKERS,
        PermanentProviderError,
        "the answer was cut off at the output token limit{said}. Split the task, or raise "
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS.",
    ),
    (
        _CONNECTION_MARKERS,
        TransientProviderError,
        "the connection to the API failed{said}. Retry later; if it persists check "
        "ANTHROPIC_BASE_URL and the network.",
    ),
)


def result_error(result: Any, text: str, tools_used: int = 0) -> ProviderError | None:
    """The classified error of a Claude Code result message, or ``None`` for a real answer.

    ``text`` is the run's final answer; ``tools_used`` how many tool calls the run made (an
    empty answer after work is an answer, an empty answer after nothing is not)."""
    name = NAME
    detail = (text or "; ".join(getattr(result, "errors", None) or [])).strip()
    said = f": {quoted}" if (quoted := quoted_clause(detail)) else ""
    lowered = detail.lower()
    status = getattr(result, "api_error_status", None)
    subtype = getattr(result, "subtype", "")
    if result.is_error and isinstance(status, int) and status >= 400:
        return error_for_status(name, status, detail, key_hint="ANTHROPIC_API_KEY")
    if subtype == "error_max_budget_usd":
        return PermanentProviderError(
            f"claude-code: the run reached its budget (max_budget_usd) after "
            f"{counted(result.num_turns, 'turn')}. Raise [claude_code] max_budget_usd_per_task or "
            "split the task.",
            provider=name,
        )
    if subtype == "error_max_turns":
        return PermanentProviderError(
            "claude-code: the run stopped at its turn limit after "
            f"{counted(result.num_turns, 'turn')}, before it finished. Raise [claude_code] "
            "max_turns, or split the task.",
            provider=name,
        )
    if result.is_error and subtype == "error_during_execution":
        return TransientProviderError(
            f"claude-code: the run failed{said or ': no detail'}.", provider=name
        )
    if not result.is_error:
        if detail or tools_used:
            return None
        return TransientProviderError(
            "claude-code: Claude Code returned an empty answer and did nothing. Retry later; "
            "if it keeps happening, choose another model with --model.",
            provider=name,
        )
    for markers, error, message in _BY_MESSAGE:
        if any(marker in lowered for marker in markers):
            return error(f"claude-code: {message.format(said=said)}", provider=name)
    # An error nothing above recognises (a crash, an unknown API failure): say what it was,
    # not a guess. A retry may get past it, and the retries are bounded.
    return TransientProviderError(
        f"claude-code: the run ended in an error{said or ': no detail'}. Retry later; if it "
        "persists run `aca providers check claude-code`.",
        provider=name,
    )


def model_usage(raw: Any) -> Usage:
    """One entry of a result's ``model_usage`` (camelCase counts) as ``Usage``."""
    raw = raw if isinstance(raw, dict) else {}
    return Usage(
        input_tokens=raw.get("inputTokens") or 0,
        output_tokens=raw.get("outputTokens") or 0,
        cache_read_tokens=raw.get("cacheReadInputTokens") or 0,
        cache_write_tokens=raw.get("cacheCreationInputTokens") or 0,
    )


def events_of(message: Any) -> list[ProviderEvent]:
    """One SDK stream message as our events (plain data, safe to log as JSON)."""
    kind = type(message).__name__
    events: list[ProviderEvent] = []
    if kind == "SystemMessage":
        data = message.data or {}
        events.append(
            ProviderEvent(
                kind="system",
                data={
                    "subtype": message.subtype,
                    "session_id": data.get("session_id"),
                    "model": data.get("model"),
                },
            )
        )
    elif kind in ("AssistantMessage", "UserMessage"):
        content = message.content if isinstance(message.content, list) else []
        if isinstance(message.content, str) and kind == "AssistantMessage":
            events.append(ProviderEvent(kind="assistant_text", data={"text": message.content}))
        for block in content:
            block_kind = type(block).__name__
            if block_kind == "TextBlock" and kind == "AssistantMessage":
                events.append(ProviderEvent(kind="assistant_text", data={"text": block.text}))
            elif block_kind == "ToolUseBlock":
                events.append(
                    ProviderEvent(
                        kind="tool_use",
                        data={"id": block.id, "name": block.name, "input": block.input},
                    )
                )
            elif block_kind == "ToolResultBlock":
                events.append(
                    ProviderEvent(
                        kind="tool_result",
                        data={
                            "tool_use_id": block.tool_use_id,
                            "content": block.content,
                            "is_error": bool(block.is_error),
                        },
                    )
                )
    elif kind == "ResultMessage":
        events.append(
            ProviderEvent(
                kind="result",
                data={
                    "subtype": message.subtype,
                    "is_error": message.is_error,
                    "num_turns": message.num_turns,
                    "session_id": message.session_id,
                    "total_cost_usd": message.total_cost_usd,
                    "usage": message.usage,
                    "duration_ms": message.duration_ms,
                },
            )
        )
    return events
