"""Crash-safe writes into ``.aca``: whole files replaced atomically, journals appended and fsynced.

A reader never sees a half-written file: the writes are ``aca_flows._files``' (a temporary
file in the same folder, fsynced, renamed over the target, the folder fsynced).

Every write passes the redaction filter of ``redact.py`` first, so no caller can put a
provider key or anything shaped like one into ``.aca``. ``redact=False`` is for content that
must be kept byte for byte and is known to hold no secret; nothing in aca needs it today.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aca_flows import _files
from aca_flows.session.redact import redact as _redact
from aca_flows.session.redact import redact_text as _redact_text

__all__ = ["append_jsonl", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: Path, text: str, *, redact: bool = True, durable: bool = True) -> None:
    """Replace ``path`` with ``text`` (redacted) in one step: readers see old or new, never half.

    ``durable=False`` skips the fsyncs: still atomic for readers and after a process crash,
    but an OS crash may lose the write. For logs and caches, never for the journal's peers.
    """
    _files.write_text_atomic(path, _redact_text(text) if redact else text, durable=durable)


def write_json_atomic(path: Path, data: Any, *, redact: bool = True, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` as indented JSON (redacted), atomically."""
    _files.write_json_atomic(path, _redact(data) if redact else data, durable=durable)


def append_jsonl(
    path: Path, record: dict[str, Any], *, redact: bool = True, durable: bool = True
) -> None:
    """Append one JSON line (redacted) and fsync, so it survives a crash right after the call.

    ``durable=False`` skips the fsync (logs: a process crash loses nothing, an OS crash may)."""
    if redact:
        record = _redact(record)
    # A file name git gave as bytes that are not UTF-8 is written as JSON takes it, with
    # U+FFFD, as whole JSON files have it: the task logging it goes on.
    line = _files.readable(json.dumps(record, ensure_ascii=False, separators=(",", ":"))) + "\n"
    try:
        handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:  # the first line of this file: its folder may be missing too
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a", encoding="utf-8")  # noqa: SIM115
    with handle:
        handle.write(line)
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
