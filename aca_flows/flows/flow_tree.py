"""The task tree as flows: a plan's runs belong to a flow named after the plan, and each group
of the tree (a Markdown heading with its items, a task with subtasks) runs as a subflow run
holding its children's task runs; nested groups nest.

The scheduler (``scheduler.drive_plan``) stays the one owner of ordering and admission: it decides
when a task starts and hands the task run to the flow run it belongs to. A group's subflow
starts when its first child is admitted (a group that never starts a task run costs nothing)
and receives its admitted children through an in-process inbox (``_INBOXES``, keyed by
session and group: never a flow parameter), creates each child's task run in its own context
(so the task run's parent is the group's flow run), and ends when the scheduler closes it,
once all its children settled: Failed if a task under it failed, Completed otherwise
(``Skipped`` when every task under it was skipped); a group left unfinished by a stop ends as
the run does. A subflow run costs a few API calls once per group; a task costs none more.

Which flow run is the plan's: the ``aca`` command runs ``aca_run`` under the plan's name
(``plan_flow``), so its flow run is the plan's. A run whose flow is not named after the plan
(a deployment, or a user's flow calling ``aca_run``: their entry flow is the static
``aca-run``) runs its tasks in one more subflow run, of the flow named after the plan.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import flow, tags
from prefect.context import get_run_context
from prefect.exceptions import TerminationSignal
from prefect.states import Cancelled, Completed, Failed, State

from aca_flows.flows.interrupt import task_runs_recorded_ended
from aca_flows.flows.summary import failure_reason
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.redact import redact_text

__all__ = ["GROUP_FLOW_NAME", "FlowTree", "plan_flow_name"]

GROUP_FLOW_NAME = "aca-group"
_FINAL = ("completed", "failed", "skipped")


def plan_flow_name(plan_name: str) -> str:
    """The flow a plan's runs belong to: its name as a slug (``Nightly fixes`` is
    ``nightly-fixes``), so each recurring job has its own run history on the Flows page."""
    slug = re.sub(r"[^a-z0-9]+", "-", redact_text(plan_name).lower()).strip("-")
    return slug[:80].rstrip("-") or "aca-plan"


@dataclass
class _Inbox:
    """What the scheduler hands a subflow run: work to start in its context, then its end."""

    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    end: State | None = None
    began: asyncio.Event = field(default_factory=asyncio.Event)


# The inboxes of the subflow runs of this process, by (session id, group id; "" the plan's).
_INBOXES: dict[tuple[str, str], _Inbox] = {}


@flow(name=GROUP_FLOW_NAME, persist_result=False, validate_parameters=False, log_prints=False)
async def run_group(session_id: str, group_id: str) -> State:
    """A group's flow run: starts each child's task run the scheduler hands it, in this flow
    run's context, until the scheduler closes it; ends in the state the scheduler gives."""
    inbox = _INBOXES[(session_id, group_id)]
    inbox.began.set()
    started: set[asyncio.Task] = set()
    while (item := await inbox.queue.get()) is not None:
        make, handed = item
        child = asyncio.create_task(make())
        started.add(child)
        handed.set_result(child)
    await asyncio.gather(*started, return_exceptions=True)
    end = inbox.end or Completed()
    if end.is_cancelled():  # its task runs show their own ends, as the run's do (aca_run)
        await task_runs_recorded_ended()
    return end


