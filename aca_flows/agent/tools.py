"""The tools an API-provider agent works with, confined to its task's worktree.

``read_file``, ``write_file``, ``edit_file``, ``list_files``, ``search``, ``run_command``,
``finish``, ``report_no_change``, ``ask_human`` and ``propose_subtasks``. Every path is
resolved inside the worktree: an absolute path, a ``..`` leading out, a symlink pointing out,
or the worktree's ``.git`` is refused with a message the model reads; a denied command
likewise. A refusal or a bad argument is a tool result with ``is_error``, never an exception:
the run continues and the model can correct itself. ``TaskTools`` is also the one place every
file write and command passes, where auditing or redaction can be added.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import regex

from aca_flows._files import readable
from aca_flows._threads import in_thread
from aca_flows.agent.commands import denied_by
from aca_flows.agent.file_glob import PatternTooSlow, glob_files
from aca_flows.agent.subtasks import (
    ProposedSubtask,
    SubtaskProposalError,
    check_proposals,
    parse_proposals,
)
from aca_flows.providers.base import UNPARSED_ARGUMENTS, ToolCall, ToolDefinition, ToolResult
from aca_flows.sandbox import Sandbox
from aca_flows.session.redact import REDACTED, redact_known
from aca_flows.settings import AgentSection

__all__ = ["TaskTools", "ToolRefused", "resolve_inside"]

MAX_LISTED_FILES = 1000
MAX_SEARCH_MATCHES = 200
# A search's whole time: a pattern that backtracks without end ("^(a+)+$") is stopped, not let
# hold the process (Python's own ``re`` cannot be stopped, nor let other threads run meanwhile).
SEARCH_SECONDS = 10.0
# The largest file edit_file rewrites and search reads: each reads the whole file into aca's
# own memory (a 1 GB file took 2.7 GB). A command (sed, grep) does it in the sandbox instead.
MAX_WHOLE_FILE_BYTES = 16 * 1024 * 1024


class ToolRefused(Exception):
    """A tool call the model must correct; the message is returned to it as an error result."""


def resolve_inside(root: Path, path: str) -> Path:
    """``path`` (relative to ``root``) resolved, symlinks followed; refused outside ``root``."""
    if not isinstance(path, str) or not path.strip():
        raise ToolRefused("a path is required, relative to the repository root (e.g. 'src/app.py')")
    if os.path.isabs(path) or path.startswith("~"):
        raise ToolRefused(
            f"refused: {path!r} is an absolute path. Use a path relative to the repository "
            "root; you can only work inside the repository."
        )
    root = root.resolve()
    try:
        target = (root / path).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError on Python 3.11)
        raise ToolRefused(
            f"refused: {path!r} cannot be resolved ({exc.__class__.__name__}: a "
            "symlink loop, or a path too long); use another path."
        ) from None
    if target != root and root not in target.parents:
        raise ToolRefused(
            f"refused: {path!r} leads outside the repository (through '..' or a symlink). "
            "You can only read and write files inside the repository."
        )
    relative = target.relative_to(root)
    if relative.parts[:1] == (".git",):
        raise ToolRefused(f"refused: {path!r} is inside .git; aca manages git itself.")
    return target


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_STR = {"type": "string"}
_SUBTASK_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "short id, e.g. 'tests'"},
        "title": _STR,
        "description": _STR,
        "dependencies": {
            "type": "array",
            "items": _STR,
            "description": "ids of other proposed subtasks (or existing tasks) to run first",
        },
        "verify": {"type": "string", "description": "command that must pass for this subtask"},
    },
    "required": ["id", "title"],
}

TOOL_DEFINITIONS: list[ToolDefinition] = [
    ToolDefinition(
        name="read_file",
        description="Read a text file of the repository. Paths are relative to its root.",
        input_schema=_schema({"path": _STR}, ["path"]),
    ),
    ToolDefinition(
        name="write_file",
        description="Create or overwrite a file with the given content (parent folders are made).",
        input_schema=_schema({"path": _STR, "content": _STR}, ["path", "content"]),
    ),
    ToolDefinition(
        name="edit_file",
        description=(
            "Replace old_string with new_string in a file. old_string must occur exactly once; "
            "include enough surrounding lines to make it unique."
        ),
        input_schema=_schema(
            {"path": _STR, "old_string": _STR, "new_string": _STR},
            ["path", "old_string", "new_string"],
        ),
    ),
    ToolDefinition(
        name="list_files",
        description="List files matching a glob pattern, e.g. '**/*.py' (default: all files).",
        input_schema=_schema({"pattern": _STR}, []),
    ),
    ToolDefinition(
        name="search",
        description=(
            "Search file contents with a regular expression; returns path:line: text. "
            "'glob' limits the files searched (default: all)."
        ),
        input_schema=_schema({"pattern": _STR, "glob": _STR}, ["pattern"]),
    ),
    ToolDefinition(
        name="run_command",
        description=(
            "Run a shell command in the repository root (tests, builds, linters). It runs in a "
            "sandbox: only the repository is writable (plus a private /tmp), HOME is empty, "
            "and the network is {network}. Output is capped and the command is killed after a "
            "timeout. Do not commit or push: aca commits your work itself."
        ),
        input_schema=_schema({"command": _STR}, ["command"]),
    ),
    ToolDefinition(
        name="finish",
        description="Call when the task is done, with a short summary of what you changed.",
        input_schema=_schema({"summary": _STR}, ["summary"]),
    ),
    ToolDefinition(
        name="report_no_change",
        description=(
            "Call instead of finish when the task needs no change (e.g. it is already done), "
            "with the reason. Leave every file as it was; aca still runs the verify command."
        ),
        input_schema=_schema({"reason": _STR}, ["reason"]),
    ),
    ToolDefinition(
        name="ask_human",
        description=(
            "Call instead of finish when you cannot go on without a person's decision (the "
            "task is ambiguous, contradicts the code, or needs something only a person can "
            "give), with your question. Your round ends; nothing is committed; a person "
            "answers with a hint for another try, or skips or fails the task."
        ),
        input_schema=_schema({"question": _STR}, ["question"]),
    ),
    ToolDefinition(
        name="propose_subtasks",
        description=(
            "Propose follow-up subtasks for work too large to finish now. They run after your "
            "work is committed. Still call finish afterwards."
        ),
        input_schema=_schema(
            {"subtasks": {"type": "array", "items": _SUBTASK_SCHEMA}}, ["subtasks"]
        ),
    ),
]


class TaskTools:
    """The tools of one task, bound to its worktree. Keeps ``summary``, ``no_change_reason``,
    ``human_question`` and ``proposed_subtasks``."""

    def __init__(
        self,
        root: Path,
        settings: AgentSection,
        *,
        existing_task_ids: set[str] | None = None,
        plan_check: Callable[[list[ProposedSubtask]], list[str]] | None = None,
        sandbox: Sandbox | None = None,
    ):
        self.root = Path(root)
        self.settings = settings
        # Every command of this task runs here; made once, before the agent runs anything.
        self.sandbox = sandbox or Sandbox.for_worktree(self.root)
        self.existing_task_ids = existing_task_ids or set()
        # Problems the plan would have with proposals (a subtask that could never start).
        self.plan_check = plan_check
        self.finished = False
        self.summary = ""
        self.no_change_reason: str | None = None
        self.human_question: str | None = None
        self.proposed_subtasks: list[ProposedSubtask] = []

    def definitions(self) -> list[ToolDefinition]:
        """The tools, ``run_command`` telling the truth about this sandbox's network."""
        network = "on" if self.sandbox.network or self.sandbox.mounts is None else "off"
        return [
            d.model_copy(update={"description": d.description.format(network=network)})
            if d.name == "run_command"
            else d
            for d in TOOL_DEFINITIONS
        ]

    async def call(self, call: ToolCall) -> ToolResult:
        """Run one tool call; refusals and mistakes come back as ``is_error`` results."""
        handler = getattr(self, f"_tool_{call.name}", None)
        if handler is None:
            names = ", ".join(d.name for d in TOOL_DEFINITIONS)
            return self._error(call, f"unknown tool {call.name!r}; the tools are: {names}")
        unparsed = call.arguments.get(UNPARSED_ARGUMENTS)
        if unparsed is not None:  # the provider could not read them (openai_api, ollama_api)
            return self._error(
                call,
                f"the arguments of {call.name} were not a JSON object ({str(unparsed)[:200]!r}): "
                "call it again with its arguments as one JSON object",
            )
        mistyped = _mistyped_argument(call)
        if mistyped is not None:  # before anything runs: a write had emptied its file
            return self._error(call, f"bad arguments for {call.name}: {mistyped}")
        try:
            content = await handler(**call.arguments)
        except ToolRefused as exc:
            return self._error(call, str(exc))
        except TypeError as exc:
            return self._error(call, f"bad arguments for {call.name}: {exc}")
        except (OSError, UnicodeDecodeError) as exc:
            return self._error(call, f"{call.name} failed: {exc}")
        except ValueError as exc:  # a NUL byte in a path or a command
            return self._error(call, f"bad arguments for {call.name}: {exc}")
        return ToolResult(tool_call_id=call.id, content=readable(content))

    @staticmethod
    def _error(call: ToolCall, message: str) -> ToolResult:
        return ToolResult(tool_call_id=call.id, content=readable(message), is_error=True)

    async def _tool_read_file(self, path: str) -> str:
        target = resolve_inside(self.root, path)
        if not target.is_file():
            raise ToolRefused(f"{path} does not exist or is not a file; use list_files to look.")
        limit = self.settings.command_output_limit_bytes
        with target.open(encoding="utf-8") as file:
            text = file.read(limit + 1)  # what is shown, not the whole file
        if len(text) <= limit:
            return text
        rest = target.stat().st_size - len(text[:limit].encode())
        return text[:limit] + f"\n[... {rest} more bytes not shown]"  # redact.py knows it

    async def _tool_write_file(self, path: str, content: str) -> str:
        target = resolve_inside(self.root, path)
        if target.is_dir():
            raise ToolRefused(f"{path} is a folder; give a file path.")
        target.parent.mkdir(parents=True, exist_ok=True)
        if REDACTED in content:  # off the loop: other tasks go on while a big file is read
            await in_thread(lambda: _refuse_losing_hidden_secrets(_text_of(target), content, path))
        content = _with_ending(content, _line_ending(_head_of(target)))  # the file's, kept
        _write_regular_file(target, path, content)
        return f"wrote {len(content)} characters to {path}"

    async def _tool_edit_file(self, path: str, old_string: str, new_string: str) -> str:
        target = resolve_inside(self.root, path)
        if not target.is_file():
            raise ToolRefused(f"{path} does not exist; use write_file to create it.")
        if not old_string:
            raise ToolRefused("old_string is empty; give the exact text to replace.")
        _refuse_too_large(target, path, "edit_file rewrites")
        with target.open(encoding="utf-8", newline="") as file:  # its line endings as they are
            text = file.read()
        # A file of CRLF (or CR) lines is shown to the agent with LF (read_file): its edit
        # keeps the file's endings, the lines it adds too.
        ending = _line_ending(text)
        if old_string not in text:
            old_string = _with_ending(old_string, ending)
        new_string = _with_ending(new_string, ending)
        count = text.count(old_string)
        if count != 1:
            where = "does not occur" if count == 0 else f"occurs {count} times"
            raise ToolRefused(
                f"old_string {where} in {path}; it must match exactly once. Read the file "
                "and include more surrounding text."
            )
        edited = text.replace(old_string, new_string, 1)
        await in_thread(_refuse_losing_hidden_secrets, text, edited, path)
        _write_regular_file(target, path, edited)
        return f"edited {path}"

    async def _tool_list_files(self, pattern: str = "**/*") -> str:
        files = await in_thread(self._glob, pattern)  # other tasks go on meanwhile
        shown = files[:MAX_LISTED_FILES]
        more = f"\n[{len(files) - len(shown)} more not shown]" if len(files) > len(shown) else ""
        return ("\n".join(shown) or f"no files match {pattern!r}") + more

    async def _tool_search(self, pattern: str, glob: str = "**/*") -> str:
        try:
            compiled = regex.compile(pattern)
        except regex.error as exc:
            raise ToolRefused(f"invalid regular expression {pattern!r}: {exc}") from None
        # In a thread, the match letting go of the interpreter: other tasks go on meanwhile.
        return await in_thread(self._search, compiled, pattern, glob)

    def _search(self, compiled: regex.Pattern, pattern: str, glob: str) -> str:
        matches: list[str] = []
        deadline = time.monotonic() + SEARCH_SECONDS
        for relative in self._glob(glob):
            try:
                file = self.root / relative
                if file.stat().st_size > MAX_WHOLE_FILE_BYTES:
                    continue  # like a binary one: run_command's grep searches it
                lines = file.read_text(encoding="utf-8").splitlines()
            except (UnicodeDecodeError, OSError):
                continue  # binary or unreadable files are not searched
            for number, line in enumerate(lines, start=1):
                try:
                    found = compiled.search(
                        line, concurrent=True, timeout=max(deadline - time.monotonic(), 0.001)
                    )
                except TimeoutError:
                    raise ToolRefused(
                        f"search {pattern!r} stopped after {SEARCH_SECONDS:g} s (at {relative}:"
                        f"{number}); the pattern backtracks too much: simplify it."
                    ) from None
                if found:
                    matches.append(f"{relative}:{number}: {line[:300]}")
                    if len(matches) >= MAX_SEARCH_MATCHES:
                        return "\n".join(matches) + "\n[more matches not shown; narrow the search]"
        return "\n".join(matches) or f"no matches for {pattern!r}"

    async def _tool_run_command(self, command: str) -> str:
        if not isinstance(command, str) or not command.strip():
            raise ToolRefused("command is empty")
        denied = denied_by(command, self.settings.deny_commands)
        if denied:
            raise ToolRefused(
                f"refused: commands using {denied!r} are not allowed in aca tasks. "
                "Work locally inside the repository; aca commits and merges your work itself."
            )
        result = await self.sandbox.run(
            command,
            timeout_seconds=self.settings.command_timeout_seconds,
            output_limit_bytes=self.settings.command_output_limit_bytes,
        )
        return result.describe()

    async def _tool_finish(self, summary: str = "") -> str:
        self.finished = True
        self.summary = str(summary).strip()
        self.no_change_reason = None
        return "finished; your work will now be verified and committed"

    async def _tool_report_no_change(self, reason: str = "") -> str:
        reason = str(reason).strip()
        if not reason:
            raise ToolRefused("give the reason why the task needs no change.")
        self.finished = True
        self.summary = reason
        self.no_change_reason = reason
        return "recorded: no change needed; aca checks that nothing changed and runs verify"

    async def _tool_ask_human(self, question: str = "") -> str:
        question = " ".join(str(question).split())
        if not question:
            raise ToolRefused("give the question a person should answer.")
        self.finished = True
        self.summary = question
        self.human_question = question
        return "recorded: your question goes to a person; stop here"

    async def _tool_propose_subtasks(self, subtasks: Any) -> str:
        if isinstance(subtasks, str):  # some models send the list as a JSON string
            try:
                subtasks = json.loads(subtasks)
            except json.JSONDecodeError as exc:
                raise ToolRefused(f"subtasks is not a JSON list: {exc}") from None
        try:
            proposals = parse_proposals(subtasks)
        except SubtaskProposalError as exc:
            raise ToolRefused(str(exc)) from None
        combined = [*self.proposed_subtasks, *proposals]
        problems = check_proposals(combined, existing_ids=self.existing_task_ids)
        if not problems and self.plan_check is not None:
            problems = self.plan_check(combined)
        if problems:
            raise ToolRefused(str(SubtaskProposalError(problems)))
        self.proposed_subtasks = combined
        ids = ", ".join(p.id for p in proposals)
        return f"recorded {len(proposals)} subtask(s): {ids}. Call finish when your part is done."

    def _glob(self, pattern: str) -> list[str]:
        if not isinstance(pattern, str) or not pattern.strip():
            pattern = "**/*"
        if os.path.isabs(pattern) or ".." in Path(pattern).parts:
            raise ToolRefused(
                f"refused: {pattern!r} leaves the repository; use a pattern relative to its root."
            )
        try:
            return glob_files(self.root, pattern)
        except re.error as exc:
            raise ToolRefused(f"invalid pattern {pattern!r}: {exc}") from None
        except PatternTooSlow as exc:
            raise ToolRefused(f"{exc}; narrow the pattern, or use run_command (find).") from None


