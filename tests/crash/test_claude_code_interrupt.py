"""A Ctrl-C while Claude Code works: the signal reaches the claude process too (the terminal
sends it to the whole process group), which dies without a result. Real ``aca``, the real
bundled ``claude``, real Prefect, the fake Anthropic server."""

from __future__ import annotations

import os
import signal

from tests.crash.conftest import journal, only_session, wait_for
from tests.crash.test_interrupt import STOP_NOTICE, WAIT, wait_exit
from tests.fakes.llm_server import Reply

CLAUDE_ENV = {
    "ACA_SESSION__PROVIDER": "claude-code",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_MAX_RETRIES": "0",
}


def test_a_ctrl_c_that_kills_claude_starts_no_new_claude_run_and_bills_its_answered_turn(
    aca, repo, llm, tmp_path
):
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    # The run's first turn is answered (a look at a file), its second held.
    read = {"name": "Read", "arguments": {"file_path": "/nonexistent/notes.txt"}}
    llm.anthropic.enqueue(tool_calls=[read], usage={"input_tokens": 1000, "output_tokens": 200})
    llm.anthropic.enqueue(Reply(text="Late.", delay=60))
    for _ in range(5):  # what a new claude run would be answered
        llm.anthropic.enqueue(Reply(text="Done."))
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Plan\n\n- write a.txt {#a}\n")
    agent_calls = lambda: [r for r in llm.anthropic.requests if r.json and r.json.get("tools")]  # noqa: E731
    proc = aca.start(
        "run",
        str(tasks),
        "--model",
        "claude-sonnet-4-6",
        name="run",
        ACA_SESSION__CALL_RETRY_BACKOFF_SECONDS="0.1",
        **CLAUDE_ENV,
    )
    session = only_session(repo)
    wait_for(lambda: len(agent_calls()) >= 2 or proc.poll() is not None, WAIT, "the 2nd turn")
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C
    code = wait_exit(proc, WAIT)

    output = aca.err("run") + aca.out("run")
    assert code == 130, output
    assert STOP_NOTICE in output
    # No claude run started after the Ctrl-C: it would be paid for, and could end the run
    # completed although the user stopped it.
    assert len(agent_calls()) == 2, output
    assert "Retrying this call" not in output
    # The answered turn is on the bill, once: journalled as it ended, the call's own line
    # after it holds nothing more.
    calls = [e for e in journal(session) if e["type"] == "call"]
    assert [(c["usage"]["input_tokens"], c["calls"]) for c in calls] == [(1000, 0), (0, 1)]
    assert calls[0]["usage"]["output_tokens"] == 200
    assert calls[0]["cost_usd"] > 0 and calls[1]["cost_usd"] == 0
