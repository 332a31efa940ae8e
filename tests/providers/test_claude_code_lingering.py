"""What a Claude Code command leaves running ends with its run: a worktree is taken up by the
next task (workspace/worktree.py), where such a process would write into that task's work."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.providers.conftest import run
from tests.providers.test_claude_code import _provider, _request, _tool_results

ROOT = Path(__file__).resolve().parents[2]


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


def _claudes_in(folder: Path) -> list[int]:
    """The claude processes working in ``folder`` (what Claude Code's sandbox started, its
    network bridges, goes with the scratch folder: ``end_leftover_bridges``)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            program = (entry / "cmdline").read_bytes().split(b"\0")[0]
            if Path(os.readlink(entry / "cwd")) == folder and program.endswith(b"claude"):
                found.append(int(entry.name))
    return found


def test_claude_dies_with_the_aca_that_started_it(claude_env, llm_server, tmp_path):
    # The OOM killer's choice or a `kill -9` of aca's pid alone: its claude ran the agent loop
    # to its end, each call on no bill and under no budget, writing into the worktree that a
    # resume made again at the same path.
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    write = {
        "name": "Write",
        "arguments": {"file_path": str(worktree / "late.txt"), "content": "x"},
    }
    llm_server.anthropic.enqueue(tool_calls=[write], delay=3)
    llm_server.anthropic.enqueue(text="Done.")
    code = (
        "import asyncio, sys; from pathlib import Path; "
        "from tests.providers.test_claude_code import _provider, _request; "
        "asyncio.run(_provider().complete(_request(Path(sys.argv[1]), 'Write late.txt')))"
    )
    aca = subprocess.Popen([sys.executable, "-c", code, str(worktree)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not llm_server.anthropic.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert llm_server.anthropic.requests, "claude never asked the model"
        aca.kill()  # its pid alone, not its process group
        aca.wait()
        time.sleep(5)  # the answer comes at 3 s: a live claude writes and asks again

        assert not (worktree / "late.txt").exists()
        assert len(llm_server.anthropic.requests) == 1
        assert _claudes_in(worktree) == []
    finally:
        for pid in _claudes_in(worktree):
            os.kill(pid, signal.SIGKILL)


def test_a_setpriv_without_pdeathsig_leaves_claude_started_as_it_is(tmp_path, monkeypatch):
    # util-linux before 2.33 (CentOS 7, Amazon Linux 2): "unrecognized option '--pdeathsig'"
    # failed every claude-code task.
    from aca_flows.providers import claude_code_sandbox

    old = tmp_path / "bin"
    old.mkdir()
    (old / "setpriv").write_text("#!/bin/sh\necho 'Usage: setpriv [options] <program>'\n")
    (old / "setpriv").chmod(0o755)
    monkeypatch.setenv("PATH", f"{old}:{os.environ['PATH']}")
    claude_code_sandbox._setpriv_with_pdeathsig.cache_clear()
    try:
        claude = tmp_path / "claude"
        assert claude_code_sandbox.dying_with_aca(claude) == claude
    finally:
        claude_code_sandbox._setpriv_with_pdeathsig.cache_clear()
