"""Reading sessions without writing them: no lock taken, nothing changed on disk.

``load_session`` (one session, by id or unique prefix), ``scan_sessions`` and ``list_sessions``
(all of a workdir), ``read_records`` (a session folder as a resume and as its journal alone
read it), ``display_status``. A session.json that trails the journal, or is missing or
damaged, is rebuilt in memory from the journal, so a reader never sees less than the journal.

``read_session_folder`` is the one reading of a session folder; the writer (``SessionStore.open``,
under the lock) calls it with ``repair=True`` to also write back what it rebuilt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aca_flows.session.errors import SessionFileError, UnknownSessionError, refuse_newer_schema
from aca_flows.session.files import write_json_atomic
from aca_flows.session.fold import fold_events
from aca_flows.session.journal import read_journal, repair_journal
from aca_flows.session.layout import AcaDir, SessionPaths
from aca_flows.session.lock import read_lock_holder
from aca_flows.session.record import SESSION_SCHEMA_VERSION, SessionRecord

__all__ = [
    "SessionScan",
    "display_status",
    "latest_session_id",
    "list_sessions",
    "load_session",
    "read_records",
    "read_session_folder",
    "resolve_session_id",
    "scan_sessions",
]


def load_session(workdir: Path, session_id: str) -> SessionRecord:
    """The current record of a session (id or unique prefix), rebuilt in memory if needed.

    Raises ``UnknownSessionError`` or ``SessionFileError`` (damage that cannot be rebuilt).
    """
    workdir = Path(workdir).resolve()
    session_id = resolve_session_id(workdir, session_id)
    return read_session_folder(AcaDir(workdir).session(session_id), repair=False).session


def read_records(session_dir: Path) -> list[SessionRecord]:
    """The record of the session folder ``session_dir`` as a resume reads it (its
    session.json when current), then as its journal alone describes it: the two differ only
    where another hand wrote one of them. Raises ``SessionFileError``; takes no lock and
    changes nothing."""
    paths = SessionPaths(session_dir)
    read = read_session_folder(paths, repair=False).session
    try:
        return [read, fold_events(read_journal(paths.events_jsonl).events)]
    except ValueError as exc:
        raise SessionFileError(paths.events_jsonl, f"not a session's journal ({exc})", "") from None


@dataclass
class SessionScan:
    """All sessions of a workdir, newest first, and the ones that could not be read."""

    sessions: list[SessionRecord] = field(default_factory=list)
    damaged: list[SessionFileError] = field(default_factory=list)


def scan_sessions(workdir: Path) -> SessionScan:
    """Every session of ``workdir``, newest first; damaged ones are reported, not raised."""
    workdir = Path(workdir).resolve()
    aca = AcaDir(workdir)
    scan = SessionScan()
    for session_id in _session_ids(aca):
        try:
            scan.sessions.append(read_session_folder(aca.session(session_id), repair=False).session)
        except SessionFileError as exc:
            scan.damaged.append(exc)
    scan.sessions.sort(key=lambda s: (s.created_at, s.id), reverse=True)
    return scan


def list_sessions(workdir: Path) -> list[SessionRecord]:
    """The readable sessions of ``workdir``, newest first."""
    return scan_sessions(workdir).sessions


def latest_session_id(workdir: Path) -> str | None:
    """The id of the newest session of ``workdir``, or ``None`` when it has none."""
    sessions = list_sessions(workdir)
    return sessions[0].id if sessions else None


def resolve_session_id(workdir: Path, text: str) -> str:
    """The session id ``text`` names: an exact id or a prefix matching exactly one session."""
    workdir = Path(workdir).resolve()
    aca = AcaDir(workdir)
    ids = _session_ids(aca)
    if text in ids:
        return text
    matches = [i for i in ids if text and i.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownSessionError(text, workdir, "ambiguous session id", matches=matches)
    raise UnknownSessionError(text, workdir)


def display_status(session: SessionRecord, workdir: Path | None = None) -> str:
    """The status to show: a ``running`` session whose process is gone shows ``interrupted``;
    one whose plan waits for a person shows ``waiting for approval`` (a suspended deployment
    run has no process while it waits); one with a failed task waiting for a person's answer
    shows ``waiting: task <id> asks: <question>`` (cut to one short line). Every status of a
    run that waits for a person starts with ``waiting``.

    ``workdir`` is where the session was read from (default: where it was created).
    """
    if session.status != "running":
        return session.status
    paths = AcaDir(Path(workdir or session.workdir).resolve()).session(session.id)
    alive = read_lock_holder(paths.lock_file) is not None
    approval = session.approval
    waiting = approval is not None and approval.state == "waiting"
    # A suspended run waits with no process, up to its timeout: then its flow run fails on
    # the server ("paused and never resumed"), and nothing of it is left to answer.
    suspended = waiting and approval.mode == "suspend" and not _expired(approval.expires_at)
    if waiting and (alive or suspended):
        return "waiting for approval"
    if alive and session.question is not None:
        question = " ".join(session.question.question.split())
        if len(question) > _SHOWN_QUESTION:
            question = question[: _SHOWN_QUESTION - 1].rstrip() + "…"
        return f"waiting: task {session.question.task_id} asks: {question}"
    return "running" if alive else "interrupted"


_SHOWN_QUESTION = 60


def _expired(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at < datetime.now(UTC)


# -- loading ------------------------------------------------------------------------------


@dataclass
class _Loaded:
    session: SessionRecord
    repairs: list[str]


def _session_ids(aca: AcaDir) -> list[str]:
    if not aca.sessions_dir.is_dir():
        return []
    return sorted(p.name for p in aca.sessions_dir.iterdir() if (p / "meta").is_dir())


def read_session_folder(paths: SessionPaths, repair: bool) -> _Loaded:
    """The record of the session folder ``paths`` and what was wrong with it (``repairs``).
    ``repair``: also write the repairs back (only the lock holder may).
    """
    journal = read_journal(paths.events_jsonl)
    repairs: list[str] = []
    if journal.torn_line is not None:
        repairs.append(
            f"{paths.events_jsonl}: dropped the unfinished last line {journal.torn_line} "
            "(written during a crash)"
        )
    session, problem = _read_session_json(paths.session_json)
    if session is None or session.last_seq != journal.last_seq:
        if session is not None:
            problem = f"was at event {session.last_seq}, the journal at {journal.last_seq}"
        try:
            session = fold_events(journal.events)
        except ValueError as exc:
            raise SessionFileError(
                paths.events_jsonl,
                f"the journal does not describe a session ({exc})",
                "Restore the file from a backup, or delete the session folder "
                f"{paths.root} and start a new run.",
            ) from None
        repairs.append(f"{paths.session_json}: {problem}; rebuilt from the journal")
        if repair:
            write_json_atomic(paths.session_json, session.model_dump(mode="json"))
    if repair and journal.torn_line is not None:
        repair_journal(paths.events_jsonl, journal)
    return _Loaded(session, repairs)


def _read_session_json(path: Path) -> tuple[SessionRecord | None, str]:
    """The record in ``path``, or ``None`` and why it is unusable (then the journal decides)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "was missing"
    except UnicodeDecodeError:
        return None, "was not UTF-8 text (damaged)"
    try:
        return SessionRecord.model_validate_json(text), ""
    except ValidationError as exc:
        refuse_newer_schema(path, _schema_version(text), SESSION_SCHEMA_VERSION)
        kind = "truncated or not JSON" if exc.errors()[0]["type"] == "json_invalid" else "invalid"
        return None, f"was {kind}"


def _schema_version(text: str) -> Any:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data.get("schema_version") if isinstance(data, dict) else None
