"""The files of a worktree a glob pattern names (``list_files``, ``search``), found in aca's
own process: so within a time bound, and without following links to folders.

``Path.glob`` followed them: two links ``a -> .`` and ``b -> .`` made ``*/*/…/x`` cost 2ⁿ,
and a deep tree made ``**/**/**/x`` cost its depth cubed, each holding the run with no
timeout (the sandbox's limits bound commands, not aca). Here the worktree is walked once, each
file's path matched against the pattern name by name (``**`` any folders, ``*`` and ``?``
within a name, ``[...]`` a class), repeated ``**`` read as one.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import time
from pathlib import Path

__all__ = ["GLOB_SECONDS", "PatternTooSlow", "glob_files"]

# A walk's whole time: a worktree of a million files is listed in a few seconds.
GLOB_SECONDS = 10.0


class PatternTooSlow(Exception):
    """The walk took longer than its bound; the message says where it stopped."""


def glob_files(root: Path, pattern: str, seconds: float = GLOB_SECONDS) -> list[str]:
    """The regular files under ``root`` whose path (relative, with ``/``) matches
    ``pattern``, sorted; not in ``.git``, nor a link to a file outside ``root``."""
    parts = _parts(pattern)
    matches = _matcher(parts)
    root = root.resolve()
    # Only where a match can be: under the pattern's leading names (`src/*.py`: src), and no
    # deeper than its names reach unless it has `**`.
    leading = list(itertools.takewhile(lambda part: not _WILD.search(part), parts[:-1]))
    start = root.joinpath(*leading)
    if any(p.is_symlink() for p in [start, *start.parents] if root in p.parents):
        return []  # a link to a folder: not followed
    deepest = None if "**" in parts else len(parts) - 1
    deadline = time.monotonic() + seconds
    found = []
    for folder, folders, files in os.walk(start):  # links to folders are not followed
        if time.monotonic() > deadline:
            raise PatternTooSlow(f"listing stopped after {seconds:g} s, in {folder}")
        relative = os.path.relpath(folder, root)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        if not prefix:  # the worktree's .git (a folder, or a file naming one)
            folders[:] = [name for name in folders if name != ".git"]
            files = [name for name in files if name != ".git"]
        if deepest is not None and prefix.count("/") >= deepest:
            folders[:] = []
        for number, name in enumerate(files):
            if number % 1024 == 1023 and time.monotonic() > deadline:
                raise PatternTooSlow(f"listing stopped after {seconds:g} s, in {folder}")
            path = prefix + name
            if matches(path) and _inside(root, os.path.join(folder, name)):
                found.append(path)
    return sorted(found)


def _inside(root: Path, file: str) -> bool:
    """A regular file, or a link to one inside ``root``."""
    if not os.path.islink(file):
        return os.path.isfile(file)
    resolved = Path(file).resolve()
    return os.path.isfile(resolved) and root in resolved.parents


_WILD = re.compile(r"[*?\[]")


def _parts(pattern: str) -> list[str]:
    """The pattern's names, repeated ``**`` read as one."""
    segments = [part for part in pattern.strip("/").split("/") if part not in ("", ".")]
    return [s for i, s in enumerate(segments) if s != "**" or segments[i - 1 : i] != ["**"]]


def _matcher(parts: list[str]):
    """A test of a relative path against the pattern's ``parts``, name by name (``fnmatch``
    for each, which never backtracks without end), ``**`` any run of folders: one regular
    expression for the whole path backtracked for minutes on ``*a*a*a…`` or ``**/a/**/a/…``."""

    def matches(path: str) -> bool:
        names = path.split("/")
        known: dict[tuple[int, int], bool] = {}

        def match(part: int, name: int) -> bool:
            if part == len(parts):
                return name == len(names)
            if (part, name) not in known:
                if parts[part] == "**":  # any folders; at the end, at least one name
                    first = name + 1 if part == len(parts) - 1 else name
                    found = any(match(part + 1, n) for n in range(first, len(names) + 1))
                else:
                    found = (
                        name < len(names)
                        and fnmatch.fnmatchcase(names[name], parts[part])
                        and match(part + 1, name + 1)
                    )
                known[(part, name)] = found
            return known[(part, name)]

        return match(0, 0)

    return matches
