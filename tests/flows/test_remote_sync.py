"""Runs with ``repo``: the remote gets each landed task, a failed push is retried and
reported, and a session resumes anywhere from what the remote holds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import git
import pytest

from aca_flows.flows import remote_sync, run_flow
from aca_flows.workspace.remote import working_area
from tests.fakes.coding_agent import coding_agent
from tests.fakes.git_repo import make_repo

TASKS = "- write a.txt {#a}\n- write b.txt {#b depends_on=a}\n"


@pytest.fixture
def remote(tmp_path) -> Path:
    """A bare repository with one commit on main: the remote a team pushes to."""
    source = make_repo(tmp_path / "source")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(bare)], check=True)
    return bare


@pytest.fixture(autouse=True)
def quick_push_retries(monkeypatch):
    monkeypatch.setattr(remote_sync, "PUSH_BACKOFF_SECONDS", 0.05)


def write_tasks(tmp_path: Path, text: str = TASKS) -> Path:
    path = tmp_path / "tasks.md"
    path.write_text(text)
    return path


def task_commits(repo: Path, ref: str) -> list[str]:
    log = git.Repo(repo).git.log("--reverse", "--format=%(trailers:key=Aca-Task,valueonly)", ref)
    return [line.strip() for line in log.splitlines() if line.strip()]


def remote_refs(bare: Path) -> dict[str, str]:
    out = git.Repo(bare).git.for_each_ref("--format=%(refname) %(objectname)")
    return dict(line.split(" ")[::-1][::-1] for line in out.splitlines()) if out else {}


def reject_pushes(bare: Path, times: int | None) -> Path:
    """A pre-receive hook that rejects the next ``times`` pushes (every push: ``None``)."""
    counter = bare / "rejections-left"
    counter.write_text("1000000" if times is None else str(times))
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f'left=$(cat "{counter}")\n'
        '[ "$left" -gt 0 ] || exit 0\n'
        f'echo $((left - 1)) > "{counter}"\n'
        'echo "push refused by policy" >&2\n'
        "exit 1\n"
    )
    hook.chmod(0o755)
    return counter


def test_each_landed_task_is_on_the_remote_with_the_sessions_record(
    tmp_path, remote, anthropic_fake
):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    outcome = run_flow(task_file=str(write_tasks(tmp_path)), repo=str(remote), model="m")
    summary = outcome.summary
    assert summary["status"] == "completed", outcome.error
    assert summary["remote"] == str(remote) and summary["unpushed"] is None
    branch = f"refs/heads/{summary['branch']}"
    assert task_commits(remote, branch) == ["a", "b"]
    # The working area is aca's own clone, under ~/.aca/repos; its origin is the remote.
    area = working_area(str(remote))
    assert area.is_relative_to(Path.home() / ".aca" / "repos")
    assert git.Repo(area).git.rev_parse(branch) == git.Repo(remote).git.rev_parse(branch)
    # The record on the remote holds the journal: both tasks completed.
    record = f"refs/aca/sessions/{summary['session_id']}"
    journal = git.Repo(remote).git.show(f"{record}:meta/events.jsonl")
    completed = [e["task_id"] for e in map(json.loads, journal.splitlines())
                 if e["type"] == "task_completed"]  # fmt: skip
    assert completed == ["a", "b"]
    assert "session.lock" not in git.Repo(remote).git.ls_tree("-r", "--name-only", record)
