"""An agent rewrites its worktree's ``.git`` file to point at another repository (the user's
home as a dotfiles repository, here): no sandbox made later for that worktree shows it.

Later sandboxes are made for a check whose network setting differs from the task's (an
earlier task's check, ``sandbox_for_check``) and for the checks run again once the work is put
onto a moved head (``land_checked``). Their mounts come from what was recorded when the
worktree was made, never from the ``.git`` file (real git, real bubblewrap).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from aca_flows.agent.landing import sandbox_for_check
from aca_flows.plan.models import Task
from aca_flows.sandbox import Sandbox, check_sandbox
from aca_flows.session.layout import AcaDir
from aca_flows.settings import AcaConfig
from aca_flows.workspace import TaskWorktree
from tests.agent.test_execute import SESSION, barrier_then, execute, plan_of
from tests.fakes.git_repo import make_repo
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use
from tests.workspace.test_repository import make_user_repo

SECRET = "HOME-SECRET-OF-THE-USER"
CONFIG = AcaConfig()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """The user's home, a git repository (dotfiles) with a secret beside its .git."""
    check_sandbox(CONFIG.sandbox)  # never run these unsandboxed
    home = make_repo(tmp_path / "home")
    (home / "secret.txt").write_text(f"{SECRET}\n")
    monkeypatch.setenv("HOME", str(home))
    return home


def run(sandbox: Sandbox, command: str) -> str:
    done = asyncio.run(sandbox.run(command, timeout_seconds=30, output_limit_bytes=20_000))
    return done.output


def rewrite_git_file(home: Path) -> str:
    return f"echo 'gitdir: {home}/.git' > .git"


def peek(home: Path, repo: Path) -> str:
    return f"cat {home}/secret.txt; ls -A {home}; ls -A {repo}/.aca; echo peeked"


@pytest.fixture
def worktree(tmp_path, home) -> TaskWorktree:
    repo = make_user_repo(tmp_path / "repo")
    repo.git.branch(f"aca/{SESSION}")
    sessions = tmp_path / "repo" / ".aca" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "journal").write_text("private\n")
    return TaskWorktree.create(repo, SESSION, "t1")


def test_a_check_with_another_network_setting_does_not_follow_a_rewritten_git_file(worktree, home):
    # The task's sandbox, made before its agent ran (network off), as execute_task makes it.
    made = Sandbox.for_worktree(worktree.path, CONFIG.sandbox, network=False)
    run(made, rewrite_git_file(home))
    assert (worktree.path / ".git").read_text().strip() == f"gitdir: {home}/.git"

    check = sandbox_for_check(worktree, CONFIG, True, made)  # an earlier task's, network on
    output = run(check, peek(home, worktree.repo_root))

    assert check.network is True
    assert SECRET not in output and "private" not in output, output
    assert "secret.txt: No such file" in output and output.endswith("worktrees\npeeked\n")


def test_checks_run_again_on_a_moved_head_do_not_follow_a_rewritten_git_file(worktree, home):
    made = Sandbox.for_worktree(worktree.path, CONFIG.sandbox)
    run(made, rewrite_git_file(home))

    # land_checked's sandbox for the checks on the new head: no sandbox made before is given.
    check = sandbox_for_check(worktree, CONFIG, None)
    output = run(check, f"{peek(home, worktree.repo_root)}; git -C {home} show HEAD:README.md")

    assert SECRET not in output and "private" not in output and "demo" not in output, output
    assert "secret.txt: No such file" in output


# -- the same, through whole task runs (the red-team's two cases) ------------------------------


def verify_outputs(workdir: Path, task_id: str) -> list[str]:
    text = AcaDir(workdir).session(SESSION).task_log(task_id).read_text()
    records = [json.loads(line) for line in text.splitlines()]
    return [r["output"] for r in records if r["kind"] == "verify"]


def test_an_earlier_tasks_check_with_network_does_not_see_the_home(tmp_path, home):
    # t1 landed check.sh with a check that needs the network; t2 (network off) rewrites
    # check.sh to show the home and points .git at it: t1's check runs on t2's work in a
    # sandbox of its own (network on), made after t2's agent ran.
    workdir = tmp_path / "repo"
    make_user_repo(workdir)
    one = Task(id="t1", title="One", verify="sh check.sh", network=True)
    two = Task(id="t2", title="Two", verify="true")
    plan = plan_of(one, two)
    first = ScriptedProvider(
        tool_calls(tool_use("write_file", path="check.sh", content="exit 0\n")),
        tool_calls(tool_use("finish", summary="a check")),
    )
    assert asyncio.run(execute(workdir, plan, "t1", first)).status == "completed"
    second = ScriptedProvider(
        tool_calls(tool_use("write_file", path="check.sh", content=peek(home, workdir) + "\n")),
        tool_calls(tool_use("run_command", command=rewrite_git_file(home))),
        tool_calls(tool_use("finish", summary="changed the check")),
    )
    outcome = asyncio.run(execute(workdir, plan, "t2", second))

    outputs = verify_outputs(workdir, "t2")
    assert outcome.status == "completed", outcome.failure_reason
    assert any("peeked" in output for output in outputs)  # t1's check ran on t2's work
    assert not any(SECRET in output or "private" in output for output in outputs), outputs


def test_checks_on_a_moved_head_do_not_see_the_home(tmp_path, home):
    # t1 and t2 edit one file far apart; t2 points .git at the home and finishes after t1
    # landed: its check runs again on the new head, in a sandbox made after its agent ran.
    workdir = tmp_path / "repo"
    repo = make_user_repo(workdir)
    lines = [f"line {i}\n" for i in range(1, 10)]
    (workdir / "notes.txt").write_text("".join(lines))
    repo.git.add("-A")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "notes"])
    one = Task(id="t1", title="One", verify="true")
    two = Task(id="t2", title="Two", verify="sh check.sh")

    async def scenario():
        barrier = asyncio.Barrier(2)
        t1_merged = asyncio.Event()

        async def finish_after_t1(request):
            await t1_merged.wait()
            return tool_calls(tool_use("finish", summary="two"))

        new_first = "".join(["new\n", *lines[1:]])
        last_changed = "".join([*lines[:8], "x\n"])
        first = ScriptedProvider(
            barrier_then(
                barrier, tool_calls(tool_use("write_file", path="notes.txt", content=new_first))
            ),
            tool_calls(tool_use("finish", summary="one")),
        )
        second = ScriptedProvider(
            barrier_then(
                barrier,
                tool_calls(tool_use("write_file", path="notes.txt", content=last_changed)),
            ),
            tool_calls(tool_use("write_file", path="check.sh", content=peek(home, workdir))),
            tool_calls(tool_use("run_command", command=rewrite_git_file(home))),
            finish_after_t1,
        )
        plan = plan_of(one, two)
        return await asyncio.gather(
            execute(workdir, plan, "t1", first, on_log=lambda r: r["kind"] == "merged"
                    and t1_merged.set()),
            execute(workdir, plan, "t2", second),
        )  # fmt: skip

    outcomes = asyncio.run(scenario())

    assert [o.status for o in outcomes] == ["completed", "completed"]
    log = AcaDir(workdir).session(SESSION).task_log("t2").read_text()
    assert '"caught_up"' in log  # the checks ran again on the moved head
    outputs = verify_outputs(workdir, "t2")
    # t2's check before and after catching up (t1's check, `true`, runs there too)
    assert len([output for output in outputs if "peeked" in output]) == 2
    assert not any(SECRET in output or "private" in output for output in outputs), outputs
