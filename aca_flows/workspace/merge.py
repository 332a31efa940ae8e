"""Landing a task: commit in its worktree, merge into the session branch, record the change.

Merges happen one at a time under a file lock (``.aca/worktrees/<sid>/.merge.lock``), shared
by threads, processes and workers on one disk. The session branch stays linear, one commit per
task: when the branch has not moved since the task started, it is fast-forwarded to the task's
commit; when another task landed meanwhile, the commit is put onto the new head as a
cherry-pick would, merged by git in memory (``merge-tree``; with a git older than 2.38,
cherry-picked in the task's own worktree, never the user's checkout). A conflict leaves the
branch and the worktree as they were and is reported as ``MergeConflictError`` naming the
files; the caller retries the task on the new head. A session branch checked out in the
user's checkout or a worktree of theirs is never moved (``SessionBranchCheckedOut``): its
files would stay behind the branch, and show the task's work as undone.

Every step is safe to repeat after a crash: the commit is reused if the worktree already has
it, a task whose ``Aca-Task:`` commit is on the branch is not merged again, and the change
log entry is replaced, not appended.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import git

from aca_flows.session.layout import AcaDir, session_branch
from aca_flows.workspace.change_log import ChangeRecord, record_task_change
from aca_flows.workspace.commit import commit_task_work, find_task_commit
from aca_flows.workspace.conflicts import BranchMovedError, MergeConflictError, kept_change_ref
from aca_flows.workspace.file_lock import FileLock
from aca_flows.workspace.repository import (
    GitIdentity,
    SessionBranchCheckedOut,
    WorkspaceError,
    git_meanwhile,
    is_ancestor,
    read_commit,
    session_branch_checkouts,
    session_branch_head,
    session_branch_head_kept,
    session_branch_moving,
)
from aca_flows.workspace.worktree import TaskWorktree

__all__ = [
    "LandedTask",
    "keep_unlanded_change",
    "land_task",
    "merge_lock",
    "merge_task_commit",
    "record_landed_task",
    "refuse_checked_out_branch",
    "remove_idle_merge_folder",
]


@dataclass(frozen=True)
class LandedTask:
    """A task's commit on the session branch. ``already_landed``: found there, not merged now."""

    commit_sha: str
    change: ChangeRecord
    already_landed: bool = False


def merge_lock(repo_root: Path, session_id: str) -> FileLock:
    """The lock every merge into ``aca/<session-id>`` is made under."""
    return FileLock(AcaDir(Path(repo_root)).worktrees_dir(session_id) / ".merge.lock")


def remove_idle_merge_folder(repo_root: Path, session_id: str) -> bool:
    """Remove the session's folder of worktrees (``.aca/worktrees/<session-id>``) when it
    holds nothing but its merge lock: what every run left behind once its tasks' worktrees
    were gone. A worktree still there (a failed task's, kept to look at) keeps it. Safe
    beside a run of the session: removed under the lock, which its waiters then take anew."""
    folder = AcaDir(Path(repo_root)).worktrees_dir(session_id)
    if not _holds_only_its_lock(folder):
        return False
    with merge_lock(repo_root, session_id) as lock:
        if not _holds_only_its_lock(folder):  # a task made its worktree meanwhile
            return False
        lock.path.unlink()  # held: its waiters lock the next file there (``FileLock``)
    try:
        folder.rmdir()
    except OSError:  # filled again meanwhile (a worktree, the lock): it is in use
        return False
    return True


def _holds_only_its_lock(folder: Path) -> bool:
    try:
        return {entry.name for entry in folder.iterdir()} == {".merge.lock"}
    except OSError:  # no folder: nothing to remove
        return False


