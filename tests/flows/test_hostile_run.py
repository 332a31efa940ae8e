"""Hostile commands through a whole ``aca-run`` flow: a real Prefect server, real git, real
bubblewrap, the anthropic provider on the fake server, a planted key as its API key.

Task ``a`` is hostile (its agent and its verify command), task ``b`` depends on it and is
ordinary: the run must complete both, nothing outside the worktrees may change, and the key
must be in no commit, no ``.aca`` file, no Prefect log or artifact.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from prefect.settings import PREFECT_HOME

from aca_flows.flows import run_flow
from aca_flows.sandbox import check_sandbox
from aca_flows.settings import SandboxSection
from tests.fakes.coding_agent import coding_agent, task_of
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest, Reply
from tests.security.hostile import HOSTILE, SANDBOX_LIMITS, HostileWorld

IN_THE_FLOW = (
    "proc-every-environ", "env-dump", "ssh-key-by-path", "hook-through-dotdot",
    "git-config-fsmonitor", "connect-local-listener", "denied-curl", "never-ends", "fork-bomb",
)  # fmt: skip
# It dumps every environment it can see and passes only if the planted key (its marker,
# "PLANTED", not the key itself) is in none of them.
HOSTILE_VERIFY = (
    "cat /proc/[0-9]*/environ > env-dump.txt; env >> env-dump.txt; "
    "echo 'touch {marker}' > ../../../../.git/hooks/post-merge; test -f a.txt && "
    "grep -q HOME=/tmp/home env-dump.txt && ! grep -q PLANTED env-dump.txt"
)


@pytest.fixture
def world(tmp_path, monkeypatch):
    check_sandbox(SandboxSection())  # never run these commands unsandboxed
    world = HostileWorld.create(tmp_path / "world")
    with FakeLLMServer(api_key=world.key) as server:
        world.llm_port = int(server.url.rsplit(":", 1)[1])
        # Prefect's home stays the session's: a run reads Prefect's settings again when it
        # starts, and would put its results under the world's HOME, in the world's snapshot.
        monkeypatch.setenv("PREFECT_HOME", str(PREFECT_HOME.value()))
        for name, value in {**world.environment(), "ANTHROPIC_BASE_URL": server.url}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("ACA_SESSION__PROVIDER", "anthropic")
        world.server = server
        yield world
    world.listener.close()


def hostile_agent(world: HostileWorld):
    commands = [world.command(h) for h in HOSTILE if h.id in IN_THE_FLOW]

    def reply(request: RecordedRequest) -> Reply:
        task_id, _, _ = task_of(request)
        if task_id != "a":
            return coding_agent(request)
        turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
        steps = [{"name": "run_command", "arguments": {"command": c}} for c in commands]
        steps.append({"name": "write_file", "arguments": {"path": "a.txt", "content": "a\n"}})
        steps.append({"name": "finish", "arguments": {"summary": "did a"}})
        return Reply(tool_calls=[steps[min(turn, len(steps) - 1)]])

    return reply


def test_a_hostile_task_in_a_real_flow_is_contained_and_the_run_completes(world, tmp_path):
    for _ in range(40):
        world.server.anthropic.enqueue(hostile_agent(world))
    config = tmp_path / "aca.toml"
    limits = "\n".join(f"{k} = {v}" for k, v in SANDBOX_LIMITS.items())
    config.write_text(f"[agent]\ncommand_timeout_seconds = 8\n\n[sandbox]\n{limits}\n")
    tasks = tmp_path / "tasks.md"
    verify = HOSTILE_VERIFY.format(marker=world.marker).replace('"', '\\"')
    tasks.write_text(
        f'# Hostile\n\n- be hostile {{#a verify="{verify}"}}\n- write b.txt {{#b depends_on=a}}\n'
    )

    outcome = run_flow(
        task_file=str(tasks), workdir=str(world.repo), model="claude-test", config_file=str(config)
    )

    summary = outcome.summary
    assert summary is not None, outcome.error
    assert summary["status"] == "completed" and summary["counts"] == {"completed": 2}
    assert world.changes_outside_the_worktree() == []
    assert world.listener.connections == 0
    # The verify command passed: the environments it saw held no key. What it wrote is not
    # committed (the work is committed as the checks found it).
    repo = world.repo
    branch = summary["branch"]
    files = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", branch],
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert "a.txt" in files and "env-dump.txt" not in files
    history = subprocess.run(["git", "-C", str(repo), "log", "--all", "-p"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "b.txt" in history and world.key not in history
    leaks = [p for p in (repo / ".aca").rglob("*") if p.is_file() and world.key.encode() in
             p.read_bytes()]  # fmt: skip
    assert leaks == []
    assert world.key not in prefect_text(summary["session_id"])


def prefect_text(session_id: str) -> str:
    """Every log line and artifact of the session's flow run, read back through the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    async def read() -> str:
        await APILogHandler.aflush()  # the run's logs are sent in batches
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(like_=f"%{session_id.lower()}%")
                )
            )
            ids = list({a.flow_run_id for a in artifacts if a.flow_run_id})
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))
            )
        assert ids and logs and artifacts  # the run's records were found
        return "\n".join([*(log.message for log in logs), *(str(a.data) for a in artifacts)])

    return asyncio.run(read())
