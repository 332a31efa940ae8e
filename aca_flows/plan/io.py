"""Loading any task file or execution plan, and serialising plans for ``--dump-plan``.

``load_task_file`` picks the loader by suffix: Markdown (``.md``), TOML task files (``.toml``)
and execution plans (``.json``, or ``.toml`` with a top-level ``schema_version``); a file
without one is Markdown or TOML as its first line says (``load_task_text``);
``load_task_text`` reads the same Markdown or TOML given as text (the flow's ``plan_text``,
built by a program rather than saved to a file). Every plan
returned has passed ``check_plan``. ``plan_to_text`` and ``load_execution_plan`` round-trip
exactly: ``load(dump(plan)) == plan``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aca_flows.errors import TaskFileError
from aca_flows.plan.markdown_loader import load_markdown
from aca_flows.plan.models import ExecutionPlan
from aca_flows.plan.source import read_text_file, require_file
from aca_flows.plan.toml_loader import load_toml_task_file, pydantic_problems
from aca_flows.plan.validate import check_plan

__all__ = [
    "MARKDOWN_SUFFIXES",
    "PLAN_FORMATS",
    "PLAN_SUFFIXES",
    "load_execution_plan",
    "load_task_file",
    "load_task_text",
    "plan_to_text",
]

# "": a file without a suffix (`TODO`), Markdown unless its first line is TOML (load_task_file).
MARKDOWN_SUFFIXES = (".md", ".markdown", ".txt", "")
PLAN_SUFFIXES = (".json", ".toml")
PLAN_FORMATS = ("toml", "markdown")
# A TOML task file starts (after comments) with a table header or a key: ``[plan]``,
# ``[[tasks]]``, ``name = ...``. Markdown starts with a heading (a TOML comment), a list item
# or prose.
_TOML_START = re.compile(r"^\s*(\[\[?\s*[\w.\-\" ]+\s*\]\]?\s*(#.*)?$|[\w.\-\"]+\s*=)")


@contextmanager
def _not_too_deep(source: object) -> Iterator[None]:
    """Lists, tables or headings nested thousands deep reach Python's recursion limit in the
    parsers and checks: an error naming the file, not a traceback."""
    try:
        yield
    except RecursionError:
        raise TaskFileError(
            f"{source}: nested too deeply for aca to read (lists, tables or subtasks hundreds "
            "of levels down); flatten it."
        ) from None


def load_task_file(path: Path) -> ExecutionPlan:
    """A Markdown or TOML task file, or a dumped execution plan, as a validated plan."""
    with _not_too_deep(path):
        return _load_task_file(path)


def _load_task_file(path: Path) -> ExecutionPlan:
    require_file(path)
    suffix = path.suffix.lower()
    if not suffix:  # `TODO`, `tasks`: the original aca read such a file as a task list
        return load_task_text(read_text_file(path), path.parent, source=str(path))
    if suffix not in MARKDOWN_SUFFIXES + PLAN_SUFFIXES:
        raise TaskFileError(
            f"{path}: unknown task file type '{suffix}'; use a Markdown (.md), "
            "TOML (.toml) or JSON plan (.json) file."
        )
    text = read_text_file(path)
    if suffix in MARKDOWN_SUFFIXES:
        return load_markdown(path, text)
    data = _parse_structured(path, text)
    _refuse_the_originals_plan(path, data)
    if suffix == ".json" or "schema_version" in data:
        return _execution_plan(path, data)
    return load_toml_task_file(path, data)


def load_task_text(
    text: str, base_dir: Path, plan_format: str | None = None, source: str = "plan_text"
) -> ExecutionPlan:
    """Markdown or TOML task-file text as a validated plan; files it references are read from
    ``base_dir`` (never outside it). ``plan_format`` is ``"toml"`` or ``"markdown"``; left out,
    it is told from the text: TOML when its first line that is neither blank nor a comment is
    a ``[table]`` or a ``key = value``. ``source`` names the text in error messages."""
    with _not_too_deep(source):
        return _load_task_text(text, base_dir, plan_format, source)


def _load_task_text(
    text: str, base_dir: Path, plan_format: str | None, source: str
) -> ExecutionPlan:
    guessed = plan_format is None
    if plan_format is None:
        plan_format = "toml" if _looks_like_toml(text) else "markdown"
    if plan_format not in PLAN_FORMATS:
        raise TaskFileError(
            f"plan_format {plan_format!r} is not known; use 'toml' or 'markdown', or leave it "
            "out to have it told from the text."
        )
    if not text.strip():
        raise TaskFileError(f"{source} is empty; write at least one task in it.")
    path = Path(source)
    if plan_format == "markdown":
        return load_markdown(path, text, base_dir)
    try:
        data = _parse_structured(path, text)
    except TaskFileError as exc:
        if not guessed:
            raise
        # `Goal = ship v2` on the first line of a task list: told from the text, not named.
        raise TaskFileError(
            f"{exc} It was read as TOML because its first line looks like `key = value`; "
            "a Markdown task list is read as one when named .md."
        ) from None
    if "schema_version" in data:
        return _execution_plan(path, data)
    return load_toml_task_file(path, data, base_dir)


def _looks_like_toml(text: str) -> bool:
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return bool(_TOML_START.match(line))
    return False


def load_execution_plan(path: Path) -> ExecutionPlan:
    """A plan written by ``--dump-plan`` (and perhaps edited since), validated."""
    with _not_too_deep(path):
        return _load_execution_plan(path)


def _load_execution_plan(path: Path) -> ExecutionPlan:
    require_file(path, "execution plan")
    if path.suffix.lower() not in PLAN_SUFFIXES:
        raise TaskFileError(
            f"{path}: an execution plan is a .json or .toml file written by --dump-plan; "
            "to load a Markdown task file use --task-file."
        )
    data = _parse_structured(path, read_text_file(path, "execution plan"))
    _refuse_the_originals_plan(path, data)
    if "schema_version" not in data:
        raise TaskFileError(
            f"{path}: not an execution plan (it has no schema_version); "
            "if it is a task file, load it with --task-file."
        )
    return _execution_plan(path, data)


def _refuse_the_originals_plan(path: Path, data: dict[str, Any]) -> None:
    # The original aca's execution plan (``task_specs``, ``execution_mode``): its task files
    # load here, its plans do not; each of the other messages sent the reader to the other.
    if "task_specs" in data and "schema_version" not in data:
        raise TaskFileError(
            f"{path}: an execution plan of the original aca (task_specs), which this aca does "
            "not read; run the task file it was made from (`aca run TASKS.md`), or review "
            "its plan first with `aca run TASKS.md --dry-run --dump-plan plan.json`."
        )


def plan_to_text(plan: ExecutionPlan, suffix: str) -> str:
    """The plan as JSON or TOML text. TOML has no null, so unset fields are left out."""
    data = plan.model_dump(mode="json")
    if suffix.lower() == ".json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if suffix.lower() == ".toml":
        import tomli_w

        return tomli_w.dumps(_without_none(data), multiline_strings=True)
    raise TaskFileError(
        f"cannot write a plan as '{suffix or '(none)'}'; name the file .json or .toml."
    )


def _execution_plan(path: Path, data: dict[str, Any]) -> ExecutionPlan:
    _check_schema_version(path, data.get("schema_version"))
    try:
        plan = ExecutionPlan.model_validate(data)
    except ValidationError as exc:
        raise TaskFileError(
            f"{path}: {pydantic_problems(exc)}. `aca plan schema` prints the plan format."
        ) from None
    if not plan.tasks:  # a run of it would make a session and a branch, and do nothing
        raise TaskFileError(
            f"{path}: the plan has no tasks; add one, or dump the plan of the task file again."
        )
    return check_plan(plan, str(path), run_states=True)


def _check_schema_version(path: Path, version: Any) -> None:
    # A hand-edited "1" (a string) must not read as "'1' is not supported (this aca reads 1)".
    if version is None:
        problem = "has no schema_version"
    elif type(version) is not int:
        # As the file spells it (1.0, true): Python's repr said "True", "1.0 is not a number".
        problem = f"schema_version {json.dumps(version)} is not the whole number 1"
    elif version != 1:
        problem = f"schema_version {version} is not supported"
    else:
        return
    raise TaskFileError(
        f"{path}: plan {problem} (this aca reads 1); dump the plan again with this version of aca."
    )


# What a JSON document that is not an object holds, as its reader would call it.
_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def _parse_structured(path: Path, text: str) -> dict[str, Any]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskFileError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. "
                "Fix the syntax there."
            ) from None
        except ValueError as exc:  # an integer of thousands of digits
            raise TaskFileError(f"{path}: a number too long for aca to read ({exc}).") from None
        if not isinstance(data, dict):
            raise TaskFileError(
                f"{path}: a plan must be a JSON object ({{...}}, as --dump-plan writes it), not "
                f"{_JSON_KINDS.get(type(data), 'a value')}."
            )
        return data
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaskFileError(f"{path}: invalid TOML: {exc}. Fix the syntax there.") from None


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
