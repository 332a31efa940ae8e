"""How a run ends, told the same in four places: the exit code, the flow run's final state, the
session's status and the summary (docs/engine.md, "How a run ends"). Real Prefect (the test
harness), real git, the fake Anthropic server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterTags,
)
from prefect.states import Cancelling

from aca_flows.cli import main
from aca_flows.flows import run_flow
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.layout import AcaDir
from aca_flows.session.reading import load_session
from aca_flows.session.store import SessionStore
from tests.fakes.coding_agent import coding_agent, task_of

WAIT = 120


def session_with(repo, plan: ExecutionPlan) -> str:
    """A session holding ``plan`` as given, past plan validation: what an engine must still
    survive (a session written by another version, a plan changed under it)."""
    store = SessionStore.create(repo, plan, provider="anthropic", model="claude-test")
    store.close()
    return store.session_id


async def flow_run_named(name: str):
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name))
        )
    assert len(runs) == 1, runs
    return runs[0]


async def result_of(name: str):
    """The flow run's result as another process reads it: from the server and result storage
    (a ``RunSummary``), in its JSON form as ``--json`` prints it."""
    flow_run = await flow_run_named(name)
    summary = await flow_run.state.aresult(raise_on_failure=False)
    return flow_run.state, summary.model_dump(mode="json")


async def task_runs_of(session_id: str) -> list:
    async with get_client() as client:
        tag = TaskRunFilterTags(all_=[f"session:{session_id}"])
        return await client.read_task_runs(task_run_filter=TaskRunFilter(tags=tag))


def load_session_log(repo, session_id: str) -> str:
    return AcaDir(repo).session(session_id).system_log.read_text()


def agent_task_ids(server) -> set[str]:
    return {task_of(r)[0] for r in server.anthropic.requests if r.json.get("tools")}


def test_sequential_stall_ends_failed_naming_each_stuck_task(repo, anthropic_fake, capsys):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"Stall {uuid.uuid4().hex[:8]}"
    plan = ExecutionPlan(
        name=name,
        strategy="sequential",
        tasks=[
            Task(id="a", title="write a.txt"),
            Task(id="deploy", title="write deploy.txt", dependencies=["build"]),
            Task(id="build", title="write build.txt"),
        ],
    )
    session_id = session_with(repo, plan)

    code = main(["resume", session_id, "--workdir", str(repo), "--json"])
    out, err = capsys.readouterr()

    assert code == 1, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "failed"
    assert summary["stuck"] == {
        "deploy": "waits on build (pending)",
        "build": "waits for deploy to run first (strategy sequential)",
    }
    assert summary["stopped_reason"].startswith("stalled: deploy waits on build (pending)")
    session = load_session(repo, session_id)
    assert session.status == "failed" and session.status_reason == summary["stopped_reason"]
    assert {t.id: str(t.status) for t in session.plan.tasks} == {
        "a": "completed",
        "deploy": "blocked: can never start: waits on build (pending)",
        "build": "blocked: can never start: waits for deploy to run first (strategy sequential)",
    }
    assert summary["counts"] == session.task_counts == {"completed": 1, "blocked": 2}
    state, result = asyncio.run(result_of(name))
    assert state.is_failed() and "stalled: deploy waits on build" in state.message
    assert result == summary
    assert agent_task_ids(anthropic_fake) == {"a"}
    # In the terminal: exit 1 again, the stuck tasks named, and no false promise of resume.
    code = main(["resume", session_id, "--workdir", str(repo)])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert f"Session {session_id} failed; work is on branch aca/{session_id}" in out
    assert "Why: stalled: deploy waits on build (pending)" in out
    assert "The plan cannot progress: fix the dependencies named" in out
    assert "Traceback" not in out + err


def test_subtask_waiting_for_its_own_parent_ends_failed_naming_it(repo, anthropic_fake):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"Loop {uuid.uuid4().hex[:8]}"
    plan = ExecutionPlan(
        name=name,
        tasks=[
            Task(id="p", title="write p.txt", children=["p.c"]),
            Task(id="p.c", title="write c.txt", parent_id="p", dependencies=["rel"]),
            Task(id="rel", title="write rel.txt", dependencies=["p"]),
            Task(id="free", title="write free.txt"),
        ],
    )
    session_id = session_with(repo, plan)

    outcome = run_flow(workdir=str(repo), session_id=session_id)

    assert outcome.state_name == "Failed"
    summary = outcome.summary
    assert summary["status"] == "failed" and summary["failed"] == 0
    assert summary["stuck"] == {"p.c": "waits on rel (pending)", "rel": "waits on p (pending)"}
    session = load_session(repo, session_id)
    assert session.status == "failed" and session.status_reason.startswith("stalled: ")
    assert str(session.plan.task("free").status) == "completed"
    assert session.plan.task("rel").status.state == "blocked"
    assert agent_task_ids(anthropic_fake) == {"free"}
    # Resumed, the same plan stalls the same way: never "completed".
    again = run_flow(workdir=str(repo), session_id=session_id)
    assert again.state_name == "Failed" and again.summary["stuck"] == summary["stuck"]
    assert load_session(repo, session_id).status == "failed"


def test_a_failed_task_in_a_group_is_counted_once_and_its_skipped_dependents_by_number(
    tmp_path, repo, anthropic_fake, capsys
):
    # tasks/examples/hello.md's shape: greet fails; tests (its group) and readme (another
    # group) are skipped for it. Both groups end failed with it, but they did not fail.
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"Hello {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# {name}\n\n## Greeting module\n\n"
        '- write greet.py {#greet verify="false"}\n'
        "- write test_greet.py {#tests depends_on=greet}\n\n"
        "## Documentation\n\n"
        "- write README.md {#readme depends_on=greet}\n"
    )

    code = main(["run", str(tasks), "--workdir", str(repo), "--model", "claude-test"])
    out, err = capsys.readouterr()

    reason = "1 task failed: greet; 2 skipped"
    assert code == 1, err
    assert f"Why: {reason}. `aca resume" in out
    (session_id,) = re.findall(r"Session (\S+) failed", out)
    # No task landed: the branch holds no work to look at.
    assert f"failed; nothing was committed to branch aca/{session_id}." in out
    session = load_session(repo, session_id)
    assert session.status == "failed" and session.status_reason == reason
    state, result = asyncio.run(result_of(name))
    assert state.is_failed() and state.message == reason
    assert result["stopped_reason"] == reason
    assert main(["sessions", "show", session_id, "--workdir", str(repo)]) == 0
    assert f"failed ({reason})" in capsys.readouterr().out


class SlowAgent:
    """Answers ``task_id``'s first call only once released (or after ``WAIT`` seconds)."""

    def __init__(self, task_id: str):
        self.task_id = task_id
        self.arrived = threading.Event()
        self.release = threading.Event()

    def __call__(self, request):
        if task_of(request)[0] == self.task_id and not self.arrived.is_set():
            self.arrived.set()
            self.release.wait(WAIT)
        return coding_agent(request)


