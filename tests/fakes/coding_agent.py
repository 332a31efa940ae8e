"""A scripted coding agent for the fake Anthropic server: it does what the task's title says.

The first user message starts ``# Task <id>: <title>``. Understood titles:

- ``write NAME`` — write the file NAME containing ``NAME\n``;
- ``write NAME with TEXT`` — write the file NAME containing ``TEXT\n``;
- ``keep NAME`` — change nothing and report that no change is needed (NAME is fine as is);
- a description line ``propose: a, b`` — after writing, propose subtasks ``a`` and ``b``
  (each titled ``write <id>.txt``);
- anything else — just finish, without changing anything (which fails the task).

Each step is one turn: write, (propose), finish. Use it as a reply source::

    for _ in range(n): llm_server.anthropic.enqueue(coding_agent)
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from tests.fakes.llm_server import RecordedRequest, Reply

__all__ = ["SlowAgent", "coding_agent", "task_of"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content if b.get("type") == "text")


def task_of(request: RecordedRequest) -> tuple[str, str, str]:
    """(task id, title, the rest of the first message) of an agent request."""
    first = _text(request.json["messages"][0]["content"])
    match = re.match(r"# Task (\S+): (.*)", first)
    if not match:
        return "", "", first
    return match.group(1), match.group(2).strip(), first


def coding_agent(request: RecordedRequest) -> Reply:
    messages = request.json["messages"]
    turn = sum(1 for m in messages if m["role"] == "assistant")
    _, title, first = task_of(request)
    steps: list[dict[str, Any]] = []
    write = re.match(r"write (\S+)(?: with (.*))?$", title)
    if write:
        content = (write.group(2) or write.group(1)) + "\n"
        steps.append(
            {"name": "write_file", "arguments": {"path": write.group(1), "content": content}}
        )
    keep = re.match(r"keep (\S+)$", title)
    if keep:
        reason = f"{keep.group(1)} is fine as it is"
        steps.append({"name": "report_no_change", "arguments": {"reason": reason}})
        return Reply(tool_calls=steps, usage={"input_tokens": 100, "output_tokens": 20})
    propose = re.search(r"^propose: (.+)$", first, re.MULTILINE)
    if propose:
        subtasks = [
            {"id": name.strip(), "title": f"write {name.strip()}.txt"}
            for name in propose.group(1).split(",")
        ]
        steps.append({"name": "propose_subtasks", "arguments": {"subtasks": subtasks}})
    steps.append({"name": "finish", "arguments": {"summary": f"did: {title}"}})
    step = steps[min(turn, len(steps) - 1)]
    return Reply(tool_calls=[step], usage={"input_tokens": 100, "output_tokens": 20})


class SlowAgent:
    """``coding_agent`` taking ``seconds`` a call, counting the most calls it had at once
    (``peak``): for tests of how many tasks, or provider calls, a run lets run together."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.peak = 0
        self._active = 0
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._active += 1
            self.peak = max(self.peak, self._active)
        time.sleep(self.seconds)
        with self._lock:
            self._active -= 1
        return coding_agent(request)
