"""The repository's git config as a sandboxed command sees it: without credentials.

git in a task's worktree reads the repository's ``.git/config`` (its ``core`` settings, its
``extensions``), so the sandbox shows it; but a user's config may hold a credential: a remote
URL ``https://user:token@host/...``, an ``http.<url>.extraHeader = Authorization: ...`` (as CI
checkouts write it, into each submodule's config too). ``git_config_without_credentials``
returns a copy with every such value replaced by ``[REDACTED]`` (the user part of http(s)
URLs, the password of others, the values of keys naming a header, token, pass(word), secret or
key, then aca's redactor line by line; a value continued over lines is read whole, as git reads
it), made when the sandbox is planned and shown read-only in the config's place; ``None``
when the config holds nothing to remove.
``configs_without_credentials`` does so for every config file of a git directory: its own,
the worktrees' (``config.worktree``) and the submodules' (``modules/**/config``), and every
file they include (``include.path``, ``includeIf.*.path``): git reads those as the config.

Copies are kept in ``~/.aca/sandbox/git-config/`` (the home is hidden in the sandbox), named by
their content, so they do not pile up; when that folder cannot be written, ``/dev/null`` is
shown instead (git then runs with its defaults).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

from aca_flows.session.redact import REDACTED, redact_text

__all__ = ["configs_without_credentials", "git_config_without_credentials", "without_credentials"]

# A line naming a header (``http.extraHeader``), a token, password, secret or key (``smtpPass``,
# ``apiKey``, Azure DevOps' ``pat``), on its own or after its section's header (git reads
# ``[http "url"] extraheader = ...`` too): its value is a credential whatever it looks like (the
# redactor keeps values that look like paths or words).
_SECRET_KEY = re.compile(
    r"^(\s*(?:\[[^\]\n]*\]\s*)?)"
    r"(extraheader|pat|[\w-]*(?:token|pass|secret|key|credential)[\w-]*)(\s*=)(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
# A line that goes on in the next (an odd number of backslashes at its end): git reads the two
# as one. A comment's backslash continues nothing.
_CONTINUED = re.compile(r"^(?![ \t]*[#;])(.*?)(?<!\\)((?:\\\\)*)\\\r?\n", re.MULTILINE)


# The user part of a URL (``scheme://user:password@host``), in a value or a section name.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s@\"]+)@")


def without_credentials(text: str) -> str:
    """``text`` (a git config file) with its credentials replaced by ``[REDACTED]``."""
    text = _joined(text)
    text = _SECRET_KEY.sub(_without_value, text)
    text = _USERINFO.sub(_without_password, text)
    return "".join(redact_text(line) for line in text.splitlines(keepends=True))


def _joined(text: str) -> str:
    """``text`` with each value split over lines on one: git reads it as one, and a
    credential in it is found so."""
    while (joined := _CONTINUED.sub(r"\1\2", text)) != text:
        text = joined
    return text


def _without_value(match: re.Match) -> str:
    # ``http.sslCertPasswordProtected = true`` holds no secret, and git refuses a bool it
    # cannot read.
    if match.group(4).strip().lower() in _BOOLEANS:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{match.group(3)} {REDACTED}"


_BOOLEANS = {"true", "false", "yes", "no", "on", "off", "1", "0", ""}


def _without_password(match: re.Match) -> str:
    # http(s)://<token>@host: a user name alone is usually a token there; ssh://git@host is not.
    scheme, userinfo = match.group(1), match.group(2)
    user, colon, _ = userinfo.partition(":")
    if scheme.lower().startswith(("http", "ftp")):
        return f"{scheme}{REDACTED}@"
    return f"{scheme}{user}:{REDACTED}@" if colon else match.group(0)


def git_config_without_credentials(git_dir: Path, name: str = "config") -> Path | None:
    """A file to show as ``git_dir``'s config ``name``: a copy without its credentials, or
    ``None`` when it holds none (or cannot be read: git reads it or not, as it would)."""
    try:
        text = (git_dir / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return _copy_without_credentials(text)


def _copy_without_credentials(text: str) -> Path | None:
    clean = without_credentials(text)
    if clean == _joined(text):  # nothing removed (a continued alias is no credential)
        return None
    name = hashlib.sha256(clean.encode()).hexdigest()[:32]
    copy = Path.home() / ".aca" / "sandbox" / "git-config" / name
    try:
        if not copy.is_file():
            _write(copy, clean)
    except OSError:
        return Path(os.devnull)
    return copy


# Config files git keeps in a git directory, and the folders that hold none (and many files).
_CONFIG_NAMES = ("config", "config.worktree")
_NO_CONFIG = {"objects", "refs", "logs", "hooks", "lfs"}


def configs_without_credentials(git_dir: Path) -> list[tuple[Path, Path]]:
    """``(copy, config)`` for each config file in ``git_dir`` holding a credential: the copy
    (``git_config_without_credentials``) to show in its place."""
    found: dict[Path, Path | None] = {}
    for folder, subfolders, files in os.walk(git_dir):
        subfolders[:] = [name for name in subfolders if name not in _NO_CONFIG]
        for name in _CONFIG_NAMES:
            if name in files:
                _with_includes(Path(folder) / name, found)
    return sorted(((copy, config) for config, copy in found.items() if copy), key=lambda p: p[1])


# An include's section, and its path (git: relative to the file that includes it; ``~/`` in
# the home).
_SECTION = re.compile(r"^\s*\[\s*([^\]\s\"]+)")
_PATH = re.compile(r"^\s*path\s*=\s*(.*?)\s*$", re.IGNORECASE)
# Includes that include includes: git stops at 10.
_MOST_INCLUDES = 10


def _with_includes(config: Path, found: dict[Path, Path | None], depth: int = 0) -> None:
    """``config``'s copy without credentials into ``found`` (None: it holds none), and those
    of the files it includes, which git reads as part of it."""
    if config in found or depth > _MOST_INCLUDES:
        return
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    found[config] = _copy_without_credentials(text)
    section = ""
    for line in _joined(text).splitlines():
        if header := _SECTION.match(line):
            section = header.group(1).lower()
        elif section in ("include", "includeif") and (value := _PATH.match(line)):
            included = Path(value.group(1).strip('"')).expanduser()
            included = config.parent / included if not included.is_absolute() else included
            if included.is_file():
                _with_includes(included.resolve(), found, depth + 1)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
