"""aca's own git: every command it runs ignores what an agent could have planted.

An agent works in a worktree and (sandboxed) cannot write the repository's ``.git``; but with
``[sandbox] mode = "off"`` it can, and even sandboxed it owns every file of its worktree,
``.git`` file included. So every git command aca runs, through ``AcaRepo`` or ``HardenedGit``:

- runs no hooks (``core.hooksPath=/dev/null``; commits also pass ``--no-verify``) and no
  file-system monitor (``core.fsmonitor=false``);
- ignores ``/etc/gitconfig`` (``GIT_CONFIG_NOSYSTEM``) and overrides the keys of repository
  config that name programs git would start: ``core.sshCommand``, ``core.pager``,
  ``core.editor``, ``sequence.editor``, ``core.askPass``, ``diff.external``, ``gpg.program``,
  and looks at no submodule (a nested repository's own config could name a filter);
- in a task's worktree, uses the git directory aca recorded when it made the worktree
  (``GIT_DIR``/``GIT_WORK_TREE``), never the ``.git`` file the agent could rewrite;
- finds git, and git the programs it starts, in the absolute folders of ``PATH`` only;
- runs, in aca's worker threads (a run's landings and worktrees), in a session of its own, so
  a signal to aca's process group (a terminal's Ctrl-C) does not kill it halfway through a
  landing: aca's own handlers decide what stops. The stop signals are blocked in the thread
  while it starts, and so in git: a child is in aca's group for a moment before it makes its
  session, and Python resets its handlers first; a Ctrl-C in that moment killed the git of a
  finished task's landing (one in four of 600 under a stream of signals), and the task was
  paid again on resume.

The overrides travel as ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n``
(git 2.31+), which git also hands to the git processes it starts itself. Not covered: a
filter or textconv driver the user configured (``filter.<name>.clean``) still runs for the
paths ``.gitattributes`` assigns it; their names cannot be known in advance, and the
repository config that defines them is read-only to sandboxed agents (docs/security.md).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import git

from aca_flows._search_path import absolute_folders

__all__ = ["GIT_SAFETY_CONFIG", "AcaRepo", "HardenedGit", "hardened_environment"]

GIT_SAFETY_CONFIG: dict[str, str] = {
    "core.hooksPath": "/dev/null",
    "core.fsmonitor": "false",
    "core.sshCommand": "false",
    "core.pager": "cat",
    "core.editor": "false",
    "sequence.editor": "false",
    "core.askPass": "false",
    "diff.external": "false",
    "gpg.program": "false",
    "commit.gpgSign": "false",
    "diff.ignoreSubmodules": "all",
    "submodule.recurse": "false",
    "protocol.ext.allow": "never",
}


def hardened_environment() -> dict[str, str]:
    """The variables that make git ignore system config and apply ``GIT_SAFETY_CONFIG``, and
    a ``PATH`` of absolute folders only (``absolute_folders``)."""
    env = {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_COUNT": str(len(GIT_SAFETY_CONFIG)),
        "PATH": absolute_folders(),  # git starts in a worktree, where the agent writes
    }
    for index, (key, value) in enumerate(GIT_SAFETY_CONFIG.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


class HardenedGit(git.Git):
    """``git.Git`` whose every command runs with ``hardened_environment()``, in a session of
    its own."""

    def __init__(self, working_dir: Any = None, *, git_dir: Path | None = None):
        super().__init__(working_dir)
        self.update_environment(**hardened_environment())
        if git_dir is not None:
            # A worktree's own .git file is the agent's to rewrite: name the real one.
            self.update_environment(GIT_DIR=str(git_dir), GIT_WORK_TREE=str(working_dir))

    def execute(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        # A terminal's Ctrl-C reaches every process of aca's group: a git command it killed
        # while a finished task landed lost the work (`git add`), or left the task recorded
        # pending with its commit on the branch (the change log's). The run's git runs in
        # worker threads, which the signal does not reach: there aca decides when to stop.
        # In the main thread a Ctrl-C raises KeyboardInterrupt, which leaves the command:
        # it stops with aca, as before (a fetch of --repo, not left running orphaned).
        if threading.current_thread() is threading.main_thread():
            return super().execute(command, *args, **kwargs)
        kwargs.setdefault("start_new_session", True)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            return super().execute(command, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class AcaRepo(git.Repo):
    """``git.Repo`` whose ``.git`` runs hardened commands; aca opens repositories with it."""

    GitCommandWrapperType = HardenedGit
