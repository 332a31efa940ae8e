"""A worker killed mid-run, its session resumed on another machine from the remote alone.

``aca run --repo`` on "worker 1" (its own HOME and working area) lands task a, pushes it, and
is killed with SIGKILL while b's provider call is in flight. ``aca resume ID --repo`` on
"worker 2" (another HOME, an empty working area, no task file) fetches the session's branch and
record from the bare remote and finishes: a is not run again, every task is on the remote.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from tests.crash.conftest import (
    Aca,
    flow_runs_of,
    kill_group,
    none_running,
    only_session,
    task_runs_of,
    wait_for,
)
from tests.crash.test_kill_and_resume import CHAIN, Agent, agent_task_ids, branch_tasks
from tests.fakes.git_repo import make_repo


def pushed_tasks(remote: Path) -> list[str]:
    """The task commits of the (only) session branch on the remote; none before it exists."""
    branches = subprocess.run(
        ["git", "-C", str(remote), "for-each-ref", "--format=%(refname)", "refs/heads/aca"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return branch_tasks(remote, branches[0]) if branches else []


def two_workers(tmp_path: Path, prefect_api, llm) -> tuple[Path, Path, Agent, Aca, Aca]:
    """A bare remote, the chain's task file, the agent (its reply for b held) and two workers,
    each with its own HOME and working area."""
    source = make_repo(tmp_path / "source")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(remote)], check=True)
    agent = Agent(block="b")
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(40):
        llm.anthropic.enqueue(agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(CHAIN)
    workers = []
    for name in ("worker1", "worker2"):
        (tmp_path / name).mkdir()
        workers.append(Aca(tmp_path / name / "area", tmp_path / name, prefect_api, llm))
    return remote, tasks, agent, *workers


def test_a_session_killed_on_one_worker_finishes_on_another_from_the_remote(
    tmp_path, prefect_api, llm
):
    remote, tasks, agent, first, second = two_workers(tmp_path, prefect_api, llm)

    try:
        proc = first.start("run", str(tasks), "--repo", str(remote), "--model", "m", name="run")
        # The kill point: b's provider call in flight, a pushed (pushes run in the background).
        wait_for(
            lambda: (
                (agent.arrived.is_set() and pushed_tasks(remote) == ["a"])
                or proc.poll() is not None
            ),
            60,
            "b's call, with a on the remote",
        )
        assert proc.poll() is None, f"aca ended before the kill point:\n{first.err('run')}"
        kill_group(proc)
    finally:
        agent.release.set()
        first.close()
    session_id = only_session(first.repo).name
    branch = f"refs/heads/aca/{session_id}"
    assert branch_tasks(remote, branch) == ["a"]
    calls_before = len(llm.anthropic.requests)

    try:
        code, out, err = second.run("resume", session_id, "--repo", str(remote), "--json",
                                    name="resume")  # fmt: skip
    finally:
        second.close()
    assert code == 0, f"resume exited {code}:\n{err}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["counts"] == {"completed": 3}
    assert summary["unpushed"] is None and "Traceback" not in err
    assert branch_tasks(remote, branch) == ["a", "b", "c"]
    assert set(agent_task_ids(llm.anthropic.requests[calls_before:])) == {"b", "c"}
    # The second worker continued the same session: its record holds both workers' runs.
    record = Path(second.repo) / ".aca" / "sessions" / session_id / "meta" / "session.json"
    assert json.loads(record.read_text())["resumes"] == 1
    # The killed run no longer works in the UI: the resume, which took the session over,
    # ended it Crashed, its running task run too, saying where the session went on.
    states = {r.id: r.state for r in flow_runs_of(prefect_api, session_id)}
    assert sorted(s.type.value for s in states.values()) == ["COMPLETED", "CRASHED"]
    (crashed,) = [s for s in states.values() if s.is_crashed()]
    assert f"resumed on {socket.gethostname()}, which took it over" in crashed.message
    task_runs = task_runs_of(prefect_api, session_id, none_running)
    assert not [r for r in task_runs if r.state.is_running()]
    assert any(r.state.is_crashed() and r.name.startswith("b ") for r in task_runs)
