"""Claude Code's Bash and a repository whose git config holds a credential, as CI checkouts
write it (``http.<url>.extraHeader``) or a remote URL with a token: the credential never
reaches the model, and git works in the worktree. aca's own sandbox shows a copy of the config
without it (``sandbox/git_config.py``); Claude Code's sandbox shows the git directory itself
and cannot show a copy: the config is unreadable there, and the ``git`` aca puts first on the
commands' PATH reads the copy (``sandbox/git_shadow.py``).

Before the fix, a script the agent ran printed the config, token and all, to the model.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers import get_provider
from aca_flows.sandbox import check_sandbox
from aca_flows.settings import AcaConfig
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer
from tests.security.test_claude_code_home_repo import call, quiet_claude

MODEL = "claude-sonnet-4-6"
# Written in the worktree and run there: Claude Code refuses a command naming a path outside.
PROBE = """import subprocess
try:
    print(open({config!r}).read())
except OSError as error:
    print("unread:", type(error).__name__)
print(subprocess.run(["git", "config", "--get-regexp", "remote|http"], capture_output=True,
                     text=True).stdout)
"""


def test_a_credential_in_the_repositorys_git_config_never_reaches_the_model(
    tmp_path, monkeypatch, caplog
):
    check_sandbox(AcaConfig().sandbox, claude_code=True)
    home = tmp_path / "home"
    home.mkdir()
    repo = make_repo(tmp_path / "work" / "repo")
    key = f"sk-ant-api03-PLANTED{uuid.uuid4().hex}"
    token = f"ghs_PLANTED{uuid.uuid4().hex}"
    for setting in (
        ["http.https://github.com/.extraheader", f"AUTHORIZATION: basic {token}"],
        ["remote.origin.url", f"https://x-access-token:{token}@github.com/team/repo.git"],
    ):
        subprocess.run(["git", "-C", str(repo), "config", *setting], check=True)
    with FakeLLMServer(api_key=key) as server:
        quiet_claude(monkeypatch, home, server)
        fake = server.anthropic
        probe = PROBE.format(config=str(repo / ".git" / "config"))
        fake.enqueue(tool_calls=[call("write", "Write", file_path="probe.py", content=probe)])
        command = "python3 probe.py; git status --short; git log -1 --format=%s"
        fake.enqueue(tool_calls=[call("read", "Bash", command=command)])
        fake.enqueue(text="Wrote probe.py.")
        config = AcaConfig.model_validate(
            {"session": {"model": MODEL}, "providers": {"claude-code": {"model": MODEL}}}
        )
        plan = ExecutionPlan(name="creds", tasks=[Task(id="t1", title="Write probe.py")])
        outcome = asyncio.run(
            execute_task(plan, "t1", workdir=repo, session_id="s1",
                         provider=get_provider("claude-code", config), config=config)
        )  # fmt: skip
        requests = [r for r in fake.requests if r.json]
    read = next(
        json.dumps(block["content"])
        for request in requests
        for message in request.json["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result" and block["tool_use_id"] == "toolu_read"
    )
    assert not [r for r in requests if token in r.body.decode()], read
    assert "unread: PermissionError" in read, read
    # git works in the worktree, on a copy of the config without the credential.
    assert "[REDACTED]@github.com/team/repo.git" in read, read
    assert "?? probe.py" in read and "\ninit\n" in read.replace("\\n", "\n"), read
    # aca commits the work all the same.
    assert outcome.status == "completed", outcome.failure_reason
    assert "probe.py" in outcome.files_changed
    # The user's checkout keeps its config: aca pushes with it.
    assert token in (repo / ".git" / "config").read_text()
