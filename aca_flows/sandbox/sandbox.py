"""``Sandbox``: where every command aca runs for an agent goes, bound to one task's worktree.

``Sandbox.for_worktree(path, settings, git_dir=..., repository=...)`` works out the mounts
once, from what was recorded when the worktree was made; ``run(command)`` runs it
with ``/bin/sh -c`` under bubblewrap (see ``bwrap.py`` for what it can and cannot reach),
with an environment built from an allow-list, limits, a wall-clock timeout and capped output.

``[sandbox] mode = "off"`` runs commands directly, as the user, with a scrubbed environment;
aca warns about it on every run. With mode ``"bwrap"`` (the default) and no working
bubblewrap, ``run`` raises ``SandboxUnavailable`` naming what to install.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aca_flows.errors import AcaError
from aca_flows.sandbox.bwrap import (
    INSTALL_HINT,
    SANDBOX_HOME,
    Limits,
    MountPlan,
    bwrap_argv,
    bwrap_problem,
    mount_plan,
    protected_paths,
    read_rules,
)
from aca_flows.sandbox.git_shadow import git_shadow
from aca_flows.sandbox.process import CommandResult, run_process
from aca_flows.session.secret_names import is_secret_variable, names_a_location
from aca_flows.session.secret_values import register_handed_over
from aca_flows.settings import SandboxSection

__all__ = [
    "BASE_ENV_NAMES",
    "OFF_WARNING",
    "Sandbox",
    "SandboxUnavailable",
    "check_sandbox",
    "clean_environment",
    "sandbox_environment",
]

log = logging.getLogger("aca.sandbox")

# The variables a command gets from aca's environment, besides [sandbox] env.
BASE_ENV_NAMES = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ")
OFF_WARNING = (
    '[sandbox] mode = "off": agent and verify commands run unsandboxed, as you, with your '
    "files, network and processes in reach. Install bubblewrap and remove that setting."
)
# Claude Code's sandbox shows the repository's git config as it is, and cannot show a copy:
# one that holds a credential is unreadable there, and git stops at it.
CREDENTIAL_WARNING = (
    "{config} holds a credential (a token in a remote URL, an http extraHeader): Claude Code's "
    "sandbox cannot show the agent a copy without it, so git does not run in its Bash; aca "
    "still commits the work. To give the agent git, keep credentials out of the repository's "
    "config (actions/checkout: persist-credentials: false; a credential helper instead)."
)
NO_GIT_NOTE = (
    "git cannot run in this worktree: the repository's git configuration is hidden from your "
    "commands because it holds a credential. Do not try git commands or work around them; "
    "aca commits your changes when you are done."
)
# Any variable whose name contains one of these is treated as a secret (mode "off").
# Inherited git plumbing variables would point commands at the user's checkout, not the worktree.
_GIT_LOCATION_VARS = {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"}


class SandboxUnavailable(AcaError):
    """bubblewrap is required ([sandbox] mode = "bwrap") but cannot start here."""


def check_sandbox(settings: SandboxSection, *, claude_code: bool = False) -> None:
    """Raise ``SandboxUnavailable`` when agent commands could not run sandboxed.

    Called before a run starts and before every command (the probe is cached). With
    ``claude_code``, also checks for socat, which Claude Code's own sandbox needs on Linux.
    """
    if settings.mode == "off":
        return
    problem = bwrap_problem()
    if problem is None and claude_code and shutil.which("socat") is None:
        problem = "socat is not installed (Claude Code's sandbox needs it: apt-get install socat)"
    if problem:
        raise SandboxUnavailable(
            f"aca runs agent and verify commands in a bubblewrap sandbox, but {problem}. "
            f"Install it ({INSTALL_HINT}; Claude Code's sandbox also needs socat), or set "
            '[sandbox] mode = "off" in aca.toml to run them unsandboxed (not recommended).'
        )


# Byte-code caches written by a verify command are byproducts, not the agent's work: without
# this, a verify that imports a module leaves a __pycache__ to be committed.
_NO_BYPRODUCTS = {"PYTHONDONTWRITEBYTECODE": "1"}


def sandbox_environment(
    settings: SandboxSection, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment inside the sandbox: the allow-list only, with a fake HOME and TMPDIR."""
    environ = os.environ if environ is None else environ
    register_handed_over(settings.env, environ)
    names = [*BASE_ENV_NAMES, *settings.env]
    env = {name: environ[name] for name in names if name in environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=SANDBOX_HOME, TMPDIR="/tmp")
    env.update(_NO_BYPRODUCTS)
    return env


