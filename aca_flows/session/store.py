"""The session store: create or open a session, journal its events, keep session.json current.

``SessionStore`` is the one writer of a session. ``create`` and ``open`` take the session's
lock (``SessionLockedError`` if another live process has it) and keep it until ``close``
(or the end of the ``with`` block). Every change is one event:

1. the event is appended to ``meta/events.jsonl`` and fsynced (the truth after a crash);
2. it is applied to the in-memory ``SessionRecord``;
3. ``meta/session.json`` is replaced atomically with the new record: at once, or, when it was
   written less than ``SESSION_JSON_DELAY`` ago, once that time is up (events that come
   close together share one write; ``close`` writes what is left).

The delayed writes are made by one writer thread per store (``DelayedWrite``), joined by
``close``.

A run records from its event loop; ``off_loop`` records in the store's journal thread instead,
so the loop runs every other task while the journal is fsynced (1-10 ms each on a busy disk),
and returns once the event is on disk, as ``record`` does.

session.json is the whole record, so writing it costs more as the plan grows (about 4 ms at
500 tasks): written for every event, it made a task's bookkeeping grow with the plan. A crash
leaves it behind the journal; ``open`` and ``load_session`` notice (``last_seq`` differs
from the journal) and rebuild it from the journal, as they do when session.json is missing,
truncated or corrupt, so a reader that is not the writer never sees less than the journal.
Everything written passes the redaction filter. Readers that are not the writer (``aca
sessions list``) use ``reading.py``, which takes no lock and changes nothing on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from aca_flows._files import readable
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers.base import Usage
from aca_flows.session.delayed_write import DelayedWrite
from aca_flows.session.events import (
    ApprovalDecided,
    BranchPushed,
    CallPurpose,
    CallRecorded,
    Event,
    PullRequestDelivered,
    SessionFinished,
    SessionResumed,
    SessionStarted,
    SourceFile,
    SubtasksAdded,
    TaskAnswered,
    TaskBlocked,
    TaskCompleted,
    TaskFailed,
    TaskResult,
    TaskSkipped,
    TaskStarted,
    event_from_json,
    event_to_json,
)
from aca_flows.session.files import write_json_atomic, write_text_atomic
from aca_flows.session.fold import apply_event, fold_events
from aca_flows.session.journal import append_event, read_journal
from aca_flows.session.layout import AcaDir, SessionPaths, session_branch
from aca_flows.session.lock import LockHolder, SessionLock
from aca_flows.session.plan_seals import keep_seal
from aca_flows.session.reading import read_session_folder, resolve_session_id
from aca_flows.session.record import SessionRecord, SessionStatus
from aca_flows.session.redact import redact
from aca_flows.session.secret_names import is_secret_name

__all__ = ["SessionStore", "new_session_id"]

CONFIG_SCHEMA_VERSION = 1

P = ParamSpec("P")
R = TypeVar("R")


def new_session_id(now: datetime | None = None) -> str:
    """``20261125-183000-a1b2c3``: UTC time then 6 random hex digits; sorts by creation."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


# The longest session.json trails the journal while the store is open (see the module doc).
SESSION_JSON_DELAY = 0.2


