"""Turning every way a provider call can fail into ``TransientProviderError`` or
``PermanentProviderError`` — the only two errors a provider raises.

Transient (worth retrying later): 408, 409, 429, 5xx, 529 overloaded, timeouts, dropped
connections, cut-off streams, unreadable responses, empty answers (``EmptyAnswerError``: paid,
so retried only a few times, see ``providers.retry``). Permanent (retrying cannot
help): 400 bad request, 401/403 auth (``KeyRejected``: a run starts no more tasks of that
provider), 404 unknown model, 413, 422, spend limits (``CreditExhausted``, which stops a
run's tasks of that provider too: 402, OpenAI's ``insufficient_quota`` 429, Anthropic's
"credit balance is too low" 400), refusals, and
answers cut off by ``max_tokens`` before they call any tool.

A provider error is never work: ``answer_error`` is applied to every successful response, so
an answer that holds nothing (empty, refused, cut off) never reaches the agent as a result.

Messages name the fix and never include a credential: only the server's own error message,
status and the variable to check are shown.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

from aca_flows._words import quoted_clause
from aca_flows.errors import (
    CreditExhausted,
    EmptyAnswerError,
    KeyRejected,
    ModelRefused,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from aca_flows.providers.base import ProviderResponse
from aca_flows.session.redact import redact, redact_text

__all__ = [
    "answer_error",
    "error_in_answer",
    "error_for_status",
    "error_from_exception",
    "rate_limit_headers",
    "retry_after_seconds",
    "server_message",
]

_SPEND_MARKERS = (
    "insufficient_quota",
    "exceeded your current quota",
    "credit balance is too low",
    "spend limit",
    "billing",
)
_BODY_LIMIT = 2_000


def retry_after_seconds(
    headers: Mapping[str, str] | None, now: float | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def rate_limit_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The response headers a rate limiter can learn from (Anthropic and OpenAI styles)."""
    keep = ("anthropic-ratelimit-", "x-ratelimit-", "retry-after")
    return {k.lower(): v for k, v in (headers or {}).items() if k.lower().startswith(keep)}


def server_message(body: str | None) -> str:
    """The human part of an error body in any of the three wire formats, redacted before it
    is cut short: a key the server echoed, cut, would no longer be found whole."""
    if not body:
        return ""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return redact_text(body.strip())[:300]
    message, error = data, data.get("error", data) if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or ""
    elif isinstance(error, str):
        message = error
    # Redacted as the text shown (JSON's escapes undone), before it is cut.
    return redact_text(str(message))[:300]


def error_in_answer(provider: str, body: str | None) -> ProviderError | None:
    """A 200 whose body is an error, not an answer (``{"error": ...}``, as a gateway or an
    Ollama whose model runner stopped sends it; in a stream, its last line), in the server's
    own words: by the status it names (``"code": 401``), else transient."""
    lines = (body or "").strip().splitlines()
    for candidate in dict.fromkeys([body or "", *lines[-1:]]):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("error"):
            code = data["error"].get("code") if isinstance(data["error"], dict) else None
            if isinstance(code, int) and 400 <= code < 600:  # a gateway's 401, 402, 429...
                return error_for_status(provider, code, candidate)
            said = quoted_clause(server_message(candidate))
            return TransientProviderError(
                f"{provider}: the server answered with an error instead of an answer: {said}. "
                "Retry later.",
                provider=provider,
            )
    return None


def _redacted_body(body: str) -> str:
    """``body`` without secrets: a JSON body redacted as its values read (``\"`` undone),
    written back as JSON."""
    try:
        return json.dumps(redact(json.loads(body)), ensure_ascii=False)
    except ValueError:
        return redact_text(body)


