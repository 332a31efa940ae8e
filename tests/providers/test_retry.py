"""Call-level retries against the fake server: a transient error costs one more call, no more."""

from __future__ import annotations

import random

import pytest

from aca_flows.errors import PermanentProviderError, TransientProviderError
from aca_flows.providers import get_provider
from aca_flows.providers.base import Message, ProviderRequest
from aca_flows.providers.retry import RetryingProvider, retry_wait_seconds
from aca_flows.settings import AcaConfig, ProviderSection
from tests.providers.conftest import run


def conversation() -> ProviderRequest:
    return ProviderRequest(
        messages=[
            Message(role="user", text="first"),
            Message(role="assistant", text="answer"),
            Message(role="user", text="second"),
        ]
    )


def retrying(**options) -> tuple[RetryingProvider, list[tuple[float, str, int]]]:
    config = AcaConfig(providers={"anthropic": ProviderSection(model="claude-sonnet-4-6")})
    waits: list[tuple[float, str, int]] = []

    async def sleep(seconds: float) -> None:  # the wait is reported; the test need not wait it
        pass

    provider = RetryingProvider(
        get_provider("anthropic", config),
        on_wait=lambda seconds, error, n, _retries: waits.append((seconds, str(error), n)),
        sleep=sleep,
        rng=random.Random(7),
        **options,
    )
    return provider, waits


def test_a_529_is_retried_on_the_same_call_with_the_whole_conversation(llm_server):
    llm_server.anthropic.enqueue(status=529, retry_after=3, error="Overloaded")
    llm_server.anthropic.enqueue(text="done", usage={"input_tokens": 40, "output_tokens": 4})
    provider, waits = retrying()

    response = run(provider.complete(conversation()))

    assert response.text == "done" and response.usage.input_tokens == 40
    first, second = llm_server.anthropic.requests
    assert first.json["messages"] == second.json["messages"]
    assert len(second.json["messages"]) == 3
    # The server's retry-after is what was waited, and the wait was reported.
    assert [(seconds, n) for seconds, _, n in waits] == [(3.0, 1)]
    assert "529" in waits[0][1]


def test_retries_are_bounded_and_the_last_error_propagates(llm_server):
    for _ in range(5):
        llm_server.anthropic.enqueue(status=500, error="boom")
    provider, waits = retrying(retries=2, backoff_seconds=1, max_wait_seconds=60)

    with pytest.raises(TransientProviderError, match="500"):
        run(provider.complete(conversation()))

    assert len(llm_server.anthropic.requests) == 3  # the call and two retries
    assert [n for _, _, n in waits] == [1, 2]
    # No retry-after: jittered exponential backoff within 1 s, then 2 s.
    assert 0 <= waits[0][0] <= 1 and 0 <= waits[1][0] <= 2


def test_an_empty_answer_is_retried_twice_then_fails_the_call_for_good(llm_server):
    # Each empty answer is paid: two retries, not call_retries, then an error no new attempt
    # of the task follows (it would send its first request again).
    for _ in range(5):
        llm_server.anthropic.enqueue(text="", usage={"input_tokens": 50, "output_tokens": 0})
    provider, waits = retrying(retries=4)

    with pytest.raises(PermanentProviderError) as caught:
        run(provider.complete(conversation()))

    assert len(llm_server.anthropic.requests) == 3 and [n for _, _, n in waits] == [1, 2]
    assert str(caught.value).startswith(
        "anthropic: the model answered 3 time(s) in a row with nothing (HTTP 200, no text and "
        "no tool call; each call billed)."
    )
    assert caught.value.billed.usage.input_tokens == 50


def test_empty_answers_are_counted_in_a_row_among_other_retries(llm_server):
    empty = {"text": "", "usage": {"input_tokens": 50, "output_tokens": 0}}
    llm_server.anthropic.enqueue(status=529, error="Overloaded")
    llm_server.anthropic.enqueue(status=529, error="Overloaded")
    for _ in range(3):
        llm_server.anthropic.enqueue(**empty)
    provider, waits = retrying(retries=6)

    with pytest.raises(PermanentProviderError, match="answered 3 time"):
        run(provider.complete(conversation()))

    assert len(llm_server.anthropic.requests) == 5
    # The 529s' retries 1 and 2 of 6, then the empty answers' 1 and 2 of 2.
    assert [n for _, _, n in waits] == [1, 2, 1, 2]


def test_an_empty_answers_retry_is_announced_out_of_what_the_call_has_left(llm_server):
    """Two 529s used two of the call's three retries: the empty answer after them gets the
    one left, and the log says "retry 1 of 1", not "1 of 2" for a second that never comes."""
    llm_server.anthropic.enqueue(status=529, error="Overloaded")
    llm_server.anthropic.enqueue(status=529, error="Overloaded")
    for _ in range(2):
        llm_server.anthropic.enqueue(text="", usage={"input_tokens": 50, "output_tokens": 0})
    provider, _ = retrying(retries=3)
    announced: list[tuple[int, int]] = []
    provider.on_wait = lambda seconds, error, n, retries: announced.append((n, retries))

    with pytest.raises(PermanentProviderError, match="answered 2 time"):
        run(provider.complete(conversation()))

    assert len(llm_server.anthropic.requests) == 4
    assert announced == [(1, 3), (2, 3), (1, 1)]


def test_a_permanent_error_is_not_retried(llm_server):
    llm_server.anthropic.enqueue(status=400, error="bad request")
    provider, waits = retrying()

    with pytest.raises(PermanentProviderError):
        run(provider.complete(conversation()))

    assert len(llm_server.anthropic.requests) == 1 and waits == []


def test_a_dropped_connection_is_retried(llm_server):
    llm_server.anthropic.enqueue(fault="drop")
    llm_server.anthropic.enqueue(text="back")
    provider, waits = retrying()

    assert run(provider.complete(conversation())).text == "back"
    assert len(llm_server.anthropic.requests) == 2 and len(waits) == 1


def test_waits_are_capped():
    error = TransientProviderError("overloaded", retry_after=3600)
    assert retry_wait_seconds(error, 1, backoff_seconds=2, max_wait_seconds=90) == 90
    plain = TransientProviderError("overloaded")
    rng = random.Random(1)
    waits = [
        retry_wait_seconds(plain, n, backoff_seconds=2, max_wait_seconds=5, rng=rng)
        for n in range(1, 50)
    ]
    assert max(waits) <= 5 and min(waits) >= 0
    assert len(set(waits)) > 1  # jitter: not all the same


def test_no_retry_starts_once_the_run_is_stopping(llm_server):
    # A Ctrl-C reaches the provider's process too (Claude Code's): the call it failed is not
    # retried, which would start a new paid call after the user asked to stop.
    for _ in range(3):
        llm_server.anthropic.enqueue(status=500, error="boom")
    stop = {"now": True}
    provider, waits = retrying(retries=2, stopping=lambda: stop["now"])

    with pytest.raises(TransientProviderError, match="500"):
        run(provider.complete(conversation()))

    assert len(llm_server.anthropic.requests) == 1 and waits == []

    # A stop during the wait ends it, and no retry follows.
    stop["now"] = False
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        stop["now"] = True  # the Ctrl-C comes while the retry waits

    provider.sleep = sleep
    with pytest.raises(TransientProviderError, match="500"):
        run(provider.complete(conversation()))

    assert len(llm_server.anthropic.requests) == 2 and len(slept) == 1
