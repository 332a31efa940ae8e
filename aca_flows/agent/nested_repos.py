"""Git repositories an agent makes inside its worktree (a ``git init`` or ``git clone`` there).

git does not commit the files of a folder holding a ``.git`` of its own: it commits a link to
that repository's commit (a gitlink), which no remote has, or, when the repository has no
commit yet, refuses to add anything at all. Either way the work in that folder would never
reach the session branch, so it is refused before the checks, with the fix. A submodule the
change registers in ``.gitmodules`` is deliberate, and stays.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import git

from aca_flows._words import listed
from aca_flows.workspace import TaskWorktree

__all__ = ["nested_repositories_problem"]

_SHOWN = 5


def nested_repositories_problem(worktree: TaskWorktree, changed_files: list[str]) -> str | None:
    """Why the changed files cannot be committed, when some are in a git repository of their
    own; ``None`` when none is."""
    nested = sorted(
        {
            folder
            for path in changed_files
            for folder in _folders(path)
            if os.path.lexists(worktree.path / folder / ".git")
        }  # fmt: skip
    )
    if nested:
        registered = _submodules(worktree)
        nested = [folder for folder in nested if folder not in registered]
    if not nested:
        return None
    shown = listed([f"{folder}/" for folder in nested], _SHOWN)
    return (
        f"the agent's change makes {shown} a git repository of its own (a .git there, from a "
        "`git init` or `git clone`); git commits no file of such a folder, only a link to that "
        "repository's commit, so its work would never reach the branch; nothing was "
        "committed. Remove the .git there (or register the folder as a submodule in "
        ".gitmodules) and run the task again."
    )


def _folders(path: str) -> list[str]:
    """``path`` (a folder when it ends in ``/``, as git lists an untracked repository) and
    the folders it is in."""
    parts = PurePosixPath(path.rstrip("/")).parts
    return ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]


def _submodules(worktree: TaskWorktree) -> set[str]:
    """The paths ``.gitmodules`` registers in the worktree."""
    if not (worktree.path / ".gitmodules").is_file():
        return set()
    try:
        found = worktree.git.config("--file", ".gitmodules", "--get-regexp", r"\.path$")
    except git.GitCommandError:  # none, or a file git cannot read
        return set()
    return {line.split(" ", 1)[1].strip("/") for line in found.splitlines() if " " in line}
