"""Rate limits that wait, never crash — on a fake clock, so minutes pass in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from aca_flows.errors import TransientProviderError
from aca_flows.providers import get_provider, rate_limiter_for
from aca_flows.providers.base import Message, ProviderRequest, ProviderResponse, Usage
from aca_flows.providers.ratelimit import (
    RateLimitedProvider,
    RateLimiter,
    SharedLimits,
    UsageLimitReached,
    account_state_file,
    estimate_tokens,
)
from aca_flows.settings import AcaConfig, ProviderSection, RateLimitingSection, SessionSection
from tests.providers.conftest import FakeClock, run

REQUEST = ProviderRequest(messages=[Message(role="user", text="hello")])


def _limits(**overrides) -> RateLimitingSection:
    defaults = {
        "max_requests_per_minute": 10,
        "max_tokens_per_minute": 1_000_000,
        "burst_allowance": 0,
        "max_concurrent_requests": 100,
    }
    return RateLimitingSection(**(defaults | overrides))


class TimedProvider:
    """Answers after ``duration`` fake seconds and notes when each call started."""

    name = "timed"

    def __init__(self, clock: FakeClock, duration: float = 0.0, usage: Usage | None = None):
        self.clock = clock
        self.duration = duration
        self.usage = usage or Usage(input_tokens=10, output_tokens=5)
        self.started: list[float] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.failures: list[TransientProviderError] = []
        self.headers: list[dict[str, str]] = []

    async def complete(self, request, on_event=None):
        self.started.append(self.clock())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.duration:
                await self.clock.sleep(self.duration)
            if self.failures:
                raise self.failures.pop(0)
            headers = self.headers.pop(0) if self.headers else {}
            return ProviderResponse(text="ok", usage=self.usage, rate_limit_headers=headers)
        finally:
            self.in_flight -= 1


def _burst(provider, count: int):
    async def all_at_once():
        return await asyncio.gather(*(provider.complete(REQUEST) for _ in range(count)))

    return run(all_at_once())


def test_a_burst_of_30_under_10_per_minute_is_spread_out_not_failed(fake_clock):
    inner = TimedProvider(fake_clock)
    limited = RateLimitedProvider(
        inner, RateLimiter(_limits(), clock=fake_clock, sleep=fake_clock.sleep)
    )
    start = fake_clock()

    responses = _burst(limited, 30)

    assert [r.text for r in responses] == ["ok"] * 30
    offsets = sorted(t - start for t in inner.started)
    assert offsets[:10] == [0.0] * 10  # a full bucket goes at once
    gaps = [b - a for a, b in zip(offsets[9:], offsets[10:], strict=False)]
    assert gaps == pytest.approx([6.0] * 20)  # then one every 60/10 seconds
    assert offsets[-1] == pytest.approx(120.0)


def test_the_burst_allowance_lets_extra_requests_through_at_once(fake_clock):
    inner = TimedProvider(fake_clock)
    limiter = RateLimiter(_limits(burst_allowance=5), clock=fake_clock, sleep=fake_clock.sleep)

    _burst(RateLimitedProvider(inner, limiter), 20)

    offsets = sorted(t - inner.started[0] for t in inner.started)
    assert offsets.count(0.0) == 15
    assert offsets[-1] == pytest.approx(30.0)


def test_no_more_calls_run_at_once_than_the_concurrency_cap(fake_clock):
    inner = TimedProvider(fake_clock, duration=5.0)
    limiter = RateLimiter(
        _limits(max_requests_per_minute=1000, max_concurrent_requests=2),
        clock=fake_clock,
        sleep=fake_clock.sleep,
    )

    _burst(RateLimitedProvider(inner, limiter), 6)

    assert inner.most_in_flight == 2
    assert limiter.in_flight == 0


def test_the_tokens_per_minute_bucket_paces_large_requests(fake_clock):
    usage = Usage(input_tokens=3000, output_tokens=1000)
    inner = TimedProvider(fake_clock, usage=usage)
    limiter = RateLimiter(
        _limits(max_requests_per_minute=1000, max_tokens_per_minute=8000),
        clock=fake_clock,
        sleep=fake_clock.sleep,
    )
    limited = RateLimitedProvider(inner, limiter)

    # About 4000 tokens of prompt, so the estimate charged up front matches the usage.
    big = ProviderRequest(messages=[Message(role="user", text="x" * 16_000)])
    for _ in range(4):
        run(limited.complete(big))

    # 4000 tokens a call under 8000 a minute: two go at once, then one every 30 s.
    offsets = [t - inner.started[0] for t in inner.started]
    assert offsets[:2] == [0.0, 0.0]
    assert offsets[2] == pytest.approx(30.0, abs=0.1)
    assert offsets[3] == pytest.approx(60.0, abs=0.1)


def test_tokens_spent_over_a_long_run_are_not_charged_as_one_burst(fake_clock):
    # A 10-minute Claude Code run that used 200k tokens stayed under 40k a minute.
    usage = Usage(input_tokens=150_000, output_tokens=50_000)
    limits = _limits(max_tokens_per_minute=40_000)
    long_run = TimedProvider(fake_clock, duration=600, usage=usage)
    limited = RateLimitedProvider(
        long_run, RateLimiter(limits, clock=fake_clock, sleep=fake_clock.sleep)
    )
    run(limited.complete(REQUEST))
    run(limited.complete(REQUEST))
    assert long_run.started[1] - long_run.started[0] == pytest.approx(600, abs=1)

    # The same tokens in a 1-second call are a burst: the next call waits them out.
    burst = TimedProvider(fake_clock, duration=1, usage=usage)
    limited = RateLimitedProvider(
        burst, RateLimiter(limits, clock=fake_clock, sleep=fake_clock.sleep)
    )
    run(limited.complete(REQUEST))
    run(limited.complete(REQUEST))
    assert burst.started[1] - burst.started[0] > 4 * 60


def test_retry_after_holds_back_the_next_call(fake_clock):
    inner = TimedProvider(fake_clock)
    inner.failures.append(TransientProviderError("overloaded", retry_after=45, status_code=529))
    waits: list[tuple[float, str]] = []
    limiter = RateLimiter(
        _limits(),
        clock=fake_clock,
        sleep=fake_clock.sleep,
        on_wait=lambda s, why: waits.append((s, why)),
    )
    limited = RateLimitedProvider(inner, limiter)

    with pytest.raises(TransientProviderError):
        run(limited.complete(REQUEST))
    run(limited.complete(REQUEST))

    assert inner.started[1] - inner.started[0] == pytest.approx(45.0)
    assert waits == [(pytest.approx(45.0), "server retry-after")]


def test_anthropic_headers_saying_nothing_remains_wait_for_the_reset(fake_clock):
    inner = TimedProvider(fake_clock)
    reset = "2026-01-01T00:00:40Z"  # the fake clock starts at 2026-01-01T00:00:00Z
    inner.headers.append(
        {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": reset}
    )
    limited = RateLimitedProvider(
        inner, RateLimiter(_limits(), clock=fake_clock, sleep=fake_clock.sleep)
    )

    run(limited.complete(REQUEST))
    run(limited.complete(REQUEST))

    assert inner.started[1] - inner.started[0] == pytest.approx(40.0)


def test_openai_headers_lower_the_limits(fake_clock):
    inner = TimedProvider(fake_clock)
    inner.headers.append(
        {
            "x-ratelimit-limit-requests": "5",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "1m30s",
        }
    )
    limiter = RateLimiter(
        _limits(max_requests_per_minute=60), clock=fake_clock, sleep=fake_clock.sleep
    )
    limited = RateLimitedProvider(inner, limiter)

    run(limited.complete(REQUEST))
    run(limited.complete(REQUEST))

    assert limiter.requests.per_minute == 5
    assert inner.started[1] - inner.started[0] == pytest.approx(90.0)


def _tokens_header(limit: int) -> dict[str, str]:
    return {"x-ratelimit-limit-tokens": str(limit), "x-ratelimit-remaining-tokens": str(limit)}


def test_a_low_limit_header_then_a_high_one_raises_the_limit_back_up_to_the_config(fake_clock):
    inner = TimedProvider(fake_clock)
    inner.headers += [_tokens_header(30_000), _tokens_header(900_000), _tokens_header(50_000)]
    limiter = RateLimiter(
        _limits(max_tokens_per_minute=100_000), clock=fake_clock, sleep=fake_clock.sleep
    )
    limited = RateLimitedProvider(inner, limiter)

    run(limited.complete(REQUEST))
    assert limiter.tokens.per_minute == 30_000
    run(limited.complete(REQUEST))
    assert limiter.tokens.per_minute == 100_000  # the server says more: the config caps it
    run(limited.complete(REQUEST))
    assert limiter.tokens.per_minute == 50_000


def test_a_limit_from_headers_is_named_as_such_in_the_wait_line(fake_clock):
    notices: list[str] = []
    inner = TimedProvider(fake_clock)
    inner.headers.append(_tokens_header(30_000) | {"x-ratelimit-remaining-tokens": "0"})
    limiter = told_limiter(fake_clock, notices, max_tokens_per_minute=10_000_000)
    limited = RateLimitedProvider(inner, limiter)
    large = ProviderRequest(messages=[Message(role="user", text="x" * 80_000)])  # ~20k tokens

    run(limited.complete(REQUEST))
    run(limited.complete(large))

    assert "limit 30,000/min, from the server's rate-limit headers" in notices[0]


def test_a_spent_block_budget_waits_for_the_block_to_end(fake_clock):
    inner = TimedProvider(fake_clock, usage=Usage(input_tokens=800, output_tokens=200))
    limiter = RateLimiter(
        _limits(max_tokens_per_session=1000), clock=fake_clock, sleep=fake_clock.sleep
    )
    limited = RateLimitedProvider(inner, limiter)

    run(limited.complete(REQUEST))
    run(limited.complete(REQUEST))

    # The block started on the hour of the first call and lasts 5 hours.
    assert inner.started[1] - inner.started[0] == pytest.approx(5 * 3600)
    assert len(limiter.blocks.blocks) == 2


def test_a_spent_block_budget_stops_with_exit_3_when_configured_to(fake_clock):
    inner = TimedProvider(fake_clock, usage=Usage(input_tokens=800, output_tokens=200))
    limiter = RateLimiter(
        _limits(max_tokens_per_session=1000, on_session_limit="stop"),
        clock=fake_clock,
        sleep=fake_clock.sleep,
    )
    limited = RateLimitedProvider(inner, limiter)
    run(limited.complete(REQUEST))

    with pytest.raises(UsageLimitReached) as caught:
        run(limited.complete(REQUEST))

    assert caught.value.exit_code == 3
    assert "resets at" in str(caught.value)
    assert len(inner.started) == 1


def test_state_persists_and_is_restored_on_resume(fake_clock, tmp_path):
    state_file = tmp_path / "claude" / "rate_limit_state.json"
    inner = TimedProvider(fake_clock, usage=Usage(input_tokens=100, output_tokens=50))
    limiter = RateLimiter(
        _limits(), clock=fake_clock, sleep=fake_clock.sleep, state_file=state_file
    )
    limited = RateLimitedProvider(inner, limiter)
    _burst(limited, 10)
    limiter.pause(30)

    saved = json.loads(state_file.read_text())
    resumed = RateLimiter(
        _limits(), clock=fake_clock, sleep=fake_clock.sleep, state_file=state_file
    )

    assert saved["providers"]["default"]["blocks"][0]["tokens"] == 1500
    assert resumed.blocks.blocks[0].tokens == 1500
    assert resumed.paused_until == fake_clock() + 30
    # The bucket is still empty after the restart: the next call waits for the pause.
    inner2 = TimedProvider(fake_clock)
    run(RateLimitedProvider(inner2, resumed).complete(REQUEST))
    assert inner2.started[0] - inner.started[0] == pytest.approx(30.0)


def test_a_saved_low_limit_does_not_pin_later_runs_that_headers_or_config_say_more(
    fake_clock, tmp_path
):
    state_file = tmp_path / "openai-account.json"
    limits = _limits(max_tokens_per_minute=10_000_000)

    def limiter(config=limits) -> RateLimiter:
        return RateLimiter(config, clock=fake_clock, sleep=fake_clock.sleep, state_file=state_file)

    first = limiter()
    inner = TimedProvider(fake_clock)
    inner.headers.append(_tokens_header(30_000))
    run(RateLimitedProvider(inner, first).complete(REQUEST))

    # Right after a restart the server's limit still holds: the next run does not overrun it.
    second = limiter()
    assert second.tokens.per_minute == 30_000
    # A lower configuration wins over it.
    assert limiter(_limits(max_tokens_per_minute=20_000)).tokens.per_minute == 20_000
    # The next headers say more: the limit follows them.
    inner.headers.append(_tokens_header(900_000))
    run(RateLimitedProvider(inner, second).complete(REQUEST))
    assert second.tokens.per_minute == 900_000
    assert limiter().tokens.per_minute == 900_000

    # A learned limit older than a 5-hour block, or a bare per_minute an older aca saved, is
    # not trusted over the configuration.
    inner.headers.append(_tokens_header(30_000))
    run(RateLimitedProvider(inner, second).complete(REQUEST))
    fake_clock.now += 5 * 3600 + 1
    assert limiter().tokens.per_minute == 10_000_000
    state = json.loads(state_file.read_text())
    for key in ("learned", "learned_at"):
        del state["providers"]["default"]["tokens"][key]
    fake_clock.now -= 5 * 3600 + 1
    state_file.write_text(json.dumps(state))
    assert limiter().tokens.per_minute == 10_000_000


def test_the_per_provider_limits_override_the_global_ones(tmp_path):
    config = AcaConfig(
        rate_limiting=RateLimitingSection(max_requests_per_minute=50),
        providers={
            "ollama": ProviderSection(rate_limiting=RateLimitingSection(max_requests_per_minute=7))
        },
    )

    assert rate_limiter_for("ollama", config).requests.per_minute == 7
    assert rate_limiter_for("openai", config).requests.per_minute == 50


def test_a_real_provider_behind_the_limiter_records_the_server_headers(llm_server, tmp_path):
    llm_server.openai.enqueue(text="ok", headers={"x-ratelimit-remaining-requests": "41"})
    limiter = rate_limiter_for("openai", AcaConfig(), state_file=tmp_path / "state.json")

    run(RateLimitedProvider(get_provider("openai"), limiter).complete(REQUEST))

    state = json.loads((tmp_path / "state.json").read_text())
    assert state["providers"]["openai"]["last_headers"] == {"x-ratelimit-remaining-requests": "41"}


def test_providers_sharing_a_state_file_keep_their_own_state(tmp_path):
    state_file = tmp_path / "rate_limit_state.json"
    config = AcaConfig()
    anthropic = rate_limiter_for("anthropic", config, state_file=state_file)
    ollama = rate_limiter_for("ollama", config, state_file=state_file)

    anthropic.pause(60)
    ollama.pause(5)

    again = rate_limiter_for("anthropic", config, state_file=state_file)
    assert again.paused_until == anthropic.paused_until
    assert (
        rate_limiter_for("ollama", config, state_file=state_file).paused_until < again.paused_until
    )


# -- a server's pause is held no longer than a call's own retry waits ---------------------------


def capped_config(seconds: float) -> AcaConfig:
    """The config of a run whose calls wait at most ``seconds`` before a retry."""
    return AcaConfig(session=SessionSection(call_retry_max_wait_seconds=seconds))


def saved_pause(state_file, provider: str = "openai") -> float:
    """How long from now the account's file holds calls back."""
    state = json.loads(state_file.read_text())["providers"][provider]
    return state["paused_until"] - time.time()


