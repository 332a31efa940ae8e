"""A stuck task asks a person instead of failing (``[approval] on_failure = "ask"``).

A task whose verification still fails after its fix attempts (or that ended without a change
or a reason) does not fail at once: the flow run pauses for a ``TaskHelp`` input, with the
question, the task's last output and its verify output published as an artifact
(``aca-question-<session>-<task>``) and written above the form. The answer:

- ``retry`` with a ``hint``: the hint is appended to the task's prompt and the task runs again
  (a new task run, from a clean worktree);
- ``skip``: the task ends skipped ("skipped after it failed: ..."); like any task left out on
  purpose it counts as done, so its dependents run;
- ``fail``: the task fails as it would have (its dependents are skipped).

Nobody answering within ``[approval] timeout_seconds`` means ``fail``. Tasks already running
go on while the run waits; no new task starts. The run always *pauses* here (its process
waits), deployment runs included: other tasks may be running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from prefect import get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.input import RunInput
from pydantic import Field

from aca_flows.agent.execute import TaskOutcome
from aca_flows.flows.approval import INTERRUPTED, running_again, wait_for_input
from aca_flows.session.redact import redact_text

if TYPE_CHECKING:
    from aca_flows.flows.task_run import ActiveRun

__all__ = ["HINT_PREFIX", "TaskHelp", "add_hint", "ask_about_failed_task"]

HINT_PREFIX = "Hint from a reviewer:"
OUTPUT_LIMIT = 4_000


class TaskHelp(RunInput):
    """The form of a task that failed and asks what to do."""

    action: Literal["retry", "skip", "fail"] = Field(
        default="retry", description="retry (with the hint below), skip the task, or fail it."
    )
    hint: str = Field(default="", description="retry: appended to the task's prompt.")


async def ask_about_failed_task(
    run: ActiveRun, task_id: str, outcome: TaskOutcome, attempt: int, interrupt
) -> TaskHelp:
    """A person's answer for ``task_id``, failed at its ``attempt``; ``fail`` when nobody
    answers in time or the run is stopped meanwhile."""
    logger = get_run_logger()
    question = _question(run, task_id, outcome)
    await acreate_markdown_artifact(
        key=f"aca-question-{run.session_id}-{task_id}".lower().replace("_", "-"),
        markdown=question,
        description=f"{task_id} failed and asks what to do",
    )
    logger.warning(
        f"{task_id} failed and waits for a decision: resume the flow run in the Prefect UI "
        "(retry with a hint, skip, or fail)"
    )
    timeout = run.config.approval.timeout_seconds
    form = TaskHelp.with_initial_data(description=question)
    key = f"aca-help-{task_id}-{attempt}"
    answer = await wait_for_input(form, "pause", timeout, key, interrupt)
    if answer is INTERRUPTED:
        return TaskHelp(action="fail")
    if answer is None:
        logger.warning(f"nobody answered for {task_id} within {timeout:g} s: it fails")
        await running_again()
        return TaskHelp(action="fail")
    logger.info(f"{task_id}: {answer.action}" + (f" ({answer.hint})" if answer.hint else ""))
    return TaskHelp(action=answer.action, hint=answer.hint.strip())


def add_hint(run: ActiveRun, task_id: str, hint: str) -> None:
    """The task's next run gets ``hint`` at the end of its description (its prompt)."""
    if not hint:
        return
    task = run.plan.task(task_id)
    task.description = f"{task.description.rstrip()}\n\n{HINT_PREFIX} {hint}".lstrip()


def _question(run: ActiveRun, task_id: str, outcome: TaskOutcome) -> str:
    task = run.plan.task(task_id)
    lines = [
        f"## Task `{task_id}` failed: what now?",
        "",
        f"**{task.title}** — {outcome.failure_reason or 'failed'}",
        "",
        "Choose **retry** with a hint for the agent, **skip** (its dependents still run) or "
        "**fail** (its dependents are skipped).",
    ]
    if outcome.summary:
        lines += ["", "### The agent's last answer", "", "```", outcome.summary[-OUTPUT_LIMIT:]]
        lines += ["```"]
    if outcome.verify_output:
        lines += ["", f"### `{outcome.verify_command}` said", "", "```"]
        lines += [outcome.verify_output[-OUTPUT_LIMIT:], "```"]
    return redact_text("\n".join(lines))  # it leaves aca: an artifact and the form
