"""The aca-run flow against a real Prefect server, real git and the fake Anthropic server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from pathlib import Path

import git
import pytest

from aca_flows.flows import run_flow
from aca_flows.session.layout import AcaDir
from aca_flows.session.reading import load_session
from tests.fakes.coding_agent import SlowAgent, coding_agent, task_of
from tests.fakes.git_repo import commit_file
from tests.fakes.llm_server import Reply
from tests.flows.test_artifacts import reports_of
from tests.flows.test_run_ends import load_session_log


def write_tasks(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tasks.md"
    path.write_text(text)
    return path


def agent_requests(server) -> list:
    return [r for r in server.anthropic.requests if r.json and r.json.get("tools")]


def branch_files(repo: Path, branch: str) -> dict[str, str]:
    tree = git.Repo(repo).commit(branch).tree
    return {b.path: b.data_stream.read().decode() for b in tree.traverse() if b.type == "blob"}


def task_commits(repo: Path, branch: str) -> list[str]:
    """Task ids of the session branch's commits, oldest first."""
    log = git.Repo(repo).git.log("--reverse", "--format=%(trailers:key=Aca-Task,valueonly)", branch)
    return [line.strip() for line in log.splitlines() if line.strip()]


def run(tasks: Path, repo: Path, **params):
    return run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test", **params)


def test_dag_runs_in_dependency_order_and_lands_one_commit_per_task(tmp_path, repo, anthropic_fake):
    anthropic_fake.anthropic.scripted_for = lambda r: True
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(
        tmp_path,
        "# Demo\n\n- write a.txt {#a}\n- write b.txt {#b depends_on=a}\n- write c.txt {#c}\n",
    )
    outcome = run(tasks, repo)
    summary = outcome.summary
    assert summary["status"] == "completed" and summary["counts"] == {"completed": 3}
    branch = summary["branch"]
    assert branch_files(repo, branch) == {
        "README.md": "demo\n", "a.txt": "a.txt\n", "b.txt": "b.txt\n", "c.txt": "c.txt\n"
    }  # fmt: skip
    order = task_commits(repo, branch)
    assert sorted(order) == ["a", "b", "c"] and order.index("a") < order.index("b")
    # b was told about a's work: its prompt names a's summary.
    b_prompt = next(r for r in agent_requests(anthropic_fake) if task_of(r)[0] == "b")
    assert "did: write a.txt" in task_of(b_prompt)[2]
    # The user's checkout is untouched.
    assert git.Repo(repo).active_branch.name == "main"
    assert not (repo / "a.txt").exists()
    session = load_session(repo, summary["session_id"])
    assert session.status == "completed"
    assert {t.id: str(t.status) for t in session.plan.tasks} == {
        "a": "completed", "b": "completed", "c": "completed"
    }  # fmt: skip


def test_rerunning_the_session_makes_no_provider_call(tmp_path, repo, anthropic_fake):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n- write b.txt {#b depends_on=a}\n")
    first = run(tasks, repo).summary
    calls = len(anthropic_fake.anthropic.requests)
    again = run(tasks, repo, session_id=first["session_id"]).summary
    assert again["status"] == "completed"
    assert len(anthropic_fake.anthropic.requests) == calls
    assert task_commits(repo, first["branch"]) == ["a", "b"]
    # A prefix of the id, as everywhere ids are asked for: it made a new session of that id,
    # which paid for every task again.
    prefix = first["session_id"][:-3]
    by_prefix = run(tasks, repo, session_id=prefix).summary
    assert by_prefix["session_id"] == first["session_id"]
    assert len(anthropic_fake.anthropic.requests) == calls
    # A path is no session id: "../x" wrote a session record outside .aca before refused;
    # "_" or "." crashed the run at its artifacts' keys.
    for path in ("../../stray", str(tmp_path / "abs"), "a/b", "..", "a_b", "v1.2"):
        outcome = run(tasks, repo, session_id=path)
        assert outcome.state_name == "Failed" and outcome.summary is None, path
    assert not (tmp_path / "stray").exists() and not (tmp_path / "abs").exists()
    assert not (repo / ".aca" / "meta").exists() and not (repo / ".aca" / "sessions" / "a").exists()
    assert [p.name for p in (repo / ".aca" / "sessions").iterdir()] == [first["session_id"]]


def test_concurrency_is_bounded(tmp_path, repo, anthropic_fake):
    slow_agent = SlowAgent(0.3)

    for _ in range(40):
        anthropic_fake.anthropic.enqueue(slow_agent)
    tasks = write_tasks(tmp_path, "".join(f"- write f{i}.txt\n" for i in range(6)))
    summary = run(tasks, repo, max_concurrent=2).summary
    assert summary["counts"] == {"completed": 6}
    assert slow_agent.peak == 2


def test_overloaded_529s_are_retried_on_the_call_to_success(tmp_path, repo, anthropic_fake):
    for _ in range(3):  # three in a row: the call's retries absorb them
        anthropic_fake.anthropic.enqueue(status=529, retry_after=0.1, error="Overloaded")
    for _ in range(5):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n")
    summary = run(tasks, repo).summary
    assert summary["status"] == "completed"
    assert branch_files(repo, summary["branch"])["a.txt"] == "a.txt\n"
    assert len(anthropic_fake.anthropic.requests) == 5  # three 529s, then write and finish
    session = load_session(repo, summary["session_id"])
    assert session.tasks["a"].attempts == 1 and session.usage[0].calls == 2


def test_permanent_error_fails_without_retry(tmp_path, repo, anthropic_fake):
    # (A refused key stops the run instead: test_run_ends.py.)
    anthropic_fake.anthropic.enqueue(status=400, error="messages: field required")
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n")
    outcome = run(tasks, repo)
    assert outcome.state_name == "Failed"
    assert outcome.summary["failed_ids"] == ["a"]
    assert len(anthropic_fake.anthropic.requests) == 1


def test_failure_skips_dependents_and_independent_work_continues(tmp_path, repo, anthropic_fake):
    for _ in range(30):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(
        tmp_path,
        '- write a.txt {#a verify="false"}\n'
        "- write b.txt {#b depends_on=a}\n"
        "- write c.txt {#c depends_on=b}\n"
        "- write d.txt {#d}\n",
    )
    outcome = run(tasks, repo)
    summary = outcome.summary
    assert outcome.state_name == "Failed"
    assert summary["counts"] == {"failed": 1, "skipped": 2, "completed": 1}
    session = load_session(repo, summary["session_id"])
    status = {t.id: str(t.status) for t in session.plan.tasks}
    assert status["b"] == "skipped: dependency `a` failed"
    assert status["c"] == "skipped: dependency `b` was skipped"
    assert status["d"] == "completed"
    assert status["a"].startswith("failed: verify command `false` still failed")
    assert task_commits(repo, summary["branch"]) == ["d"]
    assert not any(task_of(r)[0] in ("b", "c") for r in agent_requests(anthropic_fake))


def test_proposed_subtasks_run_in_the_same_flow(tmp_path, repo, anthropic_fake):
    for _ in range(30):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "- write base.txt {#base}\n  propose: one, two\n")
    summary = run(tasks, repo).summary
    assert summary["status"] == "completed"
    files = branch_files(repo, summary["branch"])
    assert {"base.txt", "one.txt", "two.txt"} <= set(files)
    session = load_session(repo, summary["session_id"])
    base = session.plan.task("base")
    assert len(base.children) == 2 and str(base.status) == "completed"
    assert all(str(session.plan.task(c).status) == "completed" for c in base.children)
    assert task_commits(repo, summary["branch"])[0] == "base"


