"""SIGINT/SIGTERM stop a run cleanly (exit 130, resumable); a second ``aca`` on a running
session is refused. Real ``aca`` processes, real git, real Prefect, the fake Anthropic server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

from tests.crash.conftest import flow_runs_of, only_session, task_ended, task_runs_of, wait_for
from tests.crash.test_kill_and_resume import CHAIN, Agent, agent_task_ids, branch_tasks
from tests.fakes.coding_agent import coding_agent
from tests.fakes.llm_server import Reply

WAIT = 60
STOP_NOTICE = "no new task starts"


def start_run(
    aca, llm, tmp_path, plan: str, replies: list, piped: bool = False, **env
) -> subprocess.Popen:
    """``aca run`` (named "run") started on a task file of ``plan``, in the environment
    ``env`` (``piped``: see ``Aca.start``); the fake server answers the agent's calls with
    ``replies``, in turn."""
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for reply in replies:
        llm.anthropic.enqueue(reply)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(plan)
    return aca.start("run", str(tasks), "--model", "claude-test", name="run", piped=piped, **env)


def start_chain(
    aca, llm, tmp_path, agent, plan: str = CHAIN, piped: bool = False, **env
) -> subprocess.Popen:
    return start_run(aca, llm, tmp_path, plan, [agent] * 40, piped, **env)


def wait_exit(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"aca did not exit within {timeout} s") from None


def checkpoints(session) -> list[dict]:
    return [json.loads(p.read_text()) for p in (session / "checkpoints").glob("*.json")]


def test_sigterm_lets_the_running_task_finish_and_resume_does_the_rest(aca, repo, llm, tmp_path):
    agent = Agent("b")
    try:
        proc = start_chain(aca, llm, tmp_path, agent)
        session = only_session(repo)
        wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "b's call")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: STOP_NOTICE in aca.err("run") + aca.out("run"), WAIT, "the stop notice")
        # b is inside its grace period (30 s by default): its provider call now returns.
        agent.release.set()
        code = wait_exit(proc, WAIT)
    finally:
        agent.release.set()
    err = aca.err("run")
    assert code == 130, err
    assert "Traceback" not in err and "Traceback" not in aca.out("run")
    assert f"aca resume {session.name}" in aca.out("run")
    branch = f"aca/{session.name}"
    assert branch_tasks(repo, branch) == ["a", "b"]  # b finished; c never started
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "interrupted"
    assert [t["status"]["state"] for t in data["plan"]["tasks"]] == [
        "completed",
        "completed",
        "pending",
    ]
    (stop,) = [c for c in checkpoints(session) if c["trigger"] == "interrupt"]
    assert stop["tasks_done"] == 2 and "SIGTERM" in stop["description"]

    calls_before = len(llm.anthropic.requests)
    code, out, err = aca.run("resume", session.name, "--json", name="resume")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "completed"
    assert branch_tasks(repo, branch) == ["a", "b", "c"]
    assert set(agent_task_ids(llm.anthropic.requests[calls_before:])) == {"c"}
    # Every call of both runs is on the session's bill, the interrupted run's included.
    data = json.loads((session / "meta" / "session.json").read_text())
    assert sum(u["calls"] for u in data["usage"]) == len(llm.anthropic.requests)


def test_second_sigint_cancels_at_once_and_a_second_aca_is_refused(
    aca, repo, llm, tmp_path, prefect_api
):
    agent = Agent("b")  # b's provider call does not return until the test ends
    try:
        # A grace period far longer than the test may wait: only the second signal ends it.
        proc = start_chain(aca, llm, tmp_path, agent, ACA_SESSION__INTERRUPT_GRACE_SECONDS="600")
        session = only_session(repo)
        wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "b's call")
        assert proc.poll() is None, aca.err("run")

        # One writer per session: a second aca on it exits 2 and names the holder's pid.
        code, _, err = aca.run("resume", session.name, name="second")
        assert code == 2, err
        assert f"pid {proc.pid}" in err and "Traceback" not in err

        proc.send_signal(signal.SIGINT)
        wait_for(lambda: STOP_NOTICE in aca.err("run") + aca.out("run"), WAIT, "the stop notice")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = wait_exit(proc, WAIT)
        assert time.monotonic() - started < 30  # cancelled, not waited for
    finally:
        agent.release.set()
    err = aca.err("run")
    assert code == 130, err
    assert "Traceback" not in err and "Traceback" not in aca.out("run")
    branch = f"aca/{session.name}"
    assert branch_tasks(repo, branch) == ["a"]
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "interrupted"
    assert any(c["trigger"] == "interrupt" for c in checkpoints(session))
    # The cancelled task's worktree is gone; resume starts it again from a clean one.
    assert not (repo / ".aca" / "worktrees" / session.name / "b").exists()
    # The UI and the terminal tell an interrupt, not a crash: b's task run ended Cancelled.
    assert "Crash detected" not in err and "b stays unfinished" in err, err
    runs = task_runs_of(prefect_api, session.name, task_ended("b"))
    (b_run,) = [r for r in runs if r.name.startswith("b ")]
    assert b_run.state.is_cancelled() and b_run.state.name == "Interrupted", b_run.state

    calls_before = len(llm.anthropic.requests)
    code, out, err = aca.run("resume", session.name, "--json", name="resume")
    assert code == 0, err
    assert branch_tasks(repo, branch) == ["a", "b", "c"]
    assert set(agent_task_ids(llm.anthropic.requests[calls_before:])) == {"b", "c"}


# b's check signals itself once told to (as a stop of a systemd unit signals every process of
# it): it fails because of the stop, not because of b's work. On resume it passes.
KILLED_CHECK = (
    "if [ -e {ctl}/resume ]; then exit 0; fi; touch check-started; "
    "while [ ! -e {ctl}/go ]; do sleep 0.05; done; kill -TERM $$"
)
CHAIN_WITH_KILLED_CHECK = """# Chain

