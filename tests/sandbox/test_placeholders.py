"""Claude Code's sandbox placeholders are removed; the agent's own files stay."""

from __future__ import annotations

from aca_flows.sandbox import existing_placeholders, remove_new_placeholders


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