def cancel_from_the_ui_while_b_runs(tmp_path, anthropic_fake, group: bool = False, **where):
    """Runs a -> b (``where``: ``workdir`` or ``repo``) and cancels its flow run as the UI's
    Cancel does while b's provider call waits; the run's outcome and the plan's name. With
    ``group``, a and b are group G's, c after them H's, and the Cancel is G's flow run's."""
    agent = SlowAgent("b")
    anthropic_fake.anthropic.default = agent
    name = f"Cancel {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    a_b = "- write a.txt {#a}\n- write b.txt {#b depends_on=a}\n"
    if group:
        a_b = f"## G {{#g}}\n\n{a_b}\n## H {{#h}}\n\n- write c.txt {{#c depends_on=b}}\n"
    tasks.write_text(f"# {name}\n\n{a_b}")
    outcomes = []
    runner = threading.Thread(
        target=lambda: outcomes.append(run_flow(task_file=str(tasks), model="claude-test", **where))
    )
    runner.start()
    try:
        assert agent.arrived.wait(WAIT), "b's provider call never came"

        async def cancel():  # what the UI's Cancel button does
            flow_run = await flow_run_named(name)
            async with get_client() as client:
                if group:  # the group's flow run, of this session
                    (flow_run,) = await client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(
                            name=FlowRunFilterName(like_="g G"),
                            tags=FlowRunFilterTags(
                                all_=[t for t in flow_run.tags if "session:" in t]
                            ),
                        )
                    )
                await client.set_flow_run_state(flow_run.id, Cancelling(), force=True)

        asyncio.run(cancel())
        runner.join(WAIT)
        assert not runner.is_alive(), "the cancelled run did not end"
    finally:
        agent.release.set()
        runner.join(WAIT)
    (outcome,) = outcomes
    return outcome, name


