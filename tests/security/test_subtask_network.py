"""The subtasks an agent proposes reach the network no more than the task that proposed them.

A task kept offline (``network = false``) under ``[sandbox] network = true``: its agent may
propose subtasks, whose commands (and the verify command the agent chose for them) must run
offline too, not with the plan's default.
"""

from __future__ import annotations

import asyncio

from aca_flows.agent import ProposedSubtask, accept_subtasks
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.sandbox import Sandbox
from aca_flows.settings import SandboxSection
from tests.sandbox.test_bwrap import task_worktree


def test_an_offline_tasks_subtasks_run_offline(tmp_path):
    plan = ExecutionPlan(name="p", tasks=[Task(id="secret", title="Keep it in", network=False)])
    proposal = ProposedSubtask(id="fetch", title="Fetch", verify="curl -s https://example.com")

    (child,) = accept_subtasks(plan, "secret", [proposal])

    sandbox = Sandbox.for_worktree(
        task_worktree(tmp_path)[1], SandboxSection(network=True), network=child.network
    )
    assert child.network is False and not sandbox.network
    result = asyncio.run(
        sandbox.run("tail -n +3 /proc/net/dev | cut -d: -f1",
                    timeout_seconds=30, output_limit_bytes=2000)
    )  # fmt: skip
    assert result.output.split() == ["lo"]  # a loopback of its own, nothing else
