"""What a Claude Code command leaves running ends with its run: a worktree is taken up by the
next task (workspace/worktree.py), where such a process would write into that task's work."""

from __future__ import annotations

import time

from tests.providers.conftest import run
from tests.providers.test_claude_code import _provider, _request, _tool_results


def test_a_process_a_command_left_running_ends_with_the_run(claude_env, llm_server, tmp_path):
    late = tmp_path / "late.txt"
    started = tmp_path / "started.txt"
    detached = f"setsid sh -c 'touch {started}; sleep 3; echo late > {late}'"
    linger = (
        f"({detached} </dev/null >/dev/null 2>&1 &); "
        "nohup sh -c 'sleep 3; echo late >> late2.txt' >/dev/null 2>&1 & sleep 1; echo left"
    )
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Bash", "arguments": {"command": linger}}])
    llm_server.anthropic.enqueue(text="Done.")

    run(_provider().complete(_request(tmp_path, "Start something")))
    (said,) = _tool_results(llm_server.anthropic.requests[-1:])
    time.sleep(4)

    assert "left" in said and started.exists(), said  # it did start
    assert not late.exists() and not (tmp_path / "late2.txt").exists()
