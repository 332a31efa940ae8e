"""Approval of the plan (``--require-approval``): the run waits for a person's decision.

After the plan is published as artifacts and before the first task starts, the flow run
waits for a typed input, ``PlanApproval``, that the Prefect UI shows as a form on the paused
flow run's page ("Resume"), and that ``aca approve`` / ``aca reject`` send from a terminal
(``send_decision``). The decision is journalled in the session (``approval_requested``,
``approval_decided``); what it changes is applied here:

- approve: the run goes on, as planned;
- approve with changes: tasks in ``skip`` end Skipped ("left out at approval") and count as
  done, so their dependents still run (as after a skipped task); a new
  ``max_concurrent``; a ``note`` appended to every task's prompt (a context hint);
- reject: no task runs; the session ends ``rejected`` with the reason, the flow run
  Cancelled named Rejected (docs/engine.md, "How a run ends").

A run started from the command line *pauses*: its process waits (holding only the session
lock, which readers never take). A deployment run *suspends*: its process exits and frees the
worker; the resume schedules the flow run again, which resumes the session and reads the
decision (the same pause key returns it). Nobody answering within ``[approval]
timeout_seconds`` means ``[approval] on_timeout`` for a paused run; a suspended run that times
out is failed by Prefect's server ("never resumed") and its session can be resumed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from prefect import get_run_logger
from prefect.context import get_run_context
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run, asuspend_flow_run
from prefect.input import RunInput
from pydantic import Field

from aca_flows._words import listed, one_line, workdir_option
from aca_flows.errors import InputError
from aca_flows.flows.remote_sync import session_resume
from aca_flows.plan.models import ExecutionPlan, TaskStatus
from aca_flows.plan.render import render_tree
from aca_flows.session.events import ApprovalDecided, ApprovalRequested
from aca_flows.session.reading import display_status, load_session
from aca_flows.session.redact import redact
from aca_flows.session.store import SessionStore
from aca_flows.settings import ApprovalSection

if TYPE_CHECKING:
    from aca_flows.flows.task_run import ActiveRun

__all__ = [
    "SKIPPED_AT_APPROVAL",
    "PlanApproval",
    "api_url",
    "apply_decision",
    "approval_needed",
    "decision_problem",
    "resume_waiting_run",
    "send_decision",
    "wait_for_approval",
    "wait_for_input",
]

SKIPPED_AT_APPROVAL = "left out at approval"
# How often a paused run looks whether it was resumed (Prefect's default is 10 s).
POLL_SECONDS = 2
PAUSE_KEY = "aca-approval"


class PlanApproval(RunInput):
    """The form of a run waiting for approval of its plan."""

    decision: Literal["approve", "reject"] = Field(
        default="approve", description="approve runs the plan (with the changes below)."
    )
    skip: list[str] = Field(
        default_factory=list,
        description="Ids of tasks not to run: they end Skipped; their dependents still run.",
    )
    max_concurrent: int | None = Field(
        default=None, ge=1, le=64, description="Tasks run at once (empty: as planned)."
    )
    note: str = Field(default="", description="A note appended to every task's prompt.")
    reason: str = Field(default="", description="Why (recorded in the session).")


def approval_needed(require_approval: bool, store: SessionStore) -> bool:
    """Asked for, or a resumed session that asked before: one whose plan was never approved
    (still waiting, or rejected) asks again, as a resume never runs a plan nobody approved;
    an approved one gets its approval's note and max_concurrent again. A plan with nothing
    left to run has nothing to approve: it waited for an answer all the same (a day, by
    default), then ended rejected, where it would have completed."""
    if all(t.children or t.status.is_done for t in store.session.plan.tasks):
        return False
    return require_approval or store.session.approval is not None


def decision_problem(plan: ExecutionPlan, skip: list[str]) -> str | None:
    """Why ``skip`` cannot be applied to ``plan``, or ``None``: only pending tasks that do
    work (not groups) can be left out."""
    tasks = {t.id: t for t in plan.tasks}
    unknown = [t for t in skip if t not in tasks]
    if unknown:
        # Only the tasks that could be skipped: a group or a finished task would be refused.
        left = [t.id for t in plan.tasks if not t.children and t.status.state == "pending"]
        return (
            f"no task {', '.join(unknown)} in the plan; the tasks that can be skipped are "
            f"{listed(left, 20)}"
        )
    groups = [t for t in skip if tasks[t].children]
    if groups:
        verb = "groups" if len(groups) == 1 else "group"
        return f"{listed(groups, 20)} {verb} other tasks; name the tasks to skip instead"
    done = [t for t in skip if tasks[t].status.state != "pending"]
    if done:
        return f"{', '.join(done)} will not run anyway (already {tasks[done[0]].status.state})"
    return None


async def wait_for_approval(
    store: SessionStore,
    plan: ExecutionPlan,
    limit: int,
    config: ApprovalSection,
    interrupt,
    *,
    asked: bool = False,
) -> ApprovalDecided | None:
    """Wait for a decision on ``plan`` and journal it; ``None`` if the run's ``interrupt``
    (a signal, a cancel from the UI) came first.

    A resumed session whose plan was approved before gets that decision again, unasked,
    unless this run was ``asked`` to wait for approval (``aca resume --require-approval``).
    """
    approval = store.session.approval
    if approval is not None and approval.state == "approved" and not asked:
        return ApprovalDecided(
            decision="approve",
            skip=[],  # already recorded as the tasks' statuses
            **approval.model_dump(include={"max_concurrent", "note", "reason", "timed_out"}),
        )
    logger = get_run_logger()
    timeout = config.timeout_seconds
    flow_run = get_run_context().flow_run
    mode = "suspend" if flow_run.deployment_id is not None else "pause"
    now = datetime.now(UTC)
    # A suspended run starts over once answered: its request stands. One that expired is
    # asked anew (a Retry of its flow run in the UI): it was called interrupted, and
    # `aca approve` refused it while the run waited.
    if not (
        approval
        and approval.state == "waiting"
        and approval.flow_run_id == str(flow_run.id)
        and (approval.expires_at is None or approval.expires_at > now)
    ):
        store.record(
            ApprovalRequested(
                flow_run_id=str(flow_run.id),
                api_url=api_url(),
                mode=mode,
                expires_at=now + timedelta(seconds=timeout),
            )
        )
    problem = None
    attempt = 0
    while True:
        attempt += 1
        form = PlanApproval.with_initial_data(
            # Its commands name the workdir always: the form is read from anywhere.
            description=_form_description(
                store.session_id, plan, limit, problem, workdir_option(store.session.workdir, "")
            )
        )
        where = workdir_option(store.session.workdir)
        # The plan itself the first time, for a reviewer at the terminal (the UI's form lists
        # it too): what runs, in what order, checked by what.
        shown = f"\n{render_tree(plan)}\n" if attempt == 1 else " "
        logger.warning(
            f"waiting for approval of the plan:{shown}resume the flow run in the Prefect UI, "
            f"or `aca approve {store.session_id}{where}` / "
            f"`aca reject {store.session_id}{where} --reason ...`"
        )
        answer = await wait_for_input(form, mode, timeout, f"{PAUSE_KEY}-{attempt}", interrupt)
        if answer is INTERRUPTED:
            return None
        if answer is None:
            on_timeout = config.on_timeout
            logger.warning(f"nobody answered within {timeout:g} s: {on_timeout} (on_timeout)")
            await running_again()
            answer = PlanApproval(decision=on_timeout, reason=f"no answer within {timeout:g} s")
            decided = _decided(answer, timed_out=True)
            break
        if not answer.model_fields_set:
            # Resumed with no answer (Prefect's bare `resume_flow_run`, an automation's
            # "Resume a flow run"): the form's defaults, an approval nobody gave.
            problem = "the flow run was resumed without an answer, which decides nothing"
        elif answer.decision == "approve":
            problem = decision_problem(plan, answer.skip)
        else:
            problem = None
        if not problem:
            decided = _decided(answer, timed_out=False)
            break
        logger.error(f"the approval cannot be applied: {problem}; asking again")
    store.record(decided)
    return decided


def apply_decision(decided: ApprovalDecided, run: ActiveRun, store: SessionStore) -> None:
    """An approval's changes to the run: skipped tasks, the note in every prompt."""
    for task_id in decided.skip:
        task = run.plan.task(task_id)
        task.status = TaskStatus(state="skipped", reason=SKIPPED_AT_APPROVAL)
        store.task_skipped(task_id, SKIPPED_AT_APPROVAL)
    if decided.note:
        run.plan.context_hints = [*run.plan.context_hints, f"Reviewer's note: {decided.note}"]


