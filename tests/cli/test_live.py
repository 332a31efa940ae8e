"""The live view of ``aca run`` draws the session as its files say."""

from __future__ import annotations

import json

from rich.console import Console

from aca_flows.cli.live import render
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.layout import AcaDir
from aca_flows.session.store import SessionStore


def test_what_an_agent_runs_is_drawn_without_acting_on_the_terminal(tmp_path):
    # The view shows each running task's last step: the agent's own command, which may hold
    # an escape sequence that would clear the screen the run is watched on.
    plan = ExecutionPlan(name="Nightly\x1b[2J", tasks=[Task(id="a", title="Do it")])
    with SessionStore.create(tmp_path, plan, provider="replay") as store:
        store.task_started("a", provider="replay", model="m")
        log = AcaDir(tmp_path).session(store.session_id).task_log("a")
        log.parent.mkdir(parents=True, exist_ok=True)
        step = {"kind": "tool_call", "name": "run", "arguments": {"command": "echo \x1b[2J"}}
        log.write_text(json.dumps(step) + "\n")
        console = Console(width=200, record=True)

        console.print(render(store.session, AcaDir(tmp_path)))

    text = console.export_text()
    assert "\x1b" not in text
    assert "Nightly\\x1b[2J" in text and "run echo \\x1b[2J" in text
