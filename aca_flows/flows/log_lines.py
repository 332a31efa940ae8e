"""Task-log records as lines a person reads in the Prefect UI.

The task log (``execution_logs/task_logs/<task-id>.jsonl``) keeps every record whole, as JSON;
a task run's Prefect log gets one short line per record instead (lines that come together
are sent as one entry, ``log_batch.py``)::

    greet: turn 1, claude-sonnet-4-5, 1,800 in / 120 out, $0.0075: write_file
    write_file greet.py (128 chars)
    -> wrote 128 characters to greet.py
    verify failed (exit 1): pytest -q

Every line passes the redactor before it is cut to length (a key cut in half would no longer
look like a key).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aca_flows._words import counted, listed
from aca_flows.plan.vacuous_check import VACUOUS_NOTE
from aca_flows.providers.base import UNPARSED_ARGUMENTS
from aca_flows.session.redact import redact_text

__all__ = ["describe_record"]

LINE_LIMIT = 300
# A short result or message: its first line, this long at most.
SHORT = 120
# How the agent's log marks text it clipped (agent/loop.py ``_clip``).
_CLIPPED = re.compile(r"\.\.\. \[(\d+) more characters\]$")


def describe_record(record: dict[str, Any]) -> str:
    """One line for a task-log record (``kind`` plus its fields)."""
    kind = record.get("kind", "event")
    describe = _DESCRIBERS.get(kind)
    text = describe(record) if describe else _fallback(kind, record)
    return redact_text(text)[:LINE_LIMIT]


def _turn(r: dict[str, Any]) -> str:
    usage = r.get("usage") or {}
    head = (
        f"{r.get('task_id', '?')}: turn {r.get('turn', '?')}, {r.get('model') or r.get('provider')}"
        f", {usage.get('input_tokens', 0):,} in / {usage.get('output_tokens', 0):,} out"
        f", ${r.get('cost_usd') or 0:.4f}"
    )
    calls = r.get("tool_calls") or []
    if calls:
        return f"{head}: {', '.join(calls)}"
    text = _short(r.get("text", ""))
    return f"{head}: {text}" if text else head


def _tool_call(r: dict[str, Any]) -> str:
    return _call(r.get("name", "?"), r.get("arguments") or {})


def _call(name: str, args: dict[str, Any]) -> str:
    if UNPARSED_ARGUMENTS in args:
        return f"{name} (arguments not a JSON object)"
    path = args.get("path") or args.get("file_path")
    if name == "write_file" or (name == "Write" and "content" in args):
        return f"{name} {path} ({_length(args.get('content', '')):,} chars)"
    if path:
        return f"{name} {path}"
    if "command" in args:
        return f"{name}: {_short(args['command'])}"
    if name == "propose_subtasks":
        return f"{name}: {len(args.get('subtasks') or [])} subtask(s)"
    for key in ("summary", "reason", "pattern", "description"):
        if args.get(key):
            return f"{name}: {_short(args[key])}"
    return name


def _tool_result(r: dict[str, Any]) -> str:
    return _result(r.get("content", ""), r.get("is_error", False))


def _result(content: Any, is_error: bool) -> str:
    if not isinstance(content, str):
        content = json.dumps(content, ensure_ascii=False, default=str)
    return f"-> {'error: ' if is_error else ''}{_short(content) or '(empty)'}"


def _verify(r: dict[str, Any], what: str = "verify") -> str:
    command = _short(r.get("command", ""))
    killed = " (one of its processes was killed: they used all the memory the sandbox allows)"
    if r.get("passed"):
        vacuous = f" ({VACUOUS_NOTE})" if r.get("checks_nothing") else ""
        return f"{what} passed: {command}{vacuous}{killed if r.get('out_of_memory') else ''}"
    if r.get("timed_out"):
        return f"{what} timed out: {command}"
    if r.get("out_of_memory"):
        return f"{what} killed for memory (exit {r.get('exit_code')}): {command}"
    return f"{what} failed (exit {r.get('exit_code')}): {command}"


def _provider_event(r: dict[str, Any]) -> str:
    data = r.get("data") or {}
    event = r.get("event")
    if event == "tool_use":
        return _call(data.get("name", "?"), data.get("input") or {})
    if event == "tool_result":
        return _result(data.get("content", ""), bool(data.get("is_error")))
    if event == "assistant_text":
        return f"says: {_short(data.get('text', ''))}"
    if event == "stderr":
        return f"stderr: {_short(data.get('text', ''))}"
    if data.get("subtype") == "api_retry":
        return _api_retry(data)
    if data.get("subtype") == "refused_outside_worktree":
        return str(data.get("text", ""))
    return f"{event}: {data.get('subtype', '')}".rstrip(": ")


def _api_retry(data: dict[str, Any]) -> str:
    """Claude Code retrying an API call itself: its wait can be minutes, so say it."""
    attempt, most = data.get("attempt"), data.get("max_retries")
    which = f" (retry {attempt} of {most})" if attempt and most else ""
    delay = data.get("retry_delay_ms")
    when = f" in {delay / 1000:.1f} s" if isinstance(delay, int | float) else ""
    why = " ".join(str(part) for part in (data.get("error_status"), data.get("error")) if part)
    return f"Claude Code retries an API call{which}{when}" + (f": {_short(why)}" if why else "")


_DESCRIBERS = {
    "turn": _turn,
    "tool_call": _tool_call,
    "tool_result": _tool_result,
    "verify": _verify,
    "setup": lambda r: _verify(r, f"setup {r.get('name', '')}".rstrip()),
    "provider_event": _provider_event,
    "run_started": lambda r: f"run {r.get('run', 1)} started on {str(r.get('base', ''))[:10]}",
    "already_completed": lambda r: f"already completed in {str(r.get('commit', ''))[:10]}",
    "merged": lambda r: (
        f"merged {str(r.get('commit') or '')[:10]} ({counted(len(r.get('files') or []), 'file')})"
    ),
    "sandbox_placeholders_removed": lambda r: (
        f"removed {counted(len(r.get('files') or []), 'empty placeholder')} Claude Code's "
        "sandbox left"
    ),
    "merge_conflict": lambda r: f"merge conflict in {', '.join(r.get('files') or [])}",
    "caught_up": lambda r: (
        f"work landed meanwhile in {_files(r)}: caught up with {str(r.get('base', ''))[:10]}, "
        "the checks run again there"
    ),
    "ignored_set_aside": lambda r: (
        f"files git ignores that the agent wrote, set aside while the checks run: {_files(r)}"
    ),
    "checks_undone": lambda r: f"the checks' own changes were undone: {_files(r)}",
    "check_edited": lambda r: (
        f"verify passed on a change that edits what it runs ({_files(r)}): the check is "
        "partly the agent's work; review those edits"
    ),
    "no_change": lambda r: f"no change needed: {_short(r.get('reason', ''))}",
    "task_failed": lambda r: f"task failed: {_short(r.get('reason', ''))}",
    "stopped": lambda r: f"stopped, no verdict on the work: {_short(r.get('reason', ''))}",
    "subtasks_rejected": lambda r: f"subtasks rejected: {_short(r.get('reason', ''))}",
    "subtasks_proposed": lambda r: (
        f"proposed subtasks: {listed([s.get('id', '?') for s in r.get('subtasks') or []], 5)}"
    ),
}


def _fallback(kind: str, record: dict[str, Any]) -> str:
    rest = {k: v for k, v in record.items() if k not in ("kind", "ts", "task_id")}
    return f"{kind} {json.dumps(rest, ensure_ascii=False, default=str)}"


def _files(record: dict[str, Any]) -> str:
    return listed(record.get("files") or [], 5)


def _short(text: Any) -> str:
    """The first line, cut short; a reason's "Output:" goes (its output is not shown)."""
    line = str(text).strip().split("\n", 1)[0].strip().removesuffix("Output:").rstrip()
    return line if len(line) <= SHORT else line[: SHORT - 1] + "…"


def _length(content: str) -> int:
    """The length of text the agent's log may have clipped (it says how much it left out)."""
    clipped = _CLIPPED.search(content)
    if clipped is None:
        return len(content)
    return clipped.start() + int(clipped.group(1))
