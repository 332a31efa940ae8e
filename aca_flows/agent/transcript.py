"""What a task leaves behind while it runs: its log lines and its conversation.

``TaskLog`` appends one JSON line per turn, tool call, provider event, verify run and merge to
``execution_logs/task_logs/<task-id>.jsonl`` and hands each record, redacted like the file,
to a callback (the live display, Prefect's logs). ``ConversationStore`` keeps every task's
conversation in ``claude/messages.json``, replaced atomically after each provider call under a
file lock, since parallel tasks share the file. The process keeps each task's entry as JSON text,
so a turn serialises only its own task's conversation, and reads the file back only when
someone else wrote it since.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from aca_flows.providers.base import Message
from aca_flows.session.files import append_jsonl, write_text_atomic
from aca_flows.session.layout import SessionPaths
from aca_flows.session.redact import redact
from aca_flows.workspace.file_lock import FileLock

__all__ = ["ConversationStore", "LogCallback", "TaskLog"]

LogCallback = Callable[[dict[str, Any]], None]


class TaskLog:
    """The task's JSONL log, mirrored to an optional live callback."""

    def __init__(self, paths: SessionPaths, task_id: str, on_record: LogCallback | None = None):
        self.path = paths.task_log(task_id)
        self.task_id = task_id
        self.on_record = on_record

    def write(self, kind: str, **data: Any) -> dict[str, Any]:
        # Redacted once, here: the file and the callback (Prefect logs, the live view) get
        # the same record, and neither ever sees a secret.
        record = redact(
            {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "task_id": self.task_id,
                "kind": kind,
                **data,
            }
        )
        # A log, not the source of truth: no fsync per line (the journal has those).
        append_jsonl(self.path, record, redact=False, durable=False)
        if self.on_record is not None:
            # A broken display must not fail the task.
            with contextlib.suppress(Exception):
                self.on_record(record)
        return record


class ConversationStore:
    """One task's messages inside the session's ``claude/messages.json``."""

    def __init__(self, paths: SessionPaths, task_id: str):
        self.path = paths.messages_json
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self.task_id = task_id

    def save(self, messages: list[Message], *, provider: str, model: str | None) -> None:
        entry = {
            "provider": provider,
            "model": model,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "messages": [m.model_dump(mode="json", exclude_defaults=True) for m in messages],
        }
        with FileLock(self.lock_path):
            with _DOCUMENTS_LOCK:
                document = _DOCUMENTS.pop(self.path, None)
            if document is None or document.written != _signature(self.path):
                document = _Document(self._read())
            # Only the new entry needs redacting: the file holds redacted entries already.
            document.tasks[self.task_id] = _entry_text(redact(entry))
            text = document.text()
            write_text_atomic(self.path, text, durable=False, redact=False)
            document.written = _signature(self.path)
            with _DOCUMENTS_LOCK:  # saves run in threads; the file lock is one session's
                if len(text) <= _DOCUMENT_KEPT_CHARS:  # memory stays bounded in long sessions
                    _DOCUMENTS[self.path] = document
                while len(_DOCUMENTS) > _DOCUMENTS_KEPT:  # the sessions used least recently go
                    del _DOCUMENTS[next(iter(_DOCUMENTS))]

    def load(self) -> list[Message]:
        entry = self._read().get("tasks", {}).get(self.task_id, {})
        return [Message.model_validate(m) for m in entry.get("messages", [])]

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"schema_version": 1, "tasks": {}}
        return json.loads(self.path.read_text(encoding="utf-8"))


class _Document:
    """``messages.json`` as this process last wrote it: each task's entry as JSON text, laid
    out exactly as ``to_json(data, indent=2)`` lays out the whole file."""

    def __init__(self, data: dict[str, Any]):
        # The file's keys in its order; the value of "tasks" is kept as ``self.tasks``.
        self.fields = dict(data)
        self.fields.setdefault("tasks", None)
        self.tasks = {task_id: _entry_text(e) for task_id, e in data.get("tasks", {}).items()}
        self.written: tuple[int, int, int] | None = None

    def text(self) -> str:
        fields = []
        for key, value in self.fields.items():
            if key == "tasks":
                entries = ",\n".join(f"    {_json(i)}: {text}" for i, text in self.tasks.items())
                fields.append('  "tasks": ' + ("{\n" + entries + "\n  }" if entries else "{}"))
            else:
                fields.append(f"  {_json(key)}: {_json(value)}")
        return "{\n" + ",\n".join(fields) + "\n}\n"


def _json(value: Any) -> str:
    return to_json(value, indent=2).decode().replace("\n", "\n  ")


def _entry_text(entry: dict[str, Any]) -> str:
    # JSON strings hold no raw newline: every newline here is layout, indented one level more.
    return to_json(entry, indent=2).decode().replace("\n", "\n    ")


def _signature(path) -> tuple[int, int, int] | None:
    """Tells the file this process wrote from one written since (it is replaced, never edited)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


# The conversations files this process wrote last (parallel tasks share one per session),
# least recently used first; a file bigger than _DOCUMENT_KEPT_CHARS is read at each save
# instead of held in memory.
_DOCUMENTS: dict[Any, _Document] = {}
_DOCUMENTS_LOCK = threading.Lock()
_DOCUMENTS_KEPT = 4
_DOCUMENT_KEPT_CHARS = 4_000_000
