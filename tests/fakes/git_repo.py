"""A git repository with one commit, like a user's checkout, for tests and benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["make_repo"]


def make_repo(path: Path) -> Path:
    """Create ``path`` as a repository on branch ``main`` holding one committed README."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README.md").write_text("demo\n")
    git = ["git", "-C", str(path), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    return path