def test_one_429_asking_for_an_hour_pauses_the_next_session_only_for_the_retry_cap(
    llm_server, tmp_path
):
    # The walkthrough's hang: one 429 with retry-after 3600 parked every later run for 59 min.
    state_file, config = tmp_path / "openai-account.json", capped_config(0.2)
    llm_server.openai.enqueue(status=429, retry_after=3600, error="rate limited")
    first = rate_limiter_for("openai", config, state_file=state_file)
    with pytest.raises(TransientProviderError):
        run(RateLimitedProvider(get_provider("openai"), first).complete(REQUEST))
    assert saved_pause(state_file) <= 0.2

    # A brand-new session on the account still waits out the pause, capped, and goes.
    second = rate_limiter_for("openai", config, state_file=state_file)
    assert second.paused_until - time.time() <= 0.2
    call = RateLimitedProvider(get_provider("openai"), second).complete(REQUEST)
    assert run(asyncio.wait_for(call, timeout=10)).text == "ok"


def test_a_long_pause_written_by_an_older_aca_is_capped_when_read(llm_server, tmp_path):
    state_file = tmp_path / "openai-account.json"
    paused = {"schema_version": 1, "paused_until": time.time() + 3600}
    state_file.write_text(json.dumps({"schema_version": 1, "providers": {"openai": paused}}))

    limiter = rate_limiter_for("openai", capped_config(0.2), state_file=state_file)

    assert limiter.paused_until - time.time() <= 0.2
    call = RateLimitedProvider(get_provider("openai"), limiter).complete(REQUEST)
    assert run(asyncio.wait_for(call, timeout=10)).text == "ok"
    assert saved_pause(state_file) <= 0.2