SPLIT_THEN_AFTER = (
    "- write base.txt {#base}\n  propose: one, two\n- write after.txt {#after depends_on=base}\n"
)


def test_a_resume_runs_the_dependent_of_a_task_after_its_failed_subtask(
    tmp_path, repo, anthropic_fake
):
    def agent(request):  # two.txt's agent gives up the first time (reminded, again)
        refuses = task_of(request)[0] == "base.two" and agent.refusals < 2
        agent.refusals += refuses
        return Reply(text="I cannot do that") if refuses else coding_agent(request)

    agent.refusals = 0
    anthropic_fake.anthropic.default = agent
    tasks = write_tasks(tmp_path, SPLIT_THEN_AFTER)
    first = run(tasks, repo).summary
    assert first["status"] == "failed" and first["failed_ids"] == ["base.two"]
    session = load_session(repo, first["session_id"])
    assert str(session.plan.task("after").status) == "skipped: dependency `base` failed"

    again = run_flow(workdir=str(repo), session_id=first["session_id"]).summary
    assert again["status"] == "completed"
    # after waited for base.two: it did not start on a head without base's subtask's work.
    assert task_commits(repo, first["branch"])[-2:] == ["base.two", "after"]


def test_a_split_whose_subtask_failed_is_not_listed_as_completed_without_a_change(
    tmp_path, repo, anthropic_fake
):
    """p's own work is the split (its "no change"); p fails with its subtask p.y. The run's
    summary lists no task as completed without a change."""

    def agent(request):
        task_id = task_of(request)[0]
        turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
        if task_id == "p":
            subtasks = [{"id": "x", "title": "write x.txt"}, {"id": "y", "title": "y"}]
            steps = [
                {"name": "propose_subtasks", "arguments": {"subtasks": subtasks}},
                {"name": "finish", "arguments": {"summary": "split"}},
            ]
            usage = {"input_tokens": 100, "output_tokens": 20}
            return Reply(tool_calls=[steps[min(turn, 1)]], usage=usage)
        return coding_agent(request)  # y: "anything else" finishes without a change: failed

    anthropic_fake.anthropic.default = agent
    summary = run(write_tasks(tmp_path, "- split the work {#p}\n"), repo).summary

    assert summary["status"] == "failed" and summary["failed_ids"] == ["p.y"]
    assert summary["no_change_ids"] == []
    assert summary["tasks"]["p"]["state"] == "failed"


def test_a_parent_stopped_before_its_subtasks_ran_holds_its_dependent_back_on_resume(
    tmp_path, repo, anthropic_fake
):
    anthropic_fake.anthropic.default = coding_agent
    tasks = write_tasks(tmp_path, SPLIT_THEN_AFTER)
    # base's three calls ($0.0006 each) land its own work; the budget then stops the run.
    first = run_flow(
        task_file=str(tasks), workdir=str(repo), model="claude-sonnet-4-6",
        max_concurrent=1, budget_usd=0.0015,
    ).summary  # fmt: skip
    assert first["status"] == "stopped" and task_commits(repo, first["branch"]) == ["base"]

    again = run_flow(workdir=str(repo), session_id=first["session_id"], budget_usd=1.0)
    assert again.summary and again.summary["status"] == "completed", again.state_name
    commits = task_commits(repo, first["branch"])
    assert commits[-1] == "after" and {"base.one", "base.two"} <= set(commits)


