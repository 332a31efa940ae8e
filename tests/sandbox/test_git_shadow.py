"""The ``git`` aca gives Claude Code's Bash on a repository whose config holds a credential
(``sandbox/git_shadow.py``): in the task's worktree it reads the copy without the credential;
in a repository made inside the worktree, or anywhere else, it is git as it was. Run on the
host, where the real config is readable: the copy is what git is seen to read."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from aca_flows.sandbox.git_config import without_credentials
from aca_flows.sandbox.git_shadow import git_shadow
from tests.fakes.git_repo import make_repo

TOKEN = "ghs_PLANTEDshadow0123456789"


def _linked_worktree(tmp_path: Path) -> tuple[Path, Path, Path]:
    repo = make_repo(tmp_path / "repo")
    url = f"https://x-access-token:{TOKEN}@github.com/team/repo.git"
    subprocess.run(["git", "-C", str(repo), "config", "remote.origin.url", url], check=True)
    worktree = tmp_path / "worktrees" / "t1"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(worktree)], check=True
    )
    return repo / ".git", repo / ".git" / "worktrees" / "t1", worktree


def _git(shadow: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(cwd)}
    return subprocess.run(
        [str(shadow / "bin" / "git"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_in_the_worktree_git_reads_the_copy_without_the_credential(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    common, admin, worktree = _linked_worktree(tmp_path)
    clean = without_credentials((common / "config").read_text())
    shadow = git_shadow(worktree.resolve(), admin, common, clean)

    (worktree / "src").mkdir()
    for where in (worktree, worktree / "src"):
        url = _git(shadow, where, "config", "--get", "remote.origin.url")
        assert url.stdout.strip() == "https://[REDACTED]@github.com/team/repo.git", url
        log = _git(shadow, where, "log", "-1", "--format=%s")
        assert log.stdout.strip() == "init", log
    status = _git(shadow, worktree / "src", "status", "--short")
    assert status.returncode == 0 and TOKEN not in status.stdout + status.stderr
    # The user's own config is untouched.
    assert TOKEN in (common / "config").read_text()


def test_elsewhere_or_in_a_repository_inside_the_worktree_it_is_git_as_it_was(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    common, admin, worktree = _linked_worktree(tmp_path)
    shadow = git_shadow(worktree.resolve(), admin, common, "[core]\n")

    nested = make_repo(worktree / "fixtures" / "nested")
    subprocess.run(["git", "-C", str(nested), "config", "nested.mark", "own"], check=True)
    assert _git(shadow, nested, "config", "--get", "nested.mark").stdout.strip() == "own"
    assert _git(shadow, nested, "log", "-1", "--format=%s").stdout.strip() == "init"
    outside = make_repo(tmp_path / "outside")
    assert _git(shadow, outside, "rev-parse", "--show-toplevel").stdout.strip() == str(
        outside.resolve()
    )
    # Told where the repository is, it is not second-guessed.
    told = _git(shadow, tmp_path, "-C", str(outside), "log", "-1", "--format=%s")
    assert told.stdout.strip() == "init", told


def test_claude_codes_options_give_it_the_git_or_say_that_git_cannot_run(tmp_path, monkeypatch):
    from aca_flows.sandbox import Sandbox
    from aca_flows.sandbox.sandbox import NO_GIT_NOTE

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    common, admin, worktree = _linked_worktree(tmp_path)
    options = Sandbox.for_worktree(worktree, git_dir=admin).claude_code_options()
    assert str(common / "config") in options["unreadable_paths"]
    (shown,) = options["bin_folders"]
    # Inside a folder Claude Code's Bash may read and may not write.
    assert any(Path(shown).is_relative_to(p) for p in options["readable_paths"])
    assert any(Path(shown).is_relative_to(p) for p in options["protected_paths"])
    assert "append_system_prompt" not in options

    # A credential in a submodule's config: no git reads a copy of that one.
    subprocess.run(["git", "-C", str(common.parent), "config", "--unset", "remote.origin.url"])
    submodule = common / "modules" / "lib"
    submodule.mkdir(parents=True)
    (submodule / "config").write_text(f"[http]\n\textraHeader = AUTHORIZATION: basic {TOKEN}\n")
    options = Sandbox.for_worktree(worktree, git_dir=admin).claude_code_options()
    assert str(submodule / "config") in options["unreadable_paths"]
    assert "bin_folders" not in options
    assert options["append_system_prompt"] == NO_GIT_NOTE


def test_git_deletes_it_with_the_worktree_and_leaves_the_repository_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    common, admin, worktree = _linked_worktree(tmp_path)
    shadow = git_shadow(worktree.resolve(), admin, common, "[core]\n")
    assert (shadow / "common" / "objects").is_symlink()
    before = sorted(p.relative_to(common) for p in common.rglob("*") if "worktrees" not in p.parts)

    repo = str(common.parent)
    subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", str(worktree)], check=True)

    assert not shadow.exists()
    after = sorted(p.relative_to(common) for p in common.rglob("*") if "worktrees" not in p.parts)
    assert after == before
    log = subprocess.run(["git", "-C", repo, "log", "-1", "--format=%s"],
                         capture_output=True, text=True)  # fmt: skip
    assert log.stdout.strip() == "init"
