"""Building a task tree: ids, parent/child links and referenced files, shared by the loaders."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from pydantic import ValidationError

from aca_flows.errors import TaskFileError
from aca_flows.plan.models import FileRef, Task, TaskMetadata
from aca_flows.plan.source import read_text_file, refuse_private_key, resolve_inside

__all__ = ["TaskTreeBuilder", "bad_task_id", "slugify"]

_MAX_SLUG = 40


def slugify(title: str) -> str:
    """A short, readable id from a title: ``Create a script`` -> ``create-a-script``, ``Café``
    -> ``cafe`` (ids are ASCII: letters lose their accents rather than vanish)."""
    plain = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", plain.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > _MAX_SLUG:
            # Words end the id whole; a long one after a short start is cut instead, or
            # `write <200-char name>.txt` and its siblings were `write`, `write-2`, ...
            if len(slug) < _MAX_SLUG // 2:
                slug = candidate[:_MAX_SLUG]
            break
        slug = candidate
    return slug or "task"


def bad_task_id(task_id: str) -> str:
    """Why ``task_id`` was refused, with an id that would do: the model's pattern, quoted as
    it was, is a regex a user of ``{#café}`` cannot be expected to read."""
    return (
        f"task id '{task_id}' is not valid; use at most 80 ASCII letters, digits, '.', '_' "
        f"and '-', starting with a letter or digit, e.g. '{slugify(task_id)}'"
    )


def valid_task_id(task_id: str) -> bool:
    try:
        Task(id=task_id, title="check")
    except ValidationError:
        return False
    return True


class TaskTreeBuilder:
    """Collects tasks in file order. Explicit ids are kept; others are slugs of their titles,
    made unique with a ``-2``, ``-3`` suffix. Referenced files are read from ``base_dir``
    (default: the task file's folder). ``problems``: what the loader found wrong so far, each a
    whole message; the loader goes on past them, so one run reports them all."""

    def __init__(self, task_file: Path, base_dir: Path | None = None):
        self.task_file = task_file
        self.base_dir = base_dir or task_file.parent
        self.tasks: list[Task] = []
        self._by_id: dict[str, Task] = {}
        self._explicit_ids: set[str] = set()
        self._refused_ids: set[str] = set()
        # Every id given or taken, in lower case (``_fresh_id``), and the next suffix to try
        # for each slug: kept as they grow, where a look over all ids made a load O(n²).
        self._taken: set[str] = set()
        self._next_suffix: dict[str, int] = {}
        self.problems: list[str] = []

    def reserve_ids(self, ids: list[str]) -> None:
        """Explicit ids anywhere in the file win over generated ones. An id that is not valid
        is the loader's problem to note; a dependency on it is not noted again as unknown."""
        self._explicit_ids.update(ids)
        self._taken.update(i.lower() for i in ids)
        self._refused_ids.update(i for i in ids if not valid_task_id(i))

    def add(self, parent: Task | None, *, task_id: str | None = None, **fields) -> Task:
        metadata = fields.pop("metadata", None) or TaskMetadata()
        deps = fields.pop("dependencies", [])
        fields["dependencies"] = [d for d in deps if d not in self._refused_ids]
        task = Task(
            id=task_id or self._fresh_id(fields["title"]),
            parent_id=parent.id if parent else None,
            metadata=metadata,
            **fields,
        )
        self.tasks.append(task)
        self._by_id.setdefault(task.id, task)
        self._taken.add(task.id.lower())
        if parent is not None:
            parent.children = [*parent.children, task.id]
        return task

    def file_ref(self, reference: str, referrer: Path | str | None = None) -> FileRef:
        """``referrer`` names where the reference is in error messages (the task file's)."""
        referrer = referrer or self.task_file
        path = resolve_inside(self.base_dir, reference, referrer)
        try:
            content = read_text_file(path, "referenced file")
        except TaskFileError as exc:  # binary, empty, too big: said with the line that refers
            raise TaskFileError(f"{referrer}: {exc}") from None
        refuse_private_key(content, reference, referrer)
        return FileRef(path=reference, content=content)

    def file_refs(self, references: list[str], referrer: str) -> list[FileRef]:
        """The referenced files that can be read; one that cannot is a problem noted, not
        raised, so the rest of the task file is still checked. ``referrer``: the line or task
        that references them, as ``tasks.md:4``."""
        refs = []
        for reference in references:
            try:
                refs.append(self.file_ref(reference, referrer))
            except TaskFileError as exc:
                self.problems.append(str(exc))
        return refs

    def _fresh_id(self, title: str) -> str:
        base = slugify(title)
        # Not an explicit `{#Login}` in another case either: ids may name files.
        candidate, n = base, self._next_suffix.get(base, 2)
        if candidate.lower() in self._taken:
            candidate = f"{base}-{n}"
            while candidate.lower() in self._taken:
                n += 1
                candidate = f"{base}-{n}"
            self._next_suffix[base] = n + 1
        return candidate
