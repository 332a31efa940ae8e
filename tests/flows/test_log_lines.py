"""Task-log records as the lines a person reads in a task run's log."""

from __future__ import annotations

import asyncio
import io
import logging

from aca_flows.flows.log_batch import LineBatch, print_each_line
from aca_flows.flows.log_lines import describe_record


def test_a_turn_says_task_model_tokens_cost_and_what_it_calls():
    record = {
        "kind": "turn",
        "task_id": "greet",
        "turn": 1,
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "text": "",
        "tool_calls": ["write_file"],
        "usage": {"input_tokens": 1800, "output_tokens": 120},
        "cost_usd": 0.0075,
    }
    line = describe_record(record)
    assert line == "greet: turn 1, claude-sonnet-4-5, 1,800 in / 120 out, $0.0075: write_file"


def test_tool_calls_and_results_are_short():
    content = "print('hello')\n" * 300  # 4,500 characters, clipped in the task log at 4,000
    clipped = content[:4000] + f"... [{len(content) - 4000} more characters]"
    call = {"kind": "tool_call", "name": "write_file", "arguments": {"path": "greet.py"}}
    call["arguments"]["content"] = clipped
    assert describe_record(call) == "write_file greet.py (4,500 chars)"
    run = {"kind": "tool_call", "name": "run_command", "arguments": {"command": "pytest -q"}}
    assert describe_record(run) == "run_command: pytest -q"
    result = {"kind": "tool_result", "name": "read_file", "content": "line 1\nline 2\n" * 100}
    assert describe_record(result) == "-> line 1"
    refused = {"kind": "tool_result", "is_error": True, "content": "no such file: x.py"}
    assert describe_record(refused) == "-> error: no such file: x.py"


def test_verify_says_passed_or_failed_with_the_exit_code():
    passed = {"kind": "verify", "command": "pytest -q", "passed": True, "exit_code": 0}
    failed = {"kind": "verify", "command": "pytest -q", "passed": False, "exit_code": 1}
    assert describe_record(passed) == "verify passed: pytest -q"
    assert describe_record(failed) == "verify failed (exit 1): pytest -q"
    # A check the memory limit killed a process of says so, passed or failed.
    killed = {**failed, "exit_code": 137, "out_of_memory": True}
    assert describe_record(killed) == "verify killed for memory (exit 137): pytest -q"
    assert "was killed: they used all the memory" in describe_record(
        {**passed, "out_of_memory": True}
    )
    reason = "verify command `x` failed; nothing was merged. Output:\nboom"
    assert describe_record({"kind": "task_failed", "reason": reason}) == (
        "task failed: verify command `x` failed; nothing was merged."
    )


def test_claude_codes_tool_events_read_like_the_tool_loops():
    use = {
        "kind": "provider_event",
        "event": "tool_use",
        "data": {"name": "Write", "input": {"file_path": "greet.py", "content": "x" * 128}},
    }
    assert describe_record(use) == "Write greet.py (128 chars)"
    bash = {"kind": "provider_event", "event": "tool_use", "data": {"name": "Bash"}}
    bash["data"]["input"] = {"command": "pytest -q", "description": "run the tests"}
    assert describe_record(bash) == "Bash: pytest -q"


