"""Secrets in dumps: ``xxd``, ``hexdump -C``, ``od -tx1``, ``od -x``, ``od -c`` (``redact.py``'s
helper).

A dump shows a secret's bytes as hex groups (or, ``od -c``, one character a column) spread
over lines, between offsets and an ASCII column that holds at most 16 of its characters a
line: in no form the redactor searches for. Here each run of dump lines is read back into
bytes, the secrets are looked for in them, and every line holding a byte of one is replaced,
but for its prefix and offset; the other lines stay.

The formats read (16 bytes a line, or any other count):

- ``xxd`` (``-g1``, ``-u`` too): ``00000000: 6865 7265 3a20  here:``, groups in byte order;
- ``xxd -e``: ``00000000: 65726568 0a203a  here:.``, groups little-endian (a short last
  group right-aligned), and ``-g`` any group size;
- ``hexdump -C``: ``00000000  68 65 72 65  |here|``;
- ``od -tx1`` (``-An`` too): ``0000000 68 65 72 65``;
- ``od -x`` and ``hexdump``: ``0000000 6568 6572``, 2-byte words, little-endian;
- ``od -c`` and ``hexdump -c``: ``0000000   h   e   r   e   :  \\n``, a character (an escape,
  three octal digits) in each 4 columns.

A group of several bytes is read in both byte orders (little- or big-endian, whichever the
machine that wrote it had). A line may have a prefix before its offset (a log's timestamp,
``> `` quoting) when its offset starts with 0 (the first 256 MB of ``xxd``, 16 MB of
``hexdump``, 256 KB of ``od``); a dump without offsets (``od -An``) is read at the start of
lines only.

Only a line with four groups after its offset starts a dump (the lines after it need one):
found by two searches (from each line break, and for an offset anywhere), which ordinary text
passes quickly.
"""

from __future__ import annotations

import re

__all__ = ["redact_hex_dumps"]

