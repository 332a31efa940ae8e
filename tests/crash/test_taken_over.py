"""A run whose session is taken over by a resume elsewhere stops, and says so.

``aca run --repo`` on "worker 1" lands task a, pushes it, and waits in b's provider call (the
fake server holds the reply). While it is still alive — stopped with SIGSTOP and continued
after the resume, or running all along — ``aca resume ID --repo`` on "worker 2" takes the
session over: it ends worker 1's flow run Crashed and finishes the session. Worker 1 learns
it from its flow run's state and stops as at a cancel: its running task is cut short, no
task starts, no more provider calls (its calls carry their own API key), no push; it exits
130 saying that the session was taken over, and where.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.crash.conftest import flow_runs_of, journal, only_session, wait_for
from tests.crash.test_kill_and_resume import CHAIN, Agent, branch_tasks
from tests.crash.test_resume_elsewhere import pushed_tasks, two_workers

FIRST_KEY = "worker-1-key"


def remote_ends(remote: Path, session_id: str) -> list[str]:
    """The ends (``session_finished`` statuses) in the journal of the record the remote holds."""
    ref = f"refs/aca/sessions/{session_id}:meta/events.jsonl"
    shown = subprocess.run(
        ["git", "-C", str(remote), "show", ref], capture_output=True, text=True, check=True
    )
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    return [e["status"] for e in events if e["type"] == "session_finished"]


@pytest.mark.parametrize("stopped", [True, False], ids=["sigstopped", "alive"])
def test_a_run_whose_session_a_resume_took_over_stops_at_once_and_says_so(
    tmp_path, prefect_api, llm, stopped
):
    llm.api_key = None  # each worker's calls carry its own key
    remote, tasks, agent, first, second = two_workers(tmp_path, prefect_api, llm)

    def first_calls() -> int:
        return sum(r.headers.get("x-api-key") == FIRST_KEY for r in llm.model_calls)

    try:
        proc = first.start("run", str(tasks), "--repo", str(remote), "--model", "m",
                           name="run", ANTHROPIC_API_KEY=FIRST_KEY)  # fmt: skip
        wait_for(
            lambda: (
                (agent.arrived.is_set() and pushed_tasks(remote) == ["a"])
                or proc.poll() is not None
            ),
            60,
            "b's call, with a on the remote",
        )
        assert proc.poll() is None, f"aca ended before the takeover:\n{first.err('run')}"
        session_id = only_session(first.repo).name
        if stopped:
            os.killpg(proc.pid, signal.SIGSTOP)
        calls_before = first_calls()
        resume = second.start("resume", session_id, "--repo", str(remote), "--json",
                              name="resume")  # fmt: skip
        code = resume.wait(timeout=120)
        if stopped:
            os.killpg(proc.pid, signal.SIGCONT)
        try:
            first_code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the taken-over run did not stop:\n{first.err('run')}") from None
    finally:
        agent.release.set()
        first.close()
        second.close()

    host = socket.gethostname()
    # The resume finished the session, and its pushes were not refused.
    assert code == 0, f"resume exited {code}:\n{second.err('resume')}"
    summary = json.loads(second.out("resume").strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["unpushed"] is None
    assert branch_tasks(remote, f"refs/heads/aca/{session_id}") == ["a", "b", "c"]
    assert remote_ends(remote, session_id) == ["completed"]  # none from the earlier run

    # The earlier run stopped as at a cancel, saying why; it called no provider after.
    err = first.err("run")
    said = f"session {session_id} was taken over by a resume on {host}; this run stopped"
    assert first_code == 130, f"the taken-over run exited {first_code}:\n{err}"
    assert said in err and "Traceback" not in err
    assert "The session goes on where it was resumed." in first.out("run")
    assert first_calls() == calls_before
    # Its record on its own machine says the same, and offers no resume of a live session.
    (end,) = [e for e in journal(only_session(first.repo)) if e["type"] == "session_finished"]
    assert (end["status"], end["reason"]) == ("interrupted", said)
    # In the UI: the resume's run completed; the taken-over one says what ended it.
    states = [r.state for r in flow_runs_of(prefect_api, session_id)]
    assert sorted(s.type.value for s in states) == ["CANCELLED", "COMPLETED"]
    (ended,) = [s for s in states if s.is_cancelled()]
    assert ended.name == "Taken over" and ended.message == said


def set_crashed(api_url: str, flow_run_id, message: str) -> None:
    """Ends the flow run ``Crashed`` on the server, as Prefect's automation for a run whose
    heartbeat lapsed does."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    async def crash():
        async with get_client() as client:
            await client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        asyncio.run(crash())


def test_a_run_whose_flow_run_another_process_crashed_stops_as_at_a_cancel(aca, prefect_api, llm):
    """Not a takeover: the run stops, resumable, naming what the state said."""
    agent = Agent(block="b")
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(40):
        llm.anthropic.enqueue(agent)
    tasks = aca.repo / "tasks.md"
    tasks.write_text(CHAIN)
    try:
        proc = aca.start("run", str(tasks), "--model", "m", name="run")
        wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, 60, "b's call")
        assert proc.poll() is None, f"aca ended before the crash:\n{aca.err('run')}"
        session_id = only_session(aca.repo).name
        (flow_run,) = wait_for(lambda: flow_runs_of(prefect_api, session_id), 30, "the run")
        calls_before = len(llm.model_calls)
        set_crashed(prefect_api, flow_run.id, "no heartbeat for 90 s")
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the crashed run did not stop:\n{aca.err('run')}") from None
    finally:
        agent.release.set()

    err, out = aca.err("run"), aca.out("run")
    said = "interrupted by its flow run set Crashed from outside: no heartbeat for 90 s"
    assert code == 130, f"exited {code}:\n{err}"
    assert said in err and "Traceback" not in err
    assert f"Stopped: {said}." in out and f"`aca resume {session_id}" in out
    assert len(llm.model_calls) == calls_before
    (ended,) = [r.state for r in flow_runs_of(prefect_api, session_id)]
    assert (ended.type.value, ended.name) == ("CANCELLED", "Interrupted")


def test_the_stop_names_the_host_that_took_the_session_over():
    from aca_flows.flows.abandoned_runs import _crash_message, taken_over_reason

    message = _crash_message("20261203-1", "build-7.example.com")
    assert taken_over_reason(message) == (
        "session 20261203-1 was taken over by a resume on build-7.example.com; this run stopped"
    )
    assert taken_over_reason("no heartbeat for 90 s") is None
    assert taken_over_reason(_crash_message("20261203-1", None)) is None
