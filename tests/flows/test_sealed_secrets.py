"""Secrets sealed at every exit, and what runs is what was asked.

A real ``aca run`` process against the session's Prefect server, real git and the fake
Anthropic server: keys planted in the environment, the task text, ``--context``,
``--append-system-prompt``, a tool's output and the agent's summary are then looked for in
``.aca/``, every git object, the terminal output and the server's logs and artifacts read
back through its API. The model still gets the user's own text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import git
import pytest

from aca_flows.flows import run_flow
from aca_flows.session.reading import load_session
from aca_flows.session.redact import REDACTED
from tests.fakes.coding_agent import coding_agent
from tests.fakes.llm_server import RecordedRequest, Reply

ROOT = Path(__file__).resolve().parents[2]

ENV_KEY = "sk-ant-api03-" + "EnvKey01" * 6
TASK_KEY = "ghp_" + "TaskKey0" * 4
CONTEXT_KEY = "sk-ant-api03-" + "Context1" * 6
PROMPT_KEY = "AKIA" + "PROMPTKEY1234567"
TOOL_KEY = "sk-proj-" + "ToolOut1" * 5
SUMMARY_KEY = "xoxb-" + "Summary1-" * 3 + "end"
PLANTED = {
    "env": ENV_KEY,
    "task": TASK_KEY,
    "context": CONTEXT_KEY,
    "prompt": PROMPT_KEY,
    "tool": TOOL_KEY,
    "summary": SUMMARY_KEY,
}


def leaky_agent(request: RecordedRequest) -> Reply:
    """Runs a command that prints a key, writes a.txt, finishes with a key in its summary."""
    turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
    steps = [
        {"name": "run_command", "arguments": {"command": f"echo {TOOL_KEY}"}},
        {"name": "write_file", "arguments": {"path": "a.txt", "content": "a\n"}},
        {"name": "finish", "arguments": {"summary": f"done; the service said {SUMMARY_KEY}"}},
    ]
    return Reply(tool_calls=[steps[min(turn, 2)]], usage={"input_tokens": 10, "output_tokens": 5})


def leaks(text: str) -> list[str]:
    return [name for name, key in PLANTED.items() if key in text]


def files_text(root: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file()
    )


def git_objects_text(repo: Path) -> str:
    """Every object of the repository, and every patch of every branch."""
    g = git.Repo(repo).git
    objects = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "replace")
    return objects + g.log("-p", "--all")


def server_record(workdir: Path) -> tuple[str, str, dict]:
    """The logs and artifacts of the flow run that worked in ``workdir``, and its parameters."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    async def read():
        await APILogHandler.aflush()  # the run's logs are sent in batches
        async with get_client() as client:
            runs = [
                r
                for r in await client.read_flow_runs()
                if r.parameters.get("workdir") == str(workdir)
            ]
            ids = [r.id for r in runs]
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
            )
            return runs, logs, artifacts

    runs, logs, artifacts = asyncio.run(read())
    assert runs, f"no flow run worked in {workdir}"
    log_text = "\n".join(log.message for log in logs)
    artifact_text = "\n".join(f"{a.key} {a.description} {a.data}" for a in artifacts)
    return log_text, artifact_text, runs[0].parameters


def state_messages(workdir: Path) -> str:
    """The state messages of the flow runs that worked in ``workdir``, and of their task runs:
    what Prefect keeps of each end (in its events, its UI)."""
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            runs = [
                r
                for r in await client.read_flow_runs()
                if r.parameters.get("workdir") == str(workdir)
            ]
            task_runs = await client.read_task_runs()
            mine = [t for t in task_runs if t.flow_run_id in {r.id for r in runs}]
            return "\n".join(str(x.state.message) for x in [*runs, *mine])

    return asyncio.run(read())


