"""``PATH`` without its relative entries, for every layer that starts a program outside the
sandbox: aca's git (workspace), bubblewrap (sandbox), claude and the npm it asks (providers).

A relative entry (``.``, ``node_modules/.bin``, an empty one) names a folder of whatever
directory a program is started in; aca starts these in a task's worktree, where the agent could
put a ``git``, ``bwrap``, ``ssh`` or ``socat`` of its own, which would run as the user outside
any sandbox.
"""

from __future__ import annotations

import os

__all__ = ["absolute_folders"]


def absolute_folders(path: str | None = None) -> str:
    """``path`` (a ``PATH`` value; the process's own when ``None``) without its relative
    entries."""
    if path is None:
        path = os.environ.get("PATH", os.defpath)
    return os.pathsep.join(folder for folder in path.split(os.pathsep) if os.path.isabs(folder))
