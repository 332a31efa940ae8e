"""The attribute blocks of a Markdown task file: ``{#id depends_on=a,b verify="pytest -q"}``
at the end of an item's or a heading's line, read as shell words into a task's fields. Each
problem is noted in ``problems`` with its line, the rest read on (see ``markdown_loader``)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from aca_flows.errors import TaskFileError
from aca_flows.plan.builder import bad_task_id
from aca_flows.plan.models import Task, TaskMetadata

__all__ = [
    "ATTRIBUTE_BLOCK",
    "ATTRIBUTE_KEYS",
    "is_attribute",
    "plan_attrs",
    "shell_words",
    "split_attrs",
    "task_fields",
]

ATTRIBUTE_KEYS = (
    "depends_on",
    "verify",
    "priority",
    "complexity",
    "tags",
    "provider",
    "model",
    "max_attempts",
    "network",
)

ATTRIBUTE_BLOCK = re.compile(r"\s*\{([^{}]*)\}\s*$")
# One piece of a shell word (as shlex.split reads, POSIX mode): whitespace between words, plain
# text, an escaped character, a single-quoted or a double-quoted string; else an open quote or
# a trailing backslash, which shlex refuses.
_SHELL_PIECE = re.compile(
    r"""([ \t\r\n]+)|([^ \t\r\n'"\\]+)|\\(.)|'([^']*)'|"((?:[^"\\]|\\.)*)"|(.)""", re.S
)
_DOUBLE_QUOTED_ESCAPE = re.compile(r'\\(["\\])')
_ENDS_ESCAPING = re.compile(r'(?:[^"\\]|\\.)*\\', re.S)  # a double quote's rest, to its end
_TYPOGRAPHIC_QUOTES = re.compile("[\u2018\u2019\u201c\u201d\u201e\u00ab\u00bb]")
_STRAIGHT_QUOTES = str.maketrans("\u2018\u2019\u201c\u201d\u201e\u00ab\u00bb", '\'\'"""""')


def shell_words(text: str) -> list[str]:
    """``shlex.split(text)``, read by one regular expression: a plan of thousands of tasks
    spent half its loading time in shlex's reader, a character at a time."""
    words: list[str] = []
    word: list[str] | None = None
    for piece in _SHELL_PIECE.finditer(text):
        space, plain, escaped, single, double, stray = piece.groups()
        if space:
            if word is not None:
                words.append("".join(word))
            word = None
        elif stray is not None:
            # An open quote, or a backslash with nothing after it (in a double quote too).
            escaping = stray == "\\" or (
                stray == '"' and _ENDS_ESCAPING.fullmatch(text, piece.end())
            )
            raise ValueError("No escaped character" if escaping else "No closing quotation")
        else:
            if double:
                double = _DOUBLE_QUOTED_ESCAPE.sub(r"\1", double)
            word = word if word is not None else []
            word.append(plain or escaped or single or double or "")
    if word is not None:
        words.append("".join(word))
    return words


def split_attrs(
    title: str, path: Path, line: int, problems: list[str]
) -> tuple[str, dict[str, str]]:
    """The title and its attributes; one that cannot be read is noted in ``problems``, and so
    is a block of attributes inside the title (`API {depends_on=db} -> spec.md`), which would
    be title text, its dependency lost."""
    title, attrs = _trailing_attrs(title, path, line, problems)
    for block in re.finditer(r"\{([^{}]*)\}", re.sub(r"`[^`]*`", "", title)):  # not in code
        if any(is_attribute(token) for token in block.group(1).split()):
            problems.append(
                f"{path}:{line}: the attribute block {block.group(0)} is inside the title, where "
                "it is text; move it to the end of the line."
            )
    return title, attrs


def _trailing_attrs(
    title: str, path: Path, line: int, problems: list[str]
) -> tuple[str, dict[str, str]]:
    match = ATTRIBUTE_BLOCK.search(title)
    if not match:
        return title.strip(), {}
    block = match.group(1)
    if _TYPOGRAPHIC_QUOTES.search(block) and any(is_attribute(t) for t in block.split()):
        # An editor's “pytest -q”: to shlex they are letters, so verify=“true” was the command
        # `“true”`, failing only when the task had done its work.
        problems.append(
            f"{path}:{line}: the attribute block {{{block}}} has typographic quotes (“ ” ‘ ’), "
            'which are text to aca; write straight quotes, e.g. verify="pytest -q".'
        )
        block = block.translate(_STRAIGHT_QUOTES)  # read on as meant: its id, its dependencies
    try:
        tokens = shell_words(block)
    except ValueError as exc:
        problems.append(
            f"{path}:{line}: cannot read the attribute block {{{match.group(1)}}}: {exc}; "
            'quote values with spaces, e.g. verify="pytest -q".'
        )
        return title[: match.start()].strip(), {}
    if any(is_attribute(t) for t in tokens):  # else literal braces: "{priority = 3}" as text
        tokens = _spaced_assignments_joined(tokens)
    stray = [t for t in tokens if not (t.startswith("#") or "=" in t)]
    if not tokens or (stray and not any(is_attribute(t) for t in tokens)):
        return title.strip(), {}  # literal braces in a title, not attributes
    if stray:  # `{depends_on=db verify=pytest -q}`: was all title, the dependency lost
        problems.append(
            f"{path}:{line}: {', '.join(repr(t) for t in stray)} in {{{match.group(1)}}} is no "
            'attribute; quote a value with spaces (verify="pytest -q") and list values with '
            "commas only (tags=a,b)."
        )
    attrs: dict[str, str] = {}
    for token in (t for t in tokens if t not in stray):
        key, _, value = ("id", "", token[1:]) if token.startswith("#") else token.partition("=")
        if key not in ATTRIBUTE_KEYS and key != "id":
            problems.append(
                f"{path}:{line}: unknown attribute '{key}'; known attributes are "
                f"#id, {', '.join(ATTRIBUTE_KEYS)}."
            )
            continue
        if key in attrs:  # a second value would silently replace the first
            fix = "keep the one you mean"
            if key in ("depends_on", "tags"):
                fix = f"list them in one, e.g. {key}={attrs[key]},{value}"
            problems.append(
                f"{path}:{line}: attribute {'#id' if key == 'id' else key} is given twice "
                f"({_shown(key, attrs[key])} and {_shown(key, value)}); {fix}."
            )
            continue
        attrs[key] = value
    return title[: match.start()].strip(), attrs


