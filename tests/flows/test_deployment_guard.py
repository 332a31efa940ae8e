"""Deployment runs work only inside the worker's allowed workdirs.

Each run here is a real flow run of a deployment on the test server (created from the
deployment as a trigger or schedule would), executed in this process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import git
import pytest

from tests.fakes.coding_agent import coding_agent
from tests.fakes.deployment_runs import deployment_run, run_as_a_worker


def deployed_run(**parameters: Any):
    """Run ``aca-run`` as a flow run of a deployment, with ``parameters``; its final state."""

    async def main():
        flow_run = await deployment_run(parameters)
        return await run_as_a_worker(flow_run.id, parameters)

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


DOT_SEGMENT_URLS = [
    "https://github.com/your-org/../evil/x.git",
    "https://github.com/your-org/./x.git",
    "https://github.com/your-org/%2e%2e/evil/x.git",
    "https://github.com/your-org/%2E./evil/x.git",
    "https://github.com/your-org/%252e%252e/evil/x.git",  # decoded twice by a proxy
    "https://github.com/your-org/x%2f..%2f..%2fevil/x.git",
    "https://github.com/your-org/x\\..\\..\\evil\\x.git",
    "ssh://git@github.com/your-org/../evil/x.git",
    "git@github.com:your-org/../evil/x.git",
    "git@github.com:your-org/%2e%2e/evil/x.git",
    "file:///srv/allowed/../private.git",
]


@pytest.mark.parametrize("url", DOT_SEGMENT_URLS)
def test_a_repo_url_with_dot_segments_is_refused_whatever_its_form(url, monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal
    from aca_flows.workspace.remote import working_area

    # Each would pass a raw text match with its prefix, then reach another repository.
    monkeypatch.setenv(
        "ACA_DEPLOYMENTS__ALLOWED_REPOS",
        "https://github.com/your-org/,ssh://git@github.com/your-org/,"
        "git@github.com:your-org/,file:///srv/allowed/",
    )
    refusal = deployment_refusal({"repo": url, "workdir": str(working_area(url))})
    assert refusal and "has a '.' or '..' segment in its path" in refusal
    assert "nothing was started" in refusal


def test_dots_inside_a_repository_name_are_no_dot_segments(monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal
    from aca_flows.workspace.remote import working_area

    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_REPOS", "https://github.com/your-org/")
    for url in (
        "https://github.com/your-org/my.service.git",
        "https://github.com/your-org/.github.git",
        "https://github.com/your-org/x..y.git",
    ):
        assert deployment_refusal({"repo": url, "workdir": str(working_area(url))}) is None


def test_a_local_repository_path_is_resolved_before_the_check(tmp_path, monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal
    from aca_flows.workspace.remote import working_area

    allowed = tmp_path / "allowed"
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(allowed))
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_REPOS", f"{allowed}/")

    def refusal(path: str) -> str | None:
        return deployment_refusal({"repo": path, "workdir": str(working_area(path))})

    # A path is the worker's own to resolve, as workdir and task_file are: no ambiguity.
    assert refusal(f"{allowed}/team/../service.git") is None
    climbing = refusal(f"{allowed}/../private.git")
    assert f"repo {tmp_path / 'private.git'} is not among the worker's allowed" in climbing


def test_an_allowed_prefix_without_a_trailing_slash_ends_at_a_path_boundary(monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal
    from aca_flows.workspace.remote import working_area

    monkeypatch.setenv(
        "ACA_DEPLOYMENTS__ALLOWED_REPOS",
        "https://github.com/your-org,git@github.com:your-org,https://git.example.com,"
        "https://github.com/other/one",
    )

    def refusal(url: str) -> str | None:
        return deployment_refusal({"repo": url, "workdir": str(working_area(url))})

    for allowed in (
        "https://github.com/your-org/service.git",
        "git@github.com:your-org/service.git",
        "https://git.example.com/team/service.git",
        "https://github.com/other/one",
        "https://github.com/other/one.git",
    ):
        assert refusal(allowed) is None, allowed
    for other in (
        "https://github.com/your-org-evil/service.git",
        "git@github.com:your-org-evil/service.git",
        "https://git.example.com.evil.net/team/service.git",
        "https://git.example.com@evil.net/team/service.git",
        "https://github.com/other/one-more.git",
    ):
        assert "not among the worker's allowed repositories" in refusal(other), other


def test_a_deployment_run_cannot_climb_out_of_an_allowed_file_url(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    # The walkthrough's run: file://<allowed>/../<repo> cloned and pushed outside the list.
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_REPOS", f"file://{allowed}/")
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(allowed))
    tasks = write_tasks(allowed)
    climbing = f"file://{allowed}/../{repo.relative_to(tmp_path)}"
    state = deployed_run(repo=climbing, task_file=str(tasks), provider="anthropic")
    assert state.is_failed()
    assert "has a '.' or '..' segment in its path" in state.message
    assert untouched(repo)
    assert anthropic_fake.anthropic.requests == []


def test_a_malformed_repo_url_is_refused_not_a_crash(monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal

    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_REPOS", "https://github.com/your-org/")
    refusal = deployment_refusal({"repo": "https://[github.com/your-org/x.git"})
    assert refusal.startswith("repo is not a URL git can use")


CREDENTIALS = ("s3cr3t-token-value", "us3r-name", "pa55-word-value")


def test_credentials_in_a_repo_url_are_left_out_of_the_comparison_and_of_the_message(
    monkeypatch,
):
    from aca_flows.flows.deployment_guard import deployment_refusal
    from aca_flows.workspace.remote import working_area

    monkeypatch.setenv(
        "ACA_DEPLOYMENTS__ALLOWED_REPOS",
        "https://github.com/your-org/,https://old-token-value@git.example.com/team/,"
        "ssh://git@github.com/your-org/",
    )

    def refusal(url: str) -> str | None:
        return deployment_refusal({"repo": url, "workdir": str(working_area(url))})

    # The token or user:password git sends choose no repository: the URL is the org's.
    for allowed in (
        "https://s3cr3t-token-value@github.com/your-org/x.git",
        "https://us3r-name:pa55-word-value@github.com/your-org/x.git",
        "https://git.example.com/team/service.git",  # the prefix's own token left out too
        "https://s3cr3t-token-value@git.example.com/team/service.git",
        "ssh://git:pa55-word-value@github.com/your-org/x.git",
    ):
        assert refusal(allowed) is None, allowed
    # Another host, port, scheme or ssh user is still another repository, and said so
    # without the credentials.
    for other in (
        "https://s3cr3t-token-value@github.com.evil.net/your-org/x.git",
        "https://us3r-name:pa55-word-value@evil.net/your-org/x.git",
        "https://us3r-name:pa55-word-value@github.com:8443/your-org/x.git",
        "http://s3cr3t-token-value@github.com/your-org/x.git",
        "ssh://us3r-name:pa55-word-value@github.com/your-org/x.git",
        "https://github.com@evil.net/your-org/x.git",
    ):
        message = refusal(other)
        assert "not among the worker's allowed repositories" in message, other
        assert not any(secret in message for secret in CREDENTIALS), message
    # Where git and the guard could disagree on the host, or the URL does not parse, the
    # refusal says so, without the credentials either.
    for malformed in (
        "https://s3cr3t-token-value@evil.net@github.com/your-org/x.git",
        "https://s3cr3t-token-value\uff03@github.com/your-org/x.git",
    ):
        message = deployment_refusal({"repo": malformed})
        assert message.startswith("repo is not a URL git can use"), malformed
        assert not any(secret in message for secret in CREDENTIALS), message


def test_a_refused_run_with_a_token_in_its_url_shows_it_nowhere(
    tmp_path, repo, anthropic_fake, monkeypatch, caplog, capfd
):
    allowed = tmp_path / "allowed"
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_REPOS", "https://github.com/your-org/")
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(allowed))
    tasks = write_tasks(tmp_path)
    for url, refusal in (
        (
            "https://s3cr3t-token-value@evil.example.net/your-org/x.git",
            "repo https://evil.example.net/your-org/x.git is not among",
        ),
        # One the URL parser refuses, quoting its host part: refused, not a traceback.
        (
            "https://s3cr3t-token-value\uff03@github.com/your-org/x.git",
            "repo is not a URL git can use",
        ),
    ):
        state = deployed_run(repo=url, task_file=str(tasks), provider="anthropic")
        assert state.is_failed()
        assert refusal in state.message
        out, err = capfd.readouterr()
        for shown in (state.message, caplog.text, out, err):
            assert "s3cr3t-token-value" not in shown
    assert anthropic_fake.anthropic.requests == []


def test_a_file_url_is_resolved_through_symlinks_before_the_check(tmp_path, monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal
    from aca_flows.workspace.remote import working_area

    allowed, private = tmp_path / "allowed", tmp_path / "private.git"
    (allowed / "service.git").mkdir(parents=True)
    private.mkdir()
    (allowed / "escape.git").symlink_to(private)
    (allowed / "alias.git").symlink_to(allowed / "service.git")
    (tmp_path / "via").symlink_to(allowed)
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(allowed))
    monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_REPOS", f"file://{allowed}/,{allowed}/")

    def refusal(repo: str) -> str | None:
        return deployment_refusal({"repo": repo, "workdir": str(working_area(repo))})

    # A symlink inside the allowed folder that leads out is refused, as a URL as as a path.
    for escaping in (f"file://{allowed}/escape.git", f"file://{allowed}/escape%2egit"):
        message = refusal(escaping)
        assert f"(which reaches {private})" in message, escaping
        assert "is not among the worker's allowed repositories" in message
    assert "is not among" in refusal(f"{allowed}/escape.git")
    # One that resolves inside stays allowed; so does the folder reached through a symlink.
    for inside in (
        f"file://{allowed}/alias.git",
        f"file://{allowed}/service.git",
        f"file://{tmp_path}/via/service.git",
        f"{allowed}/alias.git",
    ):
        assert refusal(inside) is None, inside
    # The '..' of a file:// URL is still refused, not resolved.
    assert "'..' segment" in refusal(f"file://{allowed}/service.git/../../private.git")


def test_an_allowed_folder_reached_through_a_symlink_is_compared_resolved(tmp_path, monkeypatch):
    from aca_flows.flows.deployment_guard import deployment_refusal
    from aca_flows.workspace.remote import working_area

    real = tmp_path / "real"
    (real / "service.git").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    # The worker listed the folder by a path that is a symlink (/tmp is one on macOS).
    monkeypatch.setenv(
        "ACA_DEPLOYMENTS__ALLOWED_REPOS", f"file://{tmp_path}/link/,{tmp_path}/link/"
    )
    for repo in (f"file://{tmp_path}/link/service.git", f"{tmp_path}/link/service.git"):
        assert deployment_refusal({"repo": repo, "workdir": str(working_area(repo))}) is None
