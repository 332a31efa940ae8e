"""The Markdown that goes to the Prefect UI (the plan's tree, a task's report, the session
summary, a pull request) redacts a secret before it escapes the text: escaped, a token
``ghp_...`` reads ``ghp\\_...``, which no rule of the redactor knows any more."""

from __future__ import annotations

import pytest

from aca_flows.flows.artifacts import plan_tree_markdown, summary_markdown, task_markdown
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.record import TaskRun

GITHUB = "ghp_" + "H4gToKeN9x" * 4
WEBHOOK = "wh_sec*ret_Z123_abc~def"  # every character Markdown escapes, in the environment


@pytest.fixture
def plan(monkeypatch) -> ExecutionPlan:
    monkeypatch.setenv("WEBHOOK_SECRET", WEBHOOK)
    return ExecutionPlan(
        name=f"rotate {WEBHOOK}",
        tasks=[Task(id="a", title=f"use {GITHUB} for the mirror")],
    )


def _leaks(text: str) -> list[str]:
    # The secret as written, and as Markdown shows it (escapes removed).
    shown = text.replace("\\", "")
    return [s for s in (GITHUB, WEBHOOK) if s in text or s in shown]


def test_the_plan_tree_redacts_before_it_escapes(plan):
    tree = plan_tree_markdown(plan)
    assert _leaks(tree) == [], tree
    assert "[REDACTED]" in tree


def test_a_task_report_and_the_summary_redact_before_they_escape(plan):
    task = plan.tasks[0]
    report = task_markdown(task, TaskRun(task_id="a"), None)
    summary = summary_markdown(plan, {"completed": 1}, [], "aca/s1")
    assert _leaks(report) == [] and _leaks(summary) == [], (report, summary)
