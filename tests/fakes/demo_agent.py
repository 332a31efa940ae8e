"""Records ``tasks/examples/hello.cassette.json``, the cassette the README's demo replays.

A scripted agent (below) answers the fake Anthropic server as a model would for the three
tasks of ``tasks/examples/hello.md``; ``aca`` runs the real flow against it with
``--record``. Run it again after changing the demo or the prompts:

    .venv/bin/python -m tests.fakes.demo_agent
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tests.fakes.coding_agent import task_of
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest, Reply

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tasks" / "examples"

FILES = {
    "greet": (
        "greet.py",
        '"""Greetings."""\n\n\ndef greet(name: str) -> str:\n'
        '    """Return a friendly greeting for ``name``."""\n'
        '    return f"Hello, {name}!"\n',
        "Added greet.py with greet(name) returning 'Hello, <name>!'.",
    ),
    "tests": (
        "test_greet.py",
        "from greet import greet\n\n\n"
        "def test_greet():\n"
        '    assert greet("aca") == "Hello, aca!"\n'
        '    assert greet("") == "Hello, !"\n\n\n'
        'if __name__ == "__main__":\n'
        "    test_greet()\n"
        '    print("ok")\n',
        "Added test_greet.py; it runs as a script and prints ok.",
    ),
    "readme": (
        "README.md",
        "# greet\n\n`greet(name)` returns a friendly greeting.\n\n"
        '```python\nfrom greet import greet\nprint(greet("world"))  # Hello, world!\n```\n\n'
        "Run the tests with `python3 test_greet.py`.\n",
        "Wrote README.md with a usage example and how to run the tests.",
    ),
}


def demo_agent(request: RecordedRequest) -> Reply:
    task_id, _, _ = task_of(request)
    path, content, summary = FILES[task_id]
    turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
    usage = {"input_tokens": 1800 + 400 * turn, "output_tokens": 120, "cache_read_tokens": 900}
    if turn == 0:
        return Reply(
            text=f"I'll create {path}.",
            tool_calls=[{"name": "write_file", "arguments": {"path": path, "content": content}}],
            usage=usage,
        )
    return Reply(tool_calls=[{"name": "finish", "arguments": {"summary": summary}}], usage=usage)


def main() -> int:
    from aca_flows.cli import main as aca

    cassette = EXAMPLES / "hello.cassette.json"
    cassette.unlink(missing_ok=True)
    with FakeLLMServer() as server, tempfile.TemporaryDirectory() as tmp:
        for _ in range(10):
            server.anthropic.enqueue(demo_agent)
        os.environ.update(ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY="test-key")
        return aca(
            [
                "run", str(EXAMPLES / "hello.md"),
                "--workdir", str(Path(tmp) / "demo"), "--init-git",
                "--provider", "anthropic", "--model", "claude-sonnet-4-5",
                "--record", str(cassette), "--json",
            ]
        )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
