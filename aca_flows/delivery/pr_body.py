"""How a session reads as a pull request: a title from the plan, a body a reviewer can act on.

The body lists every task with its outcome (changed, no change, done before, failed, skipped,
not run yet), its verify result, its commit and its cost, then the session's total cost and a
link to the flow run. It is written from the session record, so an update after each task and
the one at the end say the same things, and the whole text passes the redactor.
"""

from __future__ import annotations

from aca_flows._words import unpriced
from aca_flows.plan.models import verify_command_for
from aca_flows.session.record import SessionRecord
from aca_flows.session.redact import redact_text

__all__ = ["pull_request_body", "pull_request_title", "task_outcome"]

# GitHub refuses a body over 65,536 characters; a summary line is kept short enough anyway.
MAX_BODY = 60_000
MAX_TITLE = 200


def pull_request_title(session: SessionRecord) -> str:
    title = f"aca: {session.plan.name}".strip()
    return redact_text(title if len(title) <= MAX_TITLE else title[: MAX_TITLE - 1] + "…")


def task_outcome(session: SessionRecord, task_id: str) -> str:
    """``changed``, ``no change``, ``done before`` (marked done in the task file), ``failed``,
    ``skipped``, or ``not run yet``/``running``."""
    task = session.plan.task(task_id)
    state = task.status.state
    if state == "completed":
        record = session.tasks.get(task_id)
        if record is None or record.never_ran:
            return "done before"  # marked done in the task file ([x], done = true)
        return "no change" if record.outcome == "no_change" else "changed"
    return {"in_progress": "running", "pending": "not run yet", "blocked": "blocked"}.get(
        state, state
    )


def pull_request_body(
    session: SessionRecord,
    verify: dict[str, str] | None = None,
    flow_run_url: str | None = None,
) -> str:
    """The body for ``session``. ``verify``: per task id, what its verify command said (the
    flow knows; a task without an entry shows its command, or "none")."""
    verify = verify or {}
    plan = session.plan
    leaves = [t for t in plan.tasks if not t.children]
    lines = [
        f"Work of the aca session `{session.id}` on branch `{session.branch}`: "
        f"**{session.status}**"
        + (f" ({_one_line(session.status_reason)})" if session.status_reason else "")
        + ".",
        "",
    ]
    if plan.description:
        lines += [plan.description.strip(), ""]
    lines += [
        "| Task | Outcome | Verify | Commit | Cost |",
        "|---|---|---|---|---|",
    ]
    for task in leaves:
        record = session.tasks.get(task.id)
        cost = f"${record.cost_usd:.4f}{unpriced(record.unpriced_calls)}" if record else "$0.0000"
        commit = f"`{record.commit[:10]}`" if record and record.commit else ""
        outcome = task_outcome(session, task.id)
        if task.status.reason:
            outcome += f": {_one_line(task.status.reason)}"
        command = verify_command_for(plan, task)  # as the agent ran it
        check = verify.get(task.id) or (f"`{command}`" if command else "none")
        lines.append(
            f"| `{task.id}` {_cell(task.title)} | {_cell(outcome)} | {_cell(check)} "
            f"| {commit} | {cost} |"
        )
    lines += ["", f"**Total cost:** ${session.cost_usd:.4f}{unpriced(session.unpriced_calls)}"]
    if flow_run_url:
        lines += ["", f"Flow run: {flow_run_url}"]
    lines += ["", "<details><summary>The plan</summary>", ""]
    for task in plan.tasks:
        depth = _depth(session, task.id)
        deps = f" (after {', '.join(task.dependencies)})" if task.dependencies else ""
        lines.append(f"{'  ' * depth}- `{task.id}` {task.title}{deps}")
    lines += ["", "</details>"]
    body = redact_text("\n".join(lines))
    return body if len(body) <= MAX_BODY else body[: MAX_BODY - 20] + "\n\n(cut short)"


def _depth(session: SessionRecord, task_id: str) -> int:
    depth, parent = 0, session.plan.task(task_id).parent_id
    while parent:
        depth, parent = depth + 1, session.plan.task(parent).parent_id
    return depth


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")