def test_a_run_waits_no_longer_than_the_cap_for_a_retry_after_or_a_header_reset(fake_clock):
    waits: list[tuple[float, str]] = []
    inner = TimedProvider(fake_clock)
    inner.failures.append(TransientProviderError("rate limited", retry_after=3600))
    inner.headers.append(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6h"}
    )
    limiter = RateLimiter(
        _limits(),
        clock=fake_clock,
        sleep=fake_clock.sleep,
        on_wait=lambda s, why: waits.append((s, why)),
        max_pause_seconds=120,
    )
    limited = RateLimitedProvider(inner, limiter)

    with pytest.raises(TransientProviderError):
        run(limited.complete(REQUEST))
    run(limited.complete(REQUEST))  # waits out the retry-after; its headers say 0 left for 6 h
    run(limited.complete(REQUEST))

    assert waits == [(pytest.approx(120.0), "server retry-after")] * 2


# -- waits are told -----------------------------------------------------------------------------


def told_limiter(fake_clock, notices: list[str], **limits) -> RateLimiter:
    return RateLimiter(
        _limits(**limits),
        clock=fake_clock,
        sleep=fake_clock.sleep,
        on_notice=notices.append,
        label="anthropic",
    )


def test_a_call_larger_than_a_minutes_tokens_goes_alone_and_the_next_wait_is_told(fake_clock):
    notices: list[str] = []
    usage = Usage(input_tokens=300_000, output_tokens=1_000)
    inner = TimedProvider(fake_clock, usage=usage)
    limiter = told_limiter(fake_clock, notices, max_tokens_per_minute=40_000)
    limited = RateLimitedProvider(inner, limiter)
    huge = ProviderRequest(messages=[Message(role="user", text="x" * 1_200_000)])  # ~300k
    start = fake_clock()

    run(limited.complete(huge))  # a full bucket: it goes at once, never waiting for room
    run(limited.complete(huge))  # it pays back what the first took, then goes alone again

    assert inner.started[0] == start
    wait = inner.started[1] - inner.started[0]
    assert wait == pytest.approx((300_000 + 1_000 - 40_000 + 40_000) * 60 / 40_000, rel=0.01)
    first, last = notices
    assert first.startswith("a call to anthropic waits about 7.5 min for tokens per minute")
    assert "about 300,000 tokens; limit 40,000/min" in first
    assert "larger than a minute's tokens, it goes alone once the bucket is full" in first
    assert last == "a call to anthropic waited 7.5 min and goes now."


