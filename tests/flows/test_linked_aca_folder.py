"""A repository cannot make aca write through a symbolic link: not by committing ``.aca`` as
one, nor by a session record holding one.

aca keeps its sessions and the tasks' worktrees in ``<checkout>/.aca``. A repository cloned for
``--repo`` (or a user's checkout of one) can commit ``.aca`` as a link to any folder, a home
among them: the worktrees there would be outside what the sandboxes keep hidden, and the
session records outside the checkout. Whoever can push to the remote can also replace a
session's record, which ``aca resume --repo`` restores. Both are refused before anything is
written.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from aca_flows.cli import main
from aca_flows.flows import run_flow
from aca_flows.workspace.remote import working_area
from tests.fakes.coding_agent import coding_agent
from tests.fakes.git_repo import make_repo


def commit_link(repo: Path, name: str, target: Path) -> None:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, repo / name)
    git = ["git", "-C", str(repo), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run([*git, "add", "-f", name], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "aca's folder, elsewhere"], check=True)


def test_a_cloned_repository_whose_aca_folder_is_a_link_is_refused(
    tmp_path, anthropic_fake, capsys
):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    target = tmp_path / "elsewhere"
    target.mkdir()
    source = make_repo(tmp_path / "source")
    commit_link(source, ".aca", target)
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(remote)], check=True)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")

    exit_code = main(["run", str(tasks), "--repo", str(remote), "--model", "m"])

    assert list(target.iterdir()) == [] and anthropic_fake.model_calls == []
    assert exit_code == 2
    # Refused before it is checked out: the repository tracks .aca itself.
    assert f"{remote} (main) tracks files in .aca/, aca's own folder" in capsys.readouterr().err


def test_a_checkout_whose_sessions_folder_is_a_link_is_refused(tmp_path, anthropic_fake):
    target = tmp_path / "elsewhere"
    target.mkdir()
    repo = make_repo(tmp_path / "repo")
    commit_link(repo, ".aca/sessions", target)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")

    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="m")

    assert outcome.state_name == "Failed"
    assert ".aca/sessions is a symbolic link" in str(outcome.error)
    assert list(target.iterdir()) == [] and anthropic_fake.model_calls == []


def test_a_session_record_holding_a_link_is_not_restored(tmp_path, capsys):
    # Whoever can push to the remote replaces the session's record: its journal a link to a
    # file of the user's, which aca would append the resumed session's events to.
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    source = make_repo(tmp_path / "source")
    session_id = "20261204-120000-abc123"
    record = tmp_path / "record"
    (record / "meta").mkdir(parents=True)
    os.symlink(victim, record / "meta" / "events.jsonl")
    (record / "session.json").write_text("{}\n")
    git = ["git", "-C", str(source), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    env = {**os.environ, "GIT_WORK_TREE": str(record), "GIT_INDEX_FILE": str(tmp_path / "i")}
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    tree = subprocess.run([*git, "write-tree"], env=env, capture_output=True, text=True)
    commit = subprocess.run([*git, "commit-tree", "-m", "record", tree.stdout.strip()],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    subprocess.run([*git, "update-ref", f"refs/aca/sessions/{session_id}", commit], check=True)
    subprocess.run([*git, "branch", f"aca/{session_id}"], check=True)
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--mirror", str(source), str(remote)], check=True)

    assert main(["resume", session_id, "--repo", str(remote)]) == 2

    assert "holds what aca never writes there, a symbolic link" in capsys.readouterr().err
    area = working_area(str(remote))
    assert [p for p in area.joinpath(".aca").rglob("*") if p.is_symlink()] == []
    assert victim.read_text() == "the user's own file\n"


def test_a_dry_run_refuses_a_linked_aca_folder_as_the_run_does(tmp_path, capsys):
    # It said "Dry run: 1 task", --dump-plan wrote the plan, and the run then refused it.
    target = tmp_path / "elsewhere"
    target.mkdir()
    repo = make_repo(tmp_path / "repo")
    os.symlink(target, repo / ".aca")
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    dumped = tmp_path / "plan.json"

    code = main(["run", str(tasks), "-w", str(repo), "-n", "--dump-plan", str(dumped)])

    assert code == 2 and not dumped.exists()
    assert f".aca is a symbolic link (to {target}), not a folder" in capsys.readouterr().err


def test_a_checkout_committing_a_lock_file_as_a_link_is_refused(tmp_path, anthropic_fake, capsys):
    # aca created an empty file wherever it pointed (/etc/nologin, as root) and ran on, exit 0.
    target = tmp_path / "elsewhere" / "created"
    target.parent.mkdir()
    repo = make_repo(tmp_path / "repo")
    commit_link(repo, ".aca/worktrees/.admin.lock", target)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")

    code = main(["run", str(tasks), "-w", str(repo), "--model", "m"])

    assert code == 2 and not target.exists() and anthropic_fake.model_calls == []
    err = capsys.readouterr().err
    assert ".aca/worktrees/.admin.lock is a symbolic link" in err and "Traceback" not in err


def commit_file(repo: Path, name: str, text: str) -> None:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run([*git, "add", "-f", name], check=True)
    subprocess.run([*git, "commit", "-q", "-m", f"{name}, committed"], check=True)


def test_a_checkout_tracking_files_in_aca_is_refused_but_its_settings(
    tmp_path, anthropic_fake, capsys
):
    # A checkout puts them over aca's own: a session's journal (a plan nobody approved), its
    # lock file as a link to anywhere.
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, ".aca/config.toml", "[agent]\nmax_turns = 20\n")  # its settings: fine
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    assert main(["run", str(tasks), "-w", str(repo), "--model", "m"]) == 0

    # In any case: a case-insensitive file system (macOS) checks .ACA/... out into .aca.
    commit_file(repo, ".ACA/sessions/20261201-000000-abcdef/meta/events.jsonl", "{}\n")
    code = main(["run", str(tasks), "-w", str(repo), "--model", "m"])

    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "tracks files in .aca/" in err and ".ACA/sessions/20261201-000000-abcdef" in err


@pytest.mark.parametrize("folder", [".aca", ".Aca"])
def test_a_remote_tracking_files_in_aca_is_refused_before_they_are_checked_out(
    tmp_path, anthropic_fake, capsys, folder
):
    # The working area's forced checkout put them over the session's own record, which the
    # seal was then never asked about: a forged plan and budget ran.
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    source = make_repo(tmp_path / "source")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(remote)], check=True)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    assert main(["run", str(tasks), "--repo", str(remote), "--model", "m"]) == 0
    area = working_area(str(remote))
    (record,) = (area / ".aca" / "sessions").iterdir()
    journal = (record / "meta" / "events.jsonl").read_text()

    forged = f"{folder}/sessions/{record.name}/meta/events.jsonl"
    subprocess.run(["git", "-C", str(source), "pull", "-q", str(remote), "main"], check=True)
    commit_file(source, forged, "{}\n")
    subprocess.run(["git", "-C", str(source), "push", "-q", str(remote), "main"], check=True)
    code = main(["resume", record.name, "--repo", str(remote)])

    err = capsys.readouterr().err
    assert code == 2 and "tracks files in .aca/" in err and forged in err
    assert (record / "meta" / "events.jsonl").read_text() == journal  # not put over it
