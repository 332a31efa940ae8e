"""Reading a user's file safely: exists, not too big, text (UTF-8, or UTF-16 with its byte order
mark), not empty.

Every failure is a ``TaskFileError`` naming the file and the fix; nothing is read twice.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from aca_flows.errors import TaskFileError

__all__ = [
    "MAX_FILE_BYTES",
    "read_text_file",
    "refuse_private_key",
    "require_file",
    "resolve_inside",
]

MAX_FILE_BYTES = 5 * 1024 * 1024


def require_file(path: Path, what: str = "task file") -> None:
    """Refuse a path that is missing or not a file; checked before its name is judged, so a
    folder is not called a file of an unknown type."""
    if not path.exists():
        raise TaskFileError(f"{what} {path} does not exist; check the path.")
    if path.is_dir():
        raise TaskFileError(
            f"{what} {path} is a folder, not a file; give the path of the {what} itself."
        )
    if not path.is_file():
        raise TaskFileError(f"{what} {path} is not a file; give the path of a file.")


def read_text_file(path: Path, what: str = "task file") -> str:
    require_file(path, what)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise TaskFileError(
            f"{what} {path} is {size / 1024 / 1024:.1f} MB, over the 5 MB limit; "
            "split it into smaller files or reference large documents instead of inlining them."
        )
    try:
        data = path.read_bytes()
    except OSError as exc:  # no read permission (chmod 000, another user's file)
        raise TaskFileError(
            f"{what} {path} cannot be read ({exc.strerror}); check its permissions."
        ) from None
    text = _utf16(data, path, what)  # Windows' "Unicode" (PowerShell's `>`, Notepad)
    if text is None and b"\x00" in data[:8192]:
        raise TaskFileError(
            f"{what} {path} looks binary (it contains NUL bytes); give a text file."
        )
    try:
        text = data.decode("utf-8-sig") if text is None else text
    except UnicodeDecodeError as exc:
        raise TaskFileError(
            f"{what} {path} is not valid UTF-8 (bad byte at offset {exc.start}); save it as UTF-8."
        ) from None
    if not text.strip():
        fix = "write at least one task in it" if what != "referenced file" else "write its text"
        raise TaskFileError(f"{what} {path} is empty; {fix}.")
    return text


def _utf16(data: bytes, path: Path, what: str) -> str | None:
    """The text of a file that starts with a UTF-16 byte order mark, which says how to read
    it; None for any other."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # its BOM starts as one
        return None  # (and the NUL bytes refuse it, as before)
    if not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None
    try:
        return data.decode("utf-16")
    except UnicodeDecodeError as exc:
        raise TaskFileError(
            f"{what} {path} starts as UTF-16 but is not valid UTF-16 (bad bytes at offset "
            f"{exc.start}); save it as UTF-8."
        ) from None


def resolve_inside(base_dir: Path, reference: str, referrer: Path | str) -> Path:
    """Resolve ``reference`` relative to ``base_dir``; it must stay inside that folder tree,
    and be a file the agent could see itself (``_hidden_from_the_agent``)."""
    try:
        target = (base_dir / reference).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError on Python 3.11)
        raise TaskFileError(
            f"{referrer}: reference '{reference}' cannot be resolved ({exc}); fix the reference."
        ) from None
    root = base_dir.resolve()
    if not target.is_relative_to(root):
        raise TaskFileError(
            f"{referrer}: reference '{reference}' points outside {root}; "
            "referenced files must live in the task file's folder or below it."
        )
    if (hidden := _hidden_from_the_agent(target, root)) is not None:
        raise TaskFileError(
            f"{referrer}: reference '{reference}' is {hidden}: the agent never sees it, and "
            "its model is not sent it either (secrets live there). Reference a file of the "
            "repository, or write what the task needs into the task file."
        )
    if target.is_dir():  # it exists: "does not exist" sent users looking for a typo
        raise TaskFileError(
            f"{referrer}: reference '{reference}' is a folder; reference the files in it."
        )
    if not target.is_file():
        fix = "fix the reference or create the file"
        slashed = reference.replace("\\", "/")
        if slashed != reference and (base_dir / slashed).resolve().is_file():
            fix = f"write it with / as the separator: '{slashed}'"  # a Windows path
        raise TaskFileError(
            f"{referrer}: referenced file '{reference}' does not exist (looked for {target}); "
            f"{fix}."
        )
    return target


# Folders an agent's worktree never shows it: git's own, and aca's sessions.
_HIDDEN_FOLDERS = (".git", ".aca")


def _hidden_from_the_agent(target: Path, root: Path) -> str | None:
    """What ``target`` is, when the agent's worktree never holds it: inside ``.git`` (its
    config may hold a token) or ``.aca``, or a file git ignores (``.env``): a worktree is a
    checkout of the branch, without them. None for any other file."""
    inside = next(
        (part for part in target.relative_to(root).parts if part in _HIDDEN_FOLDERS), None
    )
    if inside is not None:
        return f"inside {inside}/"
    import subprocess

    from aca_flows.workspace.hardened_git import hardened_environment

    try:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", "--", str(target)],
            cwd=target.parent,
            # The user's own excludes count (~/.config/git/ignore): git finds them by HOME.
            env={**os.environ, **hardened_environment()},
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):  # no git, or none that answers
        ignored = None
    if ignored is not None and ignored.returncode == 0:
        return "a file git ignores"
    if _a_secrets_file(target.name):
        # In no repository (a folder of nightly task files beside the jobs' .env), or in one
        # that does not ignore it, no rule said so: its key was sent to the model as it was.
        return "a file of the kind secrets are kept in"
    return None


def _a_secrets_file(name: str) -> bool:
    """Whether ``name`` is one ``--init-git`` keeps out of a first commit (``.env``, keys)."""
    from fnmatch import fnmatchcase

    from aca_flows.workspace.repository import SECRET_PATTERNS

    kept = [p[1:] for p in SECRET_PATTERNS if p.startswith("!")]
    left_out = [p for p in SECRET_PATTERNS if not p.startswith("!")]
    return any(fnmatchcase(name, p) for p in left_out) and not any(
        fnmatchcase(name, p) for p in kept
    )


def refuse_private_key(text: str, path: str, referrer: Path | str) -> None:
    """Refuse a referenced file that holds a private key: its text is sent to a model."""
    if _PRIVATE_KEY in text:
        raise TaskFileError(
            f"{referrer}: referenced file '{path}' holds a private key, and a referenced "
            "file is sent to the model; reference a file without it."
        )


_PRIVATE_KEY = "PRIVATE KEY-----"
