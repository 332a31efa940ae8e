"""Which of Claude Code's tools a task is offered and which it is denied, from
``allowed_tools``, the permission mode and aca's deny list."""

from __future__ import annotations

import json
import re

from aca_flows.providers.claude_code_sandbox import denied_bash_rules

__all__ = [
    "EDITING_TOOLS",
    "UNAPPROVED_TOOLS",
    "confined_settings",
    "confined_tools",
    "denied_tools",
    "mcp_tools_allowed",
    "offered_tools",
]


def mcp_tools_allowed(allowed_tools: list[str], permission_mode: str) -> bool:
    """Whether a run may use MCP tools: an allowed tool names one (``mcp__github`` or
    ``mcp__github__create_issue``), or permissions are bypassed. Otherwise Claude Code would
    still start every MCP server of the user's configuration, for tools nobody may approve."""
    return permission_mode == "bypassPermissions" or any(
        tool.startswith("mcp__") for tool in allowed_tools
    )


# Built-in tools of Claude Code's default set that run without any approval, besides
# ToolSearch (which offers MCP tools): a subagent, skills, workflows, wake-ups, a list of the
# machine's other Claude sessions, findings reports.
UNAPPROVED_TOOLS = ("Agent", "Skill", "Workflow", "ScheduleWakeup", "ListAgents", "ReportFindings")


def offered_tools(allowed_tools: list[str], permission_mode: str) -> list[str] | None:
    """The built-in tools Claude Code offers the model (``--tools``): those ``allowed_tools``
    names (``Bash`` for ``Bash(git:*)``). Otherwise Claude Code also offers tools that run
    without any approval (``UNAPPROVED_TOOLS``, ToolSearch and the deferred tools it loads:
    38 KB of every request), so ``allowed_tools`` would not be what a task can use. Its whole
    default set (``None``) where MCP tools may be used (``mcp_tools_allowed``): it offers them
    through ToolSearch; ``denied_tools`` then denies the unapproved ones."""
    if mcp_tools_allowed(allowed_tools, permission_mode):
        return None
    return list(dict.fromkeys(_tool_names(allowed_tools)))


def denied_tools(
    allowed_tools: list[str], permission_mode: str, deny_commands: list[str]
) -> list[str]:
    """Claude Code's ``--disallowedTools``: aca's deny list as Bash rules and, where the whole
    default set is offered for MCP tools (``offered_tools``), the ``UNAPPROVED_TOOLS`` that
    ``allowed_tools`` does not name. With ``bypassPermissions`` the user allowed everything."""
    denied = denied_bash_rules(deny_commands)
    if permission_mode != "bypassPermissions" and mcp_tools_allowed(allowed_tools, permission_mode):
        named = set(_tool_names(allowed_tools))
        denied += [tool for tool in UNAPPROVED_TOOLS if tool not in named]
    return denied


def _tool_names(allowed_tools: list[str]) -> list[str]:
    names = (tool.split("(", 1)[0].strip() for tool in allowed_tools)
    return [name for name in names if name]


# Claude Code's tools that write files; a permission rule on ``Edit`` applies to all of them.
EDITING_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit")


def confined_tools(allowed_tools: list[str], folders: list[str]) -> list[str]:
    """``allowed_tools`` with each bare file-editing tool allowed only inside ``folders`` (the
    task's worktree, the run's scratch folder): ``Edit(//<worktree>/**)``. Claude Code's
    sandbox confines Bash alone; its file tools run in the claude process, and a bare
    ``Write`` approves a write anywhere (the user's checkout, ``~/.aca``, ``/etc``). A write
    outside matches no rule, so Claude Code would ask, and a run nobody watches answers no. A
    rule the user scoped stays as given."""
    scoped = [f"Edit(/{_pattern_of(folder)}/**)" for folder in folders]
    confined = []
    for tool in allowed_tools:
        name = tool.strip()
        confined.extend(scoped if name in EDITING_TOOLS else [tool])
    return list(dict.fromkeys(confined))


def confined_settings() -> str:
    """Claude Code's ``--settings`` for a sandboxed run: its file tools (Read, Grep, Glob)
    refuse to read outside the working directory, the task's worktree, in every permission
    mode: the user's keys, other checkouts and Claude Code's own credentials stay unread.
    Bash is confined by the sandbox's own rules (``claude_sandbox_settings``)."""
    return json.dumps({"permissions": {"blockReadsOutsideWorkingDirectories": True}})


def _pattern_of(path: str) -> str:
    # Permission paths are gitignore patterns: a folder's name may hold their special signs.
    return re.sub(r"([*?\[\]\\])", r"\\\1", path)
