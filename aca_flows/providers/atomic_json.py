"""Crash-safe JSON files for the providers layer (cassettes, rate-limit state).

The same technique as ``aca_flows.session.files``, kept here because providers sit below the
session layer and must not import it: a temporary file in the same folder, fsynced, then
renamed over the target, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic"]


def write_json_atomic(path: Path, data: Any, *, durable: bool = True) -> None:
    """``durable=False`` skips the fsync: still whole for readers and after a process crash,
    but an OS crash may lose the write (for state that is a hint, written often)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
