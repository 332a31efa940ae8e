"""Crash-safe whole-file writes, for every layer (the providers' cassettes and rate-limit state,
the parse cache, the session's files).

A reader never sees a half-written file: the text goes to a temporary file in the same folder,
is fsynced, renamed over the target, and the folder is fsynced. Nothing here redacts: what goes
into ``.aca`` passes ``aca_flows.session.files``, which redacts and then writes with these.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["readable", "readable_data", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``text`` in one step: readers see old or new, never half.

    ``durable=False`` skips the fsyncs: still atomic for readers and after a process crash,
    but an OS crash may lose the write. For logs and caches, never for the journal's peers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # Text read from git keeps the bytes of a file that is not UTF-8 (Latin-1, say) as
        # surrogates: they are written back as those bytes, as git gave them.
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` as indented JSON (UTF-8, not escaped), atomically. Text
    holding bytes that are not UTF-8 is written ``readable``: JSON has no form for them."""
    # pydantic's encoder: Python's own indents in pure Python, and the files rewritten whole
    # as they grow (a recorded cassette at every call, the change log at every task) made
    # that O(n) a write. Imported here: the command line's start-up does not need it.
    from pydantic_core import PydanticSerializationError, to_json

    try:
        text = to_json(data, indent=2).decode()
    except PydanticSerializationError:  # rare (a git error naming such a file): walked then
        text = to_json(readable_data(data), indent=2).decode()
    write_text_atomic(path, text + "\n", durable=durable)


def readable(text: str) -> str:
    """``text`` as a person, and JSON, can take it: bytes that are not UTF-8 (a file or a name
    git gave, kept by Python as surrogates) shown as U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no byte stands for (JSON's "\\ud800")
        return readable(_NOT_A_BYTE.sub("\ufffd", text))


# Surrogates outside the range Python uses for bytes that are not UTF-8 (U+DC80-U+DCFF).
_NOT_A_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def readable_data(data: Any) -> Any:
    """``data`` (JSON-like: dicts, lists, strings, numbers) with every string ``readable``."""
    if isinstance(data, str):
        return readable(data)
    if isinstance(data, dict):
        return {readable(str(key)): readable_data(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [readable_data(item) for item in data]
    return data


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
