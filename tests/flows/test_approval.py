"""Approval of the plan (``--require-approval``, docs/approval.md), driven through Prefect's API
against the real test server: the flow run pauses for a typed input, and a decision sent with
``resume_flow_run`` (what the UI's form sends) or ``aca approve`` / ``aca reject`` resumes it.
Real git, the fake Anthropic server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
import uuid
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.logging.handlers import APILogHandler

from aca_flows.cli import main
from aca_flows.flows import run_flow
from aca_flows.session.layout import AcaDir
from aca_flows.session.reading import display_status, list_sessions, load_session
from tests.fakes.coding_agent import coding_agent, task_of
from tests.fakes.deployment_runs import deployment_run, run_as_a_worker
from tests.flows.conftest import eventually
from tests.flows.test_artifacts import reports_of
from tests.flows.test_events import aca_events

WAIT = 120


@pytest.fixture(autouse=True)
def bounded_waits(monkeypatch):
    """A test that fails while a run waits must not leave it waiting for a day."""
    monkeypatch.setenv("ACA_APPROVAL__TIMEOUT_SECONDS", "300")


def start(target) -> tuple[threading.Thread, list]:
    """``target()`` in a thread (the waiting run); its return value lands in the list."""
    results: list = []
    thread = threading.Thread(target=lambda: results.append(target()), daemon=True)
    thread.start()
    return thread, results


def waiting_session(repo, thread: threading.Thread):
    """The session once its run waits for approval and its flow run is Paused (or fails the
    test if the run ended)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert thread.is_alive(), "the run ended instead of waiting for approval"
        for session in list_sessions(repo):
            waiting = session.approval is not None and session.approval.state == "waiting"
            if waiting and flow_run_of(session).state.is_paused():
                return session
        time.sleep(0.2)
    raise AssertionError("no session began to wait for approval")


def flow_run_of(session):
    async def read():
        async with get_client() as client:
            return await client.read_flow_run(UUID(session.approval.flow_run_id))

    return asyncio.run(read())


def task_run_states(flow_run_id: str) -> dict[str, str]:
    """Task run name -> state name, of one flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
            )
        return {r.name: r.state.name for r in runs}

    return asyncio.run(read())


def flow_run_log(flow_run_id: str) -> str:
    """The log lines of one flow run, as the server keeps them."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read():
        await APILogHandler.aflush()  # the run's logs are sent in batches
        async with get_client() as client:
            ids = [UUID(flow_run_id)]
            return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))

    return "\n".join(log.message for log in asyncio.run(read()))


def task_file(tmp_path, title: str) -> str:
    path = tmp_path / "tasks.md"
    path.write_text(
        f"# {title} {uuid.uuid4().hex[:8]}\n\n"
        "- write a.txt {#a}\n"
        "- write b.txt {#b depends_on=a}\n"
        "- write c.txt {#c depends_on=b}\n"
    )
    return str(path)


def agent_requests(server) -> list:
    return [r for r in server.anthropic.requests if r.json.get("tools")]


