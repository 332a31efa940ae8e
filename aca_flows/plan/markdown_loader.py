"""Markdown task files, read deterministically.

- A single top-level ``# Title`` names the plan; the text under it describes the plan.
- Other headings become parent tasks when they hold list items (at any depth); their text
  becomes the task's description. Headings without list items become context hints.
- Checklist (``- [ ]``), bullet (``-``, ``*``, ``+``) and numbered (``1.``) items become tasks
  under their heading; indented items become subtasks; indented text becomes the description.
  A checked item (``- [x]``) is loaded as completed.
- ``item -> spec.md`` (``-> a.md, b.md``) and ``[text](spec.md)`` attach the files' text to
  the task (paths relative to the task file, never outside its folder tree).
- A trailing attribute block sets ids, dependencies and more:
  ``- [ ] Add login {#login depends_on=db,models verify="pytest -q tests/test_login.py"}``.
- A file without list items is one task.

A problem (an unknown attribute, a bad value, a missing referenced file) is noted with its line
and the file is read on without it, so ``check_plan`` raises every problem of the file at once.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import TypeAdapter, ValidationError

from aca_flows.errors import TaskFileError
from aca_flows.plan.builder import TaskTreeBuilder, bad_task_id
from aca_flows.plan.models import ExecutionPlan, Task, TaskMetadata, TaskStatus
from aca_flows.plan.validate import check_plan

__all__ = ["ATTRIBUTE_KEYS", "arrow_references", "linked_file", "load_markdown"]

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

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# A checkbox may end the line: `- [ ]` is an item without a title, not the title "[ ]".
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d{1,9}[.)])\s+(?:\[([ xX])\](?:\s+|$))?(.*)$")
# A setext heading's underline (CommonMark: up to 3 spaces, then only = or only -).
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_COMMENT = re.compile(r"^\s*<!--")
# A thematic break (`* * *`, `- - -`): a separator, though it starts like a list item.
_BREAK = re.compile(r"^ {0,3}([-*_])(?:\s*\1){2,}\s*$")
_ATTRS = re.compile(r"\s*\{([^{}]*)\}\s*$")
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
# `- [ ] -> spec.md`: no title; `-> a.md, b.md`: two files
_ARROW = re.compile(r"^(?:(.*?)\s+)?->\s+(\S+(?:\s*,\s*\S+)*)\s*$")
# What a `-> target` must look like to be a file: a folder in it, or a file extension.
_PATH_LIKE = re.compile(r"^[^`'\"]*(/|\.[A-Za-z0-9]+$)")
_LINK = re.compile(r"(!?)\[([^\]]+)\]\(([^)\s]+)\)")


@dataclass
class _Node:
    title: str
    line: int
    level: int = 0  # heading level; 0 for list items
    indent: int = -1  # list item indent; -1 for headings
    checked: bool = False
    text: list[str] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)
    commented_items: list[int] = field(default_factory=list)  # root: lines of items switched off
    # Where in ``text`` lines are no prose: switched off (in a comment, the front matter), or
    # code (a fence). Neither names a task; what is switched off is no instruction either.
    switched_off: set[int] = field(default_factory=set)
    code: set[int] = field(default_factory=set)

    @property
    def is_item(self) -> bool:
        return self.level == 0

    def has_items(self) -> bool:
        return any(c.is_item or c.has_items() for c in self.children)


def load_markdown(path: Path, text: str, base_dir: Path | None = None) -> ExecutionPlan:
    """The task file as a plan that passed ``check_plan``, which raises every problem found."""
    builder = TaskTreeBuilder(path, base_dir)
    root = _parse(text, path, builder.problems)
    builder.reserve_ids(_explicit_ids(root, path))
    if root.has_items():
        plan = _items_plan(path, root, builder)
    else:
        if root.commented_items:  # not the comment's text as one task: nothing is to run
            builder.problems.append(
                f"{path}:{root.commented_items[0]}: every list item is inside an HTML comment "
                "(<!-- -->), switched off, so there is nothing to run; take the items to run "
                "out of the comment."
            )
        plan = _single_task_plan(path, root, builder)
    return check_plan(plan, str(path), found_before=builder.problems)


def _items_plan(path: Path, root: _Node, builder: TaskTreeBuilder) -> ExecutionPlan:
    tops = root.children

    plan_fields: dict[str, Any] = {"name": path.stem, "description": _join(root.text)}
    headings = [n for n in tops if not n.is_item]
    if len(headings) == 1 and headings[0].level == 1 and not any(n.is_item for n in tops):
        title_node = headings[0]
        title, attrs = _split_attrs(title_node.title, path, title_node.line, builder.problems)
        plan_fields["name"] = title or path.stem  # `# {verify=...}`: no words to name it
        plan_fields["description"] = _join(root.text + title_node.text)
        plan_fields.update(_plan_attrs(attrs, path, title_node.line, builder.problems))
        tops = title_node.children
    hints: list[str] = []
    for node in tops:
        _add_node(node, None, builder, hints)
    return ExecutionPlan(**plan_fields, context_hints=hints, tasks=builder.tasks)


def _refuse_attributes_on_later_headings(
    nodes: list[_Node], path: Path, problems: list[str]
) -> None:
    """In a file that is one task, a later heading's `{depends_on=build}` would be text of its
    description, its fields lost without a word."""
    for node in nodes:
        block = _ATTRS.search(node.title)
        if block and any(_known_attribute(t) for t in block.group(1).split()):
            bare = node.title[: block.start()].strip()
            problems.append(
                f"{path}:{node.line}: heading '{node.title}' has attributes, but a file without "
                "list items is one task, titled by its first heading: they would be description "
                f"text. Write each task as a list item (`- {bare} {block.group(0).strip()}`), "
                "or give the attributes to the first heading."
            )
        _refuse_attributes_on_later_headings(node.children, path, problems)


def _single_task_plan(path: Path, root: _Node, builder: TaskTreeBuilder) -> ExecutionPlan:
    first_heading = next((n for n in root.children), None)
    if first_heading is not None:
        title, line = first_heading.title, first_heading.line
        rest = first_heading.children + root.children[1:]
        _refuse_attributes_on_later_headings(rest, path, builder.problems)
        body = _join(root.text + first_heading.text + _flatten_text(rest))
    else:
        # The first line of prose names the task; the lines switched off are no instruction.
        prose = [
            i
            for i, text in enumerate(root.text)
            if text.strip() and i not in root.switched_off and i not in root.code
        ]
        if not prose:
            builder.problems.append(
                f"{path}: nothing to run: the file's only text is in comments (<!-- -->), code "
                "fences or front matter; write each task as a list item (- [ ] ...) or a line "
                "of text."
            )
        first = prose[0] if prose else 0
        title, line = root.text[first].strip() or path.stem, first + 1
        body = _join(
            [text for i, text in enumerate(root.text) if i != first and i not in root.switched_off]
        )
    title, attrs = _split_attrs(title, path, line, builder.problems)
    title = _titled(title, path, line, builder.problems)
    fields = _task_fields(attrs, path, line, builder.problems)
    builder.add(None, title=title[:200], description=body, **fields)
    return ExecutionPlan(name=title[:200], tasks=builder.tasks)


def _add_node(node: _Node, parent: Task | None, builder: TaskTreeBuilder, hints: list[str]):
    if not node.is_item and not node.has_items():
        if _split_attrs(node.title, builder.task_file, node.line, problems=[])[1]:
            builder.problems.append(  # `## Deploy {depends_on=build}` over prose: no task
                f"{builder.task_file}:{node.line}: heading '{node.title}' has attributes but no "
                "list item under it, so it is context for every task, not a task; write its "
                f"work as a list item under it (`- {node.title}`)."
            )
        hints.append(_join([f"{node.title}:", *node.text, *_flatten_text(node.children)]))
        return
    title, attrs = _split_attrs(node.title, builder.task_file, node.line, builder.problems)
    _refuse_attributes_in_text(node, builder)
    title, refs = _references(title, builder, f"{builder.task_file}:{node.line}")
    title = _titled(title, builder.task_file, node.line, builder.problems)
    fields = _task_fields(attrs, builder.task_file, node.line, builder.problems)
    task_id = fields.pop("task_id", None)
    if node.checked and _all_checked(node):  # a group is done when its tasks are
        fields["status"] = TaskStatus(state="completed")
    fields["metadata"].file_refs = refs
    task = builder.add(parent, task_id=task_id, title=title, description=_join(node.text), **fields)
    for child in node.children:
        _add_node(child, task, builder, hints)


def _refuse_attributes_in_text(node: _Node, builder: TaskTreeBuilder) -> None:
    """`{depends_on=db}` under its item, alone or ending a wrapped title's second line, is
    description text: noted, not lost."""
    in_fence = False
    for text in node.text:
        in_fence = in_fence != bool(_FENCE.match(text))  # a code block may show attributes
        block = not in_fence and _ATTRS.search(text)
        if block and any(_known_attribute(t) for t in block.group(1).split()):
            builder.problems.append(
                f"{builder.task_file}:{node.line}: the attribute block {block.group(0).strip()} "
                "is on a line under the item, where it is description text; move it to the "
                "end of the item's (or heading's) own line."
            )


def _all_checked(node: _Node) -> bool:
    return all(child.checked and _all_checked(child) for child in node.children if child.is_item)


def _parse(text: str, path: Path, problems: list[str]) -> _Node:
    """Lines into a tree of headings and list items; text lines attach to the nearest owner.
    A comment or code fence never closed is a problem: it would hide every item after it."""
    root = _Node(title="", line=0, level=0, indent=-1)
    headings: list[_Node] = [root]
    items: list[_Node] = []
    in_fence = front_matter = in_comment = False
    opened = 0  # the line of the comment or fence being read
    paragraph: tuple[_Node, str, int] | None = None  # the text line just read: its owner, line
    title_of: _Node | None = None  # the item whose title a lazy continuation line extends
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if number == 1 and line == "---":
            front_matter = True  # YAML front matter: text, its closing `---` no underline
        if front_matter:
            front_matter = number == 1 or line not in ("---", "...")
            _append(_owner(headings, items, line), line, "switched_off")
            continue
        if in_fence or _FENCE.match(line):
            opened = opened if in_fence else number
            in_fence = in_fence != bool(_FENCE.match(line))
            _append(_owner(headings, items, line), line, "code")
            paragraph = title_of = None
            continue
        if in_comment or _COMMENT.match(line):
            # `<!-- - [ ] later -->` over lines: an item commented out is no task to run.
            opened = opened if in_comment else number
            in_comment = "-->" not in (line if in_comment else line.split("<!--", 1)[1])
            if _ITEM.match(line.split("<!--", 1)[-1]):
                root.commented_items.append(number)
            _append(_owner(headings, items, line), line, "switched_off")
            paragraph = title_of = None
            continue
        if title_of is not None and line.strip() and _lazy_continuation(line, title_of):
            # A title hard-wrapped onto an unindented line (CommonMark's lazy continuation):
            # the item's, attribute block and all, not the text of the heading above it.
            title_of.title = f"{title_of.title} {line.strip()}".strip()
            continue
        title_of = None
        if (match := _SETEXT.match(line)) and paragraph is not None and not items:
            # `Title` over `=====` or `-----`: the line above was a heading, not text.
            owner, title, title_number = paragraph
            owner.text.pop()
            _open_heading(headings, items, title, title_number, 1 if line.strip()[0] == "=" else 2)
            paragraph = None
            continue
        paragraph = None
        if match := _HEADING.match(line):
            _open_heading(headings, items, match.group(2), number, len(match.group(1)))
            continue
        if (match := _ITEM.match(line)) and not _BREAK.match(line):
            indent = _indent(line)
            while items and items[-1].indent >= indent:
                items.pop()
            node = _Node(
                title=match.group(3).strip(),
                line=number,
                indent=indent,
                checked=(match.group(2) or " ").lower() == "x",
            )
            (items[-1] if items else headings[-1]).children.append(node)
            items.append(node)
            title_of = node
            continue
        owner = _owner(headings, items, line)
        owner.text.append(line)
        if line.strip() and _indent(line) < 4:
            paragraph = (owner, line.strip(), number)
    if in_comment or in_fence:
        what, close = ("comment (<!--)", "-->") if in_comment else ("code fence", "its fence")
        problems.append(
            f"{path}:{opened}: the {what} opened here is never closed, so every line after it "
            f"is switched off; close it with {close} where it ends."
        )
    return root


def _lazy_continuation(line: str, item: _Node) -> bool:
    """``line``, just under ``item``'s own line (or its continuation), continues its title: it
    is not indented under it (that is its description) and starts no block of its own."""
    return (
        _indent(line) <= item.indent
        and not (
            _HEADING.match(line) or _ITEM.match(line) or _BREAK.match(line) or _SETEXT.match(line)
        )
        and not line.lstrip().startswith((">", "|", "<"))
    )


def _indent(line: str) -> int:
    """The columns ``line`` is indented by, a tab to the next multiple of four (CommonMark's
    tab stops): items and the text under them are measured alike."""
    body = line.lstrip()
    return len(line[: len(line) - len(body)].expandtabs(4))


def _open_heading(
    headings: list[_Node], items: list[_Node], title: str, number: int, level: int
) -> None:
    while len(headings) > 1 and headings[-1].level >= level:
        headings.pop()
    node = _Node(title=title, line=number, level=level)
    headings[-1].children.append(node)
    headings.append(node)
    items.clear()


def _append(owner: _Node, line: str, kind: str) -> None:
    """A line of ``owner``'s text that is no prose: ``kind`` is ``switched_off`` or ``code``."""
    getattr(owner, kind).add(len(owner.text))
    owner.text.append(line)