def _refuse_losing_hidden_secrets(old: str, new: str, shown: str) -> None:
    """The model reads a file's credentials as ``[REDACTED]`` (``redact_known``): a write that
    puts the marker where one stood would lose the secret, and commit the marker."""
    if new.count(REDACTED) <= old.count(REDACTED):
        return
    if redact_known(old) != old:  # it holds one, as the model was shown it (wrapped too)
        raise ToolRefused(
            f"{shown} holds a secret aca keeps from you, shown to you as {REDACTED}; this "
            f"write puts {REDACTED} in its place and would lose it. Leave the lines that hold "
            "it as they are: change the file with edit_file, around them."
        )


def _refuse_too_large(target: Path, shown: str, what: str) -> None:
    size = target.stat().st_size
    if size > MAX_WHOLE_FILE_BYTES:
        raise ToolRefused(
            f"{shown} has {size:,} bytes, more than {what} ({MAX_WHOLE_FILE_BYTES:,}); change it "
            "with run_command (sed, a script) instead."
        )


# Arguments taken as they come, as ever: a summary or a reason as a list of points.
_TAKEN_AS_THEY_COME = frozenset({("finish", "summary"), ("report_no_change", "reason")})


def _mistyped_argument(call: ToolCall) -> str | None:
    """Which argument of ``call`` is not the string its tool's schema gives, said for the
    model before anything runs (a JSON file's text sent as an object emptied the file; a
    command sent as a list was "empty"); ``None`` when none."""
    definition = next((d for d in TOOL_DEFINITIONS if d.name == call.name), None)
    properties = definition.input_schema.get("properties", {}) if definition else {}
    for name, value in call.arguments.items():
        if (call.name, name) in _TAKEN_AS_THEY_COME:
            continue
        if properties.get(name, {}).get("type") == "string" and not isinstance(value, str):
            shown = {dict: "an object", list: "an array", type(None): "null"}.get(
                type(value), type(value).__name__
            )
            hint = " (the file's text, as one string)" if name == "content" else ""
            return f"{name} must be a string{hint}, not {shown}"
    return None