def test_artifacts_and_task_run_names_are_in_prefect(tmp_path, repo, anthropic_fake):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "# Art\n\n- write a.txt {#a}\n")
    summary = run(tasks, repo).summary
    session_id = summary["session_id"]

    async def read():
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(like_=f"%{session_id.lower()}%")
                )
            )
            runs = await client.read_task_runs()
            flows = await client.read_flow_runs()
            return artifacts, runs, flows

    artifacts, task_runs, flow_runs = asyncio.run(read())
    reports = reports_of(session_id)
    by_key = {a.key: a for a in artifacts}
    sid = session_id.lower()
    # The session's four under their keys; a task's report on its task run, without one.
    assert {f"aca-{kind}-{sid}" for kind in ("plan", "tree", "progress", "summary")} == set(by_key)
    assert "**Commit:**" in reports["a"].data and "a.txt" in reports["a"].data
    assert "a write a.txt" in {r.name for r in task_runs}
    assert f"Art · {session_id}" in {f.name for f in flow_runs}
    plan_table = by_key[f"aca-plan-{sid}"]
    assert json.loads(plan_table.data)[0]["id"] == "a"


def test_titles_with_braces_run_and_name_their_task_runs(tmp_path, repo, anthropic_fake):
    # Prefect formats a string task-run name with the run's parameters: these titles once
    # failed the whole run with KeyError('x').
    from prefect.client.orchestration import get_client

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(
        tmp_path,
        "- write {x}.txt {#a}\n"
        '- write {0}.txt {#b verify="false"}\n'
        "- write {c}.txt {#c depends_on=b}\n",
    )
    outcome = run(tasks, repo)
    summary = outcome.summary
    assert summary["counts"] == {"completed": 1, "failed": 1, "skipped": 1}
    files = branch_files(repo, summary["branch"])
    assert files["{x}.txt"] == "{x}.txt\n" and "{0}.txt" not in files

    async def read():
        async with get_client() as client:
            return await client.read_task_runs()

    states = {r.name: r.state.name for r in asyncio.run(read())}
    assert states["a write {x}.txt"] == "Completed"
    assert states["b write {0}.txt"] == "Failed"
    assert states["c write {c}.txt"] == "Skipped"


def test_a_run_that_finished_past_its_budget_says_so(tmp_path, repo, anthropic_fake):
    # Its last call went while the spend was under the budget and took it past: the run
    # completed, exit 0, and nothing but the bill said the budget was passed.
    for _ in range(4):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n")
    # $0.0006 a call: the second goes with $0.0006 spent, and the task ends at $0.0012.
    done = run_flow(
        task_file=str(tasks), workdir=str(repo), model="claude-sonnet-4-6", budget_usd=0.0009
    )
    assert done.summary["status"] == "completed"
    log = load_session_log(repo, done.summary["session_id"])
    assert "the session spent $0.0012, past its budget of $0.0009" in log