_HEX_GROUP = r"(?:[0-9a-fA-F]{2}){1,8}(?![0-9A-Za-z])"
_OD_C_FIELD = r"(?:   \S|  \\\S|  \*\*| [0-7]{3}|    )"
# A dump line at a line's start: an optional offset (xxd's with a colon), then 4+ groups.
_LINE = rf"(?:[0-9a-fA-F]{{6,8}}:?)?(?: {{1,2}}{_HEX_GROUP}){{4}}"
_FIRST_LINE = re.compile(_LINE)
_NEXT_LINE = re.compile(r"\n" + _LINE)
# A dump line's offset and 4 groups anywhere in a line (after a prefix): hex, or od -c's.
# Its offset starts with 0: a search for a literal "0" is fast where one for any hex digit
# (most letters of code) is not, 0.05 ms against 1.3 ms in a 160 KB record.
_OFFSET_LED = re.compile(
    rf"0(?<![0-9A-Za-z]0)[0-9a-fA-F]{{5,7}}(?::? +{_HEX_GROUP}(?: {{1,2}}{_HEX_GROUP}){{3}}"
    rf"|{_OD_C_FIELD}{{4}})"
)
_OFFSET = re.compile(r"[0-9a-fA-F]{6,8}(:?)")
_GROUP = re.compile(r"( +)((?:[0-9a-fA-F]{2}){1,8})(?![0-9A-Za-z])")
_OD_C_ESCAPES = {"0": 0, "a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13}

# A dump line read: (its line number, its prefix and offset, its bytes in groups).
_Read = tuple[int, str, list[bytes]]


def redact_hex_dumps(text: str, secrets: list[str], replacement: str) -> str:
    """``text`` with each dump line that holds a byte of one of ``secrets`` replaced."""
    if (
        _FIRST_LINE.match(text) is None
        and _NEXT_LINE.search(text) is None
        and _OFFSET_LED.search(text) is None
    ):
        return text
    lines = text.split("\n")
    block: list[_Read] = []  # the run of dump lines
    start = 0  # where the last dump line's offset starts: after its prefix
    for number, line in enumerate([*lines, ""]):
        # A dump's last line may show a byte or two: taken after a dump line only, whose
        # prefix it has.
        read = _read_from(line, start, 1) if block and start else None
        if read is None:
            read = _dump_line(line, 1 if block else 4)
        if read is not None:
            start, kept, groups = read
            block.append((number, kept, groups))
            continue
        if block:
            _cut_secrets(lines, block, secrets, replacement)
            block, start = [], 0
    return "\n".join(lines)


def _dump_line(line: str, least: int) -> tuple[int, str, list[bytes]] | None:
    """Where a dump line of ``least`` groups or more starts, its start (prefix and offset)
    and byte groups, else ``None``: read from the line's start, else from an offset after a
    prefix."""
    read = _read_from(line, 0, least)
    if read is None and (led := _OFFSET_LED.search(line)) is not None and led.start() > 0:
        read = _read_from(line, led.start(), least)
    return read


def _read_from(line: str, start: int, least: int) -> tuple[int, str, list[bytes]] | None:
    offset = _OFFSET.match(line, start)
    if start and offset is None:
        return None  # after a prefix, only a line with an offset
    position, colon = (offset.end(), offset.group(1)) if offset else (start, "")
    groups = _hex_groups(line, position, colon)
    if len(groups) < least and offset is not None and not colon:
        groups = _od_c_fields(line.rstrip("\r"), position)
    if len(groups) < least:
        return None
    return start, line[:position], groups


def _hex_groups(line: str, position: int, colon: str) -> list[bytes]:
    groups: list[str] = []
    while (group := _GROUP.match(line, position)) is not None:
        separator, digits = group.groups()
        width = len(groups[0]) if groups else 0
        # One space between groups; two end them (the ASCII column follows), except after
        # the offset and hexdump -C's gap after its eighth byte; more only before xxd -e's
        # short last group, which is right-aligned (the first of a line too, after xxd's
        # colon).
        gap = len(separator) == 2 and (not groups or (len(groups) == 8 and width == 2))
        aligned = len(separator) > 1 and (
            len(separator) == 1 + width - len(digits) if groups else bool(colon)
        )
        if len(separator) > 1 and not (gap or aligned):
            break
        groups.append(digits)
        position = group.end()
        if aligned and not gap:
            break  # a short group is the line's last
    try:
        return [bytes.fromhex(digits) for digits in groups]
    except ValueError:
        return []


def _od_c_fields(line: str, position: int) -> list[bytes]:
    """The bytes of ``od -c``'s 4-column fields from ``position`` to the line's end."""
    fields = []
    for at in range(position, len(line), 4):
        field = line[at : at + 4]
        shown = field.lstrip(" ")
        if len(field) < 4:
            return fields if not shown else []
        if len(shown) == 1 and field.startswith("   "):
            fields.append(shown.encode())
        elif field == "    ":
            fields.append(b" ")
        elif field == "  **":  # a character's further bytes, written with its first
            fields.append(b"")
        elif len(shown) == 2 and shown[0] == "\\" and shown[1] in _OD_C_ESCAPES:
            fields.append(bytes([_OD_C_ESCAPES[shown[1]]]))
        elif len(shown) == 3 and field[0] == " " and all("0" <= c <= "7" for c in shown):
            fields.append(bytes([int(shown, 8) & 0xFF]))
        else:
            return []
    return fields


def _cut_secrets(
    lines: list[str], block: list[_Read], secrets: list[str], replacement: str
) -> None:
    groups = [group for _, _, line_groups in block for group in line_groups]
    # Both byte orders of groups of several bytes: the same length, so the same lines.
    orders = {b"".join(groups), b"".join(group[::-1] for group in groups)}
    spans = []
    for data in orders:
        for secret in secrets:
            raw = secret.encode()
            found = data.find(raw)
            while found != -1:
                spans.append((found, found + len(raw)))
                found = data.find(raw, found + len(raw))
    if not spans:
        return
    start = 0
    for number, kept, line_groups in block:
        end = start + sum(len(group) for group in line_groups)
        if any(first < end and last > start for first, last in spans):
            cr = "\r" if lines[number].endswith("\r") else ""
            lines[number] = kept.rstrip(" ") + " " + replacement + cr
        start = end
