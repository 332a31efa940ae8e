"""aca's own git never runs what an agent planted: hooks, fsmonitor, a rewritten .git file."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.settings import AcaConfig, SandboxSection
from aca_flows.workspace import TaskWorktree, open_repository
from aca_flows.workspace.hardened_git import AcaRepo
from tests.fakes.git_repo import make_repo
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use
from tests.workspace.test_repository import make_user_repo

HOOKS = ("pre-commit", "post-commit", "post-checkout", "reference-transaction", "post-merge")


def plant(script_dir: Path, marker: Path, names=HOOKS) -> Path:
    """Executable scripts that leave ``marker`` behind when anything runs them."""
    script_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        script = script_dir / name
        script.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script_dir / names[0]


def test_planted_hooks_and_fsmonitor_in_the_repository_never_run(tmp_path):
    repo = make_user_repo(tmp_path / "repo")
    marker = tmp_path / "ran"
    plant(Path(repo.git_dir) / "hooks", marker)
    monitor = plant(tmp_path / "bin", marker, names=("fsmonitor",))
    repo.git.config("core.fsmonitor", str(monitor))
    # Sandbox off: the agent itself could have written these; aca's git must still ignore them.
    config = AcaConfig(sandbox=SandboxSection(mode="off"))
    provider = ScriptedProvider(
        tool_calls(tool_use("write_file", path="new.txt", content="x\n")),
        tool_calls(tool_use("finish", summary="done")),
    )
    plan = ExecutionPlan(name="p", tasks=[Task(id="t1", title="T")])

    outcome = asyncio.run(
        execute_task(plan, "t1", workdir=tmp_path / "repo", session_id="s1", provider=provider,
                     config=config)
    )  # fmt: skip

    assert outcome.status == "completed", outcome.failure_reason
    assert not marker.exists(), marker.read_text()


def test_a_rewritten_worktree_git_file_is_ignored(tmp_path):
    repo = open_repository(make_user_repo(tmp_path / "repo").working_dir)
    repo.git.update_ref("refs/heads/aca/s1", "HEAD")
    worktree = TaskWorktree.create(repo, "s1", "t1")
    marker = tmp_path / "ran"
    # The agent replaces .git by a repository of its own, hooks and fsmonitor included.
    fake = AcaRepo.init(tmp_path / "fake")
    plant(Path(fake.git_dir) / "hooks", marker)
    fake.git.config("core.fsmonitor", str(plant(tmp_path / "bin", marker, names=("fsmonitor",))))
    (worktree.path / ".git").write_text(f"gitdir: {fake.git_dir}\n")
    (worktree.path / "new.txt").write_text("x\n")

    worktree.git.add("-A")
    status = worktree.git.status("--porcelain")

    assert status == "A  new.txt"  # the real index of the task's worktree
    assert not marker.exists()
    worktree.remove()


def _slow_git_under_a_ctrl_c(repo, how: str) -> subprocess.CompletedProcess:
    """A child aca (its own process group) runs a git command that takes 1.5 s, ``how``:
    "in a worker thread" or "in the main thread"; a Ctrl-C reaches its group after 0.5 s."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, threading
        from aca_flows.workspace.hardened_git import HardenedGit

        signal.signal(signal.SIGINT, lambda *_: print("aca got SIGINT", flush=True))
        threading.Timer(0.5, os.killpg, (os.getpgid(0), signal.SIGINT)).start()
        slow = ["git", "-c", "alias.slow=!sleep 1.5; touch ran-to-the-end; echo landed", "slow"]
        git = HardenedGit({str(repo)!r})
        if {how!r} == "in a worker thread":  # as a run's landings run
            worker = threading.Thread(target=lambda: print(git.execute(slow), flush=True))
            worker.start()
            worker.join()
        else:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                git.execute(slow)
            except KeyboardInterrupt:
                print("aca stopped", flush=True)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=30, start_new_session=True,
    )  # fmt: skip


def test_a_ctrl_c_to_acas_process_group_does_not_kill_a_landings_git(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group. aca's git commands were in
    it: one killed while a finished task landed lost the work, or left the task recorded
    pending with its commit on the branch. aca handles the signal; its git runs on."""
    repo = make_repo(tmp_path / "repo")
    done = _slow_git_under_a_ctrl_c(repo, "in a worker thread")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["aca", "got", "SIGINT", "landed"]


def test_a_ctrl_c_that_stops_aca_stops_its_git_too(tmp_path):
    """In the main thread (a --repo fetch before the run) a Ctrl-C stops aca: its git must
    not run on, orphaned, holding the repository's locks."""
    repo = make_repo(tmp_path / "repo")
    done = _slow_git_under_a_ctrl_c(repo, "in the main thread")
    assert done.stdout.split() == ["aca", "stopped"], done.stderr
    time.sleep(2)  # past the command's end, had it gone on
    assert not (repo / "ran-to-the-end").exists()


def test_a_ctrl_c_as_a_landings_git_starts_does_not_kill_it(tmp_path):
    """A child is in aca's group for a moment before it makes its session, its handlers
    already reset: a Ctrl-C then killed the git of a finished task's landing (its work paid
    again on resume). Under a stream of Ctrl-Cs, no git that worker threads start dies."""
    script = textwrap.dedent(
        """
        import os, signal, threading, time
        import git
        from aca_flows.workspace.hardened_git import HardenedGit

        signal.signal(signal.SIGINT, lambda *_: None)  # aca's handler: it decides what stops
        died, started = [], threading.Event()

        def land():
            started.set()
            for _ in range(150):
                try:
                    HardenedGit(".").execute(["git", "--version"])
                except git.GitCommandError as error:
                    died.append(error.status)

        workers = [threading.Thread(target=land) for _ in range(4)]
        for worker in workers:
            worker.start()
        started.wait()
        while any(worker.is_alive() for worker in workers):
            os.killpg(0, signal.SIGINT)
            time.sleep(0.0002)
        print("died", len(died))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path,
        capture_output=True, text=True, timeout=120, start_new_session=True,
    )  # fmt: skip
    assert done.stdout.split() == ["died", "0"], done.stdout + done.stderr
