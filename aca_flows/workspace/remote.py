"""The working repository's remote: clone or fetch it, and push a session's work back.

A run given a repository URL (``aca run --repo URL``, the flow's ``repo``) works in its own
checkout of it, the *working area* (``~/.aca/repos/<slug>`` unless a workdir is given), and
pushes two refs there after each task lands, atomically:

- ``refs/heads/aca/<session-id>``, the session branch (one commit per finished task);
- ``refs/aca/sessions/<session-id>``, a commit of the session's record (``.aca/sessions/<id>``:
  journal, session.json, results, logs; what ``.aca`` holds is redacted when written), so a
  worker anywhere can fetch both and resume the session (``restore_session_record``).

Credentials in a URL (``https://user:token@host/...``) never reach ``.git/config``, the
record, logs or errors: the checkout's ``origin`` is the URL without them, every fetch and push
names the full URL on git's command line, and error messages are built from the URL without
them. Every git command runs hardened (``hardened_git.py``); only ``ssh -o BatchMode=yes``
is given back to git (the repository's ``core.sshCommand`` stays ignored).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import git

from aca_flows.cloned_config import WORKING_AREA_KEY
from aca_flows.session.layout import linked_aca_folder, session_branch
from aca_flows.session.redact import redact_text
from aca_flows.workspace.file_lock import FileLock
from aca_flows.workspace.hardened_git import AcaRepo
from aca_flows.workspace.repository import (
    WorkspaceError,
    config_value,
    is_ancestor,
    ref_exists,
    tracked_aca_files,
    tracked_aca_problem,
)

__all__ = [
    "PushResult",
    "RemoteError",
    "RemoteRepository",
    "public_url",
    "repos_home",
    "restore_session_record",
    "save_session_record",
    "session_record_ref",
    "url_secrets",
    "working_area",
]

# Files of a session's folder that belong to one machine, not to the record.
_LOCAL_ONLY = ("meta/session.lock",)


class RemoteError(WorkspaceError):
    """The repository URL cannot be worked with (not a repository, unreachable, empty)."""


def session_record_ref(session_id: str) -> str:
    """The ref holding the commit of a session's record: ``refs/aca/sessions/<id>``."""
    return f"refs/aca/sessions/{session_id}"


def repos_home() -> Path:
    """Where working areas live by default: ``~/.aca/repos``."""
    return Path.home() / ".aca" / "repos"


def normalize_url(url: str) -> str:
    """``url`` as git is given it: a local path made absolute (git runs in the checkout)."""
    url = url.strip()
    if not url:
        raise RemoteError("--repo is empty; give a git URL or the path of a repository.")
    if "://" in url:
        try:
            urlsplit(url)  # what every later step reads ("https://[x/y", "https://tok＃@h/")
        except ValueError as exc:
            raise RemoteError(
                f"repo is not a URL git can use ({without_userinfo(str(exc), url)}); nothing "
                "was started. Give the repository's URL as git takes it."
            ) from None
        return url
    if _SCP_LIKE.match(url):
        return url
    return str(Path(url).expanduser().resolve())


def without_userinfo(message: str, url: str) -> str:
    """``message`` (a URL parser's, which may quote the URL's host part) without the user part
    of ``url``: credentials are never shown."""
    authority = re.split(r"[/?#]", url.split("://", 1)[-1], maxsplit=1)[0]
    userinfo = authority.rpartition("@")[0]
    return message.replace(userinfo, "[REDACTED]") if userinfo else message


# user@host:path, host:path (git's scp-like syntax); a Windows drive letter is not one.
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[^/:]{2,}:")


def public_url(url: str) -> str:
    """``url`` without credentials: what may be written, logged and shown."""
    url = normalize_url(url)
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    # Over http(s) a bare user name is often a token (https://<token>@github.com/...).
    keep_user = ":" not in userinfo and parts.scheme not in ("http", "https")
    netloc = f"{user}@{host}" if keep_user else host
    return urlunsplit(parts._replace(netloc=netloc))


def url_secrets(url: str) -> list[str]:
    """The credentials in ``url`` (to register with the redactor), if any."""
    parts = urlsplit(normalize_url(url)) if "://" in url else None
    if parts is None or "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    found = [password] if password else []
    if not password and parts.scheme in ("http", "https"):
        found.append(user)
    return [value for value in found if value]


