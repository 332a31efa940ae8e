"""A plan's setup commands: run in each task's worktree before its agent, on real git."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, SetupCommand, Task
from aca_flows.session.layout import AcaDir
from aca_flows.session.redact import redact_text
from aca_flows.workspace import ensure_session_branch
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use
from tests.security.hostile import Listener
from tests.workspace.test_repository import make_user_repo

SESSION = "s1"


@pytest.fixture
def repo(tmp_path):
    repo = make_user_repo(tmp_path)
    # What setup builds is ignored, as a project's .gitignore would say.
    (Path(repo.git_dir) / "info" / "exclude").write_text("build/\n")
    return repo


def run_task(workdir: Path, setup: list[SetupCommand], provider, verify: str | None = None):
    plan = ExecutionPlan(
        name="p",
        setup_commands=setup,
        tasks=[Task(id="t1", title="Write done.txt", verify=verify)],
    )
    return asyncio.run(
        execute_task(plan, "t1", workdir=workdir, session_id=SESSION, provider=provider)
    )


def agent_writing_done() -> ScriptedProvider:
    return ScriptedProvider(
        tool_calls(tool_use("write_file", path="done.txt", content="done\n")),
        tool_calls(tool_use("finish", summary="wrote done.txt")),
    )


def setup_records(workdir: Path) -> list[dict]:
    log = AcaDir(workdir).session(SESSION).task_log("t1")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in records if r["kind"] == "setup"]


def test_setup_runs_in_order_in_the_task_worktree_before_the_agent(tmp_path, repo):
    setup = [
        SetupCommand(name="folder", command="mkdir -p build"),
        SetupCommand(name="where", command="pwd > where.txt", working_dir="build"),
    ]
    provider = agent_writing_done()

    outcome = run_task(tmp_path, setup, provider, verify="grep -q '/t1/build$' build/where.txt")

    assert outcome.status == "completed", outcome.failure_reason
    # The verify command saw what setup built, inside the task's worktree; none of it is
    # committed, only the agent's work.
    assert outcome.files_changed == ["done.txt"]
    assert [(r["name"], r["passed"]) for r in setup_records(tmp_path)] == [
        ("folder", True),
        ("where", True),
    ]
    assert not (tmp_path / "build").exists()  # the user's checkout is untouched


def test_a_required_command_that_fails_fails_the_task_before_any_provider_call(tmp_path, repo):
    setup = [SetupCommand(name="deps", command="echo 'no such package' >&2; exit 3")]
    provider = ScriptedProvider()

    outcome = run_task(tmp_path, setup, provider)

    assert outcome.status == "failed"
    assert "setup command 'deps'" in outcome.failure_reason
    assert "exit code 3" in outcome.failure_reason
    assert "no such package" in outcome.failure_reason
    assert provider.history == []
    assert outcome.commit_sha is None


def test_a_secret_the_kept_output_cuts_through_is_not_kept_in_part(tmp_path, repo, monkeypatch):
    # The last 4,000 characters of a failed command's output are kept: cut before it was
    # redacted, 19 of a token's 27 characters stood in the failure, the task log, the summary
    # and Prefect's records, where no rule found them.
    token = "dt_Q7mX2vL9kR4wZ8nP3tY6bH1c"
    monkeypatch.setenv("DEPLOY_TOKEN", token)
    command = f"echo 'using {token}'; head -c 3980 /dev/zero | tr '\\0' Z; exit 1"
    setup = [SetupCommand(name="deploy", command=command)]

    outcome = run_task(tmp_path, setup, ScriptedProvider())

    assert outcome.status == "failed" and "ZZZZ" in outcome.failure_reason
    log = AcaDir(tmp_path).session(SESSION).task_log("t1").read_text()
    for kept in (redact_text(outcome.failure_reason), log):  # as each record has it
        assert token[-19:] not in kept and token[-8:] not in kept


def test_an_optional_command_that_fails_is_logged_and_the_task_goes_on(tmp_path, repo):
    setup = [SetupCommand(name="lint-cache", command="exit 1", required=False)]

    outcome = run_task(tmp_path, setup, agent_writing_done())

    assert outcome.status == "completed", outcome.failure_reason
    assert [(r["name"], r["exit_code"]) for r in setup_records(tmp_path)] == [("lint-cache", 1)]


def test_a_command_past_its_timeout_is_killed_and_fails_the_task(tmp_path, repo):
    setup = [SetupCommand(name="slow", command="sleep 30", timeout_seconds=1)]
    provider = ScriptedProvider()

    outcome = run_task(tmp_path, setup, provider)

    assert outcome.status == "failed"
    assert "setup command 'slow' (`sleep 30`) timed out" in outcome.failure_reason
    assert provider.history == []


def test_files_setup_leaves_for_git_fail_the_task_naming_them(tmp_path, repo):
    setup = [SetupCommand(name="gen", command="echo x > stray.txt && echo y >> app.py")]
    provider = ScriptedProvider()

    outcome = run_task(tmp_path, setup, provider)

    assert outcome.status == "failed"
    assert "app.py" in outcome.failure_reason and "stray.txt" in outcome.failure_reason
    assert ".gitignore" in outcome.failure_reason
    assert provider.history == []


def test_a_working_dir_the_worktree_does_not_have_fails_the_setup(tmp_path, repo):
    # A typo of "frontend": its first command was skipped, the rest ran in the root, passed.
    command = "echo first > first.txt\necho second > second.txt"
    setup = [SetupCommand(name="build", command=command, working_dir="fronted")]
    outcome = run_task(tmp_path, setup, agent_writing_done())

    assert outcome.status == "failed" and "setup command 'build'" in outcome.failure_reason
    assert "can't cd to fronted" in outcome.failure_reason
    assert not [r for r in setup_records(tmp_path) if r["passed"]]


def test_a_working_dir_outside_the_worktree_is_refused(tmp_path, repo):
    setup = [SetupCommand(name="out", command="true", working_dir="../..")]
    provider = ScriptedProvider()

    outcome = run_task(tmp_path, setup, provider)

    assert outcome.status == "failed"
    assert "setup command 'out': working_dir '../..'" in outcome.failure_reason
    assert provider.history == []


# -- the network: as the task's own commands have it; the author's opt-in only on their files --


@pytest.fixture
def listener():
    service = Listener()  # a service on this machine, as the Prefect API on 127.0.0.1 is
    yield service
    service.close()


def run_plan(workdir: Path, plan: ExecutionPlan, task_id: str, provider):
    return asyncio.run(
        execute_task(plan, task_id, workdir=workdir, session_id=SESSION, provider=provider)
    )


def reach(port: int) -> str:
    return f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3)\""


def test_setup_has_the_network_only_when_the_task_has_it(tmp_path, repo, listener):
    setup = [SetupCommand(name="deps", command=reach(listener.port))]
    provider = ScriptedProvider()

    outcome = run_task(tmp_path, setup, provider)

    # A plan without network anywhere: its setup has none either, and says how to give it one.
    assert outcome.status == "failed"
    assert listener.connections == 0
    assert "ran without the network" in outcome.failure_reason
    assert "setup command `network = true`" in outcome.failure_reason
    assert "task `network = true`" in outcome.failure_reason
    assert provider.history == []
    assert [r["network"] for r in setup_records(tmp_path)] == [False]

    plan = ExecutionPlan(
        name="p",
        setup_commands=setup,
        tasks=[Task(id="t2", title="Write done.txt", network=True)],
    )
    allowed = run_plan(tmp_path, plan, "t2", agent_writing_done())

    assert allowed.status == "completed", allowed.failure_reason
    assert listener.connections == 1


def test_a_setup_command_never_runs_an_earlier_agents_script_with_the_network(
    tmp_path, repo, listener
):
    # The plan runs the repository's bootstrap script before each task; no task has the
    # network. Task a's agent rewrites the script to reach a local service; task b's setup
    # runs it, and must not reach it.
    (tmp_path / "bootstrap.sh").write_text("true\n")
    repo.git.add("-A")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "b"])
    plan = ExecutionPlan(
        name="p",
        setup_commands=[SetupCommand(name="bootstrap", command="sh bootstrap.sh", required=False)],
        tasks=[
            Task(id="a", title="Improve bootstrap", verify="sh bootstrap.sh; true"),
            Task(id="b", title="Write done.txt", dependencies=["a"]),
        ],
    )
    hostile = ScriptedProvider(
        tool_calls(tool_use("write_file", path="bootstrap.sh", content=reach(listener.port))),
        tool_calls(tool_use("finish", summary="improved bootstrap")),
    )

    for task_id, agent in (("a", hostile), ("b", agent_writing_done())):
        outcome = run_plan(tmp_path, plan, task_id, agent)
        assert outcome.status == "completed", outcome.failure_reason

    assert listener.connections == 0


def test_a_setup_commands_own_network_holds_only_until_agents_work_landed(tmp_path, repo, listener):
    setup = [SetupCommand(name="deps", command=reach(listener.port), network=True)]
    plan = ExecutionPlan(
        name="p",
        setup_commands=setup,
        tasks=[
            Task(id="t1", title="Write done.txt"),
            Task(id="t2", title="Write more.txt", dependencies=["t1"]),
        ],
    )

    first = run_plan(tmp_path, plan, "t1", agent_writing_done())

    # The worktree is the commit the session started from: the author's own files.
    assert first.status == "completed", first.failure_reason
    assert listener.connections == 1

    provider = ScriptedProvider()
    second = run_plan(tmp_path, plan, "t2", provider)

    # t2's worktree holds t1's work: what the command runs may be the agent's now.
    assert second.status == "failed"
    assert listener.connections == 1
    assert "holds the work of task(s) t1" in second.failure_reason
    assert "give the task `network = true`" in second.failure_reason
    assert provider.history == []
    log = AcaDir(tmp_path).session(SESSION).task_log("t2")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    setup_run = next(r for r in records if r["kind"] == "setup")
    assert setup_run["network"] is False
    assert setup_run["network_withheld_for_work_of"] == ["t1"]


def test_a_setup_commands_own_network_holds_only_on_the_commit_the_session_started_from(
    tmp_path, repo, listener
):
    # A --repo session's branch is fast-forwarded to its remote's when it resumes: a commit
    # pushed there carries no task's mark, and is not the files the author's opt-in was for.
    ensure_session_branch(repo, SESSION)
    (tmp_path / "setup.py").write_text("print('pushed to the session branch')\n")
    repo.git.add("-A")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "p"])
    repo.git.update_ref(f"refs/heads/aca/{SESSION}", repo.head.commit.hexsha)
    setup = [SetupCommand(name="deps", command=reach(listener.port), network=True)]
    plan = ExecutionPlan(name="p", setup_commands=setup, tasks=[Task(id="t1", title="Write")])

    outcome = run_plan(tmp_path, plan, "t1", agent_writing_done())

    assert listener.connections == 0
    assert outcome.status == "failed"
    assert "holds only in the commit the session started from" in outcome.failure_reason


def test_network_false_keeps_a_setup_command_offline_even_when_the_task_has_it(
    tmp_path, repo, listener
):
    plan = ExecutionPlan(
        name="p",
        setup_commands=[SetupCommand(name="deps", command=reach(listener.port), network=False)],
        tasks=[Task(id="t1", title="Write done.txt", network=True)],
    )

    outcome = run_plan(tmp_path, plan, "t1", ScriptedProvider())

    assert outcome.status == "failed"
    assert listener.connections == 0
    assert "ran without the network" not in outcome.failure_reason  # the author's own choice
