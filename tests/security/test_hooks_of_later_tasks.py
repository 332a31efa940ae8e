"""No hook of the repository runs when aca works on it, for every task of a run.

aca's git runs outside the sandbox, as the user. A hook in ``.git/hooks`` — left by an earlier
agent in mode "off", or installed by a tool — would run there when aca makes a task's worktree
(``post-checkout``), commits (``pre-commit``, ``post-commit``) or moves a ref
(``reference-transaction``): the second task of a run as much as the first.
"""

from __future__ import annotations

import asyncio

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from tests.fakes.git_repo import make_repo
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use

HOOKS = ("post-checkout", "pre-commit", "post-commit", "reference-transaction", "post-merge")


def test_no_hook_runs_for_the_later_tasks_of_a_run_either(tmp_path):
    repo = make_repo(tmp_path / "repo")
    marker = tmp_path / "hooks-that-ran"
    for hook in HOOKS:
        path = repo / ".git" / "hooks" / hook
        path.write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
        path.chmod(0o755)
    plan = ExecutionPlan(
        name="hooks", tasks=[Task(id="t1", title="One"), Task(id="t2", title="Two")]
    )

    for task_id in ("t1", "t2"):
        provider = ScriptedProvider(
            tool_calls(tool_use("write_file", path=f"{task_id}.txt", content="x\n")),
            tool_calls(tool_use("finish", summary=f"wrote {task_id}.txt")),
        )
        outcome = asyncio.run(
            execute_task(plan, task_id, workdir=repo, session_id="s1", provider=provider)
        )
        assert outcome.status == "completed", outcome.failure_reason

    assert not marker.exists(), marker.read_text()