def test_a_cancel_from_the_ui_leaves_a_resumable_session(tmp_path, repo, anthropic_fake):
    outcome, name = cancel_from_the_ui_while_b_runs(tmp_path, anthropic_fake, workdir=str(repo))
    summary = outcome.summary
    assert outcome.state_name == "Cancelled"
    assert summary["status"] == "interrupted"
    assert summary["stopped_reason"] == "interrupted by a cancel from the Prefect UI"
    session = load_session(repo, summary["session_id"])
    assert session.status == "interrupted"
    assert {t.id: str(t.status) for t in session.plan.tasks} == {"a": "completed", "b": "pending"}
    state, result = asyncio.run(result_of(name))
    assert state.is_cancelled() and result == summary
    # b's task run was cut off by the stop: Cancelled, "Interrupted", not a crash (whose
    # ERROR line, "Crash detected!", would be in the log).
    (b_run,) = [r for r in asyncio.run(task_runs_of(summary["session_id"])) if r.name[0] == "b"]
    assert b_run.state.is_cancelled() and b_run.state.name == "Interrupted", b_run.state
    log = load_session_log(repo, summary["session_id"])
    assert "Crash detected" not in log and "b stays unfinished" in log, log

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    again = run_flow(workdir=str(repo), session_id=summary["session_id"])
    assert again.state_name == "Completed"
    assert again.summary["status"] == "completed"
    assert load_session(repo, summary["session_id"]).status == "completed"


def test_a_cancel_of_a_groups_flow_run_stops_the_run_as_one_of_the_whole(
    tmp_path, repo, anthropic_fake
):
    # The UI offers Cancel on each group's flow run: it was ignored, b landed and c started
    # and was paid for, the group's run left Cancelling for good inside a Completed run.
    outcome, _ = cancel_from_the_ui_while_b_runs(
        tmp_path, anthropic_fake, group=True, workdir=str(repo)
    )
    assert outcome.state_name == "Cancelled", outcome.state_name
    assert outcome.summary["stopped_reason"] == "interrupted by a cancel from the Prefect UI"
    session = load_session(repo, outcome.summary["session_id"])
    assert {t.id: str(t.status) for t in session.plan.tasks if not t.children} == {
        "a": "completed", "b": "pending", "c": "pending",
    }  # fmt: skip
    assert not [r for r in anthropic_fake.anthropic.requests if task_of(r)[0] == "c"]


def test_a_cancelled_repo_run_records_the_resume_that_finds_its_session(
    tmp_path, anthropic_fake, monkeypatch
):
    import shlex
    import subprocess

    from aca_flows.workspace.remote import working_area
    from tests.fakes.git_repo import make_repo

    remote = tmp_path / "remote.git"
    source = make_repo(tmp_path / "source")
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(remote)], check=True)
    outcome, _ = cancel_from_the_ui_while_b_runs(tmp_path, anthropic_fake, repo=str(remote))
    session_id = outcome.summary["session_id"]
    # What `aca sessions show` says of it names the remote: the session is in its working
    # area, which `aca resume ID` alone would not look in.
    reason = load_session(working_area(str(remote)), session_id).status_reason
    resume = f"aca resume {session_id} --repo {remote}"
    assert reason == f"interrupted by a cancel from the Prefect UI; `{resume}` continues"
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(resume)[1:]) == 0