def test_short_waits_pass_unremarked_and_a_queue_for_calls_in_flight_is_told(fake_clock):
    notices: list[str] = []
    limiter = told_limiter(fake_clock, notices, max_requests_per_minute=30)
    _burst(RateLimitedProvider(TimedProvider(fake_clock), limiter), 31)  # the 31st waits 2 s
    assert notices == []

    inner = TimedProvider(fake_clock, duration=20)
    limiter = told_limiter(
        fake_clock, notices, max_requests_per_minute=1000, max_concurrent_requests=1
    )
    _burst(RateLimitedProvider(inner, limiter), 2)

    assert notices[0] == (
        "a call to anthropic has waited 5 s, and waits until there is room for the 1 call in "
        "flight to end (max_concurrent_requests)."
    )
    assert notices[1] == "a call to anthropic waited 20 s and goes now."


def test_a_retry_after_wait_is_told_with_its_length(fake_clock):
    notices: list[str] = []
    inner = TimedProvider(fake_clock)
    inner.failures.append(TransientProviderError("overloaded", retry_after=45, status_code=529))
    limited = RateLimitedProvider(inner, told_limiter(fake_clock, notices))

    with pytest.raises(TransientProviderError):
        run(limited.complete(REQUEST))
    run(limited.complete(REQUEST))

    assert notices[0].startswith("a call to anthropic waits about 45 s for the provider's retry")


