"""Hostile agent commands through a real run: the anthropic provider against the fake server,
real git, real bubblewrap.

One task runs every command of ``HOSTILE`` (one ``run_command`` per turn), writes a file and
finishes; the task must complete (the run goes on), each command must end in a refusal or a
contained failure, nothing outside the worktree may change, the listener must see no connection
and the planted key must be nowhere: not in a tool result, not in the commit, not in ``.aca``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers import get_provider
from aca_flows.sandbox import check_sandbox
from aca_flows.settings import AcaConfig
from tests.fakes.llm_server import FakeLLMServer
from tests.security.hostile import HOSTILE, SANDBOX_LIMITS, Hostile, HostileWorld

CONFIG = AcaConfig.model_validate(
    {
        "session": {"model": "claude-test"},
        "agent": {"command_timeout_seconds": 15, "max_turns": 100, "max_fix_attempts": 0,
                  "command_output_limit_bytes": 20_000},
        "sandbox": SANDBOX_LIMITS,
    }
)  # fmt: skip


class HostileRun:
    def __init__(self, world: HostileWorld, outcome, results: dict[str, dict], server):
        self.world = world
        self.outcome = outcome
        self.results = results
        self.server = server


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> HostileRun:
    check_sandbox(CONFIG.sandbox)  # never run these commands unsandboxed
    world = HostileWorld.create(tmp_path_factory.mktemp("hostile"))
    with FakeLLMServer(api_key=world.key) as server, pytest.MonkeyPatch.context() as patch:
        for name, value in {**world.environment(), "ANTHROPIC_BASE_URL": server.url}.items():
            patch.setenv(name, value)
        world.llm_port = int(server.url.rsplit(":", 1)[1])
        for hostile in HOSTILE:
            server.anthropic.enqueue(
                tool_calls=[{"id": f"toolu_{hostile.id}", "name": "run_command",
                             "arguments": {"command": world.command(hostile)}}]
            )  # fmt: skip
        # The task's own work, so that it completes with a change (aca commits nothing else).
        server.anthropic.enqueue(
            tool_calls=[{"name": "write_file", "arguments": {"path": "notes.txt", "content": "x"}}]
        )
        server.anthropic.enqueue(
            tool_calls=[{"name": "finish", "arguments": {"summary": "tried everything"}}]
        )
        plan = ExecutionPlan(name="hostile", tasks=[Task(id="t1", title="Be hostile")])
        outcome = asyncio.run(
            execute_task(plan, "t1", workdir=world.repo, session_id="s1",
                         provider=get_provider("anthropic", CONFIG), config=CONFIG)
        )  # fmt: skip
        last = server.anthropic.requests[-1].json
    results = {
        block["tool_use_id"].removeprefix("toolu_"): block
        for message in last["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    }
    yield HostileRun(world, outcome, results, server)
    world.listener.close()


def text_of(result: dict) -> str:
    content = result["content"]
    return content if isinstance(content, str) else json.dumps(content)


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.id for h in HOSTILE])
def test_each_hostile_command_is_refused_or_contained(hostile_run, hostile: Hostile):
    text = text_of(hostile_run.results[hostile.id])

    assert any(expected in text for expected in hostile.expect), text[:2000]
    assert hostile_run.world.key not in text
    assert "PLANTED" not in text


def test_the_run_goes_on_and_commits_only_inside_the_worktree(hostile_run):
    outcome, world = hostile_run.outcome, hostile_run.world
    assert len(HOSTILE) >= 30
    assert outcome.status == "completed", outcome.failure_reason
    assert set(hostile_run.results) >= {h.id for h in HOSTILE}
    assert world.changes_outside_the_worktree() == []
    assert world.listener.connections == 0
    # Only the agent's own turns reached the LLM server: no command got through to it.
    assert len(hostile_run.server.model_calls) == len(HOSTILE) + 2


def test_the_planted_key_is_nowhere_aca_wrote(hostile_run):
    world = hostile_run.world
    committed = world.repo / ".aca"
    leaks = [
        str(path)
        for path in committed.rglob("*")
        if path.is_file() and world.key.encode() in path.read_bytes()
    ]
    assert leaks == []
    grep = subprocess.run(
        ["git", "-C", str(world.repo), "grep", "-c", "PLANTED", "aca/s1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert grep.returncode == 1 and grep.stdout == ""  # no match on the session branch


def test_few_processes_are_visible_and_none_of_aca(hostile_run):
    text = text_of(hostile_run.results["process-count"])
    count = int(text.split("processes=")[1].split()[0])
    assert count < 10
