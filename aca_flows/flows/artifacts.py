"""What people look at in the Prefect UI: the plan, its tree, progress, each task, the bill.

Builders here return Markdown or table rows, redacted (artifacts leave aca for the Prefect
server); the flow publishes them as artifacts. Text from the plan or the agent is escaped
(``md``, ``code``) so the UI's Markdown shows it as written: a title ``add <name> flag`` keeps
its ``<name>``. The tree is a nested list, not a Mermaid graph: Prefect does not render Mermaid.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from aca_flows._words import unpriced
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.plan.vacuous_check import pass_notes, proved_nothing
from aca_flows.providers.base import Usage
from aca_flows.session.record import describe_counts
from aca_flows.session.redact import REDACTED, redact, redact_text
from aca_flows.session.usage import total_cost, unpriced_calls

if TYPE_CHECKING:
    from aca_flows.agent.execute import TaskOutcome
    from aca_flows.session.record import TaskRun
    from aca_flows.session.usage import UsageEntry

__all__ = [
    "code",
    "first_line",
    "md",
    "plan_tree_markdown",
    "plan_table",
    "progress_percent",
    "summary_markdown",
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


# Characters Markdown would read as formatting; ``<``, ``>`` and ``&`` become HTML entities.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")
_CODE_SPAN = re.compile(r"(`[^`]+`)")


def md(text: object, keep_code: bool = False) -> str:
    """``text`` as Markdown that shows it verbatim (one line: newlines become spaces).

    ``keep_code``: ``code spans`` stay code (aca's own reasons quote commands and ids so).
    Redacted first: escaped, a secret is no longer the text the redactor knows (``a\\_b``).
    """
    text = " ".join(redact_text(str(text)).split())
    if keep_code:
        parts = _CODE_SPAN.split(text)
        return "".join(p if i % 2 else _escape(p) for i, p in enumerate(parts))
    return _escape(text)


def _escape(text: str) -> str:
    # The redactor's marker stays as it is: it renders as written, and reads the same raw.
    return REDACTED.join(
        _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(part, quote=False))
        for part in text.split(REDACTED)
    )


def code(text: object) -> str:
    """``text`` as an inline code span, whatever backticks it holds (redacted, as ``md``)."""
    text = " ".join(redact_text(str(text)).split())
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plan_tree_markdown(plan: ExecutionPlan) -> str:
    """The plan as a nested list: each task under its parent, with its status and what it
    waits for."""
    by_id = {t.id: t for t in plan.tasks}
    lines = [f"# {md(plan.name)}", ""]

    def walk(task: Task, depth: int) -> None:
        line = f"{'  ' * depth}- {code(task.id)} {md(task.title)} — *{md(task.status.state)}*"
        if task.dependencies:
            line += "; after " + ", ".join(code(d) for d in task.dependencies)
        lines.append(line)
        for child in task.children:
            if child in by_id:
                walk(by_id[child], depth + 1)

    for root in plan.roots():
        walk(root, 0)
    return redact_text("\n".join(lines) + "\n")


def task_markdown(task: Task, run: TaskRun, outcome: TaskOutcome | None) -> str:
    """A task's report, from what the session recorded (``task``'s status, ``run``'s attempts
    and spend) and, when the agent ran, its ``outcome`` (commit, diffstat, verify)."""
    state = task.status.state
    reason, detail = _split_reason(task.status.reason)
    shown = state
    if state == "completed" and run.no_change:
        shown, reason = "completed, no change", run.no_change_reason or reason
    lines = [
        f"# {md(task.id)}: {md(task.title)}",
        "",
        f"**Status:** {md(shown)}" + (f": {md(reason, keep_code=True)}" if reason else ""),
        f"**Attempts:** {run.attempts}",
    ]
    if outcome is not None:
        lines += [
            f"**Commit:** {_commit_line(outcome)}",
            f"**Diffstat:** {len(outcome.files_changed)} file(s), +{outcome.insertions} "
            f"-{outcome.deletions}",
            f"**Agent rounds:** {outcome.attempts} (1 + fix requests after a failed verify), "
            f"provider calls: {outcome.turns}",
            f"**Verify:** {code(outcome.verify_command or '-')} → "
            f"{_verdict(outcome.verify_passed)}"
            + "".join(f" ({md(note)})" for note in _pass_notes(outcome)),
        ]
    usage = sum((u.usage for u in run.usage), Usage())
    lines += [
        f"**Tokens:** in {usage.input_tokens}, out {usage.output_tokens}, "
        f"cache read {usage.cache_read_tokens}, cache write {usage.cache_write_tokens}",
        f"**Cost:** ${run.cost_usd:.4f}{unpriced(run.unpriced_calls)}"
        + (_by_whom(outcome) if outcome else ""),
    ]
    if state == "failed":
        lines += ["", "## Why it failed", "", md(reason or "(no reason recorded)", keep_code=True)]
        output = outcome.verify_output if outcome and outcome.verify_passed is False else detail
        if outcome and outcome.verify_passed is False:
            lines += ["", f"Verify command {code(outcome.verify_command)}, its last output:"]
        if output.strip():
            lines += ["", "```text", _tail(output), "```"]
    elif task.status.skipped_for_failure:
        lines += ["", "Not run. `aca resume` runs it once what it depends on has completed."]
    elif state == "skipped":  # left out (at approval, by an answer, in the file): for good
        lines += ["", "Not run, and no resume runs it: it was left out."]
    if outcome is not None:
        heading = "## Summary" if state == "completed" else "## The agent's last message"
        lines += ["", heading, "", _paragraphs(outcome.summary) or "(none)"]
        files = "\n".join(f"- {code(f)}" for f in outcome.files_changed) or "- (none)"
        lines += ["", "## Files", "", files]
    return redact_text("\n".join(lines) + "\n")


def _commit_line(outcome: TaskOutcome) -> str:
    if outcome.commit_sha:
        return code(outcome.commit_sha)
    if outcome.completed_without_change and outcome.verify_passed and not _checked_nothing(outcome):
        return "none (no change needed; the verify command confirmed it)"
    if outcome.completed_without_change:
        return "none (no change needed, on the agent's word: no check confirmed it)"
    return "none"


def _pass_notes(outcome: TaskOutcome) -> list[str]:
    return pass_notes(outcome.verify_passed, outcome.verify_command, outcome.files_changed)


def _checked_nothing(outcome: TaskOutcome) -> bool:
    """Its verify command passed, but would have whatever the work held."""
    return proved_nothing(outcome.verify_passed, outcome.verify_command)


def _by_whom(outcome: TaskOutcome) -> str:
    names = " ".join(n for n in (outcome.provider, outcome.model) if n)
    return f" ({md(names)})" if names else ""


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


def _paragraphs(text: str | None) -> str:
    """Several lines of text, each escaped, line breaks kept; redacted whole first (a key
    can span lines)."""
    return "  \n".join(md(line) for line in redact_text(text or "").strip().splitlines())


def _tail(text: str, lines: int = 60) -> str:
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept).replace("```", "``\u200b`")


def summary_markdown(
    plan: ExecutionPlan, counts: dict[str, int], usage: list[UsageEntry], branch: str
) -> str:
    rows = [
        f"| {md(u.provider)} | {md(u.model or '-')} | {u.calls} | {u.usage.input_tokens} | "
        f"{u.usage.output_tokens} | {u.usage.cache_read_tokens} | "
        f"{u.usage.cache_write_tokens} | ${u.cost_usd:.4f}{unpriced(u.unpriced_calls)} |"
        for u in usage
    ]
    total = total_cost(usage)
    status = describe_counts(counts)
    markdown = "\n".join(
        [
            f"# Session summary: {md(plan.name)}",
            "",
            f"**Tasks:** {md(status)}",
            f"**Branch:** {code(branch)}",
            f"**Total cost:** ${total:.4f}{unpriced(unpriced_calls(usage))}",
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
