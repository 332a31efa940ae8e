"""What people look at in the Prefect UI: the plan, its graph, progress, each task, the bill.

Builders here return Markdown or table rows, redacted (artifacts leave aca for the Prefect
server); the flow publishes them as artifacts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.plan.render import render_mermaid
from aca_flows.providers.base import Usage
from aca_flows.session.record import describe_counts
from aca_flows.session.redact import redact, redact_text
from aca_flows.session.usage import total_cost

if TYPE_CHECKING:
    from aca_flows.agent.execute import TaskOutcome
    from aca_flows.session.record import TaskRun
    from aca_flows.session.usage import UsageEntry

__all__ = [
    "first_line",
    "plan_graph_markdown",
    "plan_table",
    "progress_percent",
    "summary_markdown",
    "task_artifact_key",
    "task_markdown",
]


def plan_table(plan: ExecutionPlan) -> list[dict[str, str]]:
    return redact(
        [
            {
                "id": t.id,
                "title": t.title,
                "dependencies": ", ".join(t.dependencies),
                "parent": t.parent_id or "",
                "priority": t.metadata.priority.value,
                "status": str(t.status),
            }
            for t in plan.tasks
        ]
    )


def progress_percent(counts: dict[str, int]) -> float:
    """The share of tasks completed: failed and skipped tasks are not progress."""
    total = sum(counts.values())
    return round(100.0 * counts.get("completed", 0) / total, 1) if total else 100.0


def plan_graph_markdown(plan: ExecutionPlan) -> str:
    return redact_text(f"# {plan.name}\n\n```mermaid\n{render_mermaid(plan)}\n```\n")


def task_artifact_key(session_id: str, task_id: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    raw = f"aca-{session_id}-{task_id}".lower()
    return "".join(ch if ch.isalnum() else "-" for ch in raw)[:100]


def task_markdown(task: Task, run: TaskRun, outcome: TaskOutcome | None) -> str:
    """A task's report, from what the session recorded (``task``'s status, ``run``'s attempts
    and spend) and, when the agent ran, its ``outcome`` (commit, diffstat, verify)."""
    state = task.status.state
    reason, detail = _split_reason(task.status.reason)
    shown = state
    if state == "completed" and run.no_change:
        shown, reason = "completed, no change", run.no_change_reason or reason
    lines = [
        f"# {task.id}: {task.title}",
        "",
        f"**Status:** {shown}" + (f": {reason}" if reason else ""),
        f"**Attempts:** {run.attempts}",
    ]
    if outcome is not None:
        lines += [
            f"**Commit:** {_commit_line(outcome)}",
            f"**Diffstat:** {len(outcome.files_changed)} file(s), +{outcome.insertions} "
            f"-{outcome.deletions}",
            f"**Agent rounds:** {outcome.attempts} (1 + fix requests after a failed verify), "
            f"provider calls: {outcome.turns}",
            f"**Verify:** `{outcome.verify_command or '-'}` → {_verdict(outcome.verify_passed)}",
        ]
    usage = sum((u.usage for u in run.usage), Usage())
    lines += [
        f"**Tokens:** in {usage.input_tokens}, out {usage.output_tokens}, "
        f"cache read {usage.cache_read_tokens}, cache write {usage.cache_write_tokens}",
        f"**Cost:** ${run.cost_usd:.4f}" + (_by_whom(outcome) if outcome else ""),
    ]
    if state == "failed":
        lines += ["", "## Why it failed", "", reason or "(no reason recorded)"]
        output = outcome.verify_output if outcome and outcome.verify_passed is False else detail
        if outcome and outcome.verify_passed is False:
            lines += ["", f"Verify command `{outcome.verify_command}`, its last output:"]
        if output.strip():
            lines += ["", "```text", _tail(output), "```"]
    elif state == "skipped":
        lines += ["", "Not run. `aca resume` runs it once what it depends on has completed."]
    if outcome is not None:
        heading = "## Summary" if state == "completed" else "## The agent's last message"
        lines += ["", heading, "", outcome.summary or "(none)"]
        files = "\n".join(f"- `{f}`" for f in outcome.files_changed) or "- (none)"
        lines += ["", "## Files", "", files]
    return redact_text("\n".join(lines) + "\n")


def _commit_line(outcome: TaskOutcome) -> str:
    if outcome.commit_sha:
        return f"`{outcome.commit_sha}`"
    if outcome.completed_without_change:
        return "none (no change needed; the verify command confirmed it)"
    return "none"


def _by_whom(outcome: TaskOutcome) -> str:
    names = " ".join(n for n in (outcome.provider, outcome.model) if n)
    return f" ({names})" if names else ""


def first_line(reason: str) -> str:
    """A reason as one line: its first, without the "Output:" that introduces the rest."""
    return _split_reason(reason)[0]


def _split_reason(reason: str | None) -> tuple[str, str]:
    """A reason's first line (without a trailing "Output:") and the rest (command output)."""
    head, _, rest = (reason or "").partition("\n")
    head = head.rstrip()
    if head.endswith("Output:"):
        head = head[: -len("Output:")].rstrip()
    return head, rest


def _tail(text: str, lines: int = 60) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept).replace("```", "``\u200b`")


def summary_markdown(
    plan: ExecutionPlan, counts: dict[str, int], usage: list[UsageEntry], branch: str
) -> str:
    rows = [
        f"| {u.provider} | {u.model or '-'} | {u.calls} | {u.usage.input_tokens} | "
        f"{u.usage.output_tokens} | {u.usage.cache_read_tokens} | "
        f"{u.usage.cache_write_tokens} | ${u.cost_usd:.4f} |"
        for u in usage
    ]
    total = total_cost(usage)
    status = describe_counts(counts)
    markdown = "\n".join(
        [
            f"# Session summary: {plan.name}",
            "",
            f"**Tasks:** {status}",
            f"**Branch:** `{branch}`",
            f"**Total cost:** ${total:.4f}",
            "",
            "| provider | model | calls | input | output | cache read | cache write | cost |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    return redact_text(markdown)


def _verdict(passed: bool | None) -> str:
    return {True: "passed", False: "failed", None: "not run"}[passed]
