"""Secrets in hex dumps: ``xxd``, ``hexdump -C``, ``od -tx1``, ``od -x`` (``redact.py``'s helper).

A dump shows a secret's bytes as hex groups spread over lines, between offsets and an ASCII
column that holds at most 16 of its characters a line: in no form the redactor searches for.
Here each run of dump lines is read back into bytes, the secrets are looked for in them, and
every line holding a byte of one is replaced, but for its offset; the other lines stay.

The formats read (16 bytes a line, or any other count):

- ``xxd`` (``-g1``, ``-u`` too): ``00000000: 6865 7265 3a20  here:``, groups in byte order;
- ``hexdump -C``: ``00000000  68 65 72 65  |here|``;
- ``od -tx1`` (``-An`` too): ``0000000 68 65 72 65``;
- ``od -x`` and ``hexdump``: ``0000000 6568 6572``, 2-byte words, little-endian (the byte
  order of the machines aca runs on), so each word's bytes are swapped back.

Only a line with four hex groups after its offset starts a dump (the lines after it need one):
found by a search from each line break, which ordinary text passes quickly.
"""

from __future__ import annotations

import re

__all__ = ["redact_hex_dumps"]

# A dump line: an optional offset (xxd's with a colon), then 4+ groups of 2 or 4 hex digits.
_LINE = r"(?:[0-9a-fA-F]{6,8}:?)?(?: {1,2}(?:[0-9a-fA-F]{2}){1,2}){4}"
_FIRST_LINE = re.compile(_LINE)
_NEXT_LINE = re.compile(r"\n" + _LINE)
_OFFSET = re.compile(r"[0-9a-fA-F]{6,8}(:?)")
_GROUP = re.compile(r"( {1,2})([0-9a-fA-F]{2,4})\b")


def redact_hex_dumps(text: str, secrets: list[str], replacement: str) -> str:
    """``text`` with each dump line that holds a byte of one of ``secrets`` replaced."""
    if _FIRST_LINE.match(text) is None and _NEXT_LINE.search(text) is None:
        return text
    lines = text.split("\n")
    block: list[tuple[int, bytes]] = []  # (line number, its bytes) of the run of dump lines
    for number, line in enumerate([*lines, ""]):
        # A dump's last line may show a byte or two: taken after a dump line only.
        data = _dump_bytes(line, 1 if block else 4)
        if data is not None:
            block.append((number, data))
            continue
        if block:
            _cut_secrets(lines, block, secrets, replacement)
            block = []
    return "\n".join(lines)


def _dump_bytes(line: str, least: int) -> bytes | None:
    """The bytes a dump line of ``least`` groups or more shows, else ``None``."""
    offset = _OFFSET.match(line)
    position, colon = (offset.end(), offset.group(1)) if offset else (0, "")
    groups: list[str] = []
    while (group := _GROUP.match(line, position)) is not None:
        separator, digits = group.groups()
        # Two spaces end the groups (the ASCII column follows), except hexdump -C's gap
        # after its eighth byte.
        if groups and len(separator) == 2 and not (len(groups) == 8 and len(groups[0]) == 2):
            break
        groups.append(digits)
        position = group.end()
    if len(groups) < least:
        return None
    # od -x and hexdump write 2-byte words little-endian; xxd's groups are in byte order.
    swapped = not colon and len(groups[0]) == 4
    try:
        return b"".join(
            bytes.fromhex(g[2:] + g[:2] if swapped and len(g) == 4 else g) for g in groups
        )
    except ValueError:
        return None


def _cut_secrets(
    lines: list[str], block: list[tuple[int, bytes]], secrets: list[str], replacement: str
) -> None:
    data = b"".join(line_bytes for _, line_bytes in block)
    spans = []
    for secret in secrets:
        raw = secret.encode()
        found = data.find(raw)
        while found != -1:
            spans.append((found, found + len(raw)))
            found = data.find(raw, found + len(raw))
    if not spans:
        return
    start = 0
    for number, line_bytes in block:
        end = start + len(line_bytes)
        if any(first < end and last > start for first, last in spans):
            line = lines[number]
            offset = _OFFSET.match(line)
            kept = offset.group(0) + " " if offset else " "
            lines[number] = kept + replacement + ("\r" if line.endswith("\r") else "")
        start = end
