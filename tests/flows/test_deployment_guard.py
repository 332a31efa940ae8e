"""Deployment runs work only inside the worker's allowed workdirs.

Each run here is a real flow run of a deployment on the test server (created from the
deployment as a trigger or schedule would), executed in this process.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import git

from tests.fakes.coding_agent import coding_agent


def deployed_run(**parameters: Any):
    """Run ``aca-run`` as a flow run of a deployment, with ``parameters``; its final state."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow_async

    from aca_flows.flows.aca_run import aca_run

    async def main():
        async with get_client() as client:
            flow_id = await client.create_flow(aca_run)
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name=f"guard-{uuid.uuid4().hex[:8]}"
            )
            flow_run = await client.create_flow_run_from_deployment(
                deployment_id, parameters=parameters
            )
        return await run_flow_async(
            aca_run, flow_run=flow_run, parameters=parameters, return_type="state"
        )

    return asyncio.run(main())


def untouched(repo: Path) -> bool:
    """No session, no branch, no worktree: nothing was started in ``repo``."""
    return not (repo / ".aca").exists() and [h.name for h in git.Repo(repo).heads] == ["main"]


def write_tasks(folder: Path) -> Path:
    tasks = folder / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    return tasks


def test_a_workdir_outside_the_allow_list_starts_nothing(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(tmp_path / "checkouts"))
    tasks = write_tasks(tmp_path)
    state = deployed_run(workdir=str(repo), task_file=str(tasks))
    assert state.is_failed()
    assert f"workdir {repo} is not inside the worker's allowed workdirs" in state.message
    assert "ACA_DEPLOYMENTS__ALLOWED_WORKDIRS" in state.message
    assert untouched(repo)
    assert anthropic_fake.anthropic.requests == []


def test_a_workdir_inside_the_allow_list_runs(tmp_path, repo, anthropic_fake, monkeypatch):
    for _ in range(5):
        anthropic_fake.anthropic.enqueue(coding_agent)
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", f"/nowhere,{tmp_path}")
    tasks = write_tasks(tmp_path)
    state = deployed_run(workdir=str(repo), task_file=str(tasks), model="claude-test")
    assert state.is_completed(), state.message
    assert any(h.name.startswith("aca/") for h in git.Repo(repo).heads)


def test_a_task_file_from_outside_is_refused(tmp_path, repo, anthropic_fake, monkeypatch):
    # The repository is allowed, but the task file (its commands) comes from anywhere.
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(repo))
    tasks = write_tasks(tmp_path)
    state = deployed_run(workdir=str(repo), task_file=str(tasks))
    assert state.is_failed()
    assert f"task_file {tasks} is outside the allowed workdirs" in state.message
    assert untouched(repo)


def test_without_an_allow_list_every_deployment_run_is_refused(tmp_path, repo, anthropic_fake):
    # A repository cannot allow itself: its own config is chosen by whoever sends the run there.
    (repo / "aca.toml").write_text(f'[deployments]\nallowed_workdirs = ["{repo}"]\n')
    tasks = write_tasks(repo)
    state = deployed_run(workdir=str(repo), task_file=str(tasks))
    assert state.is_failed()
    assert "deployment runs are refused until the worker lists the folders" in state.message
    assert not (repo / ".aca").exists()
    assert anthropic_fake.anthropic.requests == []


def test_relative_paths_resolve_against_the_deployment_code_folder(tmp_path, monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal

    code, checkouts = tmp_path / "clone", tmp_path / "checkouts"
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(checkouts))
    ok = {"workdir": str(checkouts / "service"), "task_file": "tasks/nightly-fix-tests.md"}
    assert deployment_refusal(ok, code) is None
    # ".." cannot climb out of the code folder, nor "." stand for the clone itself.
    climbing = dict(ok, task_file="../elsewhere/tasks.md")
    assert "task_file" in deployment_refusal(climbing, code)
    assert "workdir" in deployment_refusal(dict(ok, workdir="."), code)


def test_a_repo_run_needs_the_repository_allowed_and_works_in_acas_own_area(tmp_path, monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal
    from aca_flows.workspace.remote import working_area

    checkouts = tmp_path / "checkouts"
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(checkouts))
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_REPOS", "https://github.com/octo/")
    url = "https://github.com/octo/service.git"
    # The clone goes to aca's working area (~/.aca/repos/...), which is not in the list.
    ok = {"repo": url, "workdir": str(working_area(url)), "task_file": "nightly-fix-tests.md"}
    assert deployment_refusal(ok) is None
    # A local repository inside an allowed folder may be worked on too.
    local = str(checkouts / "service.git")
    assert deployment_refusal(dict(ok, repo=local, workdir=str(working_area(local)))) is None
    # Another host, another owner, or a local path elsewhere is refused, naming the fix.
    for other in ("https://github.com/mallory/service.git", "/srv/private.git"):
        refusal = deployment_refusal(dict(ok, repo=other, workdir=str(working_area(other))))
        assert "not among the worker's allowed repositories" in refusal
        assert "ACA_DEPLOYMENTS__ALLOWED_REPOS" in refusal
    # The clone cannot be sent to an arbitrary folder of the worker.
    assert "workdir /etc" in deployment_refusal(dict(ok, workdir="/etc"))


def test_a_run_naming_no_repository_is_refused_with_what_to_give(tmp_path, monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal

    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(tmp_path))
    refusal = deployment_refusal({"task_file": "nightly-fix-tests.md"})
    assert refusal.startswith("no repository named") and "repo" in refusal
