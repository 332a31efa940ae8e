"""A git repository with one commit, like a user's checkout, for tests and benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["commit_file", "make_repo"]


def make_repo(path: Path) -> Path:
    """Create ``path`` as a repository on branch ``main`` holding one committed README."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README.md").write_text("demo\n")
    git = ["git", "-C", str(path), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return path


def commit_file(repo: Path, name: str, text: str) -> None:
    """Write ``name`` in ``repo`` and commit it, as the user's own content."""
    (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "the user's own"], check=True)