def test_keys_planted_everywhere_leave_aca_nowhere(tmp_path, repo, anthropic_fake):
    from prefect.settings import PREFECT_API_URL

    anthropic_fake.api_key = ENV_KEY
    for _ in range(5):
        anthropic_fake.anthropic.enqueue(leaky_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# Sealed\n\n- write a.txt {{#a}}\n  call the API with {TASK_KEY}\n")
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": ENV_KEY,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [
            sys.executable, "-m", "aca_flows", "run", str(tasks), "-w", str(repo),
            "--model", "claude-test",
            "--context", f"the staging key is {CONTEXT_KEY}",
            "--append-system-prompt", f"use the AWS key {PROMPT_KEY}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    terminal = done.stdout + done.stderr
    assert done.returncode == 0, terminal[-3000:]

    # What runs is the user's own text: the model got the task, context and prompt unaltered,
    # and the tool's output as the command printed it.
    agent_calls = [r for r in anthropic_fake.anthropic.requests if r.json.get("tools")]
    sent = "\n".join(r.body.decode() for r in agent_calls)
    assert {"task", "context", "prompt", "tool"} <= set(leaks(sent))

    # Nothing written out holds a key ...
    aca = files_text(repo / ".aca")
    objects = git_objects_text(repo)
    logs, artifacts, parameters = server_record(repo)
    assert leaks(aca) == []
    assert leaks(objects) == []
    assert leaks(terminal) == []
    assert leaks(logs) == []
    assert leaks(artifacts) == []
    assert leaks(json.dumps(parameters)) == []  # as the server stores (and the UI shows) them
    assert parameters["context"] == [f"the staging key is {REDACTED}"]
    # ... though each exit did carry the text, redacted: the task log and results in .aca, the
    # commit message, the tool-call log lines, the task's report.
    (session_dir,) = (repo / ".aca" / "sessions").iterdir()
    assert REDACTED in (session_dir / "execution_logs" / "task_logs" / "a.jsonl").read_text()
    assert REDACTED in files_text(session_dir / "results")
    assert f"the service said {REDACTED}" in objects
    assert "run_command" in logs and REDACTED in logs
    assert f"the service said {REDACTED}" in artifacts
    assert "the service said" in terminal or "Sealed" in terminal
    assert git.Repo(repo).commit(f"aca/{session_dir.name}").tree["a.txt"]


# SECRET_KEY: the secret word need not be the name's last part (it leaked so once).
@pytest.mark.parametrize("name", ["SECRET", "SECRET_KEY"])
def test_a_verify_command_with_a_secret_looking_assignment_runs_as_written(
    tmp_path, repo, anthropic_fake, name
):
    for _ in range(5):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    # It passes only if it ran with the literal value: it compares the digest of what it saw
    # (the digest, so that the value itself is written nowhere).
    digest = hashlib.sha256(b"abcdefgh12\n").hexdigest()
    command = f"test $({name}=abcdefgh12 printenv {name} | sha256sum | cut -c1-64) = {digest}"
    tasks.write_text(f'- write a.txt {{#a verify="{command}"}}\n')
    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")
    assert outcome.summary["status"] == "completed", outcome.error
    # The record of it is redacted, and so is what the server keeps: logs and parameters.
    assert "abcdefgh12" not in files_text(repo / ".aca")
    session = load_session(repo, outcome.summary["session_id"])
    assert session.plan.task("a").verify == command.replace("abcdefgh12", REDACTED)
    from prefect.logging.handlers import APILogHandler

    asyncio.run(APILogHandler.aflush())
    logs, _, parameters = server_record(repo)
    assert "abcdefgh12" not in logs + json.dumps(parameters)


def test_resume_refuses_to_run_a_command_the_record_redacted(tmp_path, repo, anthropic_fake):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    flag = tmp_path / "ready"
    tasks.write_text(f'- write a.txt {{#a verify="SECRET=abcdefgh12 test -f {flag}"}}\n')
    first = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")
    assert first.summary["failed_ids"] == ["a"]
    calls = len(anthropic_fake.anthropic.requests)
    flag.touch()
    again = run_flow(workdir=str(repo), session_id=first.summary["session_id"])
    assert again.state_name == "Failed"
    message = str(again.error)
    assert "cannot be resumed" in message and "a would run with [REDACTED]" in message
    assert "start a new run" in message
    assert len(anthropic_fake.anthropic.requests) == calls  # nothing ran


def test_a_failing_task_reports_why_without_the_key_its_command_printed(
    tmp_path, repo, anthropic_fake
):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f'# Failing\n\n- write a.txt {{#a verify="echo {TOOL_KEY}; false"}}\n')
    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")
    assert outcome.summary["failed_ids"] == ["a"]
    # The agent was shown the output as printed: it has to fix what it sees.
    fix_requests = [r.body.decode() for r in anthropic_fake.anthropic.requests]
    assert any(TOOL_KEY in body for body in fix_requests)

    messages = state_messages(repo)
    logs, artifacts, _ = server_record(repo)
    assert "verify command" in messages and REDACTED in messages
    for exit_text in (files_text(repo / ".aca"), messages, logs, artifacts):
        assert leaks(exit_text) == []


def test_a_key_the_provider_echoes_in_its_error_reaches_no_record(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # A gateway's 400 that quotes the key, cut at 300 characters in the middle of it: the task
    # run's state message, its events and the persisted result (in results/, pushed with the
    # session) held the key's first 31 characters.
    monkeypatch.setenv("ANTHROPIC_API_KEY", ENV_KEY)
    monkeypatch.setattr(anthropic_fake, "api_key", ENV_KEY)
    said = f"{'x' * 260} bad key {ENV_KEY}"
    anthropic_fake.anthropic.enqueue(Reply(status=400, error=said))
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Echo\n\n- write a.txt {#a}\n")
    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")
    assert outcome.summary["failed_ids"] == ["a"]

    messages = state_messages(repo)
    assert "400" in messages and "bad key" in messages
    part = ENV_KEY[:25]  # the part a cut at 300 characters left
    for exit_text in (files_text(repo / ".aca"), messages, *server_record(repo)[:2]):
        assert part not in exit_text


def test_an_error_that_ends_a_task_run_leaves_with_its_text_redacted(monkeypatch):
    # Any error a task run raises is kept by Prefect as its text: a model could name a folder
    # after the key and make reading it fail (a symlink loop's RuntimeError named the path).
    from aca_flows.errors import TransientProviderError
    from aca_flows.session.redact import redact_error

    monkeypatch.setenv("ANTHROPIC_API_KEY", ENV_KEY)
    loop = RuntimeError(f"Symlink loop from '/wt/{ENV_KEY}/loop'")
    assert redact_error(loop) is loop and ENV_KEY not in str(loop)
    echoed = TransientProviderError(f"overloaded: {ENV_KEY}", body=ENV_KEY, retry_after=1)
    assert redact_error(echoed) is echoed  # its type decides a retry
    assert ENV_KEY not in f"{echoed} {echoed.body}" and echoed.retry_after == 1
    unreadable = FileNotFoundError(2, "No such file or directory", f"/wt/{ENV_KEY}")
    sealed = redact_error(unreadable)
    assert ENV_KEY not in str(sealed) and "FileNotFoundError" in str(sealed)
