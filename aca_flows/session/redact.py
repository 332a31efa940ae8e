"""Secrets never reach ``.aca`` or a log: the redaction filter in front of every write.

What is removed, replaced by ``[REDACTED]``:

- the value of every provider key variable present in the environment (``ANTHROPIC_API_KEY``,
  ``OPENAI_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``, ...), and of any variable whose name contains
  ``KEY``, ``TOKEN``, ``SECRET`` or ``PASSWORD`` and whose value has 8 characters or more
  (except values that are file locations: names ending ``_PATH``/``_FILE``/``_DIR``, or
  values starting with ``/`` or ``~``, which would otherwise mangle every path written);
- anything shaped like an API key or credential, whether or not it is in the environment:
  ``sk-...``/``sk-ant-...`` keys, ``Bearer <token>``, GitHub, Slack, AWS and Google keys,
  ``api_key=...``/``password: ...`` assignments, and string values of dict keys such as
  ``api_key``, ``secret``, ``password`` or ``authorization``.

The environment is read at every call, so a key exported after import is still caught.
``redact`` walks dicts, lists and tuples (keys and values) and returns a new structure;
everything that is not a string is returned as it is. ``files.py`` applies it to every
write, and ``RedactingFilter`` does the same for log records.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "is_secret_name",
    "redact",
    "redact_text",
    "secret_values",
]

REDACTED = "[REDACTED]"

# Always secret, whatever their length: the standard provider credentials.
PROVIDER_KEY_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "GITHUB_TOKEN",
    "PREFECT_API_KEY",
)
_SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
_MIN_NAMED_SECRET = 8
_LOCATION_SUFFIXES = ("_PATH", "_FILE", "_DIR", "_SOCK", "_HOME")
# Shorter values would redact ordinary words ("test", "dev"); a real key is never this short.
_MIN_PROVIDER_SECRET = 4

# Shapes of credentials. Each pattern matches only the secret part, so surrounding text stays.
_SHAPES = [
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    re.compile(r"\bpnu_[A-Za-z0-9]{20,}"),
]
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{16,}")
# x-api-key: ..., "api_key": "...", authorization=... in free text and headers.
_ASSIGNED = re.compile(
    r"(?i)\b((?:x-)?api[-_]?key|authorization|auth[-_]?token|access[-_]?token|secret|password)"
    r"""(["']?\s*[:=]\s*["']?)(?!\[REDACTED\])([^\s"',;]{8,})"""
)
_SECRET_FIELD = re.compile(
    r"(?i)(api[-_]?key|secret|password|passwd|auth[-_]?token|access[-_]?token|^token$"
    r"|^authorization$|credential)"
)


def is_secret_name(name: str) -> bool:
    """Whether a field or option called ``name`` holds a credential (``api_key``, ...)."""
    return _SECRET_FIELD.search(name) is not None


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The environment values that must never be written, longest first."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in environ.items():
        value = value.strip()
        upper = name.upper()
        if name in PROVIDER_KEY_VARIABLES:
            if len(value) >= _MIN_PROVIDER_SECRET:
                found.add(value)
        elif (
            any(part in upper for part in _SECRET_NAME_PARTS)
            and len(value) >= _MIN_NAMED_SECRET
            and not _names_a_location(upper, value)
        ):
            found.add(value)
    # Longest first: a key that contains another key is removed whole.
    return sorted(found, key=len, reverse=True)


def redact_text(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret replaced by ``[REDACTED]``."""
    return _redact_text(text, secret_values(environ))


def redact(obj: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A copy of ``obj`` (JSON-like: dicts, lists, strings, numbers) with secrets redacted."""
    return _redact_obj(obj, secret_values(environ))


def _names_a_location(upper_name: str, value: str) -> bool:
    # SSH_KEY_PATH=/home/me/.ssh/id: redacting the path would mangle every file path below it.
    return upper_name.endswith(_LOCATION_SUFFIXES) or value.startswith(("/", "~", "./"))


def _redact_obj(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, str):
        return _redact_text(obj, secrets)
    if isinstance(obj, Mapping):
        return {
            _redact_obj(k, secrets): (
                REDACTED if _is_secret_field(k, v) else _redact_obj(v, secrets)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return type(obj)(_redact_obj(item, secrets) for item in obj)
    return obj


def _is_secret_field(key: Any, value: Any) -> bool:
    # {"api_key": "..."} in options or headers: the key says what the value is.
    return (
        isinstance(key, str)
        and isinstance(value, str)
        and len(value) >= _MIN_NAMED_SECRET
        and _SECRET_FIELD.search(key) is not None
    )


def _redact_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for shape in _SHAPES:
        text = shape.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _ASSIGNED.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message, arguments and traceback.

    Attach it to a handler (``handler.addFilter(RedactingFilter())``) so that every record
    the handler writes is redacted, whichever logger it came from. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values()
        # Format once here, so a secret passed as an argument cannot slip through "%s".
        record.msg = _redact_text(record.getMessage(), secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact_text(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = _redact_text(record.stack_info, secrets)
        return True