def send_decision(workdir, session_id: str, answer: dict[str, Any]) -> str:
    """Resume the waiting flow run of ``session_id`` with ``answer`` (a ``PlanApproval``);
    returns the flow run id. For ``aca approve`` and ``aca reject``.

    Talks to the server the run talks to (recorded when it began to wait)."""
    session = load_session(workdir, session_id)
    approval = session.approval
    status = display_status(session, workdir)
    if approval is None or status != "waiting for approval":
        again = f"; `{session_resume(session, workdir)}` asks again."
        if (asked := session.question) is not None and status.startswith("waiting"):
            task = asked.task_id
            again = f"; its task {task} waits for an answer: `aca answer {session.id} {task}`."
        raise InputError(
            f"session {session.id} is not waiting for approval (status: {status}); "
            "`aca sessions list` shows the sessions that are"
            + (again if status in ("interrupted", "rejected") or asked else ".")
        )
    if answer["decision"] == "approve":
        problem = decision_problem(session.plan, answer.get("skip") or [])
        if problem:
            raise InputError(f"--skip: {problem}.")
    try:
        resume_waiting_run(
            approval.api_url, approval.flow_run_id, session.id, PlanApproval(**answer).model_dump()
        )
    except RunNotWaiting as gone:
        if gone.ended and approval.mode == "suspend":
            _interrupted_while_suspended(workdir, session.id, str(gone))
        again = f" `{session_resume(session, workdir)}` asks again." if gone.ended else ""
        raise InputError(f"{gone}{again}") from None
    return approval.flow_run_id


