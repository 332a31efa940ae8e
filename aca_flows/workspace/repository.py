"""The repository worked on: opening it, the session branch, the commit identity.

The user's checkout (working tree, index, current branch) is never touched: aca only creates
refs (``aca/<session-id>``), adds ``.aca/`` to ``.git/info/exclude`` and works in worktrees.
The one exception is ``init_git=True`` (``--init-git``), where the user asked aca to create
the repository and its first commit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import git
from git.compat import safe_decode

from aca_flows._words import listed, resume_command
from aca_flows.errors import AcaError
from aca_flows.session.layout import session_branch
from aca_flows.workspace.hardened_git import AcaRepo

__all__ = [
    "DEFAULT_IDENTITY",
    "SECRET_PATTERNS",
    "GitIdentity",
    "SessionBranchCheckedOut",
    "SessionBranchLost",
    "SessionBranchReset",
    "WorkspaceError",
    "commit_identity",
    "checkout_tracking_aca_files",
    "ensure_excluded",
    "ensure_session_branch",
    "exclude_secrets",
    "git_meanwhile",
    "is_ancestor",
    "open_repository",
    "read_commit",
    "refuse_a_branch_named_aca",
    "remove_stale_branch_lock",
    "require_repository",
    "secrets_left_out",
    "session_branch_checkouts",
    "session_branch_head",
    "session_branch_head_kept",
    "session_branch_moving",
    "session_start",
    "session_start_ref",
    "staged_paths",
    "tracked_aca_files",
    "tracked_aca_problem",
    "uncommitted_paths",
]

ACA_EXCLUDE_LINE = ".aca/"
# A commit id as a loose ref or a detached HEAD file holds it (SHA-1 or SHA-256).
OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class WorkspaceError(AcaError):
    """The repository cannot be worked on as it is; the message says how to fix it."""


class SessionBranchLost(WorkspaceError):
    """The session branch is gone while its session runs (deleted or renamed by hand): no task
    can start from it or land on it. A resume names the commit to restore it at."""

    def __init__(self, session_id: str, workdir: Path):
        branch = session_branch(session_id)
        super().__init__(
            f"the session branch {branch} is gone (deleted or renamed while the run ran), so "
            "no task can start from it or land on it; the work that landed is on no branch. "
            f"`{resume_command(session_id, workdir)}` names the commit to restore it at."
        )


class SessionBranchReset(WorkspaceError):
    """The session branch was moved back or aside while its session runs (``git branch -f``,
    a forced fetch): it no longer holds ``seen``, the commit aca last put there or found, so
    work that landed is off the branch; a task started or landed there would build on, and be
    reported beside, work that is gone."""

    def __init__(self, session_id: str, workdir: Path, seen: str):
        self.seen = seen
        branch = session_branch(session_id)
        super().__init__(
            f"the session branch {branch} was reset while the run ran: it no longer holds "
            f"{seen[:12]}, where aca left it, and the work that landed there is off the "
            f"branch, so no task can start from it or land on it. Restore it with `git branch "
            f"-f {branch} {seen}`, then `{resume_command(session_id, workdir)}` continues."
        )


class SessionBranchCheckedOut(WorkspaceError):
    """The session branch is checked out in a checkout or worktree that is not aca's: moving
    it as a task lands would leave that checkout's files and index behind its branch (``git
    status`` there would show the task's work as undone, ``git commit -a`` would undo it).
    ``task_id``: the task that did not land for it; None before the run started. ``resume``:
    the session's resume as the reader runs it (``_words.resume_command``), which runs the
    task again."""

    def __init__(
        self, session_id: str, path: Path, task_id: str | None = None, resume: str | None = None
    ):
        self.session_id = session_id
        self.path = path
        self.task_id = task_id
        self.resume = resume
        branch = session_branch(session_id)
        where = shlex.quote(str(path))
        problem = (
            f"the session branch {branch} is checked out in {path}: aca moves it as tasks "
            "land, which would leave that checkout's files behind its branch. Check out "
            f"another branch there (`git -C {where} checkout -`; `git -C {where} switch "
            "--detach` keeps its files as they are)"
        )
        if task_id is None:
            super().__init__(f"{problem} and run again.")
        else:
            super().__init__(
                f"task {task_id} did not land ({branch} is unchanged): {problem}, then "
                f"{f'`{resume}`' if resume else 'a resume of the session'} runs it again."
            )


@dataclass(frozen=True)
class GitIdentity:
    name: str
    email: str

    def config_args(self) -> list[str]:
        """``git -c`` arguments, so commits never depend on (or fail for lack of) global config.

        Signing is switched off because a signing prompt would hang an unattended run.
        """
        return [
            "-c",
            f"user.name={self.name}",
            "-c",
            f"user.email={self.email}",
            "-c",
            "commit.gpgsign=false",
        ]


DEFAULT_IDENTITY = GitIdentity(name="aca", email="aca@localhost")


def open_repository(workdir: Path, *, init_git: bool = False) -> git.Repo:
    """Open the git repository at ``workdir`` (its top level), which must have a first commit.

    With ``init_git`` a missing repository is created and existing files are committed as its
    first commit; without it, a folder that is not a repository is a ``WorkspaceError``.
    """
    workdir = Path(workdir)
    repo = _top_level_repository(workdir, init_git=init_git)
    if not repo.head.is_valid():
        _refuse_what_git_refuses(repo)
        if not init_git:
            raise _no_commit(workdir)  # before .git/info/exclude: a refusal writes nothing
    ensure_excluded(repo)
    if not repo.head.is_valid():
        # Made now or before (`git init`, nothing committed): this commit is the first, and
        # puts what it holds in every worktree and the history.
        exclude_secrets(repo)
        _commit_everything(repo)
    return repo


def require_repository(workdir: Path, *, init_git: bool = False) -> None:
    """Refuse ``workdir`` as ``open_repository`` refuses it (not a repository, bare, a folder
    inside one, no commit), writing nothing: a dry run's check, and the run's before Prefect
    starts. With ``init_git``, a folder in no repository (or none yet) passes: a run makes it."""
    workdir = Path(workdir)
    if init_git and not _in_a_repository(workdir):
        return
    repo = _top_level_repository(workdir, init_git=False)
    if not repo.head.is_valid():
        _refuse_what_git_refuses(repo)
        if not init_git:
            raise _no_commit(workdir)
    refuse_a_branch_named_aca(repo)


def _refuse_what_git_refuses(repo: git.Repo) -> None:
    """A repository git will not work in (another user's: "dubious ownership") has no HEAD
    for GitPython either: it was called one with no commits yet, and ``--init-git`` ended in
    a traceback."""
    try:
        repo.git.rev_parse("--git-dir")
    except git.GitCommandError as refused:
        if "dubious ownership" in str(refused.stderr):
            top = repo.working_tree_dir
            raise WorkspaceError(
                f"git refuses the repository {top}: it belongs to another user. Run `git "
                f"config --global --add safe.directory {shlex.quote(str(top))}`, or run aca as "
                "its owner."
            ) from None
        raise WorkspaceError(
            f"git refuses the repository {repo.working_tree_dir}: "
            f"{' '.join(str(refused.stderr).split())}"
        ) from None


def refuse_a_branch_named_aca(repo: git.Repo) -> None:
    """A branch ``aca`` leaves git no room for the session branches: every run ended in a
    traceback after its session was made (a failed session each time)."""
    if ref_exists(repo, "refs/heads/aca"):
        raise WorkspaceError(
            "the branch `aca` exists, so git cannot make aca's session branches (aca/<id>) "
            "beside it: rename it (`git branch -m aca aca-branch`), then run again."
        )


def _in_a_repository(path: Path) -> bool:
    try:
        AcaRepo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False
    return True


def _no_commit(workdir: Path) -> WorkspaceError:
    return WorkspaceError(
        f"the git repository {workdir} has no commits yet; commit your files first "
        "(git add -A && git commit -m 'initial'), or pass --init-git to let aca do it."
    )


def _top_level_repository(workdir: Path, *, init_git: bool) -> git.Repo:
    """The repository whose top level ``workdir`` is; with ``init_git`` made if missing."""
    if not workdir.is_dir():
        what = "is not a folder" if workdir.exists() else "does not exist"
        raise WorkspaceError(f"{workdir} {what}; pass an existing folder to --workdir.")
    try:
        repo = AcaRepo(workdir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        if not init_git:
            raise WorkspaceError(
                f"{workdir} is not a git repository. aca works on a git branch; run "
                "`git init` and commit your files there, or pass --init-git to let aca do it."
            ) from None
        repo = AcaRepo.init(workdir)
    if repo.bare:
        raise WorkspaceError(
            f"{workdir} is a bare git repository; point --workdir at a checkout instead."
        )
    top = Path(repo.working_tree_dir).resolve()
    if top != workdir.resolve():
        raise WorkspaceError(
            f"{workdir} is inside the git repository {top}, not its top level; "
            f"run aca with --workdir {top}."
        )
    return repo


# Files of a folder that `--init-git` makes a repository which hold secrets, not code: left out
# of the first commit (so out of the history, the worktrees and the agents' sight: the
# sandbox hides an untracked `.env`, not a committed one; docs/security.md).
SECRET_PATTERNS = (
    ".env",
    ".env.*",
    "!.env.example",
    "!.env.sample",
    "!.env.template",
    ".envrc",
    ".netrc",
    ".pypirc",
    ".npmrc",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ecdsa*",
    "id_ed25519*",
)
_SECRETS_HEADER = "# secrets left out of the first commit by aca --init-git"


def exclude_secrets(repo: git.Repo) -> None:
    """Add ``SECRET_PATTERNS`` to ``.git/info/exclude`` of a repository aca makes the first
    commit of."""
    _exclude_once(repo, (_SECRETS_HEADER, *SECRET_PATTERNS))


def secrets_left_out(repo: git.Repo) -> list[str]:
    """The files ``exclude_secrets`` keeps out of ``repo`` (untracked, matching its patterns)."""
    if _SECRETS_HEADER not in _excluded(repo):
        return []
    args = [f"--exclude={pattern}" for pattern in SECRET_PATTERNS]
    listed = repo.git.ls_files("--others", "--ignored", *args)
    return sorted(p for p in listed.splitlines() if p and not p.startswith(".aca/"))


def ensure_excluded(repo: git.Repo) -> None:
    """Add ``.aca/`` to ``.git/info/exclude`` once, so aca's own files never show as changes."""
    _exclude_once(repo, (ACA_EXCLUDE_LINE,))


def _exclude_once(repo: git.Repo, lines: tuple[str, ...]) -> None:
    """Append ``lines`` to ``.git/info/exclude`` unless its first line is there already."""
    text = _excluded(repo)
    if lines[0] in (line.strip() for line in text.splitlines()):
        return
    if text and not text.endswith("\n"):
        text += "\n"
    exclude = _exclude_file(repo)
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")


def _excluded(repo: git.Repo) -> str:
    exclude = _exclude_file(repo)
    return exclude.read_text(encoding="utf-8") if exclude.exists() else ""


def _exclude_file(repo: git.Repo) -> Path:
    return Path(repo.common_dir) / "info" / "exclude"


def commit_identity(repo: git.Repo) -> GitIdentity:
    """The user's git identity where one is configured (any level), else ``aca <aca@localhost>``."""
    name = config_value(repo, "user.name")
    email = config_value(repo, "user.email")
    if name and email:
        return GitIdentity(name=name, email=email)
    return DEFAULT_IDENTITY


def ensure_session_branch(repo: git.Repo, session_id: str) -> str:
    """Create ``aca/<session-id>`` at the user's HEAD unless it exists; returns the branch name.

    Safe to repeat: an existing branch (a resumed session) is kept as it is.
    """
    branch = session_branch(session_id)
    try:
        repo.git.check_ref_format("--branch", branch)
    except git.GitCommandError:
        raise WorkspaceError(
            f"session id {session_id!r} cannot be a git branch name; use letters, digits, "
            "'-' and '_' only."
        ) from None
    if not ref_exists(repo, f"refs/heads/{branch}"):
        head = repo.git.rev_parse("HEAD")
        # update-ref with an all-zero old value creates the ref only if it does not exist yet,
        # so two processes starting the same session cannot move it.
        try:
            repo.git.update_ref(f"refs/heads/{branch}", head, "0" * 40)
        except git.GitCommandError:
            if not ref_exists(repo, f"refs/heads/{branch}"):
                raise
        else:
            # Where the session started, kept here only (never pushed): the branch itself
            # may move by a fetch from a remote (``workspace/remote.py``), not this.
            with contextlib.suppress(git.GitCommandError):
                repo.git.update_ref(session_start_ref(session_id), head, "0" * 40)
    return branch


def session_start_ref(session_id: str) -> str:
    """The local ref at the commit the session branch was created at on this machine."""
    return f"refs/aca/session-starts/{session_id}"


def session_start(git_cmd: git.Git, session_id: str) -> str | None:
    """The commit the session started from on this machine (``ensure_session_branch``);
    None for a session whose branch was made elsewhere (fetched) or by an older aca."""
    try:
        return git_cmd.rev_parse("--verify", "--quiet", session_start_ref(session_id)).strip()
    except git.GitCommandError:
        return None


def uncommitted_paths(repo: git.Repo) -> list[str]:
    """Paths of the checkout that differ from HEAD (untracked ones too, ignored ones not):
    work a session does not see, since it starts from the last commit."""
    listed = repo.git.status("--porcelain", "-z", "--untracked-files=normal", "--no-renames")
    return [entry[3:] for entry in listed.split("\0") if entry]


def staged_paths(repo: git.Repo) -> list[str]:
    """Paths whose staged content differs from HEAD: git keeps it in its object store."""
    return [p for p in repo.git.diff("--cached", "--name-only", "-z").split("\0") if p]


def remove_stale_branch_lock(repo: git.Repo, session_id: str) -> bool:
    """Delete the ``aca/<session-id>`` ref lock a killed git left (``<ref>.lock``); True if
    there was one.

    Call only while holding the session's lock and before any task of it starts: then no live
    aca process can be writing the ref, and a lock file left there would make every later
    merge fail with "cannot lock ref".
    """
    lock = Path(repo.common_dir) / "refs" / "heads" / f"{session_branch(session_id)}.lock"
    try:
        lock.unlink()
    except FileNotFoundError:
        return False
    return True


def session_branch_head(repo: git.Repo, session_id: str) -> str:
    """The commit the session branch points at now: read from the branch's ref file while git
    keeps it loose, as it does for a branch it just moved (twice a task, one of them under the
    merge lock, so a git command less each time); else asked of git (packed refs, reftable).
    Raises ``SessionBranchLost`` when there is no such branch."""
    ref = f"refs/heads/{session_branch(session_id)}"
    # git replaces a loose ref file whole (a lock file renamed over it): never read half-written.
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = (Path(repo.common_dir) / ref).read_text(encoding="ascii").strip()
        if OBJECT_ID.fullmatch(text):
            return text
    try:
        return repo.git.rev_parse("--verify", f"{ref}^{{commit}}")
    except git.GitCommandError:
        if ref_exists(repo, ref):
            raise
        raise SessionBranchLost(session_id, Path(repo.working_tree_dir)) from None


_REGULAR_FILE_MODES = ("100644", "100755")


def tracked_aca_files(git_cmd: git.Git, tree: str | None = None, folder: str = ".aca") -> list[str]:
    """What git tracks in ``folder`` (aca's ``.aca``, relative to the repository's top) in the
    commit ``tree``, else the index, but a regular ``config.toml`` (aca's settings for the
    repository: config_loader.py): aca keeps its sessions, worktrees and locks there, and a
    checkout of the repository puts such files over aca's own."""
    # In any case: on a case-insensitive file system (macOS) a checkout writes .ACA/... into
    # aca's .aca.
    if tree is None:
        listing = git_cmd.ls_files("-s", "-z", "--", f":(icase){folder}")  # MODE SHA STAGE\tPATH
    else:  # ls-tree takes no icase: the top entries named so, then what each holds
        tops = git_cmd.ls_tree("-z", "--name-only", tree).split("\0")
        named = [top for top in tops if top.lower() == folder.lower()]
        listing = git_cmd.ls_tree("-r", "-z", tree, "--", *named) if named else ""
    found = []
    for entry in filter(None, listing.split("\0")):
        info, _, path = entry.partition("\t")
        settings = path == f"{folder}/config.toml"
        if not (settings and info.split(" ", 1)[0] in _REGULAR_FILE_MODES):
            found.append(path)
    return found


def tracked_aca_problem(files: list[str], where: str) -> str:
    """Why a checkout whose repository tracks ``files`` in ``.aca/`` (``tracked_aca_files``) is
    refused; ``where``: the repository as the reader knows it."""
    return (
        f"{where} tracks files in .aca/, aca's own folder, where it keeps its sessions, "
        f"worktrees and locks: {listed(files, 5)}. A checkout puts them over aca's own: a "
        "session's record (a plan nobody approved here, its budget), a lock or log file as a "
        "link aca writes through. A repository may commit .aca/config.toml only, as a regular "
        "file; remove the rest from it (`git rm -r --cached .aca`, keeping .aca/config.toml, "
        "then commit) and run again."
    )


def checkout_tracking_aca_files(workdir: Path) -> str | None:
    """``tracked_aca_problem`` of ``workdir``'s checkout, or None (none tracked, or no
    repository there yet: one ``--init-git`` makes tracks nothing)."""
    try:
        repo = AcaRepo(workdir, search_parent_directories=True)
        top = os.path.realpath(repo.working_tree_dir)
        folder = os.path.relpath(os.path.realpath(Path(workdir) / ".aca"), top)
        files = tracked_aca_files(repo.git, folder=folder)
    except (git.GitError, OSError, ValueError):
        return None
    return tracked_aca_problem(files, f"the repository at {workdir}") if files else None


# Per session, the commit this process last saw its branch at (put there, or found there).
# Read and moved under one lock: a head read just before a landing moved the branch, compared
# just after, was taken for a reset.
_SEEN_HEADS: dict[tuple[str, str], str] = {}
_SEEN_LOCK = threading.Lock()


def session_branch_head_kept(repo: git.Repo, session_id: str) -> str:
    """``session_branch_head``, checked to still hold what this process last saw there: a
    branch moved back or aside (``git branch -f``) raises ``SessionBranchReset``. Asks git
    only when the head is not the one last seen (someone else moved it)."""
    key = (os.path.realpath(repo.common_dir), session_id)
    with _SEEN_LOCK:
        head = session_branch_head(repo, session_id)
        seen = _SEEN_HEADS.get(key)
        if seen is not None and seen != head and not is_ancestor(repo.git, seen, head):
            raise SessionBranchReset(session_id, Path(repo.working_tree_dir), seen)
        _SEEN_HEADS[key] = head
    return head


@contextlib.contextmanager
def session_branch_moving(repo: git.Repo, session_id: str) -> Iterator[Callable[[str], None]]:
    """Around aca's own move of the session branch: yields ``moved(head)``, to call once the
    branch is at ``head`` (what ``session_branch_head_kept`` then compares with)."""
    key = (os.path.realpath(repo.common_dir), session_id)
    with _SEEN_LOCK:
        yield lambda head: _SEEN_HEADS.__setitem__(key, head)


def session_branch_checkouts(
    repo: git.Repo, session_id: str, *, ignore_under: Path | None = None
) -> list[Path]:
    """The checkouts (the main one, linked worktrees) that have the session branch checked
    out, or are rebasing it, except worktrees under ``ignore_under`` (aca's own).

    Read from the HEAD files of the repository and of each worktree (no git command: this is
    asked under the merge lock, before every landing; git is asked only where refs are kept
    in a reftable, whose HEAD files say nothing)."""
    # From a linked worktree, GitPython gives ``<admin>/../..``: resolved, it ends in ``.git``.
    common = Path(os.path.realpath(repo.common_dir))
    ref = f"refs/heads/{session_branch(session_id)}"
    found: list[Path] = []
    main = _main_checkout(repo, common)
    if main is not None and _has_checked_out(repo, common, ref):
        found.append(main)
    with contextlib.suppress(OSError):
        for admin in sorted((common / "worktrees").iterdir()):
            if not _has_checked_out(repo, admin, ref):
                continue
            path = linked_worktree_path(admin)
            if ignore_under is not None and path.is_relative_to(ignore_under.resolve()):
                continue
            found.append(path)
    return found


def _has_checked_out(repo: git.Repo, git_dir: Path, ref: str) -> bool:
    """Whether the HEAD of ``git_dir`` is ``ref``, or a rebase there is rewriting it."""
    for name in ("HEAD", "rebase-merge/head-name", "rebase-apply/head-name"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = (git_dir / name).read_text(encoding="utf-8").strip()
            if name == "HEAD" and text == _REFTABLE_HEAD:
                text = _symbolic_head(repo, git_dir)
            if text.removeprefix("ref:").strip() == ref:
                return True
    return False


# What the HEAD file of a repository that keeps its refs in a reftable holds: the real HEAD is
# in the table, and only git can read it.
_REFTABLE_HEAD = "ref: refs/heads/.invalid"


def _symbolic_head(repo: git.Repo, git_dir: Path) -> str:
    status, out, _ = repo.git.execute(
        ["git", f"--git-dir={git_dir}", "symbolic-ref", "-q", "HEAD"],
        with_extended_output=True,
        with_exceptions=False,
    )
    return out.strip() if status == 0 else ""


def _main_checkout(repo: git.Repo, common: Path) -> Path | None:
    """The main checkout's folder; None when the repository is bare (its HEAD has no files)."""
    if Path(repo.git_dir).resolve() == common:
        return Path(repo.working_tree_dir)
    # The run's folder is a linked worktree: the main checkout holds ``.git`` itself, unless
    # the repository is bare.
    return common.parent if common.name == ".git" else None


def linked_worktree_path(admin: Path) -> Path:
    """A linked worktree's folder, from its admin folder's ``gitdir`` (``<path>/.git``)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = (admin / "gitdir").read_text(encoding="utf-8").strip()
        if text:
            return Path(os.path.realpath(admin / text)).parent
    return admin


def read_commit(repo: git.Repo, sha: str) -> str:
    """Commit ``sha`` as ``git cat-file commit`` prints it (headers, a blank line, the message):
    read from its object file while git keeps it loose, as it does for a commit it just made
    (the merge lock is then held for one git command less); else asked of git (packed)."""
    path = Path(repo.common_dir) / "objects" / sha[:2] / sha[2:]
    with contextlib.suppress(OSError, zlib.error, ValueError):
        header, _, body = zlib.decompress(path.read_bytes()).partition(b"\0")
        if header.startswith(b"commit "):
            return body.decode("utf-8")
    return repo.git.cat_file("commit", sha, strip_newline_in_stdout=False)


@contextlib.contextmanager
def git_meanwhile(runner: git.Git, command: str, *args: str) -> Iterator[Callable[[], str]]:
    """A read-only git command that runs while the block does: the block calls what it gets
    for the command's output (git's error raised there, as a ``GitCommandError``). Two git
    commands at once take about the time of one on the path of a task's landing."""
    started = getattr(runner, command)(*args, as_process=True)
    process = started.proc

    def output() -> str:
        out, err = process.communicate()
        if process.returncode:
            raise git.GitCommandError(started.args, process.returncode, err)
        return safe_decode(out)

    try:
        yield output
    finally:
        if process.returncode is None:  # left early, unread: it may wait on a full pipe
            process.kill()
            process.communicate()  # reaped, its pipes closed


def ref_exists(repo: git.Repo, ref: str) -> bool:
    """Whether ``ref`` (a branch, tag or any ref name) names something in ``repo``."""
    try:
        repo.git.rev_parse("--verify", "--quiet", ref)
    except git.GitCommandError:
        return False
    return True


def is_ancestor(runner: git.Git, ancestor: str, descendant: str) -> bool:
    """Whether commit ``ancestor`` is in the history of ``descendant`` (or is it). ``runner``:
    ``repo.git``, or a worktree's; they share the objects, so either answers the same."""
    try:
        runner.merge_base("--is-ancestor", ancestor, descendant)
    except git.GitCommandError:
        return False
    return True


def config_value(repo: git.Repo, key: str) -> str | None:
    """Git config ``key`` of ``repo``, or None when unset or empty."""
    try:
        value = repo.git.config("--get", key).strip()
    except git.GitCommandError:
        return None
    return value or None


def _commit_everything(repo: git.Repo) -> None:
    identity = commit_identity(repo)
    repo.git.add("-A")
    repo.git.execute(
        [
            "git",
            *identity.config_args(),
            "commit",
            "--allow-empty",
            "--no-verify",
            "-m",
            "Initial commit (created by aca --init-git)",
        ]
    )


def origin_url(workdir: Path) -> str | None:
    """The URL of the repository's ``origin`` remote, or ``None`` (no repository, no origin)."""
    try:
        return git.Repo(workdir).remote("origin").url
    except (ValueError, git.GitError):
        return None
