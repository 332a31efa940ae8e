"""The files of a worktree a glob pattern names (``list_files``, ``search``), found in aca's
own process: so within a time bound, and without following links to folders.

``Path.glob`` followed them: two links ``a -> .`` and ``b -> .`` made ``*/*/…/x`` cost 2ⁿ,
and a deep tree made ``**/**/**/x`` cost its depth cubed, each holding the run with no
timeout (the sandbox's limits bound commands, not aca). Here the worktree is walked once, each
file's path matched against the pattern (``**`` any folders, ``*`` and ``?`` within a name,
``[...]`` a class), repeated ``**`` read as one.
"""

from __future__ import annotations

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
    matches = _matcher(pattern)
    root = root.resolve()
    deadline = time.monotonic() + seconds
    found = []
    for folder, folders, files in os.walk(root):  # links to folders are not followed
        if time.monotonic() > deadline:
            raise PatternTooSlow(f"listing stopped after {seconds:g} s, in {folder}")
        relative = os.path.relpath(folder, root)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        if not prefix:  # the worktree's .git (a folder, or a file naming one)
            folders[:] = [name for name in folders if name != ".git"]
            files = [name for name in files if name != ".git"]
        for name in files:
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


def _matcher(pattern: str):
    segments = [part for part in pattern.strip("/").split("/") if part not in ("", ".")]
    collapsed = [s for i, s in enumerate(segments) if s != "**" or segments[i - 1 : i] != ["**"]]
    regex = ""
    for number, segment in enumerate(collapsed):
        last = number == len(collapsed) - 1
        if segment == "**":
            regex += ".*" if last else "(?:.*/)?"
        else:
            regex += _segment(segment) + ("" if last else "/")
    return re.compile(regex, re.DOTALL).fullmatch


def _segment(segment: str) -> str:
    """One name's pattern: ``*`` and ``?`` never cross a ``/``."""
    out, i = "", 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and (end := segment.find("]", i + 2)) != -1:
            inner = segment[i + 1 : end]
            inner = "^" + inner[1:] if inner.startswith("!") else inner
            out += "[" + inner.replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return out
