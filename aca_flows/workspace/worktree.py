"""One git worktree per task, under ``.aca/worktrees/<session-id>/<task-id>``.

A task's worktree is created from the session branch's head when the task starts, so it sees
the commits of the tasks it depends on. Its HEAD is detached: a branch ``aca/<sid>/<tid>``
could not coexist with the session branch ``aca/<sid>`` (git refs are files and folders).

Creating a worktree first discards whatever a crash left at that path, including a worktree
still locked by an interrupted ``git worktree add``, so a retried task starts clean.

A task may take up the worktree of a task that ended instead (``set_aside``, then ``create``
with it as ``spare``): making a worktree writes every file of the tree, and removing it deletes
them all, about 0.2 s of the kernel's time per task on a tree of 500 files on this machine's
ext4 (bench/scale.py), growing with the tree. Taken up, it is moved to the task's path and
brought to the session branch head by git, which rewrites only the files that differ and
removes every file that is not the head's (untracked, ignored, nested repositories): nothing
the task before left stays. Its ``.git`` file and its admin entry's path are aca's to write
at each move, from the git dir recorded when it was made, never read from the agent's file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import git

from aca_flows._files import readable
from aca_flows.session.layout import AcaDir
from aca_flows.workspace.conflicts import MergeConflictError
from aca_flows.workspace.file_lock import FileLock
from aca_flows.workspace.hardened_git import AcaRepo, HardenedGit
from aca_flows.workspace.repository import (
    OBJECT_ID,
    is_ancestor,
    linked_worktree_path,
    session_branch_head_kept,
)

__all__ = [
    "SPARE_PREFIX",
    "TaskWorktree",
    "changed_since",
    "clip_patch",
    "discard_spare_worktrees",
    "discard_worktree",
    "list_worktrees",
]

# The folder name of a worktree set aside (``set_aside``), or set apart to be removed later
# (``_set_apart``): no task id begins with a dot.
SPARE_PREFIX = ".spare-"
APART_PREFIX = ".apart-"


@dataclass(frozen=True)
class TaskWorktree:
    """A task's private checkout. ``base_sha`` is the session branch head it started from."""

    repo_root: Path
    session_id: str
    task_id: str
    path: Path
    base_sha: str
    git_dir: Path | None = None  # recorded at creation, before an agent could touch .git

    @classmethod
    def create(
        cls, repo: git.Repo, session_id: str, task_id: str, spare: TaskWorktree | None = None
    ) -> TaskWorktree:
        """Create a clean worktree at the session branch head, discarding any stale one; or
        take up ``spare`` (``set_aside``) as this task's, removed when it cannot be."""
        root = Path(repo.working_tree_dir)
        path = AcaDir(root).worktrees_dir(session_id) / task_id
        base = session_branch_head_kept(repo, session_id)
        if spare is not None and (taken := spare._taken_up(repo, path, task_id, base)):
            return taken
        path.parent.mkdir(parents=True, exist_ok=True)
        with _admin_lock(root, shared=True):  # the common case: other tasks add theirs too
            added = not path.exists() and _added(repo, path, base)
        if not added:
            with _admin_lock(root):
                # A crash's leftover there (a folder, a registered or locked worktree).
                _discard(repo, path)
                repo.git.worktree("add", "--detach", str(path), base)
        return cls(
            repo_root=root,
            session_id=session_id,
            task_id=task_id,
            path=path,
            base_sha=base,
            git_dir=_git_dir_of(path),
        )

    @property
    def git(self) -> git.Git:
        """A hardened git command runner for this worktree (``hardened_git``)."""
        return HardenedGit(str(self.path), git_dir=self.git_dir)

    def head(self) -> str:
        """The commit HEAD is at: read from the git dir recorded at creation while HEAD is
        detached at a commit, as aca leaves it (no git command); else asked of git."""
        if self.git_dir is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                text = (self.git_dir / "HEAD").read_text(encoding="utf-8").strip()
                if OBJECT_ID.fullmatch(text):
                    return text
        return self.git.rev_parse("HEAD")

    def onto(self, head: str, commit: str) -> TaskWorktree:
        """This worktree moved to ``head`` with ``commit``'s changes on it, uncommitted: the
        task's work put onto what landed since its base, for its checks to run on. Raises
        ``MergeConflictError`` when the changes do not apply there."""
        wt = self.git
        wt.checkout("--detach", "-q", head)
        try:
            wt.cherry_pick("--no-commit", commit)
        except git.GitCommandError:
            files = [f for f in wt.diff("--name-only", "--diff-filter=U", "-z").split("\0") if f]
            files = files or ["(unknown files)"]
            raise MergeConflictError(self.task_id, files, commit=commit) from None
        return dataclasses.replace(self, base_sha=head)

    def snapshot(self) -> str:
        """The worktree's files now, as a git tree (staged, and written to the object store):
        what ``restore`` brings them back to. Files git ignores are not in it."""
        self.git.add("-A")
        return self.git.write_tree()

    def restore(self, tree: str) -> list[str]:
        """The worktree's files back as ``snapshot`` gave ``tree``: changed ones restored, new
        ones removed (files git ignores stay). Returns the paths that had changed."""
        self.git.add("-A")
        changed = [p for p in self.git.diff("--cached", "--name-only", "-z", tree).split("\0") if p]
        if changed:
            self.git.read_tree("--reset", "-u", tree)
        # Every file git did not ignore is in ``tree``: one it takes now was hidden by an
        # ignore rule just undone (a check that wrote ``aca.toml`` and a ``.gitignore`` naming
        # it), and the next ``git add -A`` would commit what no check of the change saw.
        unveiled = self.git.ls_files("-z", "--others", "--exclude-standard").split("\0")
        for path in filter(None, unveiled):
            _remove_path(self.path / path)
        return sorted({*changed, *filter(None, unveiled)})

    def ignored_paths(self) -> list[str]:
        """Paths git ignores (``.gitignore``, ``.git/info/exclude``): a file, or a folder
        (without its trailing ``/``) that an ignore rule names, whose files git does not list.
        """
        listed = self.git.status("--porcelain", "-z", "--ignored=matching", "--untracked-files=all")
        return [entry[3:].rstrip("/") for entry in listed.split("\0") if entry.startswith("!! ")]

    def ignored_since(self, since: float) -> list[str]:
        """``ignored_paths`` written since ``since`` (a ``time.time()``): work that no commit
        can hold."""
        found = []
        for path in self.ignored_paths():
            with contextlib.suppress(OSError):
                if changed_since(self.path / path, since):
                    found.append(path)
        return sorted(found)

    def contains(self, commit: str) -> bool:
        """Whether ``commit`` is in the history this worktree's work starts from."""
        return is_ancestor(self.git, commit, self.base_sha)

    def paths_at_base(self) -> set[str]:
        """The files the base commit holds."""
        listed = self.git.ls_tree("-r", "-z", "--name-only", self.base_sha, stdout_as_string=False)
        return {os.fsdecode(path) for path in listed.split(b"\0") if path}

    def changed_files(self) -> list[str]:
        """Paths changed since ``base_sha``: committed, staged, unstaged or new (untracked
        files that ``.gitignore`` does not exclude)."""
        if self.head() == self.base_sha:
            # The common case in one command: against HEAD, which is the base, status lists
            # the staged, unstaged and untracked paths (a rename as both of its paths).
            listed = self.git.status("--porcelain", "-z", "--untracked-files=all", "--no-renames")
            return sorted({entry[3:] for entry in listed.split("\0") if entry[3:]})
        # -z: paths as they are (without it, git quotes a name with a space or an accent).
        changed = self.git.diff("--name-only", "-z", self.base_sha).split("\0")
        untracked = self.git.ls_files("-z", "--others", "--exclude-standard").split("\0")
        return sorted(path for path in {*changed, *untracked} if path)

    def diff(self, paths: list[str], limit: int) -> str:
        """The patch of ``paths`` against ``base_sha``, new files included, for a person to
        read (a failed task's work): cut at a line before ``limit`` characters, naming the
        files it leaves out. New files are marked intent-to-add in this worktree's index,
        so call it only on a worktree about to be discarded."""
        if not paths:
            return ""
        untracked = set(self.git.ls_files("-z", "--others", "--exclude-standard").split("\0"))
        new = [path for path in paths if path in untracked]
        if new:
            self.git.add("--intent-to-add", "--", *new)
        patch = self.git.diff("--no-ext-diff", "--no-textconv", self.base_sha, "--", *paths)
        return clip_patch(readable(patch), limit)

    def remove(self) -> None:
        """Remove the worktree and its folder. Safe to repeat; a missing worktree is fine."""
        discard_worktree(AcaRepo(self.repo_root), self.path)

    def set_aside(self) -> TaskWorktree | None:
        """This worktree moved out of its task's path (``SPARE_PREFIX``), for a later task to
        take up (``create``); removed, and ``None``, when it cannot be."""
        spare = self.path.with_name(f"{SPARE_PREFIX}{uuid.uuid4().hex[:12]}")
        try:
            if self.git_dir is None:
                raise OSError("no git dir recorded")
            with _admin_lock(self.repo_root, shared=True):
                self._move(spare)
        except OSError:
            _set_apart(AcaRepo(self.repo_root), spare if spare.exists() else self.path)
            return None
        return dataclasses.replace(self, path=spare, task_id="")

    def _taken_up(self, repo: git.Repo, path: Path, task_id: str, base: str):
        """This spare moved to ``path`` and brought to ``base``, with no file but the
        commit's: or removed, and ``None``, when it cannot be."""
        try:
            if path.exists() or path.is_symlink():
                with _admin_lock(self.repo_root):
                    _discard(repo, path)  # a crash's leftover there
            with _admin_lock(self.repo_root, shared=True):
                self._move(path)
            taken = dataclasses.replace(self, path=path, task_id=task_id, base_sha=base)
            head = (self.git_dir / "HEAD").read_text(encoding="utf-8").strip()
            if not OBJECT_ID.fullmatch(head):  # on a branch, which a reset would move
                raise OSError("HEAD is not detached")
            # --hard also ends a merge or cherry-pick the task before left half done.
            taken.git.reset("--hard", "-q", base)
            taken.git.clean("-ffdxq")  # untracked, ignored, nested repositories
            if left := _unseen_by_git(path):
                raise OSError(f"left after clean: {left}")
        except (OSError, UnicodeDecodeError, git.GitCommandError):
            _set_apart(repo, path if path.exists() else self.path)
            return None
        return taken

    def _move(self, path: Path) -> None:
        """Move the folder to ``path``, and tell git so: its admin entry's ``gitdir`` and the
        worktree's ``.git`` file, both written from the git dir recorded at its making (the
        agent may have made ``.git`` a folder or a link)."""
        os.rename(self.path, path)
        (self.git_dir / "gitdir").write_text(f"{path / '.git'}\n", encoding="utf-8")
        dot_git = path / ".git"
        if dot_git.is_dir() and not dot_git.is_symlink():
            shutil.rmtree(dot_git)
        else:
            dot_git.unlink(missing_ok=True)
        fd = os.open(dot_git, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"gitdir: {self.git_dir}\n")


