"""Checkpoints: named, dated points of a session, and what ``aca resume`` continues from.

A checkpoint is ``checkpoints/<checkpoint-id>.json`` in its session folder: when, why
(``trigger``: auto, manual, interrupt, end, or what stopped the run: budget, usage-limit,
provider, branch-lost, branch-reset), a description, tasks done/total and the
ids of the completed tasks. Its id, ``cp-20261125-183000-a1b2c3``, sorts by time and is
unique across sessions, so ``aca resume <checkpoint-id>`` needs no session id.

Resuming from a checkpoint continues its session from the session's latest state (the
journal and the session branch), never from an older one: work finished after the checkpoint
is kept, and no completed task runs again.

The writer records its checkpoints with ``create_checkpoint(store, ...)`` (file and journal
event). ``create_manual_checkpoint`` is for ``aca checkpoints create``, which may run while
another process writes the session: it only adds a new file and takes no lock.
``CheckpointPolicy`` tells the engine when an automatic checkpoint is due.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aca_flows._words import counted
from aca_flows.errors import InputError
from aca_flows.session.errors import (
    NothingToResumeError,
    UnknownCheckpointError,
    UnknownSessionError,
)
from aca_flows.session.events import CheckpointCreated, CheckpointTrigger
from aca_flows.session.files import write_json_atomic
from aca_flows.session.layout import AcaDir, SessionPaths
from aca_flows.session.reading import (
    display_status,
    latest_session_id,
    load_session,
    resolve_session_id,
    scan_sessions,
)
from aca_flows.session.record import SessionRecord, describe_counts
from aca_flows.session.store import SessionStore

__all__ = [
    "Checkpoint",
    "CheckpointPolicy",
    "ResumeTarget",
    "checkpoint_of",
    "create_checkpoint",
    "create_manual_checkpoint",
    "find_checkpoint",
    "list_checkpoints",
    "new_checkpoint_id",
    "resolve_resume_target",
]

_log = logging.getLogger(__name__)

CHECKPOINT_SCHEMA_VERSION = 1
CHECKPOINT_PREFIX = "cp-"


class Checkpoint(BaseModel):
    """The content of ``checkpoints/<id>.json``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = CHECKPOINT_SCHEMA_VERSION
    id: str
    session_id: str
    created_at: datetime
    trigger: CheckpointTrigger
    description: str = ""
    tasks_done: int = Field(ge=0)
    tasks_total: int = Field(ge=0)
    completed_task_ids: list[str] = Field(default_factory=list)
    session_status: str = "running"
    last_seq: int = Field(default=0, description="The journal event this checkpoint follows.")