def working_area(url: str, workdir: Path | None = None) -> Path:
    """The checkout a run of ``url`` works in: ``workdir`` if given, else
    ``~/.aca/repos/<name>-<hash of the URL>``."""
    if workdir is not None:
        return Path(workdir).expanduser().resolve()
    public = public_url(url)
    name = re.sub(r"\.git$", "", public.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "repo"
    digest = hashlib.sha256(public.encode()).hexdigest()[:10]
    return repos_home() / f"{name}-{digest}"


@dataclass(frozen=True)
class PushResult:
    """How a push of a session ended: ``pushed`` or not, after ``attempts`` tries; ``head``
    is the session branch's commit that was (or was to be) pushed; ``error`` why not (or, for
    a branch pushed without its record, why the record was not)."""

    pushed: bool
    head: str
    attempts: int
    error: str | None = None
    diverged: bool = False  # the remote's branch has commits the session does not have


class RemoteRepository:
    """One remote URL and the working area that checks it out."""

    def __init__(self, url: str, workdir: Path):
        self.url = normalize_url(url)
        self.public = public_url(url)
        self.workdir = Path(workdir)
        # Why the remote takes the session's branch without its record, once it refused it.
        self.record_refused: str | None = None

    # -- clone and fetch ------------------------------------------------------------------

    def checkout(self) -> git.Repo:
        """Clone the remote into the working area, or fetch it there if it is already
        cloned, and check out the remote's default branch at its newest commit (the branch a
        new session starts from). A checkout aca did not make (a ``--workdir`` that is the
        user's own clone of the URL) is fetched into but never checked out: the user's
        checkout is never modified. Raises ``RemoteError`` when the URL is not a reachable
        repository with a commit, or the working area holds something else."""
        self.workdir.parent.mkdir(parents=True, exist_ok=True)
        # One clone or fetch at a time per working area: two runs may share it.
        with self._area_lock():
            fresh = not (self.workdir / ".git").exists()
            created = not self.workdir.exists()
            repo = self._open_or_init()
            # Made by this process, used by no other yet: a refused run may remove it again
            # (``remove_unclaimed``); another's checkout claims it.
            claim = self.workdir / ".git" / _UNCLAIMED
            claim.unlink(missing_ok=True)
            if created:
                claim.write_text(_CLAIMANT)
            try:
                self._git(repo, "fetch", "--prune", "--no-tags", self.url, _HEADS_REFSPEC)
                branch = self._default_branch(repo)
            except RemoteError:
                if fresh:  # a URL that cannot be cloned leaves no empty checkout behind
                    shutil.rmtree(self.workdir if created else self.workdir / ".git", True)
                raise
            if config_value(repo, WORKING_AREA_KEY) == "true":
                newest = f"refs/remotes/origin/{branch}"
                # Before the checkout: --force puts the files over aca's own in .aca.
                if files := tracked_aca_files(repo.git, newest):
                    raise RemoteError(tracked_aca_problem(files, f"{self.public} ({branch})"))
                repo.git.checkout("--force", "-B", branch, newest)
        if problem := linked_aca_folder(self.workdir):  # before a session record is written
            raise RemoteError(problem)
        return repo

    def remove_unclaimed(self) -> bool:
        """Remove the working area if this process made it and no other has checked it out
        since (a run refused before it made a session leaves nothing behind); whether it did."""
        with self._area_lock():
            claim = self.workdir / ".git" / _UNCLAIMED
            try:
                ours = claim.read_text() == _CLAIMANT
            except OSError:
                return False
            if ours:
                shutil.rmtree(self.workdir, ignore_errors=True)
            return ours

    def _area_lock(self) -> FileLock:
        area = hashlib.sha256(str(self.workdir.resolve()).encode()).hexdigest()[:16]
        return FileLock(repos_home() / ".locks" / f"{area}.lock")

    def fetch_session(self, repo: git.Repo, session_id: str) -> bool:
        """Fetch the session's branch and record from the remote; False if it has no record
        of the session. The local session branch is created from, or fast-forwarded to, the
        remote's; a local branch ahead of it (work not pushed yet) is kept."""
        ref = session_record_ref(session_id)
        branch = f"refs/heads/{session_branch(session_id)}"
        listed = self._git(repo, "ls-remote", self.url, ref, branch)
        on_remote = {line.split()[-1] for line in listed.splitlines() if line.strip()}
        if ref not in on_remote:
            return False
        fetched = {ref: f"refs/aca/fetched-sessions/{session_id}"}
        # A branch deleted there (the way out of one that diverged) is pushed again.
        if branch in on_remote:
            fetched[branch] = f"refs/remotes/origin/{session_branch(session_id)}"
        self._git(repo, "fetch", "--no-tags", self.url, *(f"+{r}:{t}" for r, t in fetched.items()))
        for local, tracking in fetched.items():
            _fast_forward(repo, local, tracking)
        return True

    # -- push ---------------------------------------------------------------------------

    def push_session(
        self,
        repo: git.Repo,
        session_id: str,
        *,
        attempts: int = 3,
        backoff_seconds: float = 2.0,
        on_retry: Callable[[int, float, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> PushResult:
        """Push the session branch and its record (atomically: both or neither; the branch
        alone where the remote refuses the record's ref). A rejected or failed push is tried
        again ``attempts`` times in all, waiting ``backoff_seconds``,
        then twice that, ...; ``on_retry(attempt, wait, error)`` hears of each retry. Never
        raises for a push that fails: the result says why (nothing local is changed)."""
        branch = f"refs/heads/{session_branch(session_id)}"
        ref = session_record_ref(session_id)
        head = repo.git.rev_parse("--verify", branch)
        refspecs = [f"{branch}:{branch}"]
        if ref_exists(repo, ref) and self.record_refused is None:
            refspecs.append(f"{ref}:{ref}")
        error = ""
        for attempt in range(1, max(attempts, 1) + 1):
            try:
                self._git(repo, "push", "--atomic", "--porcelain", self.url, *refspecs)
            except RemoteError as exc:
                error = str(exc)
            else:
                return PushResult(
                    pushed=True, head=head, attempts=attempt, error=self.record_refused
                )
            if (diverged := self._diverged(repo, branch, head)) is not None:
                # No try can succeed: it is said with the way out, not tried again.
                return PushResult(
                    pushed=False, head=head, attempts=attempt, error=diverged, diverged=True
                )
            if attempt == attempts and (refused := self._refuses_the_record(repo, refspecs)):
                # A remote that takes branches only (a hook, a host's policy) refused the
                # record's ref every time: the work is delivered without it, from now on.
                self.record_refused = (
                    f"the remote refused the session's record ({ref}: {refused}), so the "
                    "branch was pushed alone: a resume on another machine cannot find the "
                    "session, one on this machine can"
                )
                return PushResult(
                    pushed=True, head=head, attempts=attempt, error=self.record_refused
                )
            if attempt < attempts:
                wait = backoff_seconds * 2 ** (attempt - 1)
                if on_retry is not None:
                    on_retry(attempt, wait, error)
                sleep(wait)
        return PushResult(pushed=False, head=head, attempts=max(attempts, 1), error=error)

    def _refuses_the_record(self, repo: git.Repo, refspecs: list[str]) -> str | None:
        """Why the remote refuses the record's ref, if it takes the branch alone and holds no
        record of the session (one it holds was pushed by a run of the session: a refusal of
        ours is then no policy, and the branch goes nowhere without it). Pushes the branch."""
        if len(refspecs) < 2:
            return None
        ref = refspecs[1].split(":", 1)[0]
        try:
            if self._git(repo, "ls-remote", self.url, ref).strip():
                return None
        except RemoteError:
            return None
        if self._push_alone(repo, refspecs[0]) is not None:
            return None
        return self._push_alone(repo, refspecs[1])

    def _push_alone(self, repo: git.Repo, refspec: str) -> str | None:
        """Push one ref; why it failed, or None."""
        try:
            self._git(repo, "push", "--porcelain", self.url, refspec)
        except RemoteError as exc:
            return str(exc)
        return None

    def _diverged(self, repo: git.Repo, branch: str, head: str) -> str | None:
        """Why no push of ``branch`` can succeed, if the remote's has commits ``head`` does
        not (another run or a person pushed there): aca never overwrites them."""
        try:
            listed = self._git(repo, "ls-remote", self.url, branch).split()
        except RemoteError:
            return None
        if not listed or listed[0] == head or is_ancestor(repo.git, listed[0], head):
            return None
        name = branch.removeprefix("refs/heads/")
        git_here = f"git -C {shlex.quote(str(self.workdir))}"
        return (
            f"the remote's {name} has commits this session does not have (at "
            f"{listed[0][:12]}: another run of the session or a person pushed there), and aca "
            f"never overwrites them. Keep them under another name and free the branch: "
            f"`{git_here} fetch {self.public} {name} && {git_here} push {self.public} "
            f"FETCH_HEAD:refs/heads/{name}-theirs :{branch}`; then a resume on this machine, "
            f"which holds the session's own commits, pushes them"
        )

    # -- helpers ------------------------------------------------------------------------

    def _open_or_init(self) -> git.Repo:
        if (self.workdir / ".git").exists():
            repo = AcaRepo(self.workdir)
            origin = config_value(repo, "remote.origin.url")
            if origin != self.public:
                raise RemoteError(
                    f"{self.workdir} is a checkout of {origin or 'no remote'}, not of "
                    f"{self.public}; give another --workdir, or none (aca then uses "
                    f"{working_area(self.url)})."
                )
            return repo
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise RemoteError(
                f"{self.workdir} is not empty and not a checkout of {self.public}; give an "
                "empty or new folder as --workdir, or none."
            )
        # init + fetch rather than clone: the URL with its credentials never enters config.
        repo = AcaRepo.init(self.workdir)
        repo.git.remote("add", "origin", self.public)
        # aca's mark: only its own checkouts are moved to the remote's newest commit, and their
        # own config may not weaken the sandbox (cloned_config.py).
        repo.git.config(WORKING_AREA_KEY, "true")
        return repo

    def _default_branch(self, repo: git.Repo) -> str:
        listing = self._git(repo, "ls-remote", "--symref", self.url, "HEAD")
        match = re.search(r"^ref: refs/heads/(\S+)\s+HEAD$", listing, re.MULTILINE)
        if match and ref_exists(repo, f"refs/remotes/origin/{match.group(1)}"):
            return match.group(1)
        branches = repo.git.for_each_ref("--format=%(refname:strip=3)", "refs/remotes/origin")
        names = [b for b in branches.split() if b != "HEAD" and not b.startswith("aca/")]
        if not names:
            raise RemoteError(
                f"the repository {self.public} has no commits; push a first commit to it, "
                "then run aca again."
            )
        return "main" if "main" in names else names[0]

    def _git(self, repo: git.Repo, *args: str) -> str:
        """A git command that talks to the remote; its failure is a ``RemoteError`` whose
        message names the public URL only."""
        # BatchMode: an unattended run fails on a host key or password prompt, never hangs.
        env = {"GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")}
        try:
            return repo.git.execute(["git", *args], env=env)
        except git.GitCommandError as exc:
            raise RemoteError(self._explain(args[0], exc)) from None

    def _explain(self, command: str, exc: git.GitCommandError) -> str:
        stderr = str(exc.stderr or "").replace(self.url, self.public).strip()
        stderr = stderr.removeprefix("stderr:").strip()
        if len(stderr) > 1 and stderr[0] == stderr[-1] == "'":  # GitPython quotes it
            stderr = stderr[1:-1]
        # git's own "To <url>" and "failed to push some refs" lines only repeat the URL.
        lines = [
            line.strip()
            for line in stderr.splitlines()
            if line.strip() and not line.startswith(("To ", "error: failed to push some refs"))
        ]
        detail = redact_text("; ".join(lines[:3]) or f"git {command} exited with {exc.status}")
        for secret in url_secrets(self.url):
            detail = detail.replace(secret, "[REDACTED]")
        if command == "push":
            return detail
        return (
            f"{self.public} cannot be fetched ({detail}). Give --repo a git URL or the path of "
            "a git repository that exists and that you may read."
        )


_HEADS_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"
# In the .git of a working area this process cloned and no other has checked out since.
_UNCLAIMED = "aca-unclaimed"
_CLAIMANT = f"{os.getpid()} {uuid.uuid4()}"


def save_session_record(repo: git.Repo, session_id: str, session_dir: Path) -> str:
    """Commit the session's folder to ``refs/aca/sessions/<id>`` (a new commit only when it
    changed); returns the ref's commit. Uses a private index: the checkout is not touched."""
    ref = session_record_ref(session_id)
    parent = repo.git.rev_parse("--verify", "--quiet", ref) if ref_exists(repo, ref) else ""
    with tempfile.TemporaryDirectory(prefix="aca-record-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index"), "GIT_WORK_TREE": str(session_dir)}
        excludes = [f":(exclude){path}" for path in _LOCAL_ONLY]
        # Atomic writes' temporary files (.<name>.<random>.tmp) of tasks still running come
        # and go while git reads the folder: "unable to stat" failed the whole flow run.
        excludes.append(":(exclude,glob)**/.*.tmp")
        # -f: the user's global excludes (*.log, ...) must not drop part of the record.
        repo.git.execute(["git", "add", "-A", "-f", "--", ".", *excludes], env=env)
        tree = repo.git.execute(["git", "write-tree"], env=env).strip()
    if parent and repo.git.rev_parse(f"{parent}^{{tree}}") == tree:
        return parent
    args = ["git", "commit-tree", tree, "-m", f"aca session {session_id}: its record"]
    if parent:
        args[3:3] = ["-p", parent]
    env = {
        "GIT_AUTHOR_NAME": "aca",
        "GIT_AUTHOR_EMAIL": "aca@localhost",
        "GIT_COMMITTER_NAME": "aca",
        "GIT_COMMITTER_EMAIL": "aca@localhost",
    }
    commit = repo.git.execute(args, env=env).strip()
    repo.git.update_ref(ref, commit, parent or "0" * 40)
    return commit


def restore_session_record(
    repo: git.Repo,
    session_id: str,
    session_dir: Path,
    accept: Callable[[Path], None] | None = None,
) -> bool:
    """Replace ``session_dir`` with the record ``refs/aca/sessions/<id>`` holds; False (and
    nothing changed) if there is no such ref. ``accept(folder)`` sees the record first, in a
    folder of its own, and raises to keep ``session_dir`` as it is. Call only while no
    process runs the session."""
    ref = session_record_ref(session_id)
    if not ref_exists(repo, ref):
        return False
    _refuse_links(repo, ref)
    session_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{session_id}-", dir=session_dir.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="aca-record-") as scratch:
            env = {"GIT_INDEX_FILE": str(Path(scratch) / "index"), "GIT_WORK_TREE": str(staging)}
            repo.git.execute(["git", "read-tree", ref], env=env)
            repo.git.execute(["git", "checkout-index", "-a", "-f"], env=env)
        if accept is not None:
            accept(staging)
        old = session_dir.with_name(f".{session_id}.replaced")
        if session_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            session_dir.rename(old)
        staging.rename(session_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _refuse_links(repo: git.Repo, ref: str) -> None:
    """A record aca pushed holds files and folders only. Whoever can push to the remote can
    replace it: a symbolic link there (``meta/events.jsonl`` to ``~/.bashrc``) would have aca
    write the session's journal wherever it points."""
    tree = repo.git.ls_tree("-r", "--full-tree", ref).splitlines()
    links = [line.split("\t", 1)[1] for line in tree if not line.startswith("100")]
    if links:
        raise RemoteError(
            f"the session record {ref} on the remote holds what aca never writes there, a "
            f"symbolic link or a submodule ({', '.join(links[:3])}); it was not restored. "
            "Someone who can push to the remote changed it: check the remote, or resume the "
            "session where its record is (without --repo)."
        )


def _fast_forward(repo: git.Repo, ref: str, to: str) -> None:
    """Move ``ref`` to ``to`` if it is missing or behind it; leave it if it is ahead."""
    target = repo.git.rev_parse("--verify", to)
    if not ref_exists(repo, ref):
        repo.git.update_ref(ref, target, "0" * 40)
        return
    current = repo.git.rev_parse("--verify", ref)
    if current != target and is_ancestor(repo.git, current, target):
        repo.git.update_ref(ref, target, current)
