"""SIGKILL a real writer at any moment: nothing recorded is lost, every file stays readable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.reading import load_session
from aca_flows.session.store import SessionStore

ROOT = Path(__file__).resolve().parents[2]

# Records events as fast as it can, reporting each seq once it is durable.
WRITER = textwrap.dedent(
    """
    import sys
    from aca_flows.providers.base import Usage
    from aca_flows.session.store import SessionStore
    store = SessionStore.open(sys.argv[1], sys.argv[2])
    store.resumed()
    print(store.session.last_seq, flush=True)
    while True:
        store.call_recorded(provider="replay", model="m", usage=Usage(input_tokens=1), cost_usd=0)
        print(store.session.last_seq, flush=True)
    """
)


def test_killed_writers_leave_a_readable_session_that_resumes(tmp_path):
    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="A")])
    with SessionStore.create(tmp_path, plan, provider="replay") as store:
        session_id = store.session_id
    for round_number, delay in enumerate((0.0, 0.05, 0.1, 0.15, 0.2)):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), session_id],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        writer.stdout.readline()  # opened and resumed
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        durable = [int(line) for line in writer.stdout.read().split()]
        writer.wait()
        writer.stdout.close()

        # session.json is always whole JSON: it is only ever replaced atomically.
        json.loads(store.paths.session_json.read_text())
        session = load_session(tmp_path, session_id)
        # Every event the writer saw made durable is there (one more may be, never fewer).
        if durable:
            assert session.last_seq >= durable[-1]
        assert session.resumes == round_number + 1
        # Each usage event is counted exactly once: events = start + resumes + usage calls.
        calls = session.usage[0].calls if session.usage else 0
        assert calls == session.last_seq - 1 - session.resumes
    with SessionStore.open(tmp_path, session_id) as reopened:
        reopened.finish("completed")
    lines = store.paths.events_jsonl.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert load_session(tmp_path, session_id).status == "completed"
