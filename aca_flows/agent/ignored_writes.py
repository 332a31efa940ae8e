"""Files the agent wrote that git ignores, kept out of the task's checks.

No commit holds them, so a check that passes only because of one passes in the worktree and
fails on the branch: a verify ``test -f out.log`` in a repository that ignores ``*.log``.
Before the checks run, ``set_aside`` moves such files out of the worktree, into a folder no
sandboxed command sees (under ``.aca``). What every checkout makes for itself stays where it
is: caches, installed dependencies and build output (``KEPT_FOLDERS``), which a check makes
again as it would on any clone; so does whatever the setup commands made before the agent
started. A failed check gives them back for the agent's next round, its output naming them;
after the checks passed they are deleted, as the worktree soon is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aca_flows._words import listed
from aca_flows.agent.no_change import CACHE_FOLDERS, CACHE_SUFFIXES
from aca_flows.workspace import TaskWorktree, changed_since

__all__ = ["KEPT_FOLDERS", "SetAside", "set_aside"]

KEPT_FOLDERS = CACHE_FOLDERS | {
    # installed dependencies
    ".venv",
    "venv",
    "node_modules",
    ".eggs",
    ".tox",
    ".nox",
    # build output and build caches
    "build",
    "dist",
    "target",
    ".gradle",
    ".next",
    ".cache",
}
KEPT_SUFFIXES = (*CACHE_SUFFIXES, ".egg-info", ".o", ".class")
# An ignored folder that is not one of the above is searched file by file for what the agent
# wrote; one this big is left alone (a data set, a checkout of something) rather than walked.
_MOST_ENTRIES_WALKED = 20_000
_SHOWN = 10


@dataclass
class SetAside:
    """The agent's ignored files, moved to ``holding`` while the checks run."""

    worktree: Path
    holding: Path
    paths: list[str]

    def note(self, dropped: list[str]) -> str:
        """What a failed check's output says of them, for the agent and the failure reason;
        ``dropped``: those ``put_back`` could not put back."""
        back = "They are back in the worktree"
        if dropped:
            back += (
                f", except {listed(dropped, _SHOWN)}: a check put a link or a file where "
                "their folder was, and aca writes through no link"
            )
        return (
            f"\n[aca ran this check without the files the agent wrote that git ignores "
            f"({listed(self.paths, _SHOWN)}): no commit can hold them, so the checked work "
            f"must not need them. {back}.]"
        )

    def put_back(self) -> list[str]:
        """Every file to where it was (one a check wrote there since is replaced); the paths
        dropped instead. The checks ran code the agent wrote, and this runs outside the
        sandbox: a folder on the way that is now a link is not followed, and the file under
        it is dropped."""
        dropped = []
        for path in self.paths:
            *folders, name = path.split("/")
            try:
                with _folder(self.worktree, folders, make=True) as fd:
                    os.replace(self.holding / path, name, dst_dir_fd=fd)
            except OSError:
                dropped.append(path)
        shutil.rmtree(self.holding, ignore_errors=True)
        return dropped

    def discard(self) -> None:
        shutil.rmtree(self.holding, ignore_errors=True)


def set_aside(worktree: TaskWorktree, since: float) -> SetAside | None:
    """Move the files git ignores that were written in the worktree since ``since`` (a
    ``time.time()``, when the agent started) out of it; ``None`` when there are none."""
    found = [
        path
        for entry in worktree.ignored_paths()
        if not _kept(entry)
        for path in _written_since(worktree.path, entry, since)
    ]
    if not found:
        return None
    holding = worktree.path.parent / f".{worktree.task_id}.ignored"
    shutil.rmtree(holding, ignore_errors=True)  # a crash's leftover
    moved = []
    for path in found:
        *folders, name = path.split("/")
        with contextlib.suppress(OSError), _folder(worktree.path, folders, make=False) as fd:
            (holding / path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(name, holding / path, src_dir_fd=fd)
            moved.append(path)
    return SetAside(worktree.path, holding, moved) if moved else None


@contextlib.contextmanager
def _folder(root: Path, folders: list[str], *, make: bool) -> Iterator[int]:
    """A descriptor of the folder ``root/folders...``, reached without following a link
    (``OSError`` if one is on the way), its missing folders made with ``make``: a path the
    agent's code can point elsewhere is never taken out of the worktree."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name in folders:
            if make:
                with contextlib.suppress(FileExistsError):  # a link there is refused below
                    os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _kept(path: str) -> bool:
    return bool(KEPT_FOLDERS.intersection(path.split("/"))) or path.endswith(KEPT_SUFFIXES)


def _written_since(root: Path, entry: str, since: float) -> list[str]:
    """``entry`` (a path git lists as ignored) if it is a file written since ``since``; the
    files under it that were, if it is a folder. Links count as files, never followed."""
    path = root / entry
    with contextlib.suppress(OSError):
        if not path.is_dir() or path.is_symlink():
            return [entry] if changed_since(path, since) else []
        found, seen = [], 0
        for folder, folders, files in os.walk(path):
            folders[:] = [name for name in folders if name not in KEPT_FOLDERS]
            seen += len(files) + len(folders)
            if seen > _MOST_ENTRIES_WALKED:
                return []
            for name in files:
                file = Path(folder, name)
                if not name.endswith(KEPT_SUFFIXES) and changed_since(file, since):
                    found.append(file.relative_to(root).as_posix())
        return found
    return []
