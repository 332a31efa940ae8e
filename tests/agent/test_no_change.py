"""Evidence of done work: a verified change, or a stated and verified "no change needed"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aca_flows.agent.no_change import parse_no_change, real_changes
from aca_flows.plan.models import Task
from aca_flows.providers.base import UNPARSED_ARGUMENTS
from aca_flows.session.layout import AcaDir
from aca_flows.workspace import TaskWorktree, completed_task_commits, session_branch_head
from tests.agent.test_execute import SESSION, execute, plan_of
from tests.fakes.scripted_provider import ScriptedProvider, final, tool_calls, tool_use
from tests.workspace.test_repository import make_user_repo


def test_only_a_final_marker_line_with_a_reason_counts():
    assert parse_no_change("Checked.\nNO CHANGE NEEDED: already greets the world") == (
        "already greets the world"
    )
    assert parse_no_change("NO CHANGE NEEDED: done already\n\n  ") == "done already"
    assert parse_no_change("NO CHANGE NEEDED: done\nbut then I changed my mind") is None
    assert parse_no_change("no change needed: done") is None
    assert parse_no_change("NO CHANGE NEEDED:   ") is None
    assert parse_no_change("I think NO CHANGE NEEDED: done") is None
    assert parse_no_change("") is None


def run_task(tmp_path: Path, provider, task: Task):
    return asyncio.run(execute(tmp_path, plan_of(task), task.id, provider))


def test_an_agent_that_stops_without_a_change_or_a_reason_fails_and_commits_nothing(tmp_path):
    repo = make_user_repo(tmp_path)
    head = repo.head.commit.hexsha
    provider = ScriptedProvider(
        tool_calls(tool_use("read_file", path="app.py")),
        tool_calls(tool_use("finish", summary="Looks fine to me.")),
    )

    outcome = run_task(tmp_path, provider, Task(id="t1", title="Greet", verify="true"))

    assert outcome.status == "failed" and outcome.outcome is None
    assert "without changing anything" in outcome.failure_reason
    assert "Looks fine to me." in outcome.failure_reason
    assert outcome.verify_passed is None  # verify never ran: there was nothing to verify
    assert session_branch_head(repo, SESSION) == head
    assert completed_task_commits(repo, SESSION) == {}


def test_a_text_only_refusal_is_no_evidence_either(tmp_path):
    repo = make_user_repo(tmp_path)
    # Reminded to call finish or report_no_change, it refuses again.
    provider = ScriptedProvider(final("I can't help with that."), final("I can't help with that."))

    outcome = run_task(tmp_path, provider, Task(id="t1", title="Greet"))

    assert outcome.status == "failed" and "I can't help with that." in outcome.failure_reason
    assert completed_task_commits(repo, SESSION) == {}


def test_test_caches_are_not_changes_unless_the_start_commit_holds_them(tmp_path):
    repo = make_user_repo(tmp_path)
    (tmp_path / "old.pyc").write_bytes(b"\x00bytecode")
    repo.git.add("-A")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@e", "commit", "-qm", "pyc"])
    # A cleanup of committed bytecode failed "without changing anything".
    provider = ScriptedProvider(
        tool_calls(tool_use("run_command", command="rm old.pyc")),
        tool_calls(tool_use("finish", summary="Removed the committed bytecode.")),
    )
    task = Task(id="t2", title="Remove committed bytecode", verify="test ! -e old.pyc")
    outcome = run_task(tmp_path, provider, task)

    assert outcome.status == "completed" and outcome.files_changed == ["old.pyc"]
    assert "old.pyc" not in repo.git.ls_tree("-r", "--name-only", f"aca/{SESSION}")
    worktree = TaskWorktree.create(repo, SESSION, "t1")
    paths = ["app.py", "__pycache__/app.cpython-311.pyc", "pkg/.pytest_cache/v/x", "a.pyc"]
    assert real_changes(worktree, paths) == ["app.py"]


def test_no_change_needed_with_a_passing_verify_completes_without_a_commit(tmp_path):
    repo = make_user_repo(tmp_path)
    head = repo.head.commit.hexsha
    provider = ScriptedProvider(
        tool_calls(tool_use("read_file", path="app.py")),
        # Checking leaves a bytecode cache behind, as running a project's tests does.
        tool_calls(tool_use("run_command", command="python3 -m py_compile app.py")),
        tool_calls(tool_use("report_no_change", reason="app.py already prints hello")),
    )
    task = Task(id="t1", title="Say hello", verify="grep -q hello app.py")

    outcome = run_task(tmp_path, provider, task)

    assert outcome.status == "completed" and outcome.outcome == "no_change"
    assert outcome.display_status == "completed, no change"
    assert outcome.no_change_reason == "app.py already prints hello"
    assert outcome.verify_passed is True and outcome.commit_sha is None
    assert outcome.files_changed == []
    assert session_branch_head(repo, SESSION) == head
    assert completed_task_commits(repo, SESSION) == {}
    log = AcaDir(tmp_path).session(SESSION).task_log("t1").read_text()
    assert '"kind":"no_change"' in log and '"kind":"merged"' not in log


def test_no_change_needed_with_a_failing_verify_fails(tmp_path):
    repo = make_user_repo(tmp_path)
    provider = ScriptedProvider(
        *[tool_calls(tool_use("report_no_change", reason="already done")) for _ in range(3)]
    )
    task = Task(id="t1", title="Say bye", verify="grep -q bye app.py")

    outcome = run_task(tmp_path, provider, task)

    assert outcome.status == "failed" and outcome.outcome is None
    assert outcome.verify_passed is False and "grep -q bye app.py" in outcome.failure_reason
    assert len(provider.history) == 3  # the verify output went back twice
    assert completed_task_commits(repo, SESSION) == {}


def test_no_change_needed_while_leaving_changes_behind_fails(tmp_path):
    repo = make_user_repo(tmp_path)
    provider = ScriptedProvider(
        tool_calls(
            tool_use("write_file", path="stray.txt", content="x\n"),
            tool_use("report_no_change", reason="nothing to do"),
        )
    )

    outcome = run_task(tmp_path, provider, Task(id="t1", title="T"))

    assert outcome.status == "failed"
    assert "said no change is needed (nothing to do)" in outcome.failure_reason
    assert "stray.txt" in outcome.failure_reason
    assert completed_task_commits(repo, SESSION) == {}


def test_a_change_after_a_verify_failure_replaces_an_earlier_no_change_claim(tmp_path):
    repo = make_user_repo(tmp_path)
    provider = ScriptedProvider(
        tool_calls(tool_use("report_no_change", reason="already done")),
        tool_calls(tool_use("write_file", path="app.py", content="print('bye')\n")),
        tool_calls(tool_use("finish", summary="Says bye now.")),
    )

    outcome = run_task(tmp_path, provider, Task(id="t1", title="Bye", verify="grep -q bye app.py"))

    assert outcome.status == "completed" and outcome.outcome == "changed"
    assert outcome.no_change_reason is None and outcome.attempts == 2
    assert repo.git.show(f"aca/{SESSION}:app.py") == "print('bye')"


def test_claude_code_states_no_change_on_its_last_line(tmp_path):
    repo = make_user_repo(tmp_path)
    provider = ScriptedProvider(
        final("I read app.py.\nNO CHANGE NEEDED: it already prints hello"), name="claude-code"
    )

    outcome = run_task(tmp_path, provider, Task(id="t1", title="Hello", verify="true"))

    assert outcome.display_status == "completed, no change"
    assert outcome.no_change_reason == "it already prints hello"
    assert completed_task_commits(repo, SESSION) == {}
    system = provider.history[0].system
    assert "NO CHANGE NEEDED: <the reason>" in system


def test_claude_code_stopping_with_a_summary_but_no_change_fails(tmp_path):
    repo = make_user_repo(tmp_path)
    provider = ScriptedProvider(final("Done! I updated app.py."), name="claude-code")

    outcome = run_task(tmp_path, provider, Task(id="t1", title="Hello"))

    assert outcome.status == "failed" and "Done! I updated app.py." in outcome.failure_reason
    assert completed_task_commits(repo, SESSION) == {}


def test_an_agent_that_wrote_only_ignored_files_is_told_why_nothing_counts(tmp_path):
    repo = make_user_repo(tmp_path)
    (tmp_path / ".gitignore").write_text("*.log\n")
    repo.git.add("-A")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "ign"])
    provider = ScriptedProvider(
        tool_calls(tool_use("write_file", path="out.log", content="the work\n")),
        tool_calls(tool_use("finish", summary="wrote out.log")),
    )
    outcome = asyncio.run(execute(tmp_path, plan_of(Task(id="t1", title="Log")), "t1", provider))

    assert outcome.status == "failed" and outcome.commit_sha is None
    assert "the agent stopped without changing anything" in outcome.failure_reason
    assert "It did write out.log, but git ignores those paths" in outcome.failure_reason


def test_an_agent_whose_writes_were_refused_is_told_so_not_only_that_it_changed_nothing(
    tmp_path,
):
    make_user_repo(tmp_path)
    provider = ScriptedProvider(
        tool_calls(tool_use("write_file", path="../outside.txt", content="x\n")),
        tool_calls(tool_use("write_file", path=".git/hooks/pre-commit", content="x\n")),
        tool_calls(tool_use("finish", summary="wrote them")),
    )
    outcome = asyncio.run(execute(tmp_path, plan_of(Task(id="t1", title="Out")), "t1", provider))

    assert outcome.status == "failed"
    assert "the agent stopped without changing anything" in outcome.failure_reason
    reason = outcome.failure_reason.split("aca refused its writes: ", 1)[1]
    assert reason.startswith("write_file ../outside.txt: ")
    assert "write_file .git/hooks/pre-commit: refused: '.git/hooks/pre-commit' is inside .git" in (
        reason
    )
    assert not reason.endswith("..")


def test_a_write_the_output_limit_cut_short_is_not_told_as_refused(tmp_path):
    make_user_repo(tmp_path)
    cut = tool_calls(tool_use("write_file", **{UNPARSED_ARGUMENTS: '{"path": "big.txt", "con'}))
    cut = cut.model_copy(update={"stop_reason": "max_tokens"})
    finish = tool_calls(tool_use("finish", summary="wrote big.txt"))
    provider = ScriptedProvider(cut, finish)
    outcome = asyncio.run(execute(tmp_path, plan_of(Task(id="t1", title="Big")), "t1", provider))

    assert outcome.status == "failed"
    assert "the agent stopped without changing anything" in outcome.failure_reason
    assert "refused" not in outcome.failure_reason and "write_file ?" not in outcome.failure_reason