def new_checkpoint_id(now: datetime | None = None) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{CHECKPOINT_PREFIX}{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def checkpoint_of(
    session: SessionRecord,
    trigger: CheckpointTrigger,
    description: str = "",
    now: datetime | None = None,
) -> Checkpoint:
    """A checkpoint describing ``session`` as it is now (not yet written)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return Checkpoint(
        id=new_checkpoint_id(now),
        session_id=session.id,
        created_at=now,
        trigger=trigger,
        description=description or _default_description(session, trigger),
        tasks_done=session.tasks_done,
        tasks_total=session.tasks_total,
        completed_task_ids=session.completed_task_ids,
        session_status=session.status,
        last_seq=session.last_seq,
    )


def create_checkpoint(
    store: SessionStore,
    trigger: CheckpointTrigger = "auto",
    description: str = "",
    now: datetime | None = None,
) -> Checkpoint:
    """Write a checkpoint of the session ``store`` writes, and journal ``checkpoint_created``."""
    checkpoint = checkpoint_of(store.session, trigger, description, now)
    _write(store.paths, checkpoint)
    store.record(
        CheckpointCreated(
            checkpoint_id=checkpoint.id,
            trigger=checkpoint.trigger,
            description=checkpoint.description,
            at=checkpoint.created_at,
        )
    )
    return checkpoint


def create_manual_checkpoint(
    workdir: Path, description: str, session_id: str | None = None
) -> Checkpoint:
    """``aca checkpoints create``: a checkpoint of ``session_id`` or the newest session.

    Takes no lock and writes only the new checkpoint file, so it is safe while the session
    runs in another process. Raises ``UnknownSessionError`` if there is no such session.
    """
    workdir = Path(workdir).resolve()
    if session_id is None:
        session_id = latest_session_id(workdir)
        if session_id is None:
            raise UnknownSessionError(
                "(latest)", workdir, "no session to checkpoint: there is no session"
            )
    session = load_session(workdir, session_id)
    checkpoint = checkpoint_of(session, "manual", description)
    _write(AcaDir(workdir).session(session.id), checkpoint)
    return checkpoint


def list_checkpoints(workdir: Path, session_id: str | None = None) -> list[Checkpoint]:
    """Checkpoints of one session (id or unique prefix), or of every session; newest first.

    A checkpoint file that cannot be read is left out: checkpoints are conveniences, and
    the journal, not a checkpoint, is what resume relies on.
    """
    workdir = Path(workdir).resolve()
    aca = AcaDir(workdir)
    if session_id is not None:
        folders = [aca.session(resolve_session_id(workdir, session_id))]
    elif aca.sessions_dir.is_dir():
        folders = [SessionPaths(p) for p in aca.sessions_dir.iterdir() if p.is_dir()]
    else:
        folders = []
    found = [cp for paths in folders for cp in _read_all(paths)]
    return sorted(found, key=lambda c: (c.created_at, c.id), reverse=True)


def find_checkpoint(workdir: Path, checkpoint_id: str) -> Checkpoint:
    """The checkpoint with this id (or unique prefix), in any session of ``workdir``."""
    workdir = Path(workdir).resolve()
    every = list_checkpoints(workdir)
    exact = [c for c in every if c.id == checkpoint_id]
    if exact:
        return exact[0]
    matches = [c for c in every if checkpoint_id and c.id.startswith(checkpoint_id)]
    if len(matches) == 1:
        return matches[0]
    problem = "ambiguous checkpoint id" if matches else "no checkpoint"
    raise UnknownCheckpointError(checkpoint_id, workdir, problem)


@dataclass(frozen=True)
class ResumeTarget:
    """What ``aca resume`` continues: a session, and the checkpoint named, if one was."""

    session_id: str
    checkpoint: Checkpoint | None = None


def resolve_resume_target(
    workdir: Path,
    target: str | None = None,
    *,
    latest: bool = False,
    pushes: bool = False,
    opens_pr: bool = False,
) -> ResumeTarget:
    """``aca resume <checkpoint-id | session-id>`` or ``aca resume --latest`` -> the session.

    ``target`` may be a checkpoint id, a session id, or a unique prefix of either.
    ``latest`` picks the newest session that has not completed, or that completed without
    its work delivered where this resume delivers it: its push failed (``pushes``: the resume
    has ``--repo``), or its pull request (``opens_pr``: ``--open-pr``). Raises
    ``InputError``s that say how to list the ids.
    """
    workdir = Path(workdir).resolve()
    if latest and target:
        raise InputError("give either an id or --latest to `aca resume`, not both")
    if latest:
        scan = scan_sessions(workdir)
        sessions = scan.sessions
        for session in sessions:
            status = display_status(session, workdir)
            if status == "completed":
                # "Start new work with `aca run`" would pay for all of it again.
                unpushed = pushes and session.remote is not None and session.remote.unpushed
                no_pr = opens_pr and session.pull_request is not None and session.pull_request.error
                if unpushed or no_pr:
                    return ResumeTarget(session.id)
            # A waiting run is alive (or suspended): answer it instead.
            elif status != "running" and not status.startswith("waiting"):
                return ResumeTarget(session.id)
        why = "every session there completed or is running" if sessions else "it holds none"
        if scan.damaged:  # unfinished, maybe: they cannot be read
            readable = "every readable one completed or is running" if sessions else "none"
            why = (
                f"{readable} of them, and {counted(len(scan.damaged), 'session')} cannot be "
                "read: `aca sessions list` says what is damaged in each and how to mend it"
            )
        raise NothingToResumeError(
            f"no unfinished session in {workdir / '.aca' / 'sessions'}: {why}. Start new work "
            "with `aca run`, or pick a session id from `aca sessions list`."
        )
    if not target:
        raise InputError("`aca resume` needs a checkpoint id, a session id, or --latest")
    if target.startswith(CHECKPOINT_PREFIX):
        checkpoint = find_checkpoint(workdir, target)
        return ResumeTarget(checkpoint.session_id, checkpoint)
    try:
        return ResumeTarget(resolve_session_id(workdir, target))
    except UnknownSessionError as exc:
        if exc.ambiguous:
            raise
    try:
        checkpoint = find_checkpoint(workdir, CHECKPOINT_PREFIX + target)
    except UnknownCheckpointError:
        raise UnknownSessionError(
            target,
            workdir,
            "no session or checkpoint",
            "`aca sessions list` or `aca checkpoints list --all-sessions`",
        ) from None
    return ResumeTarget(checkpoint.session_id, checkpoint)


class CheckpointPolicy:
    """When the engine writes an automatic checkpoint: every ``interval_minutes`` and every
    ``every_tasks`` completed tasks, counted from the last checkpoint (``mark``).

    The engine asks ``due(now, completed_count)`` after each task and on a timer, and calls
    ``mark(now, completed_count)`` after writing any checkpoint.
    """

    def __init__(
        self,
        interval_minutes: float,
        every_tasks: int,
        *,
        now: datetime | None = None,
        completed_count: int = 0,
    ):
        if interval_minutes <= 0 or every_tasks < 1:
            raise ValueError("interval_minutes must be > 0 and every_tasks >= 1")
        self.interval = timedelta(minutes=interval_minutes)
        self.every_tasks = every_tasks
        self.last_at = now or datetime.now(UTC)
        self.last_completed = completed_count

    @classmethod
    def from_config(cls, session_config, *, now=None, completed_count: int = 0):
        """From ``AcaConfig.session`` (``checkpoint_interval_minutes``, ``..._every_tasks``)."""
        return cls(
            session_config.checkpoint_interval_minutes,
            session_config.checkpoint_every_tasks,
            now=now,
            completed_count=completed_count,
        )

    def due(self, now: datetime, completed_count: int) -> bool:
        return (
            now - self.last_at >= self.interval
            or completed_count - self.last_completed >= self.every_tasks
        )

    def mark(self, now: datetime, completed_count: int) -> None:
        self.last_at = now
        self.last_completed = completed_count


def _write(paths: SessionPaths, checkpoint: Checkpoint) -> None:
    write_json_atomic(paths.checkpoint(checkpoint.id), checkpoint.model_dump(mode="json"))


def _read_all(paths: SessionPaths) -> list[Checkpoint]:
    if not paths.checkpoints_dir.is_dir():
        return []
    found = []
    for file in paths.checkpoints_dir.glob(f"{CHECKPOINT_PREFIX}*.json"):
        try:
            found.append(Checkpoint.model_validate_json(file.read_bytes()))
        except (ValidationError, OSError) as exc:
            _log.warning(
                "%s: skipped, not a readable checkpoint (%s); remove it: the session resumes "
                "by its id without it",
                file,
                _unreadable(exc),
            )
    return found


def _unreadable(exc: ValidationError | OSError) -> str:
    """Why a checkpoint file cannot be read, for a person (not pydantic's report)."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if any(error["type"] == "json_invalid" for error in exc.errors()):
        return "it is not JSON"
    return "its JSON is not a checkpoint: " + ", ".join(
        ".".join(map(str, error["loc"])) or "(top level)" for error in exc.errors()[:3]
    )


def _default_description(session: SessionRecord, trigger: CheckpointTrigger) -> str:
    progress = describe_counts(session.task_counts)
    return {
        "auto": f"automatic: {progress}",
        "manual": f"manual: {progress}",
        "interrupt": f"interrupted: {progress}",
        "budget": f"stopped by a budget: {progress}",
        "usage-limit": f"stopped by a provider's usage limit: {progress}",
        "provider": f"stopped: a provider cannot serve the run: {progress}",
        "branch-lost": f"stopped: the session branch is gone: {progress}",
        "branch-reset": f"stopped: the session branch was reset: {progress}",
        "branch-checked-out": f"stopped: the session branch is checked out: {progress}",
        "end": f"end of run ({session.status}): {progress}",
    }[trigger]
