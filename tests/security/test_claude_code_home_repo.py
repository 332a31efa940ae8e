"""Claude Code's Bash with the repository inside the user's home, where most checkouts are,
where aca clones a ``--repo`` (``~/.aca/repos``), or elsewhere.

Claude Code refuses a command that names a path outside the worktree, not a program that
finds one: the agent writes a script in its worktree and runs it. The real ``claude`` binary,
its own sandbox (bubblewrap), the fake Anthropic server. Before the fix, the script read the
user's PyPI and GitHub tokens and shell history from the home that holds the repository, and
they reached the model.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers import get_provider
from aca_flows.sandbox import check_sandbox
from aca_flows.settings import AcaConfig
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer

MODEL = "claude-sonnet-4-6"
# Run from the worktree, ``.aca/worktrees/<session>/<task>`` in the repository: it walks up to
# the home and reads what a user keeps there, the checkout's own untracked files, and a
# toolchain the user shows the sandbox (``[sandbox] read_only_paths``).
PROBE = """import os
home, repo = {home!r}, {repo!r}
for name in (".pypirc", ".config/gh/hosts.yml", ".bash_history", ".aca/repos/other/.env",
             "other-project/.env"):
    try:
        print(name, open(os.path.join(home, name)).read())
    except OSError as error:
        print(name, "unread:", type(error).__name__)
for name in (".env", ".aca/sessions/s0/secret.txt"):
    try:
        print("checkout", name, open(os.path.join(repo, name)).read())
    except OSError as error:
        print("checkout", name, "unread:", type(error).__name__)
print("toolchain:", open(os.path.join(home, "toolchain", "VERSION")).read())
print("home holds:", sorted(os.listdir(home)))
"""


@pytest.mark.parametrize(
    "where", ["home/src/repo", "home/.aca/repos/example.com/team/repo", "work/repo"]
)
def test_a_script_claude_runs_reads_nothing_of_the_home_that_holds_the_repository(
    tmp_path, monkeypatch, where
):
    check_sandbox(AcaConfig().sandbox, claude_code=True)
    home = tmp_path / "home"
    repo = make_repo(tmp_path / where)
    key = f"sk-ant-api03-PLANTED{uuid.uuid4().hex}"
    planted = {
        home / ".pypirc": f"[pypi]\npassword = pypi-{key}\n",
        home / ".config" / "gh" / "hosts.yml": f"github.com:\n  oauth_token: {key}\n",
        home / ".bash_history": f"export TOKEN={key}\n",
        home / ".aca" / "repos" / "other" / ".env": f"SECRET={key}\n",
        home / "other-project" / ".env": f"SECRET={key}\n",
        repo / ".env": f"SECRET={key}\n",  # untracked: never in a worktree
        repo / ".aca" / "sessions" / "s0" / "secret.txt": key,
        home / "toolchain" / "VERSION": "toolchain-readable\n",
    }
    for path, text in planted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    with FakeLLMServer(api_key=key) as server:
        quiet_claude(monkeypatch, home, server)
        fake = server.anthropic
        probe = PROBE.format(home=str(home), repo=str(repo))
        fake.enqueue(tool_calls=[call("write", "Write", file_path="probe.py", content=probe)])
        fake.enqueue(tool_calls=[call("probe", "Bash", command="python3 probe.py")])
        fake.enqueue(tool_calls=[call("git", "Bash", command="git status --short; git log -1")])
        fake.enqueue(text="Wrote probe.py.")
        config = AcaConfig.model_validate(
            {
                "session": {"model": MODEL},
                "providers": {"claude-code": {"model": MODEL}},
                "sandbox": {"read_only_paths": [str(home / "toolchain")]},
            }
        )
        plan = ExecutionPlan(name="home", tasks=[Task(id="t1", title="Write probe.py")])
        outcome = asyncio.run(
            execute_task(plan, "t1", workdir=repo, session_id="s1",
                         provider=get_provider("claude-code", config), config=config)
        )  # fmt: skip
        requests = [r for r in fake.requests if r.json]
    results = {
        block["tool_use_id"]: json.dumps(block["content"])
        for request in requests
        for message in request.json["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    }
    probe, git = results["toolu_probe"], results["toolu_git"]
    # Nothing of the home nor of the checkout reached the model, in any request.
    assert not [r for r in requests if key in r.body.decode()], probe
    assert "unread:" in probe and "toolchain-readable" in probe, probe
    # The worktree and git's folders work as before: the task's work is committed.
    assert "probe.py" in git and "init" in git, git
    assert outcome.status == "completed", outcome.failure_reason


def quiet_claude(monkeypatch, home: Path, server: FakeLLMServer) -> None:
    """The environment of a claude run against the fake ``server`` (its key; a dropped
    connection retried, as CI once saw one): ``home``, no side traffic."""
    for name, value in {
        "HOME": str(home),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }.items():
        monkeypatch.setenv(name, value)
    server.serve_claude_code(monkeypatch)


def call(name: str, tool: str, **arguments) -> dict:
    return {"id": f"toolu_{name}", "name": tool, "arguments": arguments}
