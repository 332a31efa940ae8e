"""The empty files Claude Code's own sandbox leaves in a worktree, removed before aca commits.

Claude Code's sandbox (bubblewrap) masks files such as ``.env``, ``package.json`` or
``.mcp.json`` with read-only mounts; where such a file is missing it first creates a 0-byte
placeholder to mount over, and leaves it there (its own documentation: "`git add -A` would
stage them"). It does the same in the user's home (``.gitconfig``, ``.netrc``, ...) and
in the repository's git directory (``config.worktree``). aca stages everything, so a
placeholder that appeared during a run, is still empty and carries one of those names is
deleted (from the worktree with the empty folders it made, from the other folders given).
A file the agent wrote has content, or existed before the run, and stays. In the repository's
checkout it also makes folders and leaves them empty (``.claude/.cc-writes``, and
``.claude-sandbox-noreplace`` in folders of ``.git``; ``.git/glab-cli``,
``.git/NOTES_MERGE_WORKTREE``, ``.git/objects/info/commit-graphs``) and an empty
``.git/objects/info/alternates``: those that were not there before, and are still empty, are
removed.

The folders besides the worktree (the home, the repository's checkout and git directory) are
shared by every claude run of the repository, and Claude Code's sandbox binds what it finds
there at each Bash command: one run's end removed what another's command was about to mount
("bwrap: Can't find source path .git/glab-cli", the command failed). So around a run
(``placeholders_removed``) the worktree's are removed at its end, a shared folder's once no run
of this process uses that folder, against what it held before the first of them began.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "PLACEHOLDER_NAMES",
    "existing_placeholders",
    "placeholders_removed",
    "remove_new_placeholders",
]

PLACEHOLDER_NAMES = frozenset(
    {".env", ".env.local", ".env.development", ".env.development.local", ".env.test"}
    | {".env.test.local", ".env.production", ".env.production.local", ".envrc"}
    | {"bunfig.toml", ".bunfig.toml", "package.json", "package-lock.json", "yarn.lock"}
    | {"pnpm-lock.yaml", ".npmrc", ".yarnrc", ".yarnrc.yml", ".pnpmfile.cjs", ".gitmodules"}
    | {".gitconfig", ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile"}
    | {".bash_aliases", ".zshrc", ".zprofile", ".zshenv", ".zlogin", ".zlogout", ".ripgreprc"}
    | {".mcp.json", ".claude.json", ".pnp.cjs", ".pnp.loader.mjs", ".pnp.js", ".pnp.data.json"}
    | {".bazelrc", ".bazelversion", ".bazeliskrc", ".pre-commit-config.yaml", "lefthook.yml"}
    | {".lefthook.yml", "lefthook.yaml", ".lefthook.yaml", ".devcontainer.json"}
    | {"pyrightconfig.json", "settings.json", "settings.local.json", ".netrc", "config.worktree"}
)
# Folders it creates to hold placeholders or to mount over.
PLACEHOLDER_DIRS = (".claude", "node_modules", ".github", ".idea", ".vscode", "scripts")
# Folders it makes in the repository's checkout (its project root, for a worktree), outside
# the worktree, and leaves empty: the staging folder of its settings' writes, and in the git
# directory a marker in each folder it pins against replacement (info, objects/info, ...).
# Removed when new and still empty, innermost first.
CHECKOUT_LEFTOVERS = (".claude/.cc-writes", ".claude")
PINNED_MARKER = ".claude-sandbox-noreplace"
# In the git directory, what it creates to mount over (seen with claude 2.1.332): empty
# folders, and an empty alternates file; removed when new and still empty.
GIT_DIR_LEFTOVERS = ("glab-cli", "NOTES_MERGE_WORKTREE", "objects/info/commit-graphs")
GIT_DIR_EMPTY_FILES = ("objects/info/alternates",)


def existing_placeholders(root: Path, others: list[Path] | tuple[Path, ...] = ()) -> set[Path]:
    """What could be taken for a placeholder before the run: those paths are kept."""
    return set(_candidates(Path(root), others))


def remove_new_placeholders(
    root: Path, before: set[Path], others: list[Path] | tuple[Path, ...] = ()
) -> list[str]:
    """Delete 0-byte placeholders that appeared since ``before`` in the worktree ``root`` and
    in ``others`` (the home, git directories); their paths."""
    root = Path(root)
    removed = _remove_new_files(_candidates(root, others), before)
    for name in PLACEHOLDER_DIRS:
        folder = root / name
        if folder not in before:
            _remove_empty_tree(folder)
    return removed + _remove_new_leftovers(_leftovers(others), before)


def _remove_new_files(paths: list[Path], before: set[Path]) -> list[str]:
    removed = []
    for path in paths:
        if path in before or path.is_symlink():
            continue
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()
            removed.append(str(path))
    return removed


def _remove_new_leftovers(leftovers: list[Path], before: set[Path]) -> list[str]:
    removed = []
    for path in leftovers:
        if path in before or path.is_symlink():
            continue
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()  # only succeeds when empty
        elif path.is_file() and path.stat().st_size == 0:
            path.unlink()
            removed.append(str(path))
    return removed


class _SharedFolder:
    """A folder claude runs share: how many use it now, what it held before the first."""

    def __init__(self, folder: Path):
        self.runs = 0
        self.before = set(_shared_candidates(folder))

    def remove_new(self, folder: Path) -> list[str]:
        files = _remove_new_files(_named_in([folder]), self.before)
        return files + _remove_new_leftovers(_leftovers([folder]), self.before)


_SHARED: dict[Path, _SharedFolder] = {}
_SHARED_LOCK = threading.Lock()


@contextlib.contextmanager
def placeholders_removed(root: Path, others: list[Path]) -> Iterator[list[str]]:
    """Around one claude run in the worktree ``root``: on leaving, the placeholders that
    appeared in ``root`` are removed, and those of each folder of ``others`` (shared by the
    repository's runs) once no other run of this process uses it. Yields the list that then
    holds the paths removed."""
    root = Path(root)
    before = existing_placeholders(root)
    with _SHARED_LOCK:
        shared = []
        for path in others:
            if path not in _SHARED:  # the first run: what the folder holds before any
                _SHARED[path] = _SharedFolder(path)
            shared.append(_SHARED[path])
            shared[-1].runs += 1
    removed: list[str] = []
    try:
        yield removed
    finally:
        removed += remove_new_placeholders(root, before)
        with _SHARED_LOCK:
            for path, folder in zip(others, shared, strict=True):
                folder.runs -= 1
                if folder.runs == 0:
                    del _SHARED[path]
                    removed += folder.remove_new(path)


def _candidates(root: Path, others: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    found = _named_in((root, *others))
    claude = root / ".claude"
    if claude.is_dir() and not claude.is_symlink():
        found += [p for p in claude.rglob("*") if p.name in PLACEHOLDER_NAMES]
    found += [root / name for name in PLACEHOLDER_DIRS if (root / name).exists()]
    return found + [path for path in _leftovers(others) if path.exists()]


def _shared_candidates(folder: Path) -> list[Path]:
    return _named_in([folder]) + [path for path in _leftovers([folder]) if path.exists()]


def _named_in(folders: list[Path] | tuple[Path, ...]) -> list[Path]:
    return [
        folder / name
        for folder in folders
        for name in PLACEHOLDER_NAMES
        if (folder / name).exists() or (folder / name).is_symlink()
    ]


def _leftovers(others: list[Path] | tuple[Path, ...]) -> list[Path]:
    checkouts = [folder for folder in others if (folder / ".git").is_dir()]
    found = [checkout / name for checkout in checkouts for name in CHECKOUT_LEFTOVERS]
    in_git = (*GIT_DIR_LEFTOVERS, *GIT_DIR_EMPTY_FILES)
    found += [checkout / ".git" / name for checkout in checkouts for name in in_git]
    return found + [m for checkout in checkouts for m in _pinned_markers(checkout / ".git")]


def _pinned_markers(git_dir: Path) -> list[Path]:
    found = []
    for folder, names, _ in os.walk(git_dir):
        if PINNED_MARKER in names:
            found.append(Path(folder) / PINNED_MARKER)
        if Path(folder) == git_dir / "objects":  # the loose objects' 256 folders: none there
            names[:] = [name for name in names if name == "info"]
    return found


def _remove_empty_tree(folder: Path) -> None:
    if not folder.is_dir() or folder.is_symlink():
        return
    for child in sorted(folder.rglob("*"), reverse=True):
        if child.is_dir() and not child.is_symlink():
            with contextlib.suppress(OSError):
                child.rmdir()  # only succeeds when empty
    with contextlib.suppress(OSError):
        folder.rmdir()