def error_for_status(
    provider: str,
    status: int,
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    key_hint: str = "",
) -> ProviderError:
    """The error for an HTTP error response. ``key_hint`` names the variable holding the key."""
    detail = server_message(body)
    body = _redacted_body(body)[:_BODY_LIMIT] if body else body  # redacted before it is cut
    said = f": {quoted}" if (quoted := quoted_clause(detail)) else ""
    common = {"provider": provider, "status_code": status, "body": body}
    lowered = (body or "").lower()
    if any(marker in lowered for marker in _SPEND_MARKERS) or status == 402:
        return CreditExhausted(
            f"{provider}: the account's spend limit or credit is exhausted ({status}){said}. "
            "Add credit or raise the limit with the provider, then resume the session.",
            fix="add credit to the account, or raise its spend limit, with the provider",
            detail=detail,
            **common,
        )
    if status == 403 and "model" in detail.lower():
        # "Your organization does not have access to this model": the key works, the model
        # is not the account's. No task with it can run, as with a rejected key.
        return ModelRefused(
            f"{provider}: the account may not use this model ({status}){said}. Ask for access "
            "to it, or run the tasks with a model the account may use (--model).",
            fix="ask for access to the model, or run the tasks with one the account may use "
            "(--model)",
            detail=detail,
            **common,
        )
    if status in (401, 403):
        fix = f"check {key_hint}" if key_hint else "check the provider's credentials"
        return KeyRejected(
            f"{provider}: authentication failed ({status}){said}. The key was rejected; {fix}.",
            fix=f"set a valid {key_hint}" if key_hint else fix,
            detail=detail,
            **common,
        )
    if status == 404:
        return PermanentProviderError(
            f"{provider}: not found ({status}){said}. Check the model name "
            f"([providers.{provider}] model, or --model) and the base URL.",
            **common,
        )
    if status in (408, 409, 429) or status >= 500:
        retry_after = retry_after_seconds(headers)
        wait = f" The server asked to wait {retry_after:g} s." if retry_after is not None else ""
        return TransientProviderError(
            f"{provider}: temporarily unavailable ({status}){said}.{wait}",
            retry_after=retry_after,
            **common,
        )
    return PermanentProviderError(
        f"{provider}: the request was rejected ({status}){said}. "
        "This is a bad request; retrying it unchanged will not help.",
        **common,
    )


def error_from_exception(provider: str, exc: BaseException, *, key_hint: str = "") -> ProviderError:
    """Map an exception from an SDK (anthropic, openai) or httpx to a provider error.

    SDK classes are recognised by shape, not imported, so this module stays cheap to import.
    """
    if isinstance(exc, ProviderError):
        return exc
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if isinstance(status, int) and status < 400 and response is not None:
        return _error_event(provider, exc, key_hint)
    if isinstance(status, int) and response is not None:
        try:
            body = response.text
        except Exception:  # a streamed response may be unread; the status still decides
            body = None
        return error_for_status(provider, status, body, response.headers, key_hint=key_hint)
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"APITimeoutError", "TimeoutException", "TimeoutError"}:
        return TransientProviderError(
            f"{provider}: the request timed out. Retry later, or raise "
            f"[providers.{provider}] timeout_seconds.",
            provider=provider,
        )
    if names & {"APIConnectionError", "TransportError", "ConnectionError", "OSError"}:
        return TransientProviderError(
            f"{provider}: the connection failed or was dropped ({type(exc).__name__}). "
            "Retry later; if it persists check the base URL and the network.",
            provider=provider,
        )
    if names & {
        "APIResponseValidationError",
        "JSONDecodeError",
        "ValueError",
        "DecodingError",
        "AssertionError",
    }:
        return TransientProviderError(
            # What was wrong, not the name of the parser's exception (an AssertionError read
            # as a bug of aca's).
            f"{provider}: the server sent a response that could not be read (not the API's "
            "JSON, or cut off). Retry later.",
            provider=provider,
        )
    return TransientProviderError(
        f"{provider}: the call failed unexpectedly ({type(exc).__name__}: {str(exc)[:200]}).",
        provider=provider,
    )


# The HTTP status each Anthropic error type stands for, for an error that came as a stream
# event after a 200 (the real API's overloaded_error mid-stream).
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _error_event(provider: str, exc: BaseException, key_hint: str) -> ProviderError:
    """The error of an ``error`` event in a stream that began with a 200: the event's type
    decides, as its HTTP status would have; an unknown type is the server's fault (500)."""
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    text = json.dumps(body) if isinstance(body, dict) else None
    return error_for_status(provider, _ERROR_TYPE_STATUS.get(kind, 500), text, key_hint=key_hint)


def answer_error(
    response: ProviderResponse, *, max_tokens: int | None = None
) -> ProviderError | None:
    """The error an answer is, though the call succeeded: a refusal, an answer cut off by
    ``max_tokens`` before any tool call, or an empty answer. ``None`` for a real answer."""
    provider = response.provider
    spent = {"provider": provider, "billed": response}  # paid for, though not work
    said = f": {quoted}" if (quoted := quoted_clause(response.text)) else ""
    if response.stop_reason == "refusal":
        return PermanentProviderError(
            f"{provider}: the model refused the request{said}. Rephrase the task, or choose "
            "another model with --model.",
            **spent,
        )
    if response.tool_calls:
        return None
    if response.stop_reason == "max_tokens":
        limit = f" ({max_tokens})" if max_tokens else ""
        return PermanentProviderError(
            # "Before it did anything" was false after earlier turns had changed files.
            f"{provider}: an answer was cut off at the max_tokens limit{limit} before it "
            f"called any tool. Raise [providers.{provider}] max_tokens, or split the task.",
            **spent,
        )
    if not response.text.strip():
        return EmptyAnswerError(
            f"{provider}: the model returned an empty answer (no text, no tool call). Retry "
            "later; if it keeps happening, choose another model with --model.",
            **spent,
        )
    return None
