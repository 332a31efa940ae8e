"""What an agent's model is sent holds no secret aca knows: not a token in the task's own
text, nor one a command it was given printed (``[sandbox] env``). The provider's servers
keep what they are sent; only the code as it is, not a key, needs to reach them."""

from __future__ import annotations

import asyncio

import pytest

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.sandbox import check_sandbox
from aca_flows.settings import AcaConfig
from tests.fakes.git_repo import make_repo
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use

TOKEN = "npm_" + "R5tYq2Wz8KcL1vBx7NmP" * 2
CONFIG = AcaConfig.model_validate(
    {"session": {"model": "claude-test"}, "sandbox": {"env": ["NPM_TOKEN"]}}
)


def test_a_token_in_the_task_or_printed_by_a_command_never_reaches_the_model(tmp_path):
    check_sandbox(CONFIG.sandbox)
    repo = make_repo(tmp_path / "repo")
    fixture = 'password = "hunter2-fixture"'  # code as it is: no secret aca knows
    provider = ScriptedProvider(
        tool_calls(
            tool_use("run_command", command='printf "%s\\n" "$NPM_TOKEN" | base64 -w 20; env'),
            tool_use("write_file", path="conf.py", content=fixture),
        ),
        tool_calls(tool_use("read_file", path="conf.py")),
        tool_calls(tool_use("finish", summary="done")),
    )
    plan = ExecutionPlan(
        name="npm", tasks=[Task(id="t1", title=f"log in to npm with {TOKEN}", verify="true")]
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NPM_TOKEN", TOKEN)
        outcome = asyncio.run(
            execute_task(plan, "t1", workdir=repo, session_id="s1", provider=provider,
                         config=CONFIG)
        )  # fmt: skip

    assert outcome.status == "completed", outcome.failure_reason
    sent = [r.model_dump_json() for r in provider.history]
    assert all(TOKEN not in request for request in sent)
    assert "[REDACTED]" in sent[0]  # the title
    printed = "".join(r.content for m in provider.history[1].messages for r in m.tool_results)
    assert "NPM_TOKEN=[REDACTED]" in printed and printed.split("\n")[1].startswith("[REDACTED]")
    read = "".join(r.content for m in provider.history[-1].messages for r in m.tool_results)
    assert fixture in read  # the file as it is
