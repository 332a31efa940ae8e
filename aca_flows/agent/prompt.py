"""The prompt of a task: a system prompt for how to work, a first message for what to do.

The first message holds, in order: the task's title and description; the plan's context
hints; context inherited from ancestor tasks (root first); the summaries and changed files of
the tasks it depends on; the text of its referenced files; its verify command. The system
prompt says how to work with aca (tools or Claude Code) and ends with the plan's
``append_system_prompt``, so the user's instructions come last and win.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field

from aca_flows.agent.needs_human import NEEDS_HUMAN_MARKER
from aca_flows.agent.no_change import NO_CHANGE_MARKER
from aca_flows.agent.subtasks import SUBTASK_BLOCK_HELP
from aca_flows.plan.models import ExecutionPlan, Task, verify_command_for

__all__ = [
    "DependencyContext",
    "ancestors_of",
    "build_system_prompt",
    "build_task_prompt",
]

REFERENCED_FILE_LIMIT = 20_000

_COMMON_RULES = """\
You are aca, an autonomous coding agent. You work on one task in a git repository that is
your current folder; other tasks work in parallel in their own copies. Rules:
- Change only what the task needs; keep the project's style; leave no debugging leftovers.
- Do not commit, push, or change git branches: aca commits and merges your work.
- Stay inside the repository; no network access is needed or allowed.
- When a verify command is given, make it pass; aca runs it after you finish and sends its
  output back to you if it fails."""

_TOOLS_RULES = """\
Use the tools: read_file, list_files and search to look around; write_file and edit_file to
change files; run_command to run tests or builds. Paths are relative to the repository root.
If the work is too large for one task, do a coherent part and use propose_subtasks for the
rest. When you are done, call finish with a short summary of what you changed. If the task
needs no change at all (it is already done, or what it asks is already true), change nothing
and call report_no_change with the reason instead; stopping without either fails the task.
If you cannot go on without a person's decision, call ask_human with your question instead."""

_CLAUDE_CODE_RULES = (
    f"""\
Use your own tools to read, edit and test. Put temporary files in $TMPDIR, not in /tmp.
When you are done, answer with a short summary of what you changed. If the task needs no
change at all (it is already done, or what it asks is already true), change nothing and make
the last line of your answer exactly `{NO_CHANGE_MARKER} <the reason>`; stopping without a
change and without that line fails the task. If you cannot go on without a person's decision,
make the last line of your answer exactly `{NEEDS_HUMAN_MARKER} <your question>`.
"""
    + SUBTASK_BLOCK_HELP
)


class DependencyContext(BaseModel):
    """What a finished dependency tells the task that depends on it."""

    task_id: str
    title: str
    summary: str = ""
    files_changed: list[str] = Field(default_factory=list)


def ancestors_of(plan: ExecutionPlan, task: Task) -> list[Task]:
    """The task's ancestors, root first."""
    chain: list[Task] = []
    seen = {task.id}
    parent_id = task.parent_id
    while parent_id and parent_id not in seen:
        seen.add(parent_id)
        try:
            parent = plan.task(parent_id)
        except KeyError:
            break
        chain.append(parent)
        parent_id = parent.parent_id
    return list(reversed(chain))


def build_system_prompt(plan: ExecutionPlan, *, claude_code: bool) -> str:
    parts = [_COMMON_RULES, _CLAUDE_CODE_RULES if claude_code else _TOOLS_RULES]
    if plan.append_system_prompt and plan.append_system_prompt.strip():
        parts.append(plan.append_system_prompt.strip())
    return "\n\n".join(parts)


def build_task_prompt(
    plan: ExecutionPlan,
    task: Task,
    *,
    dependencies: list[DependencyContext] | None = None,
    read_file: Callable[[str], str | None] | None = None,
) -> str:
    """The first user message. ``read_file`` supplies referenced files loaded without content."""
    sections = [f"# Task {task.id}: {task.title}"]
    if task.description.strip():
        sections.append(task.description.strip())
    if plan.context_hints:
        hints = "\n".join(f"- {hint}" for hint in plan.context_hints)
        sections.append(f"## Project context\n{hints}")
    ancestors = ancestors_of(plan, task)
    if ancestors:
        lines = []
        for ancestor in ancestors:
            line = f"- {ancestor.id}: {ancestor.title}"
            if ancestor.description.strip():
                line += "\n  " + ancestor.description.strip().replace("\n", "\n  ")
            lines.append(line)
        sections.append("## Context from parent tasks\nThis task is part of:\n" + "\n".join(lines))
    if dependencies:
        blocks = []
        for dep in dependencies:
            block = f"### {dep.task_id}: {dep.title}"
            if dep.summary.strip():
                block += f"\n{dep.summary.strip()}"
            if dep.files_changed:
                block += "\nFiles changed: " + ", ".join(dep.files_changed)
            blocks.append(block)
        sections.append(
            "## Work already done by the tasks this one depends on\n"
            "Their changes are already in your copy of the repository.\n\n" + "\n\n".join(blocks)
        )
    references = _referenced_files(task, read_file)
    if references:
        sections.append("## Referenced files\n" + "\n\n".join(references))
    verify = verify_command_for(plan, task)
    if verify:
        sections.append(
            f"## Verification\nWhen you finish, aca runs this command in the repository root; "
            f"it must pass:\n```\n{verify}\n```"
        )
    return "\n\n".join(sections) + "\n"


def _referenced_files(task: Task, read_file: Callable[[str], str | None] | None) -> list[str]:
    blocks = []
    for ref in task.metadata.file_refs:
        content = ref.content
        if content is None and read_file is not None:
            content = read_file(ref.path)
        if content is None:
            blocks.append(f"### {ref.path}\n(not found)")
            continue
        if len(content) > REFERENCED_FILE_LIMIT:
            omitted = len(content) - REFERENCED_FILE_LIMIT
            content = content[:REFERENCED_FILE_LIMIT] + f"\n[... {omitted} characters omitted]"
        blocks.append(f"### {ref.path}\n```\n{content}\n```")
    return blocks