def test_a_line_passes_the_redactor(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789abcdef")
    record = {"kind": "tool_call", "name": "run_command"}
    record["arguments"] = {"command": "curl -H 'X: tok-0123456789abcdef' example.test"}
    line = describe_record(record)
    assert "tok-0123456789abcdef" not in line and "[REDACTED]" in line
    unknown = {"kind": "something_new", "task_id": "a", "value": "tok-0123456789abcdef"}
    assert describe_record(unknown) == 'something_new {"value": "[REDACTED]"}'


def test_what_claude_code_and_its_sandbox_leave_reads_as_a_sentence():
    stderr = {"kind": "provider_event", "event": "stderr", "data": {"text": "warning: x\n"}}
    assert describe_record(stderr) == "stderr: warning: x"
    left = {"kind": "sandbox_placeholders_removed", "files": ["a/.bashrc", "a/.zshrc"]}
    assert describe_record(left) == "removed 2 empty placeholders Claude Code's sandbox left"
    merged = {"kind": "merged", "commit": "3253fa4771abc", "files": ["f0.txt"]}
    assert describe_record(merged) == "merged 3253fa4771 (1 file)"


def test_claude_codes_own_retry_says_which_how_long_and_why():
    from claude_agent_sdk.types import SystemMessage

    from aca_flows.providers.claude_code_results import events_of

    data = {"type": "system", "subtype": "api_retry", "attempt": 2, "max_retries": 10,
            "retry_delay_ms": 35000, "error_status": 429, "error": "rate_limit_error"}  # fmt: skip
    (event,) = events_of(SystemMessage(subtype="api_retry", data=data))
    record = {"kind": "provider_event", "event": event.kind, "data": event.data}
    assert describe_record(record) == (
        "Claude Code retries an API call (retry 2 of 10) in 35.0 s: 429 rate_limit_error"
    )


def test_claude_codes_refusals_outside_the_worktree_are_one_warning_saying_how_many():
    import logging

    from aca_flows.flows.task_run import _log_level

    text = "Claude Code refused 3 commands reaching outside the worktree (see docs/security.md)."
    data = {"subtype": "refused_outside_worktree", "refused": 3, "text": text}
    record = {"kind": "provider_event", "event": "system", "data": data}
    assert describe_record(record) == text
    # A warning: shown in the run's log even when tool calls are not logged.
    assert _log_level(record) == logging.WARNING


def test_what_happens_around_the_checks_reads_as_a_sentence():
    # Every kind the agent writes to the task log has its line: none is left as raw JSON.
    undone = {"kind": "checks_undone", "files": ["junk.txt"]}
    assert describe_record(undone) == "the checks' own changes were undone: junk.txt"
    aside = {"kind": "ignored_set_aside", "files": [f"build/{i}.o" for i in range(7)]}
    assert describe_record(aside) == (
        "files git ignores that the agent wrote, set aside while the checks run: "
        "build/0.o, build/1.o, build/2.o, build/3.o, build/4.o and 2 more"
    )
    caught_up = {"kind": "caught_up", "base": "3253fa4771abc", "files": ["notes.txt"]}
    assert describe_record(caught_up) == (
        "work landed meanwhile in notes.txt: caught up with 3253fa4771, the checks run again there"
    )


def test_every_kind_the_agent_writes_to_the_task_log_has_its_line():
    import re
    from pathlib import Path

    import aca_flows.agent
    from aca_flows.flows.log_lines import _DESCRIBERS

    agent = Path(aca_flows.agent.__file__).parent
    source = "".join(path.read_text() for path in agent.glob("*.py"))
    kinds = set(re.findall(r'log\.write\(\s*"(\w+)"', source))
    assert "checks_undone" in kinds  # the pattern still finds them
    assert kinds - _DESCRIBERS.keys() == set()


def test_lines_that_come_together_are_one_entry_and_a_warning_stands_alone():
    """A task's lines reach Prefect's log in order, the ones that come together as one entry
    (each entry costs the run and the server a record's work); a warning is its own entry,
    after the lines before it; nothing is held once the task ends, nor longer than the delay.
    Where lines are printed, each keeps its own prefix."""
    logger = logging.getLogger("test-line-batch")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    entries, printed = [], io.StringIO()

    class Entries(logging.Handler):
        def emit(self, record):
            entries.append((record.levelno, record.getMessage()))

    terminal = logging.StreamHandler(printed)
    terminal.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    print_each_line(terminal)
    logger.handlers = [Entries(), terminal]

    async def run():
        batch = LineBatch(logger, delay=0.05)
        batch.add(logging.INFO, "a: turn 1")
        batch.add(logging.INFO, "write_file a.txt")
        assert entries == []  # held for the delay
        batch.add(logging.WARNING, "verify failed")
        batch.add(logging.INFO, "a: turn 2")
        await asyncio.to_thread(batch.add, logging.INFO, "-> wrote a.txt")  # from a thread
        await asyncio.sleep(0.2)  # the delay passed: sent without a flush
        batch.add(logging.INFO, "merged")
        batch.flush()  # the task's end

    asyncio.run(run())
    assert entries == [
        (logging.INFO, "a: turn 1\nwrite_file a.txt"),
        (logging.WARNING, "verify failed"),
        (logging.INFO, "a: turn 2\n-> wrote a.txt"),
        (logging.INFO, "merged"),
    ]
    assert printed.getvalue().splitlines() == [
        "INFO a: turn 1",
        "INFO write_file a.txt",
        "WARNING verify failed",
        "INFO a: turn 2",
        "INFO -> wrote a.txt",
        "INFO merged",
    ]