class RecordingSharedLimits(SharedLimits):
    """Shared limits that hold nothing and note what they were asked for."""

    def __init__(self):
        self.held: list[int] = []
        self.charged: list[int] = []

    @contextlib.asynccontextmanager
    async def hold(self, estimated_tokens, notice):
        self.held.append(estimated_tokens)
        yield

    async def charge(self, tokens, seconds, notice):
        self.charged.append((tokens, seconds))


def test_with_shared_limits_the_process_keeps_only_pauses_and_the_block_budget(fake_clock):
    inner = TimedProvider(
        fake_clock, duration=5.0, usage=Usage(input_tokens=900, output_tokens=100)
    )
    shared = RecordingSharedLimits()
    limiter = RateLimiter(
        _limits(max_requests_per_minute=1, max_concurrent_requests=1),
        clock=fake_clock,
        sleep=fake_clock.sleep,
        local_rates=False,
    )
    limited = RateLimitedProvider(inner, limiter, shared)

    _burst(limited, 5)

    # One request a minute and one call at a time are the shared limits' job now.
    assert inner.most_in_flight == 5
    assert shared.held == [estimate_tokens(REQUEST)] * 5
    assert shared.charged == [(1000 - estimate_tokens(REQUEST), 5.0)] * 5
    limiter.pause(30)
    start = fake_clock()
    run(limited.complete(REQUEST))
    assert inner.started[-1] - start == pytest.approx(30.0)


