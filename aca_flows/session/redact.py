"""Secrets never leave aca: the one redactor, applied wherever data is written out.

It is applied where data leaves aca — ``.aca`` files (``files.py``), Prefect logs (a logging
filter the flow installs on every handler), artifacts and persisted results (the flow), the
task log and conversation (``agent/transcript.py``), commit messages (``workspace/commit.py``),
cassettes (the recorder gets ``redact`` as its scrubber) and a run's terminal output
(``RedactingStream``). It is never applied to what runs: the plan and the commands an agent
or a verify step runs are the user's own text, byte for byte. What an agent's model is sent
(its prompts, and what its tools give back) loses only the values aca knows to be secret
(``redact_known``): the model gets the code as it is.

What is removed, replaced by ``[REDACTED]``:

- the value of every provider key variable present in the environment (``ANTHROPIC_API_KEY``,
  ``OPENAI_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``, ``GITHUB_TOKEN``, ...), and of any variable
  whose name contains ``KEY``, ``TOKEN``, ``SECRET``, ``PASSWORD`` or ``CREDENTIAL``, or has a
  part that names a credential (``MYSQL_PWD``, ``DB_PASS``, ``PREFECT_API_AUTH_STRING``,
  ``CI_JOB_JWT``, ``SLACK_WEBHOOK_URL``, ``SENTRY_DSN``, ``..._CONNECTION_STRING``), and whose
  value has 8 characters or more (except file locations, which would otherwise mangle every
  path written: names ending ``_PATH``/``_FILE``/``_DIR``/``_SOCK``/``_HOME``, and values that
  are paths, see below);
- every value handed to ``register_secret`` (the flow registers the Prefect Secret blocks it
  loads);
- those values as a URL or JSON writes them (percent-encoded, JSON-escaped: an AWS secret
  key's ``/`` and ``+`` as ``%2F`` and ``%2B``), and those of 12 characters or more encoded:
  in hex, in rot13, and in base64 at each of the three alignments it can have in a longer text
  (``Basic base64("user:" + token)``), so a check that prints a token it was given
  (``[sandbox] env``) through ``base64`` or ``od`` is redacted too, and so is each of them,
  plain or encoded, cut by line breaks (``base64`` wraps at 76 characters, ``openssl`` at 64,
  ``xxd -p`` at 60; ``fold`` anywhere): the secret's part of it, line breaks and all
  (``wrapped_base64.py``); in a dump (``xxd``, ``xxd -e``, ``hexdump -C``, ``od -tx1``,
  ``od -x``, ``od -c``, after a prefix too), each line holding a byte of the secret
  (``hex_dumps.py``); spelled in escapes (``\\x51``, ``\\121``, ``%51``, ``\\u0051``,
  ``&#81;``) or in hex with separators (``51:77``, ``0x51, 0x77``), the run that holds it
  (``escaped_runs.py``);
- anything shaped like a credential, whether or not it is in the environment: ``sk-...`` and
  ``sk-ant-...`` keys, ``Bearer <token>``, ``Basic <base64 of user:password>``, GitHub, Slack,
  AWS, Google and Prefect keys;
- literals given to a secret-sounding name, in text (``api_key=``, ``MY_SECRET:``,
  ``"password": ``, ``token: str = ``, ``export DB_PASSWORD=``) and as string values of dict
  keys alike (``_holds_a_secret``: one rule): a quoted value of 8+ characters, taken whole,
  spaces and all (a sentence only when the name's last part is the secret's word: not
  ``PASSWORD_MISMATCH = "Passwords do not match"``), or an unquoted one of 8+ characters
  mixing letters and digits. A name is secret-sounding by its parts, wherever the secret word
  stands (``names_a_secret``); ``MONKEY``, ``KEY_COUNT``, ``SSH_KEY_PATH`` are not. A name
  ending in ``key`` that the word rules leave out (``stripe_key``, ``webhookKey``,
  ``sort_key``) counts only for a quoted value that looks random: 16+ characters, no space or
  dot, digits and letters of both cases. Values that are file locations are kept: ``~/``,
  ``~user/``, ``./``, ``../`` or ``/dir/`` (a plain directory name and a further ``/``:
  ``/home/me/k.pem``, not ``/abc123secret``). Code that assigns an expression stays readable
  (``password = request.form[...]``, ``api_key = os.environ["KEY"]``,
  ``token=$GITHUB_TOKEN``): patches and logs of ordinary code are not mangled;
- credentials in URLs: the password of ``scheme://user:password@host``, and the whole user
  part of ``http(s)://user@host`` (there it is usually a token: ``https://<token>@github.com``);
- PEM private keys (``-----BEGIN ... PRIVATE KEY-----`` to its END line).

Which names hold a secret is ``secret_names.py``'s to say; which values are secret, and
their encoded forms, ``secret_values.py``'s.
``redact`` walks dicts, lists and tuples (keys and values) and returns a new structure;
everything that is not a string is returned as it is.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from typing import Any

from aca_flows._closed_output import READER_GONE, drop_output_of
from aca_flows._logging import all_log_handlers
from aca_flows.errors import AcaError
from aca_flows.session.escaped_runs import redact_escaped_runs
from aca_flows.session.hex_dumps import redact_hex_dumps
from aca_flows.session.secret_names import (
    LOCATION_VALUE,
    MIN_NAMED_SECRET,
    looks_random,
    names_a_key_by_its_value,
    names_a_secret,
    names_the_secret_itself,
)
from aca_flows.session.secret_values import credential_values, secret_values
from aca_flows.session.wrapped_base64 import redact_wrapped

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "RedactingStream",
    "redact",
    "redact_error",
    "redact_known",
    "redact_log_handlers",
    "redact_text",
    "redacted_tail",
]

REDACTED = "[REDACTED]"


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
# It starts only where a scheme can start, and takes its runs whole: "a.a.a.a..." before a
# "://" is scanned once, not once for each of its dots.
_URL_PASSWORD = re.compile(
    r"(?i)(?<![a-z0-9+.\-])([a-z][a-z0-9+.\-]*+://[^/\s:@]*+:)([^/\s@]++)(?=@)"
)
_URL_TOKEN = re.compile(r"(?i)\b(https?://)([^/\s:@\[]+)(?=@)")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{16,}")
# A PEM private key, whole (up to its END line, or the end of the text when it was cut off).
# Its body only: lines of base64 and headers (Proc-Type: 4,ENCRYPTED), so a header named in
# code ('if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):') takes nothing after it.
# Its body: lines after a line break, written or escaped (a key in JSON, a Python repr), or
# chunks of 16+ base64 characters after spaces (a key echoed on one line; not prose).
_PEM_BREAK = r"[ \t]*(?:\r?\n|\\r\\n|\\n)"
_PEM_BODY = rf"(?:{_PEM_BREAK}(?!-----)[A-Za-z0-9+/=:,\- \t]*+|[ \t]++[A-Za-z0-9+/=]{{16,}}+)"
_PEM_KEY = re.compile(
    rf"(-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----){_PEM_BODY}++"
    rf"(?:(?:{_PEM_BREAK}|[ \t]*)-----END \2PRIVATE KEY-----)?"
)
# Basic <base64 of user:password> (an Authorization or Proxy-Authorization header's value):
# "basic" is an ordinary word, so what follows must decode to a user:password pair.
_BASIC = re.compile(r"\b([Bb][Aa][Ss][Ii][Cc]\s+)([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")


def _any_case(word: str) -> str:
    # [Ss][Ee]...: the search runs about twice as fast as with (?i) on the whole pattern.
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


# NAME=value, NAME: value, "name": "value", name: type = value in free text, headers, shell
# commands and code, where the name holds a secret word somewhere; ``_assignment`` decides
# whether it names a secret. The look-behind starts a match only where a name starts: cheaper
# than trying every position.
_NAME_CHAR = r"[A-Za-z0-9_.\-]"
_NAME_CUES = ("secret", "token", "passw", "passphrase", "pwd", "credential", "auth", "key")
# A type annotation between the name and "=": token: str = ..., api_key: Final[str] = ...
_ANNOTATION = r"[A-Za-z_][\w.\[\], |]*+="
# The name is taken whole and at once (a look-ahead for a cue, then a possessive run): a long
# run of name characters holding many cues ("tokentoken...") is scanned once, not once a cue.
# The value: a quoted string whole, spaces and all, else a run of 8+ characters. A quoted
# value starting or ending with a space or the other quote is code between two strings, its
# "opening" quote the end of one: "token=" + value + "...", "key='" + key + "'".
_ASSIGNED = re.compile(
    rf"(?<!{_NAME_CHAR})(?=(?>{_NAME_CHAR}*?(?:{'|'.join(map(_any_case, _NAME_CUES))})))"
    rf"""({_NAME_CHAR}++)(["']?\s*+(?::\s*+{_ANNOTATION}|[:=])\s*+)"""
    r"""(?:"([^"'\s][^"\n]{7,}+)(?<![\s'])(?=")|'([^'"\s][^'\n]{7,}+)(?<![\s"])(?=')"""
    r"""|(["']?)([^\s"',;]{8,}+))"""
)
# A kept value is searched for assignments of its own (?key=abc&token=...), this deep at most:
# a deeper chain (key=key=key=...) has its value redacted, so that no text is scanned more
# than this many times over.
_MAX_NESTED = 8
_EXPRESSION_CHARS = frozenset("()[]{}<>$%")


# Longer texts (a file, a diff, a verify's output) seldom come again: redacted each time.
_MEMO_TEXT = 4096


def redact_text(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret replaced by ``[REDACTED]``."""
    return _redact_text(text, secret_values(environ))


def redacted_tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text``, redacted before the cut: a cut leaves a
    secret's part that no rule finds (a check's output kept 26 of a token's 27 characters)."""
    return redact_text(text)[-limit:] if len(text) > limit else text


def redact_known(text: str) -> str:
    """``text`` without the credentials aca knows (``credential_values``: its environment's
    keys, the Secret blocks in use, their encodings), plain, in a dump or cut by line breaks;
    the shape and name rules, and values that are words (``MYSQL_PWD=password``), are left
    out. For what an agent's model is sent: the model needs the code as it is (a test's
    ``password = "hunter2-fixture"`` included), never a key aca holds or gave a command
    (``[sandbox] env``)."""
    secrets = credential_values()
    if not secrets:
        return text
    text = _without_values(text, secrets)
    if "\n[... " in text:
        text = _partial_at_cuts(text, secrets)
    return text


# Where aca cut a long output or file short (``sandbox/process.py``, ``agent/tools.py``, a
# file a task refers to: ``agent/prompt.py``).
_CUT = re.compile(
    r"(\n\[\.\.\. \d+ (?:bytes omitted \.\.\.\]\n|more (?:characters|bytes) not shown\]"
    r"|characters omitted\]))"
)
# A part of a credential this long, at a cut, is taken for one; a shorter one tells nothing.
_MIN_PART = 6


def _partial_at_cuts(text: str, secrets: list[str]) -> str:
    """``text`` without the part of a credential a cut left on either side of it: cut
    first, the credential was never whole for the search."""
    pieces = _CUT.split(text)
    for index in range(0, len(pieces), 2):  # the text between the cuts
        piece = pieces[index]
        if index + 1 < len(pieces):  # a cut follows: a credential's start may end it
            piece = _without_part(piece, secrets, at_end=True)
        if index > 0:  # a cut precedes: a credential's end may start it
            piece = _without_part(piece, secrets, at_end=False)
        pieces[index] = piece
    return "".join(pieces)


def _without_part(piece: str, secrets: list[str], *, at_end: bool) -> str:
    for secret in secrets:
        for size in range(len(secret) - 1, _MIN_PART - 1, -1):
            if at_end and piece.endswith(secret[:size]):
                return piece[:-size] + REDACTED
            if not at_end and piece.startswith(secret[-size:]):
                return REDACTED + piece[size:]
    return piece


def redact(obj: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A copy of ``obj`` (JSON-like: dicts, lists, strings, numbers) with secrets redacted."""
    return _redact_obj(obj, secret_values(environ))


def redact_error(error: Exception) -> Exception:
    """``error`` with its text redacted, in place (its type decides a retry); an ``AcaError``
    of the same text redacted if its own ``__str__`` shows a secret still. Prefect keeps
    ``str(error)`` as the task run's state message, in its events and in the persisted result
    (``results/``, pushed with the session): a server's error body could echo the key, and a
    model could name a file after one and make reading it fail."""
    error.args = tuple(redact_text(a) if isinstance(a, str) else a for a in error.args)
    for name, value in vars(error).items():
        if isinstance(value, str):
            setattr(error, name, redact_text(value))
    if redact_text(str(error)) != str(error):  # its own __str__ (an OSError's file name)
        return AcaError(redact_text(f"{type(error).__name__}: {error}"))
    return error


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
    # {"api_key": "..."} in options or headers: the key says what the value is, by the same
    # rule as NAME="value" in text (a string value is a quoted literal).
    return isinstance(key, str) and isinstance(value, str) and _holds_a_secret(key, value, True)


# What each pattern above needs somewhere in the text, lower-cased: ASCII text holding none of
# these cannot match any of them, and skips the regular expressions (most strings written do).
# Other text always takes them: Unicode case folding matches more than ``lower`` shows.
# One search in C (a loop over the cues in Python cost most of a record's redaction), the cues
# grouped by first letter, which searches faster than a flat list. "author" (git logs) is not
# a cue; "auth" and "authorization" are.
_PATTERN_CUES = re.compile(
    "s(?:k-|ecret)|g(?:h|ithub_pat_)|xox|a(?:kia|iza|uth(?:oriz|(?!or)))|p(?:nu_|ass[wp]|wd)"
    "|b(?:earer|asic)|key|token|credential"
)


def _redact_text(text: str, secrets: list[str]) -> str:
    memo = getattr(secrets, "memo", None)
    if memo is None or len(text) > _MEMO_TEXT:
        return _redacted_text(text, secrets)
    done = memo.get(text)
    if done is None:
        done = _redacted_text(text, secrets)
        secrets.remember(text, done)
    return done


def _without_values(text: str, secrets: list[str]) -> str:
    """``text`` without ``secrets``: in a dump, cut by line breaks, escaped, and whole."""
    if secrets:  # first: a replaced secret would cut the lines around it
        text = redact_hex_dumps(text, secrets, REDACTED)
        if "\n" in text:
            text = redact_wrapped(text, secrets, REDACTED)
        text = redact_escaped_runs(text, secrets, REDACTED)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redacted_text(text: str, secrets: list[str]) -> str:
    text = _without_values(text, secrets)
    if "\n[... " in text:  # a secret aca cut through on either side of its mark
        text = _partial_at_cuts(text, secrets)
    # Shapes no word announces: a URL's credentials (postgres://admin:pw@db), a PEM key.
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)
        text = _URL_TOKEN.sub(lambda m: m.group(1) + REDACTED, text)
    if "PRIVATE KEY-----" in text:
        text = _PEM_KEY.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    lowered = text.lower() if text.isascii() else None
    if lowered is not None and _PATTERN_CUES.search(lowered) is None:
        return text
    for shape in _SHAPES:
        text = shape.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    if lowered is None or "basic" in lowered:
        text = _BASIC.sub(_basic_credentials, text)
    return _ASSIGNED.sub(_assignment, text)


def _basic_credentials(match: re.Match) -> str:
    encoded = match.group(2)
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), or not text (UnicodeDecodeError)
        return match.group(0)
    if ":" in decoded and decoded.isprintable():
        return match.group(1) + REDACTED
    return match.group(0)


def _assignment(match: re.Match, depth: int = 0) -> str:
    name, _, double, single, opening, word = match.groups()
    group = 3 if double is not None else 4 if single is not None else 6
    value = match.group(group)
    kept = match.group(0)
    before = kept[: match.start(group) - match.start()]  # the name, "=", an opening quote
    # A value holding [REDACTED] lost its secret already ("Basic [REDACTED]").
    if REDACTED not in value and _holds_a_secret(name, value, word is None or bool(opening)):
        return before + REDACTED
    if "=" in value or ":" in value:
        # Kept, but it may hold an assignment of its own: ?key=abc&token=...
        if depth >= _MAX_NESTED:
            return before + REDACTED
        return before + _ASSIGNED.sub(lambda inner: _assignment(inner, depth + 1), value)
    return kept


def _holds_a_secret(name: str, value: str, quoted: bool) -> bool:
    """The one rule, for text (NAME=value) and structures ({"name": "value"}) alike."""
    if len(value) < MIN_NAMED_SECRET or LOCATION_VALUE.match(value):
        return False
    if names_a_secret(name):
        if quoted and " " in value and not names_the_secret_itself(name):
            return False  # a sentence about one: PASSWORD_MISMATCH = "Passwords do not match"
        return _is_literal(value, quoted)
    return quoted and names_a_key_by_its_value(name) and looks_random(value)


def _is_literal(value: str, quoted: bool) -> bool:
    # A quoted string, or a word mixing letters and digits: not code (os.environ[...]), not a
    # reference ($TOKEN), not a plain word or a number.
    return quoted or (
        not _EXPRESSION_CHARS.intersection(value)
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message, arguments and traceback.

    Attach it to a handler (``handler.addFilter(RedactingFilter())``) so that every record
    the handler writes is redacted, whichever logger it came from. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values()
        if getattr(record, "_aca_redacted_for", None) is secrets:
            return True  # by the filter of a handler before this one, for the same secrets
        # Format once here, so a secret passed as an argument cannot slip through "%s".
        record.msg = _redact_text(record.getMessage(), secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact_text(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = _redact_text(record.stack_info, secrets)
        record._aca_redacted_for = secrets
        return True


def redact_log_handlers() -> None:
    """Put a ``RedactingFilter`` on every handler of every logger there is now (once each):
    Prefect's API handler (the server's logs, the UI), its console handler (the terminal) and
    any other. Handler filters see records from every logger that reaches the handler."""
    for handler in all_log_handlers():
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class RedactingStream:
    """A text stream (``sys.stdout``) whose writes are redacted, and dropped once nobody
    reads them (``_closed_output.py``); everything else is the wrapped stream's
    (``isatty``, ``fileno``, ``encoding``)."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, text: str) -> int:
        try:
            self._inner.write(redact_text(text))
        except OSError as exc:  # its reader is gone: the run goes on, unread
            if exc.errno not in READER_GONE:
                raise
            drop_output_of(self._inner)
        return len(text)

    def flush(self) -> None:
        try:
            self._inner.flush()
        except OSError as exc:
            if exc.errno not in READER_GONE:
                raise
            drop_output_of(self._inner)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)
