"""The prompt carries the task, its context, its dependencies, its files and its verify command."""

from __future__ import annotations

from aca_flows.agent.prompt import (
    DependencyContext,
    build_system_prompt,
    build_task_prompt,
)
from aca_flows.agent.subtasks import SUBTASK_BLOCK_HELP
from aca_flows.plan.models import ExecutionPlan, FileRef, Task, TaskMetadata, verify_command_for


def sample_plan() -> ExecutionPlan:
    return ExecutionPlan(
        name="p",
        context_hints=["Python 3.11 project", "tests use pytest"],
        append_system_prompt="Always write docstrings.",
        verify="pytest -q",
        tasks=[
            Task(id="epic", title="Parser rewrite", description="Replace the regex parser."),
            Task(id="lex", title="Lexer", parent_id="epic", description="Tokens first."),
            Task(
                id="lex.num",
                title="Numbers",
                description="Lex integers and floats.",
                parent_id="lex",
                dependencies=["base"],
                metadata=TaskMetadata(
                    file_refs=[
                        FileRef(path="spec.md", content="NUMBER := DIGIT+"),
                        FileRef(path="src/lexer.py"),
                        FileRef(path="missing.py"),
                    ]
                ),
            ),
            Task(id="base", title="Base", verify="make check"),
        ],
    )


def test_the_task_prompt_has_every_part_in_order():
    plan = sample_plan()
    files = {"src/lexer.py": "def lex(): ..."}
    prompt = build_task_prompt(
        plan,
        plan.task("lex.num"),
        dependencies=[
            DependencyContext(
                task_id="base", title="Base", summary="Added Token.", files_changed=["src/token.py"]
            )
        ],
        read_file=files.get,
    )
    order = [
        "# Task lex.num: Numbers",
        "Lex integers and floats.",
        "- Python 3.11 project",
        "- epic: Parser rewrite\n  Replace the regex parser.",
        "- lex: Lexer",
        "### base: Base\nAdded Token.\nFiles changed: src/token.py",
        "### spec.md\n```\nNUMBER := DIGIT+\n```",
        "### src/lexer.py\n```\ndef lex(): ...\n```",
        "### missing.py\n(not found)",
        "```\npytest -q\n```",
    ]
    positions = [prompt.index(part) for part in order]
    assert positions == sorted(positions)


def test_a_task_s_own_verify_command_wins_over_the_plan_default():
    plan = sample_plan()
    assert verify_command_for(plan, plan.task("base")) == "make check"
    assert verify_command_for(plan, plan.task("lex")) == "pytest -q"
    assert "make check" in build_task_prompt(plan, plan.task("base"))


def test_the_appended_system_prompt_comes_last():
    plan = sample_plan()
    for claude_code in (False, True):
        system = build_system_prompt(plan, claude_code=claude_code)
        assert system.endswith("Always write docstrings.")
    assert "propose_subtasks" in build_system_prompt(plan, claude_code=False)
    assert SUBTASK_BLOCK_HELP in build_system_prompt(plan, claude_code=True)


def test_a_bare_task_prompt_is_just_the_task():
    plan = ExecutionPlan(name="p", tasks=[Task(id="t", title="Do it")])
    assert build_task_prompt(plan, plan.task("t")) == "# Task t: Do it\n"