def _owner(headings: list[_Node], items: list[_Node], line: str) -> _Node:
    """Indented text continues the innermost item it is indented under; else the heading's."""
    if line.strip():
        indent = _indent(line)
        while items and indent <= items[-1].indent:
            items.pop()
    return items[-1] if items else headings[-1]


def _shell_words(text: str) -> list[str]:
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


def _split_attrs(
    title: str, path: Path, line: int, problems: list[str]
) -> tuple[str, dict[str, str]]:
    """The title and its attributes; one that cannot be read is noted in ``problems``, and so
    is a block of attributes inside the title (`API {depends_on=db} -> spec.md`), which would
    be title text, its dependency lost."""
    title, attrs = _trailing_attrs(title, path, line, problems)
    for block in re.finditer(r"\{([^{}]*)\}", re.sub(r"`[^`]*`", "", title)):  # not in code
        if any(_known_attribute(token) for token in block.group(1).split()):
            problems.append(
                f"{path}:{line}: the attribute block {block.group(0)} is inside the title, where "
                "it is text; move it to the end of the line."
            )
    return title, attrs


def _trailing_attrs(
    title: str, path: Path, line: int, problems: list[str]
) -> tuple[str, dict[str, str]]:
    match = _ATTRS.search(title)
    if not match:
        return title.strip(), {}
    block = match.group(1)
    if _TYPOGRAPHIC_QUOTES.search(block) and any(_known_attribute(t) for t in block.split()):
        # An editor's “pytest -q”: to shlex they are letters, so verify=“true” was the command
        # `“true”`, failing only when the task had done its work.
        problems.append(
            f"{path}:{line}: the attribute block {{{block}}} has typographic quotes (“ ” ‘ ’), "
            'which are text to aca; write straight quotes, e.g. verify="pytest -q".'
        )
        block = block.translate(_STRAIGHT_QUOTES)  # read on as meant: its id, its dependencies
    try:
        tokens = _shell_words(block)
    except ValueError as exc:
        problems.append(
            f"{path}:{line}: cannot read the attribute block {{{match.group(1)}}}: {exc}; "
            'quote values with spaces, e.g. verify="pytest -q".'
        )
        return title[: match.start()].strip(), {}
    stray = [t for t in tokens if not (t.startswith("#") or "=" in t)]
    if not tokens or (stray and not any(_known_attribute(t) for t in tokens)):
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


