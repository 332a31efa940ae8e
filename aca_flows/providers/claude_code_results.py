"""What a Claude Code run says back: its stream messages as aca's provider events, and its
result message as an answer or a classified error (``result_error``), never as work.

Error results without an HTTP status are told apart by what Claude Code says: a login, a
rejected key, spent credit, a refusal, output cut off are permanent; a dropped connection is
transient; anything else is transient too, its message quoting Claude Code.
"""

from __future__ import annotations

import http
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aca_flows._words import counted, quoted_clause
from aca_flows.errors import (
    CreditExhausted,
    EmptyAnswerError,
    KeyRejected,
    PermanentProviderError,
    ProviderCannotServe,
    ProviderError,
    TransientProviderError,
)
from aca_flows.providers.base import Message, ProviderEvent, ProviderRequest, Usage
from aca_flows.providers.failures import error_for_status
from aca_flows.providers.pricing import cost_usd, price_for
from aca_flows.session.redact import redact_text
from aca_flows.settings import ModelPrice

__all__ = [
    "CONTINUE_AFTER_ERROR",
    "LOGIN_FIX",
    "login_fix",
    "OutsideRefusals",
    "SessionSpend",
    "StreamedSpend",
    "claude_rates",
    "continued",
    "events_of",
    "model_usage",
    "priced_as_claude",
    "refused_outside",
    "result_error",
    "session_of",
]

NAME = "claude-code"


def login_fix(claude: str = "claude") -> str:
    """How to give Claude Code a login, ``claude`` being the command that runs it."""
    return (
        f"log Claude Code in with `{claude} auth login` (or create a token with `{claude} "
        "setup-token` and set CLAUDE_CODE_OAUTH_TOKEN), or set ANTHROPIC_API_KEY"
    )


