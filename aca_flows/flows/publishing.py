"""What a run sends to the Prefect server off the tasks' critical path: the plan's artifacts
(``publish_plan``, ``publish_end``), each task's report (``publish_report``), progress, the
flow run's label. ``published`` waits for all of it before the run ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import TYPE_CHECKING

from prefect.artifacts import (
    MarkdownArtifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.states import State

from aca_flows.flows.artifacts import (
    md,
    plan_table,
    plan_tree_markdown,
    progress_percent,
    summary_markdown,
    task_markdown,
)
from aca_flows.session.record import TaskRun, describe_counts

if TYPE_CHECKING:
    from aca_flows.flows.task_run import ActiveRun
    from aca_flows.session.store import SessionStore

__all__ = [
    "ProgressArtifact",
    "progress_text",
    "publish_end",
    "publish_plan",
    "publish_report",
    "published",
    "send_in_background",
]


def progress_text(counts: dict[str, int]) -> str:
    return f"Tasks completed: {describe_counts(counts)}"


# What is on its way to the Prefect server, per session: artifacts and the flow run's name,
# sent off the tasks' critical path (see ``send_in_background``).
_SENDING: dict[str, set[asyncio.Task]] = {}


def send_in_background(session_id: str, call: Coroutine) -> None:
    """Make an API call in the background; ``published`` waits for it."""
    _SENDING.setdefault(session_id, set()).add(asyncio.create_task(call))


async def published(session_id: str) -> None:
    """Until everything sent for the session has reached the server; the first error is
    raised."""
    sending = _SENDING.pop(session_id, set())
    if sending:
        await asyncio.gather(*sending)


class ProgressArtifact:
    """The progress artifact, created and updated off the critical path: one update in flight
    at a time, at most one per ``interval`` seconds, the latest counts win (tasks that end
    close together make one API call, not one each). ``flush`` sends what waits at once."""

    def __init__(self, creating: Coroutine, interval: float = 1.0):
        self._created = asyncio.create_task(creating)
        self._latest: dict[str, int] | None = None
        self._sending: asyncio.Task | None = None
        self._interval = interval
        self._last_sent: float | None = None
        self._hurry = asyncio.Event()

    async def artifact_id(self):
        return await self._created

    def update(self, counts: dict[str, int]) -> None:
        self._latest = dict(counts)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        while self._latest is not None:
            if self._last_sent is not None:
                wait = self._last_sent + self._interval - loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), max(wait, 0))
            counts, self._latest = self._latest, None
            self._last_sent = loop.time()
            await aupdate_progress_artifact(
                await self._created,
                progress=progress_percent(counts),
                description=progress_text(counts),
            )

    async def flush(self) -> None:
        self._hurry.set()
        await self._created
        if self._sending is not None:
            await self._sending


def publish_plan(store: SessionStore, run: ActiveRun) -> ProgressArtifact:
    """The plan's table and tree as the run starts, and its progress artifact."""
    send_in_background(
        run.session_id,
        acreate_table_artifact(
            key=_key("plan", run.session_id), table=plan_table(run.plan), description="The plan"
        ),
    )
    send_in_background(
        run.session_id,
        acreate_markdown_artifact(
            key=_key("tree", run.session_id),
            markdown=plan_tree_markdown(run.plan),
            description="The plan as a tree, with dependencies",
        ),
    )
    counts = store.session.task_counts
    return ProgressArtifact(
        acreate_progress_artifact(
            progress=progress_percent(counts),
            key=_key("progress", run.session_id),
            description=progress_text(counts),
        )
    )


def publish_report(store: SessionStore, run: ActiveRun, task_id: str, state: State) -> None:
    """The task's report, on its task run's page, written from what the session recorded
    now, and the pull request told how far the run got. Both are sent in the background: the
    next task need not wait for them (``published`` waits for all of them before the run
    ends)."""
    # Imported here: it waits for what this module sends.
    from aca_flows.flows.pull_requests import update_pull_request

    task = store.session.plan.task(task_id)
    record = store.session.tasks.get(task_id) or TaskRun(task_id=task_id)
    status = str(task.status).splitlines()[0][:200]
    # No key: a key makes a collection of the Artifacts page for each task of every run, and
    # costs the server twice the work of the report itself (its collection, two more events).
    artifact = MarkdownArtifact(
        markdown=task_markdown(task, record, run.outcomes.get(task_id)),
        # Prefect renders a description as Markdown: escaped, like the report.
        description=f"{md(task_id)}: {md(status, keep_code=True)}",
        task_run_id=state.state_details.task_run_id,
    )
    send_in_background(run.session_id, artifact.acreate())
    update = update_pull_request(store.session, run.outcomes)
    if update is not None:
        send_in_background(run.session_id, update)


async def publish_end(
    store: SessionStore, run: ActiveRun, progress: ProgressArtifact, status: str
) -> None:
    """The plan's artifacts as the run ends (``status``), once everything sent for the run has
    reached the server."""
    counts = store.session.task_counts
    await progress.flush()
    # Four artifacts under four keys, independent of each other and of the reports still on
    # their way: sent at once, the run's end waits for one round trip, not five.
    for final in (
        aupdate_progress_artifact(
            await progress.artifact_id(),
            progress=progress_percent(counts),
            description=progress_text(counts),
        ),
        # The plan table again under its key (a new version): every task's final state.
        acreate_table_artifact(
            key=_key("plan", run.session_id),
            table=plan_table(store.session.plan),
            description=f"The plan, {status}: {describe_counts(counts)}",
        ),
        acreate_markdown_artifact(
            key=_key("tree", run.session_id),
            markdown=plan_tree_markdown(store.session.plan),
            description=f"The plan as a tree, {status}",
        ),
        acreate_markdown_artifact(
            key=_key("summary", run.session_id),
            markdown=summary_markdown(
                store.session.plan, counts, store.session.usage, store.branch
            ),
            description="Tokens and cost by provider and model",
        ),
    ):
        send_in_background(run.session_id, final)
    await published(run.session_id)


def _key(kind: str, session_id: str) -> str:
    return f"aca-{kind}-{session_id}".lower()
