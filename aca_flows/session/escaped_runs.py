"""Secrets written as escapes: ``\\x51\\x77``, ``\\121``, ``%51%77``, ``\\u0051``, ``&#81;``,
and hex with separators (``51 77``, ``51:77``, ``0x51, 0x77``) (``redact.py``'s helper).

The redactor looks for each secret's own forms (plain, hex, percent- and JSON-encoded where
those differ from it, base64); a string literal or URL may escape any character, every one or
a few (``b"\\x51\\x77..."``, ``%51%77...``), and a byte array separates its hex. Here each run of
such escapes (four or more, with the plain characters between them) is read back into its
text, and a run whose text holds a secret is replaced whole.
"""

from __future__ import annotations

import html
import re
from urllib.parse import unquote

__all__ = ["decoded_runs", "redact_escaped_runs"]

_ESCAPE = (
    r"\\x[0-9a-fA-F]{2}|\\[0-7]{3}|%[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}"
    r"|&#[0-9]{1,7};|&#[xX][0-9a-fA-F]{1,6};"
)
_PLAIN = r"[A-Za-z0-9_.~+/=-]"
_TOKEN = re.compile(rf"({_ESCAPE})|(.)", re.DOTALL)
_HEX_SEPARATOR = r"(?:[ :-]|,\s*)"
_HEX_PAIR = re.compile(r"(?:0[xX])?([0-9a-fA-F]{2})")
# Where a run may be: four escapes close together (a separator then seven pairs: every run of
# eight has them), found by searches that start with a rare character (an escape's first; a
# separator) where one for any plain character or hex digit would test every position of
# the text; text of escapes broken before four (`&#81;&#81;&#81;;`) then costs no walk. A run
# is read from the start of the word it is in (at most this far back: a secret is shorter).
_ESCAPED = (
    re.compile(rf"(?:{_ESCAPE})(?:{_PLAIN}{{0,64}}(?:{_ESCAPE})){{3}}"),
    re.compile(rf"{_PLAIN}*(?:(?:{_ESCAPE}){_PLAIN}*){{4,}}"),
    re.compile(rf"(?<!{_PLAIN})."),
    re.compile(r"[A-Za-z0-9_.~+/=\\%&#;-]*"),
)
_PAIR = r"(?:0[xX])?[0-9a-fA-F]{2}"
_SEPARATED = (
    re.compile(rf"[ :,-]{_PAIR}(?:{_HEX_SEPARATOR}{_PAIR}){{6}}(?![0-9A-Za-z])"),
    re.compile(rf"{_PAIR}(?:{_HEX_SEPARATOR}{_PAIR}){{7,}}(?![0-9A-Za-z])"),
    re.compile(rf"(?<![0-9A-Za-z]){_PAIR}"),
    re.compile(r"[0-9a-fA-FxX :,\s-]*"),
)
_BACK = 256


def redact_escaped_runs(text: str, secrets: list[str], replacement: str) -> str:
    """``text`` with each run of escapes whose text holds one of ``secrets`` replaced."""
    shortest = min(map(len, secrets), default=0)
    for run, decoded in decoded_runs(text):
        if len(decoded) >= shortest and any(secret in decoded for secret in secrets):
            text = text.replace(run, replacement)
    return text


def decoded_runs(text: str) -> list[tuple[str, str]]:
    """Each run of escapes or separated hex in ``text``, and the text it stands for."""
    escaped = _runs(text, _ESCAPED)
    separated = _runs(text, _SEPARATED)
    return [(run, _unescaped(run)) for run in escaped] + [(run, _unhexed(run)) for run in separated]


def _runs(text: str, kind: tuple[re.Pattern, re.Pattern, re.Pattern, re.Pattern]) -> list[str]:
    """The runs of a ``kind`` (``_ESCAPED``, ``_SEPARATED``): around each place its first
    pattern finds, the run its second reads from the first start before it (its third, in
    the word its fourth reads backwards, within ``_BACK``) that reaches the place."""
    at, run, starts, word_backwards = kind
    found, position = [], 0
    while (hint := at.search(text, position)) is not None:
        place = hint.start()
        lo = max(position, place - _BACK)
        start = place - word_backwards.match(text[lo:place][::-1]).end()
        match = next(
            (
                match
                for begin in starts.finditer(text, start, place + 1)
                if (match := run.match(text, begin.start())) and match.end() > place
            ),
            None,
        )
        found += [match.group()] if match is not None else []
        position = match.end() if match is not None else place + 1
    return found


def _unescaped(run: str) -> str:
    """The text ``run`` stands for: by the codecs where they read it (fast on a run of
    megabytes), else escape by escape."""
    try:
        text = run.encode("ascii").decode("unicode_escape") if "\\" in run else run
        text = unquote(text) if "%" in text else text
        return html.unescape(text) if "&#" in text else text
    except (UnicodeError, ValueError):
        return _unescaped_one_by_one(run)


def _unescaped_one_by_one(run: str) -> str:
    data = bytearray()
    for escape, plain in _TOKEN.findall(run):
        data += _byte_or_char(escape) if escape else plain.encode()
    return data.decode("utf-8", errors="replace")


def _byte_or_char(escape: str) -> bytes:
    if escape.startswith("&#"):
        number = escape[2:-1]
        code = int(number[1:], 16) if number[:1] in "xX" else int(number)
        return _char(code)
    if escape[1] in "uU":
        return _char(int(escape[2:], 16))
    if escape[1] == "x" or escape[0] == "%":
        return bytes([int(escape[-2:], 16)])
    return bytes([int(escape[1:], 8) & 0xFF])  # octal


def _char(code: int) -> bytes:
    return chr(code).encode("utf-8", errors="replace") if code < 0x110000 else b"?"


def _unhexed(run: str) -> str:
    return bytes.fromhex("".join(_HEX_PAIR.findall(run))).decode("utf-8", errors="replace")
