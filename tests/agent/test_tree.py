"""Proposed subtasks are executed after their parent's work, and recorded in the task tree."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aca_flows.agent import execute_task, execute_task_tree
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.settings import AcaConfig
from tests.fakes.scripted_provider import ScriptedProvider, final, tool_calls, tool_use
from tests.workspace.test_repository import make_user_repo


def test_subtasks_proposed_with_the_tool_run_in_order_and_are_recorded(tmp_path):
    repo = make_user_repo(tmp_path)
    plan = ExecutionPlan(name="p", tasks=[Task(id="api", title="Build the API")])
    provider = ScriptedProvider(
        # The parent writes the skeleton and proposes the rest.
        tool_calls(
            tool_use("write_file", path="api.py", content="ROUTES = []\n"),
            tool_use(
                "propose_subtasks",
                subtasks=[
                    {"id": "docs", "title": "Document routes", "dependencies": ["routes"]},
                    {"id": "routes", "title": "Add routes", "verify": "grep -q users api.py"},
                ],
            ),
        ),
        tool_calls(tool_use("finish", summary="Skeleton; routes and docs proposed.")),
        # api.routes runs first (api.docs depends on it) and sees the skeleton.
        tool_calls(tool_use("read_file", path="api.py")),
        tool_calls(tool_use("write_file", path="api.py", content="ROUTES = ['users']\n")),
        tool_calls(tool_use("finish", summary="Added users.")),
        # api.docs
        tool_calls(tool_use("write_file", path="API.md", content="users\n")),
        tool_calls(tool_use("finish", summary="Documented.")),
    )
    outcomes = asyncio.run(
        execute_task_tree(plan, "api", workdir=tmp_path, session_id="s1", provider=provider)
    )

    assert list(outcomes) == ["api", "api.routes", "api.docs"]
    assert all(o.status == "completed" for o in outcomes.values())
    assert plan.task("api").children == ["api.docs", "api.routes"]
    assert plan.task("api.docs").dependencies == ["api.routes"]
    assert [t.status.state for t in plan.tasks] == ["completed"] * 3
    assert provider.history[3].messages[-1].tool_results[0].content == "ROUTES = []\n"
    assert "Added users." in provider.history[5].messages[0].text  # dependency summary
    assert repo.git.log("aca/s1", "--format=%s").splitlines() == [
        "aca(api.docs): Document routes",
        "aca(api.routes): Add routes",
        "aca(api): Build the API",
        "init",
    ]


def test_a_failed_subtask_fails_its_parent_and_skips_its_dependents(tmp_path):
    make_user_repo(tmp_path)
    plan = ExecutionPlan(name="p", tasks=[Task(id="p", title="Parent")])
    provider = ScriptedProvider(
        tool_calls(
            tool_use(
                "propose_subtasks",
                subtasks=[
                    {"id": "a", "title": "A", "verify": "false"},
                    {"id": "b", "title": "B", "dependencies": ["a"]},
                ],
            ),
            tool_use("finish", summary="split"),
        ),
        *[tool_calls(tool_use("finish", summary="a")) for _ in range(3)],
    )
    outcomes = asyncio.run(
        execute_task_tree(plan, "p", workdir=tmp_path, session_id="s1", provider=provider)
    )
    assert outcomes["p"].status == "failed" and "p.a" in outcomes["p"].failure_reason
    assert outcomes["p"].display_status == "failed"  # its split was no change, but it failed
    assert plan.task("p.a").status.state == "failed"
    assert plan.task("p.b").status.state == "skipped"
    assert "p.b" not in outcomes


def test_claude_code_proposes_subtasks_in_a_block(tmp_path):
    repo = make_user_repo(tmp_path)
    plan = ExecutionPlan(name="p", tasks=[Task(id="big", title="Big job")])

    def parent(request):
        (Path(request.options["cwd"]) / "part1.txt").write_text("1\n")
        return final(
            "Did part 1.\n```aca-subtasks\n"
            '[{"id": "part2", "title": "Part 2", "description": "the rest"}]\n```'
        )

    def child(request):
        assert (Path(request.options["cwd"]) / "part1.txt").exists()
        (Path(request.options["cwd"]) / "part2.txt").write_text("2\n")
        return final("Did part 2.")

    provider = ScriptedProvider(parent, child, name="claude-code")
    outcomes = asyncio.run(
        execute_task_tree(plan, "big", workdir=tmp_path, session_id="s1", provider=provider)
    )
    assert outcomes["big"].summary == "Did part 1."
    assert outcomes["big.part2"].status == "completed"
    assert plan.task("big.part2").parent_id == "big"
    assert plan.task("big").status.state == "completed"
    assert repo.git.show("aca/s1:part2.txt") == "2"


def test_claude_codes_subtasks_stand_though_a_fix_round_follows_the_block(tmp_path):
    # The fix round's answer carries no block: the proposal of the round before was dropped,
    # the task completed with half its work, and nothing said so.
    repo = make_user_repo(tmp_path)
    plan = ExecutionPlan(name="p", tasks=[Task(id="p", title="P", verify="grep -q good p.txt")])

    def writes(name: str, text: str, answer: str):
        def reply(request):
            (Path(request.options["cwd"]) / name).write_text(text)
            return final(answer)

        return reply

    block = '```aca-subtasks\n[{"id": "x", "title": "X", "verify": "test -f x.txt"}]\n```'
    provider = ScriptedProvider(
        writes("p.txt", "bad\n", f"First half.\n{block}"),
        writes("p.txt", "good\n", "Fixed p.txt."),
        writes("x.txt", "x\n", "Did x."),
        name="claude-code",
    )
    outcomes = asyncio.run(
        execute_task_tree(plan, "p", workdir=tmp_path, session_id="s1", provider=provider)
    )

    assert list(outcomes) == ["p", "p.x"]
    assert outcomes["p.x"].status == "completed"
    assert repo.git.show("aca/s1:x.txt") == "x"


def test_a_claude_code_block_that_cannot_be_taken_goes_back_to_claude(tmp_path):
    # A subtask depending on a task the plan does not have was dropped with a warning after
    # the task completed "no change: the work is split into subtasks": exit 0, work not done.
    make_user_repo(tmp_path)

    def split(*depends_on: str):
        return final(
            "Split.\n```aca-subtasks\n"
            f'[{{"id": "x", "title": "X", "dependencies": {json.dumps(depends_on)}}}]\n```'
        )

    def does_x(request):
        (Path(request.options["cwd"]) / "x.txt").write_text("x\n")
        return final("Did x.")

    def run(*answers, fix_rounds: int):
        plan = ExecutionPlan(name="p", tasks=[Task(id="p", title="P")])
        config = AcaConfig(agent={"max_fix_attempts": fix_rounds})
        provider = ScriptedProvider(*answers, name="claude-code")
        outcomes = asyncio.run(
            execute_task_tree(
                plan, "p", workdir=tmp_path, session_id=f"s{fix_rounds}", provider=provider,
                config=config,
            )
        )  # fmt: skip
        return outcomes, provider

    outcomes, provider = run(split("tests"), fix_rounds=0)
    assert outcomes["p"].status == "failed" and "p.x" not in outcomes
    assert "subtask x depends on unknown task 'tests'" in outcomes["p"].failure_reason
    assert "Nothing was merged" in outcomes["p"].failure_reason

    outcomes, provider = run(split("tests"), split(), does_x, fix_rounds=1)
    told = provider.history[1].messages[-1].text
    assert "block was refused" in told and "unknown task 'tests'" in told, told
    assert outcomes["p"].status == "completed" and outcomes["p.x"].status == "completed"


def test_subtasks_proposed_by_a_task_that_landed_as_aca_died_are_found_by_the_resume(tmp_path):
    # Killed once the work landed and before the run journalled the subtasks, the resume
    # found the task done on the branch, and its subtasks were never made (exit 0).
    make_user_repo(tmp_path)
    plan = ExecutionPlan(name="p", tasks=[Task(id="big", title="Big job")])

    def parent(request):
        (Path(request.options["cwd"]) / "part1.txt").write_text("1\n")
        return final('Did part 1.\n```aca-subtasks\n[{"id": "part2", "title": "Part 2"}]\n```')

    options = {"workdir": tmp_path, "session_id": "s1"}
    provider = ScriptedProvider(parent, name="claude-code")
    first = asyncio.run(execute_task(plan, "big", provider=provider, **options))
    assert first.commit_sha and [p.id for p in first.proposed_subtasks] == ["part2"]

    resumed = asyncio.run(
        execute_task(plan, "big", provider=ScriptedProvider(), first_attempt=False, **options)
    )

    assert resumed.already_completed and resumed.commit_sha == first.commit_sha
    assert resumed.proposed_subtasks == first.proposed_subtasks


def test_a_resumed_tree_runs_nothing_again(tmp_path):
    make_user_repo(tmp_path)
    plan = ExecutionPlan(name="p", tasks=[Task(id="p", title="Parent")])
    provider = ScriptedProvider(
        tool_calls(
            tool_use("propose_subtasks", subtasks=[{"id": "a", "title": "A"}]),
            tool_use("write_file", path="p.txt", content="p\n"),
            tool_use("finish", summary="split"),
        ),
        tool_calls(tool_use("write_file", path="a.txt", content="a\n")),
        tool_calls(tool_use("finish", summary="a")),
    )
    options = {"workdir": tmp_path, "session_id": "s1"}
    asyncio.run(execute_task_tree(plan, "p", provider=provider, **options))

    stored = ExecutionPlan.model_validate(plan.model_dump())  # the tree as the session keeps it
    silent = ScriptedProvider()
    outcomes = asyncio.run(execute_task_tree(stored, "p", provider=silent, **options))
    assert silent.history == []
    assert [o.already_completed for o in outcomes.values()] == [True, True]
    assert [t.status.state for t in stored.tasks] == ["completed", "completed"]