def changed_since(path: Path, since: float) -> bool:
    """Whether the file ``path`` (a link itself, not followed) was written or changed since
    ``since`` (a ``time.time()``). By its inode's change time, which a write, a rename and a
    `touch -d` all set to now and nothing in the sandbox can set back; its modification time
    is the writer's to choose (`touch -d 2001-01-01`)."""
    return path.lstat().st_ctime >= since


def clip_patch(patch: str, limit: int) -> str:
    """``patch`` whole if it fits in ``limit`` characters, else cut at the end of a line, with
    a last line saying how much is left out and which files' changes are not shown at all."""
    if len(patch) <= limit:
        return patch
    cut = patch.rfind("\n", 0, limit) + 1 or limit
    shown, rest = patch[:cut], patch[cut:]
    headers = [line for line in rest.splitlines() if line.startswith("diff --git")]
    files = [line.split(" b/", 1)[-1] for line in headers]
    note = f"[... {len(rest)} more characters not shown"
    if files:
        note += f"; also changed: {', '.join(files[:20])}" + (" ..." if len(files) > 20 else "")
    return f"{shown}{note}]\n"


def list_worktrees(repo: git.Repo) -> list[dict[str, str]]:
    """``git worktree list --porcelain`` as dicts with ``worktree`` and optional ``locked``."""
    entries: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in repo.git.worktree("list", "--porcelain").splitlines():
        if not line.strip():
            if current:
                entries.append(current)
            current = {}
            continue
        key, _, value = line.partition(" ")
        current[key] = value
    if current:
        entries.append(current)
    return entries


