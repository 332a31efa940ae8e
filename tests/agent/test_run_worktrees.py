"""A run's worktrees: a landed task's is reused for the next one made; no other task's is."""

from __future__ import annotations

import asyncio
import functools

from aca_flows.agent.run_worktrees import RunWorktrees
from aca_flows.workspace import TaskWorktree
from tests.workspace.test_worktree import session_repo


def test_only_a_landed_tasks_worktree_is_reused_and_the_run_removes_what_is_left(tmp_path):
    repo = session_repo(tmp_path)

    async def run() -> None:
        worktrees = RunWorktrees(functools.partial(TaskWorktree.create, repo, "s1"), True)
        landed, failed = await worktrees.new("landed"), await worktrees.new("failed")
        (failed.path / "app.py").write_text("unverified work\n")
        worktrees.landed("landed")
        await worktrees.remove("landed", landed)
        await worktrees.remove("failed", failed)
        assert landed.path.exists() and not failed.path.exists()

        reused, fresh = await worktrees.new("next"), await worktrees.new("after")
        assert reused.git_dir == landed.git_dir and not landed.path.exists()
        assert fresh.git_dir not in (landed.git_dir, failed.git_dir)
        assert (fresh.path / "app.py").read_text() == "print('hello')\n"

        worktrees.landed("next")
        await worktrees.remove("next", reused)
        assert reused.path.exists()  # a spare until the run settles
        assert await worktrees.settled() == []
        assert not reused.path.exists()

    asyncio.run(run())