def test_a_run_waits_paused_and_an_approval_with_changes_resumes_it(
    tmp_path, repo, anthropic_fake, capsys
):
    from prefect.types._datetime import now

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = task_file(tmp_path, "Approve")
    since = now("UTC")
    thread, outcomes = start(
        lambda: run_flow(task_file=tasks, workdir=str(repo), require_approval=True)
    )
    try:
        session = waiting_session(repo, thread)

        # Waiting: Paused in Prefect, "waiting for approval" in aca, nothing spent, and the
        # reading commands are not blocked by the run that holds the session.
        assert flow_run_of(session).state.is_paused()
        assert main(["sessions", "list", "--workdir", str(repo), "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)["sessions"]
        assert row["status"] == "waiting for approval"
        assert main(["sessions", "show", session.id, "--workdir", str(repo)]) == 0
        # From another folder, the command says where the session is.
        approve = f"`aca approve {session.id} --workdir {repo.resolve()}`"
        shown = " ".join(capsys.readouterr().out.split())
        assert f"The plan waits for approval: {approve}" in shown
        assert main(["usage", "--workdir", str(repo), "--json"]) == 0
        capsys.readouterr()
        assert agent_requests(anthropic_fake) == []
        # The command the run's log names works from any folder: it names the workdir.
        hint = f"`aca approve {session.id} --workdir {repo.resolve()}`"
        deadline = time.monotonic() + WAIT  # logs reach the server in batches
        while hint not in flow_run_log(session.approval.flow_run_id):
            assert time.monotonic() < deadline, "the waiting run's log never named the command"
            time.sleep(0.5)
        # The plan itself is in it, for a reviewer at the terminal: the tree with its order.
        assert "[ ] b — write b.txt  (after a)" in flow_run_log(session.approval.flow_run_id)

        # What the UI's form sends: skip b, one task at a time, a note for every prompt.
        resume_flow_run(
            UUID(session.approval.flow_run_id),
            run_input={"decision": "approve", "skip": ["b"], "max_concurrent": 1, "note": "tabs"},
        )
        thread.join(WAIT)
        assert not thread.is_alive(), "the approved run did not end"
    finally:
        thread.join(WAIT)

    (outcome,) = outcomes
    assert outcome.state_name == "Completed"
    assert outcome.summary["status"] == "completed"
    session = load_session(repo, session.id)
    # b was left out and ends Skipped; c, which depends on it, still runs (docs/approval.md).
    assert {t.id: str(t.status) for t in session.plan.tasks} == {
        "a": "completed",
        "b": "skipped: left out at approval",
        "c": "completed",
    }
    assert session.approval.state == "approved" and session.approval.skip == ["b"]
    asked = agent_requests(anthropic_fake)
    assert {task_of(r)[0] for r in asked} == {"a", "c"}
    assert all("Reviewer's note: tabs" in task_of(r)[2] for r in asked)
    states = task_run_states(session.approval.flow_run_id)
    assert states["b write b.txt"] == "Skipped"
    assert states["a write a.txt"] == states["c write c.txt"] == "Completed"
    # Its report and its event say it was left out, for good: not "`aca resume` runs it".
    report = reports_of(session.id)["b"].data
    assert "no resume runs it: it was left out" in report and "aca resume" not in report
    skipped = eventually(
        lambda: [
            e
            for e in aca_events(session.approval.flow_run_id, since)
            if e.event == "aca.task.skipped"
        ],
        "b's skipped event",
    )
    assert [e.payload["reason"] for e in skipped] == ["left out at approval"]


def test_the_form_of_a_run_started_inside_its_repository_names_the_workdir(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # The terminal's hint may leave --workdir out there; the form, read from anywhere, may not.
    monkeypatch.chdir(repo)
    tasks = task_file(tmp_path, "Form")
    thread, _ = start(lambda: run_flow(task_file=tasks, workdir=str(repo), require_approval=True))
    try:
        session = waiting_session(repo, thread)

        async def form_text() -> str:
            async with get_client() as client:
                run = await client.read_flow_run(UUID(session.approval.flow_run_id))
                key = run.state.state_details.run_input_keyset["description"]
                return await client.read_flow_run_input(run.id, key)

        text = asyncio.run(form_text())
        assert f"`aca approve {session.id} --workdir {repo.resolve()} --skip ID`" in text, text
        # As the form, `aca reject` takes no reason if none is given.
        assert main(["reject", session.id, "-w", str(repo)]) == 0
        thread.join(WAIT)
    finally:
        thread.join(WAIT)
    assert load_session(repo, session.id).status_reason == "rejected (no reason given)"


def test_aca_reject_cancels_the_waiting_run_with_the_reason(tmp_path, repo, anthropic_fake, capsys):
    tasks = task_file(tmp_path, "Reject")
    thread, codes = start(
        lambda: main(["run", tasks, "--workdir", str(repo), "--require-approval", "--json"])
    )
    try:
        session = waiting_session(repo, thread)
        assert main(["reject", session.id[:15], "--reason", "too broad", "-w", str(repo)]) == 0
        thread.join(WAIT)
        assert not thread.is_alive(), "the rejected run did not end"
    finally:
        thread.join(WAIT)

    assert codes == [3]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "rejected" and summary["stopped_reason"] == "too broad"
    session = load_session(repo, session.id)
    assert (session.status, session.status_reason) == ("rejected", "too broad")
    assert session.approval.state == "rejected"
    assert {str(t.status) for t in session.plan.tasks} == {"pending"}
    assert agent_requests(anthropic_fake) == []
    state = flow_run_of(session).state
    assert state.is_cancelled() and state.name == "Rejected" and state.message == "too broad"
    # The Artifacts tab ends as every run's does: the summary of what was paid (nothing).
    summary_artifact = asyncio.run(artifact(f"aca-summary-{session.id.lower()}"))
    assert "**Total cost:** $0.0000" in summary_artifact

    # A resume never runs a plan nobody approved: it asks again.
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    thread, outcomes = start(lambda: run_flow(workdir=str(repo), session_id=session.id))
    try:
        again = waiting_session(repo, thread)
        assert again.id == session.id
        assert again.approval.flow_run_id != session.approval.flow_run_id
        assert main(["approve", session.id, "-w", str(repo)]) == 0
        thread.join(WAIT)
    finally:
        thread.join(WAIT)
    assert outcomes[0].summary["status"] == "completed"


def test_a_secret_typed_into_a_reason_never_reaches_the_prefect_server(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # The server keeps a run's input (its API and UI show it to all who can read it): aca's
    # own records had it redacted, the flow run's input kept it as typed.
    secret = "ghp_" + "Q7xKd2Lp9Vm4Rt8Wn3Zs6Yb1Hc5Jf0Ga2Ek7"
    monkeypatch.setenv("GITHUB_TOKEN", secret)
    tasks = task_file(tmp_path, "Reject")
    thread, _ = start(lambda: run_flow(task_file=tasks, workdir=str(repo), require_approval=True))
    try:
        session = waiting_session(repo, thread)
        assert main(["reject", session.id, "--reason", f"not with {secret}", "-w", str(repo)]) == 0
        thread.join(WAIT)
    finally:
        thread.join(WAIT)

    async def inputs() -> list:
        async with get_client() as client:
            run_id = UUID(session.approval.flow_run_id)
            return await client.filter_flow_run_input(run_id, "", 100, set())

    stored = [str(kept.value) for kept in asyncio.run(inputs())]
    assert any("not with" in value for value in stored), stored
    assert not any(secret in value for value in stored)


def test_of_two_answers_sent_at_once_one_is_applied_and_the_other_told_so(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # An approval and a rejection sent together were both told they were applied; the run
    # carried out one of them (a rejected plan ran).
    from prefect.client.orchestration import SyncPrefectClient

    from aca_flows.errors import InputError
    from aca_flows.flows.approval import send_decision

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = task_file(tmp_path, "Race")
    thread, outcomes = start(
        lambda: run_flow(task_file=tasks, workdir=str(repo), require_approval=True)
    )
    both_found_it_waiting = threading.Barrier(2, timeout=WAIT)
    resume = SyncPrefectClient.resume_flow_run

    def at_once(self, *args, **kwargs):
        both_found_it_waiting.wait()  # each has read the run as paused: the race
        return resume(self, *args, **kwargs)

    monkeypatch.setattr(SyncPrefectClient, "resume_flow_run", at_once)
    told: dict[str, str] = {}

    def answer(decision: str) -> None:
        try:
            send_decision(repo.resolve(), session.id, {"decision": decision, "reason": "no"})
            told[decision] = "applied"
        except InputError as refused:
            told[decision] = str(refused)

    try:
        session = waiting_session(repo, thread)
        answers = [threading.Thread(target=answer, args=(d,)) for d in ("approve", "reject")]
        for each in answers:
            each.start()
        for each in answers:
            each.join(WAIT)
        thread.join(WAIT)
        assert not thread.is_alive(), "the answered run did not end"
    finally:
        thread.join(WAIT)

    (applied,) = [decision for decision, said in told.items() if said == "applied"]
    (refused,) = [said for said in told.values() if said != "applied"]
    assert refused.endswith("is not waiting for input any more: it was answered already.")
    state = load_session(repo, session.id).approval.state
    assert state == {"approve": "approved", "reject": "rejected"}[applied]
    assert outcomes[0].summary["status"] == {"approve": "completed", "reject": "rejected"}[applied]


def test_a_plan_with_nothing_left_to_run_is_not_held_for_approval(tmp_path, repo, anthropic_fake):
    # Every task done already: it waited a day for an answer, then ended rejected (exit 3),
    # where the same file without --require-approval completes.
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# Done {uuid.uuid4().hex[:8]}\n\n- [x] write a.txt {{#a}}\n")
    thread, outcomes = start(
        lambda: run_flow(task_file=str(tasks), workdir=str(repo), require_approval=True)
    )
    thread.join(WAIT)
    assert not thread.is_alive(), "a plan with nothing to run waited for approval"
    (outcome,) = outcomes
    assert outcome.summary["status"] == "completed"
    (session,) = list_sessions(repo)
    assert session.approval is None


def test_aca_approve_refuses_an_unknown_task_then_approves(tmp_path, repo, anthropic_fake, capsys):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = task_file(tmp_path, "CLI approve")
    thread, outcomes = start(
        lambda: run_flow(task_file=tasks, workdir=str(repo), require_approval=True)
    )
    try:
        session = waiting_session(repo, thread)
        assert main(["approve", session.id, "--skip", "zz", "-w", str(repo)]) == 2
        assert (
            "no task zz in the plan; the tasks that can be skipped are a, b, c"
            in capsys.readouterr().err
        )
        assert flow_run_of(session).state.is_paused()  # still waiting

        prefix = session.id[:-2]  # a unique prefix names the session; the answer names it whole
        # `--skip b,c`, as a task file writes a list (it was "no task b,c in the plan").
        assert main(["approve", prefix, "--skip", "b,c", "-w", str(repo)]) == 0
        assert f"Session {session.id}: plan approved" in capsys.readouterr().out
        thread.join(WAIT)
        assert not thread.is_alive(), "the approved run did not end"
    finally:
        thread.join(WAIT)

    (outcome,) = outcomes
    assert outcome.summary["status"] == "completed"
    statuses = {t.id: str(t.status) for t in load_session(repo, session.id).plan.tasks}
    left_out = "skipped: left out at approval"
    assert statuses == {"a": "completed", "b": left_out, "c": left_out}
    assert main(["approve", session.id, "-w", str(repo)]) == 2  # nothing waits any more
    assert "is not waiting for approval" in capsys.readouterr().err


def test_an_answer_from_the_form_that_cannot_apply_is_asked_again(tmp_path, repo, anthropic_fake):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = task_file(tmp_path, "Ask again")
    thread, outcomes = start(
        lambda: run_flow(task_file=tasks, workdir=str(repo), require_approval=True)
    )
    try:
        session = waiting_session(repo, thread)
        flow_run_id = UUID(session.approval.flow_run_id)
        resume_flow_run(flow_run_id, run_input={"decision": "approve", "skip": ["nope"]})
        deadline = time.monotonic() + WAIT
        while not flow_run_of(session).state.is_paused():  # waiting again, for a new answer
            assert thread.is_alive() and time.monotonic() < deadline, "it did not ask again"
            time.sleep(0.2)
        assert load_session(repo, session.id).approval.state == "waiting"
        resume_flow_run(flow_run_id, run_input={"decision": "approve", "skip": ["a"]})
        thread.join(WAIT)
    finally:
        thread.join(WAIT)

    assert outcomes[0].summary["status"] == "completed"
    session = load_session(repo, session.id)
    assert session.approval.skip == ["a"]
    assert str(session.plan.task("a").status) == "skipped: left out at approval"
    assert agent_requests(anthropic_fake) and {
        task_of(r)[0] for r in agent_requests(anthropic_fake)
    } == {"b", "c"}


def test_a_resume_without_an_answer_approves_nothing_and_is_asked_again(
    tmp_path, repo, anthropic_fake
):
    # Prefect's bare resume_flow_run (an automation's "Resume a flow run") carries no answer:
    # the form's defaults were taken for an approval, and the plan ran, nobody having decided.
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = task_file(tmp_path, "Bare resume")
    thread, outcomes = start(
        lambda: run_flow(task_file=tasks, workdir=str(repo), require_approval=True)
    )
    try:
        session = waiting_session(repo, thread)
        resume_flow_run(UUID(session.approval.flow_run_id))
        deadline = time.monotonic() + WAIT
        while not flow_run_of(session).state.is_paused():  # waiting again, for an answer
            assert thread.is_alive() and time.monotonic() < deadline, "it did not ask again"
            time.sleep(0.2)
        assert load_session(repo, session.id).approval.state == "waiting"
        assert main(["reject", session.id, "-w", str(repo)]) == 0
        thread.join(WAIT)
    finally:
        thread.join(WAIT)

    assert outcomes[0].summary["status"] == "rejected"
    assert agent_requests(anthropic_fake) == []


def test_nobody_answering_in_time_takes_the_configured_default(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    monkeypatch.setenv("ACA_APPROVAL__TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("ACA_APPROVAL__ON_TIMEOUT", "approve")
    tasks = task_file(tmp_path, "Timeout")

    outcome = run_flow(task_file=tasks, workdir=str(repo), require_approval=True)

    assert outcome.state_name == "Completed"
    session = load_session(repo, outcome.summary["session_id"])
    assert session.status == "completed"
    assert session.approval.state == "approved" and session.approval.timed_out
    assert session.approval.reason == "no answer within 1 s"


def test_by_default_nobody_answering_rejects(tmp_path, repo, anthropic_fake, monkeypatch):
    monkeypatch.setenv("ACA_APPROVAL__TIMEOUT_SECONDS", "1")
    tasks = task_file(tmp_path, "Timeout reject")

    outcome = run_flow(task_file=tasks, workdir=str(repo), require_approval=True)

    assert outcome.state_name == "Rejected"
    session = load_session(repo, outcome.summary["session_id"])
    assert (session.status, session.status_reason) == ("rejected", "no answer within 1 s")
    assert agent_requests(anthropic_fake) == []


def test_a_cancel_from_the_ui_ends_the_wait_and_leaves_a_resumable_session(
    tmp_path, repo, anthropic_fake
):
    from prefect.states import Cancelling

    tasks = task_file(tmp_path, "Cancel the wait")
    thread, outcomes = start(
        lambda: run_flow(task_file=tasks, workdir=str(repo), require_approval=True)
    )
    try:
        session = waiting_session(repo, thread)

        async def cancel():  # what the UI's Cancel button does to the paused run
            async with get_client() as client:
                flow_run_id = UUID(session.approval.flow_run_id)
                await client.set_flow_run_state(flow_run_id, Cancelling(), force=True)

        asyncio.run(cancel())
        thread.join(WAIT)
        assert not thread.is_alive(), "the cancelled run did not end"
    finally:
        thread.join(WAIT)

    (outcome,) = outcomes
    assert outcome.state_name == "Cancelled"
    assert outcome.summary["status"] == "interrupted"
    session = load_session(repo, session.id)
    assert session.status == "interrupted"
    assert session.approval.state == "waiting"  # nobody decided: a resume asks again


# -- a stuck task asks ([approval] on_failure = "ask") ------------------------------------------


def hint_follower(request):
    """The coding agent, except that a reviewer's hint "write X" overrides its title."""
    first = task_of(request)[2]
    if "Hint from a reviewer: write" in first:
        hinted = first.split("Hint from a reviewer: ", 1)[1].splitlines()[0]
        data = json.loads(request.body)
        content = data["messages"][0]["content"]
        old = f"# Task {task_of(request)[0]}: {task_of(request)[1]}"
        new = f"# Task {task_of(request)[0]}: {hinted}"
        if isinstance(content, str):
            data["messages"][0]["content"] = content.replace(old, new, 1)
        else:
            for block in content:
                if block.get("type") == "text":
                    block["text"] = block["text"].replace(old, new, 1)
        request = dataclasses.replace(request, body=json.dumps(data).encode())
    return coding_agent(request)


def wait_until_paused(flow_run_id: UUID, thread: threading.Thread):
    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).state

    deadline = time.monotonic() + WAIT
    while not asyncio.run(read()).is_paused():
        assert thread.is_alive() and time.monotonic() < deadline, "the run never paused"
        time.sleep(0.2)


def flow_run_id_named(name: str) -> UUID:
    """The flow run whose name holds ``name`` (runs are named `<plan> · <session id>`)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name))
            )
        return runs

    deadline = time.monotonic() + WAIT
    while not (runs := asyncio.run(read())):
        assert time.monotonic() < deadline, "no flow run"
        time.sleep(0.2)
    return runs[0].id


@pytest.fixture
def stuck_run(tmp_path, repo, anthropic_fake, monkeypatch):
    """``with stuck_run(agent) as (flow_run_id, outcomes):`` a run whose task a fails its
    verify and waits, Paused, for a person's answer (b depends on a); the run is joined on
    leaving the block, its outcome in ``outcomes``."""

    @contextlib.contextmanager
    def started(agent=coding_agent):
        for _ in range(20):
            anthropic_fake.anthropic.enqueue(agent)
        monkeypatch.setenv("ACA_APPROVAL__ON_FAILURE", "ask")
        monkeypatch.setenv("ACA_AGENT__MAX_FIX_ATTEMPTS", "0")
        name = f"Stuck {uuid.uuid4().hex[:8]}"
        tasks = tmp_path / "tasks.md"
        tasks.write_text(
            f"# {name}\n\n"
            '- write a.txt with wrong {#a verify="grep -q right a.txt"}\n'
            "- write b.txt {#b depends_on=a}\n"
        )
        thread, outcomes = start(lambda: run_flow(task_file=str(tasks), workdir=str(repo)))
        try:
            flow_run_id = flow_run_id_named(name)
            wait_until_paused(flow_run_id, thread)
            yield flow_run_id, outcomes
        finally:
            thread.join(WAIT)

    return started


def test_a_stuck_task_retried_with_a_hint_succeeds(repo, stuck_run):
    with stuck_run(hint_follower) as (flow_run_id, outcomes):
        resume_flow_run(
            flow_run_id, run_input={"action": "retry", "hint": "write a.txt with right"}
        )

    (outcome,) = outcomes  # the run ended
    assert outcome.summary["status"] == "completed"
    session = load_session(repo, outcome.summary["session_id"])
    assert {t.id: str(t.status) for t in session.plan.tasks} == {
        "a": "completed",
        "b": "completed",
    }
    assert session.tasks["a"].attempts == 2
    question = asyncio.run(artifact(f"aca-question-{session.id}-a".lower()))
    assert "Task `a` failed" in question and "grep -q right a.txt" in question


def test_a_stuck_task_can_be_skipped_and_its_dependents_run(repo, stuck_run, capsys):
    with stuck_run() as (flow_run_id, outcomes):
        # `aca approve` on it names the command that answers it.
        (waiting,) = list_sessions(repo)
        assert main(["approve", waiting.id, "-w", str(repo)]) == 2
        said = capsys.readouterr().err
        assert f"its task a waits for an answer: `aca answer {waiting.id} a`." in said, said
        resume_flow_run(flow_run_id, run_input={"action": "skip"})

    (outcome,) = outcomes
    assert outcome.summary["status"] == "completed"
    statuses = {
        t.id: str(t.status) for t in load_session(repo, outcome.summary["session_id"]).plan.tasks
    }
    assert statuses["a"].startswith("skipped: skipped after it failed: verify command")
    assert statuses["b"] == "completed"


def test_a_stop_while_a_stuck_task_waits_leaves_it_and_its_dependents_unfinished(repo, stuck_run):
    from prefect.states import Cancelling

    with stuck_run() as (flow_run_id, outcomes):

        async def cancel():  # the UI's Cancel, while the task waits for an answer
            async with get_client() as client:
                await client.set_flow_run_state(flow_run_id, Cancelling(), force=True)

        asyncio.run(cancel())

    # Nobody decided: not a failure (exit 1) but an interrupted run that a resume continues.
    (outcome,) = outcomes
    assert outcome.summary["status"] == "interrupted"
    session = load_session(repo, outcome.summary["session_id"])
    assert session.status == "interrupted"
    assert {t.id: t.status.state for t in session.plan.tasks} == {"a": "pending", "b": "pending"}


async def artifact(key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        (found,) = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1
        )
    return found.data


def test_aca_approve_refuses_a_run_whose_process_is_gone(repo, capsys):
    from aca_flows.plan.models import ExecutionPlan, Task
    from aca_flows.session.events import ApprovalRequested
    from aca_flows.session.store import SessionStore

    plan = ExecutionPlan(name="Gone", tasks=[Task(id="a", title="write a.txt")])
    store = SessionStore.create(repo, plan, provider="anthropic")
    store.record(ApprovalRequested(flow_run_id=str(uuid.uuid4()), api_url=None))
    store.close()  # the waiting process died: its lock is gone

    assert main(["sessions", "list", "-w", str(repo), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"][0]["status"] == "interrupted"
    assert main(["approve", store.session_id, "-w", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "is not waiting for approval (status: interrupted)" in err
    # Run from another folder, the command names the session's: as given to it.
    assert f"`aca resume {store.session_id} --workdir {repo}` asks again" in err


def test_a_resumed_session_keeps_its_approval_and_is_not_asked_again(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # The verify command runs sandboxed: the folder of its flag is shown to it.
    monkeypatch.setenv("ACA_SANDBOX__READ_ONLY_PATHS", str(tmp_path))
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    flag = tmp_path / "flag"
    path = tmp_path / "tasks.md"
    path.write_text(
        f"# Resume approved {uuid.uuid4().hex[:8]}\n\n"
        f'- write a.txt {{#a verify="test -f {flag}"}}\n'
        "- write b.txt {#b}\n"
    )
    thread, outcomes = start(
        lambda: run_flow(task_file=str(path), workdir=str(repo), require_approval=True)
    )
    try:
        session = waiting_session(repo, thread)
        assert main(["approve", session.id, "--skip", "b", "--note", "tabs", "-w", str(repo)]) == 0
        thread.join(WAIT)
    finally:
        thread.join(WAIT)
    assert outcomes[0].summary["status"] == "failed"  # a's verify failed: no flag yet

    flag.write_text("")
    before = len(agent_requests(anthropic_fake))
    again = run_flow(workdir=str(repo), session_id=session.id)  # it would wait if it asked again

    assert again.summary["status"] == "completed"
    resumed = agent_requests(anthropic_fake)[before:]
    assert {task_of(r)[0] for r in resumed} == {"a"}
    assert all("Reviewer's note: tabs" in task_of(r)[2] for r in resumed)
    statuses = {t.id: str(t.status) for t in load_session(repo, session.id).plan.tasks}
    assert statuses == {"a": "completed", "b": "skipped: left out at approval"}


def test_aca_resume_require_approval_asks_before_what_is_left_runs(tmp_path, repo, anthropic_fake):
    # A failed session could not be reviewed before its failed tasks ran again: `aca resume`
    # had no --require-approval.
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    path = tmp_path / "tasks.md"
    path.write_text(
        f"# Review again {uuid.uuid4().hex[:8]}\n\n- write a.txt {{#a verify=false}}\n"
        "- write b.txt {#b}\n"
    )
    first = run_flow(task_file=str(path), workdir=str(repo))
    assert first.summary["status"] == "failed"
    session_id = first.summary["session_id"]

    thread, codes = start(
        lambda: main(["resume", session_id, "--require-approval", "-w", str(repo), "--json"])
    )
    try:
        session = waiting_session(repo, thread)
        assert session.id == session_id
        before = len(agent_requests(anthropic_fake))
        assert main(["reject", session_id, "--reason", "not again", "-w", str(repo)]) == 0
        thread.join(WAIT)
    finally:
        thread.join(WAIT)
    assert codes == [3]  # rejected: a's second try never ran
    assert len(agent_requests(anthropic_fake)) == before


def test_a_deployment_run_suspends_and_runs_again_once_approved(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    """Suspension frees the worker: the flow run's process ends while it waits; once approved,
    the flow run is scheduled again, and running it (what a worker does) resumes the session
    with the decision."""
    from prefect.exceptions import Pause

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(tmp_path))
    parameters = {
        "task_file": task_file(tmp_path, "Suspend"),
        "workdir": str(repo),
        "require_approval": True,
    }

    flow_run = asyncio.run(deployment_run(parameters))
    with pytest.raises(Pause):  # the engine gives up the run: the worker's process may end
        asyncio.run(run_as_a_worker(flow_run.id, parameters))

    (session,) = list_sessions(repo)
    state = flow_run_of(session).state
    assert state.is_paused() and state.name == "Suspended"
    assert session.approval.mode == "suspend" and session.approval.flow_run_id == str(flow_run.id)
    assert main(["sessions", "list", "-w", str(repo), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["sessions"]
    assert row["status"] == "waiting for approval"  # no process, no lock: still waiting
    assert agent_requests(anthropic_fake) == []

    assert main(["approve", session.id, "--skip", "c", "-w", str(repo)]) == 0
    assert flow_run_of(session).state.is_scheduled()
    second = asyncio.run(run_as_a_worker(flow_run.id, parameters))

    assert second.is_completed(), second.message
    session = load_session(repo, session.id)
    assert session.approval.state == "approved" and session.approval.skip == ["c"]
    assert {t.id: str(t.status) for t in session.plan.tasks} == {
        "a": "completed",
        "b": "completed",
        "c": "skipped: left out at approval",
    }


def test_a_suspended_run_cancelled_while_it_waits_leaves_a_session_to_resume_not_waiting(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    """Before, its session showed "waiting for approval" for ever, and `aca approve` said
    only that nothing waited; the flow run was Cancelled, the session waited."""
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import Pause
    from prefect.states import State

    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(tmp_path))
    parameters = {
        "task_file": task_file(tmp_path, "Cancelled while suspended"),
        "workdir": str(repo),
        "require_approval": True,
    }

    async def suspend_and_cancel():
        flow_run = await deployment_run(parameters)
        with pytest.raises(Pause):  # suspended: the worker's process ends
            await run_as_a_worker(flow_run.id, parameters)
        async with get_client() as client:
            cancelled = State(type=StateType.CANCELLED, name="Cancelled")
            await client.set_flow_run_state(flow_run.id, cancelled, force=True)

    asyncio.run(suspend_and_cancel())
    (session,) = list_sessions(repo)

    assert main(["approve", session.id, "-w", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "ended Cancelled while it waited for input" in err
    assert f"`aca resume {session.id} --workdir {repo}` asks again" in err
    assert main(["sessions", "list", "-w", str(repo), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["sessions"]
    assert row["status"] == "interrupted"
    assert agent_requests(anthropic_fake) == []


def test_a_retry_of_a_run_cancelled_while_it_waited_asks_again(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    """The retry took the form Prefect had stored under the wait's key for an answer: the
    plan ran approved by nobody, and the session recorded an "approve"."""
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import Pause
    from prefect.states import AwaitingRetry, State

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(tmp_path))
    parameters = {
        "task_file": task_file(tmp_path, "Retried after a cancel"),
        "workdir": str(repo),
        "require_approval": True,
    }

    async def suspend_cancel_and_retry():
        flow_run = await deployment_run(parameters)
        with pytest.raises(Pause):
            await run_as_a_worker(flow_run.id, parameters)
        async with get_client() as client:
            cancelled = State(type=StateType.CANCELLED, name="Cancelled")
            await client.set_flow_run_state(flow_run.id, cancelled, force=True)
            await client.set_flow_run_state(flow_run.id, AwaitingRetry(), force=True)
        with pytest.raises(Pause):  # it waits again
            await run_as_a_worker(flow_run.id, parameters)
        return flow_run

    flow_run = asyncio.run(suspend_cancel_and_retry())

    (session,) = list_sessions(repo)
    assert flow_run_of(session).state.name == "Suspended"
    assert agent_requests(anthropic_fake) == []
    assert session.approval.state == "waiting" and session.approval.flow_run_id == str(flow_run.id)


def test_a_retry_of_a_run_whose_wait_expired_waits_anew(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    """Retried in the UI the next morning, the run waited again, but the session kept the
    expired request: `sessions list` said interrupted and `aca approve` refused."""
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import Pause
    from prefect.states import AwaitingRetry, State

    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(tmp_path))
    monkeypatch.setenv("ACA_APPROVAL__TIMEOUT_SECONDS", "1")
    parameters = {
        "task_file": task_file(tmp_path, "Retried after it expired"),
        "workdir": str(repo),
        "require_approval": True,
    }

    async def suspend_expire_and_retry():
        flow_run = await deployment_run(parameters)
        with pytest.raises(Pause):
            await run_as_a_worker(flow_run.id, parameters)
        await asyncio.sleep(1.5)  # its wait expired: Prefect fails the run
        async with get_client() as client:
            failed = State(type=StateType.FAILED, name="Failed")
            await client.set_flow_run_state(flow_run.id, failed, force=True)
            await client.set_flow_run_state(flow_run.id, AwaitingRetry(), force=True)
        monkeypatch.setenv("ACA_APPROVAL__TIMEOUT_SECONDS", "3600")
        with pytest.raises(Pause):  # it waits again
            await run_as_a_worker(flow_run.id, parameters)

    asyncio.run(suspend_expire_and_retry())

    (session,) = list_sessions(repo)
    journal = AcaDir(repo).session(session.id).root / "meta" / "events.jsonl"
    events = [json.loads(line)["type"] for line in journal.read_text().splitlines()]
    assert events.count("approval_requested") == 2
    assert display_status(session, repo) == "waiting for approval"


def test_a_suspended_run_whose_wait_timed_out_shows_interrupted(repo, capsys):
    """Its flow run failed on the server ("paused and never resumed"); the session showed
    "waiting for approval" for ever."""
    from datetime import UTC, datetime, timedelta

    from aca_flows.plan.models import ExecutionPlan, Task
    from aca_flows.session.events import ApprovalRequested
    from aca_flows.session.store import SessionStore

    plan = ExecutionPlan(name="Timed out", tasks=[Task(id="a", title="write a.txt")])
    store = SessionStore.create(repo, plan, provider="anthropic")
    expires = datetime.now(UTC) + timedelta(seconds=1)
    store.record(
        ApprovalRequested(flow_run_id=str(uuid.uuid4()), mode="suspend", expires_at=expires)
    )
    store.close()  # suspended: no process holds it

    assert main(["sessions", "list", "-w", str(repo), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"][0]["status"] == "waiting for approval"
    time.sleep(1.2)
    assert main(["sessions", "list", "-w", str(repo), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"][0]["status"] == "interrupted"


def test_a_skip_of_no_such_task_lists_only_the_tasks_that_can_be_skipped():
    # The list named groups and finished tasks, each refused when named in turn.
    from aca_flows.flows.approval import decision_problem
    from aca_flows.plan.models import ExecutionPlan, Task, TaskStatus

    plan = ExecutionPlan(
        name="p",
        tasks=[
            Task(id="g", title="Group", children=["a", "b"]),
            Task(id="a", title="A", parent_id="g"),
            Task(id="b", title="B", parent_id="g", status=TaskStatus(state="completed")),
            Task(id="c", title="C"),
        ],
    )
    assert decision_problem(plan, ["zz"]) == (
        "no task zz in the plan; the tasks that can be skipped are a, c"
    )
    assert decision_problem(plan, ["g"]) == "g groups other tasks; name the tasks to skip instead"


def test_the_form_shows_what_each_task_runs_after_and_is_checked_by():
    # The form listed `id` and title only: no check, order or model was shown to approve.
    from aca_flows.flows.approval import _form_description
    from aca_flows.plan.models import ExecutionPlan, SetupCommand, Task

    plan = ExecutionPlan(
        name="p",
        verify="pytest -q",
        setup_commands=[SetupCommand(name="install", command="pip install -e .")],
        tasks=[
            Task(id="a", title="A"),
            Task(id="b", title="B", dependencies=["a"], verify="grep -q `x` b.txt", model="m"),
        ],
    )
    lines = _form_description("s1", plan, 3, None).splitlines()
    assert "- before every task, `install`: `` pip install -e . ``" in lines
    assert "- `a` A — checked by `` pytest -q ``" in lines
    assert "- `b` B — after `a`; checked by `` grep -q `x` b.txt ``; on m" in lines
