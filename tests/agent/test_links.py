"""A link out of the repository is never committed; a link inside it is ordinary work."""

from __future__ import annotations

import asyncio
import os

from aca_flows.agent.links import leaving_links_problem
from aca_flows.plan.models import Task
from aca_flows.workspace import session_branch_head
from tests.agent.test_execute import SESSION, execute, plan_of
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use
from tests.workspace.test_repository import make_user_repo


def test_links_that_climb_out_or_are_absolute_are_named_and_inner_ones_pass(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("guide\n")
    os.symlink("guide.md", tmp_path / "docs" / "readme.md")  # inside: fine
    os.symlink("../docs/guide.md", tmp_path / "docs" / "again.md")  # out and back in: fine
    os.symlink("../../secrets", tmp_path / "docs" / "up.md")
    os.symlink("/etc/passwd", tmp_path / "passwd")
    # Inside as text, but through hop (itself inside) it climbs two folders out.
    os.symlink(".", tmp_path / "hop")
    os.symlink("../hop/hop/../../secrets", tmp_path / "docs" / "through.md")
    files = ["docs/guide.md", "docs/readme.md", "docs/again.md", "docs/up.md", "passwd"]
    files += ["hop", "docs/through.md"]

    problem = leaving_links_problem(tmp_path, files)

    assert problem is not None
    assert "docs/up.md -> ../../secrets; passwd -> /etc/passwd; docs/through.md" in problem
    assert "readme.md" not in problem and "again.md" not in problem
    assert leaving_links_problem(tmp_path, files[:3]) is None


def test_links_into_the_git_directory_are_refused_as_links_out(tmp_path):
    # In every clone they lead to its .git/config (a CI job's token) and hooks.
    os.symlink(".git/config", tmp_path / "git-config")
    (tmp_path / "docs").mkdir()
    os.symlink("../.GIT/hooks/post-checkout", tmp_path / "docs" / "hook")
    os.symlink(".", tmp_path / "hop")
    os.symlink("hop/.git", tmp_path / "through")
    os.symlink(".gitignore", tmp_path / "ignore-link")  # a file beside it: ordinary work
    # Windows opens these as .git (a trailing dot, the short name) where links are checked out.
    os.symlink(".git./config", tmp_path / "dot")
    os.symlink("GIT~1/hooks", tmp_path / "short")
    files = ["git-config", "docs/hook", "hop", "through", "ignore-link", "dot", "short"]

    problem = leaving_links_problem(tmp_path, files)

    assert problem is not None
    assert "git-config -> .git/config" in problem and "docs/hook ->" in problem
    assert "through -> hop/.git" in problem and "ignore-link" not in problem
    assert "dot -> .git./config" in problem and "short -> GIT~1/hooks" in problem


def test_a_task_that_leaves_a_link_out_of_the_repository_fails_and_commits_nothing(tmp_path):
    repo = make_user_repo(tmp_path)
    user_head = repo.head.commit.hexsha
    provider = ScriptedProvider(
        tool_calls(tool_use("run_command", command="ln -s /etc/passwd notes.txt")),
        tool_calls(tool_use("finish", summary="added notes")),
    )
    outcome = asyncio.run(execute(tmp_path, plan_of(Task(id="t1", title="Notes")), "t1", provider))

    assert outcome.status == "failed" and outcome.commit_sha is None
    assert "notes.txt -> /etc/passwd" in outcome.failure_reason
    assert "nothing was committed" in outcome.failure_reason
    assert session_branch_head(repo, SESSION) == user_head


def test_a_link_out_of_the_repository_in_a_cache_folder_is_refused_too(tmp_path):
    # A cache folder's files are no evidence of work, but `git add -A` would commit them.
    repo = make_user_repo(tmp_path)
    user_head = repo.head.commit.hexsha
    command = "mkdir __pycache__ && ln -s /etc/passwd __pycache__/app.pyc && echo a > a.txt"
    provider = ScriptedProvider(
        tool_calls(tool_use("run_command", command=command)),
        tool_calls(tool_use("finish", summary="wrote a.txt")),
    )
    outcome = asyncio.run(execute(tmp_path, plan_of(Task(id="t1", title="A")), "t1", provider))

    assert outcome.status == "failed" and outcome.commit_sha is None
    assert "__pycache__/app.pyc -> /etc/passwd" in outcome.failure_reason
    assert session_branch_head(repo, SESSION) == user_head
