"""One task run: call retries, task attempts and the spend ledger, against the fake server.

The bill must agree with the server's own request log whatever happens to a task: a call
retried after a 529, an attempt that fails after paid calls, a budget stop mid-task.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import git
import pytest

from aca_flows.errors import PermanentProviderError, TransientProviderError
from aca_flows.flows import run_flow
from aca_flows.flows.run_providers import _ledger_of
from aca_flows.flows.spend import CALL_OWNER, CallOwner, SpendGuard, SpendMeter
from aca_flows.flows.task_run import (
    ACTIVE_RUNS,
    ActiveRun,
    _retry_delays,
    _stopped,
    limit_reached,
    options_for,
    runner_for,
)
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers.base import Message, ProviderRequest
from aca_flows.session.layout import AcaDir
from aca_flows.session.reading import load_session
from aca_flows.session.store import SessionStore
from aca_flows.settings import AcaConfig, SessionSection
from tests.fakes.coding_agent import coding_agent, task_of
from tests.fakes.llm_server import RecordedRequest, Reply
from tests.fakes.scripted_provider import ScriptedProvider, final
from tests.flows.test_artifacts import reports_of

MODEL = "claude-sonnet-4-6"  # priced: $3 in / $15 out per million tokens


class TurnsAgent:
    """A coding agent that takes ``turns`` calls: it writes f1.txt, f2.txt, ... then finishes.

    Its turn is read from the conversation, so a retried call gets the same answer. Every
    answer it gives is a paid call; ``paid`` keeps their usage (each call's input differs).
    """

    def __init__(self, turns: int):
        self.turns = turns
        self.paid: list[dict[str, int]] = []

    def __call__(self, request: RecordedRequest) -> Reply:
        turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
        if turn < self.turns - 1:
            args = {"path": f"f{turn + 1}.txt", "content": f"{turn + 1}\n"}
            call = {"name": "write_file", "arguments": args}
        else:
            call = {"name": "finish", "arguments": {"summary": "wrote the files"}}
        usage = {"input_tokens": 100 + len(self.paid), "output_tokens": 20}
        self.paid.append(usage)
        return Reply(tool_calls=[call], usage=usage)

    def cost(self) -> float:
        return sum(u["input_tokens"] * 3 + u["output_tokens"] * 15 for u in self.paid) / 1e6

    def tokens(self) -> int:
        return sum(u["input_tokens"] + u["output_tokens"] for u in self.paid)


def overloaded() -> Reply:
    return Reply(status=529, retry_after=0.05, error="Overloaded")


def script(server, *replies) -> None:
    for reply in replies:
        server.anthropic.enqueue(reply)


def run(tmp_path: Path, repo: Path, **params):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write the files {#a}\n")
    return run_flow(task_file=str(tasks), workdir=str(repo), model=MODEL, **params)


def aca_usage(workdir: Path) -> list[dict]:
    """What ``aca usage --json`` prints: the real command, in its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "aca_flows", "usage", "--workdir", str(workdir), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def task_report(session_id: str, task_id: str) -> str:
    """The task's Markdown artifact in Prefect, as the UI shows it."""
    return reports_of(session_id)[task_id].data


def journal(repo: Path, session_id: str) -> list[dict]:
    path = AcaDir(repo).session(session_id).events_jsonl
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_529_at_turn_5_of_6_costs_exactly_one_extra_call(tmp_path, repo, anthropic_fake):
    agent = TurnsAgent(6)
    script(anthropic_fake, *[agent] * 4, overloaded(), agent, agent)

    summary = run(tmp_path, repo).summary

    assert summary["status"] == "completed"
    assert len(anthropic_fake.model_calls) == 7
    fifth, retried = anthropic_fake.anthropic.requests[4:6]
    assert fifth.json["messages"] == retried.json["messages"]  # the conversation was kept
    # The wait was logged, not silent: the server's retry-after was honoured.
    log = AcaDir(repo).session(summary["session_id"]).task_log("a")
    (retry,) = [
        r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "call_retry"
    ]
    assert (retry["attempt"], retry["retry"], retry["wait_seconds"]) == (1, 1, 0.05)
    assert "529" in retry["error"]
    # The run's own log names whose call it was (it did not).
    system_log = AcaDir(repo).session(summary["session_id"]).system_log.read_text()
    assert "WARNING prefect.task_runs: a: anthropic: temporarily unavailable (529)" in system_log
    session = load_session(repo, summary["session_id"])
    assert session.tasks["a"].attempts == 1
    (entry,) = session.usage
    assert entry.calls == 6 and entry.total_tokens == agent.tokens()
    assert entry.cost_usd == pytest.approx(agent.cost())


def test_a_wait_shorter_than_the_server_asked_for_names_the_setting_that_shortened_it(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    monkeypatch.setenv("ACA_SESSION__CALL_RETRY_MAX_WAIT_SECONDS", "0.05")
    agent = TurnsAgent(2)
    script(anthropic_fake, agent, Reply(status=429, retry_after=600, error="slow down"), agent)

    summary = run(tmp_path, repo).summary

    assert summary["status"] == "completed"
    system_log = AcaDir(repo).session(summary["session_id"]).system_log.read_text()
    assert (
        "The server asked to wait 600 s. Retrying this call in 0.1 s, the most [session] "
        "call_retry_max_wait_seconds allows (retry 1 of 4)."
    ) in system_log


def test_a_stream_cut_off_after_it_began_is_on_the_bill_and_retried(tmp_path, repo, anthropic_fake):
    agent = TurnsAgent(2)
    # The stream breaks after message_start reported 5,000 input tokens: the server bills them.
    cut = Reply(text="I will write f1.txt", usage={"input_tokens": 5000}, fault="truncate")
    script(anthropic_fake, agent, cut, agent)

    summary = run(tmp_path, repo).summary

    assert summary["status"] == "completed"
    (billed,) = aca_usage(repo)
    assert billed["calls"] == 3
    assert billed["usage"]["input_tokens"] == 5000 + sum(u["input_tokens"] for u in agent.paid)
    cut_cost = (5000 * 3 + 1 * 15) / 1e6  # message_start's one output token too
    assert summary["cost_usd"] == pytest.approx(agent.cost() + cut_cost)


def test_an_overloaded_error_in_the_stream_after_a_200_is_retried_not_a_bad_request(
    tmp_path, repo, anthropic_fake
):
    agent = TurnsAgent(2)
    script(anthropic_fake, Reply(fault="error_event", error="Overloaded"), agent, agent)

    summary = run(tmp_path, repo).summary

    assert summary["status"] == "completed"
    assert len(anthropic_fake.model_calls) == 3
    assert aca_usage(repo)[0]["calls"] == 3  # the broken stream had begun: it was paid
    log = AcaDir(repo).session(summary["session_id"]).task_log("a").read_text()
    (retry,) = [r for r in map(json.loads, log.splitlines()) if r["kind"] == "call_retry"]
    assert retry["error"] == "anthropic: temporarily unavailable (529): Overloaded."


def test_an_answer_cut_off_by_the_context_window_after_a_change_fails_the_task(
    tmp_path, repo, anthropic_fake
):
    agent = TurnsAgent(2)  # writes f1.txt, then would finish
    full = Reply(text="Now I will also upd", stop_reason="model_context_window_exceeded")
    script(anthropic_fake, agent, full)

    outcome = run(tmp_path, repo)

    assert outcome.summary["status"] == "failed" and outcome.state_name == "Failed"
    session = load_session(repo, outcome.summary["session_id"])
    assert "filled the model's context window" in str(session.plan.task("a").status)
    assert session.tasks["a"].commit is None  # the half-done work was not committed
    assert aca_usage(repo)[0]["calls"] == 2


def test_subtasks_proposed_in_an_answer_cut_off_by_max_tokens_are_not_taken_in_part(
    tmp_path, repo, anthropic_fake
):
    subtasks = [
        {"id": "one", "title": "write one.txt", "description": "x" * 5},
        {"id": "two", "title": "write two.txt"},
        {"id": "three", "title": "write three.txt", "description": "y" * 40},
    ]
    propose = {"name": "propose_subtasks", "arguments": {"subtasks": subtasks}}
    # The limit falls inside the proposal, just after "two": the SDK parses the list it got.
    script(anthropic_fake, TurnsAgent(2), Reply(tool_calls=[propose], fault="cut_tool"))
    anthropic_fake.anthropic.default = TurnsAgent(1)  # then it finishes, and so would "one"

    summary = run(tmp_path, repo).summary

    session = load_session(repo, summary["session_id"])
    assert session.plan.task("a").children == []  # not one and two without three
    assert summary["status"] == "completed"
    log = AcaDir(repo).session(summary["session_id"]).task_log("a").read_text()
    refused = [r for r in map(json.loads, log.splitlines()) if r["kind"] == "tool_result"][1]
    assert refused["is_error"] and "propose_subtasks" in refused["content"]


def test_writes_cut_off_by_max_tokens_are_told_so_and_fail_the_task_at_the_second(
    tmp_path, repo, anthropic_fake
):
    """Before, the model was told its arguments were "not a JSON object", tried the same again,
    and the task paid 50 cut answers before "raise agent.max_turns" (which only pays more)."""
    big = {"name": "write_file", "arguments": {"path": "big.txt", "content": "x" * 400}}
    cut = Reply(tool_calls=[big], fault="cut_tool", usage={"output_tokens": 8192})
    anthropic_fake.anthropic.default = cut

    outcome = run(tmp_path, repo)

    assert outcome.summary["status"] == "failed" and outcome.state_name == "Failed"
    session = load_session(repo, outcome.summary["session_id"])
    reason = str(session.plan.task("a").status)
    assert "two answers in a row were cut off at the max_tokens limit" in reason
    assert "Raise [providers.anthropic] max_tokens" in reason
    assert len(anthropic_fake.model_calls) == 2  # a permanent error: not retried, no attempt 2
    log = AcaDir(repo).session(outcome.summary["session_id"]).task_log("a").read_text()
    told = [r for r in map(json.loads, log.splitlines()) if r["kind"] == "tool_result"][0]
    assert "reached its output token limit (max_tokens)" in told["content"]
    assert not (repo / "big.txt").exists() and session.tasks["a"].commit is None


def test_a_task_that_fails_after_three_paid_calls_then_succeeds_has_every_call_on_the_bill(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    monkeypatch.setenv("ACA_SESSION__CALL_RETRIES", "1")
    agent = TurnsAgent(4)
    # Attempt 1: three paid turns, then the fourth call fails twice (its one retry too).
    # Attempt 2 starts clean and takes its four turns.
    script(anthropic_fake, agent, agent, agent, overloaded(), overloaded(), *[agent] * 4)

    summary = run(tmp_path, repo).summary

    assert summary["status"] == "completed"
    assert len(anthropic_fake.model_calls) == 9 and len(agent.paid) == 7
    (billed,) = aca_usage(repo)
    assert billed["calls"] == len(agent.paid)
    tokens = billed["usage"]
    assert tokens["input_tokens"] + tokens["output_tokens"] == agent.tokens()
    assert billed["cost_usd"] == pytest.approx(agent.cost())
    assert summary["cost_usd"] == pytest.approx(agent.cost())

    session = load_session(repo, summary["session_id"])
    assert session.tasks["a"].attempts == 2
    assert session.tasks["a"].usage[0].calls == 7
    report = task_report(summary["session_id"], "a")
    assert "**Attempts:** 2\n" in report and "provider calls: 4" in report  # the last attempt
    events = journal(repo, summary["session_id"])
    assert [e["attempt"] for e in events if e["type"] == "call"] == [1, 1, 1, 2, 2, 2, 2]
    (retry,) = [e for e in events if e["type"] == "task_failed"]
    assert retry["will_retry"] and "attempt 1 of 3 failed" in retry["reason"]
    assert "529" in retry["reason"]


def test_attempts_used_up_fail_the_task_with_a_plain_reason(
    tmp_path, repo, anthropic_fake, monkeypatch, caplog
):
    monkeypatch.setenv("ACA_SESSION__CALL_RETRIES", "0")
    monkeypatch.setenv("ACA_SESSION__MAX_ATTEMPTS", "2")
    agent = TurnsAgent(3)
    broken = Reply(status=500, error="Internal server error")
    script(anthropic_fake, agent, broken, broken, agent)

    outcome = run(tmp_path, repo)

    assert outcome.state_name == "Failed"
    assert outcome.summary["failed_ids"] == ["a"]
    assert len(anthropic_fake.model_calls) == 3  # one paid call, a 500; then a 500 at once
    session = load_session(repo, outcome.summary["session_id"])
    task = session.plan.task("a")
    assert session.tasks["a"].attempts == 2
    assert task.status.reason.startswith("anthropic: ")
    assert "(500)" in task.status.reason and "Internal server error" in task.status.reason
    assert task.status.reason.endswith("(gave up after 2 attempt(s))")
    assert "Traceback" not in task.status.reason and "Error:" not in task.status.reason
    assert session.usage[0].calls == 1  # the paid call of attempt 1 is on the bill
    assert "Retries are exhausted" in caplog.text and "Traceback" not in caplog.text


@pytest.mark.parametrize(("status", "what"), [(429, "rate limited"), (529, "overloaded")])
def test_a_provider_that_still_says_wait_after_every_attempt_stops_the_run_failing_nothing(
    tmp_path, repo, anthropic_fake, monkeypatch, status, what
):
    # An account's rate limit that outlasted the retries failed the task and skipped its
    # dependents (exit 1): a nightly batch under a limit of a few minutes failed every task.
    monkeypatch.setenv("ACA_SESSION__CALL_RETRIES", "0")
    monkeypatch.setenv("ACA_SESSION__MAX_ATTEMPTS", "2")
    agent = TurnsAgent(3)

    def either(request):  # b writes g1.txt, g2.txt: its own change
        reply = agent(request)
        if "then the rest" in request.body.decode():
            for call in reply.tool_calls:
                if "path" in call["arguments"]:
                    call["arguments"]["path"] = "g" + call["arguments"]["path"][1:]
        return reply

    wait = Reply(status=status, retry_after=0.05, error="slow down")
    script(anthropic_fake, either, wait, wait, *[either] * 6)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write the files {#a}\n- then the rest {#b depends_on=a}\n")

    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model=MODEL)

    assert outcome.state_name == "Stopped" and outcome.summary["status"] == "stopped"
    assert outcome.summary["failed_ids"] == []
    session = load_session(repo, outcome.summary["session_id"])
    assert session.plan.task("a").status.state == "pending"
    assert session.plan.task("b").status.state == "pending"  # not skipped
    reason = outcome.summary["stopped_reason"]
    assert f"anthropic still answered {status} ({what}) after every retry of task a's" in reason
    assert f"`aca resume {session.id}" in reason
    resumed = run_flow(session_id=session.id, workdir=str(repo))
    assert resumed.summary["status"] == "completed"


def test_a_stop_that_comes_with_a_failed_task_names_the_failure_in_every_view(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # Task a's provider still says "wait" (the run stops, a stays pending) while task b was
    # refused and failed: the stop's reason said "no task failed", in the session's status,
    # the flow run's state and the terminal's last line.
    monkeypatch.setenv("ACA_SESSION__CALL_RETRIES", "0")
    monkeypatch.setenv("ACA_SESSION__MAX_ATTEMPTS", "1")

    def by_task(request):
        if task_of(request)[0] == "a":
            return Reply(status=529, retry_after=0.05, error="Overloaded")
        return Reply(status=400, error="prompt is too long for this model")

    anthropic_fake.anthropic.default = by_task
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n- write b.txt {#b}\n- write c.txt {#c depends_on=b}\n")

    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model=MODEL)

    assert outcome.state_name == "Stopped" and outcome.summary["failed_ids"] == ["b"]
    reason = outcome.summary["stopped_reason"]
    assert "so the run stopped (task a did not fail: it stays pending)" in reason
    assert reason.endswith("Before the stop, 1 task failed: b; 1 skipped")
    session = load_session(repo, outcome.summary["session_id"])
    assert session.status == "stopped" and session.status_reason == reason


def test_empty_answers_fail_the_task_after_three_paid_calls_saying_what_the_model_did(
    tmp_path, repo, anthropic_fake, caplog
):
    """A 200 with no text and no tool call, again and again: three calls (each on the bill),
    not the 15 of five calls in each of three attempts; the task fails naming what happened."""
    empty = {"text": "", "usage": {"input_tokens": 100, "output_tokens": 0}}
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(**empty)

    outcome = run(tmp_path, repo)

    assert outcome.state_name == "Failed" and outcome.summary["failed_ids"] == ["a"]
    assert len(anthropic_fake.model_calls) == 3
    session = load_session(repo, outcome.summary["session_id"])
    assert session.tasks["a"].attempts == 1 and session.usage[0].calls == 3
    reason = session.plan.task("a").status.reason
    assert reason == (
        "anthropic: the model answered 3 time(s) in a row with nothing (HTTP 200, no text and "
        "no tool call; each call billed). Retry later; if it keeps happening, choose another "
        "model with --model. (gave up after 1 attempt(s))"
    )
    assert outcome.summary["tasks"]["a"]["reason"] == reason
    assert "(retry 2 of 2)" in caplog.text and "(retry 1 of 4)" not in caplog.text
    assert reason.removesuffix(" (gave up after 1 attempt(s))") in task_report(
        outcome.summary["session_id"], "a"
    )


def test_a_budget_stop_mid_task_keeps_its_calls_and_resumes_count_them(
    tmp_path, repo, anthropic_fake
):
    agent = TurnsAgent(3)
    script(anthropic_fake, *[agent] * 10)
    # $0.0006 a call: the third call of the task is refused at $0.0012 spent.
    first = run(tmp_path, repo, budget_usd=0.001).summary
    assert first["status"] == "stopped"
    assert len(anthropic_fake.model_calls) == 2
    session_id = first["session_id"]
    stopped = load_session(repo, session_id)
    assert stopped.usage[0].calls == 2 and stopped.cost_usd == pytest.approx(agent.cost())
    assert stopped.plan.task("a").status.state == "pending"
    # Prefect says what the session says: the task run was stopped, not failed.
    (task_run,) = session_task_runs(session_id)
    assert (task_run.state.type.value, task_run.state.name) == ("CANCELLED", "Stopped")
    assert task_run.state.message.startswith("budget of $0.001 reached")
    # A resume without --budget-usd keeps the session's cap (a nightly retry must not lose
    # it): spent already, so the resume is refused before it starts.
    kept = run_flow(workdir=str(repo), session_id=session_id)
    assert kept.state_name == "Failed" and "its own, kept without --budget-usd" in str(kept.error)
    assert len(anthropic_fake.model_calls) == 2

    # The budget covers the whole session: what was spent before still counts.
    again = run_flow(workdir=str(repo), session_id=session_id, budget_usd=0.0015).summary
    assert again["status"] == "stopped"
    assert len(anthropic_fake.model_calls) == 3  # one more call took it past $0.0015
    # The raised budget is the session's from now on.
    kept = run_flow(workdir=str(repo), session_id=session_id)
    assert "a budget of $0.0015 (its own" in str(kept.error)
    assert len(anthropic_fake.model_calls) == 3

    done = run_flow(workdir=str(repo), session_id=session_id, budget_usd=1.0).summary
    assert done["status"] == "completed"
    assert len(anthropic_fake.model_calls) == 6
    (billed,) = aca_usage(repo)
    assert billed["calls"] == 6 == len(agent.paid)
    assert billed["cost_usd"] == pytest.approx(agent.cost())
    final = load_session(repo, session_id)
    assert final.tasks["a"].usage[0].calls == 6
    # Attempts are numbered as the session counts them, across resumes.
    assert final.tasks["a"].attempts == 3
    events = journal(repo, session_id)
    assert [e["attempt"] for e in events if e["type"] == "call"] == [1, 1, 2, 3, 3, 3]


def test_the_spend_guard_bills_paid_failures_and_stops_at_the_budget(tmp_path):
    """Every call that returns, and every failed call that was paid for (a Claude Code run
    stopped mid-way), is on the ledger at once; the budget check reads that ledger."""
    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="A")])
    store = SessionStore.create(tmp_path, plan, provider="claude-code")
    stopped = PermanentProviderError("claude-code: the run reached its budget", billed=final("x"))
    unpaid = TransientProviderError("claude-code: overloaded")
    provider = ScriptedProvider(final("one"), stopped, unpaid, final("two"), name="claude-code")
    guard = SpendGuard(
        provider, SpendMeter(lambda: store.session.cost_usd, 0.0025), _ledger_of(store)
    )
    request = ProviderRequest(messages=[Message(role="user", text="go")])

    async def calls():
        CALL_OWNER.set(CallOwner("a", 2))
        outcomes = []
        for _ in range(5):
            try:
                outcomes.append((await guard.complete(request)).text)
            except (PermanentProviderError, TransientProviderError) as error:
                outcomes.append(type(error).__name__)
        return outcomes

    with store:
        outcomes = asyncio.run(calls())
        session = store.session
    assert outcomes == [
        "one", "PermanentProviderError", "TransientProviderError", "two", "BudgetReached"
    ]  # fmt: skip
    assert len(provider.history) == 4  # the fifth call was refused before it was made
    # Three paid calls at $0.001: the budget stop; the unpaid failure is not on the bill.
    assert session.tasks["a"].usage[0].calls == 3
    assert session.cost_usd == pytest.approx(0.003)
    events = journal(tmp_path, session.id)
    assert [(e["task_id"], e["attempt"]) for e in events if e["type"] == "call"] == [("a", 2)] * 3


def test_a_merge_conflict_ends_an_attempt_and_the_next_lands_on_the_new_head(
    tmp_path, repo, anthropic_fake
):
    started = threading.Event()

    def agent(request: RecordedRequest) -> Reply:
        # Task a answers once b is running, so both start from the same head: whichever
        # lands second conflicts with the first.
        task_id = task_of(request)[0]
        if task_id == "b":
            started.set()
        elif task_id == "a":
            started.wait(60)
        return coding_agent(request)

    script(anthropic_fake, *[agent] * 8)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write same.txt with A {#a}\n- write same.txt with B {#b}\n")

    summary = run_flow(task_file=str(tasks), workdir=str(repo), model=MODEL, max_concurrent=2)
    summary = summary.summary

    assert summary["status"] == "completed" and summary["counts"] == {"completed": 2}
    session = load_session(repo, summary["session_id"])
    attempts = {task_id: run.attempts for task_id, run in session.tasks.items()}
    assert sorted(attempts.values()) == [1, 2]
    second = next(task_id for task_id, n in attempts.items() if n == 2)
    events = journal(repo, summary["session_id"])
    (retry,) = [e for e in events if e["type"] == "task_failed"]
    assert retry["task_id"] == second and retry["will_retry"]
    assert "conflict with work already on the session branch in same.txt" in retry["reason"]
    # The second attempt started on the new head: its write replaced the first task's.
    content = git.Repo(repo).git.show(f"{summary['branch']}:same.txt")
    assert content == ("A" if second == "a" else "B")
    calls = [(e["task_id"], e["attempt"]) for e in events if e["type"] == "call"]
    assert len(calls) == 6 == len(anthropic_fake.model_calls)
    assert calls.count((second, 2)) == 2
    # The conflict was retried, not the task's end: the log warns, and errs nowhere.
    log = (AcaDir(repo).session(summary["session_id"]).system_log).read_text()
    assert "conflict with work already on the session branch" in log
    assert " ERROR " not in log, log


def active_run(**session) -> ActiveRun:
    plan = ExecutionPlan(
        name="p", tasks=[Task(id="own", title="t", max_attempts=2), Task(id="plain", title="t")]
    )
    config = AcaConfig(session=SessionSection(**session))
    return ActiveRun(plan, Path("/repo"), "s1", config, providers={}, default_provider="x")


def test_max_attempts_and_retry_backoff_set_the_task_runs_retries():
    run = active_run(max_attempts=4, retry_backoff_seconds=5)

    plain = options_for(run, run.plan.task("plain"))
    own = options_for(run, run.plan.task("own"))

    assert plain["retries"] == 3
    # Prefect retries at once; the task run waits the backoff itself, which a stop ends.
    assert plain["retry_delay_seconds"] == 0
    assert _retry_delays(run, run.plan.task("plain")) == [5, 10, 20]  # exponential
    assert own["retries"] == 1  # the task's own max_attempts wins
    assert options_for(active_run(max_attempts=1), run.plan.task("plain"))["retries"] == 0


def test_a_task_run_that_starts_after_the_stop_runs_nothing_and_stays_unfinished(tmp_path, repo):
    # Handed to Prefect just before a Ctrl-C, the task run began after it: it used to run
    # the agent and pay for it within the grace period.
    from prefect import flow

    provider = ScriptedProvider(final("never asked"))
    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="write a.txt")])
    run = ActiveRun(plan, repo, "s-late", AcaConfig(), {"scripted": provider}, "scripted")
    run.stopping = lambda: True
    ACTIVE_RUNS[run.session_id] = run

    @flow
    async def one_task():
        state = await runner_for(run, plan.task("a"))(run.session_id, "a", return_state=True)
        return state.type.value, state.name, state.message

    try:
        kind, name, message = asyncio.run(one_task())
    finally:
        del ACTIVE_RUNS[run.session_id]
    assert (kind, name) == ("CANCELLED", "Interrupted")
    assert "had not started when the run stopped" in message
    assert provider.history == []