LOGIN_FIX = login_fix()
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
SPEND_FIX = "add credit to the account, or wait for its usage limit to reset"
# What each kind of error result tells the user, first match wins: (markers, error, message).
_BY_MESSAGE = (
    (
        _LOGIN_MARKERS,
        partial(KeyRejected, fix=LOGIN_FIX),
        "Claude Code is not logged in{said}. To fix it, "
        + LOGIN_FIX
        + "; `aca providers list` then shows it ready.",
    ),
    (
        ("api key", "x-api-key", "authentication_error"),
        partial(
            KeyRejected, fix="set a valid ANTHROPIC_API_KEY, or unset it to use Claude Code's login"
        ),
        "the API key was rejected{said}. Check ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL), or "
        "unset it to use Claude Code's login.",
    ),
    (
        _SPEND_MARKERS,
        # As a 402 is (``error_for_status``): the run starts no more claude-code tasks.
        partial(CreditExhausted, fix=SPEND_FIX),
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


# Claude Code's own words for a failed call ("API Error: 529 ..."), or a gateway's error passed
# on as a 200's text ("Error: rate limited", "Error 502: ..."); not "Error handling added".
_API_ERROR = re.compile(r"\s*(?:API Error\b|Error(?:\s+[45]\d\d)?\s*:)", re.IGNORECASE)
# A gateway's own error page passed on as the answer: its HTML (nginx's, a CDN's), titled by
# its status, or its status line alone, as HTTP words it ("502 Bad Gateway"; not "401 files
# changed", a real answer).
_GATEWAY_PAGE = re.compile(
    r"\s*(?:<!doctype html|<html)\b.*?<title>[^<]*?\b([45]\d\d)\b[^<]*</title>",
    re.IGNORECASE | re.DOTALL,
)
_STATUS_LINES = {
    f"{status.value} {status.phrase}".lower().replace("-", " "): status.value
    for status in http.HTTPStatus
    if status.value >= 400
} | {"504 gateway time out": 504}
_API_STATUS = re.compile(r"\b([45]\d\d)\b")
# The status an error names in words only ("Error: rate limited"): waited out as its status is.
_STATUS_WORDS = (("rate limit", 429), ("rate-limit", 429), ("too many requests", 429))
_STATUS_WORDS += (("overloaded", 529),)

# A rate limit's wait when Claude Code says 429 but not how long: Anthropic's limits are per
# minute, and Claude Code's own retries (unless CLAUDE_CODE_MAX_RETRIES=0) came first.
RATE_LIMIT_WAIT_SECONDS = 30.0


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
    # A final answer that is an error (``_API_ERROR``): no answer, and the work before it
    # unfinished, never to be committed.
    page = _GATEWAY_PAGE.match(detail)
    line = _STATUS_LINES.get(detail.rstrip(".").lower().replace("-", " "))
    api_error = bool(_API_ERROR.match(detail) or page or line)
    is_error = result.is_error or api_error
    first_line = detail.split("\n")[0]
    if (page or line) and status is None:
        status = int(page.group(1)) if page else line
    if api_error and status is None and (found := _API_STATUS.search(first_line)):
        status = int(found.group(1))
    if is_error and status is None:
        status = next((code for words, code in _STATUS_WORDS if words in first_line.lower()), None)
    if is_error and isinstance(status, int) and status >= 400:
        error = error_for_status(name, status, detail, key_hint="ANTHROPIC_API_KEY")
        if status == 429 and isinstance(error, TransientProviderError):
            # Claude Code passes no retry-after on: a rate limit is waited out, not tried
            # again at once (the call's retry waits this, the limiter holds other calls back).
            error.retry_after = RATE_LIMIT_WAIT_SECONDS  # the retry's own line says the wait
        return error
    if subtype == "error_max_budget_usd":
        return PermanentProviderError(
            f"claude-code: the run reached its budget (max_budget_usd) after "
            f"{counted(result.num_turns, 'turn')}. Raise [claude_code] max_budget_usd_per_task or "
            "split the task.",
            provider=name,
        )
    if subtype == "error_max_turns":
        # Not Claude Code's num_turns: it counts one turn more than the requests it made.
        return PermanentProviderError(
            "claude-code: the run stopped at its turn limit ([claude_code] max_turns) before "
            "it finished. Raise [claude_code] max_turns, or split the task.",
            provider=name,
        )
    if is_error and subtype == "error_during_execution":
        return TransientProviderError(
            f"claude-code: the run failed{said or ': no detail'}.", provider=name
        )
    if not is_error:
        if detail or tools_used:
            return None
        return EmptyAnswerError(
            "claude-code: Claude Code returned an empty answer and did nothing. Retry later; "
            "if it keeps happening, choose another model with --model.",
            provider=name,
        )
    for markers, error, message in _BY_MESSAGE:
        if any(marker in lowered for marker in markers):
            found = error(f"claude-code: {message.format(said=said)}", provider=name)
            if isinstance(found, ProviderCannotServe):
                found.detail = redact_text(detail)[:300]  # the run's stop quotes it
            return found
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


@dataclass
class SessionSpend:
    """What a Claude session has spent so far, as its last result message said.

    Claude Code keeps a session's spend with the session: a resumed run starts from the spend
    its session had when it last ended in order, and its result's ``total_cost_usd`` and
    ``model_usage`` are summed over the whole session (only its ``usage`` is the run's own).
    A run's own spend is therefore its result's figures minus its session's spend before it
    (``since``): exact, and Claude Code's own cost (its prices, per model, side calls
    included), not a price guessed by aca.
    """

    cost_usd: float = 0.0
    by_model: dict[str, Usage] = field(default_factory=dict)

    @classmethod
    def of(cls, result: Any) -> SessionSpend:
        models = result.model_usage if isinstance(result.model_usage, Mapping) else {}
        return cls(
            cost_usd=result.total_cost_usd or 0.0,
            by_model={name: model_usage(raw) for name, raw in models.items()},
        )

    @property
    def usage(self) -> Usage:
        return sum(self.by_model.values(), Usage())

    def plus(self, other: SessionSpend) -> SessionSpend:
        names = {**self.by_model, **other.by_model}
        nothing = Usage()
        return SessionSpend(
            cost_usd=self.cost_usd + other.cost_usd,
            by_model={
                name: self.by_model.get(name, nothing) + other.by_model.get(name, nothing)
                for name in names
            },
        )

    def since(self, before: SessionSpend) -> SessionSpend:
        """The spend added after ``before``."""
        nothing = Usage()
        return SessionSpend(
            cost_usd=max(self.cost_usd - before.cost_usd, 0.0),
            by_model={
                name: usage.since(before.by_model.get(name, nothing))
                for name, usage in self.by_model.items()
            },
        )


# Anthropic prices a model's tokens in (about) the same proportions to its input tokens:
# output 5x, cache reads 0.1x, cache writes (5 minutes) 1.25x. Only for an estimate: the turns
# of a model aca has no price for, which no result of Claude Code priced (``claude_rates``).
_TOKEN_WEIGHTS = (1.0, 5.0, 0.1, 1.25)


def _weighted(usage: Usage) -> float:
    counts = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
    )
    return sum(count * weight for count, weight in zip(counts, _TOKEN_WEIGHTS, strict=True))


def claude_rates(result: Any) -> dict[str, float]:
    """What Claude Code charged per input token (or its equivalent, ``_TOKEN_WEIGHTS``) for
    each model of a result: an estimate of its price of a model aca's table does not know, for
    turns no result priced (a killed run's). Better than $0 on the bill and against a budget;
    exact for input and output tokens in Anthropic's usual 1:5 proportion."""
    models = result.model_usage if isinstance(result.model_usage, Mapping) else {}
    rates = {}
    for name, raw in models.items():
        cost = raw.get("costUSD") if isinstance(raw, Mapping) else None
        weighted = _weighted(model_usage(raw))
        if isinstance(cost, (int, float)) and cost > 0 and weighted > 0:
            rates[name] = cost / weighted
    return rates


def priced_as_claude(
    model: str, usage: Usage, prices: Mapping[str, ModelPrice], rates: Mapping[str, float]
) -> float | None:
    """What ``usage`` of ``model`` cost, for tokens Claude Code gave no cost of their own (a
    killed run's turns, a resumed session's run whose result sums the whole session): at a
    configured price, else at Claude Code's own for the model (``rates``, see
    ``claude_rates``), else at aca's list price, else at the dearest rate Claude Code charged
    for any model (``model`` may be an alias, ``sonnet``, that its figures name otherwise):
    paid turns never count $0 against a budget. ``None`` when none of them prices it."""
    if price_for(model, prices, include_defaults=False) is None and model in rates:
        return _weighted(usage) * rates[model]
    if price_for(model, prices) is not None:
        return cost_usd(model, usage, prices)
    if rates:
        return _weighted(usage) * max(rates.values())
    return None


_USAGE_FIELDS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_input_tokens": "cache_read_tokens",
    "cache_creation_input_tokens": "cache_write_tokens",
}


