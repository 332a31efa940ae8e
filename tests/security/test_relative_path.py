"""A relative entry in the user's PATH never runs a program the agent put in its worktree.

``PATH=node_modules/.bin:$PATH`` (or ``.``, or an empty entry) names a folder of whatever
directory a program starts in. aca starts its git, bubblewrap, and claude (which starts
bwrap, socat and git itself) in the task's worktree, outside any sandbox: an agent that
writes ``evil/git`` or ``evil/bwrap`` there, with ``evil`` on PATH, must not get them run.
Each planted program notes its name, then runs the real one (so the run goes on).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers import get_provider
from aca_flows.providers.claude_code import bundled_claude_cli
from aca_flows.sandbox import check_sandbox
from aca_flows.settings import AcaConfig
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use

PLANTED = ("git", "bwrap", "socat")
PLAN = ExecutionPlan(name="path", tasks=[Task(id="t1", title="Work")])


def planted(name: str, marker) -> str:
    real = shutil.which(name) or bundled_claude_cli()
    return f'#!/bin/sh\necho {name} >> {marker}\nexec {real} "$@"\n'


def test_acas_git_and_bubblewrap_never_run_the_agents_programs(tmp_path, monkeypatch):
    check_sandbox(AcaConfig().sandbox)
    repo = make_repo(tmp_path / "repo")
    marker = tmp_path / "ran-outside"
    monkeypatch.setenv("PATH", "evil" + os.pathsep + os.environ["PATH"])
    writes = [tool_use("write_file", path=f"evil/{n}", content=planted(n, marker)) for n in PLANTED]
    provider = ScriptedProvider(
        tool_calls(*writes),
        tool_calls(tool_use("run_command", command="chmod +x evil/*")),
        tool_calls(tool_use("run_command", command="echo inside")),
        tool_calls(tool_use("finish", summary="planted")),
    )

    outcome = asyncio.run(
        execute_task(PLAN, "t1", workdir=repo, session_id="s1", provider=provider)
    )

    assert outcome.status == "completed", outcome.failure_reason
    assert not marker.exists(), marker.read_text()


@pytest.mark.parametrize("cli_path", [None, "evil/claude"])
def test_claude_never_runs_the_agents_programs(tmp_path, monkeypatch, cli_path):
    # aca runs from the repository's root; evil/claude in the task's worktree (where claude
    # starts) is the agent's: a claude found on PATH must come from an absolute folder, and a
    # relative cli_path names the checkout's file (the user's), not the worktree's. npm, which
    # aca asks for its root (the shim claude is given), is found on an absolute folder too.
    config = AcaConfig.model_validate(
        {
            "providers": {"claude-code": {"model": "claude-test"}},
            "claude_code": {"cli_path": cli_path},
        }
    )
    check_sandbox(config.sandbox, claude_code=True)
    repo = make_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    marker = tmp_path / "ran-outside"
    (repo / "evil").mkdir()
    for name in PLANTED + ("claude", "npm"):
        (repo / "evil" / name).write_text(planted(name, marker))
        (repo / "evil" / name).chmod(0o755)
    git = ["git", "-C", str(repo), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "programs on a relative PATH"], check=True)
    # The checkout's own claude (the user's): runs the real one, noting nothing.
    (repo / "evil" / "claude").write_text(f'#!/bin/sh\nexec {bundled_claude_cli()} "$@"\n')
    with FakeLLMServer() as server:
        server.serve_claude_code(monkeypatch)
        monkeypatch.setenv("PATH", "evil" + os.pathsep + os.environ["PATH"])
        server.anthropic.enqueue(
            tool_calls=[{"name": "Bash", "arguments": {"command": "echo inside"}}]
        )
        server.anthropic.enqueue(text="Nothing to do.\nNO CHANGE NEEDED: a probe")
        outcome = asyncio.run(
            execute_task(PLAN, "t1", workdir=repo, session_id="s1",
                         provider=get_provider("claude-code", config), config=config)
        )  # fmt: skip

    assert outcome.status == "completed", outcome.failure_reason
    assert not marker.exists(), marker.read_text()
