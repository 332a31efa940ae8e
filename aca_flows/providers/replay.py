"""Recording and replaying provider calls: the ``replay`` provider and the ``--record`` recorder.

A cassette is one JSON file::

    {"version": 1,
     "interactions": [
        {"provider": "anthropic",
         "request":  {...ProviderRequest...},
         "events":   [{...ProviderEvent...}, ...],
         "response": {...ProviderResponse...}}            # or, for a failed call:
        {"provider": "openai", "request": {...}, "events": [],
         "error": {"kind": "transient" | "permanent", "message": "...",
                   "status_code": 429, "retry_after": 7,
                   "retry_request": {...}}}      # what its retry sent, if not the same
     ]}

It holds our own request/response models, never HTTP traffic, so no key or auth header can
end up in it; a recorder given a ``scrub`` function (the flow passes the session's redactor)
writes every interaction through it, and a player given the same function compares requests
after scrubbing them, so a recorded run still replays. ``RecordingProvider`` wraps any
provider and rewrites the cassette atomically after every call, so a crash loses at most the
call in flight.

``ReplayProvider`` answers each request with the first unused interaction whose request
matches; concurrent tasks may therefore arrive in any order and still replay
deterministically. Requests are compared without the options that differ from run to run
(``cwd``, ``resume``: paths and session ids). A request with no match is a
``PermanentProviderError`` showing the first difference from the closest recorded request.
Replay reproduces answers, not side effects: files Claude Code wrote while recording are not
rewritten; record with an API provider (anthropic, openai, ollama) for a fully offline replay.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aca_flows._files import write_json_atomic
from aca_flows._words import counted
from aca_flows.errors import PermanentProviderError, ProviderError, TransientProviderError
from aca_flows.providers.base import (
    EventCallback,
    Provider,
    ProviderEvent,
    ProviderRequest,
    ProviderResponse,
)

__all__ = [
    "CASSETTE_VERSION",
    "VOLATILE_OPTIONS",
    "RecordingProvider",
    "ReplayProvider",
    "cassette_problem",
    "first_difference",
    "load_cassette",
]

CASSETTE_VERSION = 1
# Options that name this run's paths or sessions: never part of a request's identity.
VOLATILE_OPTIONS = frozenset({"cwd", "resume", "env"})

Scrub = Callable[[Any], Any]
"""Returns a JSON value with what must not be written removed (the session's ``redact``)."""


def _unchanged(value: Any) -> Any:
    return value


def _comparable(request: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in request.get("options", {}).items() if k not in VOLATILE_OPTIONS}
    return dict(request, options=options)


def first_difference(expected: Any, actual: Any, path: str = "request") -> str | None:
    """Where two JSON values first differ, as ``path: recorded X, got Y``; None if equal."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            if key not in actual:
                return f"{path}.{key}: recorded {_show(expected[key])}, got nothing"
            if key not in expected:
                return f"{path}.{key}: recorded nothing, got {_show(actual[key])}"
            found = first_difference(expected[key], actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for index, (left, right) in enumerate(zip(expected, actual, strict=False)):
            found = first_difference(left, right, f"{path}[{index}]")
            if found:
                return found
        if len(expected) != len(actual):
            return f"{path}: recorded {counted(len(expected), 'item')}, got {len(actual)}"
        return None
    if expected != actual:
        return f"{path}: recorded {_show(expected)}, got {_show(actual)}"
    return None


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "..."


# The fixes a cassette's problems name.
RECORD_ONE = (
    "record one with --record FILE on a run with a real provider, or fix [providers.replay] "
    "cassette"
)
RECORD_AGAIN = "record it again with --record FILE"


def cassette_problem(path: Path) -> tuple[list[dict[str, Any]], str, str]:
    """A cassette's interactions, or (with none) what is wrong with the file and the fix."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [], f"the cassette {path} does not exist", RECORD_ONE
    except (OSError, ValueError) as exc:
        return [], f"the cassette {path} cannot be read ({exc})", RECORD_AGAIN
    interactions = data.get("interactions", []) if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("version") != CASSETTE_VERSION
        or not isinstance(interactions, list)
        # Each recorded request is compared from the start (``ReplayProvider``).
        or not all(isinstance(i, dict) and isinstance(i.get("request"), dict) for i in interactions)
    ):
        return [], f"{path} is not a version-{CASSETTE_VERSION} cassette", RECORD_AGAIN
    return interactions, "", ""


def load_cassette(path: Path) -> list[dict[str, Any]]:
    """The interactions of a cassette file; a missing or broken file is a permanent error."""
    interactions, problem, fix = cassette_problem(path)
    if problem:
        raise PermanentProviderError(
            f"replay: {problem}. {fix[0].upper()}{fix[1:]}.", provider="replay"
        )
    return interactions


