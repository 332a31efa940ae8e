"""What people look at in the Prefect UI: the plan, its graph, progress, each task, the bill.

Builders here return Markdown or table rows; the flow publishes them as artifacts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.plan.render import render_mermaid

if TYPE_CHECKING:
    from aca_flows.agent.execute import TaskOutcome
    from aca_flows.session.usage import UsageEntry

__all__ = ["plan_graph_markdown", "plan_table", "summary_markdown", "task_markdown"]


def plan_table(plan: ExecutionPlan) -> list[dict[str, str]]:
    return [
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


def plan_graph_markdown(plan: ExecutionPlan) -> str:
    return f"# {plan.name}\n\n```mermaid\n{render_mermaid(plan)}\n```\n"


def task_markdown(task: Task, outcome: TaskOutcome) -> str:
    files = "\n".join(f"- `{f}`" for f in outcome.files_changed) or "- (none)"
    usage = outcome.usage
    why = outcome.failure_reason or outcome.no_change_reason
    commit = f"`{outcome.commit_sha}`" if outcome.commit_sha else "none"
    if outcome.completed_without_change:
        commit += " (no change needed; the verify command confirmed it)"
    lines = [
        f"# {task.id}: {task.title}",
        "",
        f"**Status:** {outcome.display_status}" + (f" — {why}" if why else ""),
        f"**Commit:** {commit}",
        f"**Diffstat:** {len(outcome.files_changed)} file(s), +{outcome.insertions} "
        f"-{outcome.deletions}",
        f"**Attempts:** {outcome.attempts} (runs: {outcome.runs}, provider calls: {outcome.turns})",
        f"**Verify:** `{outcome.verify_command or '-'}` → {_verdict(outcome.verify_passed)}",
        f"**Tokens:** in {usage.input_tokens}, out {usage.output_tokens}, "
        f"cache read {usage.cache_read_tokens}, cache write {usage.cache_write_tokens}",
        f"**Cost:** ${outcome.cost_usd:.4f} ({outcome.provider} {outcome.model or ''})",
        "",
        "## Summary",
        "",
        outcome.summary or "(no summary)",
        "",
        "## Files",
        "",
        files,
    ]
    return "\n".join(lines) + "\n"


def summary_markdown(
    plan: ExecutionPlan, counts: dict[str, int], usage: list[UsageEntry], branch: str
) -> str:
    rows = [
        f"| {u.provider} | {u.model or '-'} | {u.calls} | {u.usage.input_tokens} | "
        f"{u.usage.output_tokens} | {u.usage.cache_read_tokens} | "
        f"{u.usage.cache_write_tokens} | ${u.cost_usd:.4f} |"
        for u in usage
    ]
    total = sum(u.cost_usd for u in usage)
    status = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return "\n".join(
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


def _verdict(passed: bool | None) -> str:
    return {True: "passed", False: "failed", None: "not run"}[passed]