def test_budget_stops_the_run_and_resume_finishes_without_repeating(tmp_path, repo, anthropic_fake):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n- write b.txt {#b}\n- write c.txt {#c}\n")
    # 100 input + 20 output tokens at $3/$15 per million: $0.0006 a call, $0.0012 a task.
    stopped = run_flow(
        task_file=str(tasks), workdir=str(repo), model="claude-sonnet-4-6",
        max_concurrent=1, budget_usd=0.001,
    )  # fmt: skip
    first = stopped.summary
    assert stopped.state_name == "Stopped"  # a Cancelled state: not done, not failed
    assert first["status"] == "stopped"
    assert "budget of $0.001 reached" in first["stopped_reason"]
    assert first["counts"]["completed"] == 1
    done_before = task_commits(repo, first["branch"])
    calls = len(anthropic_fake.anthropic.requests)
    session = load_session(repo, first["session_id"])
    assert session.status == "stopped" and session.last_checkpoint.trigger == "budget"
    # b's worktree, made while a's task run ended, went with the run: b never started.
    assert list((repo / ".aca" / "worktrees").glob("*/*")) == []
    assert git.Repo(repo).git.worktree("list", "--porcelain").count("worktree ") == 1

    again = run_flow(workdir=str(repo), session_id=first["session_id"], budget_usd=1.0).summary
    assert again["status"] == "completed" and again["counts"] == {"completed": 3}
    assert sorted(task_commits(repo, first["branch"])) == ["a", "b", "c"]
    new_calls = anthropic_fake.anthropic.requests[calls:]
    assert {task_of(r)[0] for r in new_calls if r.json.get("tools")}.isdisjoint(done_before)


def stopped_by_a_budget(tmp_path, repo, anthropic_fake, capsys):
    """`aca run` of two tasks, one at a time, stopped by a budget after the first (exit 3):
    the task file, the run's options, and the line the run ended with."""
    from aca_flows.cli import main

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n- write b.txt {#b}\n")
    args = ["-w", str(repo), "--model", "claude-sonnet-4-6", "--max-concurrent", "1"]
    assert main(["run", str(tasks), *args, "--budget-usd", "0.001"]) == 3
    return tasks, args, capsys.readouterr().out.strip().splitlines()[-1]


def test_a_budget_stop_names_the_resume_that_goes_on_and_a_spent_budget_is_refused(
    tmp_path, repo, anthropic_fake, capsys
):
    from aca_flows.cli import main

    tasks, args, ending = stopped_by_a_budget(tmp_path, repo, anthropic_fake, capsys)
    session_id = ending.split(" ", 2)[1]
    # A plain `aca resume ID` stops again at once: the way on is a larger budget.
    # Just above the spend, it pays for a call and stops again: the room for a task is named.
    assert ending.endswith(
        "--budget-usd N` continues, with N above the $0.0012 spent: a finished task of this "
        "session cost up to $0.0012, so N = 0.0024 leaves room for about one more."
    )
    calls = len(anthropic_fake.anthropic.requests)
    journal = (repo / ".aca" / "sessions" / session_id / "meta" / "events.jsonl").read_text()

    # Refused before a flow run exists or anything is journalled: the budget given, and the
    # session's own, kept by a resume that gives none, are both spent.
    assert main(["resume", session_id, "-w", str(repo), "--budget-usd", "0.001"]) == 2
    err = capsys.readouterr().err
    fix = f"`aca resume {session_id} --workdir {repo} --budget-usd N`, N > 0.0012"
    assert "has spent $0.0012 already" in err and fix in err
    assert main(["resume", session_id, "-w", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "a budget of $0.001 (its own, kept without --budget-usd) would stop it" in err
    assert fix in err
    assert len(anthropic_fake.anthropic.requests) == calls
    assert load_session(repo, session_id).status == "stopped"
    assert (repo / ".aca" / "sessions" / session_id / "meta" / "events.jsonl").read_text() == (
        journal
    )
    assert [r.state.name for r in asyncio.run(flow_runs_of(session_id))] == ["Stopped"]

    # Started without the CLI (a deployment's retry), the flow refuses it itself.
    refused = run_flow(workdir=str(repo), session_id=session_id)
    assert refused.state_name == "Failed" and "has spent $0.0012 already" in str(refused.error)
    # Whose parameters a Retry cannot change: told what works there.
    assert f"run the deployment again with session_id={session_id} and budget_usd=N" in str(
        refused.error
    )


async def flow_runs_of(session_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    async with get_client() as client:
        tags = FlowRunFilterTags(all_=[f"session:{session_id}"])
        return await client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=tags))


def test_a_failed_run_that_cannot_be_resumed_does_not_offer_the_resume(
    tmp_path, repo, anthropic_fake, capsys
):
    from aca_flows.cli import main

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    # The session's record keeps the verify command redacted: a resume would run it altered,
    # so aca refuses it, and the ending must not say that it continues.
    tasks = write_tasks(tmp_path, '- write a.txt {#a verify="SECRET=abcdefgh12 test -s nope"}\n')

    assert main(["run", str(tasks), "-w", str(repo), "--model", "claude-sonnet-4-6"]) == 1

    ending = capsys.readouterr().out.strip().splitlines()[-1]
    assert "aca resume" not in ending.split("It cannot be resumed:")[0]
    assert "It cannot be resumed: session " in ending and "start a new run" in ending


def test_resume_gives_failed_tasks_another_chance(tmp_path, repo, anthropic_fake, monkeypatch):
    for _ in range(40):
        anthropic_fake.anthropic.enqueue(coding_agent)
    flag = tmp_path / "environment" / "ready"
    flag.parent.mkdir()
    # Verify commands run sandboxed: a folder outside the repository is shown only on request.
    monkeypatch.setenv("ACA_SANDBOX__READ_ONLY_PATHS", str(flag.parent))
    tasks = write_tasks(
        tmp_path,
        f'- write a.txt {{#a verify="test -f {flag}"}}\n'
        "- write b.txt {#b depends_on=a}\n"
        "- write c.txt {#c}\n",
    )
    first = run(tasks, repo).summary
    assert first["counts"] == {"failed": 1, "skipped": 1, "completed": 1}
    flag.touch()  # the environment is fixed
    c_calls = sum(1 for r in agent_requests(anthropic_fake) if task_of(r)[0] == "c")
    again = run_flow(workdir=str(repo), session_id=first["session_id"]).summary
    assert again["status"] == "completed" and again["counts"] == {"completed": 3}
    assert sorted(task_commits(repo, first["branch"])) == ["a", "b", "c"]
    assert sum(1 for r in agent_requests(anthropic_fake) if task_of(r)[0] == "c") == c_calls


def test_a_no_change_task_completes_as_such_and_a_changeless_stop_fails(
    tmp_path, repo, anthropic_fake
):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(
        tmp_path,
        "- write a.txt {#a}\n"
        '- keep README.md {#k verify="grep -q demo README.md"}\n'
        "- look around {#idle}\n",
    )
    outcome = run(tasks, repo)
    summary = outcome.summary

    assert outcome.state_name == "Failed"
    assert summary["failed_ids"] == ["idle"] and summary["no_change_ids"] == ["k"]
    assert summary["counts"] == {"completed": 2, "failed": 1}
    assert task_commits(repo, summary["branch"]) == ["a"]  # no empty commit for k or idle
    session = load_session(repo, summary["session_id"])
    assert session.tasks["k"].outcome == "no_change" and session.tasks["k"].commit is None
    assert session.tasks["k"].no_change_reason == "README.md is fine as it is"
    assert session.tasks["a"].outcome == "changed"
    assert "without changing anything" in str(session.plan.task("idle").status)

    k_doc = reports_of(summary["session_id"])["k"].data
    assert "**Status:** completed, no change: README.md is fine as it is" in k_doc
    assert "**Commit:** none (no change needed; the verify command confirmed it)" in k_doc
    assert "**Verify:** `grep -q demo README.md` → passed" in k_doc


def test_the_flow_refuses_a_provider_that_cannot_work_before_any_task(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # A deployment run has no CLI in front of it: the flow makes the same check itself.
    from aca_flows.errors import PermanentProviderError

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-revoked")
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n")

    outcome = run(tasks, repo)

    assert outcome.state_name == "Failed" and outcome.summary is None
    assert isinstance(outcome.error, PermanentProviderError)
    assert "rejected ANTHROPIC_API_KEY (401" in str(outcome.error)
    assert anthropic_fake.anthropic.requests == []  # nothing spent
    assert not (repo / ".aca" / "sessions").exists()
    assert [h.name for h in git.Repo(repo).heads] == ["main"]


def test_a_claude_code_error_result_is_a_classified_stop_not_a_commit(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    home = tmp_path / "claude-home"
    home.mkdir()
    for name, value in {
        "HOME": str(home),
        "ACA_SESSION__PROVIDER": "claude-code",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }.items():
        monkeypatch.setenv(name, value)
    anthropic_fake.anthropic.scripted_for = lambda r: bool((r.json or {}).get("tools"))
    # The key passes the free check, then the real claude's first call is refused.
    anthropic_fake.anthropic.enqueue(status=401, error="invalid x-api-key")
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n")

    outcome = run(tasks, repo)

    # A refused key is no verdict on the task: the run stops, the task stays pending.
    assert outcome.state_name == "Stopped"
    session = load_session(repo, outcome.summary["session_id"])
    assert session.plan.task("a").status.state == "pending"
    reason = outcome.summary["stopped_reason"]
    assert reason.startswith("claude-code refused its credentials (401: Invalid API key")
    assert "set a valid ANTHROPIC_API_KEY" in reason
    assert task_commits(repo, outcome.summary["branch"]) == []
    assert len(agent_requests(anthropic_fake)) == 1  # permanent: never retried


def test_the_terminal_summary_shows_a_no_change_task_as_its_own_kind(
    tmp_path, repo, anthropic_fake, capsys
):
    from aca_flows.cli import main

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n- keep README.md {#k}\n")

    code = main(["run", str(tasks), "--workdir", str(repo), "--model", "claude-test"])

    out = capsys.readouterr().out
    assert code == 0
    k_row = next(line for line in out.splitlines() if "keep README.md" in line)
    assert "completed, no change" in k_row
    a_row = next(line for line in out.splitlines() if "write a.txt" in line)
    assert "no change" not in a_row
    # No verify command confirmed it: the agent's word alone, and the summary says so.
    assert "k: README.md is fine as it is (not checked: no verify command)" in out
    assert "confirmed by" not in out
    assert "Completed without a change (no change needed): k." in out
    k_doc = reports_of(_session_of(repo))["k"].data
    assert "**Commit:** none (no change needed, on the agent's word: no check confirmed it)" in (
        k_doc
    )


def test_calls_aca_has_no_price_for_are_never_shown_as_costing_nothing(
    tmp_path, repo, anthropic_fake, capsys
):
    # claude-test has no price: its calls cost $0 in the session's figures, and every view
    # of the spend showed a bare $0.0000, as if they had cost nothing.
    from aca_flows.cli import main

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n")

    code = main(["run", str(tasks), "--workdir", str(repo), "--model", "claude-test", "--json"])

    summary = json.loads(capsys.readouterr().out)
    session = load_session(repo, summary["session_id"])
    calls = session.tasks["a"].usage[0].calls
    assert code == 0 and calls >= 1
    assert (summary["cost_usd"], summary["unpriced_calls"]) == (0, calls)
    assert summary["tasks"]["a"]["unpriced_calls"] == calls
    unpriced = f"$0.0000 + {calls} unpriced call{'s' if calls > 1 else ''}"
    assert f"**Cost:** {unpriced}" in reports_of(summary["session_id"])["a"].data
    assert main(["sessions", "show", summary["session_id"], "--workdir", str(repo)]) == 0
    a_row = next(line for line in capsys.readouterr().out.splitlines() if "write a.txt" in line)
    assert unpriced in a_row


def test_a_session_branch_deleted_mid_run_stops_the_run_naming_the_branch_to_restore(
    tmp_path, repo, anthropic_fake, capsys
):
    from aca_flows.cli import main

    def deletes_the_branch_first(request):
        if task_of(request)[0] == "b":  # a landed; the user deletes the session branch
            git.Repo(repo).git.branch("-D", f"aca/{_session_of(repo)}")
        return coding_agent(request)

    anthropic_fake.anthropic.enqueue(coding_agent)
    anthropic_fake.anthropic.enqueue(coding_agent)
    anthropic_fake.anthropic.enqueue(deletes_the_branch_first)
    anthropic_fake.anthropic.default = coding_agent
    tasks = write_tasks(tmp_path, "".join(f"- write {t}.txt {{#{t}}}\n" for t in "abcd"))
    run = ["run", str(tasks), "--workdir", str(repo), "--model", "claude-test"]

    code = main([*run, "--max-concurrent", "1"])

    out = capsys.readouterr().out
    sid = _session_of(repo)
    assert code == 3
    assert [task_of(r)[0] for r in agent_requests(anthropic_fake)] == ["a", "a", "b", "b"]
    session = load_session(repo, sid)
    states = {t.id: t.status.state for t in session.plan.tasks}
    assert states == {"a": "completed", "b": "pending", "c": "pending", "d": "pending"}
    restore = f"git branch -f aca/{sid} {session.tasks['a'].commit}"
    why = (
        f"the session branch aca/{sid} is gone (deleted or renamed while the run ran), so no "
        f"task can start from it or land on it: restore it with `{restore}` (the last commit "
        f"on record), then `aca resume {sid} --workdir {repo}` continues"
    )
    assert (session.status, session.status_reason) == ("stopped", why)
    assert session.last_checkpoint.trigger == "branch-lost"  # `aca checkpoints list` says so
    assert "GitCommandError" not in out
    last = out.strip().splitlines()[-1]
    assert last == (
        f"Session {sid} stopped; its branch aca/{sid} is gone (deleted or renamed while it "
        f"ran). Stopped: {why}."
    )
    git.Repo(repo).git.branch("-f", f"aca/{sid}", session.tasks["a"].commit)  # as it says
    assert main(["resume", sid, "--workdir", str(repo)]) == 0
    assert sorted(task_commits(repo, f"aca/{sid}")) == ["a", "b", "c", "d"]


def test_a_session_branch_reset_mid_run_stops_the_run_naming_the_commit_to_restore(
    tmp_path, repo, anthropic_fake, capsys
):
    # It ran on: b landed on the reset branch, c (after a) ran without a's work, and the run
    # said "completed, 3 of 3" while the branch held 2; the resume then refused it.
    from aca_flows.cli import main

    def resets_the_branch_first(request):
        if task_of(request)[0] == "b":  # a landed; the user moves the branch back
            git.Repo(repo).git.branch("-f", f"aca/{_session_of(repo)}", "HEAD")
        return coding_agent(request)

    anthropic_fake.anthropic.enqueue(coding_agent)
    anthropic_fake.anthropic.enqueue(coding_agent)
    anthropic_fake.anthropic.enqueue(resets_the_branch_first)
    anthropic_fake.anthropic.default = coding_agent
    tasks = write_tasks(
        tmp_path, "- write a.txt {#a}\n- write b.txt {#b}\n- write c.txt {#c depends_on=a}\n"
    )
    run = ["run", str(tasks), "--workdir", str(repo), "--model", "claude-test"]

    code = main([*run, "--max-concurrent", "1"])

    sid = _session_of(repo)
    session = load_session(repo, sid)
    landed = session.tasks["a"].commit
    assert code == 3
    states = {t.id: t.status.state for t in session.plan.tasks}
    assert states == {"a": "completed", "b": "pending", "c": "pending"}
    restore = f"git branch -f aca/{sid} {landed}"
    assert session.status == "stopped" and f"`{restore}`" in session.status_reason
    assert session.last_checkpoint.trigger == "branch-reset"
    assert "SessionBranchReset" not in capsys.readouterr().out
    git.Repo(repo).git.branch("-f", f"aca/{sid}", landed)  # as it says
    assert main(["resume", sid, "--workdir", str(repo)]) == 0
    assert sorted(task_commits(repo, f"aca/{sid}")) == ["a", "b", "c"]


def test_a_full_disk_fails_the_task_saying_so_and_how_to_go_on(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    """ENOSPC is no bug of aca's: the reason names the full disk, where, and the resume."""
    import errno

    from aca_flows.workspace.worktree import TaskWorktree

    create = TaskWorktree.create.__func__

    def full_for_b(cls, repo_, session_id, task_id, spare=None):
        if task_id == "b":
            raise OSError(errno.ENOSPC, "No space left on device")
        return create(cls, repo_, session_id, task_id, spare)

    monkeypatch.setattr(TaskWorktree, "create", classmethod(full_for_b))
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, "- write a.txt {#a}\n- write b.txt {#b depends_on=a}\n")

    outcome = run(tasks, repo)

    sid = outcome.summary["session_id"]
    reason = outcome.summary["tasks"]["b"]["reason"]
    assert reason == (
        f"a disk is full ([Errno 28] No space left on device): free space where {repo} (its "
        f"worktrees and session) and /tmp are, then `aca resume {sid} --workdir {repo}` runs it "
        "again"
    )
    assert str(load_session(repo, sid).plan.task("b").status) == f"failed: {reason}"


def _session_of(repo: Path) -> str:
    (session,) = (repo / ".aca" / "sessions").iterdir()
    return session.name


def test_a_verify_command_that_cannot_fail_is_reported_as_checking_nothing(
    tmp_path, repo, anthropic_fake, capsys
):
    """``true``, or a pipeline whose status is ``tail``'s, passes whatever the work holds: the
    task completes as before, and every place that reports the pass says it proved nothing."""
    from aca_flows.cli import main

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(
        tmp_path,
        '- write a.txt {#a verify="true"}\n'
        '- keep README.md {#k verify="test -f nothing.txt | tail -1"}\n'
        '- write b.txt {#b verify="test -f b.txt"}\n'
        '- write check.sh with exit 0 {#c verify="sh ./check.sh"}\n',
    )

    code = main(["run", str(tasks), "--workdir", str(repo), "--model", "claude-test"])

    out = capsys.readouterr().out
    assert code == 0
    assert "k: README.md is fine as it is (not checked: `test -f nothing.txt | tail -1` checks" in (
        out
    )
    reports = reports_of(_session_of(repo))
    note = "(it checks nothing: it passes whatever the work holds)"
    assert f"**Verify:** `true` → passed {note}" in reports["a"].data
    assert "**Commit:** none (no change needed, on the agent's word" in reports["k"].data
    assert "**Verify:** `test -f b.txt` → passed\n" in reports["b"].data
    # The session's own log: pytest's caplog loses its handler when a run (the first of a
    # test process) sets Prefect's logging up, so run alone this test read no warning.
    log = AcaDir(repo).session(_session_of(repo)).system_log.read_text()
    warnings = [line.split(": ", 1)[1] for line in log.splitlines() if " WARNING " in line]
    assert f"verify passed: true {note}" in warnings
    assert not any(m.startswith("verify passed: test -f b.txt") for m in warnings)
    # The agent wrote the script its check runs: no failure (a task may have to change its
    # tests), but every place that reports the pass says so.
    edited = "(the change it passed on edits what it runs (check.sh))"
    assert f"**Verify:** `sh ./check.sh` → passed {edited}" in reports["c"].data
    assert (
        "verify passed on a change that edits what it runs (check.sh): the check is partly "
        "the agent's work; review those edits"
    ) in warnings
    assert not any("edits what it runs" in reports[t].data for t in ("a", "b"))


def test_a_resume_whose_provider_cannot_work_is_refused_and_leaves_the_session_as_it_was(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    from aca_flows.errors import PermanentProviderError

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(tmp_path, '- write a.txt {#a verify="false"}\n')
    first = run(tasks, repo).summary
    before = load_session(repo, first["session_id"])
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-revoked")
    calls = len(anthropic_fake.anthropic.requests)

    again = run_flow(workdir=str(repo), session_id=first["session_id"])

    assert again.state_name == "Failed" and isinstance(again.error, PermanentProviderError)
    assert "rejected ANTHROPIC_API_KEY" in str(again.error)
    after = load_session(repo, first["session_id"])
    assert after.resumes == before.resumes and after.last_seq == before.last_seq
    assert len(anthropic_fake.anthropic.requests) == calls


def test_a_plan_with_every_task_marked_done_needs_no_working_provider(tmp_path, repo, monkeypatch):
    # Nothing will be called: a revoked key (or none) refused it, where its resume completes.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-revoked")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nobody answers there
    tasks = write_tasks(tmp_path, "- [x] write a.txt {#a}\n- [x] write b.txt {#b}\n")

    outcome = run(tasks, repo)

    assert outcome.state_name == "Completed", outcome.error
    assert outcome.summary["status"] == "completed"


def test_each_task_starts_clean_in_the_worktree_an_earlier_task_left(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    """Worktrees are taken up, not made anew: each task still sees only the session head (the
    setup's ignored output of the task before would make its check fail), and none is left."""
    from aca_flows.workspace.worktree import TaskWorktree

    commit_file(repo, ".gitignore", "build/\n")
    taken_up = []
    take_up = TaskWorktree._taken_up

    def counted(self, *args):
        taken = take_up(self, *args)
        taken_up.append(taken is not None)
        return taken

    monkeypatch.setattr(TaskWorktree, "_taken_up", counted)
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(
        '[plan]\nstrategy = "sequential"\n'
        "verify = 'test \"$(wc -l < build/runs.txt)\" -eq 1'\n"
        '[[setup_commands]]\nname = "build"\n'
        'command = "mkdir -p build && echo run >> build/runs.txt"\n'
        + "".join(f'[[tasks]]\nid = "{t}"\ntitle = "write {t}.txt"\n' for t in "abcd")
    )

    outcome = run(tasks, repo)

    assert outcome.summary["status"] == "completed", outcome.summary
    assert taken_up and all(taken_up)  # the later tasks took up worktrees of earlier ones
    listed = subprocess.run(
        ["git", "-C", str(repo), "worktree", "list", "--porcelain"], capture_output=True, text=True
    ).stdout
    assert listed.count("worktree ") == 1  # the checkout only: no spare is left
    assert not (repo / ".aca" / "worktrees" / outcome.summary["session_id"]).exists()


@pytest.mark.parametrize("sandbox", ["off", "bwrap"])
def test_a_process_an_agent_left_running_lands_nothing_in_a_later_task(
    tmp_path, repo, anthropic_fake, sandbox
):
    """A process an agent starts in the background outlives its command: without the sandbox
    nothing ends it, and its folder must not become the next task's worktree (taken up, it
    wrote into c's commit); in the sandbox, the command's PID namespace ends it."""
    marker = f"linger-{tmp_path.name}"  # in its command line: found and ended after the test
    linger = (
        f"setsid sh -c ': {marker}; while :; do [ -e b.txt ] && echo x > planted.txt; "
        "sleep 0.005; done' </dev/null >/dev/null 2>&1 &"
    )

    def agent(request):
        if task_of(request)[0] != "a":
            return coding_agent(request)
        turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
        steps = [
            {"name": "run_command", "arguments": {"command": linger}},
            {"name": "write_file", "arguments": {"path": "a.txt", "content": "a\n"}},
            {"name": "finish", "arguments": {"summary": "did a"}},
        ]
        return Reply(tool_calls=[steps[min(turn, 2)]])

    for _ in range(30):
        anthropic_fake.anthropic.enqueue(agent)
    config = tmp_path / "aca.toml"
    config.write_text(f'[session]\nmax_concurrent_tasks = 1\n[sandbox]\nmode = "{sandbox}"\n')
    chain = "- linger {#a}\n- write b.txt {#b depends_on=a}\n- write c.txt {#c depends_on=b}\n"
    tasks = write_tasks(tmp_path, chain)
    try:
        summary = run(tasks, repo, config_file=str(config)).summary
        left_running = subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0
    finally:
        subprocess.run(["pkill", "-KILL", "-f", marker])

    assert summary["status"] == "completed", summary
    landed = subprocess.run(
        ["git", "-C", str(repo), "log", "--name-only", "--format=", summary["branch"]],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert "b.txt" in landed and "planted.txt" not in landed
    assert left_running == (sandbox == "off")


def test_a_stop_that_finishes_with_a_completion_starts_none_of_its_dependents(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    """A task's dependents start as soon as it completes; but a usage limit that ended
    another task in the same moment stops the run first: no new task starts."""
    from aca_flows.flows import scheduler, task_run
    from aca_flows.providers.ratelimit import UsageLimitReached

    real_execute = task_run.execute_task

    async def execute(plan, task_id, **kw):
        if task_id == "b":
            raise UsageLimitReached("anthropic: the usage limit is reached", provider="anthropic")
        return await real_execute(plan, task_id, **kw)

    async def both_at_once(running, interrupt):  # one batch: the scheduler was busy
        await asyncio.wait(list(running), return_when=asyncio.ALL_COMPLETED)
        return sorted(running, key=lambda t: running[t] != "a")  # the completion first

    monkeypatch.setattr(task_run, "execute_task", execute)
    monkeypatch.setattr(scheduler, "_wait_for_tasks", both_at_once)
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = write_tasks(
        tmp_path, "- write a.txt {#a}\n- write b.txt {#b}\n- write c.txt {#c depends_on=a}\n"
    )

    outcome = run(tasks, repo, max_concurrent=2)

    assert outcome.summary["status"] == "stopped", outcome.summary
    session = load_session(repo, outcome.summary["session_id"])
    assert session.plan.task("c").status.state == "pending"
    assert "c" not in session.tasks or session.tasks["c"].attempts == 0


def test_a_run_of_a_file_whose_last_session_is_unfinished_names_its_resume(
    tmp_path, repo, anthropic_fake, capsys
):
    # After a crash or a stop, `aca run FILE` again started over without a word: the paid
    # work of the unfinished session of the same file was left unused.
    from aca_flows.cli import main

    tasks, args, ending = stopped_by_a_budget(tmp_path, repo, anthropic_fake, capsys)
    stopped = ending.split(" ", 2)[1]

    assert main(["run", str(tasks), *args]) == 0

    err = capsys.readouterr().err
    assert (
        f"aca: note: session {stopped} of {tasks} is stopped (1 completed, 1 pending of 2); "
        f"`aca resume {stopped} --workdir {repo}` continues it. This run starts a new session."
    ) in err


def test_a_task_failed_for_subtasks_it_cannot_have_is_not_completed_by_a_resume(
    tmp_path, repo, anthropic_fake
):
    # Two tasks at once propose subtasks waiting for each other: the second to land is failed
    # (its part landed, the rest can never run); the resume then completed it, exit 0.
    import threading

    both_proposed = threading.Barrier(2, timeout=60)
    other = {"a": "b", "b": "a"}

    def agent(request):
        task_id = task_of(request)[0]
        turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
        if task_id not in other or turn == 0:
            return coding_agent(request)
        if turn == 1:
            sub = [{"id": "s", "title": f"write s{task_id}.txt", "dependencies": [other[task_id]]}]
            return Reply(tool_calls=[{"name": "propose_subtasks", "arguments": {"subtasks": sub}}])
        with contextlib.suppress(threading.BrokenBarrierError):
            both_proposed.wait()
        return Reply(tool_calls=[{"name": "finish", "arguments": {"summary": "done"}}])

    anthropic_fake.anthropic.default = agent
    tasks = write_tasks(tmp_path, "# p\n\n- [ ] write a.txt {#a}\n- [ ] write b.txt {#b}\n")
    first = run(tasks, repo).summary
    assert first["status"] == "failed"
    reasons = [str(t.status.reason) for t in load_session(repo, first["session_id"]).plan.tasks]
    assert sum("proposed subtasks ignored" in reason for reason in reasons) == 1, reasons
    before = load_session(repo, first["session_id"])
    calls = len(anthropic_fake.anthropic.requests)

    again = run(tasks, repo, session_id=first["session_id"]).summary
    assert again["status"] == "failed", again
    # Kept failed as it stands: no attempt counted, no call made (it counted one it never made).
    after = load_session(repo, first["session_id"])
    assert {t: r.attempts for t, r in after.tasks.items()} == {
        t: r.attempts for t, r in before.tasks.items()
    }
    assert len(anthropic_fake.anthropic.requests) == calls
