"""``meta/events.jsonl``: the append-only, fsynced journal that is the truth after a crash.

A crash (even SIGKILL or a power cut) can only damage the journal's last line: appends are
fsynced one by one, so every earlier line is whole. ``read_journal`` therefore drops a last
line that does not parse (reporting it in ``torn_line``) and refuses any other damage with a
``SessionFileError`` that names the file, the line and the fix. The writer calls
``repair_journal`` before appending, so a new event never lands glued to a torn fragment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from aca_flows.session.errors import SessionFileError, refuse_newer_schema
from aca_flows.session.events import EVENT_SCHEMA_VERSION, Event, event_from_json, event_to_json
from aca_flows.session.files import append_jsonl

__all__ = ["JournalContents", "append_event", "read_journal", "repair_journal"]


@dataclass
class JournalContents:
    """The events of a journal, and whether its last line was torn by a crash."""

    events: list[Event] = field(default_factory=list)
    torn_line: int | None = None
    """1-based number of the last line, dropped because it did not parse."""
    good_size: int = 0
    """Bytes up to the end of the last whole event: where the next append must start."""

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0


def read_journal(path: Path) -> JournalContents:
    """Every whole event of the journal at ``path``, in order.

    Raises ``SessionFileError`` if the file is missing, if a line other than the last is not
    an event, if events are out of order, or if it was written by a newer aca.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SessionFileError(
            path,
            "the session journal is missing",
            "Without it the session cannot be resumed: restore the file from a backup, "
            "or delete the session folder and start a new run.",
        ) from None
    contents = JournalContents()
    lines = data.split(b"\n")
    # split() leaves b"" after a final newline; a non-empty last piece is an unfinished line.
    if lines and lines[-1] == b"":
        lines.pop()
    offset = 0
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        event = _parse(path, number, line, is_last)
        if event is None:
            contents.torn_line = number
            break
        if event.seq != len(contents.events) + 1:
            raise SessionFileError(
                path,
                f"line {number} has seq {event.seq}, expected {len(contents.events) + 1}: "
                "events are missing or out of order",
                _truncate_fix(number),
            )
        contents.events.append(event)
        offset += len(line) + 1
        contents.good_size = offset
    return contents


def repair_journal(path: Path, contents: JournalContents) -> None:
    """Cut a torn last line off, so that the next append starts on a fresh line."""
    if path.stat().st_size == contents.good_size:
        return
    with open(path, "r+b") as handle:
        handle.truncate(contents.good_size)
        handle.flush()
        os.fsync(handle.fileno())


def append_event(path: Path, event: Event) -> None:
    """Append ``event`` and fsync: once this returns, the event survives a crash. The store
    hands only redacted events here."""
    append_jsonl(path, event_to_json(event), redact=False)


def _parse(path: Path, number: int, line: bytes, is_last: bool) -> Event | None:
    try:
        raw = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        if is_last:
            return None
        raise SessionFileError(
            path, f"line {number} is not JSON (damaged after it was written)", _truncate_fix(number)
        ) from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    refuse_newer_schema(path, version, EVENT_SCHEMA_VERSION, kind="event schema", line=number)
    try:
        return event_from_json(line)
    except ValidationError as exc:
        if is_last:
            return None
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SessionFileError(
            path,
            f"line {number} is not a valid event ({where}: {first['msg']})",
            _truncate_fix(number),
        ) from None


def _truncate_fix(number: int) -> str:
    return (
        "Only a crash can damage the journal, and only its last line; this looks edited. "
        f"Restore the file from a backup, or delete line {number} and every line after it "
        "(the session then resumes from the state before that line; completed tasks whose "
        "commits are on the session branch are still not run again)."
    )