class SessionStore:
    """The writer of one session. Build it with ``create`` or ``open``, never directly.

    Thread-safe: task runs in several threads may record events concurrently; each event is
    journalled and applied whole, in the order ``record`` was called.
    """

    def __init__(self, paths: SessionPaths, session: SessionRecord, lock: SessionLock):
        self.paths = paths
        self._session = session
        self._lock = lock
        self._mutex = threading.Lock()
        self._json_seq = session.last_seq  # the last event session.json holds
        self._json_writes = DelayedWrite(
            self._write_session_json,
            SESSION_JSON_DELAY,
            self._mutex,
            name=f"aca-session-json-{session.id}",
        )
        self._closed = False
        self._closing = False
        self._journal_thread: ThreadPoolExecutor | None = None  # for ``off_loop``
        self.repairs: list[str] = []
        """What ``open`` had to fix (a torn journal line, a rebuilt session.json), for logs."""

    # -- building -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        workdir: Path,
        plan: ExecutionPlan,
        *,
        provider: str,
        model: str | None = None,
        name: str | None = None,
        options: dict[str, Any] | None = None,
        now: datetime | None = None,
        session_id: str | None = None,
        budget_usd: float | None = None,
        source: SourceFile | None = None,
        config_file: str | None = None,
    ) -> SessionStore:
        """A new session for ``plan`` in ``<workdir>/.aca/sessions/<new id>/``, locked.

        Its name is ``name`` or the plan's name; its branch is ``aca/<session-id>``.
        ``options`` (provider options) go to ``claude/session_config.json`` without any value
        whose key names a secret.
        """
        workdir = Path(workdir).resolve()
        aca = AcaDir(workdir)
        if session_id is not None:  # chosen by the caller (a deployment's flow run)
            paths = aca.session(session_id)
            (paths.root / "meta").mkdir(parents=True, exist_ok=False)
        while session_id is None:
            candidate = new_session_id(now)
            paths = aca.session(candidate)
            try:
                (paths.root / "meta").mkdir(parents=True, exist_ok=False)
                session_id = candidate
            except FileExistsError:
                continue  # same second, same random suffix: draw again
        lock = SessionLock(paths.lock_file, session_id).acquire()
        try:
            started = SessionStarted(
                seq=1,
                session_id=session_id,
                name=name or plan.name or session_id,
                workdir=str(workdir),
                branch=session_branch(session_id),
                provider=provider,
                model=model,
                plan=plan,
                budget_usd=budget_usd,
                source=source,
                config_file=config_file,
                **({"at": now.astimezone(UTC)} if now else {}),
            )
            started = _redacted(started)
            store = cls(paths, fold_events([started]), lock)
            # Journal first: from this line on the session exists and can be rebuilt.
            append_event(paths.events_jsonl, started)
            keep_seal(store.session)
            store.write_session_config(provider, model, options or {})
            store._json_writes.now()
        except BaseException:
            lock.release()
            raise
        return store

    @classmethod
    def open(cls, workdir: Path, session_id: str, remote: str | None = None) -> SessionStore:
        """The existing session ``session_id`` (or a unique prefix of it), locked for writing.
        ``remote``: the run's ``--repo``, named by the resume command of a refusal.

        Repairs what a crash can leave: a torn last journal line is cut off, and a stale,
        missing or corrupt session.json is rebuilt from the journal (listed in ``repairs``).
        Opening records nothing; call ``resumed()`` when the run continues.
        """
        workdir = Path(workdir).resolve()
        session_id = resolve_session_id(workdir, session_id)
        paths = AcaDir(workdir).session(session_id)
        lock = SessionLock(paths.lock_file, session_id, remote).acquire()
        try:
            loaded = read_session_folder(paths, repair=True)
        except BaseException:
            lock.release()
            raise
        store = cls(paths, loaded.session, lock)
        store.repairs = loaded.repairs
        return store

    def close(self) -> None:
        """Bring session.json up to the journal and release the lock. The store records
        nothing afterwards."""
        with self._mutex:
            self._closing = True  # ``off_loop`` takes nothing more
            journal_thread = self._journal_thread
        if journal_thread is not None:
            journal_thread.shutdown(wait=True)  # what was handed to ``off_loop`` is recorded
        with self._mutex:
            self._closed = True
            writer = self._json_writes.stop()
            if self._lock.held and self._json_seq != self._session.last_seq:
                self._write_session_json()
        if writer is not None:
            writer.join()  # it only takes the mutex, sees the store closed and ends
        self._lock.release()

    def write_session_json_now(self) -> None:
        """Bring session.json up to the journal now, not after its delay: before the record
        is copied elsewhere (the remote's ``refs/aca/sessions``, which showed a finished
        session still running)."""
        with self._mutex:
            if not self._closed and self._lock.held and self._json_seq != self._session.last_seq:
                self._write_session_json()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------

    @property
    def session(self) -> SessionRecord:
        """The current record. Read it, never change it: changes are events (``record``)."""
        return self._session

    @property
    def session_id(self) -> str:
        return self._session.id

    @property
    def branch(self) -> str:
        return self._session.branch

    @property
    def previous_holder(self) -> LockHolder | None:
        """The process that held the session before and died holding it (a crash), if any."""
        return self._lock.previous_holder

    # -- writing --------------------------------------------------------------------------

    def record(self, event: Event) -> bool:
        """Journal ``event``, apply it and replace session.json. ``False``: a repeat, ignored.

        Raises ``ValueError`` for an event the session cannot take (an unknown task, starting
        a completed task); nothing is written then.
        """
        with self._mutex:
            if self._closed or not self._lock.held:
                raise RuntimeError(f"session {self.session_id} is closed; open it again")
            event = _redacted(event.model_copy(update={"seq": self._session.last_seq + 1}))
            # Applied in place (a copy of the whole record per event costs more than the rest
            # of the event together). Handlers check before they change anything; whatever
            # goes wrong, the record is rebuilt from the journal, the truth.
            try:
                if not apply_event(self._session, event):
                    return False
                append_event(self.paths.events_jsonl, event)
            except BaseException:
                self._session = fold_events(read_journal(self.paths.events_jsonl).events)
                raise
            if isinstance(event, _SEALED):  # what this run defines now (plan_seals.py)
                keep_seal(self._session)
            self._json_writes.changed()
            return True

    async def off_loop(self, change: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``change(*args, **kwargs)`` (``record`` or a method built on it, such as
        ``task_completed``) in the store's journal thread, awaited: returns once the event is
        on disk, while the event loop runs everything else. One thread, so the events handed
        here are journalled in the order of the calls."""
        with self._mutex:
            if self._closing or not self._lock.held:
                raise RuntimeError(f"session {self.session_id} is closed; open it again")
            if self._journal_thread is None:
                self._journal_thread = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"aca-journal-{self.session_id}"
                )
            future = self._journal_thread.submit(change, *args, **kwargs)
        # Shielded: a cancelled caller must not take back an event (a paid call) once handed.
        return await asyncio.shield(asyncio.wrap_future(future))

    def resumed(self, checkpoint_id: str | None = None, budget_usd: float | None = None) -> None:
        """Record that this process continues the session: tasks that were running become
        pending (they start again from a clean worktree) and the status is ``running``;
        ``budget_usd`` replaces the session's budget. A session fetched into another working
        area (``--repo`` on another machine) works here from now on."""
        here = str(self.paths.workdir.resolve())
        self.record(
            SessionResumed(
                pid=os.getpid(),
                checkpoint_id=checkpoint_id,
                budget_usd=budget_usd,
                workdir=here if here != self.session.workdir else None,
            )
        )

    def task_started(self, task_id: str, *, provider: str | None = None, model: str | None = None):
        return self.record(TaskStarted(task_id=task_id, provider=provider, model=model))

    def task_completed(self, task_id: str, result: TaskResult | None = None) -> bool:
        """``False`` if the task was already recorded complete (its first result stands)."""
        return self.record(TaskCompleted(task_id=task_id, result=result or TaskResult()))

    def task_failed(
        self,
        task_id: str,
        reason: str,
        *,
        will_retry: bool = False,
    ) -> bool:
        return self.record(
            TaskFailed(task_id=task_id, reason=_reason(reason, "failed"), will_retry=will_retry)
        )

    def task_skipped(self, task_id: str, reason: str) -> bool:
        return self.record(TaskSkipped(task_id=task_id, reason=_reason(reason, "skipped")))

    def task_blocked(self, task_id: str, reason: str) -> bool:
        return self.record(TaskBlocked(task_id=task_id, reason=_reason(reason, "blocked")))

    def subtasks_added(self, parent_id: str, tasks: list[Task]) -> bool:
        return self.record(SubtasksAdded(parent_id=parent_id, tasks=tasks))

    def call_recorded(
        self,
        *,
        provider: str,
        model: str | None,
        usage: Usage,
        cost_usd: float,
        task_id: str | None = None,
        attempt: int | None = None,
        purpose: CallPurpose = "task",
        calls: int = 1,
        unpriced: bool = False,
    ) -> bool:
        """Put one provider call on the session's ledger (the bill, ``aca usage``, budgets);
        ``unpriced``: it was paid, but aca has no price for its model."""
        return self.record(
            CallRecorded(
                purpose=purpose,
                task_id=task_id,
                attempt=attempt,
                provider=provider,
                model=model or "",
                usage=usage,
                cost_usd=max(cost_usd, 0.0),
                calls=calls,
                unpriced=unpriced,
            )
        )

    def branch_pushed(
        self, remote: str, head: str, *, pushed: bool, attempts: int = 1, error: str | None = None
    ) -> bool:
        """Record a push of the session to ``remote`` (its URL without credentials)."""
        return self.record(
            BranchPushed(remote=remote, head=head, pushed=pushed, attempts=attempts, error=error)
        )

    def pull_request_delivered(self, url: str | None, error: str | None) -> bool:
        """Record the run's pull request: its URL, or why it was not delivered."""
        return self.record(PullRequestDelivered(url=url, error=error))

    def finish(self, status: SessionStatus, reason: str | None = None) -> bool:
        """Record the end of this run: completed, failed, interrupted, stopped or rejected."""
        if status == "running":
            raise ValueError("a session finishes as completed, failed, interrupted or stopped")
        return self.record(SessionFinished(status=status, reason=reason and readable(reason)))

    def write_session_config(
        self, provider: str, model: str | None, options: dict[str, Any]
    ) -> None:
        """Replace ``claude/session_config.json``; keys naming a secret are left out."""
        kept = {k: v for k, v in options.items() if not is_secret_name(str(k))}
        write_json_atomic(
            self.paths.session_config_json,
            {
                "schema_version": CONFIG_SCHEMA_VERSION,
                "provider": provider,
                "model": model,
                "options": kept,
            },
        )

    def _write_session_json(self) -> None:
        # No fsync: the journal is fsynced and is the truth; a session.json that an OS crash
        # left stale or empty is detected (last_seq) and rebuilt from it.
        # Redacted already: the record is folded from redacted events only.
        # Serialised by pydantic (its Rust encoder, several times faster than json.dumps of
        # the dumped dict): this runs for every event.
        text = self._session.model_dump_json() + "\n"  # unindented: half the time at 500 tasks
        write_text_atomic(self.paths.session_json, text, durable=False, redact=False)
        self._json_seq = self._session.last_seq


# The events that change what a session runs: its plan, provider, model, budget, approval, a
# task's hints; and a run's end, for what the session has spent.
_SEALED = (SubtasksAdded, SessionResumed, ApprovalDecided, TaskAnswered, SessionFinished)


def _redacted(event: Event) -> Event:
    """The event as it may be kept: redacted once, here, so the journal, the in-memory record
    and session.json never hold a secret and nothing is redacted twice."""
    return event_from_json(json.dumps(redact(event_to_json(event))))


def _reason(reason: str | None, state: str) -> str:
    # An exception with an empty message must still leave a readable status; one naming a
    # file the system gave as bytes that are not UTF-8 (a git error, an OSError) must still
    # fit the record, which is JSON.
    return readable((reason or "").strip()) or f"{state} (no reason given)"