def session_task_runs(session_id: str) -> list:
    """The task runs of one session, read from the server."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterTags

    async def read():
        async with get_client() as client:
            tagged = TaskRunFilter(tags=TaskRunFilterTags(all_=[f"session:{session_id}"]))
            return await client.read_task_runs(task_run_filter=tagged)

    return asyncio.run(read())


def test_a_key_refused_from_a_secret_block_names_the_block_to_fix_not_the_variable():
    from aca_flows.errors import KeyRejected
    from aca_flows.flows.stop_reasons import cannot_serve_stop
    from aca_flows.settings import ProviderSection

    run = active_run()
    run.config = AcaConfig(providers={"anthropic": ProviderSection(api_key_secret="team-key")})
    refused = KeyRejected(
        "anthropic: authentication failed (401)",
        fix="set a valid ANTHROPIC_API_KEY",
        detail="invalid x-api-key",
        provider="anthropic",
        status_code=401,
    )

    reason = cannot_serve_stop(run, Task(id="a", title="t", provider="anthropic"), refused)

    assert reason == (
        "anthropic refused its credentials (401: invalid x-api-key), so no anthropic task "
        "starts: save a valid key in the Prefect Secret block 'team-key' ([providers.anthropic] "
        "api_key_secret), then resume the session"
    )
    assert run.cannot_serve == {"anthropic": reason}  # its other tasks start no call


def test_a_stop_whose_reason_names_a_file_that_is_not_utf8_still_reaches_the_server():
    # Prefect sends a task run's end to the server as JSON: one it cannot encode never
    # arrives, and the task run stays Running there. A git error may name such a file.
    why = "GitCommandError: " + os.fsdecode(b"na\xefve.txt")
    stopped = _stopped(why)
    limited = limit_reached(SimpleNamespace(stop_triggers={}), why, "budget")

    for state in (stopped, limited):
        assert "na\ufffdve.txt" in json.loads(state.model_dump_json())["message"]
