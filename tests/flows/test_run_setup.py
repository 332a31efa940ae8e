"""Getting a run ready: the intelligent parser's spend goes on the bill of the session made
from it, once, through the real command line (``aca run --use-intelligent-parser``)."""

from __future__ import annotations

import json
from pathlib import Path

from aca_flows.cli import main
from aca_flows.session.layout import AcaDir
from aca_flows.session.store import list_sessions
from tests.fakes.coding_agent import coding_agent

PROPOSAL = {
    "name": "Files",
    "description": "Write a file.",
    "strategy": "sequential",
    "context": [],
    "tasks": [{"id": "a", "title": "write a.txt", "description": "", "depends_on": []}],
}


def parse_reply() -> dict:
    """The model's plan, through the forced ``respond`` tool, and what the parse cost."""
    return {
        "tool_calls": [{"name": "respond", "arguments": PROPOSAL}],
        "usage": {"input_tokens": 1000, "output_tokens": 200},
    }


def aca_run(tasks: Path, repo: Path) -> int:
    args = ["run", str(tasks), "--use-intelligent-parser", "--provider", "anthropic"]
    return main([*args, "--model", "claude-sonnet-4-6", "--workdir", str(repo), "--json"])


def call_events(repo: Path, session_id: str) -> list[dict]:
    path = AcaDir(repo).session(session_id).events_jsonl
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in events if e["type"] == "call"]


def test_the_parse_is_billed_once_to_the_session_made_from_it(tmp_path, repo, anthropic_fake):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    anthropic_fake.anthropic.enqueue(**parse_reply())
    for _ in range(4):
        anthropic_fake.anthropic.enqueue(coding_agent)

    # The command line parses before the session exists; the flow's parse is a cache hit.
    assert aca_run(tasks, repo) == 0
    assert len(anthropic_fake.requests) == 3  # the parse, then write and finish
    (first,) = list_sessions(repo)
    parse, *task_calls = call_events(repo, first.id)
    assert (parse["purpose"], parse["task_id"], parse["calls"]) == ("parse", None, 1)
    assert (parse["usage"]["input_tokens"], parse["usage"]["output_tokens"]) == (1000, 200)
    assert parse["cost_usd"] > 0
    assert [c["task_id"] for c in task_calls] == ["a", "a"]
    assert first.usage[0].calls == 3
    assert first.cost_usd == sum(c["cost_usd"] for c in [parse, *task_calls])

    # The same file again: the cached parse costs nothing and is not billed again.
    assert aca_run(tasks, repo) == 0
    assert len(anthropic_fake.requests) == 5
    second = next(s for s in list_sessions(repo) if s.id != first.id)
    assert [c["purpose"] for c in call_events(repo, second.id)] == ["task", "task"]
    assert sum(s.usage[0].calls for s in list_sessions(repo)) == len(anthropic_fake.requests)