def land_task(
    repo: git.Repo,
    worktree: TaskWorktree,
    *,
    title: str,
    summary: str,
    identity: GitIdentity,
    first_attempt: bool = False,
    refuse_unchecked: bool = False,
) -> LandedTask:
    """Commit the worktree, merge the commit into the session branch, record the change.

    Raises ``MergeConflictError`` when the commit conflicts with the branch's new head; the
    branch is then unchanged. Safe to repeat. ``first_attempt``: the task never started
    before in this session, so its commit cannot be on the branch yet and the merge lock is
    held without looking for it (a look that grows with the branch). ``refuse_unchecked``:
    raise ``BranchMovedError`` instead of merging onto work that landed since the task's base
    in files its commit changes too (the caller checks the combination first).
    """
    # HEAD still at the base: the commit made now has the base as its one parent.
    on_base = worktree.head() == worktree.base_sha
    commit = commit_task_work(worktree, title=title, summary=summary, identity=identity)
    own = landed = None
    seen = session_branch_head(repo, worktree.session_id) if refuse_unchecked else None
    if seen is not None and seen != worktree.base_sha:
        # Work landed since the task started: its files and the task's own are compared
        # under the lock. Both listed here, at once, the lock is held for a git command less
        # (unless yet more work lands meanwhile: that is listed under the lock).
        with git_meanwhile(repo.git, "diff", *_NAME_ONLY, worktree.base_sha, seen) as listing:
            own = _changed_paths(repo, worktree.base_sha, commit)
            landed = _paths(listing())
    with merge_lock(worktree.repo_root, worktree.session_id):
        existing = None
        if not first_attempt:
            existing = find_task_commit(repo, worktree.session_id, worktree.task_id)
        if existing is None and refuse_unchecked:
            _refuse_unchecked(repo, worktree, commit, own, landed, seen)
        merged = existing or merge_task_commit(repo, worktree, commit, identity, on_base=on_base)
    # After the lock: the next task's merge need not wait for this record (it has a lock of
    # its own); a crash before it is finished on resume, like any landed task's.
    paths = AcaDir(worktree.repo_root).session(worktree.session_id)
    change = record_task_change(repo, paths, worktree.task_id, merged)
    _drop_kept_change(repo, worktree.session_id, worktree.task_id)
    return LandedTask(commit_sha=merged, change=change, already_landed=existing is not None)


def keep_unlanded_change(repo: git.Repo, session_id: str, conflict: MergeConflictError) -> str:
    """Keep the task's commit a conflict kept off the session branch at ``kept_change_ref``,
    the last attempt's over an earlier one's; the ref."""
    ref = kept_change_ref(session_id, conflict.task_id)
    repo.git.update_ref(ref, conflict.commit)
    return ref


def _drop_kept_change(repo: git.Repo, session_id: str, task_id: str) -> None:
    # An earlier attempt's kept change, of no use once the task landed. Looked for as a loose
    # ref (a stat, on every landing): git writes a new one so and packs refs only in a gc.
    ref = kept_change_ref(session_id, task_id)
    if (Path(repo.common_dir) / ref).exists():
        repo.git.update_ref("-d", ref)


def _refuse_unchecked(
    repo: git.Repo,
    worktree: TaskWorktree,
    commit: str,
    own: set[str] | None,
    landed: set[str] | None,
    listed_at: str | None,
) -> None:
    """Raise ``BranchMovedError`` when work landed since the task's base in files its commit
    changes too (``own``, when known already; ``landed``, the files changed from the base to
    the head ``listed_at``, when listed already)."""
    head = session_branch_head(repo, worktree.session_id)
    if head == worktree.base_sha:
        return
    if landed is None or listed_at != head:
        landed = _changed_paths(repo, worktree.base_sha, head)
    if own is None:
        own = _changed_paths(repo, worktree.base_sha, commit)
    shared = sorted(landed.intersection(own))
    if shared:
        raise BranchMovedError(worktree.task_id, shared, head, commit)


# ``git diff`` options that list the paths two commits differ in, as they are.
_NAME_ONLY = ("--name-only", "--no-renames", "-z")


def _changed_paths(repo: git.Repo, old: str, new: str) -> set[str]:
    return _paths(repo.git.diff(*_NAME_ONLY, old, new))


def _paths(listed: str) -> set[str]:
    return {path for path in listed.split("\0") if path}


def record_landed_task(repo: git.Repo, session_id: str, task_id: str) -> LandedTask | None:
    """For a task already on the session branch: (re)record its change; None if not landed.

    This is the resume path: it finishes the bookkeeping a crash may have cut short.
    """
    root = Path(repo.working_tree_dir)
    sha = find_task_commit(repo, session_id, task_id)
    if sha is None:
        return None
    change = record_task_change(repo, AcaDir(root).session(session_id), task_id, sha)
    _drop_kept_change(repo, session_id, task_id)  # merged by hand, or landed by a crashed run
    return LandedTask(commit_sha=sha, change=change, already_landed=True)


