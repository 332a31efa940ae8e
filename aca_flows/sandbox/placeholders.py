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
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["PLACEHOLDER_NAMES", "existing_placeholders", "remove_new_placeholders"]

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
    removed = []
    for path in _candidates(root, others):
        if path in before or path.is_symlink():
            continue
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()
            removed.append(str(path))
    for name in PLACEHOLDER_DIRS:
        folder = root / name
        if folder not in before:
            _remove_empty_tree(folder)
    for folder in _leftovers(others):
        if folder in before or folder.is_symlink():
            continue
        if folder.is_dir():
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty
        elif folder.is_file() and folder.stat().st_size == 0:
            folder.unlink()
            removed.append(str(folder))
    return removed


def _candidates(root: Path, others: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    found = [
        folder / name
        for folder in (root, *others)
        for name in PLACEHOLDER_NAMES
        if (folder / name).exists() or (folder / name).is_symlink()
    ]
    claude = root / ".claude"
    if claude.is_dir() and not claude.is_symlink():
        found += [p for p in claude.rglob("*") if p.name in PLACEHOLDER_NAMES]
    found += [root / name for name in PLACEHOLDER_DIRS if (root / name).exists()]
    return found + [path for path in _leftovers(others) if path.exists()]


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