class _FlowRun:
    """A flow run task runs are created in: ``start`` runs ``make()`` in its context."""

    def __init__(self, key: tuple[str, str] | None = None):
        self.key = key  # None: the scheduler's own flow run
        self.ended: asyncio.Task | None = None  # the subflow call, done when its run ended
        self.called = asyncio.Event()  # set once ``ended`` is

    async def start(self, make: Callable[[], Awaitable[Any]]) -> asyncio.Task:
        """``make()`` as an asyncio task running in this flow run's context."""
        if self.key is None:
            return asyncio.create_task(make())
        await self.called.wait()
        if self.ended is None:
            raise RuntimeError(f"the flow run of group {self.key[1]!r} did not start")
        handed = asyncio.get_running_loop().create_future()
        _INBOXES[self.key].queue.put_nowait((make, handed))
        try:
            await asyncio.wait([handed, self.ended], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            handed.add_done_callback(lambda f: f.cancelled() or f.result().cancel())
            raise
        if not handed.done():
            raise RuntimeError(f"the flow run of group {self.key[1]!r} ended early")
        return handed.result()

    async def run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """``make()`` run in this flow run's context, to its end; cancelling the caller
        cancels it."""
        if self.key is None:
            return await make()
        return await (await self.start(make))


class FlowTree:
    """The flow runs of one run's task runs: the plan's, and one per group once it starts."""

    def __init__(self, plan: ExecutionPlan, session_id: str, tag_names: list[str]):
        self.plan = plan
        self.session_id = session_id
        self.tag_names = tag_names
        context = get_run_context()
        here = _FlowRun()
        self._open: dict[str, _FlowRun] = {}
        self._calls: list[asyncio.Task] = []  # every subflow call, open or ended
        # One subflow run is created at a time: on a SQLite server, concurrent creations got
        # 503s and waited 2 s for Prefect's retry.
        self._creating = asyncio.Lock()
        if context.flow.name == plan_flow_name(plan.name):
            self._open[""] = here  # this flow run is the plan's: no subflow for it
        self._here = here

    async def run(self, task: Task, make: Callable[[], Awaitable[Any]]) -> Any:
        """``make()`` (a task run of ``task``) in the flow run of the group ``task`` is in."""
        holder = await self._flow_run(task.parent_id or "")
        return await holder.run(make)

    def close_settled(self) -> None:
        """End the subflow runs of groups whose tasks have all settled."""
        for group_id in list(self._open):
            if group_id and self.plan.task(group_id).status.state in _FINAL:
                self._end(group_id, None)

    async def close(self, run_end: State) -> None:
        """End every subflow run still open (deepest first): settled groups as their tasks
        did, others (and the plan's) as the run ends, ``run_end``; wait until they have."""
        for group_id in sorted(self._open, key=self._depth, reverse=True):
            self._end(group_id, run_end)
        # Also those ended before: each has its final state on the server before the run ends.
        await asyncio.gather(*self._calls, return_exceptions=True)

    async def abandon(self) -> None:
        """The run stopped abruptly: its subflow runs stop with it; wait until they have.

        A deployment run cancelled through its worker (SIGTERM) has every asyncio task of the
        process cancelled at once, and each subflow run's engine then records its end
        (Cancelling, then Cancelled, which the server copies onto the task run standing for
        it in its parent). A second cancel cut that short, and so did the flow run's engine
        closing the client they share when the flow returned first: both stayed
        ``Cancelling`` or ``Running`` for good. So a call already being cancelled is not
        cancelled again, and the flow waits for every call to end."""
        for call in self._calls:
            if not call.cancelling():
                call.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)

    # -- internals ---------------------------------------------------------------------------

    async def _flow_run(self, group_id: str) -> _FlowRun:
        if group_id in self._open:
            return self._open[group_id]
        key = (self.session_id, group_id)
        holder = _FlowRun(key)
        # Registered before any await, its parent's creation included: a sibling admitted
        # meanwhile waits for this holder (``start`` waits until it is called) instead of
        # making a second subflow run of the group, which nobody would end. The inbox too,
        # so that a close meanwhile is kept for the run about to start.
        self._open[group_id] = holder
        inbox = _INBOXES[key] = _Inbox()
        try:
            await self._open_flow_run(group_id, holder, inbox)
        except BaseException:
            if holder.ended is None and _INBOXES.get(key) is inbox:
                del _INBOXES[key]  # no run was started to remove it
            raise
        finally:
            holder.called.set()
        return holder

    async def _open_flow_run(self, group_id: str, holder: _FlowRun, inbox: _Inbox) -> None:
        """Start the subflow run of ``group_id`` (the plan's for ``""``) in its parent's."""
        if group_id:
            group = self.plan.task(group_id)
            parent = await self._flow_run(group.parent_id or "")
            flow_name = GROUP_FLOW_NAME
            run_name = redact_text(f"{group.id} {group.title}")[:120]
        else:
            parent = self._here
            flow_name = plan_flow_name(self.plan.name)
            run_name = redact_text(f"{self.plan.name} · {self.session_id}")[:120]
        key = holder.key
        subflow = run_group.with_options(name=flow_name, flow_run_name=lambda: run_name)

        async def call() -> State:
            # Only the session's tags: a provider's tag belongs to the task runs using it.
            try:
                with tags(*self.tag_names):
                    return await subflow(self.session_id, group_id, return_state=True)
            except TerminationSignal:
                if not _being_cancelled():
                    raise
                # A worker's cancel: the subflow's engine ended its run Cancelled and turned
                # this call's cancellation into TerminationSignal, which asyncio would log
                # as a traceback when it ends the process's tasks. The flow run's own
                # engine reports the signal.
                return Cancelled(message="Flow run was cancelled.")
            finally:
                if _INBOXES.get(key) is inbox:
                    del _INBOXES[key]

        async with self._creating:
            await self._call(parent, call, holder, inbox)

    async def _call(self, parent: _FlowRun, call, holder: _FlowRun, inbox: _Inbox) -> None:
        """Start the subflow run; return once its body began."""
        for _ in range(2):
            _INBOXES[holder.key] = inbox
            holder.ended = await parent.start(call)
            self._calls.append(holder.ended)
            began = asyncio.ensure_future(inbox.began.wait())
            await asyncio.wait([began, holder.ended], return_when=asyncio.FIRST_COMPLETED)
            began.cancel()
            if inbox.began.is_set():
                return
            # A retried flow run (a deployment's Retry): Prefect gave this call the subflow
            # run of the earlier attempt, which is over. The next call gets a new one.

    def _end(self, group_id: str, run_end: State | None) -> None:
        holder = self._open.pop(group_id)
        inbox = _INBOXES.get(holder.key) if holder.key else None
        if inbox is None:
            return
        inbox.end = self._group_state(group_id, run_end) if group_id else _copy(run_end)
        inbox.queue.put_nowait(None)

    def _group_state(self, group_id: str, run_end: State | None) -> State:
        group = self.plan.task(group_id)
        leaves = self._leaves(group)
        failed = [t.id for t in leaves if t.status.state == "failed"]
        if group.status.state not in _FINAL and run_end is not None:
            return _copy(run_end)
        if failed:
            return Failed(message=failure_reason(leaves))
        if leaves and all(t.status.state == "skipped" for t in leaves):
            return Completed(name="Skipped", message=leaves[0].status.reason)
        return Completed()

    def _leaves(self, group: Task) -> list[Task]:
        out: list[Task] = []
        for child_id in group.children:
            child = self.plan.task(child_id)
            out.extend(self._leaves(child) if child.children else [child])
        return out

    def _depth(self, group_id: str) -> int:
        depth, task = 0, self.plan.task(group_id) if group_id else None
        while task is not None:
            depth += 1
            task = self.plan.task(task.parent_id) if task.parent_id else None
        return depth


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _copy(state: Any) -> State:
    """A state like ``state`` without its data (the summary stays with the run's own state)."""
    if not isinstance(state, State):
        return Completed()
    return State(type=state.type, name=state.name, message=state.message)
