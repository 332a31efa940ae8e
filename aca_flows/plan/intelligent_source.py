"""What the intelligent parser reads, and the check that it lost nothing.

``read_parse_source`` reads a Markdown task file and the files it references (``item ->
spec.md``, ``[text](spec.md)``), with the same safety rules as the deterministic loader: paths
stay inside the task file's folder tree, a missing file is an error naming it.

``source_items`` lists what a reader would call the content of the file: every heading, list
item, paragraph and code block, with its line number. ``lost_items`` returns those that
appear nowhere in a plan: an item counts as kept when most of its words (``KEPT_WORD_SHARE``)
occur in the plan's names, titles, descriptions or context. Word-based rather than verbatim,
so a model may reformat (drop the ``**bold**``, join lines) without being reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from aca_flows.plan.builder import TaskTreeBuilder
from aca_flows.plan.markdown_loader import LINK, arrow_references, linked_file, markdown_lines
from aca_flows.plan.models import ExecutionPlan
from aca_flows.plan.source import read_text_file

__all__ = [
    "KEPT_WORD_SHARE",
    "ParseSource",
    "SourceItem",
    "lost_items",
    "read_parse_source",
    "source_items",
]

KEPT_WORD_SHARE = 0.75

# The same shapes the deterministic loader recognises (markdown_loader.py).
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d{1,9}[.)])\s+(?:\[[ xX]\]\s+)?(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_ATTRS = re.compile(r"\s*\{[^{}]*\}\s*$")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "the and for with that this are was were from into its has have had will not but all "  # noqa: SIM905
    "any can our your their there then than use each must should may".split()
)


@dataclass(frozen=True)
class ParseSource:
    """A task file as sent to the model: its text and the text of each file it references,
    keyed by the reference as written."""

    path: Path
    text: str
    references: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceItem:
    line: int
    kind: str  # "heading", "list item", "paragraph", "code block"
    text: str

    def __str__(self) -> str:
        text = " ".join(self.text.split())
        return f"line {self.line} ({self.kind}): {text[:100]}{'…' if len(text) > 100 else ''}"


def read_parse_source(path: Path) -> ParseSource:
    """The task file and every file it references, read safely (``TaskFileError`` if not)."""
    text = read_text_file(path)
    builder = TaskTreeBuilder(path)
    references: dict[str, str] = {}

    def add(reference: str) -> None:
        if reference not in references:
            references[reference] = builder.file_ref(reference).content or ""

    in_fence = False
    for raw in markdown_lines(text):
        if _FENCE.match(raw):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = raw.rstrip()
        item = _ITEM.match(line) or _HEADING.match(line)
        if item:
            title = _ATTRS.sub("", item.group(2))
            for target in arrow_references(title, builder.base_dir)[1]:  # as the loader reads
                add(target)
        for link in LINK.finditer(line):
            if (target := linked_file(link)) is not None:  # images, URLs, anchors: no file
                add(target)
    return ParseSource(path=path, text=text, references=references)


def source_items(text: str) -> list[SourceItem]:
    """Every heading, list item, paragraph and fenced code block of ``text``, in order."""
    items: list[SourceItem] = []
    block: list[str] = []
    block_start = 0
    fence_start: int | None = None

    def flush() -> None:
        if block:
            items.append(SourceItem(block_start, "paragraph", " ".join(block)))
            block.clear()

    for number, raw in enumerate(markdown_lines(text), start=1):
        line = raw.strip()
        if _FENCE.match(raw):
            if fence_start is None:
                flush()
                fence_start, block_start = number, number
            else:
                if block:
                    items.append(SourceItem(fence_start, "code block", "\n".join(block)))
                    block.clear()
                fence_start = None
            continue
        if fence_start is not None:
            block.append(line)
            continue
        if not line:
            flush()
        elif heading := _HEADING.match(raw):
            flush()
            items.append(SourceItem(number, "heading", heading.group(2)))
        elif item := _ITEM.match(raw):
            flush()
            items.append(SourceItem(number, "list item", item.group(2)))
        else:
            if not block:
                block_start = number
            block.append(line)
    flush()
    return items


def lost_items(plan: ExecutionPlan, items: list[SourceItem]) -> list[SourceItem]:
    """The items of ``items`` whose words the plan does not carry."""
    kept = _words(" ".join([plan.name, plan.description, *plan.context_hints]))
    for task in plan.tasks:
        kept |= _words(f"{task.title} {task.description}")
        for ref in task.metadata.file_refs:
            kept |= _words(ref.path)
    lost = []
    for item in items:
        words = _words(item.text)
        if words and len(words & kept) / len(words) < KEPT_WORD_SHARE:
            lost.append(item)
    return lost


def _words(text: str) -> set[str]:
    return {
        w
        for w in _WORD.findall(text.lower())
        if (len(w) > 2 or w.isdigit()) and w not in _STOPWORDS
    }
