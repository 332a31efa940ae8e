"""Secrets cut by line breaks: base64 wrapped across lines (``redact.py``'s helper).

``base64`` wraps its output at 76 characters, ``openssl base64`` at 64 (with CRLF in some
tools): a secret's encoding that crosses a line break is in no line whole, so the redactor's
search for it finds nothing. Here the lines of such a block are joined, the secrets are
looked for in the joined text, and each one found is replaced in the original, line breaks and
all; the rest of the block, and a next line that merely looks like base64, stay as they are.

Only a line break with 16 base64 characters before it and one after it starts a block: found
by a search from each line break, which ordinary text (code, logs) passes quickly.
"""

from __future__ import annotations

import re

__all__ = ["redact_wrapped"]

_BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_WRAP_POINT = re.compile(r"\n(?<=[A-Za-z0-9+/]{16}\n)[A-Za-z0-9+/]")
_WRAP_POINT_ANY = re.compile(
    r"\n(?:(?<=[A-Za-z0-9+/]{16}\n)|(?<=[A-Za-z0-9+/]{16}\r\n))[A-Za-z0-9+/]"
)
# From a wrap point on: each further line break followed by a run of base64.
_BLOCK_REST = re.compile(r"(?:\r?\n[A-Za-z0-9+/]++)++")


def redact_wrapped(text: str, secrets: list[str], replacement: str) -> str:
    """``text`` with every one of ``secrets`` that a line break cuts replaced."""
    points = _WRAP_POINT_ANY if "\r" in text else _WRAP_POINT
    pieces: list[str] = []
    end = 0
    # search, not finditer: only search skips ahead to the next line break quickly.
    while (point := points.search(text, end)) is not None:
        newline = point.start()
        line_end = newline - 1 if text[newline - 1] == "\r" else newline
        start = line_end
        while start > end and text[start - 1] in _BASE64_CHARS:
            start -= 1
        stop = _BLOCK_REST.match(text, line_end).end()  # the wrap point at least
        pieces += [text[end:start], _cut_secrets(text[start:stop], secrets, replacement)]
        end = stop
    return "".join(pieces) + text[end:] if pieces else text


def _cut_secrets(block: str, secrets: list[str], replacement: str) -> str:
    joined = block.replace("\r", "").replace("\n", "")
    if not any(secret in joined for secret in secrets):
        return block
    where = [i for i, c in enumerate(block) if c not in "\r\n"]  # joined index -> block's
    spans = []
    for secret in secrets:
        found = joined.find(secret)
        while found != -1:
            spans.append((where[found], where[found + len(secret) - 1] + 1))
            found = joined.find(secret, found + len(secret))
    pieces, end = [], 0
    for first, last in sorted(spans):
        if first >= end:
            pieces += [block[end:first], replacement]
        end = max(end, last)
    return "".join(pieces) + block[end:]
