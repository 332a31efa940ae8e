"""Secrets never leave aca: the one redactor, applied wherever data is written out.

It is applied where data leaves aca — ``.aca`` files (``files.py``), Prefect logs (a logging
filter the flow installs on every handler), artifacts and persisted results (the flow), the
task log and conversation (``agent/transcript.py``), commit messages (``workspace/commit.py``),
cassettes (the recorder gets ``redact`` as its scrubber) and a run's terminal output
(``RedactingStream``). It is never applied to what runs: the plan, prompts and commands an
agent or a verify step uses are the user's own text, byte for byte.

What is removed, replaced by ``[REDACTED]``:

- the value of every provider key variable present in the environment (``ANTHROPIC_API_KEY``,
  ``OPENAI_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``, ``GITHUB_TOKEN``, ...), and of any variable
  whose name contains ``KEY``, ``TOKEN``, ``SECRET``, ``PASSWORD`` or ``CREDENTIAL`` and whose
  value has 8 characters or more (except values that are file locations: names ending
  ``_PATH``/``_FILE``/``_DIR``, or values starting with ``/`` or ``~``, which would otherwise
  mangle every path written);
- every value handed to ``register_secret`` (the flow registers the Prefect Secret blocks it
  loads);
- anything shaped like a credential, whether or not it is in the environment: ``sk-...`` and
  ``sk-ant-...`` keys, ``Bearer <token>``, GitHub, Slack, AWS, Google and Prefect keys;
- assignments to a secret-sounding name (``api_key=``, ``MY_SECRET:``, ``"password": ``,
  ``SECRET_KEY=``, ``DB_PASSWORD_PROD=``) whose value is a literal: quoted and 8+ characters,
  or unquoted, 8+ characters and mixing letters and digits. A name is secret-sounding by its
  parts, wherever the secret word stands (``_names_a_secret``); ``MONKEY``, ``sort_key``,
  ``KEY_COUNT``, ``SSH_KEY_PATH`` and file locations (``~/.ssh/id``) are not. Code that assigns
  an expression stays readable (``password = request.form[...]``, ``api_key =
  os.environ["KEY"]``, ``token=$GITHUB_TOKEN``): patches and logs of ordinary code are not
  mangled;
- string values of dict keys such as ``api_key``, ``secret``, ``password`` or
  ``authorization`` (8+ characters);
- credentials in URLs: the password of ``scheme://user:password@host``, and the whole user
  part of ``http(s)://user@host`` (there it is usually a token: ``https://<token>@github.com``).

The environment is read at every call, so a key exported after import is still caught.
``redact`` walks dicts, lists and tuples (keys and values) and returns a new structure;
everything that is not a string is returned as it is.
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
    "RedactingStream",
    "is_secret_name",
    "is_secret_variable",
    "redact",
    "redact_log_handlers",
    "redact_text",
    "register_secret",
    "secret_values",
]

REDACTED = "[REDACTED]"

# Always secret, whatever their length: the standard provider credentials.
PROVIDER_KEY_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_API_KEY",
    "OPENAI_ORG_ID",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "PREFECT_API_KEY",
)
# Values known to be secret that are not in the environment (Prefect Secret blocks in use).
_REGISTERED: set[str] = set()
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
# scheme://user:<password>@ (any scheme), and http(s)://<token>@ (a user name alone).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*:)([^/\s@]+)(?=@)")
_URL_TOKEN = re.compile(r"(?i)\b(https?://)([^/\s:@\[]+)(?=@)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{16,}")


def _any_case(word: str) -> str:
    # [Ss][Ee]...: the search runs about twice as fast as with (?i) on the whole pattern.
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


# NAME=value, NAME: value, "name": "value" in free text, headers and shell commands, where
# the name holds a secret word somewhere; ``_assignment`` decides whether it names a secret.
# The look-behind starts a match only where a name starts: cheaper than trying every position.
_NAME_CHAR = r"[A-Za-z0-9_.\-]"
_NAME_CUES = ("secret", "token", "passw", "passphrase", "pwd", "credential", "auth", "key")
# The name is taken whole and at once (a look-ahead for a cue, then a possessive run): a long
# run of name characters holding many cues ("tokentoken...") is scanned once, not once a cue.
_ASSIGNED = re.compile(
    rf"(?<!{_NAME_CHAR})(?=(?>{_NAME_CHAR}*?(?:{'|'.join(map(_any_case, _NAME_CUES))})))"
    rf"({_NAME_CHAR}++)"
    r"""(["']?\s*[:=]\s*["']?)(?!\[REDACTED\])([^\s"',;]{8,})"""
)
# A name's parts: SECRET_KEY, x-api-key, spring.datasource.password, secretKey.
_NAME_PARTS = re.compile(r"[_.\-]+|(?<=[a-z0-9])(?=[A-Z])")
# Secret wherever they stand in a name: DB_PASSWORD_PROD, SECRET_KEY_BASE, SLACK_TOKEN.
_SECRET_WORDS = frozenset(
    [
        "SECRET",
        "SECRETS",
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "PWD",
        "PASSPHRASE",
        "CREDENTIAL",
        "CREDENTIALS",
    ]
)
# Secret as the end of a name's last part (MYSECRET, dbpassword, csrftoken, x-apikey), as
# they always were; AUTH only as a last part (BASIC_AUTH, not AUTH_METHOD).
_SECRET_ENDINGS = ("SECRET", "PASSWORD", "PASSWD", "TOKEN", "APIKEY", "AUTHORIZATION")
_LAST_SECRET_WORDS = frozenset({"AUTH"})
# KEY is a secret after these (API_KEY, private_key, secretKey), or last in a name in capitals
# as environment variables are (STRIPE_KEY); sort_key, cache_key, KEY_COUNT are ordinary keys.
_KEY_QUALIFIERS = frozenset(
    ["API", "ACCESS", "PRIVATE", "SECRET", "SIGNING", "ENCRYPTION", "MASTER"]
)
# The name says the value is about a secret, not the secret: SSH_KEY_PATH, TOKEN_URL.
_NOT_THE_SECRET = frozenset({"PATH", "FILE", "DIR", "SOCK", "HOME", "URL", "URI", "NAME", "TYPE"})
# A file location (~/.ssh/id, ./key.pem, /home/me/creds.json): no key is shaped so.
_LOCATION_VALUE = re.compile(r"~[\w.\-]*/|\.\.?/|/[A-Za-z._\-]+(?:/|$)")
_EXPRESSION_CHARS = frozenset("()[]{}<>$%")
_SECRET_FIELD = re.compile(
    r"(?i)(api[-_]?key|secret|password|passwd|auth[-_]?token|access[-_]?token|^token$"
    r"|^authorization$|credential)"
)


def is_secret_name(name: str) -> bool:
    """Whether a field or option called ``name`` holds a credential (``api_key``, ...)."""
    return _SECRET_FIELD.search(name) is not None


def is_secret_variable(name: str) -> bool:
    """Whether the environment variable ``name`` holds a secret: a provider credential, or a
    name containing KEY, TOKEN, SECRET, PASSWORD or CREDENTIAL. Commands run without these
    (``agent/commands.py``); their values are redacted (``secret_values``)."""
    upper = name.upper()
    return name in PROVIDER_KEY_VARIABLES or any(part in upper for part in _SECRET_NAME_PARTS)


def register_secret(value: str | None) -> None:
    """Redact ``value`` from now on in this process (a key read from a Prefect Secret block)."""
    if value and len(value.strip()) >= _MIN_PROVIDER_SECRET:
        _REGISTERED.add(value.strip())


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The environment values (and registered secrets) never to be written, longest first."""
    if environ is None:
        # Every record aca writes or logs asks for these: computed again only when the
        # process environment or the registered secrets change (a cheap comparison).
        global _CACHED
        key = (tuple(getattr(os.environ, "_data", os.environ).items()), len(_REGISTERED))
        if _CACHED is None or _CACHED[0] != key:
            _CACHED = (key, _secret_values(os.environ))
        return _CACHED[1]
    return _secret_values(environ)