def _line_ending(text: str) -> str:
    """The file's one line ending: CRLF or CR when every line ends so, else LF (a file of
    mixed endings, or one stray CR, gets LF lines as it was given them)."""
    rest = text.replace("\r\n", "")
    if len(rest) < len(text) and "\n" not in rest and "\r" not in rest:
        return "\r\n"
    if "\n" not in text and text.count("\r") > 1:
        return "\r"
    return "\n"


def _with_ending(text: str, ending: str) -> str:
    """``text``'s LF lines ending in ``ending``; as it is when it holds a CR of its own."""
    return text if ending == "\n" or "\r" in text else text.replace("\n", ending)


def _head_of(target: Path) -> str:
    """The first 8 KB of the regular file at ``target`` (empty when there is none): what
    ``_line_ending`` reads of a file a write replaces."""
    try:  # never waits on a FIFO, never follows a link
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        # A CR last may be half a CRLF the 8 KB cut through.
        return file.read(8192).decode("utf-8", "replace").removesuffix("\r")


def _text_of(target: Path) -> str:
    """A regular file's text as it is now, to ``MAX_WHOLE_FILE_BYTES`` (no tool shows the
    model more of one: a 1 GB file was read whole, in aca's memory); empty when there is none
    to read."""
    try:
        if target.is_file() and not target.is_symlink():
            with target.open(encoding="utf-8", errors="replace") as file:
                return file.read(MAX_WHOLE_FILE_BYTES)
    except OSError:
        pass
    return ""


def _write_regular_file(target: Path, shown: str, text: str) -> None:
    """Write ``text`` to ``target``, a regular file or a new one. A FIFO an agent made would
    block the open for ever (and the whole run with it), a device would take the text: both
    are refused, the open never waits, and a symlink put there since is not followed."""
    data = text.encode("utf-8")  # first: text it cannot write leaves the file as it was
    flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW
    try:
        fd = os.open(target, flags, 0o644)
    except OSError as exc:
        raise ToolRefused(
            f"{shown} cannot be written ({exc.strerror}); give a regular file."
        ) from None
    with os.fdopen(fd, "wb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ToolRefused(f"{shown} is not a regular file; aca writes regular files only.")
        handle.truncate(0)
        handle.write(data)