def _spaced_assignments_joined(tokens: list[str]) -> list[str]:
    """``depends_on = a`` (TOML's habit) read as ``depends_on=a``: it was two problems, "no
    attribute" and "unknown attribute ''", neither naming the spaces. Only for a known key."""
    joined: list[str] = []
    rest = list(tokens)
    while rest:
        token = rest.pop(0)
        key = token.removesuffix("=")
        if key in ATTRIBUTE_KEYS and rest and (token.endswith("=") or rest[0].startswith("=")):
            if not token.endswith("="):  # depends_on =a, or depends_on = a
                token += "="
                nxt = rest.pop(0).removeprefix("=")
                if nxt:
                    joined.append(token + nxt)
                    continue
            if rest and "=" not in rest[0]:  # depends_on= a
                joined.append(token + rest.pop(0))
                continue
        joined.append(token)
    return joined


def is_attribute(token: str) -> bool:
    key, equals, _ = token.partition("=")
    return (token.startswith("#") and len(token) > 1) or (bool(equals) and key in ATTRIBUTE_KEYS)


def _shown(key: str, value: str) -> str:
    return f"#{value}" if key == "id" else f"{key}={shlex.quote(value)}"


# The attribute a user wrote, for a model field a validation error names.
_ATTRIBUTE_OF = {"estimated_complexity": "complexity", "dependencies": "depends_on"}


def task_fields(
    attrs: dict[str, str], path: Path, line: int, problems: list[str]
) -> dict[str, Any]:
    """The task's fields from its attributes; each bad value is noted in ``problems`` and left
    out, so the task is still built and the rest of the file checked."""
    while True:
        try:
            return _checked_task_fields(attrs)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(_ATTRIBUTE_OF.get(str(p), str(p)) for p in err["loc"])
            message = (
                f"{path}:{line}: bad attribute value for '{where}': {err['msg']}; "
                "see docs/task-files.md for the allowed values."
            )
            if where == "id":
                message = f"{path}:{line}: {bad_task_id(attrs['id'])}."
            if where not in attrs:  # not an attribute's fault: nothing to leave out
                raise TaskFileError(message) from None
            problems.append(message)
            attrs = {k: v for k, v in attrs.items() if k != where}


def _checked_task_fields(attrs: dict[str, str]) -> dict[str, Any]:
    def csv(value: str) -> list[str]:
        return [v.strip() for v in value.split(",") if v.strip()]

    metadata = TaskMetadata(
        priority=attrs.get("priority", "normal"),
        estimated_complexity=attrs.get("complexity"),
        tags=csv(attrs.get("tags", "")),
    )
    fields: dict[str, Any] = {
        "metadata": metadata,
        "dependencies": csv(attrs.get("depends_on", "")),
        "verify": attrs.get("verify"),
        "provider": attrs.get("provider"),
        "model": attrs.get("model"),
        # Markdown's values are words: read as pydantic reads them ("3", "true", "yes");
        # a word that is neither stays, for the probe to name.
        "max_attempts": _word_as(int, attrs.get("max_attempts")),
        "network": _word_as(bool, attrs.get("network")),
    }
    # A probe: a bad value is named here, with its line, not by a traceback later.
    probed = {k: fields[k] for k in ("max_attempts", "network") if fields[k] is not None}
    Task(id=attrs.get("id", "check"), title="check", **probed)
    if "id" in attrs:
        fields["task_id"] = attrs["id"]
    return fields


_WORD_READERS = {int: TypeAdapter(int), bool: TypeAdapter(bool)}  # built once: ~0.1 ms each


def _word_as(kind: type, word: str | None) -> Any:
    try:
        return None if word is None else _WORD_READERS[kind].validate_python(word)
    except ValidationError:
        return word


def plan_attrs(attrs: dict[str, str], path: Path, line: int, problems: list[str]) -> dict[str, Any]:
    extra = set(attrs) - {"verify"}
    if extra:
        problems.append(
            f"{path}:{line}: the plan title takes only a verify attribute (the default verify "
            f"command), not {', '.join(sorted(extra))}; put task attributes on items."
        )
    return {"verify": attrs["verify"]} if "verify" in attrs else {}