def discard_worktree(repo: git.Repo, path: Path) -> None:
    """Unlock, remove and prune the worktree at ``path``, and delete the folder if left over."""
    root = Path(repo.working_tree_dir)
    with _admin_lock(root, shared=True):  # the common case: other tasks add or remove theirs
        if path.exists() and _removed(repo, path):
            return
    with _admin_lock(root):
        _discard(repo, path)


def discard_spare_worktrees(repo: git.Repo, session_id: str) -> None:
    """Remove the worktrees of ``session_id`` set aside and never taken up (a crash's), and
    those set apart; one that cannot be removed is left (a folder the agent made
    unremovable), never a reason to refuse the run."""
    folder = AcaDir(Path(repo.working_tree_dir)).worktrees_dir(session_id)
    for spare in [*folder.glob(f"{SPARE_PREFIX}*"), *folder.glob(f"{APART_PREFIX}*")]:
        with contextlib.suppress(OSError, git.GitCommandError):
            discard_worktree(repo, spare)


def _set_apart(repo: git.Repo, folder: Path) -> None:
    """Remove the worktree at ``folder``; when it cannot be (a folder in it the agent made
    unreadable), move it out of the way (``APART_PREFIX``), for a later run to try again: the
    task gets a new worktree either way."""
    try:
        discard_worktree(repo, folder)
    except (OSError, git.GitCommandError):
        with contextlib.suppress(OSError):
            folder.rename(folder.with_name(f"{APART_PREFIX}{uuid.uuid4().hex[:12]}"))


