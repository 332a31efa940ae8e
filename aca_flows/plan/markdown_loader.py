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

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aca_flows.plan.builder import TaskTreeBuilder
from aca_flows.plan.markdown_attributes import (
    ATTRIBUTE_BLOCK,
    is_attribute,
    plan_attrs,
    split_attrs,
    task_fields,
)
from aca_flows.plan.models import ExecutionPlan, Task, TaskStatus
from aca_flows.plan.validate import check_plan

__all__ = ["LINK", "arrow_references", "linked_file", "load_markdown", "markdown_lines"]

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# A checkbox may end the line: `- [ ]` is an item without a title, not the title "[ ]".
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d{1,9}[.)])\s+(?:\[([ xX])\](?:\s+|$))?(.*)$")
# A setext heading's underline (CommonMark: up to 3 spaces, then only = or only -).
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_COMMENT = re.compile(r"^\s*<!--")
# A thematic break (`* * *`, `- - -`): a separator, though it starts like a list item.
_BREAK = re.compile(r"^ {0,3}([-*_])(?:\s*\1){2,}\s*$")
# `- [ ] -> spec.md`: no title; `-> a.md, b.md`: two files
_ARROW = re.compile(r"^(?:(.*?)\s+)?->\s+(\S+(?:\s*,\s*\S+)*)\s*$")
# What a `-> target` must look like to be a file: a folder in it, or a file extension.
_PATH_LIKE = re.compile(r"^[^`'\"]*(/|\.[A-Za-z0-9]+$)")
# A link ``[text](target)``, its target in angle brackets too (CommonMark's way to write a
# path with spaces), and a title after it (``[spec](spec.md "The spec")``): those two forms
# attached nothing, silently, even for a file that did not exist.
# Neither its text nor its target runs past a "[": a line of "[" or "[x](" took each of its
# starts to the line's end (40 KB of them, 10 s).
LINK = re.compile(
    r"(!?)\[([^\[\]]+)\]\(\s*(<[^>\n]+>|[^)\s\[]+)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
_BACKTICKS = re.compile(r"`+")


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

    plan_fields: dict[str, Any] = {"name": path.stem, "description": _join(_prose(root))}
    headings = [n for n in tops if not n.is_item]
    if len(headings) == 1 and headings[0].level == 1 and not any(n.is_item for n in tops):
        title_node = headings[0]
        title, attrs = split_attrs(title_node.title, path, title_node.line, builder.problems)
        plan_fields["name"] = title or path.stem  # `# {verify=...}`: no words to name it
        plan_fields["description"] = _join(_prose(root) + _prose(title_node))
        plan_fields.update(plan_attrs(attrs, path, title_node.line, builder.problems))
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
        block = ATTRIBUTE_BLOCK.search(node.title)
        if block and any(is_attribute(t) for t in block.group(1).split()):
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
        body = _join(_prose(root) + _prose(first_heading) + _flatten_text(rest))
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
    title, attrs = split_attrs(title, path, line, builder.problems)
    title = _titled(title, path, line, builder.problems)
    fields = task_fields(attrs, path, line, builder.problems)
    builder.add(None, title=title[:200], description=body, **fields)
    return ExecutionPlan(name=title[:200], tasks=builder.tasks)


def _add_node(node: _Node, parent: Task | None, builder: TaskTreeBuilder, hints: list[str]):
    if not node.is_item and not node.has_items():
        if split_attrs(node.title, builder.task_file, node.line, problems=[])[1]:
            builder.problems.append(  # `## Deploy {depends_on=build}` over prose: no task
                f"{builder.task_file}:{node.line}: heading '{node.title}' has attributes but no "
                "list item under it, so it is context for every task, not a task; write its "
                f"work as a list item under it (`- {node.title}`)."
            )
        hints.append(_join([f"{node.title}:", *_prose(node), *_flatten_text(node.children)]))
        return
    title, attrs = split_attrs(node.title, builder.task_file, node.line, builder.problems)
    _refuse_attributes_in_text(node, builder)
    title, refs = _references(title, builder, f"{builder.task_file}:{node.line}")
    title = _titled(title, builder.task_file, node.line, builder.problems)
    fields = task_fields(attrs, builder.task_file, node.line, builder.problems)
    task_id = fields.pop("task_id", None)
    if node.checked and _all_checked(node):  # a group is done when its tasks are
        fields["status"] = TaskStatus(state="completed")
    fields["metadata"].file_refs = refs
    description = _join(_prose(node))
    task = builder.add(parent, task_id=task_id, title=title, description=description, **fields)
    for child in node.children:
        _add_node(child, task, builder, hints)


def _refuse_attributes_in_text(node: _Node, builder: TaskTreeBuilder) -> None:
    """`{depends_on=db}` under its item, alone or ending a wrapped title's second line, is
    description text: noted, not lost."""
    in_fence = False
    for text in node.text:
        in_fence = in_fence != bool(_FENCE.match(text))  # a code block may show attributes
        block = not in_fence and ATTRIBUTE_BLOCK.search(text)
        if block and any(is_attribute(t) for t in block.group(1).split()):
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
    for number, raw in enumerate(markdown_lines(text), start=1):
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

    # A link in a code span is text the task is about (`[Download](download.md)`), no file.
    pieces, at = [], 0
    for start, end in _code_spans(title):
        pieces += [LINK.sub(replace, title[at:start]), title[start:end]]
        at = end
    title = "".join([*pieces, LINK.sub(replace, title[at:])])
    return title, builder.file_refs(references, referrer)


_LINE_END = re.compile(r"\r\n|\r|\n")


def markdown_lines(text: str) -> list[str]:
    """``text``'s lines as Markdown ends them: at LF, CR or CRLF only. ``splitlines`` ends
    them at U+2028, U+0085 and form feeds too: one item as an editor shows it ran as two
    tasks (the second hidden on its line), a paragraph as a task."""
    lines = _LINE_END.split(text)
    return lines[:-1] if lines and not lines[-1] else lines


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text``'s code spans are: a run of backticks up to the next run of as many
    (CommonMark's rule; a run without one is text). Found from the runs, in linear time: a
    pattern took a line of backticks to its end from each of them (40 KB, 15 s)."""
    runs = [(m.start(), m.end()) for m in _BACKTICKS.finditer(text)]
    by_length: dict[int, list[int]] = {}
    for index, (start, end) in enumerate(runs):
        by_length.setdefault(end - start, []).append(index)
    spans, after = [], 0  # the run the next span may open at
    for index, (start, end) in enumerate(runs):
        if index < after:
            continue
        same = by_length[end - start]
        at = bisect.bisect_right(same, index)
        if at < len(same):  # the closing run
            closing = same[at]
            spans.append((start, runs[closing][1]))
            after = closing + 1
    return spans


def linked_file(link: re.Match) -> str | None:
    """The file a ``[text](target)`` link attaches, as its path is written on disk (a link
    is percent-encoded: ``my%20notes.md``); None for an image, a URL or an anchor."""
    image, _, target = link.groups()
    if target.startswith("<"):  # <my notes.md>: written as it is on disk
        target = target[1:-1].strip()
    if image or "://" in target or target.startswith(("#", "mailto:")):
        return None
    return unquote(target.split("#")[0])


def _explicit_ids(root: _Node, path: Path) -> list[str]:
    ids, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.line:
            # Its problems are noted when the task is built, not twice.
            _, attrs = split_attrs(node.title, path, node.line, problems=[])
            if "id" in attrs:
                ids.append(attrs["id"])
        stack.extend(node.children)
    return ids


def _flatten_text(nodes: list[_Node]) -> list[str]:
    out: list[str] = []
    for node in nodes:
        prefix = "#" * node.level + " " if node.level else " " * max(node.indent, 0) + "- "
        out.append(prefix + node.title)
        out.extend(_prose(node))
        out.extend(_flatten_text(node.children))
    return out


_INLINE_COMMENT = re.compile(r"<!--.*?-->")


def _prose(node: _Node) -> list[str]:
    """The node's text without what HTML comments hold (a note, an item switched off: no
    instruction for the agent that reads the description) nor front matter. Text beside a
    comment on its line stays (`<!-- reviewed --> Use the v2 API.`); code stays as written."""
    prose = []
    for i, text in enumerate(node.text):
        if i in node.switched_off:
            indent = text[: len(text) - len(text.lstrip())]  # the line's, for the dedent
            if text.lstrip().startswith("<!--"):  # opens here; one left open runs on below
                text = _INLINE_COMMENT.sub("", text).split("<!--", 1)[0]
            elif "-->" in text:  # closes one opened above
                text = text.split("-->", 1)[1]
            else:  # inside a comment, or front matter
                continue
            if not text.strip():
                continue
            text = indent + text.strip()
        if i not in node.code:
            text = _INLINE_COMMENT.sub("", text)
        prose.append(text)
    return prose


def _join(lines: list[str]) -> str:
    """Dedented text with runs of blank lines collapsed."""
    import textwrap

    text = textwrap.dedent("\n".join(lines)).strip()
    return re.sub(r"\n{3,}", "\n\n", text)
