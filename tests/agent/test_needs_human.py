"""An agent that asks for a person (``ask_human``, ``NEEDS HUMAN:``): the task fails with its
question, nothing is verified or committed, and its diff is kept for the person. Real git."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aca_flows.agent.needs_human import parse_needs_human
from aca_flows.plan.models import Task
from aca_flows.settings import AcaConfig
from aca_flows.workspace import completed_task_commits
from tests.agent.test_execute import SESSION, execute, plan_of
from tests.fakes.llm_server import llm_server  # noqa: F401  (fixture)
from tests.fakes.scripted_provider import ScriptedProvider, final, tool_calls, tool_use
from tests.providers.conftest import claude_env  # noqa: F401  (fixture)
from tests.workspace.test_repository import make_user_repo


@pytest.fixture
def repo(tmp_path):
    return make_user_repo(tmp_path)


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("Looked around.\nNEEDS HUMAN: Postgres or SQLite?", "Postgres or SQLite?"),
        ("NEEDS HUMAN: which one?\n\n", "which one?"),
        ("NEEDS HUMAN:", None),  # no question
        ("needs human: lower case?", None),
        ("NEEDS HUMAN: not last\nthen more text", None),
    ],
)
def test_only_a_final_marker_line_with_a_question_counts(text, question):
    assert parse_needs_human(text) == question


def test_ask_human_ends_the_round_and_fails_the_task_with_the_question(tmp_path, repo):
    provider = ScriptedProvider(
        tool_calls(tool_use("write_file", path="draft.txt", content="half done\n")),
        tool_calls(tool_use("ask_human", question="Keep the old API  or\nbreak it?")),
    )
    task = Task(id="t1", title="Rework the API", verify="false")
    outcome = asyncio.run(execute(tmp_path, plan_of(task), "t1", provider))

    assert outcome.status == "failed"
    assert outcome.human_question == "Keep the old API or break it?"
    assert outcome.failure_reason == (
        "the agent needs a person to decide: Keep the old API or break it?"
    )
    assert outcome.verify_passed is None  # nothing was verified
    assert len(provider.history) == 2  # the round ended at the question
    assert completed_task_commits(repo, SESSION) == {}
    # Its work is kept for the person who answers: the diff of the discarded worktree.
    assert "+++ b/draft.txt" in outcome.diff and "+half done" in outcome.diff
    assert not (tmp_path / ".aca" / "worktrees" / SESSION / "t1").exists()
    # The tool is offered to the model, and the prompt says when to use it.
    assert "ask_human" in {t.name for t in provider.history[0].tools}
    assert "call ask_human" in provider.history[0].system


def test_ask_human_without_a_question_is_refused_and_the_model_goes_on(tmp_path, repo):
    provider = ScriptedProvider(
        tool_calls(tool_use("ask_human", question="  ")),
        tool_calls(tool_use("write_file", path="a.txt", content="a\n")),
        tool_calls(tool_use("finish", summary="wrote a")),
    )
    outcome = asyncio.run(execute(tmp_path, plan_of(Task(id="t1", title="T")), "t1", provider))
    assert outcome.status == "completed"
    (refusal,) = provider.history[1].messages[-1].tool_results
    assert refusal.is_error and "give the question" in refusal.content


def test_claude_code_asks_with_its_last_line(tmp_path, repo):
    def claude_run(request):
        (Path(request.options["cwd"]) / "cc.txt").write_text("started\n")
        return final("I started, but the spec contradicts itself.\nNEEDS HUMAN: Which spec wins?")

    provider = ScriptedProvider(claude_run, name="claude-code")
    task = Task(id="t1", title="Via Claude Code", verify="false")
    outcome = asyncio.run(execute(tmp_path, plan_of(task), "t1", provider))

    assert outcome.status == "failed" and outcome.human_question == "Which spec wins?"
    assert outcome.failure_reason == "the agent needs a person to decide: Which spec wins?"
    assert len(provider.history) == 1  # no fix request: nothing was verified
    assert "+started" in outcome.diff
    assert "NEEDS HUMAN: <your question>" in provider.history[0].system


def test_a_failed_verify_keeps_the_diff_clipped(tmp_path, repo):
    big = "".join(f"line {i}\n" for i in range(5000))
    provider = ScriptedProvider(
        tool_calls(tool_use("write_file", path="big.txt", content=big)),
        tool_calls(tool_use("write_file", path="small.txt", content="small\n")),
        tool_calls(tool_use("finish", summary="wrote")),
    )
    task = Task(id="t1", title="T", verify="false")
    config = AcaConfig.model_validate({"agent": {"max_fix_attempts": 0}})
    outcome = asyncio.run(execute(tmp_path, plan_of(task), "t1", provider, config=config))

    assert outcome.status == "failed" and outcome.human_question is None
    assert len(outcome.diff) < 21_000
    assert outcome.diff.startswith("diff --git a/big.txt b/big.txt")
    assert outcome.diff.rstrip().endswith("also changed: small.txt]")


def test_the_real_claude_code_binary_asks_with_its_last_line(
    tmp_path,
    repo,
    claude_env,  # noqa: F811
    llm_server,  # noqa: F811
):
    """The bundled ``claude`` against the fake server: the marker survives its result text."""
    from aca_flows.providers import get_provider

    worktree = tmp_path / ".aca" / "worktrees" / SESSION / "t1"
    write = {"file_path": str(worktree / "cc.txt"), "content": "x\n"}
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Write", "arguments": write}])
    llm_server.anthropic.enqueue(text="I wrote a draft.\nNEEDS HUMAN: Which spec wins, v1 or v2?")
    config = AcaConfig.model_validate({"providers": {"claude-code": {"model": "claude-test"}}})
    provider = get_provider("claude-code", config)
    task = Task(id="t1", title="Via Claude Code", verify="false")

    outcome = asyncio.run(execute(tmp_path, plan_of(task), "t1", provider, config=config))

    assert outcome.status == "failed", outcome.failure_reason
    assert outcome.human_question == "Which spec wins, v1 or v2?"
    assert outcome.verify_passed is None
    assert "+++ b/cc.txt" in outcome.diff