# Other editors' checkbox marks (`[-]` cancelled, `[/]` started, `[>]` deferred, ...), and
# boxes mistyped (`[]`, `[  ]`), which Markdown leaves as text.
_OTHER_MARK = re.compile(r"^\[([^\w\s\]]|\s{2,}|)\](?:\s|$)")


def _titled(title: str, path: Path, line: int, problems: list[str]) -> str:
    """``title``, or a stand-in once its absence is noted: `- [ ]`, `- [ ] {#id}` (an item
    the agent would be asked to do nothing for). A mark aca does not know is noted too: a
    `- [-] cancelled` item would otherwise run, titled "[-] cancelled"."""
    if mark := _OTHER_MARK.match(title):
        problems.append(
            f"{path}:{line}: checkbox [{mark.group(1)}] is not one aca knows; write [ ] for a "
            "task to run, [x] for one done, or delete the line."
        )
    if title:
        return title
    problems.append(
        f"{path}:{line}: this task has no title; write what it is to do, or delete the line."
    )
    return "untitled"


def _known_attribute(token: str) -> bool:
    key, equals, _ = token.partition("=")
    return (token.startswith("#") and len(token) > 1) or (bool(equals) and key in ATTRIBUTE_KEYS)


def _shown(key: str, value: str) -> str:
    return f"#{value}" if key == "id" else f"{key}={shlex.quote(value)}"