class StreamedSpend:
    """What a run's model turns used, as its stream said while it ran: the bill of a run that
    ends without a result message (its claude process killed, a Ctrl-C), whose turns were
    paid for all the same. A run that ends with a result is billed by the result instead.

    Each model turn counts once, by its message id, with the largest count seen of each kind:
    Claude Code streams one assistant message per content block, all with the turn's usage as
    the API started it (output tokens 1); the API's own stream events (partial messages)
    carry the turn's final output count when it ended (``message_delta``).
    """

    def __init__(self) -> None:
        self.turns: dict[str, tuple[str, dict[str, int]]] = {}
        self._streaming: dict[Any, str] = {}  # the message each stream is in (main, subagents)

    def heard(self, message: Any) -> bool:
        """Count ``message``; whether it ended a turn (its final output count came)."""
        kind = type(message).__name__
        if kind == "AssistantMessage":
            self._count(message.message_id, message.model, message.usage)
        elif kind == "StreamEvent":
            event = message.event if isinstance(message.event, Mapping) else {}
            stream = getattr(message, "parent_tool_use_id", None)
            if event.get("type") == "message_start":
                started = event.get("message") or {}
                if started.get("id"):
                    self._streaming[stream] = started["id"]
                    self._count(started["id"], started.get("model"), started.get("usage"))
            elif event.get("type") == "message_delta" and stream in self._streaming:
                self._count(self._streaming[stream], None, event.get("usage"))
                return True
        return False

    def _count(self, message_id: Any, model: Any, usage: Any) -> None:
        if not message_id or not isinstance(usage, Mapping):
            return
        known_model, counts = self.turns.get(message_id, ("", {}))
        for key in _USAGE_FIELDS:
            value = usage.get(key)
            if isinstance(value, int):
                counts[key] = max(counts.get(key, 0), value)
        self.turns[message_id] = (known_model or (model if isinstance(model, str) else ""), counts)

    def usage(self) -> Usage:
        return sum((self._usage(counts) for _, counts in self.turns.values()), Usage())

    def spend(
        self,
        default_model: str,
        prices: Mapping[str, ModelPrice],
        rates: Mapping[str, float] | None = None,
    ) -> SessionSpend:
        """The turns as a session's spend, by model, priced as ``priced_as_claude`` says; a
        model nothing prices (no result of Claude Code seen yet) costs $0."""
        spent = SessionSpend()
        for named, counts in self.turns.values():
            model = named or default_model
            usage = self._usage(counts)
            cost = priced_as_claude(model, usage, prices, rates or {}) or 0.0
            spent = spent.plus(SessionSpend(cost, {model: usage}))
        return spent

    @staticmethod
    def _usage(counts: dict[str, int]) -> Usage:
        return Usage(**{ours: counts.get(theirs, 0) for theirs, ours in _USAGE_FIELDS.items()})