# -- the state of an account --------------------------------------------------------------------


def test_each_account_has_its_own_state_file_and_the_key_is_not_in_its_name(tmp_path):
    one = account_state_file("anthropic", {"ANTHROPIC_API_KEY": "sk-ant-one"}, home=tmp_path)
    other = account_state_file("anthropic", {"ANTHROPIC_API_KEY": "sk-ant-two"}, home=tmp_path)
    proxied = account_state_file(
        "anthropic", {"ANTHROPIC_API_KEY": "sk-ant-one"}, "http://proxy:8080", home=tmp_path
    )

    assert one == account_state_file(
        "anthropic", {"ANTHROPIC_API_KEY": "sk-ant-one"}, home=tmp_path
    )
    assert len({one, other, proxied}) == 3
    assert one.parent == tmp_path / "rate_limits" and one.name.startswith("anthropic-")
    assert "sk-ant" not in str(one)


def test_two_processes_on_one_account_spend_one_5_hour_budget(fake_clock, tmp_path):
    state_file = account_state_file("anthropic", {"ANTHROPIC_API_KEY": "k"}, home=tmp_path)
    limits = _limits(max_tokens_per_session=1000, on_session_limit="stop")
    usage = Usage(input_tokens=500, output_tokens=100)

    def process() -> RateLimitedProvider:
        # Built as each run builds its own: the file is all they share.
        limiter = RateLimiter(
            limits, clock=fake_clock, sleep=fake_clock.sleep, state_file=state_file
        )
        return RateLimitedProvider(TimedProvider(fake_clock, usage=usage), limiter)

    first, second = process(), process()
    run(first.complete(REQUEST))  # 600 tokens of the block
    run(second.complete(REQUEST))  # 1,200: the block's budget is spent, by both together

    with pytest.raises(UsageLimitReached):
        run(first.complete(REQUEST))
    with pytest.raises(UsageLimitReached):
        run(second.complete(REQUEST))
    saved = json.loads(state_file.read_text())["providers"]["default"]["blocks"]
    assert [block["tokens"] for block in saved] == [1200]