def test_a_completed_runs_summary_is_read_back_from_the_flow_run(tmp_path, repo, anthropic_fake):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"Done {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# {name}\n\n- write a.txt {{#a}}\n")
    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")
    state, result = asyncio.run(result_of(name))
    assert state.is_completed()
    assert result == outcome.summary
    assert result["status"] == "completed" and result["counts"] == {"completed": 1}


def test_a_signal_while_an_interrupted_run_ends_leaves_its_flow_run_interrupted(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    """A third Ctrl-C soon after the second came while the flow run recorded its end, after
    the flow had put the command's handlers back: a KeyboardInterrupt there ended the flow
    run Crashed, with no summary, while the session said interrupted."""
    from aca_flows._startup import signals_remembered
    from aca_flows.flows import aca_run
    from aca_flows.flows.interrupt import interrupt_on_signals

    agent = SlowAgent("b")
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(agent)
    name = f"Signals {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# {name}\n\n- write a.txt {{#a}}\n- write b.txt {{#b depends_on=a}}\n")
    close_clients = aca_run.close_clients

    async def signalled_close_clients():  # the flow's cleanup, after it gave the signals back
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.2)
        await close_clients()

    monkeypatch.setattr(aca_run, "close_clients", signalled_close_clients)

    def ctrl_c_twice():
        if agent.arrived.wait(WAIT):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGINT)

    signaller = threading.Thread(target=ctrl_c_twice)
    signaller.start()
    outcome = None
    try:
        with signals_remembered(), interrupt_on_signals():
            outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test")
    except KeyboardInterrupt:
        pass  # the flow run crashed: asserted below
    finally:
        agent.release.set()
        signaller.join(WAIT)

    state = asyncio.run(flow_run_named(name)).state
    assert state.is_cancelled() and state.name == "Interrupted", state
    assert outcome is not None and outcome.summary["status"] == "interrupted"
    assert load_session(repo, outcome.summary["session_id"]).status == "interrupted"


def cancel_from_the_ui_once(name: str, *events: threading.Event) -> threading.Thread:
    """A thread that cancels the flow run named ``name`` as the UI's Cancel does, once every
    one of ``events`` is set."""

    def cancel_when_set():
        if all(event.wait(WAIT) for event in events):

            async def cancel():
                flow_run = await flow_run_named(name)
                async with get_client() as client:
                    await client.set_flow_run_state(flow_run.id, Cancelling(), force=True)

            asyncio.run(cancel())

    canceller = threading.Thread(target=cancel_when_set)
    canceller.start()
    return canceller


# Longer than the flow takes to see a cancel from the UI (it looks every 2 s).
SLOW_ENGINE_STEP_SECONDS = 5


def test_a_cancel_while_prefect_starts_a_task_run_ends_it_interrupted(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    """The stop came while Prefect's engine, not aca's task function, had the task run: its
    tag concurrency check at the start (slow, as behind a busy SQLite server). The cancel
    landed in Prefect's code, which called it a crash: the task run ended Crashed ("Crash
    detected!" in the log) while the session said interrupted."""
    from prefect.client.orchestration import PrefectClient

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"Engine cancel {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# {name}\n\n- write a.txt {{#a}}\n")
    checking = threading.Event()
    check = PrefectClient.increment_concurrency_slots_with_lease

    async def slow_check(self, names, *args, **kwargs):
        if all(n.startswith("tag:") for n in names):  # a task run's own, at its start
            checking.set()
            await asyncio.sleep(SLOW_ENGINE_STEP_SECONDS)
        return await check(self, names, *args, **kwargs)

    monkeypatch.setattr(PrefectClient, "increment_concurrency_slots_with_lease", slow_check)
    canceller = cancel_from_the_ui_once(name, checking)
    try:
        code = main(["run", str(tasks), "--workdir", str(repo), "--model", "claude-test"])
    finally:
        checking.set()
        canceller.join(WAIT)
    out, err = capsys.readouterr()

    assert code == 130, out + err
    (session_id,) = re.findall(r"Session (\S+) interrupted", out)
    session = load_session(repo, session_id)
    assert session.status == "interrupted" and str(session.plan.task("a").status) == "pending"
    assert asyncio.run(flow_run_named(name)).state.is_cancelled()
    (a_run,) = asyncio.run(task_runs_of(session_id))
    assert a_run.state.is_cancelled() and a_run.state.name == "Interrupted", a_run.state
    log = load_session_log(repo, session_id)
    assert "Crash detected" not in log + out + err and "a stays unfinished" in log, log
    assert agent_task_ids(anthropic_fake) == set()  # nothing was paid for after the stop