def clean_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Mode "off": a copy of the environment without secrets or git location variables. A
    variable named like a credential that names a place or a pattern (``SSH_KEY_PATH``,
    ``TEST_FILE_PAT=tests/**``) is kept, as the redactor keeps its value: it is no secret."""
    environ = os.environ if environ is None else environ
    clean = {
        name: value
        for name, value in environ.items()
        if name not in _GIT_LOCATION_VARS
        and (not is_secret_variable(name) or names_a_location(name.upper(), value))
    }
    return clean | _NO_BYPRODUCTS


@dataclass(frozen=True)
class Sandbox:
    """The sandbox of one worktree. ``network`` defaults to ``[sandbox] network``."""

    worktree: Path
    settings: SandboxSection = field(default_factory=SandboxSection)
    network: bool = False
    mounts: MountPlan | None = None

    @classmethod
    def for_worktree(
        cls,
        worktree: Path,
        settings: SandboxSection | None = None,
        *,
        network: bool | None = None,
        git_dir: Path | None = None,
        repository: Path | None = None,
    ) -> Sandbox:
        """The sandbox of ``worktree``. ``git_dir`` and ``repository``: what was recorded when
        the worktree was made (``TaskWorktree.git_dir`` and ``.repo_root``). Without them the
        mounts follow the worktree's ``.git`` file, which is right only before an agent ran
        there (after, git in the sandbox may find no repository; ``mount_plan`` never shows
        another one)."""
        settings = settings or SandboxSection()
        mounts = None
        if settings.mode == "off":
            log.warning(OFF_WARNING)  # once per task run: the user chose this, keep saying so
        else:
            extra = tuple(Path(p).expanduser() for p in settings.read_only_paths)
            mounts = mount_plan(
                Path(worktree), git_dir=git_dir, repository=repository, read_only=extra
            )
        return cls(
            worktree=Path(worktree),
            settings=settings,
            network=settings.network if network is None else network,
            mounts=mounts,
        )

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(
            cpu_seconds=s.cpu_seconds,
            memory_bytes=s.memory_mb * 1024 * 1024,
            file_size_bytes=s.file_size_mb * 1024 * 1024,
            tmp_bytes=s.tmp_size_mb * 1024 * 1024,
            max_processes=s.max_processes,
        )

    def claude_code_options(self) -> dict[str, Any]:
        """The call options of Claude Code's own sandbox, worked out with the mounts before the
        agent ran: what it must not write (``protected_paths``: the repository beyond the
        worktree), must not read besides the homes (``unreadable_paths``: the user's checkout,
        the git config files that hold a credential), may read inside them
        (``readable_paths``: the worktree, git's folders, ``read_only_paths``), ``network``;
        and, when a git config is unreadable, ``bin_folders``: a ``git`` that reads a copy of it
        without credentials (``git_shadow``), or where there is none (a submodule's config, a
        worktree's), ``append_system_prompt`` telling the agent that git cannot run
        (``NO_GIT_NOTE``), while the user is told why (``CREDENTIAL_WARNING``)."""
        options: dict[str, Any] = {"network": self.network}
        if self.mounts is None:
            return {**options, "protected_paths": [], "unreadable_paths": [], "readable_paths": []}
        unreadable, readable = read_rules(self.mounts)
        if self.mounts.git_configs:
            # In the worktree's git directory: readable and not writable, as that is.
            shadow = self._git_shadow()
            if shadow is not None:
                options["bin_folders"] = [str(shadow / "bin")]
            else:
                config = self.mounts.git_configs[0][1]
                log.warning(CREDENTIAL_WARNING.format(config=config))
                options["append_system_prompt"] = NO_GIT_NOTE
        return options | {
            "protected_paths": [str(p) for p in protected_paths(self.mounts)],
            "unreadable_paths": [str(p) for p in unreadable],
            "readable_paths": [str(p) for p in readable],
        }

    def _git_shadow(self) -> Path | None:
        """``git_shadow`` for a linked worktree whose repository's own config is the one that
        holds a credential; None for any other case."""
        plan = self.mounts
        if plan is None or len(plan.git_dirs) != 2 or len(plan.git_configs) != 1:
            return None
        admin, common = plan.git_dirs
        copy, config = plan.git_configs[0]
        if config != common / "config":
            return None
        try:
            clean = copy.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        return git_shadow(plan.worktree, admin, common, clean)

    def command_line(self, command: str) -> list[str]:
        """What runs for ``command``: bubblewrap around ``/bin/sh -c command``."""
        shell = ["/bin/sh", "-c", command]
        if self.mounts is None:
            return shell
        return bwrap_argv(self.mounts, shell, limits=self.limits, network=self.network)

    async def run(
        self, command: str, *, timeout_seconds: float, output_limit_bytes: int
    ) -> CommandResult:
        """Run ``command`` in the worktree, sandboxed unless mode is "off"."""
        check_sandbox(self.settings)
        sandboxed = self.mounts is not None
        environ = sandbox_environment(self.settings) if sandboxed else clean_environment()
        return await run_process(
            self.command_line(command),
            command=command,
            cwd=self.worktree,
            environ=environ,
            timeout_seconds=timeout_seconds,
            output_limit_bytes=output_limit_bytes,
            max_processes=self.settings.max_processes if sandboxed else None,
            max_memory_bytes=self.limits.total_memory_bytes if sandboxed else None,
        )
