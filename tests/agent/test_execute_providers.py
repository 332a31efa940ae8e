"""execute_task with the real providers: anthropic against the fake server, then replayed."""

from __future__ import annotations

import asyncio
import json

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers import get_provider
from aca_flows.providers.replay import ReplayProvider
from aca_flows.settings import AcaConfig
from tests.fakes.llm_server import llm_server  # noqa: F401  (the fixture)
from tests.workspace.test_repository import make_user_repo

CONFIG = AcaConfig.model_validate({"session": {"model": "claude-test"}})


def greet_plan() -> ExecutionPlan:
    task = Task(id="greet", title="Greet the world", verify="grep -q 'hello, world' app.py")
    return ExecutionPlan(name="p", tasks=[task])


def script_anthropic(server) -> None:
    server.anthropic.enqueue(tool_calls=[{"name": "read_file", "arguments": {"path": "app.py"}}])
    server.anthropic.enqueue(
        tool_calls=[
            {
                "name": "edit_file",
                "arguments": {
                    "path": "app.py",
                    "old_string": "print('hello')",
                    "new_string": "print('hello, world')",
                },
            },
            {"name": "read_file", "arguments": {"path": "/etc/passwd"}},
        ]
    )
    server.anthropic.enqueue(
        tool_calls=[{"name": "finish", "arguments": {"summary": "Greets the world."}}],
        usage={"input_tokens": 50, "output_tokens": 7},
    )


def run(workdir, provider):
    return asyncio.run(
        execute_task(
            greet_plan(),
            "greet",
            workdir=workdir,
            session_id="s1",
            provider=provider,
            config=CONFIG,
        )
    )


def test_anthropic_tool_conversation_on_the_fake_server_then_replayed(tmp_path, llm_server):  # noqa: F811
    script_anthropic(llm_server)
    first = make_user_repo(tmp_path / "first")
    cassette = tmp_path / "greet.cassette.json"
    recorded = run(tmp_path / "first", get_provider("anthropic", CONFIG, record=cassette))

    assert recorded.status == "completed", recorded.failure_reason
    assert first.git.show("aca/s1:app.py") == "print('hello, world')"
    assert first.git.log("aca/s1", "--format=%s").splitlines() == [
        "aca(greet): Greet the world",
        "init",
    ]
    assert (tmp_path / "first" / "app.py").read_text() == "print('hello')\n"
    assert recorded.usage.input_tokens == 10 + 10 + 50
    # The server saw the tool results, including the refusal, in the same conversation.
    third = llm_server.anthropic.requests[2].json
    results = [
        block
        for message in third["messages"]
        for block in (message["content"] if isinstance(message["content"], list) else [])
        if block.get("type") == "tool_result"
    ]
    texts = json.dumps(results)
    assert "print('hello')" in texts and "refused" in texts
    assert {t["name"] for t in third["tools"]} >= {"read_file", "edit_file", "finish"}

    # The same run replayed offline from the cassette, in a fresh repository.
    second = make_user_repo(tmp_path / "second")
    replay = ReplayProvider(cassette)
    replayed = run(tmp_path / "second", replay)
    assert replayed.status == "completed", replayed.failure_reason
    assert replay.remaining == 0
    assert second.git.show("aca/s1:app.py") == "print('hello, world')"
    assert replayed.summary == recorded.summary == "Greets the world."
