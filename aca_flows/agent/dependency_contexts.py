"""What a task is told of the work its dependencies did (``DependencyContext``, for its
prompt): their outcomes in this run, or, for a resumed session, the change log and the task
commits on the session branch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import git

from aca_flows.agent.prompt import DependencyContext
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.layout import SessionPaths
from aca_flows.workspace import read_change_log
from aca_flows.workspace.commit import task_trailers

if TYPE_CHECKING:
    from aca_flows.agent.execute import TaskOutcome

__all__ = ["dependency_contexts", "task_commit_summary"]


def task_commit_summary(repo: git.Repo, sha: str) -> str:
    """The summary stored in a task commit's body, without its trailers."""
    body = repo.git.log("-1", "--format=%b", sha)
    trailers = task_trailers(body)
    lines = [line for line in body.splitlines() if line.partition(":")[0].strip() not in trailers]
    return "\n".join(lines).strip()


def dependency_contexts(
    plan: ExecutionPlan,
    task: Task,
    repo: git.Repo,
    paths: SessionPaths,
    outcomes: Mapping[str, TaskOutcome],
) -> list[DependencyContext]:
    contexts = []
    change_log = None
    for dep_id in task.dependencies:
        try:
            title = plan.task(dep_id).title
        except KeyError:
            title = dep_id
        outcome = outcomes.get(dep_id)
        if outcome is not None:
            contexts.append(
                DependencyContext(
                    task_id=dep_id,
                    title=title,
                    summary=outcome.summary,
                    files_changed=outcome.files_changed,
                )
            )
            continue
        # Resumed session: what the dependency did is on record in the change log and commit.
        change_log = read_change_log(paths) if change_log is None else change_log
        change = change_log.get(dep_id)
        contexts.append(
            DependencyContext(
                task_id=dep_id,
                title=title,
                summary=task_commit_summary(repo, change.commit) if change else "",
                files_changed=change.files if change else [],
            )
        )
    return contexts
