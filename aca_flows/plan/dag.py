"""Which tasks may run now: the plan's DAG as work progresses.

Rules the engine relies on:
- A task with children is a *group*: it does no work itself and completes when all its
  children have; a leaf does the work. A leaf that proposed subtasks at run time becomes a
  group whose own work is already done.
- A leaf waits for its own dependencies and for those of every ancestor; a dependency on a
  group waits for the whole group.
- Among ready leaves, higher priority comes first, then plan order. With the ``sequential``
  strategy, one leaf at a time in tree order (``sequential_order``: plan order, subtasks in
  their parent's place); the next one waits for the one before it, never the other way round.
- A skipped task counts as done; a task after it also waits for what it depended on.
- A failed leaf skips every task that depends on it, directly or through a group, with the
  reason ``dependency <id> failed``; independent branches go on.
- Nothing running and nothing ready while tasks are pending is a stall: ``stuck`` names each
  stuck task and what it waits on. Plan validation refuses the plans that would stall.
"""

from __future__ import annotations

from aca_flows.plan.models import ExecutionPlan, Strategy, Task, TaskStatus

__all__ = ["DagProgress", "sequential_order"]

_FINAL = ("completed", "failed", "skipped")


class DagProgress:
    def __init__(self, plan: ExecutionPlan):
        self.plan = plan
        self._by_id: dict[str, Task] = {t.id: t for t in plan.tasks}
        self._order = {t.id: i for i, t in enumerate(plan.tasks)}
        self._running: set[str] = set()
        # Leaves whose own work finished (they may have got children): one that proposed
        # subtasks in an earlier run is in progress until they end.
        self._ran = {t.id for t in plan.tasks if t.children and t.status.state == "in_progress"}
        self._settle()

    # -- queries -----------------------------------------------------------------------------

    def task(self, task_id: str) -> Task:
        return self._by_id[task_id]

    @property
    def running(self) -> set[str]:
        return set(self._running)

    def ready(self, *, once: str | None = None) -> list[Task]:
        """Leaves that may start now, best first; with ``once``, those that may start once
        that running task has completed (and became no group)."""
        done = self._finished_ok if once is None else lambda d: d == once or self._finished_ok(d)
        candidates = [
            t
            for t in self.plan.tasks
            if self._is_runnable_leaf(t) and all(done(d) for d in self._deps_of(t))
        ]
        if self.plan.strategy is Strategy.sequential:
            if self._running - {once}:
                return []
            first = next(
                (t for t in sequential_order(self.plan) if self._is_runnable_leaf(t)), None
            )
            return [first] if first in candidates else []
        return sorted(candidates, key=lambda t: (-t.metadata.priority.rank, self._order[t.id]))

    def stuck(self) -> dict[str, str]:
        """When nothing runs and nothing is ready: each pending leaf and what it waits on.
        Empty when every leaf has ended (or something can still run)."""
        if self._running or self.ready():
            return {}
        first = None
        if self.plan.strategy is Strategy.sequential:
            first = next(
                (t for t in sequential_order(self.plan) if self._is_runnable_leaf(t)), None
            )
        out: dict[str, str] = {}
        for task in self.plan.tasks:
            if not self._is_runnable_leaf(task):
                continue
            unmet = [d for d in self.dependency_ids(task) if not self._finished_ok(d)]
            if unmet:
                out[task.id] = "waits on " + ", ".join(
                    f"{d} ({self._by_id[d].status.state})" for d in unmet
                )
            elif first is not None:
                out[task.id] = f"waits for {first.id} to run first (strategy sequential)"
            else:
                out[task.id] = "waits on nothing, yet was not started"
        return out

    def leaves(self) -> list[Task]:
        return self.plan.leaves()

    def counts(self) -> dict[str, int]:
        return self.plan.counts()

    def dependency_ids(self, task: Task) -> list[str]:
        """Every task this one waits for (own and inherited), for drawing edges."""
        return sorted(self._deps_of(task), key=self._order.__getitem__)

    # -- changes -----------------------------------------------------------------------------

    def start(self, task_id: str) -> None:
        self._running.add(task_id)
        self._set(task_id, TaskStatus(state="in_progress"))

    def complete(self, task_id: str) -> None:
        self._running.discard(task_id)
        self._ran.add(task_id)
        task = self._by_id[task_id]
        if not task.children:
            self._set(task_id, TaskStatus(state="completed"))
        self._settle()

    def fail(self, task_id: str, reason: str) -> None:
        self._running.discard(task_id)
        self._ran.add(task_id)
        self._set(task_id, TaskStatus(state="failed", reason=reason))
        self._settle()

    def refresh(self) -> None:
        """Index tasks added to the plan since (subtasks proposed at run time, already linked
        to their parent); a parent that ran completes once they have."""
        for task in self.plan.tasks:
            if task.id not in self._by_id:
                self._by_id[task.id] = task
                self._order[task.id] = len(self._order)

    def release(self, task_id: str) -> None:
        """A task stopped before finishing (a budget or usage limit): pending again."""
        self._running.discard(task_id)
        self._set(task_id, TaskStatus())

    # -- internals ---------------------------------------------------------------------------

    def _is_runnable_leaf(self, task: Task) -> bool:
        return task.status.state == "pending" and task.id not in self._running and not task.children

    def _deps_of(self, task: Task) -> set[str]:
        """The task's dependencies and its ancestors'; one left out (skipped, not for a failure)
        brings its own along: what it would have built on, the tasks after it build on."""
        deps: set[str] = set()
        todo = self._own_deps_of(task)
        while todo:
            dep = todo.pop()
            if dep not in deps:
                deps.add(dep)
                if self._by_id[dep].status.state == "skipped" and not self._broken(dep):
                    todo.extend(self._own_deps_of(self._by_id[dep]))
        return deps

    def _own_deps_of(self, task: Task) -> list[str]:
        deps: list[str] = []
        node: Task | None = task
        while node is not None:
            deps.extend(node.dependencies)
            node = self._by_id.get(node.parent_id) if node.parent_id else None
        return deps

    def _finished_ok(self, task_id: str) -> bool:
        return self._by_id[task_id].status.state in ("completed", "skipped") and not self._broken(
            task_id
        )

    def _broken(self, task_id: str) -> bool:
        """A failed task, or a group with a failed or skipped-by-failure member."""
        task = self._by_id[task_id]
        if task.status.state == "failed":
            return True
        if task.status.skipped_for_failure:
            return True
        return any(self._broken(c) for c in task.children)

    def _failed_under(self, task_id: str) -> bool:
        """Whether the task, or a task under it, failed (not only skipped for a failure)."""
        task = self._by_id[task_id]
        return task.status.state == "failed" or any(self._failed_under(c) for c in task.children)

    def _why(self, broken: str) -> str:
        """``dependency `a` failed``, or ``dependency `b` was skipped`` (it is what this task
        waits for that did not complete)."""
        what = "failed" if self._failed_under(broken) else "was skipped"
        return f"dependency `{broken}` {what}"

    def _set(self, task_id: str, status: TaskStatus) -> None:
        self._by_id[task_id].status = status

    def _settle(self) -> None:
        """Skip what can no longer run and close groups, until nothing changes."""
        changed = True
        while changed:
            changed = False
            for task in self.plan.tasks:
                if task.status.state != "pending" or task.id in self._running:
                    if task.children and task.status.state in ("pending", "in_progress"):
                        changed |= self._close_group(task)
                    continue
                broken = next(
                    (
                        d
                        for d in sorted(self._deps_of(task), key=self._order.get)
                        if self._broken(d)
                    ),
                    None,
                )
                if broken is not None:
                    self._set(task.id, TaskStatus(state="skipped", reason=self._why(broken)))
                    changed = True
                elif task.children:
                    changed |= self._close_group(task)

    def _close_group(self, group: Task) -> bool:
        states = [self._by_id[c].status.state for c in group.children]
        if not all(s in _FINAL for s in states):
            return False
        if group.status.state == "in_progress" and group.id not in self._ran:
            return False
        failed = [c for c in group.children if self._broken(c)]
        if failed and not any(self._failed_under(c) for c in failed):
            # Nothing failed under it, but work under it was skipped for a failure elsewhere:
            # skipped (what waits for it is skipped too; a resume runs what was left), not
            # "failed" as its subflow is not.
            reason = self._by_id[failed[0]].status.reason
            self._set(group.id, TaskStatus(state="skipped", reason=reason))
        elif failed:
            reason = f"subtask {failed[0]} {self._by_id[failed[0]].status.state}"
            self._set(group.id, TaskStatus(state="failed", reason=reason))
        else:
            self._set(group.id, TaskStatus(state="completed"))
        return True


def sequential_order(plan: ExecutionPlan) -> list[Task]:
    """The leaves in the order ``strategy = sequential`` runs them: plan order, depth first,
    a task's subtasks in its place (also those proposed at run time, which the plan appends)."""
    by_id = {t.id: t for t in plan.tasks}
    seen: set[str] = set()
    out: list[Task] = []
    for root in plan.tasks:
        if root.parent_id in by_id:
            continue
        stack = [root]
        while stack:
            task = stack.pop()
            if task.id in seen:
                continue
            seen.add(task.id)
            if not task.children:
                out.append(task)
            stack.extend(by_id[c] for c in reversed(task.children) if c in by_id)
    return out