def _interrupted_while_suspended(workdir, session_id: str, reason: str) -> None:
    """A suspended run has no process: one cancelled while it waited (or failed on the server)
    left its session waiting for an approval nothing can take. Recorded now, while no process
    holds the session (a resume of it would hold its lock: then it is left to that run)."""
    from aca_flows.session.errors import SessionLockedError

    try:
        store = SessionStore.open(workdir, session_id)
    except SessionLockedError:
        return
    try:
        store.finish("interrupted", reason)
    finally:
        store.close()


class RunNotWaiting(InputError):
    """The flow run asked to go on waits for input no more; ``ended``: it ended (cancelled,
    timed out, crashed) rather than was answered."""

    def __init__(self, message: str, ended: bool):
        super().__init__(message)
        self.ended = ended


def resume_waiting_run(
    server_url: str | None, flow_run_id: str, session_id: str, run_input: dict[str, Any]
) -> None:
    """Resume the paused or suspended flow run ``flow_run_id`` with ``run_input``, on the server
    it waits on (``server_url``, recorded when it began to wait; else this process's). What goes
    wrong is an ``InputError`` naming the run and the server. The input is redacted: the
    server keeps it (the flow run's input, read by anyone with its API or UI), and a hint, a
    note or a reason typed at a terminal can hold a secret."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.exceptions import NotPausedError
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from aca_flows.flows.local_servers import LocalServer

    url = server_url or PREFECT_API_URL.value() or LocalServer().api_url()
    try:
        with (
            temporary_settings(updates={PREFECT_API_URL: url}),
            get_client(sync_client=True) as client,
        ):
            state = client.read_flow_run(UUID(flow_run_id)).state
            if state is None or not state.is_paused():
                raise NotPausedError(f"the flow run is {state and state.name}")
            # Two answers sent at once both find the run paused; the server takes one and
            # answers the other ABORT ("not paused"), which Prefect's own ``resume_flow_run``
            # took for a success: both were told they were applied.
            response = client.resume_flow_run(UUID(flow_run_id), run_input=redact(run_input))
        if response.status == SetStateStatus.ABORT:  # another answer, a moment before
            raise RunNotWaiting(_answered_already(flow_run_id, session_id), ended=False)
        if response.status != SetStateStatus.ACCEPT:
            raise RuntimeError(f"the server refused the answer: {response.details.reason}")
    except RunNotWaiting:
        raise
    except NotPausedError:
        ended = _final_state_of(url, flow_run_id)
        if ended is None:
            raise RunNotWaiting(_answered_already(flow_run_id, session_id), ended=False) from None
        if ended == "Completed":  # it went on (an answer, or on_timeout = "approve") and ran
            raise RunNotWaiting(
                _answered_already(flow_run_id, session_id, then=", and the run has ended"),
                ended=False,
            ) from None
        raise RunNotWaiting(
            f"the flow run {flow_run_id} of session {session_id} ended {ended} while it waited "
            "for input (cancelled, or its wait timed out), so nothing waits for the answer.",
            ended=True,
        ) from None
    except Exception as exc:  # the server is gone or refused: say where aca looked
        raise InputError(
            f"could not resume the flow run {flow_run_id} of session {session_id} at {url}: "
            f"{exc}. Is the run's Prefect server still up?"
        ) from None


def _answered_already(flow_run_id: str, session_id: str, then: str = "") -> str:
    return (
        f"the flow run {flow_run_id} of session {session_id} is not waiting for input any "
        f"more: it was answered already{then}."
    )


def _final_state_of(url: str, flow_run_id: str) -> str | None:
    """The name of the flow run's final state (Cancelled, Failed, Crashed...), or None while
    it has not ended (an answer resumed it) or cannot be read."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with (
            temporary_settings(updates={PREFECT_API_URL: url}),
            get_client(sync_client=True) as client,
        ):
            state = client.read_flow_run(UUID(flow_run_id)).state
    except Exception:  # the server went meanwhile: say only what is known
        return None
    return state.name if state is not None and state.is_final() else None