_CACHED: tuple[Any, list[str]] | None = None


def _secret_values(environ: Mapping[str, str]) -> list[str]:
    found: set[str] = set(_REGISTERED)
    for name, value in environ.items():
        value = value.strip()
        if name in PROVIDER_KEY_VARIABLES:
            if len(value) >= _MIN_PROVIDER_SECRET:
                found.add(value)
        elif (
            is_secret_variable(name)
            and len(value) >= _MIN_NAMED_SECRET
            and not _names_a_location(name.upper(), value)
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


# What each pattern above needs somewhere in the text, lower-cased: ASCII text holding none of
# these cannot match any of them, and skips the regular expressions (most strings written do).
# Other text always takes them: Unicode case folding matches more than ``lower`` shows.
# One search in C (a loop over the cues in Python cost most of a record's redaction), the cues
# grouped by first letter, which searches faster than a flat list. "author" (git logs) is not
# a cue; "auth" and "authorization" are.
_PATTERN_CUES = re.compile(
    "s(?:k-|ecret)|g(?:h|ithub_pat_)|xox|a(?:kia|iza|uth(?:oriz|(?!or)))|p(?:nu_|ass[wp]|wd)"
    "|bearer|key|token|credential"
)


def _redact_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if text.isascii():
        lowered = text.lower()
        if _PATTERN_CUES.search(lowered) is None:
            return text
    for shape in _SHAPES:
        text = shape.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    if "@" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)
        text = _URL_TOKEN.sub(lambda m: m.group(1) + REDACTED, text)
    return _ASSIGNED.sub(_assignment, text)