def test_calls_held_for_a_slot_go_in_the_order_they_came(fake_clock):
    # A task's next turn waited first, yet the first calls of tasks that came after it took
    # each slot that freed: the task that had paid turns went last (and a budget stop then
    # threw its paid turns away).
    limiter = RateLimiter(
        _limits(max_requests_per_minute=1000, max_concurrent_requests=1),
        clock=fake_clock,
        sleep=fake_clock.sleep,
    )
    order: list[str] = []

    async def call(name: str, arrives: float) -> None:
        await fake_clock.sleep(arrives)
        permit = await limiter.acquire()
        order.append(name)
        await fake_clock.sleep(10)
        await limiter.release(permit)

    async def all_of_them():
        # They look for a slot every 0.25 s from when they came: the new calls look just
        # before the next turn does, when the first call's slot frees at 10 s.
        news = [call(f"new {i}", 2.13 + i * 0.01) for i in range(3)]
        await asyncio.gather(call("running", 0), call("next turn", 1.2), *news)

    run(all_of_them())

    assert order == ["running", "next turn", "new 0", "new 1", "new 2"]


def test_a_call_waiting_for_the_slot_of_a_call_told_to_wait_waits_too(
    fake_clock, tmp_path, monkeypatch
):
    # The 429's slot was handed back before its pause was set, while the state file was
    # written in a thread: the call waiting for the slot went at once, to a server that had
    # just said wait 30 s.
    from aca_flows.providers import ratelimit

    written = ratelimit.write_json_atomic

    def slow_write(*args, **kwargs):
        time.sleep(0.2)  # a save that waits for the disk, or for another process's lock
        return written(*args, **kwargs)

    monkeypatch.setattr(ratelimit, "write_json_atomic", slow_write)
    inner = TimedProvider(fake_clock, duration=1)
    inner.failures = [TransientProviderError("429", retry_after=30)]
    limiter = RateLimiter(
        _limits(max_concurrent_requests=1),
        clock=fake_clock,
        sleep=fake_clock.sleep,
        state_file=tmp_path / "rate_limit_state.json",
    )
    limited = RateLimitedProvider(inner, limiter)

    async def told_to_wait_and_next():
        async def told_to_wait():
            with pytest.raises(TransientProviderError):
                await limited.complete(REQUEST)

        await asyncio.gather(told_to_wait(), limited.complete(REQUEST))

    start = fake_clock()
    run(told_to_wait_and_next())
    assert inner.started[1] - start >= 30


def test_a_call_held_by_a_pause_is_not_made_once_the_run_is_stopping():
    # A pause the server asked for (saved from an earlier run) held a call; the run's Ctrl-C
    # then waited out its whole grace period (30 s) for a call it would never make.
    stop = {"now": False}
    limiter = RateLimiter(_limits(), stopping=lambda: stop["now"])
    limiter.pause(120)

    async def held_then_stopped() -> float:
        started = time.monotonic()
        asyncio.get_running_loop().call_later(0.3, stop.update, {"now": True})
        with pytest.raises(TransientProviderError, match="the run is stopping"):
            await limiter.acquire()
        return time.monotonic() - started

    assert run(held_then_stopped()) < 5
    assert limiter.in_flight == 0

    # A call waiting its turn behind a call in flight still goes: its task may finish.
    busy = RateLimiter(_limits(max_concurrent_requests=1), stopping=lambda: True)

    async def behind_one_in_flight() -> None:
        first = await busy.acquire()
        second = asyncio.ensure_future(busy.acquire())
        await asyncio.sleep(0.3)
        assert not second.done()
        await busy.release(first)
        await asyncio.wait_for(second, 5)

    run(behind_one_in_flight())