def test_a_cancel_while_prefect_writes_a_task_result_keeps_the_task_completed(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    """The stop came once a's work was done, while Prefect wrote its result: the cancel
    landed there and a's task run ended Crashed, its finished work left pending. b, cut off
    in its work, ends Interrupted."""
    from prefect.results import ResultStore

    agent = SlowAgent("b")
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(agent)
    name = f"Result cancel {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# {name}\n\n- write a.txt {{#a}}\n- write b.txt {{#b}}\n")
    writing = threading.Event()
    write = ResultStore.apersist_result_record

    async def slow_write(self, result_record, *args, **kwargs):
        if Path(result_record.metadata.storage_key).name.startswith("a-"):  # a's result
            writing.set()
            await asyncio.sleep(SLOW_ENGINE_STEP_SECONDS)
        return await write(self, result_record, *args, **kwargs)

    monkeypatch.setattr(ResultStore, "apersist_result_record", slow_write)
    canceller = cancel_from_the_ui_once(name, writing, agent.arrived)
    try:
        code = main(["run", str(tasks), "--workdir", str(repo), "--model", "claude-test"])
    finally:
        writing.set()
        agent.release.set()
        canceller.join(WAIT)
    out, err = capsys.readouterr()

    assert code == 130, out + err
    (session_id,) = re.findall(r"Session (\S+) interrupted", out)
    session = load_session(repo, session_id)
    assert session.status == "interrupted"
    assert {t.id: str(t.status) for t in session.plan.tasks} == {"a": "completed", "b": "pending"}
    runs = {r.name[0]: r.state for r in asyncio.run(task_runs_of(session_id))}
    assert runs["a"].is_completed(), runs
    assert runs["b"].is_cancelled() and runs["b"].name == "Interrupted", runs
    log = load_session_log(repo, session_id)
    assert "Crash detected" not in log + out + err and "b stays unfinished" in log, log


CREDIT_TOO_LOW = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing "
    "to upgrade or purchase credits."
)


