"""Claude Code's sandbox placeholders are removed; the agent's own files stay."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers import get_provider
from aca_flows.sandbox import (
    check_sandbox,
    existing_placeholders,
    placeholders_removed,
    remove_new_placeholders,
)
from aca_flows.settings import AcaConfig
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer

PLAN = ExecutionPlan(name="leftovers", tasks=[Task(id="t1", title="Write a.txt")])


def test_new_empty_placeholders_go_and_everything_else_stays(tmp_path):
    (tmp_path / "package.json").write_text("")  # the user's own, there before the run
    before = existing_placeholders(tmp_path)
    for name in (".env", ".mcp.json", "yarn.lock", ".claude/settings.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / ".npmrc").write_text("registry=https://example.invalid\n")  # written by the agent
    (tmp_path / "__init__.py").write_text("")  # empty, but not a placeholder name

    removed = remove_new_placeholders(tmp_path, before)

    names = [".claude/settings.json", ".env", ".mcp.json", "yarn.lock"]
    assert sorted(removed) == [str(tmp_path / name) for name in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".npmrc", "__init__.py", "package.json"]


def test_placeholders_in_the_home_and_git_directory_go_too(tmp_path):
    worktree, home, git_dir = tmp_path / "wt", tmp_path / "home", tmp_path / "repo.git"
    for folder in (worktree, home, git_dir):
        folder.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = me\n")  # the user's own
    before = existing_placeholders(worktree, [home, git_dir])
    for path in (home / ".netrc", home / ".npmrc", git_dir / "config.worktree"):
        path.write_text("")

    remove_new_placeholders(worktree, before, [home, git_dir])

    assert [p.name for p in home.iterdir()] == [".gitconfig"] and not any(git_dir.iterdir())


def test_what_runs_share_stays_until_the_last_of_them_ends(tmp_path):
    # Claude Code's sandbox binds what it finds in the git directory at each Bash command: one
    # run's end removed .git/glab-cli while another's command was about to mount it, and that
    # command failed ("bwrap: Can't find source path .git/glab-cli").
    one, two, home, repo = (tmp_path / name for name in ("one", "two", "home", "repo"))
    for folder in (one, two, home, repo / ".git"):
        folder.mkdir(parents=True)
    (repo / ".git" / "NOTES_MERGE_WORKTREE").mkdir()  # there before: the user's own, kept
    with placeholders_removed(one, [home, repo]) as removed_one:
        (one / ".env").write_text("")
        (repo / ".git" / "glab-cli").mkdir()
        (home / ".netrc").write_text("")
        with placeholders_removed(two, [home, repo]):
            (two / "package.json").write_text("")
        # ... the second run ends while the first is still at work: only its own go.
        assert not (two / "package.json").exists()
        assert (repo / ".git" / "glab-cli").is_dir() and (home / ".netrc").exists()
    assert removed_one == [str(one / ".env"), str(home / ".netrc")]
    assert not (repo / ".git" / "glab-cli").exists() and not (home / ".netrc").exists()
    assert (repo / ".git" / "NOTES_MERGE_WORKTREE").is_dir()


@pytest.mark.parametrize("users_own", [False, True])
def test_a_claude_code_task_leaves_nothing_in_the_checkout_or_the_home(
    tmp_path, monkeypatch, users_own
):
    # Claude Code makes <checkout>/.claude/.cc-writes (its settings' staging folder: the checkout
    # is its project root) and .claude-sandbox-noreplace in folders of .git, and leaves them.
    # In its HOME it makes empty dotfiles (.bashrc, .netrc, .gitconfig...) and folders (.pip,
    # .config/gh, ...) to mount over, and the missing folders of its PATH: that HOME is aca's,
    # and the login in the user's is used.
    config = AcaConfig.model_validate({"providers": {"claude-code": {"model": "claude-test"}}})
    check_sandbox(config.sandbox, claude_code=True)
    repo = make_repo(tmp_path / "repo")
    home = Path.home()
    if users_own:  # the user's own .claude (untracked): it stays, with what it holds
        (repo / ".claude").mkdir()
        (repo / ".claude" / "notes.md").write_text("mine\n")
    home_before = {path.name for path in home.iterdir()}
    monkeypatch.setenv("PATH", f"{home}/.local/bin:{os.environ['PATH']}")  # a folder not made yet
    with FakeLLMServer() as server:
        server.serve_claude_code(monkeypatch)
        if users_own:  # logged in (~/.claude/.credentials.json), no key
            monkeypatch.delenv("ANTHROPIC_API_KEY")
            (home / ".claude").mkdir(exist_ok=True)
            login = {"accessToken": server.api_key, "expiresAt": 4_102_444_800_000}
            credentials = {"claudeAiOauth": {**login, "scopes": ["user:inference"]}}
            (home / ".claude" / ".credentials.json").write_text(json.dumps(credentials))
        server.anthropic.enqueue(
            tool_calls=[{"name": "Bash", "arguments": {"command": "echo hi > a.txt"}}]
        )
        server.anthropic.enqueue(text="Wrote a.txt.")
        outcome = asyncio.run(
            execute_task(PLAN, "t1", workdir=repo, session_id="s1",
                         provider=get_provider("claude-code", config), config=config)
        )  # fmt: skip

    assert outcome.status == "completed", outcome.failure_reason
    inside = (str(path.relative_to(repo)) for path in repo.rglob("*"))
    left = sorted(path for path in inside if ".claude" in path and "/worktrees/" not in path)
    assert left == ([".claude", ".claude/notes.md"] if users_own else [])
    made_in_git = ("glab-cli", "NOTES_MERGE_WORKTREE", "objects/info/alternates")
    assert [name for name in made_in_git if (repo / ".git" / name).exists()] == []
    if users_own:
        assert server.anthropic.requests[-1].headers["authorization"] == f"Bearer {server.api_key}"
    new_in_home = {path.name for path in home.iterdir()} - home_before
    assert new_in_home <= {".aca", ".claude", ".claude.json", ".npm"}
    # Nor its conversation in the home (Claude Code's transcript: ~/.claude/projects/...).
    kept = [str(p) for p in home.rglob("*") if p.is_file() and b"echo hi" in p.read_bytes()]
    assert kept == []
    assert [p.name for p in (home / ".claude" / "session-env").iterdir()] == []
