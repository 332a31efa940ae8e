"""Where ``--dump-plan`` writes the reviewed plan (and ``--record`` its cassette): refused
before any work when aca cannot write there or would replace a file that is not a plan."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from aca_flows.errors import InputError
from aca_flows.plan import ExecutionPlan, plan_to_text
from aca_flows.plan.io import PLAN_SUFFIXES
from aca_flows.session.files import write_text_atomic

__all__ = ["check_dump_target", "check_record_target", "dump_plan", "not_a_folder"]


def check_dump_target(path: Path | None) -> None:
    """Refuse a ``--dump-plan`` name aca cannot write, before any work is done."""
    try:
        _check_dump_target(path)
    except OSError as exc:  # a name too long, a loop of links
        raise InputError(f"--dump-plan {path}: {exc.strerror}; name another file.") from None


def _check_dump_target(path: Path | None) -> None:
    if path and path.suffix.lower() not in PLAN_SUFFIXES:
        raise InputError(
            f"--dump-plan {path}: name the file .json or .toml so aca knows which format to write."
        )
    not_a_folder("--dump-plan", path, "plan.json")
    if not path:
        return
    if (path.exists() or path.is_symlink()) and not _a_dumped_plan(path):
        raise InputError(
            f"--dump-plan {path}: the file exists and is not a plan aca wrote (a configuration, "
            "a cassette, a task file of yours?): the plan would replace it. Name another file, "
            "or remove that one first."
        )
    # A missing folder is made when the plan is written, as --record makes its own: the
    # nearest one that exists is the one aca must be able to write in.
    folder = path.resolve().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK)):
        raise InputError(
            f"--dump-plan {path}: {folder} is not a folder aca can write to; name a file in one."
        )


def check_record_target(path: Path | None, others: dict[str, Path | None]) -> None:
    """``--record``: a new file in a folder aca can write in, or a cassette aca wrote (it is
    rewritten after every call). Anything else it replaced, whatever it was: the machine's
    ``/dev/null`` as root, the run's own ``--config``, a tracked file; and a folder no file can
    be made in failed the task after its first paid call. ``others``: the run's other files
    by flag, none of which it may be."""
    not_a_folder("--record", path, "cassette.json")
    if not path:
        return
    for flag, other in others.items():
        if other and Path(other).expanduser().resolve() == path.expanduser().resolve():
            raise InputError(
                f"--record {path} is the {flag} itself: the cassette would replace it. Name "
                "another file, e.g. --record tasks.cassette.json."
            )
    if (path.exists() or path.is_symlink()) and not _a_cassette(path):
        raise InputError(
            f"--record {path}: the file exists and is not a cassette aca wrote (a device, a "
            "configuration, a file of yours?): the cassette would replace it. Name another "
            "file, or remove that one first."
        )
    folder = path.expanduser().resolve().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # a missing folder is made when the cassette is written
    try:  # a real file, as the cassette is written: /proc's folders take none
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        raise InputError(
            f"--record {path}: {folder} is not a folder aca can write a file in; name a file "
            "in one."
        ) from None


def _a_cassette(path: Path) -> bool:
    """Whether ``path`` is a regular file holding a cassette as ``--record`` writes it."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1024**3:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and {"version", "interactions"} <= data.keys()


def _a_dumped_plan(path: Path) -> bool:
    """Whether ``path`` holds a plan as ``--dump-plan`` writes it (a review to redo), which
    another dump may replace: its own keys, whatever the tasks say."""
    import tomllib

    try:
        if path.is_symlink() or path.stat().st_size > 64 * 1024 * 1024:
            return False
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and {"schema_version", "strategy", "tasks"} <= data.keys()


def not_a_folder(flag: str, path: Path | None, example: str) -> None:
    """A file aca writes must not name an existing folder: found when writing, it was an
    error about a temporary file (--dump-plan), or a failed task (--record)."""
    if path and path.is_dir():
        raise InputError(f"{flag} {path} is a folder; name a file in it, e.g. {path / example}.")


def dump_plan(plan: ExecutionPlan, path: Path) -> None:
    # The plan is the user's own text, written where they asked: dumped exactly, unredacted.
    try:
        write_text_atomic(path, plan_to_text(plan, path.suffix), redact=False)
    except OSError as exc:
        # The error's own file is aca's temporary one beside it: not named.
        why = exc.strerror or type(exc).__name__
        raise InputError(
            f"--dump-plan {path}: the plan cannot be written there ({why}); name a file in a "
            "folder you can write to."
        ) from None