def merge_task_commit(
    repo: git.Repo,
    worktree: TaskWorktree,
    commit: str,
    identity: GitIdentity,
    *,
    on_base: bool = False,
) -> str:
    """Put ``commit`` on the session branch; returns the sha now at the branch head.

    Call under ``merge_lock``. Fast-forwards when possible, else cherry-picks onto the head.
    ``on_base``: the commit's one parent is the worktree's base. Raises
    ``SessionBranchCheckedOut``, the branch unchanged, when a checkout that is not aca's has
    the branch checked out: moving it would leave that checkout's files behind.
    """
    refuse_checked_out_branch(repo, worktree.session_id, task_id=worktree.task_id)
    ref = f"refs/heads/{session_branch(worktree.session_id)}"
    head = session_branch_head_kept(repo, worktree.session_id)
    # With ``on_base`` no git command is needed: the branch only moves forward from the base,
    # so the head is an ancestor of a child of the base exactly when it still is the base.
    if head == worktree.base_sha if on_base else is_ancestor(repo.git, head, commit):
        landed = commit
    else:
        landed = _replay_onto(repo, worktree, head, commit, identity)
        if landed is None:  # a git older than 2.38
            landed = _cherry_pick_onto(worktree, head, commit, identity)
    # The old value makes the update fail rather than lose a commit if the branch moved anyway.
    with session_branch_moving(repo, worktree.session_id) as moved:
        repo.git.update_ref(ref, landed, head)
        moved(landed)
    return landed


def refuse_checked_out_branch(repo: git.Repo, session_id: str, task_id: str | None = None) -> None:
    """Raise ``SessionBranchCheckedOut`` when the session branch is checked out anywhere but
    in aca's own task worktrees (which are detached). Reads HEAD files, runs no git. Its
    resume names the repository's folder; the flow, which knows the session's remote, names
    that too (``execute_task``'s ``resume``)."""
    from aca_flows._words import resume_command

    root = Path(repo.working_tree_dir)
    mine = AcaDir(root).worktrees_dir(session_id)
    found = session_branch_checkouts(repo, session_id, ignore_under=mine)
    if found:
        resume = resume_command(session_id, root) if task_id is not None else None
        raise SessionBranchCheckedOut(session_id, found[0], task_id, resume)


def _replay_onto(
    repo: git.Repo, worktree: TaskWorktree, head: str, commit: str, identity: GitIdentity
) -> str | None:
    """``commit`` put onto ``head`` as one new commit, as a cherry-pick would, but merged by
    git in memory (``merge-tree``): no checkout, no index, the worktree untouched, so the
    merge lock is held for less. Same message and author; the committer is ``identity``.
    ``None`` when this git cannot (``merge-tree --write-tree`` needs git 2.38)."""
    status, out, _ = repo.git.execute(
        ["git", "merge-tree", "--write-tree", "--name-only", "-z", head, commit],
        with_extended_output=True,
        with_exceptions=False,
        strip_newline_in_stdout=False,
    )
    if status not in (0, 1):
        return None
    tree, *conflicted = out.split("\0\0", 1)[0].split("\0")
    if status == 1:
        # The branch and the worktree are unchanged: there is nothing to undo.
        files = sorted(set(f for f in conflicted if f))
        raise MergeConflictError(worktree.task_id, files, commit=commit)
    raw = read_commit(repo, commit)
    headers, _, message = raw.partition("\n\n")
    author = next(line for line in headers.splitlines() if line.startswith("author "))
    name_email, _, when = author[len("author ") :].rpartition("> ")
    name, _, email = name_email.partition(" <")
    env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": when}
    # commit-tree keeps the message as given (no cleanup; a final newline only if missing).
    return repo.git.execute(
        ["git", *identity.config_args(), "commit-tree", tree, "-p", head, "-m", message],
        env=env,
    ).strip()


def _cherry_pick_onto(worktree: TaskWorktree, head: str, commit: str, identity: GitIdentity) -> str:
    wt = worktree.git
    wt.checkout("--detach", "-q", head)
    try:
        wt.execute(
            [
                "git",
                *identity.config_args(),
                "cherry-pick",
                "--allow-empty",
                "--keep-redundant-commits",
                commit,
            ]
        )
    except git.GitCommandError as exc:
        files = [f for f in wt.diff("--name-only", "--diff-filter=U", "-z").split("\0") if f]
        failure = exc
        try:
            wt.cherry_pick("--abort")
        except git.GitCommandError:
            wt.reset("--hard", "-q", head)
        # Leave the worktree on the task's own commit, as it was before the attempt.
        wt.checkout("--detach", "-q", commit)
        if not files:
            raise WorkspaceError(
                f"task {worktree.task_id}: git could not apply its commit onto the session "
                f"branch: {failure.stderr.strip()}. Check the repository with `git status`."
            ) from None
        raise MergeConflictError(worktree.task_id, files, commit=commit) from None
    return wt.rev_parse("HEAD")
