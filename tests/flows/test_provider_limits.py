"""Provider limits on the Prefect server: ``aca limits sync`` writes them, runs hold to them."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from aca_flows.cli import main
from aca_flows.flows import run_flow
from tests.fakes.coding_agent import coding_agent, task_of
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer
from tests.flows.test_secret_keys import flow_logs

ROOT = Path(__file__).resolve().parents[2]
NAMES = [f"aca-anthropic-{kind}" for kind in ("requests", "tokens", "in-flight")]


def server_limits() -> dict[str, tuple[int, float]]:
    """The aca limits on the test server: name -> (limit, slot decay per second)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_global_concurrency_limits(limit=200)
    return {g.name: (g.limit, g.slot_decay_per_second) for g in found if g.name.startswith("aca-")}


@pytest.fixture(autouse=True)
def no_limits_left_behind():
    """The Prefect server is shared by the whole test session: runs of other tests must not
    find this module's limits."""
    yield
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for name in server_limits():
            client.delete_global_concurrency_limit_by_name(name)


def write_config(path: Path, **limits: int) -> Path:
    lines = "".join(f"{key} = {value}\n" for key, value in limits.items())
    path.write_text(f"[rate_limiting]\n{lines}")
    return path


def test_limits_sync_creates_the_limits_then_updates_what_changed(tmp_path, capsys):
    config = write_config(
        tmp_path / "aca.toml",
        max_requests_per_minute=30,
        burst_allowance=2,
        max_tokens_per_minute=6000,
        max_concurrent_requests=2,
    )

    assert main(["limits", "sync", "--provider", "anthropic", "--config", str(config)]) == 0

    assert server_limits() == {
        "aca-anthropic-requests": (32, 0.5),
        "aca-anthropic-tokens": (6000, 100.0),
        "aca-anthropic-in-flight": (2, 0.0),
    }
    assert "created   aca-anthropic-in-flight: 2 calls at once" in capsys.readouterr().out

    write_config(
        config,
        max_requests_per_minute=30,
        burst_allowance=2,
        max_tokens_per_minute=6000,
        max_concurrent_requests=5,
    )
    assert main(["limits", "sync", "--provider", "anthropic", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    assert "updated   aca-anthropic-in-flight: 5 calls at once" in out
    assert "unchanged aca-anthropic-tokens: 6,000 tokens a minute, up to 6,000 at once" in out
    assert "unchanged aca-anthropic-requests: 30 requests a minute, up to 32 at once" in out
    assert server_limits()["aca-anthropic-in-flight"] == (5, 0.0)

    assert main(["limits", "show", "--provider", "anthropic"]) == 0
    assert "aca-anthropic-in-flight: 5 calls at once; 0 in use" in capsys.readouterr().out


def test_limits_sync_without_a_provider_covers_every_rate_limited_provider(tmp_path, capsys):
    assert main(["limits", "sync", "--workdir", str(tmp_path)]) == 0

    names = set(server_limits())
    for provider in ("claude-code", "anthropic", "openai", "ollama"):
        assert f"aca-{provider}-tokens" in names
    assert not any("replay" in name for name in names)
    # The defaults: 50 requests (+5 burst) and 40,000 tokens a minute, 4 calls in flight.
    assert server_limits()["aca-claude-code-tokens"] == (40_000, pytest.approx(40_000 / 60))


def test_limits_sync_with_bad_config_exits_2_and_creates_nothing(tmp_path, capsys):
    config = write_config(tmp_path / "aca.toml", max_concurrent_requests=0)

    code = main(["limits", "sync", "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "rate_limiting.max_concurrent_requests" in err and str(config) in err
    assert main(["limits", "sync", "--provider", "replay"]) == 2
    assert "replay has no rate limits to share" in capsys.readouterr().err
    assert server_limits() == {}


def test_limits_sync_without_a_server_says_how_to_name_one(capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code = main(["limits", "sync"])

    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no Prefect server to hold the limits" in err
    assert "PREFECT_API_URL" in err and "aca server start" in err


def test_limits_sync_against_a_web_server_that_is_no_prefect_api_says_so(tmp_path, capsys):
    # A plain web server answers 501 to a POST: that once read "did not answer", exit 1.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoPost) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{web.server_port}/api"
        with temporary_settings(updates={PREFECT_API_URL: url}):
            synced = main(["limits", "sync", "--provider", "anthropic"])
            sync_err = capsys.readouterr().err
            shown = main(["limits", "show", "--provider", "anthropic"])
            show_err = capsys.readouterr().err
        web.shutdown()

    for code, err in ((synced, sync_err), (shown, show_err)):
        assert code == 2 and "Traceback" not in err
        assert f"{url} (PREFECT_API_URL) is not a Prefect server's API (HTTP 501 for" in err
        assert "did not answer" not in err


class _NoPost(http.server.BaseHTTPRequestHandler):
    """A web server without POST, as `python -m http.server` is."""

    def log_message(self, *args):  # quiet
        pass


def slow(seconds: float):
    """The coding agent, answering each call after ``seconds``."""

    def answer(request):
        return dataclasses.replace(coding_agent(request), delay=seconds)

    return answer


def test_a_run_on_a_server_with_the_limits_holds_every_call_to_them(tmp_path, repo, anthropic_fake):
    config = write_config(tmp_path / "limits.toml", max_concurrent_requests=1)
    assert main(["limits", "sync", "--provider", "anthropic", "--config", str(config)]) == 0
    anthropic_fake.anthropic.default = slow(0.3)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n- write b.txt\n- write c.txt\n")

    # The run's own config still allows 4 calls at once: the server's limit is the one held.
    summary = run_flow(task_file=str(tasks), workdir=str(repo), max_concurrent=3).summary

    assert summary["counts"] == {"completed": 3}
    assert len(anthropic_fake.model_calls) >= 6
    assert anthropic_fake.most_in_flight() == 1


def test_a_run_without_shared_limits_says_how_to_share_them(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    from aca_flows.flows import provider_limits

    monkeypatch.setattr(provider_limits, "_TOLD_NOT_SHARED", set())  # as in a fresh process
    anthropic_fake.anthropic.default = coding_agent
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n")

    summary = run_flow(task_file=str(tasks), workdir=str(repo)).summary

    assert summary["counts"] == {"completed": 1}
    assert "`aca limits sync` puts them on the Prefect server" in flow_logs(repo)
    # The process limiter's state is the account's, kept in the aca home, not the session's.
    (state,) = (Path.home() / ".aca" / "rate_limits").glob("anthropic-*.json")
    blocks = json.loads(state.read_text())["providers"]["anthropic"]["blocks"]
    assert blocks[0]["requests"] == len(anthropic_fake.model_calls)
    assert not list(repo.glob(".aca/sessions/*/claude/rate_limit_state.json"))


def test_a_call_larger_than_a_minutes_tokens_goes_alone_and_its_wait_is_logged(
    tmp_path, repo, anthropic_fake
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    # 100 tokens a bucket, refilled in about 7 s: every agent call (~1,000 tokens) is larger.
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name="aca-anthropic-tokens", limit=100, slot_decay_per_second=15
            )
        )
    anthropic_fake.anthropic.default = coding_agent
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n")

    summary = run_flow(task_file=str(tasks), workdir=str(repo)).summary

    assert summary["counts"] == {"completed": 1}
    assert len(anthropic_fake.model_calls) == 2
    logs = flow_logs(repo)
    assert "more than a minute's, it goes alone once full" in logs
    assert "and goes now" in logs


def test_require_fails_a_run_whose_server_lacks_the_limits(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    monkeypatch.setenv("ACA_RATE_LIMITING__PREFECT_LIMITS", "require")
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n")

    outcome = run_flow(task_file=str(tasks), workdir=str(repo))

    assert outcome.summary is None
    assert "run `aca limits sync`" in str(outcome.error)
    assert anthropic_fake.model_calls == []


def aca_run(tasks: Path, repo: Path, model: str, server: FakeLLMServer, api_url: str):
    """``aca run`` in a process of its own, against the test's Prefect server."""
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ACA_", "PREFECT_"))},
        **server.env(),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
        "ACA_SESSION__PROVIDER": "anthropic",
        "ACA_SESSION__MODEL": model,
        "ANTHROPIC_API_KEY": f"key-{model}",  # tells the two runs apart at the fake server
    }
    command = [sys.executable, "-m", "aca_flows", "run", str(tasks), "--workdir", str(repo)]
    return subprocess.Popen(
        [*command, "--max-concurrent", "3"],
        env=environ,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_runs_in_two_processes_never_exceed_the_calls_in_flight_limit_together(tmp_path):
    from prefect.settings import PREFECT_API_URL

    config = write_config(tmp_path / "limits.toml", max_concurrent_requests=1)
    assert main(["limits", "sync", "--provider", "anthropic", "--config", str(config)]) == 0
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n- write b.txt\n- write c.txt\n")
    both_ready = threading.Event()

    with FakeLLMServer(api_key=None) as server:
        server.models = ["claude-a", "claude-b"]

        def answer(request):
            # Both runs are past their start (each checked its key) before any call is
            # answered, so their calls compete for the one slot.
            checked = {r.headers.get("x-api-key") for r in server.requests if r.method == "GET"}
            if {"key-claude-a", "key-claude-b"} <= checked:
                both_ready.set()
            both_ready.wait(timeout=120)
            return slow(1.5)(request)

        server.anthropic.default = answer
        runs = [
            aca_run(tasks, make_repo(tmp_path / name), name, server, PREFECT_API_URL.value())
            for name in ("claude-a", "claude-b")
        ]
        outputs = [run.communicate(timeout=600)[0] for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    by_model = {
        m: [r for r in server.model_calls if r.json["model"] == m] for m in ("claude-a", "claude-b")
    }
    assert all(len(calls) >= 6 for calls in by_model.values())
    titles = {task_of(r)[1] for r in server.model_calls}
    assert titles == {"write a.txt", "write b.txt", "write c.txt"}
    # Both runs were under way before any call was answered (each had checked its key), so
    # their calls competed, yet one call at a time was in flight across both processes.
    # Which run's calls go first is the server's to decide: Prefect's limits do not queue
    # first come, first served, so one run's calls may all come before the other's.
    assert both_ready.is_set()
    assert server.most_in_flight() == 1
    # Six calls queued for one slot: the last waits several seconds, and says so.
    assert "the 1 call in flight to end" in "".join(outputs)
    assert "and goes now" in "".join(outputs)


def test_tokens_a_call_used_beyond_its_estimate_are_charged_to_the_shared_limit(
    tmp_path, repo, anthropic_fake
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    # Slots decay at 1 a second: what the run charged is still there when it ends.
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(
                name="aca-anthropic-tokens", limit=100_000, slot_decay_per_second=1
            )
        )

    def costly(request):
        return dataclasses.replace(coding_agent(request), usage={"input_tokens": 25_000})

    anthropic_fake.anthropic.default = costly
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n")

    summary = run_flow(task_file=str(tasks), workdir=str(repo)).summary

    assert summary["counts"] == {"completed": 1}
    assert len(anthropic_fake.model_calls) == 2  # each a small prompt that used 25,005 tokens
    with get_client(sync_client=True) as client:
        used = client.read_global_concurrency_limit_by_name("aca-anthropic-tokens").active_slots
    # Charged once each: a second charge of a call would add 25,000. (An attempt whose
    # connection dropped before the model answered took its estimate, about 1,000, too:
    # CI saw one, retried by aca.)
    assert 49_000 < used < 50_010 + 25_000


@pytest.mark.parametrize("limit", ["tag", "in-flight"])
def test_a_limit_that_can_never_give_a_slot_stops_the_run_saying_which(
    limit, tmp_path, repo, anthropic_fake
):
    # A tag limit of 0 on provider:anthropic ended the run in two tracebacks, "failed" with
    # no task failed; the calls-in-flight limit at 0 failed each task as if its work were bad.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        if limit == "tag":
            client.create_concurrency_limit(tag="provider:anthropic", concurrency_limit=0)
        else:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name="aca-anthropic-in-flight", limit=0)
            )
    anthropic_fake.anthropic.default = coding_agent
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n- write b.txt {depends_on=write-a-txt}\n")
    try:
        outcome = run_flow(task_file=str(tasks), workdir=str(repo))
    finally:
        if limit == "tag":
            with get_client(sync_client=True) as client:
                client.delete_concurrency_limit_by_tag("provider:anthropic")

    summary = outcome.summary
    assert summary is not None and summary["status"] == "stopped", outcome.error
    assert summary["counts"] == {"pending": 2}
    assert "a Prefect concurrency limit gives task" in summary["stopped_reason"]
    assert "raise the limit" in summary["stopped_reason"]
    assert anthropic_fake.model_calls == []
