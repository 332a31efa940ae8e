"""A run with a ``repo``: its working area, its session fetched from the remote, its pushes.

``open_remote`` (before the session opens) clones or fetches the repository into the run's
working area and, for a session id the remote knows, fetches its branch and record and
restores the record there (a fresh worker, or one whose record is older than the remote's).
``push_landed_work`` (after each task lands; in the background, one push at a time) and
``push_session_work`` (when the run ends; it waits for the one under way) commit the record to
``refs/aca/sessions/<id>`` and push it with the branch; a push that still fails after its
retries is a warning, a ``branch_pushed`` entry with the error in the journal, and the
summary's ``unpushed``; the next landing or run pushes everything again.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path

import git

from aca_flows._threads import in_thread
from aca_flows.errors import InputError
from aca_flows.session.errors import SessionFileError
from aca_flows.session.layout import AcaDir
from aca_flows.session.lock import SessionLock
from aca_flows.session.plan_seals import seal_changes, seal_path, sealed_source
from aca_flows.session.reading import read_records
from aca_flows.session.record import SessionRecord
from aca_flows.session.secret_values import register_secret
from aca_flows.session.store import SessionStore
from aca_flows.workspace.remote import (
    PushResult,
    RemoteError,
    RemoteRepository,
    restore_session_record,
    save_session_record,
    url_secrets,
    working_area,
)

__all__ = [
    "PUSH_ATTEMPTS",
    "PUSH_BACKOFF_SECONDS",
    "RunRemote",
    "claim_session",
    "open_remote",
    "push_landed_work",
    "push_session_work",
    "pushes_settled",
    "register_remote",
    "resume_of",
    "session_resume",
    "run_working_area",
]

# Three tries, 2 s then 4 s apart: a remote that is briefly busy or unreachable catches up.
PUSH_ATTEMPTS = 3
PUSH_BACKOFF_SECONDS = 2.0

# The flow registers its remote here; pushes find it by session id.
_REMOTES: dict[str, RunRemote] = {}


@dataclass
class RunRemote:
    """The remote of one run and the checkout it works in."""

    remote: RemoteRepository
    repo: git.Repo
    pushing: asyncio.Task | None = None
    """The push under way in the background, if any."""
    push_again: bool = False
    """A task landed while ``pushing`` ran: one more push follows it."""

    @property
    def workdir(self) -> Path:
        return self.remote.workdir


def run_working_area(url: str, workdir: str | None) -> str:
    """The folder a run of ``url`` works in (``workdir``, or the default working area when it
    is ``None`` or ``"."``); ``workdir`` itself for a URL that is not one (``open_remote``, or
    a deployment run's guard, then says what is wrong, without the URL's credentials, which
    the URL parser's own error would quote)."""
    try:
        return str(working_area(url, None if workdir in (None, ".") else Path(workdir)))
    except (RemoteError, ValueError):
        return workdir or "."


def open_remote(url: str, workdir: str | None, session_id: str | None) -> RunRemote:
    """Clone or fetch ``url`` into the working area (``workdir``, or ``~/.aca/repos/<slug>``
    when it is ``None`` or ``"."``) and bring the session ``session_id`` from the remote when
    the remote's record is newer than the local one. Blocking (git); raises ``RemoteError``."""
    for secret in url_secrets(url):
        register_secret(secret)  # logs, records and errors never show them
    remote = RemoteRepository(url, Path(run_working_area(url, workdir)))
    repo = remote.checkout()
    if session_id:
        _bring_session(remote, repo, session_id)
    return RunRemote(remote, repo)


def _bring_session(remote: RemoteRepository, repo: git.Repo, session_id: str) -> None:
    paths = AcaDir(remote.workdir).session(session_id)
    before = _record_commit(repo, session_id)
    if not remote.fetch_session(repo, session_id):
        return  # the remote does not know it: a new session, or one only this disk has
    after = _record_commit(repo, session_id)
    if (paths.root / "meta").is_dir() and before == after:
        return  # the local record is the remote's or newer
    if paths.lock_file.parent.is_dir():
        # A live run of the session here keeps its record: this refuses, naming it.
        SessionLock(paths.lock_file, session_id, remote.public).acquire().release()
    accept = functools.partial(_refuse_a_changed_plan, remote.public, session_id)
    restore_session_record(repo, session_id, paths.root, accept)


def _refuse_a_changed_plan(remote: str, session_id: str, fetched: Path) -> None:
    """A record from the remote whose plan is not the one this machine's runs sealed (started,
    approved, extended by their own agents) is refused: whoever can push to the remote can
    rewrite it, and the resume would run their tasks with the user's key and budget."""
    if not seal_path(session_id).exists():
        return  # never run here: resumed elsewhere as the remote holds it (docs/security.md)
    try:
        changes = [c for record in read_records(fetched) for c in seal_changes(record)]
    except SessionFileError as exc:
        changes = [f"its record cannot be read ({exc.problem})"]
    if not changes:
        return
    source = sealed_source(session_id) or "<your task file>"
    raise RemoteError(
        f"session {session_id}: its record on {remote} is not the plan you started or "
        f"approved here ({'; '.join(dict.fromkeys(changes))}); it was not restored and nothing "
        "ran. Whoever can push to the remote can rewrite a session's record. To run your task "
        f"file, start a new run (`aca run {source} --repo {remote}`). If you made this change "
        "yourself, resuming the session on another machine, resume it there, or remove "
        f"{seal_path(session_id)} to accept the remote's plan and resume again."
    )


def _record_commit(repo: git.Repo, session_id: str) -> str | None:
    try:
        return repo.git.rev_parse("--verify", "--quiet", f"refs/aca/sessions/{session_id}")
    except git.GitCommandError:
        return None


def register_remote(session_id: str, remote: RunRemote | None) -> None:
    """Pushes of ``session_id`` go to ``remote`` (``None``: the run has no remote any more;
    a push still under way is abandoned: the next run pushes everything)."""
    if remote is None:
        gone = _REMOTES.pop(session_id, None)
        if gone is not None and gone.pushing is not None:
            gone.pushing.cancel()
    else:
        _REMOTES[session_id] = remote


def resume_of(store: SessionStore) -> str:
    """``aca resume ID`` of the session of ``store``, as the reader runs it: with this run's
    remote, or the one the session pushed to before (its resume pushes what it lands)."""
    running = _REMOTES.get(store.session_id)
    remote = running.remote.public if running else None
    return session_resume(store.session, store.paths.workdir, remote)


def session_resume(session: SessionRecord, workdir: Path, remote: str | None = None) -> str:
    """``aca resume ID`` of ``session`` (in ``workdir``), as the reader runs it: with
    ``remote``, else the remote the session pushed to, if any."""
    from aca_flows._words import resume_command

    return resume_command(session.id, workdir, remote or getattr(session.remote, "url", None))


def push_landed_work(store: SessionStore, logger) -> None:
    """After a task landed: push the session in the background, so no task waits for the
    network. One push at a time; landings during a push are carried by one more push."""
    remote = _REMOTES.get(store.session_id)
    if remote is None:
        return
    if remote.pushing is not None and not remote.pushing.done():
        remote.push_again = True
        return
    remote.pushing = asyncio.create_task(_push_until_current(remote, store, logger))


async def push_session_work(store: SessionStore, logger) -> None:
    """At the end of a run: wait for a push under way, then push what the session holds
    now (its end included), if the run has a remote."""
    remote = _REMOTES.get(store.session_id)
    if remote is None:
        return
    if remote.pushing is not None:
        await remote.pushing
    await _push(remote, store, logger)


async def pushes_settled(session_id: str) -> None:
    """Wait until no push for ``session_id`` is under way (one that started while waiting
    included): the session's ``remote`` then says whether the remote holds what landed."""
    while (remote := _REMOTES.get(session_id)) is not None and remote.pushing is not None:
        if remote.pushing.done():
            return
        await asyncio.wait({remote.pushing})  # a push abandoned (cancelled) raises nothing


async def _push_until_current(remote: RunRemote, store: SessionStore, logger) -> None:
    while True:
        remote.push_again = False
        await _push(remote, store, logger)
        if not remote.push_again:
            return


async def claim_session(remote: RunRemote, store: SessionStore, logger) -> None:
    """A resume with a remote takes its session over: its record goes to the remote before any
    task starts, so an earlier run still going (on another machine) pushes nothing more, its
    record no longer the remote's. One that pushed since this resume fetched has moved the
    session on: the resume stops before it runs anything (it would run again what that run
    did, then push nothing), saying to resume again."""
    if (await _pushed(remote, store, logger, attempts=1)).diverged:
        store.close()
        resume = session_resume(store.session, store.paths.workdir, remote.remote.public)
        raise InputError(
            f"another run of session {store.session_id} pushed to {remote.remote.public} "
            f"while this resume started, so it moved on; `{resume}` again takes the session "
            "over from there (nothing of it ran here)."
        )


async def _push(remote: RunRemote, store: SessionStore, logger) -> None:
    """Push the session; a failure is logged as a warning."""
    result = await _pushed(remote, store, logger)
    if result.pushed and result.error:
        logger.warning(f"pushed {store.branch} to {remote.remote.public}, but {result.error}")
    elif result.pushed:
        logger.info(f"pushed {store.branch} to {remote.remote.public}")
    else:
        logger.warning(
            f"{store.branch} is not on {remote.remote.public} yet ({result.attempts} tries): "
            f"{result.error}. Nothing is lost: the work is on the local branch in "
            f"{remote.workdir}, and the next task, run or `aca resume` pushes it again."
        )


async def _pushed(
    remote: RunRemote, store: SessionStore, logger, attempts: int = PUSH_ATTEMPTS
) -> PushResult:
    """Commit the session's record and push it with the branch; the outcome is journalled."""
    try:
        # The record is read here, on the flow's thread, where the journal is written.
        store.write_session_json_now()
        save_session_record(remote.repo, store.session_id, store.paths.root)
    except (git.GitCommandError, OSError) as exc:
        # The branch is pushed all the same; the next push carries the record.
        logger.warning(f"the session's record could not be committed for the remote: {exc}")

    def on_retry(attempt: int, wait: float, error: str) -> None:
        logger.warning(
            f"push to {remote.remote.public} failed: {error}; pushing again in {wait:g} s "
            f"(try {attempt + 1})"
        )

    result = await in_thread(
        remote.remote.push_session,
        remote.repo,
        store.session_id,
        attempts=attempts,
        backoff_seconds=PUSH_BACKOFF_SECONDS,
        on_retry=on_retry,
    )
    store.branch_pushed(
        remote.remote.public,
        result.head,
        pushed=result.pushed,
        attempts=result.attempts,
        error=result.error,
    )
    return result
