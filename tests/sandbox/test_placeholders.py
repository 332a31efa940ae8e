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

    assert sorted(removed) == [".claude/settings.json", ".env", ".mcp.json", "yarn.lock"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".npmrc", "__init__.py", "package.json"]
