"""Recording a run into a cassette and replaying it: deterministic, secret-free, strict."""

from __future__ import annotations

import asyncio
import json

import pytest

from aca_flows.errors import ConfigError, PermanentProviderError, TransientProviderError
from aca_flows.providers import get_provider
from aca_flows.providers.base import Message, ProviderEvent, ProviderRequest, ProviderResponse
from aca_flows.providers.replay import RecordingProvider, ReplayProvider, first_difference
from aca_flows.settings import AcaConfig, ProviderSection
from tests.providers.conftest import run


def _ask(text: str, **options) -> ProviderRequest:
    return ProviderRequest(
        system="sys", messages=[Message(role="user", text=text)], options=options
    )


class ScriptedProvider:
    """A real provider implementation answering from a dict (a fake, not a mock)."""

    name = "scripted"

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    async def complete(self, request, on_event=None):
        text = request.messages[-1].text
        if on_event:
            on_event(ProviderEvent(kind="assistant_text", data={"text": self.answers[text]}))
        if text == "fail":
            raise TransientProviderError("overloaded", retry_after=3, status_code=529)
        return ProviderResponse(text=self.answers[text], provider=self.name)


def test_a_recorded_run_replays_the_same_answers_and_events(tmp_path):
    cassette = tmp_path / "run.json"
    recorder = RecordingProvider(ScriptedProvider({"a": "answer a", "b": "answer b"}), cassette)
    recorded = [run(recorder.complete(_ask(t))) for t in ("a", "b")]

    replay = ReplayProvider(cassette)
    events: list[ProviderEvent] = []
    replayed = [run(replay.complete(_ask(t), on_event=events.append)) for t in ("a", "b")]

    assert replayed == recorded
    assert [e.data["text"] for e in events] == ["answer a", "answer b"]
    assert replay.remaining == 0


def test_recorded_errors_are_raised_again_with_their_retry_after(tmp_path):
    cassette = tmp_path / "run.json"
    recorder = RecordingProvider(ScriptedProvider({"fail": "-"}), cassette)
    with pytest.raises(TransientProviderError):
        run(recorder.complete(_ask("fail")))

    with pytest.raises(TransientProviderError) as caught:
        run(ReplayProvider(cassette).complete(_ask("fail")))

    assert caught.value.retry_after == 3


class GoesOn:
    """A provider whose first run fails with a retry that goes on (as a Claude Code run's
    does: its session resumed, told to go on), and whose second answers."""

    name = "goes-on"

    def __init__(self):
        self.runs = 0

    async def complete(self, request, on_event=None):
        self.runs += 1
        if self.runs == 1:
            error = TransientProviderError("cut off", status_code=529)
            error.retry_request = request.model_copy(
                update={
                    "messages": [*request.messages, Message(role="user", text="go on")],
                    "options": {**request.options, "resume": "session-1"},
                }
            )
            raise error
        return ProviderResponse(text=f"done after: {request.messages[-1].text}")


def test_a_call_retried_as_another_request_replays_as_recorded(tmp_path):
    # The retry's request (the run resumed) was not in the replayed error: the replay sent
    # the first request again, which matched nothing recorded.
    from aca_flows.providers.retry import RetryingProvider

    cassette = tmp_path / "run.json"
    recorder = RetryingProvider(RecordingProvider(GoesOn(), cassette), backoff_seconds=0)
    recorded = run(recorder.complete(_ask("write a.txt", cwd="/recorded/worktree")))

    replay = RetryingProvider(ReplayProvider(cassette), backoff_seconds=0)
    replayed = run(replay.complete(_ask("write a.txt", cwd="/this/run")))

    assert replayed.text == recorded.text == "done after: go on"


def test_concurrent_requests_match_by_content_not_by_arrival_order(tmp_path):
    cassette = tmp_path / "run.json"
    recorder = RecordingProvider(ScriptedProvider({"a": "A", "b": "B", "c": "C"}), cassette)
    for text in ("a", "b", "c"):
        run(recorder.complete(_ask(text)))
    replay = ReplayProvider(cassette)

    async def all_reversed():
        return await asyncio.gather(*(replay.complete(_ask(t)) for t in ("c", "b", "a")))

    assert [r.text for r in run(all_reversed())] == ["C", "B", "A"]


def test_paths_and_session_ids_of_the_recording_run_do_not_matter(tmp_path):
    cassette = tmp_path / "run.json"
    recorder = RecordingProvider(ScriptedProvider({"a": "A"}), cassette)
    run(recorder.complete(_ask("a", cwd="/tmp/run-1/worktree", resume="session-1", max_turns=5)))

    response = run(
        ReplayProvider(cassette).complete(
            _ask("a", cwd="/home/ci/run-2/worktree", resume="session-2", max_turns=5)
        )
    )

    assert response.text == "A"


