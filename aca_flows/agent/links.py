"""Links an agent leaves in its worktree that point out of the repository, or into its ``.git``.

A symbolic link is committed as its target's path. One that is absolute, or relative but
climbing out of the repository (``../../etc/passwd``), points at whatever is at that path on
the machine of whoever checks the branch out, or builds or tests it: a reviewer's ``~/.ssh``,
say. The sandbox stops writes through such a link while the task runs; this keeps it from
being committed at all. So does one into ``.git``, which in every clone holds its config (a CI
job's token) and hooks. A link that stays inside the work tree is ordinary work.
"""

from __future__ import annotations

import os
from pathlib import Path

from aca_flows._words import listed

__all__ = ["leaving_links_problem"]

_SHOWN = 5


def leaving_links_problem(root: Path, changed_files: list[str]) -> str | None:
    """Why the changed files cannot be committed, when some are links out of the repository;
    ``None`` when none is."""
    leaving = [f"{path} -> {target}" for path in changed_files
               if (target := _target_outside(root, path)) is not None]  # fmt: skip
    if not leaving:
        return None
    shown = listed(leaving, _SHOWN, "; ")
    return (
        f"the agent left symbolic links that point out of the repository ({shown}); aca "
        "commits no such link, since it would point at that path on every machine the branch "
        "is checked out on; nothing was committed. Replace each with the file it should be, or "
        "a relative link to a file inside the repository, and run the task again."
    )


def _target_outside(root: Path, path: str) -> str | None:
    link = root / path
    if not link.is_symlink():
        return None
    target = os.readlink(link)
    if os.path.isabs(target):
        return target
    # Resolved as text, the way git stores it: no file system lookup follows it.
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
    if resolved == ".." or resolved.startswith(("../", "/")) or _in_git_dir(resolved.split("/")):
        return target
    # And as a checkout resolves it, through the other links of the worktree: with
    # ``hop -> .``, ``hop/hop/../../x`` reads as ``x`` but climbs two folders out.
    return target if _climbs_out(root, Path(path).parent.parts, target) else None


def _in_git_dir(parts: list[str]) -> bool:
    """A path into the repository's git directory: in every clone, its config (a CI token
    there: ``http.extraHeader``) and hooks. Without case, as macOS opens it, and with the
    names Windows opens as ``.git`` (trailing dots or spaces, the short name ``GIT~1``)."""
    return bool(parts) and parts[0].lower().rstrip(". ") in (".git", "git~1")


# The kernel's limit: a chain this long resolves nowhere, on any machine.
_MAX_HOPS = 40


def _climbs_out(root: Path, where: tuple[str, ...], target: str) -> bool:
    """Whether ``target``, relative to the folder ``where`` of ``root``, climbs above
    ``root`` at any step, following the links it meets inside ``root`` as the kernel would."""
    here, todo, hops = list(where), target.split("/"), 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                return True
            here.pop()
            continue
        here.append(part)
        if _in_git_dir(here):
            return True
        step = root.joinpath(*here)
        if step.is_symlink():
            hops += 1
            inner = os.readlink(step)
            if os.path.isabs(inner):
                return True
            if hops > _MAX_HOPS:
                return False
            here.pop()
            todo = inner.split("/") + todo
    return False
