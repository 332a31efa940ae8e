"""Two ``aca resume ID`` of one session started at the same moment on one machine: one runs
it, the other is refused (exit 2, naming the running process) before it makes a flow run, so
the Prefect server holds no failed run beside the winner's. Real ``aca`` processes, one Prefect
server, real git, the fake Anthropic server."""

from __future__ import annotations

from tests.crash.conftest import flow_runs_of, kill_group, only_session, wait_for
from tests.crash.test_kill_and_resume import CHAIN, Agent, branch_tasks

WAIT = 90


def test_the_second_of_two_simultaneous_resumes_is_refused_before_its_flow_run(
    aca, repo, llm, tmp_path, prefect_api
):
    agents = [Agent("a")]  # the agent answering now; a's first call is held
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(40):
        llm.anthropic.enqueue(lambda request: agents[-1](request))
    tasks = tmp_path / "tasks.md"
    tasks.write_text(CHAIN)
    try:
        run = aca.start("run", str(tasks), "--model", "claude-test", name="run")
        wait_for(lambda: agents[-1].arrived.is_set() or run.poll() is not None, WAIT, "a's call")
        kill_group(run)  # a session to resume, nothing of it done
        session = only_session(repo).name
        agents.append(Agent("a"))  # the winner holds a's call: it runs while the other tries
        resumes = [aca.start("resume", session, name=f"resume{i}") for i in (1, 2)]
        loser = wait_for(
            lambda: next((p for p in resumes if p.poll() is not None), None), WAIT, "a refusal"
        )
        (winner,) = [p for p in resumes if p is not loser]
        assert winner.poll() is None, aca.err(winner.log_name)
        err = aca.err(loser.log_name)
        agents[-1].release.set()
        assert winner.wait(timeout=WAIT) == 0, aca.err(winner.log_name)
    finally:
        for agent in agents:
            agent.release.set()
    assert loser.returncode == 2, err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert f"session {session} is in use by pid {winner.pid}" in line
    assert "Traceback" not in err
    # The first run (crashed by the winner) and the winner's: none failed beside them.
    states = sorted(r.state.type.value for r in flow_runs_of(prefect_api, session))
    assert states == ["COMPLETED", "CRASHED"]
    assert branch_tasks(repo, f"aca/{session}") == ["a", "b", "c"]