def _assignment(match: re.Match) -> str:
    name, separator, value = match.groups()
    quoted = separator.endswith(("'", '"'))
    if _is_literal(value, quoted) and _names_a_secret(name) and not _LOCATION_VALUE.match(value):
        return name + separator + REDACTED
    if "=" in value or ":" in value:
        # Kept, but it may hold an assignment of its own: ?key=abc&token=...
        return name + separator + _ASSIGNED.sub(_assignment, value)
    return match.group(0)


def _is_literal(value: str, quoted: bool) -> bool:
    # A quoted string, or a word mixing letters and digits: not code (os.environ[...]), not a
    # reference ($TOKEN), not a plain word or a number.
    return quoted or (
        not _EXPRESSION_CHARS.intersection(value)
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


def _names_a_secret(name: str) -> bool:
    # SECRET_KEY, db.password, x-api-key, secretKey; see the word lists above.
    parts = [part.upper() for part in _NAME_PARTS.split(name) if part]
    if not parts or parts[-1] in _NOT_THE_SECRET:
        return False
    return (
        not _SECRET_WORDS.isdisjoint(parts)
        or parts[-1].endswith(_SECRET_ENDINGS)
        or parts[-1] in _LAST_SECRET_WORDS
        or _names_a_key(parts, in_capitals=name.isupper())
    )


def _names_a_key(parts: list[str], in_capitals: bool) -> bool:
    after_qualifier = any(
        first in _KEY_QUALIFIERS and second == "KEY"
        for first, second in zip(parts, parts[1:], strict=False)
    )
    return after_qualifier or (in_capitals and parts[-1] == "KEY")


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


def redact_log_handlers() -> None:
    """Put a ``RedactingFilter`` on every handler of every logger there is now (once each):
    Prefect's API handler (the server's logs, the UI), its console handler (the terminal) and
    any other. Handler filters see records from every logger that reaches the handler."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in list(logging.root.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


class RedactingStream:
    """A text stream (``sys.stdout``) whose writes are redacted; everything else is the
    wrapped stream's (``isatty``, ``fileno``, ``encoding``)."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(redact_text(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)
