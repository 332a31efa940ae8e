"""The bubblewrap command line for one task worktree, and whether bubblewrap can start here.

What a sandboxed command sees (``bwrap_argv``):

- the whole file system read-only (``--ro-bind / /``), with a fresh ``/dev``, a fresh ``/proc``
  of its own PID namespace (no other process, aca's included, is visible), a private ``/tmp``;
- every home (``/home``, ``/root``, ``$HOME``) and ``/run`` (sockets of docker, ssh-agent,
  dbus) replaced by empty tmpfs folders; ``HOME`` is the empty ``/tmp/home``; aca's own folder
  in a home (``~/.aca``: the warm runner's socket and token, the local server's state) is
  hidden again under any path shown read-only, the repository included;
- the repository read-only again, its ``.aca`` folder hidden, and the task's worktree the one
  writable place; the repository's git directory stays read-only, so ``git status``/``diff``
  work in the worktree but nothing can be planted in ``.git`` (aca commits outside);
- no network unless asked (``--unshare-net``: a loopback of its own, nothing listening);
- a new session (no terminal to push keystrokes into), and death with its parent; no
  capabilities, and no user namespaces to regain them in;
- CPU time, address space, file size, process count and core dump limits set by ``prlimit``
  inside the sandbox, so they bind the command and everything it starts.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "INSTALL_HINT",
    "Limits",
    "MountPlan",
    "bwrap_argv",
    "bwrap_problem",
    "mount_plan",
    "protected_paths",
]

INSTALL_HINT = "apt-get install bubblewrap (Debian/Ubuntu; dnf install bubblewrap on Fedora)"
SANDBOX_HOME = "/tmp/home"
# Folders whose content is never shown to a command: users' homes and runtime sockets.
HIDDEN_ALWAYS = ("/home", "/root", "/run", "/var/run")


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int
    file_size_bytes: int
    max_processes: int

    def prlimit_args(self) -> list[str]:
        return [
            f"--cpu={self.cpu_seconds}",
            f"--as={self.memory_bytes}",
            f"--fsize={self.file_size_bytes}",
            f"--nproc={self.max_processes}",
            "--core=0",
        ]


@dataclass(frozen=True)
class MountPlan:
    """The paths the sandbox treats specially, worked out once when a task's sandbox is made
    (never again from files the agent can change)."""

    worktree: Path
    repository: Path | None = None  # the repository's top folder, shown read-only
    git_dirs: tuple[Path, ...] = ()  # git directories the worktree points into, read-only
    hidden: tuple[Path, ...] = ()  # folders replaced by empty ones
    read_only: tuple[Path, ...] = ()  # extra paths shown read-only (toolchains in a home)
    # aca's folders in the homes (``~/.aca``): hidden last, whatever is shown around them. The
    # warm runner there runs what it is sent outside the sandbox (cli/warm_runner.py).
    private: tuple[Path, ...] = ()


def mount_plan(
    worktree: Path, *, read_only: tuple[Path, ...] = (), home: Path | None = None
) -> MountPlan:
    """The mount plan of ``worktree``, following its ``.git`` file to the repository."""
    worktree = Path(worktree).resolve()
    git_dirs = _git_dirs_of(worktree)
    repository = None
    hidden = {Path(p) for p in HIDDEN_ALWAYS}
    private = set()
    for home_dir in (home or Path.home(), Path(pwd.getpwuid(os.getuid()).pw_dir)):
        if home_dir.resolve() != Path("/"):
            hidden.add(home_dir.resolve())
        if (home_dir / ".aca").is_dir():
            private.add((home_dir / ".aca").resolve())
    if git_dirs and git_dirs[-1].name == ".git":
        repository = git_dirs[-1].parent
        aca_dir = repository / ".aca"
        if aca_dir.is_dir():
            hidden.add(aca_dir)  # other tasks' worktrees, transcripts, the journal
    return MountPlan(
        worktree=worktree,
        repository=repository,
        git_dirs=git_dirs,
        hidden=tuple(sorted(hidden)),
        read_only=tuple(Path(p).resolve() for p in read_only),
        private=tuple(sorted(private)),
    )


def protected_paths(plan: MountPlan) -> list[Path]:
    """What a command must never write besides the worktree's own git files: the repository's
    git directories, the user's checkout (its top-level entries) and aca's session records.
    For sandboxes that take a deny list of paths (Claude Code's) rather than mounts."""
    paths = list(plan.git_dirs)
    if plan.repository is not None:
        paths += [p for p in sorted(plan.repository.iterdir()) if p.name not in (".aca", ".git")]
        paths += [plan.repository / ".aca" / name for name in ("sessions", "config.toml")]
    return paths


def bwrap_argv(
    plan: MountPlan,
    command: list[str],
    *,
    limits: Limits,
    network: bool,
    bwrap: str = "bwrap",
) -> list[str]:
    """The full command line: bwrap, its mounts, then ``prlimit ... -- command``."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    argv += ["--tmpfs", "/tmp"]
    # Later mounts go on top of earlier ones: hide first, then show what the task needs.
    # ``layers``: each folder mounted so far, and whether it shows the host's files there.
    layers: list[tuple[Path, bool]] = [(Path("/"), True), (Path("/tmp"), False)]
    inside_repository = [p for p in plan.hidden if plan.repository in p.parents]
    for path in plan.hidden:
        if path.is_dir() and not path.is_symlink() and path not in inside_repository:
            argv += ["--tmpfs", str(path)]
            layers.append((path, False))
    argv += ["--dir", SANDBOX_HOME]
    for path in plan.read_only:  # before the repository: a parent shown must not show .aca
        argv += ["--ro-bind-try", str(path), str(path)]
        layers.append((path, True))
    if plan.repository is not None:
        argv += ["--ro-bind", str(plan.repository), str(plan.repository)]
        layers.append((plan.repository, True))
        for path in inside_repository:
            argv += ["--tmpfs", str(path)]
            layers.append((path, False))
    for path in plan.private:  # hidden again wherever a path shown around it shows it
        if _shown(path, layers) and path.is_dir() and not path.is_symlink():
            argv += ["--tmpfs", str(path)]
    argv += ["--bind", str(plan.worktree), str(plan.worktree)]
    for git_dir in plan.git_dirs:
        argv += ["--ro-bind", str(git_dir), str(git_dir)]
    if network:
        # DNS on systemd machines lives under the hidden /run.
        argv += ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
    else:
        argv += ["--unshare-net"]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    # No user namespaces inside: they are how a process would regain capabilities.
    argv += ["--unshare-user", "--disable-userns"]
    argv += ["--cap-drop", "ALL", "--die-with-parent", "--new-session"]
    argv += ["--chdir", str(plan.worktree)]
    argv += ["--", _prlimit(), *limits.prlimit_args(), "--", *command]
    return argv


def _shown(path: Path, layers: list[tuple[Path, bool]]) -> bool:
    """Whether ``path`` shows the host's files under ``layers``: the last mount over it (a
    mount replaces everything mounted beneath it before) decides."""
    over = [shows for folder, shows in layers if folder == path or folder in path.parents]
    return over[-1]


def bwrap_problem(bwrap: str = "bwrap") -> str | None:
    """Why bubblewrap cannot sandbox commands here, or None when it can (checked once per
    PATH: starting bwrap costs a few milliseconds)."""
    return _probe(bwrap, os.environ.get("PATH", os.defpath))


@functools.cache
def _probe(bwrap: str, path: str) -> str | None:
    found = shutil.which(bwrap, path=path)
    if found is None:
        return f"bubblewrap ('{bwrap}') is not installed"
    if shutil.which("prlimit", path=path) is None:
        return "prlimit (package util-linux) is not installed"
    try:
        done = subprocess.run(
            [found, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid"]
            + ["--unshare-net", "--unshare-user", "--disable-userns", "--die-with-parent"]
            + ["--new-session", "--", "/bin/true"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot start: {exc}"
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        return f"bubblewrap cannot start here: {detail}"
    return None


def _prlimit() -> str:
    return shutil.which("prlimit") or "prlimit"


def _git_dirs_of(worktree: Path) -> tuple[Path, ...]:
    """The worktree's own git directory and the repository's common one (``.git``)."""
    dot_git = worktree / ".git"
    if dot_git.is_dir():
        return (dot_git.resolve(),)
    try:
        line = dot_git.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ()
    if not line.startswith("gitdir:"):
        return ()
    own = (worktree / line.removeprefix("gitdir:").strip()).resolve()
    if not _is_git_dir(own) or worktree in own.parents:
        return ()
    try:
        common = (own / (own / "commondir").read_text(encoding="utf-8").strip()).resolve()
    except OSError:
        return (own,)
    return (own, common) if _is_git_dir(common) else (own,)


def _is_git_dir(path: Path) -> bool:
    # A .git file could name any folder; only a git directory is shown (read-only).
    marker = (path / "objects").is_dir() or (path / "commondir").is_file()
    return (path / "HEAD").is_file() and marker