@pytest.mark.parametrize(
    ("status", "said", "cannot_serve"),
    [
        # The key is revoked: the real API's answer to it.
        (401, "invalid x-api-key", "refused its credentials"),
        # The account's credit runs out: the real API's answer then.
        (400, CREDIT_TOO_LOW, "says the account's credit or spend limit is spent"),
    ],
    ids=["key-refused", "credit-spent"],
)
def test_a_provider_that_cannot_serve_mid_run_starts_no_more_of_its_tasks_a_resume_finishes_them(
    tmp_path, repo, anthropic_fake, capsys, monkeypatch, status, said, cannot_serve
):
    monkeypatch.setenv("OPENAI_BASE_URL", f"{anthropic_fake.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    anthropic_fake.anthropic.enqueue(coding_agent)
    anthropic_fake.anthropic.enqueue(coding_agent)
    anthropic_fake.anthropic.enqueue(status=status, error=said)
    anthropic_fake.anthropic.default = coding_agent
    write = {"name": "write_file", "arguments": {"path": "e.txt", "content": "e\n"}}
    anthropic_fake.openai.enqueue(tool_calls=[write])
    anthropic_fake.openai.enqueue(tool_calls=[{"name": "finish", "arguments": {"summary": "e"}}])
    name = f"Revoked {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# {name}\n\n"
        + "".join(f"- write {t}.txt {{#{t}}}\n" for t in "abcd")
        + "- write e.txt {#e provider=openai model=gpt-test}\n"
    )
    run = ["run", str(tasks), "--workdir", str(repo), "--model", "claude-test"]

    code = main([*run, "--max-concurrent", "1"])

    out, err = capsys.readouterr()
    (session_id,) = [p.name for p in (repo / ".aca" / "sessions").iterdir()]
    agent_calls = [task_of(r)[0] for r in anthropic_fake.anthropic.requests]
    assert agent_calls == ["a", "a", "b"]  # b's call refused; c and d never called
    assert len(anthropic_fake.openai.requests) == 2  # another provider's task went on
    assert code == 3, err
    resume = f"aca resume {session_id} --workdir {repo}"
    fix = {
        401: "set a valid ANTHROPIC_API_KEY",
        400: "add credit to the account, or raise its spend limit, with the provider",
    }[status]
    why = (
        f"anthropic {cannot_serve} ({status}: {said}), so no anthropic task "
        f"starts: {fix}, then `{resume}` continues"
    )
    session = load_session(repo, session_id)
    assert (session.status, session.status_reason) == ("stopped", why)
    states = {t.id: t.status.state for t in session.plan.tasks if not t.children}
    assert states == {
        "a": "completed", "b": "pending", "c": "pending", "d": "pending", "e": "completed"
    }  # fmt: skip
    state, result = asyncio.run(result_of(name))
    assert (state.type.value, state.name, state.message) == ("CANCELLED", "Stopped", why)
    assert (result["status"], result["stopped_reason"]) == ("stopped", why)
    last = out.strip().splitlines()[-1]
    ending = f"Session {session_id} stopped; work is on branch aca/{session_id}. Stopped: {why}."
    assert last == ending
    assert main(["sessions", "show", session_id, "--workdir", str(repo)]) == 0
    assert f"stopped ({why})" in " ".join(capsys.readouterr().out.split())
    listed = ["checkpoints", "list", "--session", session_id, "--workdir", str(repo), "--json"]
    assert main(listed) == 0
    stop = json.loads(capsys.readouterr().out)[0]  # newest first
    assert (stop["trigger"], stop["description"]) == ("provider", why)  # no budget stopped it

    # The key fixed (or the credit added), the resume runs the tasks left, and only those.
    assert main(["resume", session_id, "--workdir", str(repo)]) == 0
    session = load_session(repo, session_id)
    assert {t.id: t.status.state for t in session.plan.tasks if not t.children} == dict.fromkeys(
        "abcde", "completed"
    )
    assert sorted(task_of(r)[0] for r in anthropic_fake.anthropic.requests[3:]) == [
        "b", "b", "c", "c", "d", "d"
    ]  # fmt: skip
    # Every worktree gone, the run leaves no folder of them behind (it kept one with only
    # its merge lock in it, for every session).
    assert not (repo / ".aca" / "worktrees" / session_id).exists()


@pytest.mark.parametrize("remote", [False, True], ids=["workdir", "repo"])
def test_the_end_of_a_resume_says_its_task_file_changed_and_how_to_run_it_as_it_is(
    tmp_path, repo, anthropic_fake, capsys, monkeypatch, remote
):
    import shlex
    import subprocess

    anthropic_fake.anthropic.default = coding_agent
    where = f"--workdir {repo}"
    if remote:  # the session lives in the remote's working area, pushed to the remote
        bare = tmp_path / "remote.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
        where = f"--repo {bare}"
        monkeypatch.chdir(tmp_path)
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- write a.txt {#a verify="false"}\n')
    assert main(["run", str(tasks), *where.split(), "--model", "claude-test"]) == 1
    session_id = capsys.readouterr().out.strip().splitlines()[-1].split()[1]
    tasks.write_text('- write a.txt {#a verify="true"}\n')  # the user fixes the check

    assert main(["resume", session_id, *where.split()]) == 1  # the old check again

    last = capsys.readouterr().out.strip().splitlines()[-1]
    run = f"aca run {tasks} {where}"
    assert last.endswith(
        f"`aca resume {session_id} {where}` continues. But {tasks} changed since the "
        f"session started, and a resume runs the plan as it was then: `{run}` runs it as it "
        "is now."
    )
    assert main([*shlex.split(run)[1:], "--model", "claude-test"]) == 0  # as it says
