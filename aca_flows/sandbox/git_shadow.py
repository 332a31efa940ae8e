"""git for Claude Code's Bash on a repository whose config holds a credential.

Claude Code's sandbox shows the repository's git directory itself and cannot show a copy of
its ``config`` without credentials, as aca's sandbox does; the config is unreadable there, and
git stops at it. ``git_shadow`` makes, in the worktree's own git directory
(``<common>/worktrees/<name>/aca-git``, which git deletes with the worktree, links unfollowed):

- ``common/``: a folder that stands for the repository's git directory: a link to each of its
  entries but ``config``, which is the copy without credentials;
- ``bin/git``: a ``git`` to put first on the commands' PATH. Run in the task's worktree (not in
  a repository made inside it), it runs git with that folder as the common git directory
  (``GIT_COMMON_DIR``, with ``GIT_DIR`` the worktree's own and ``GIT_WORK_TREE``); anywhere
  else, or told where the repository is (``-C``, ``GIT_DIR``), it is git as it was.

What git writes there goes where the links lead, where Claude Code's sandbox refuses writes as
it always did. Entries git adds to the git directory later (a ``packed-refs`` written by a
repack) are not linked: git there reads what was there when the task started.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from aca_flows.session.files import write_text_atomic

__all__ = ["git_shadow"]

WRAPPER = """#!/bin/sh
# Written by aca (aca_flows/sandbox/git_shadow.py): git in the task's worktree reads a copy of
# the repository's config without its credentials, which the sandbox does not show.
real={real}
worktree={worktree}
if [ -z "$GIT_DIR" ] && [ "$1" != "-C" ]; then
  here=$(pwd -P)
  while :; do
    if [ "$here" = "$worktree" ]; then
      GIT_DIR={admin} GIT_COMMON_DIR={common} GIT_WORK_TREE="$worktree" exec "$real" "$@"
    fi
    [ -e "$here/.git" ] && break
    case "$here" in "$worktree"/*) here=${{here%/*}} ;; *) break ;; esac
  done
fi
exec "$real" "$@"
"""


def git_shadow(worktree: Path, admin: Path, common: Path, clean_config: str) -> Path | None:
    """The folder that holds ``bin/git`` and ``common/`` for ``worktree`` (its git directory
    ``admin``, the repository's ``common``), ``clean_config`` standing for ``common/config``;
    ``None`` when there is no git to wrap or the folder cannot be made (git then stops at the
    config, as without it)."""
    real = shutil.which("git")
    if real is None:
        return None
    folder = admin / "aca-git"
    try:
        shadow = folder / "common"
        shadow.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in common.iterdir():
            link = shadow / entry.name
            if entry.name != "config" and not link.is_symlink():
                link.symlink_to(entry)
        write_text_atomic(shadow / "config", clean_config, redact=False, durable=False)
        script = WRAPPER.format(
            real=shlex.quote(os.path.realpath(real)),
            worktree=shlex.quote(str(worktree)),
            admin=shlex.quote(str(admin)),
            common=shlex.quote(str(shadow)),
        )
        (folder / "bin").mkdir(mode=0o700, exist_ok=True)
        write_text_atomic(folder / "bin" / "git", script, redact=False, durable=False)
        (folder / "bin" / "git").chmod(0o700)
    except OSError:
        return None
    return folder