- write a.txt {{#a}}
- write b.txt {{#b depends_on=a verify="{check}"}}
- write c.txt {{#c depends_on=b}}
"""


def test_a_check_the_stop_signal_killed_leaves_its_task_unfinished(
    aca, repo, llm, tmp_path, prefect_api
):
    # In the repository's git directory: the sandbox shows it (read-only), and of the checkout
    # nothing else (docs/security.md).
    ctl = repo / ".git" / "test-ctl"
    ctl.mkdir()
    plan = CHAIN_WITH_KILLED_CHECK.format(check=KILLED_CHECK.format(ctl=ctl))
    proc = start_chain(aca, llm, tmp_path, Agent(), plan=plan)
    session = only_session(repo)
    started = repo / ".aca" / "worktrees" / session.name / "b" / "check-started"
    wait_for(lambda: started.exists() or proc.poll() is not None, WAIT, "b's check")
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: STOP_NOTICE in aca.err("run") + aca.out("run"), WAIT, "the stop notice")
    (ctl / "go").touch()
    code = wait_exit(proc, WAIT)

    err = aca.err("run")
    assert code == 130, err
    assert "Traceback" not in err and "Traceback" not in aca.out("run")
    # The check's failure did not go back to the agent as something to fix.
    prompts = [json.dumps(r.json) for r in llm.anthropic.requests if r.json]
    assert not any("The verify command" in p for p in prompts)
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "interrupted"
    states = {t["id"]: t["status"]["state"] for t in data["plan"]["tasks"]}
    assert states == {"a": "completed", "b": "pending", "c": "pending"}
    assert "b stays unfinished" in err + aca.out("run")
    # The terminal names the flow run as the UI does, from its first line.
    assert f"Beginning flow run 'Chain · {session.name}'" in err
    # The UI says so too: b's task run ended Cancelled, not Failed.
    runs = task_runs_of(prefect_api, session.name, task_ended("b"))
    (b_run,) = [r for r in runs if r.name.startswith("b ")]
    assert b_run.state.is_cancelled(), b_run.state

    (ctl / "resume").touch()
    code, out, err = aca.run("resume", session.name, "--json", name="resume")
    assert code == 0, err
    assert branch_tasks(repo, f"aca/{session.name}") == ["a", "b", "c"]


GROUPED_CHAIN = """# Grouped chain

## First {#first}

- write a.txt {#a}

## Second {#second}

- write b.txt {#b depends_on=a}
- write c.txt {#c depends_on=b}
"""


def test_an_interrupt_ends_the_group_subflow_runs_with_the_run(
    aca, repo, llm, tmp_path, prefect_api
):
    agent = Agent("b")
    try:
        proc = start_chain(
            aca, llm, tmp_path, agent, GROUPED_CHAIN, ACA_SESSION__INTERRUPT_GRACE_SECONDS="600"
        )
        session = only_session(repo)
        wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "b's call")
        # A SIGTERM inside a group's subflow run stops the run as it does elsewhere: Prefect's
        # engine put its own SIGTERM handler back around the subflow, which crashed the run.
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: STOP_NOTICE in aca.err("run") or proc.poll() is not None, WAIT, "stop")
        proc.send_signal(signal.SIGINT)
        code = wait_exit(proc, WAIT)
    finally:
        agent.release.set()
    assert code == 130, aca.err("run")
    assert "Crash detected" not in aca.err("run") and "Traceback" not in aca.err("run")
    runs = {r.name: r for r in flow_runs_of(prefect_api, session.name)}
    # The finished group completed; the one the interrupt cut short ended as the run did: no
    # flow run is left running.
    assert runs["first First"].state.is_completed()
    second = runs["second Second"]
    assert second.state.is_cancelled() and second.state.name == "Interrupted"
    assert runs[f"Grouped chain · {session.name}"].state.name == "Interrupted"
    assert not [name for name, r in runs.items() if not r.state.is_final()]
    # So does the task run the interrupt cut short inside the group, not as Prefect's cleanup
    # of a cancelled flow run would end it ("The parent flow run was cancelled.").
    task_runs = task_runs_of(prefect_api, session.name, task_ended("b"))
    (b_run,) = [r for r in task_runs if r.name.startswith("b ")]
    assert b_run.state.is_cancelled() and b_run.state.name == "Interrupted", b_run.state

    code, out, err = aca.run("resume", session.name, "--json", name="resume")
    assert code == 0, err
    assert branch_tasks(repo, f"aca/{session.name}") == ["a", "b", "c"]
    resumed = [r for r in flow_runs_of(prefect_api, session.name) if r.id != second.id]
    assert any(r.name == "second Second" and r.state.is_completed() for r in resumed)


def test_a_stop_during_a_tasks_retry_wait_starts_no_new_attempt(
    aca, repo, llm, tmp_path, prefect_api
):
    # a's first attempt fails (a 529 and no call retries left), so it waits 25-60 s before its
    # second; the run is stopped during that wait, with a grace period far longer.
    overloaded = Reply(status=529, error="Overloaded")
    plan = "# Retry\n\n- write a.txt {#a max_attempts=2}\n"
    proc = start_run(
        aca,
        llm,
        tmp_path,
        plan,
        [overloaded, *[coding_agent] * 10],
        ACA_SESSION__RETRY_BACKOFF_SECONDS="40",
        ACA_SESSION__CALL_RETRIES="0",
        ACA_SESSION__INTERRUPT_GRACE_SECONDS="600",
    )
    session = only_session(repo)
    output = lambda: aca.err("run") + aca.out("run")  # noqa: E731
    wait_for(lambda: "attempt 1 of 2 failed" in output() or proc.poll() is not None, WAIT, "")
    assert proc.poll() is None, output()
    calls = len(llm.anthropic.requests)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    code = wait_exit(proc, 90)

    assert code == 130, output()
    assert time.monotonic() - started < 15  # the wait ended with the stop
    assert len(llm.anthropic.requests) == calls  # no second attempt
    assert re.search(r"starts again from a clean worktree in \d+\.\d s", output())
    assert "Retry 1/1 will start after the backoff in the warning above" in output()
    assert "Crash detected" not in output() and "Traceback" not in output()
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "interrupted"
    assert [t["status"]["state"] for t in data["plan"]["tasks"]] == ["pending"]
    (a_run,) = task_runs_of(prefect_api, session.name, task_ended("a"))
    assert a_run.state.is_cancelled() and a_run.state.name == "Interrupted", a_run.state

    code, out, err = aca.run("resume", session.name, "--json", name="resume")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "completed"
    assert branch_tasks(repo, f"aca/{session.name}") == ["a"]
    # The resume's attempt is the task's second: its log line says so.
    assert "run 2 started on" in err, err


def test_a_call_cancelled_mid_stream_by_a_second_sigint_is_on_the_bill(aca, repo, llm, tmp_path):
    # a's first call streams its start (5,000 input tokens: the server bills them), then
    # nothing more; the second SIGINT cancels the call there.
    stall = Reply(text="Writing a.txt", usage={"input_tokens": 5000}, fault="stall")
    plan = "# Stall\n\n- write a.txt {#a}\n"
    proc = start_run(aca, llm, tmp_path, plan, [stall], ACA_SESSION__INTERRUPT_GRACE_SECONDS="600")
    session = only_session(repo)
    output = lambda: aca.err("run") + aca.out("run")  # noqa: E731
    wait_for(lambda: llm.stalled.is_set() or proc.poll() is not None, WAIT, "a's stream")
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: STOP_NOTICE in output() or proc.poll() is not None, WAIT, "the stop notice")
    proc.send_signal(signal.SIGINT)
    code = wait_exit(proc, WAIT)

    assert code == 130, output()
    code, out, err = aca.run("usage", "--json", name="usage")
    assert code == 0, err
    (billed,) = json.loads(out)
    assert billed["calls"] == 1 and billed["usage"]["input_tokens"] == 5000
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "interrupted"


def test_a_hangup_stops_the_run_as_sigterm_does(aca, repo, llm, tmp_path, prefect_api):
    # The terminal (or ssh session) of a run without nohup closed: aca was killed mid-task,
    # its flow run left Running; it now stops cleanly, resumable.
    agent = Agent("b")
    try:
        proc = start_chain(aca, llm, tmp_path, agent)
        session = only_session(repo)
        wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "b's call")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: STOP_NOTICE in aca.err("run") or proc.poll() is not None, WAIT, "stop")
        agent.release.set()
        code = wait_exit(proc, WAIT)
    finally:
        agent.release.set()
    assert code == 130, aca.err("run")
    assert "Stopped: interrupted by SIGHUP" in aca.out("run")
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "interrupted"
    (flow_run,) = flow_runs_of(prefect_api, session.name)
    assert flow_run.state.is_cancelled() and flow_run.state.message == "interrupted by SIGHUP"


def test_a_ctrl_c_that_also_ends_the_reader_of_the_output_still_lets_the_task_finish(
    aca, repo, llm, tmp_path
):
    # `aca run ... 2>&1 | tee run.log`: the terminal's Ctrl-C ends tee too. aca's next line
    # went to a broken pipe, and Rich ended the process there (exit 1): the task in its grace
    # period was lost, its call in flight unpaid, the session's end never recorded.
    agent = Agent("b")
    try:
        proc = start_chain(aca, llm, tmp_path, agent, piped=True)
        session = only_session(repo)
        wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "b's call")
        proc.stdout.close()  # the reader is gone, as tee is at the Ctrl-C
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1)  # the stop notice is written, to no one
        agent.release.set()
        code = wait_exit(proc, WAIT)
    finally:
        agent.release.set()
    assert code == 130
    assert branch_tasks(repo, f"aca/{session.name}") == ["a", "b"]  # b finished in its grace
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "interrupted"