# The attribute a user wrote, for a model field a validation error names.
_ATTRIBUTE_OF = {"estimated_complexity": "complexity", "dependencies": "depends_on"}


def _task_fields(
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


def _plan_attrs(
    attrs: dict[str, str], path: Path, line: int, problems: list[str]
) -> dict[str, Any]:
    extra = set(attrs) - {"verify"}
    if extra:
        problems.append(
            f"{path}:{line}: the plan title takes only a verify attribute (the default verify "
            f"command), not {', '.join(sorted(extra))}; put task attributes on items."
        )
    return {"verify": attrs["verify"]} if "verify" in attrs else {}


def arrow_references(title: str, base_dir: Path) -> tuple[str, list[str]]:
    """``Do it -> spec.md``: the title without its arrows, and the files they attach, in order
    (``-> a.md -> b.md`` and ``-> a.md, b.md`` attach both); else the title as it is and no
    file. `Rename getUser -> fetchUser` is a title, not a reference, and so is `Rename utils.py
    -> helpers.py` while helpers.py does not exist: a path on the left and a new name on the
    right are a rename or a move."""
    targets: list[str] = []
    while match := _ARROW.match(title):
        names = [name.strip() for name in match.group(2).split(",")]
        if not all(_PATH_LIKE.search(name) for name in names):
            break
        text = match.group(1) or ""
        before = text.split()
        if before and _PATH_LIKE.search(before[-1]) and not (base_dir / names[0]).exists():
            break
        title, targets = text.strip(), [*names, *targets]
    return title, targets


def _references(title: str, builder: TaskTreeBuilder, referrer: str):
    title, references = arrow_references(title, builder.base_dir)

    def replace(link: re.Match) -> str:
        target = linked_file(link)
        if target is None:
            return link.group(0)  # a URL stays as written: the agent needs it; an image too
        references.append(target)
        return link.group(2)

    title = _LINK.sub(replace, title)
    return title, builder.file_refs(references, referrer)


def linked_file(link: re.Match) -> str | None:
    """The file a ``[text](target)`` link attaches, as its path is written on disk (a link
    is percent-encoded: ``my%20notes.md``); None for an image, a URL or an anchor."""
    image, _, target = link.groups()
    if image or "://" in target or target.startswith(("#", "mailto:")):
        return None
    return unquote(target.split("#")[0])


def _explicit_ids(root: _Node, path: Path) -> list[str]:
    ids, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.line:
            # Its problems are noted when the task is built, not twice.
            _, attrs = _split_attrs(node.title, path, node.line, problems=[])
            if "id" in attrs:
                ids.append(attrs["id"])
        stack.extend(node.children)
    return ids


def _flatten_text(nodes: list[_Node]) -> list[str]:
    out: list[str] = []
    for node in nodes:
        prefix = "#" * node.level + " " if node.level else " " * max(node.indent, 0) + "- "
        out.append(prefix + node.title)
        out.extend(node.text)
        out.extend(_flatten_text(node.children))
    return out


def _join(lines: list[str]) -> str:
    """Dedented text with runs of blank lines collapsed."""
    import textwrap

    text = textwrap.dedent("\n".join(lines)).strip()
    return re.sub(r"\n{3,}", "\n\n", text)