# -- waiting for input (also for a stuck task: task_help.py) ------------------------------

INTERRUPTED = object()


async def wait_for_input(form, mode: str, timeout: float, key: str, interrupt):
    """The flow run's answer to ``form``: ``None`` on timeout, ``INTERRUPTED`` if the run's
    ``interrupt`` came first. ``mode`` ``suspend`` exits the process (deployment runs).

    The key is the flow run's attempt's: Prefect answers a wait whose key it has seen with the
    input stored under it, which is the form itself until someone answers. A retry of a run
    cancelled while it waited took that form for the answer, and ran a plan nobody approved.
    A resumed run is the same attempt (resuming keeps ``run_count``), and finds its answer."""
    key = f"{key}-run{get_run_context().flow_run.run_count}"
    if mode == "suspend":
        # Exits this process (Prefect's Pause); the flow run starts again when resumed and
        # this call, with the same key, returns the answer.
        return await asuspend_flow_run(wait_for_input=form, timeout=int(timeout), key=key)
    pause = asyncio.ensure_future(
        apause_flow_run(
            wait_for_input=form, timeout=int(timeout), poll_interval=POLL_SECONDS, key=key
        )
    )
    stop = asyncio.ensure_future(interrupt.wait(0))
    try:
        await asyncio.wait([pause, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        answered = pause.done()
        if not answered:  # also when this wait is cancelled: it would poll on
            pause.cancel()
    if not answered:
        return INTERRUPTED
    try:
        return pause.result()
    except FlowPauseTimeout:
        return None


async def running_again() -> None:
    """After a timeout the flow run is still Paused (or failed by the server): it runs on."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    async with get_client() as client:
        await client.set_flow_run_state(get_run_context().flow_run.id, Running(), force=True)


def _decided(answer: PlanApproval, timed_out: bool) -> ApprovalDecided:
    reason = answer.reason.strip()
    if answer.decision == "reject" and not reason:
        reason = "rejected (no reason given)"
    return ApprovalDecided(
        decision=answer.decision,
        skip=list(dict.fromkeys(answer.skip)) if answer.decision == "approve" else [],
        max_concurrent=answer.max_concurrent,
        note=answer.note.strip(),
        reason=reason,
        timed_out=timed_out,
    )


def _form_description(
    session_id: str, plan: ExecutionPlan, limit: int, problem, where: str = ""
) -> str:
    """The Markdown above the form in the UI: the tasks that would run, and how to answer
    (``where``: the ``--workdir`` option the commands need)."""
    lines = [f"## Approve the plan of session `{session_id}`", ""]
    if problem:
        lines += [f"**The last answer could not be applied: {problem}.**", ""]
    lines += [
        f"The plan **{plan.name}** (artifacts `aca-plan-…`, `aca-tree-…`), at most {limit} "
        "at once:",
        "",
    ]
    for setup in plan.setup_commands:  # runs in every task's worktree
        lines.append(f"- before every task, `{setup.name}`: {_code(setup.command)}")
    for task in plan.tasks:
        if task.children or task.status.state != "pending":
            continue
        said = []  # what a reviewer must see: the order, the check, another model
        if task.dependencies:
            said.append("after " + ", ".join(f"`{d}`" for d in dict.fromkeys(task.dependencies)))
        if check := task.verify or plan.verify:
            said.append(f"checked by {_code(check)}")
        if task.provider or task.model:
            said.append("on " + "/".join(filter(None, (task.provider, task.model))))
        line = f"- `{task.id}` {one_line(task.title)}"
        lines.append(f"{line} — {'; '.join(said)}" if said else line)
    lines += [
        "",
        "Choose **approve** (optionally: task ids to skip — their dependents still run —, "
        "another max_concurrent, a note for every task's prompt) or **reject** with a reason. "
        f"From a terminal: `aca approve {session_id}{where} --skip ID` or "
        f"`aca reject {session_id}{where} --reason TEXT`.",
    ]
    return "\n".join(lines)


def _code(text: str) -> str:
    """``text`` as Markdown code on one line, backticks in it and all."""
    return f"`` {one_line(text)} ``"


def api_url() -> str | None:
    """The Prefect API this process talks to, recorded with a wait so answers find it."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None