class ReplayProvider:
    """Plays a cassette back. Each recorded interaction answers one request."""

    name = "replay"

    def __init__(self, cassette: Path, scrub: Scrub | None = None):
        self.cassette = Path(cassette)
        self.scrub = scrub or _unchanged
        self._interactions = load_cassette(self.cassette)
        # What each recorded request is compared as, worked out once, not at every call.
        self._requests = [_comparable(i["request"]) for i in self._interactions]
        self._used = [False] * len(self._interactions)
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int:
        """Recorded interactions not played yet."""
        return self._used.count(False)

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        wanted = _comparable(self.scrub(request.model_dump(mode="json")))
        with self._lock:
            index = self._match(wanted)
            self._used[index] = True
        interaction = self._interactions[index]
        if on_event is not None:
            for event in interaction.get("events", []):
                on_event(ProviderEvent.model_validate(event))
        if "error" in interaction:
            raise _error_from_record(interaction["error"], request)
        return ProviderResponse.model_validate(interaction["response"])

    def _match(self, wanted: dict[str, Any]) -> int:
        unused = [i for i, used in enumerate(self._used) if not used]
        # A replay given no model plays the model as recorded (`aca providers list` says so):
        # a run recorded with --model replays without it.
        any_model = wanted.get("model") is None
        for index in unused:
            # Equal JSON values are what first_difference finds no difference in; == says it
            # in C. first_difference walks the request in Python, only to name a difference.
            recorded = self._requests[index]
            if recorded == wanted or (
                any_model and recorded == {**wanted, "model": recorded.get("model")}
            ):
                return index
        if not self._interactions:
            reason = "the cassette is empty"
        elif not unused:
            reason = f"all {len(self._interactions)} recorded calls were already played"
        else:
            closest = self._requests[unused[0]]
            reason = f"first difference from recorded call #{unused[0] + 1}: " + str(
                first_difference(closest, wanted)
            )
        raise PermanentProviderError(
            f"replay: this request is not in cassette {self.cassette} ({reason}). The run "
            "differs from the recorded one; record the cassette again with --record.",
            provider=self.name,
        )


def _error_from_record(record: dict[str, Any], request: ProviderRequest) -> ProviderError:
    common = {"provider": "replay", "status_code": record.get("status_code")}
    if record.get("kind") == "transient":
        error = TransientProviderError(
            record["message"], retry_after=record.get("retry_after"), **common
        )
        if retry := record.get("retry_request"):
            # With this run's own options (its worktree): the session resumed is the one kept.
            resume = (retry.get("options") or {}).get("resume")
            options = {**request.options, "resume": resume}
            error.retry_request = ProviderRequest.model_validate({**retry, "options": options})
        return error
    return PermanentProviderError(record["message"], **common)


class _CassetteWriter:
    """The interactions going into one cassette file, shared by every recorder writing it."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.interactions: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.interactions.append(record)
            write_json_atomic(
                self.path, {"version": CASSETTE_VERSION, "interactions": self.interactions}
            )


# Several providers of one run (a task may name its own provider) record into one file; the
# writer lives as long as a recorder uses it, so the next run starts a fresh cassette.
_WRITERS: weakref.WeakValueDictionary[Path, _CassetteWriter] = weakref.WeakValueDictionary()
_WRITERS_LOCK = threading.Lock()


def _writer_for(path: Path) -> _CassetteWriter:
    key = Path(path).resolve()
    with _WRITERS_LOCK:
        writer = _WRITERS.get(key)
        if writer is None:
            writer = _WRITERS[key] = _CassetteWriter(key)
        return writer


class RecordingProvider:
    """Wraps a provider and records every call (answer or error) into a cassette file.

    The wrapped provider's behaviour is unchanged: its answers are returned and its errors
    re-raised. ``name`` is the wrapped provider's name. A run's first recorder starts the file
    afresh; recorders of the same run on the same file add to one cassette. The ``env`` option
    (variables for the Claude Code process) is never recorded.
    """

    def __init__(self, inner: Provider, cassette: Path, scrub: Scrub | None = None):
        self.inner = inner
        self.name = inner.name
        self.cassette = Path(cassette)
        self.scrub = scrub or _unchanged
        self._writer = _writer_for(self.cassette)

    async def complete(
        self, request: ProviderRequest, on_event: EventCallback | None = None
    ) -> ProviderResponse:
        events: list[dict[str, Any]] = []

        def capture(event: ProviderEvent) -> None:
            events.append(event.model_dump(mode="json"))
            if on_event is not None:
                on_event(event)

        recorded = request.model_dump(mode="json")
        recorded["options"].pop("env", None)
        record: dict[str, Any] = {
            "provider": self.inner.name,
            "request": recorded,
            "events": events,
        }
        try:
            response = await self.inner.complete(request, capture)
        except ProviderError as exc:
            record["error"] = {
                "kind": "transient" if isinstance(exc, TransientProviderError) else "permanent",
                "message": str(exc),
                "status_code": exc.status_code,
                "retry_after": getattr(exc, "retry_after", None),
            }
            if (retry := getattr(exc, "retry_request", None)) is not None:
                # What the call's retry sent (a Claude Code run resumed): replayed, it sends so.
                retry_request = retry.model_dump(mode="json")
                retry_request["options"].pop("env", None)
                record["error"]["retry_request"] = retry_request
            self._writer.append(self.scrub(record))
            raise
        record["response"] = response.model_dump(mode="json")
        self._writer.append(self.scrub(record))
        return response
