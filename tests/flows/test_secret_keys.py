"""Provider keys from a Prefect Secret block saved on the test server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aca_flows.flows import run_flow
from tests.fakes.llm_server import RecordedRequest, Reply

# Not shaped like any known key: only registering the block's value can hide it.
BLOCK_KEY = "plainvalue0123456789ABCDEFabcdef"


def key_echoing_agent(request: RecordedRequest) -> Reply:
    turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
    steps = [
        {"name": "run_command", "arguments": {"command": f"echo {BLOCK_KEY}"}},
        {"name": "write_file", "arguments": {"path": "a.txt", "content": "a\n"}},
        {"name": "finish", "arguments": {"summary": f"used {BLOCK_KEY}"}},
    ]
    return Reply(tool_calls=[steps[min(turn, 2)]])


def configure(repo: Path, block: str) -> None:
    (repo / ".aca").mkdir(exist_ok=True)
    (repo / ".aca" / "config.toml").write_text(
        f'[session]\nprovider = "anthropic"\n\n[providers.anthropic]\napi_key_secret = "{block}"\n'
    )


def flow_logs(workdir: Path) -> str:
    """Every log line the runs in ``workdir`` sent to the Prefect server (what the UI shows)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    async def read():
        await APILogHandler.aflush()  # the run's logs are sent in batches
        async with get_client() as client:
            runs = await client.read_flow_runs()
            ids = [r.id for r in runs if r.parameters.get("workdir") == str(workdir)]
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))
            )
            return "\n".join(log.message for log in logs)

    return asyncio.run(read())


def test_the_key_comes_from_the_secret_block_and_is_redacted(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    from prefect.blocks.system import Secret

    Secret(value=BLOCK_KEY).save("aca-test-anthropic-key", overwrite=True)
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    anthropic_fake.api_key = BLOCK_KEY  # the fake accepts this key only
    for _ in range(5):
        anthropic_fake.anthropic.enqueue(key_echoing_agent)
    configure(repo, "aca-test-anthropic-key")
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")

    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")

    assert outcome.summary and outcome.summary["status"] == "completed", outcome.error
    assert anthropic_fake.anthropic.requests  # accepted: the block's key was sent
    # The key never entered the environment agent commands inherit ...
    assert "ANTHROPIC_API_KEY" not in os.environ
    # ... and its value, echoed by a tool and put in a summary, is written nowhere.
    aca = "".join(p.read_text(errors="replace") for p in (repo / ".aca").rglob("*") if p.is_file())
    assert BLOCK_KEY not in aca and "[REDACTED]" in aca
    logs = flow_logs(repo)
    assert "run_command" in logs and BLOCK_KEY not in logs


def test_a_missing_secret_block_is_named_before_anything_runs(tmp_path, repo, anthropic_fake):
    configure(repo, "no-such-block")
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")
    assert outcome.state_name == "Failed"
    assert "api_key_secret = 'no-such-block'" in str(outcome.error)
    assert "no Secret block of that name" in str(outcome.error)
    assert anthropic_fake.anthropic.requests == []


def test_providers_check_uses_the_secret_block_too(repo, anthropic_fake, monkeypatch, capsys):
    from prefect.blocks.system import Secret

    from aca_flows.cli import main

    Secret(value=BLOCK_KEY).save("aca-test-check-key", overwrite=True)
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    anthropic_fake.api_key = BLOCK_KEY
    anthropic_fake.anthropic.enqueue(text="ok")
    configure(repo, "aca-test-check-key")
    assert main(["providers", "check", "anthropic", "-w", str(repo), "--json"]) == 0
    assert '"answer": "ok"' in capsys.readouterr().out