def test_a_replay_given_no_model_plays_the_model_as_recorded(tmp_path):
    """A run recorded with --model claude-test, replayed from a config naming none, failed:
    'request.model: recorded "claude-test", got null'."""
    cassette = tmp_path / "run.json"
    recorder = RecordingProvider(ScriptedProvider({"a": "A"}), cassette)
    run(recorder.complete(_ask("a").model_copy(update={"model": "claude-test"})))

    assert run(ReplayProvider(cassette).complete(_ask("a"))).text == "A"
    with pytest.raises(PermanentProviderError, match="request.model"):  # another is another
        run(ReplayProvider(cassette).complete(_ask("a").model_copy(update={"model": "other"})))


def test_a_request_that_differs_fails_showing_the_first_difference(tmp_path):
    cassette = tmp_path / "run.json"
    run(
        RecordingProvider(ScriptedProvider({"add a test": "ok"}), cassette).complete(
            _ask("add a test")
        )
    )

    with pytest.raises(PermanentProviderError) as caught:
        run(ReplayProvider(cassette).complete(_ask("add two tests")))

    message = str(caught.value)
    assert "request.messages[0].text" in message
    assert '"add a test"' in message and '"add two tests"' in message
    assert "--record" in message


def test_a_request_replayed_more_often_than_recorded_fails(tmp_path):
    cassette = tmp_path / "run.json"
    run(RecordingProvider(ScriptedProvider({"a": "A"}), cassette).complete(_ask("a")))
    replay = ReplayProvider(cassette)
    run(replay.complete(_ask("a")))

    with pytest.raises(PermanentProviderError, match="already played"):
        run(replay.complete(_ask("a")))


def test_cassettes_recorded_from_a_real_provider_hold_no_key(llm_server, tmp_path):
    cassette = tmp_path / "run.json"
    llm_server.anthropic.enqueue(text="ok")
    provider = get_provider("anthropic", AcaConfig(), record=cassette)

    run(provider.complete(_ask("hi")))

    text = cassette.read_text()
    assert "test-key" not in text
    assert json.loads(text)["interactions"][0]["provider"] == "anthropic"


def test_replay_is_configured_by_its_cassette(tmp_path):
    cassette = tmp_path / "run.json"
    run(RecordingProvider(ScriptedProvider({"a": "A"}), cassette).complete(_ask("a")))
    config = AcaConfig(providers={"replay": ProviderSection(cassette=str(cassette))})

    assert run(get_provider("replay", config).complete(_ask("a"))).text == "A"
    with pytest.raises(ConfigError, match="cassette"):
        get_provider("replay", AcaConfig())
    with pytest.raises(PermanentProviderError, match="does not exist"):
        get_provider("replay", AcaConfig(), cassette=tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"version": 1, "interactions": [{"response": {"text": "A"}}]}))
    with pytest.raises(PermanentProviderError, match="not a version-1 cassette"):
        get_provider("replay", AcaConfig(), cassette=broken)


def test_first_difference_reports_missing_and_extra_items():
    assert first_difference({"a": [1, 2]}, {"a": [1, 2]}) is None
    assert first_difference({"a": [1, 2]}, {"a": [1]}) == "request.a: recorded 2 items, got 1"
    assert first_difference({"a": 1}, {}) == "request.a: recorded 1, got nothing"


def test_two_providers_of_one_run_record_into_one_cassette(tmp_path):
    cassette = tmp_path / "run.json"
    first = RecordingProvider(ScriptedProvider({"a": "A"}), cassette)
    second = RecordingProvider(ScriptedProvider({"b": "B"}), cassette)

    run(first.complete(_ask("a")))
    run(second.complete(_ask("b")))

    replay = ReplayProvider(cassette)
    assert [run(replay.complete(_ask(t))).text for t in ("b", "a")] == ["B", "A"]


def test_variables_passed_to_claude_code_are_never_recorded(tmp_path):
    cassette = tmp_path / "run.json"
    recorder = RecordingProvider(ScriptedProvider({"a": "A"}), cassette)

    run(recorder.complete(_ask("a", env={"GITHUB_TOKEN": "ghp-secret"})))

    assert "ghp-secret" not in cassette.read_text()


def test_a_scrubbing_recorder_writes_no_key_and_its_cassette_still_replays(tmp_path):
    from aca_flows.session.redact import redact

    key = "sk-ant-api03-" + "Planted1" * 6
    asked = f"use {key} to call the API"
    cassette = tmp_path / "run.json"
    recorder = RecordingProvider(ScriptedProvider({asked: f"called with {key}"}), cassette, redact)
    run(recorder.complete(_ask(asked)))
    assert key not in cassette.read_text() and "[REDACTED]" in cassette.read_text()

    # The same run again: its request holds the key, and is compared redacted.
    replayed = run(ReplayProvider(cassette, redact).complete(_ask(asked)))
    assert replayed.text == "called with [REDACTED]"
    with pytest.raises(PermanentProviderError, match="not in cassette"):
        run(ReplayProvider(cassette).complete(_ask(asked)))  # unscrubbed, it cannot match
