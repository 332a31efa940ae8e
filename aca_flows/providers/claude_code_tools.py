"""Which of Claude Code's tools a task is offered and which it is denied, from
``allowed_tools``, the permission mode and aca's deny list."""

from __future__ import annotations

from aca_flows.providers.claude_code_sandbox import denied_bash_rules

__all__ = ["UNAPPROVED_TOOLS", "denied_tools", "mcp_tools_allowed", "offered_tools"]


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