def _unseen_by_git(top: Path) -> str | None:
    """A path below ``top`` that git neither tracks nor cleans, or whose mode git does not set
    back: a ``.git`` below the top (git never lists one: a repository planted in a tracked
    folder); a file that is no regular file, link or folder (a FIFO a check would block on); a
    file or folder whose permissions are not the ones git makes (a folder made read-only); an
    empty folder, which git keeps only for a submodule, whose folder it never cleans (nor any
    submodule's, so a tree with ``.gitmodules`` is refused too). Links are not followed."""
    if (top / ".gitmodules").exists():
        return str(top / ".gitmodules")
    umask = _umask()
    folders = [top]
    while folders:
        folder = folders.pop()
        with os.scandir(folder) as entries:
            empty = True
            for entry in entries:
                empty = False
                if entry.is_symlink():
                    continue
                if entry.name == ".git":
                    if entry.path != str(top / ".git"):
                        return entry.path
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    made = 0o777
                    folders.append(Path(entry.path))
                elif stat.S_ISREG(mode):
                    made = 0o777 if mode & stat.S_IXUSR else 0o666
                else:
                    return entry.path
                if stat.S_IMODE(mode) != made & ~umask:
                    return entry.path
            if empty and folder != top:
                return str(folder)
    return None


def _umask() -> int:
    """The process's umask, read where it can be without setting it (setting it, even for a
    moment, would give a file another thread makes meanwhile the wrong mode)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022  # git's files then differ only where the user set another: not taken up


def _git_dir_of(path: Path) -> Path:
    """The worktree's git dir, as ``git rev-parse --absolute-git-dir`` would say, read from
    the ``.git`` file git just wrote (``gitdir: <path>``, relative with
    ``worktree.useRelativePaths``): one git command less per task."""
    text = (path / ".git").read_text(encoding="utf-8").strip()
    key, _, value = text.partition(": ")
    if key != "gitdir" or not value:
        return Path(HardenedGit(str(path)).rev_parse("--absolute-git-dir"))
    return Path(os.path.normpath(path / value))


def _added(repo: git.Repo, path: Path, base: str) -> bool:
    """The common case in one git command: nothing at ``path``, the worktree is added."""
    try:
        repo.git.worktree("add", "--detach", str(path), base)
    except git.GitCommandError:
        return False
    return True


def _removed(repo: git.Repo, path: Path) -> bool:
    """The common case in one git command: a worktree of ours at ``path`` is removed, with its
    folder and its admin entry (nothing left to prune)."""
    try:
        repo.git.worktree("remove", "--force", "--force", str(path))
    except git.GitCommandError:
        return False
    return not path.exists()


def _admin_lock(root: Path, *, shared: bool = False) -> FileLock:
    # `git worktree prune` can delete the admin folder of a worktree another thread or process
    # is adding at that moment: a prune (``_discard``) holds the lock alone. Plain adds and
    # removals of different worktrees are safe together in git (each has its own admin
    # folder, named by an atomic mkdir): they share the lock, so concurrent tasks do not
    # queue for it.
    lock = AcaDir(root).root / "worktrees" / ".admin.lock"
    return FileLock(lock, shared=shared)


def _discard(repo: git.Repo, path: Path) -> None:
    target = os.path.realpath(path)
    _drop_half_added(repo, target)
    for entry in list_worktrees(repo):
        if os.path.realpath(entry.get("worktree", "")) != target:
            continue
        if "locked" in entry:
            _quiet(repo, "unlock", entry["worktree"])
        _quiet(repo, "remove", "--force", "--force", entry["worktree"])
    if path.exists():
        _remove_tree(path)
    repo.git.worktree("prune")


def _remove_path(path: Path) -> None:
    """A file, link or folder gone (a folder whole); one already gone is no error."""
    if path.is_dir() and not path.is_symlink():
        _remove_tree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_tree(path: Path) -> None:
    """``shutil.rmtree``; a tree it cannot remove, deeper than its recursion or the path
    length allow (an agent's ``mkdir d && cd d`` loop), goes by ``rm -rf``, which walks it
    by folder handles: left in place, it failed every resume of its task."""
    try:
        shutil.rmtree(path)
    except (RecursionError, OSError):
        removed = subprocess.run(["rm", "-rf", "--", str(path)], capture_output=True, text=True)
        if removed.returncode:
            raise OSError(f"rm -rf {path}: {removed.stderr.strip()}") from None


def _drop_half_added(repo: git.Repo, target: str) -> None:
    """Remove the admin folder of ``target`` that a ``git worktree add`` killed while writing
    its ``commondir`` left: git refuses every ``worktree`` command while it is there ("failed
    to read .../commondir: Success", an empty read), and ``prune`` keeps it (the add locked it
    first)."""
    for gitdir in (Path(repo.common_dir) / "worktrees").glob("*/gitdir"):
        admin = gitdir.parent
        if _empty(admin / "commondir") and str(linked_worktree_path(admin)) == target:
            shutil.rmtree(admin, ignore_errors=True)


def _empty(path: Path) -> bool:
    """Whether the file is missing or holds nothing."""
    try:
        return path.stat().st_size == 0
    except (FileNotFoundError, NotADirectoryError):
        return True


def _quiet(repo: git.Repo, *args: str) -> None:
    # A half-created worktree may refuse one of these steps; the rmtree and prune that follow
    # finish the job, so a failure here is not an error.
    with contextlib.suppress(git.GitCommandError):
        repo.git.worktree(*args)
