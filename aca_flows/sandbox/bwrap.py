"""The bubblewrap command line for one task worktree, and whether bubblewrap can start here.

What a sandboxed command sees (``bwrap_argv``):

- the whole file system read-only (``--ro-bind / /``), with a fresh ``/dev``, a fresh ``/proc``
  of its own PID namespace (no other process, aca's included, is visible), a private ``/tmp``;
- every home (``/home``, ``/root``, ``$HOME``), ``/run`` (sockets of docker, ssh-agent,
  dbus) and ``/var/tmp`` replaced by empty tmpfs folders; ``HOME`` is the empty
  ``/tmp/home``; aca's own folder in a home (``~/.aca``: the warm runner's socket and token,
  the local server's state) is hidden again under any path shown read-only;
- of the repository, only what git in the worktree needs: the repository's folder is replaced
  by an empty read-only one (its working files, untracked ``.env`` files and ``.aca`` are not
  there), in which the repository's git directory (``.git``, read-only, its config files
  without credentials: its own, the worktrees' and the submodules') and the task's worktree
  (the one writable place) are shown again; so
  ``git status``/``diff``/``log`` work in the worktree but nothing can be planted in ``.git``
  (aca commits outside);
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
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aca_flows._search_path import absolute_folders
from aca_flows.sandbox.git_config import configs_without_credentials

__all__ = [
    "INSTALL_HINT",
    "Limits",
    "MountPlan",
    "bwrap_argv",
    "bwrap_problem",
    "mount_plan",
    "protected_paths",
    "read_rules",
]

INSTALL_HINT = "apt-get install bubblewrap (Debian/Ubuntu; dnf install bubblewrap on Fedora)"
SANDBOX_HOME = "/tmp/home"
# Folders whose content is never shown to a command: users' homes, runtime sockets, and
# other programs' temporary files kept across boots.
HIDDEN_ALWAYS = ("/home", "/root", "/run", "/var/run", "/var/tmp")
# A tmpfs takes up to half the machine's memory unless given a size, and what is written to it
# is no process's address space: sized, each folder hidden by an empty one holds at most this
# (``/tmp`` and ``/var/tmp``: ``[sandbox] tmp_size_mb``).
EMPTY_FOLDER_BYTES = 16 * 1024 * 1024
TMP_FOLDERS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_bytes: int
    file_size_bytes: int
    max_processes: int
    tmp_bytes: int

    @property
    def total_memory_bytes(self) -> int:
        """What a command's processes may hold together: each one's address space, and what
        its private folders (``/tmp``, ``/var/tmp``, ``/dev/shm``) hold."""
        return self.memory_bytes + 3 * self.tmp_bytes

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
    repository: Path | None = None  # the repository's top folder: hidden but for git_dirs
    git_dirs: tuple[Path, ...] = ()  # the worktree's git directory and the common one, read-only
    hidden: tuple[Path, ...] = ()  # folders replaced by empty ones
    read_only: tuple[Path, ...] = ()  # extra paths shown read-only (toolchains in a home)
    # (copy, config file): config files of the git dirs shown as copies without credentials.
    git_configs: tuple[tuple[Path, Path], ...] = ()
    # aca's folders in the homes (``~/.aca``): hidden again under any path shown around them.
    # The warm runner there runs what it is sent outside the sandbox (cli/warm_runner.py).
    private: tuple[Path, ...] = ()
    # The repository's other checkouts (``other_checkouts``): hidden whole, as it is.
    checkouts: tuple[Path, ...] = ()


def mount_plan(
    worktree: Path,
    *,
    git_dir: Path | None = None,
    repository: Path | None = None,
    read_only: tuple[Path, ...] = (),
    home: Path | None = None,
) -> MountPlan:
    """The mount plan of ``worktree``. ``git_dir`` and ``repository`` are what was recorded
    when the worktree was made (``TaskWorktree.git_dir``, ``.repo_root``); without them the
    worktree's ``.git`` file is read, which is only safe before an agent ran there. Either way
    only the repository's own git directory and its admin folder for this worktree are shown:
    a ``.git`` file pointing anywhere else widens nothing."""
    worktree = Path(worktree).resolve()
    if repository is not None:
        repository = Path(repository).resolve()
    if git_dir is None:
        git_dir = _git_dir_named_by(worktree)
    git_dirs, found = _checked_git_dirs(worktree, git_dir, repository)
    repository = repository or found
    hidden = {Path(p) for p in HIDDEN_ALWAYS}
    private = set()
    for home_dir in (home or Path.home(), Path(pwd.getpwuid(os.getuid()).pw_dir)):
        if home_dir.resolve() != Path("/"):
            hidden.add(home_dir.resolve())
        if (home_dir / ".aca").is_dir():
            private.add((home_dir / ".aca").resolve())
    if repository is not None:
        aca_dir = repository / ".aca"
        if aca_dir.is_dir():
            hidden.add(aca_dir)  # other tasks' worktrees, transcripts, the journal
    return MountPlan(
        worktree=worktree,
        repository=repository,
        git_dirs=git_dirs,
        hidden=tuple(sorted(hidden)),
        # Nothing inside aca's own folders is shown, whatever asks for it.
        read_only=tuple(
            path
            for path in (Path(p).resolve() for p in read_only)
            if not any(_within(path, folder) for folder in private)
        ),
        git_configs=tuple(configs_without_credentials(git_dirs[-1])) if git_dirs else (),
        private=tuple(sorted(private)),
        checkouts=other_checkouts(git_dirs, worktree, repository),
    )


def other_checkouts(
    git_dirs: tuple[Path, ...], worktree: Path, repository: Path | None
) -> tuple[Path, ...]:
    """The repository's checkouts besides the task's worktree and ``repository``: the user's
    own linked worktrees (``<common>/worktrees/*/gitdir`` names each: git in the sandbox reads
    it) and, for a run in a linked worktree, the main checkout. Their untracked ``.env`` and
    unstaged work are the user's, as the repository's own are; aca's task worktrees are in
    its ``.aca``, hidden already."""
    common = _common_dir_of(repository) if repository is not None else None
    common = common or (git_dirs[-1] if git_dirs else None)
    if common is None:
        return ()
    # A bare repository's folder (`proj/.git`, its worktrees beside it) is no checkout.
    found = {common.parent} if common.name == ".git" and not _is_bare(common) else set()
    for gitdir in (common / "worktrees").glob("*/gitdir"):
        if (named := _named_by(gitdir)) is not None and named.name == ".git":
            found.add(named.parent)
    aca = repository / ".aca" if repository is not None else None
    checkouts = {path.resolve() for path in found if path.is_dir()}
    return tuple(
        sorted(
            path
            for path in checkouts
            if path not in (worktree, repository, Path("/"))
            and not _within(path, aca)
            # one in another is hidden with it (aca's task worktrees of the main checkout)
            and not any(_within(path, other) for other in checkouts if other != path)
        )
    )


def protected_paths(plan: MountPlan) -> list[Path]:
    """What a command must never write besides the worktree's own git files: the repository's
    git directories, the user's checkout (its top-level entries), aca's configuration there
    (``aca.toml``, ``.aca/config.toml``: the next run reads them, so they are denied before
    they exist), aca's records and the other tasks' worktrees found now. For sandboxes that
    take a deny list of paths (Claude Code's, which leaves ``/tmp`` writable: a checkout there
    would be too) rather than mounts."""
    paths = [*plan.git_dirs, *_around(plan)]
    if plan.repository is not None:
        aca = plan.repository / ".aca"
        paths += [p for p in _entries(plan.repository) if p.name not in (".aca", ".git")]
        paths += [aca / name for name in ("sessions", "config.toml")]
        if not (plan.repository / "aca.toml").exists():
            paths.append(plan.repository / "aca.toml")
        paths += [
            p for p in _entries(aca) if p.name not in ("sessions", "config.toml", "worktrees")
        ]
        paths += _beside_the_way(plan.worktree, aca / "worktrees")
    return paths


def read_rules(plan: MountPlan) -> tuple[list[Path], list[Path]]:
    """What a command must never read, and what it may read inside those folders, for sandboxes
    that take lists of paths (Claude Code's) rather than mounts: as the mounts show it, the
    user's checkout (its untracked ``.env`` files, aca's records, the other worktrees) is
    unreadable but for the worktree, the repository's git directories and the paths the user
    shows read-only (``read_only_paths``). The git config files that hold a credential are
    unreadable too: such a sandbox cannot show their copies without it (Claude Code's shows
    the git directories and their config itself), and git there stops at them. The homes are
    the caller's to hide: a sandbox of paths knows them."""
    unreadable = [plan.repository] if plan.repository is not None else []
    unreadable += [*_around(plan), *(config for _copy, config in plan.git_configs)]
    readable = [plan.worktree, *plan.git_dirs, *plan.read_only]
    return unreadable, readable


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _beside_the_way(worktree: Path, top: Path) -> list[Path]:
    """What lies beside the way from ``top`` down to ``worktree``: the other sessions' and
    tasks' worktrees (none when the worktree is not under ``top``)."""
    if top not in worktree.parents:
        return []
    way = [worktree, *worktree.parents[: worktree.parents.index(top) + 1]]
    return [p for folder in way[1:] for p in _entries(folder) if p not in way]


def bwrap_argv(
    plan: MountPlan,
    command: list[str],
    *,
    limits: Limits,
    network: bool,
    bwrap: str | None = None,
) -> list[str]:
    """The full command line: bwrap (by its path: ``installed``), its mounts, then
    ``prlimit ... -- command``."""
    bwrap = bwrap or installed("bwrap")

    def tmpfs(path: Path) -> list[str]:
        size = limits.tmp_bytes if path in TMP_FOLDERS else EMPTY_FOLDER_BYTES
        return [*(["--size", str(size)] if _sizes_tmpfs(bwrap) else []), "--tmpfs", str(path)]

    # bwrap's /dev and its /dev/shm are tmpfs of no size, writable: memory no limit counted.
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--remount-ro", "/dev"]
    argv += [*tmpfs(Path("/dev/shm")), "--proc", "/proc", *tmpfs(Path("/tmp"))]
    # Later mounts go on top of earlier ones: hide first, then show what the task needs.
    repository = _hidden_repository(plan)
    for path in (*plan.hidden, *plan.checkouts):
        if path.is_dir() and not path.is_symlink() and not _within(path, repository):
            argv += tmpfs(path)
    argv += ["--dir", SANDBOX_HOME]
    # Shown on request, before the repository is hidden: a parent shown must not show it.
    argv += _ro_binds(p for p in plan.read_only if not _within(p, repository))
    for path in (*plan.private, *plan.checkouts):  # hidden again under a path shown
        shown = any(_within(path, p) for p in plan.read_only if not _within(p, repository))
        if shown and not _within(path, repository) and path.is_dir() and not path.is_symlink():
            argv += tmpfs(path)
    if repository is not None:
        # The user's checkout is not the task's: its working files (an untracked .env, a
        # virtualenv, .aca) are replaced by an empty folder, made read-only once the git
        # directory and the worktree are shown in it again.
        argv += tmpfs(repository)
        inside = [p for p in plan.read_only if _within(p, repository)]
        argv += _ro_binds(inside)
        for path in plan.hidden:  # .aca stays hidden though a path asked for shows it
            if _within(path, repository) and any(_within(path, shown) for shown in inside):
                argv += tmpfs(path)
    argv += ["--bind", str(plan.worktree), str(plan.worktree)]
    # After the worktree (a .git folder in it stays read-only); the admin folder of a linked
    # worktree is in the common git directory.
    for git_dir in plan.git_dirs:
        if not any(other in git_dir.parents for other in plan.git_dirs):
            argv += ["--ro-bind", str(git_dir), str(git_dir)]
    for copy, config in plan.git_configs:
        argv += ["--ro-bind", str(copy), str(config)]
    if repository is not None:
        argv += ["--remount-ro", str(repository)]
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
    argv += ["--", installed("prlimit"), *limits.prlimit_args(), "--", *command]
    return argv


def bwrap_problem(bwrap: str = "bwrap") -> str | None:
    """Why bubblewrap cannot sandbox commands here, or None when it can (checked once per
    PATH: starting bwrap costs a few milliseconds)."""
    return _probe(bwrap, absolute_folders())


def installed(program: str) -> str:
    """``program``'s path, looked for in PATH's absolute folders only (its name when none has
    it: ``bwrap_problem`` refuses to start then). A relative entry (``.``,
    ``node_modules/.bin``, an empty one) names a folder of whatever directory a program starts
    in: aca starts bwrap in the task's worktree, where the agent could put a ``bwrap`` of its
    own, run as the user outside any sandbox."""
    return shutil.which(program, path=absolute_folders()) or program


@functools.cache
def _sizes_tmpfs(bwrap: str) -> bool:
    """Whether this bwrap takes ``--size`` (0.5 and later): an older one runs without it."""
    try:
        done = subprocess.run([bwrap, "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--size" in done.stdout + done.stderr


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


def _hidden_repository(plan: MountPlan) -> Path | None:
    """The repository folder to replace by an empty one: not when it is the worktree or inside
    it (a checkout used directly), nor the root."""
    repository = plan.repository
    if repository is None or repository == Path("/") or _within(repository, plan.worktree):
        return None
    return repository


def _within(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def _ro_binds(paths) -> list[str]:
    argv: list[str] = []
    for path in paths:
        argv += ["--ro-bind-try", str(path), str(path)]
    return argv


def _git_dir_named_by(worktree: Path) -> Path | None:
    """The git directory the worktree's ``.git`` names now: a ``.git`` folder, or the target
    of a ``.git`` file. Read only when the plan is made before the agent ran."""
    dot_git = worktree / ".git"
    if dot_git.is_symlink():
        return None
    if dot_git.is_dir():
        return dot_git
    try:
        line = dot_git.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not line.startswith("gitdir:"):
        return None
    return worktree / line.removeprefix("gitdir:").strip()


def _checked_git_dirs(
    worktree: Path, git_dir: Path | None, repository: Path | None
) -> tuple[tuple[Path, ...], Path | None]:
    """The git directories to show, and the repository they belong to: the worktree's own
    ``.git`` folder, or a linked worktree's admin folder ``<common>/worktrees/<name>`` (which
    git made for this very worktree: its ``gitdir`` file names the worktree's ``.git``) and the
    common directory ``<common>``, ``<repository>/.git`` when the repository is known. Any
    other directory, however much a git directory it is, is never shown: ``()``."""
    if git_dir is None:
        return (), None
    own = Path(git_dir).resolve()
    if own == worktree / ".git" and not (worktree / ".git").is_symlink():
        if _is_git_dir(own) and repository in (None, worktree):
            return (own,), worktree
        return (), None
    common = own.parent.parent
    if own.parent.name != "worktrees" or worktree in own.parents:
        return (), None
    if not (_is_git_dir(own) and _is_git_dir(common)):
        return (), None
    # Compared without following the worktree's .git: the agent may have replaced it.
    points_back = _named_by(own / "gitdir")
    if points_back is None or points_back.name != ".git":
        return (), None
    if points_back.parent.resolve() != worktree:
        return (), None
    named_common = _named_by(own / "commondir")
    if named_common is not None and named_common.resolve() != common:
        return (), None
    if repository is not None and _common_dir_of(repository) != common:
        return (), None
    return (own, common), repository or (common.parent if common.name == ".git" else None)


def _named_by(file: Path) -> Path | None:
    """The path a git admin file holds (absolute, or relative to its folder), normalized."""
    try:
        text = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return Path(os.path.normpath(file.parent / text)) if text else None


def _is_bare(git_dir: Path) -> bool:
    try:
        config = (git_dir / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"(?im)^\s*bare\s*=\s*true\s*$", config) is not None


def _around(plan: MountPlan) -> list[Path]:
    """The other checkouts that hold none of what the task works in: a sandbox of path
    rules (Claude Code's) denies a folder with all it holds, where bwrap's mounts show the
    worktree again inside one hidden."""
    inner = [plan.worktree, *([plan.repository] if plan.repository else [])]
    return [c for c in plan.checkouts if not any(_within(path, c) for path in inner)]


def _common_dir_of(repository: Path) -> Path | None:
    """The common git directory of the user's checkout: its ``.git`` folder, or where its
    ``.git`` file points (``git init --separate-git-dir``), or for a linked worktree the
    directory its admin folder's ``commondir`` names (where aca's task worktrees are made)."""
    dot_git = repository / ".git"
    if dot_git.is_dir():
        return dot_git.resolve()
    try:
        line = dot_git.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not line.startswith("gitdir:"):
        return None
    own = (repository / line.removeprefix("gitdir:").strip()).resolve()
    common = _named_by(own / "commondir")
    return common.resolve() if common is not None else own


def _is_git_dir(path: Path) -> bool:
    # A .git file could name any folder; only a git directory is shown (read-only).
    marker = (path / "objects").is_dir() or (path / "commondir").is_file()
    return (path / "HEAD").is_file() and marker