_RETRY_FIELDS = ("attempt", "max_retries", "retry_delay_ms", "error_status", "error")


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
                    # Claude Code's own retry of an API call: which, how long, and why.
                    **{k: data[k] for k in _RETRY_FIELDS if data.get(k) is not None},
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


# How Claude Code answers a tool call naming a path outside its working directories (claude
# 2.1.332): a read is blocked (``blockReadsOutsideWorkingDirectories``), a command that may
# read one "requires approval", a write is not granted. Unattended, each is refused, not run.
OUTSIDE_MARKERS = ("blockReadsOutsideWorkingDirectories", "requires approval", "haven't granted")


# How a Bash command fails when Claude Code's sandbox (bubblewrap) could not set itself up:
# a path it listed to mount was gone by then (a lock file another claude process made and
# removed in the repository's .git). The command never ran; the agent did nothing wrong.
SANDBOX_FAILURE_MARKERS = ("bwrap: Can't find source path", "bwrap: Can't get type of source")
SANDBOX_FAILURE_MARKERS += ("bwrap: Can't create file",)


def refused_outside(count: int, sandbox_failed: int = 0) -> str:
    """What ``count`` tool calls Claude Code refused outside the worktree, and
    ``sandbox_failed`` commands its sandbox could not start, tell a reader."""
    said = []
    if count:
        said.append(
            f"Claude Code refused {counted(count, 'command')} reaching outside the worktree "
            "(see docs/security.md)."
        )
    if sandbox_failed:
        said.append(
            f"Claude Code's sandbox failed to start {counted(sandbox_failed, 'command')} (bwrap: "
            "a path it mounts went missing, as claude processes of parallel tasks change the "
            "repository's .git); the task may pass when run again."
        )
    return " ".join(said)


class OutsideRefusals:
    """Passes a run's events on to ``on_event`` and counts its tool calls Claude Code refused
    for reaching outside the worktree: each is a paid turn the task learns nothing from."""

    def __init__(self, on_event: Callable[[ProviderEvent], None] | None) -> None:
        self.on_event = on_event
        self.count = 0
        self.sandbox_failed = 0

    def heard(self, event: ProviderEvent) -> None:
        if event.kind == "tool_result" and event.data.get("is_error"):
            content = str(event.data.get("content"))
            self.count += any(marker in content for marker in OUTSIDE_MARKERS)
            self.sandbox_failed += any(marker in content for marker in SANDBOX_FAILURE_MARKERS)
        if self.on_event is not None:
            self.on_event(event)

    def said(self) -> str:
        return refused_outside(self.count, self.sandbox_failed)

    def report(self) -> None:
        """One event saying how many, after the run, if any was refused or failed."""
        if (self.count or self.sandbox_failed) and self.on_event is not None:
            data = {"subtype": "refused_outside_worktree", "refused": self.count}
            data["sandbox_failed"] = self.sandbox_failed
            self.on_event(ProviderEvent(kind="system", data={**data, "text": self.said()}))


# The turn a call's retry resumes a failed run's session with: its work is in the worktree.
CONTINUE_AFTER_ERROR = (
    "Your run was cut off before you finished, by an error that was not yours. Go on with the "
    "task from where you stopped: what you changed so far is still in the working folder."
)


def session_of(message: Any) -> str | None:
    """The Claude session a stream message belongs to (the first, ``init``, names it)."""
    data = getattr(message, "data", None)
    said = data.get("session_id") if isinstance(data, dict) else None
    return getattr(message, "session_id", None) or said


def continued(error: Exception, request: ProviderRequest, session: str | None) -> Exception:
    """``error``, whose retry goes on with the failed run's Claude session: a new run would
    take over work it did not do, in a worktree it did not change (and commit it on its own
    word), and pay every turn of it again. ``session``: as the run's own stream named it; a
    run that failed before it started (its prompt unread: a fix attempt's "the check
    failed") is sent again as it was. Not for a one-shot call, whose session is not kept."""
    if (
        isinstance(error, TransientProviderError)
        and session
        and request.options.get("resumable", True)
    ):
        error.retry_request = request.model_copy(
            update={
                "messages": [*request.messages, Message(role="user", text=CONTINUE_AFTER_ERROR)],
                "options": {**request.options, "resume": session},
            }
        )
    return error
