"""The scheduler of a run: it admits the plan's tasks in dependency and priority order (at most
``max_concurrent`` at once), runs each as a task run in the flow run of its group
(flow_tree.py), settles each into the session and the DAG (skips, finished-before tasks,
stalls, budgets, interrupts), and has each task's report sent as it goes (publishing.py).
``aca_run.py`` opens the run and calls ``drive_plan``.
"""

from __future__ import annotations

import asyncio
import errno
from datetime import UTC, datetime
from functools import partial

from prefect import get_run_logger
from prefect.states import State
from prefect.utilities.annotations import allow_failure

from aca_flows._files import readable
from aca_flows.agent.execute import TaskOutcome
from aca_flows.agent.subtasks import take_subtasks
from aca_flows.errors import AcaError
from aca_flows.flows.approval import apply_decision, approval_needed, wait_for_approval
from aca_flows.flows.artifacts import first_line
from aca_flows.flows.events import emit_task_event, resend_lost_task_events
from aca_flows.flows.flow_tree import FlowTree
from aca_flows.flows.interrupt import UI_CANCEL, Interrupt
from aca_flows.flows.publishing import publish_end, publish_plan, publish_report, published
from aca_flows.flows.remote_sync import push_landed_work, push_session_work, resume_of
from aca_flows.flows.run_setup import RunRequest
from aca_flows.flows.server import runs_on_acas_server
from aca_flows.flows.settled import (
    close_groups,
    edges,
    record_finished_before,
    record_skip,
    run_skips,
)
from aca_flows.flows.spend import budget_reached, with_final_spend
from aca_flows.flows.stop_reasons import SLOT_REFUSED, concurrency_limit_stop
from aca_flows.flows.summary import RunSummary, failure_reason, flow_state, run_summary
from aca_flows.flows.task_help import add_hint, answer_of, ask_about_failed_task, reviewed_reason
from aca_flows.flows.task_run import (
    LIMIT_STOPPED,
    ActiveRun,
    TaskRunFailed,
    limit_reached,
    run_tags,
    runner_for,
)
from aca_flows.plan.dag import DagProgress
from aca_flows.plan.models import TaskStatus
from aca_flows.session.checkpoints import CheckpointPolicy, create_checkpoint
from aca_flows.session.events import StopTrigger, TaskResult
from aca_flows.session.store import SessionStore

# Each running session's flow runs (the plan's, its groups'), so the flow can end them.
TREES: dict[str, FlowTree] = {}


async def drive_plan(
    store: SessionStore, run: ActiveRun, request: RunRequest, interrupt: Interrupt
) -> RunSummary:
    """Run the plan's tasks to an end: admission in dependency and priority order, at most
    ``max_concurrent`` at once, each settled into the session; returns the run's summary."""
    logger = get_run_logger()
    # Skips this run decides are told (the session, aca.task.skipped); those of earlier runs
    # that stand (a task left out, in the file or at an approval) were told then. Read before
    # the DAG settles: the dependents of a task an answer left to a killed run failed are
    # skipped by this run (they stayed pending in the session, Skipped in Prefect).
    recorded_skips = {t.id for t in run.plan.tasks if t.status.state == "skipped"}
    dag = DagProgress(run.plan)
    states: dict[str, State] = {}
    limit = run.config.session.max_concurrent_tasks
    budget = run.config.session.budget_usd
    policy = CheckpointPolicy.from_config(run.config.session)
    tree = TREES[run.session_id] = FlowTree(run.plan, run.session_id, run_tags(run))
    progress = run.progress = publish_plan(store, run)
    create_checkpoint(store, trigger="auto", description="plan compiled")
    needs_approval = approval_needed(request.require_approval, store)
    if needs_approval or not runs_on_acas_server():
        # Written before the first task starts: a stock SQLite server takes one writer at a
        # time, and the first task runs' own calls (their tags' concurrency checks) got 503s
        # behind these writes, then waited 2+ s for Prefect's retry. aca's own servers make
        # writes wait their turn: there the first tasks start while these are on their way.
        # A plan waiting for approval is shown first.
        await published(run.session_id)
        await progress.artifact_id()
    if needs_approval:
        decided = await wait_for_approval(
            store, run.plan, limit, run.config.approval, interrupt, asked=request.require_approval
        )
        if decided is not None and decided.decision == "reject":
            logger.warning(f"the plan was rejected: {decided.reason}")
            store.finish("rejected", decided.reason)
            create_checkpoint(store, trigger="end", description="rejected")
            await publish_end(store, run, progress, "rejected")  # the UI's end, as every run's
            run.progress = None
            return run_summary(store, "rejected", decided.reason, {}, [])
        if decided is not None:
            apply_decision(decided, run, store)
            limit = decided.max_concurrent or limit
            for task_id in decided.skip:  # a task run that ends Skipped, and its report
                await record_skip(store, run, states, tree, task_id)

    await record_finished_before(store, run, dag, states, tree)
    answered = run.left_question
    if answered is not None and run.plan.task(answered.task_id).status.state == "skipped":
        # Skipped by the answer a person gave a killed run (task_help.take_answer_left): a
        # task run Skipped, as a live answer's; the UI showed only the killed run's Failed.
        await record_skip(store, run, states, tree, answered.task_id)
    await resend_lost_task_events(store, logger)  # events a lost server dropped
    running: dict[asyncio.Task, str] = {}
    # A failed task that asks a person (on_failure = "ask") waits in `questions`; one is asked
    # at a time (the flow run pauses for one answer), while the running tasks go on.
    questions: list[str] = []
    asking: dict[asyncio.Task, str] = {}
    stopped_reason: str | None = None
    stop_trigger: StopTrigger = "budget"  # what stopped_reason is: its checkpoint's trigger
    refused: list[str] = []  # providers that cannot serve the run: their tasks no longer start

    def next_after(landed: str) -> str | None:
        # The task that takes a landed task's slot, for its worktree to be made meanwhile.
        if stopped_reason is not None or interrupt.requested or asking or questions:
            return None  # none starts before the answer: its worktree would wait for nothing
        for task in dag.ready(once=landed):
            provider = task.provider or run.default_provider
            if provider not in run.cannot_serve and not run.worktrees.claimed(task.id):
                return task.id
        return None

    run.worktrees.next_after = next_after

    async def admit() -> None:
        # Start what may start now: at each turn of the loop, and as soon as a task has
        # finished (its dependents need not wait for the others that finished with it).
        nonlocal stopped_reason
        spent = _spent(store)
        if budget is not None and spent >= budget and stopped_reason is None:
            stopped_reason = budget_reached(budget)
            logger.warning(f"{stopped_reason} (${spent:.4f} spent so far); no new task starts")
        if stopped_reason is not None or interrupt.requested or asking or questions:
            return  # a paused flow run starts no task run: they start once it is answered
        for task in dag.ready():
            if len(running) >= limit:
                break
            provider = task.provider or run.default_provider
            if provider in run.cannot_serve:  # it stays pending; `aca resume` runs it
                continue
            dag.start(task.id)
            run.worktrees.ahead(task.id)  # made while Prefect starts its task run
            # Off the loop (session/store.py): running tasks go on while it is fsynced.
            await store.off_loop(store.task_started, task.id, provider=provider)
            # The DAG decided it may start; a dependency skipped after it failed (a
            # person's decision, task_help.py) has a failed task run all the same.
            waits = [allow_failure(s) for s in edges(states, dag.dependency_ids(task))]
            running[asyncio.create_task(_run_one(run, task.id, waits, tree))] = task.id

    while True:
        await close_groups(store, run, dag, states, recorded_skips)
        if not asking:  # skipped tasks' runs, then their groups' flow runs: after an answer
            await run_skips(store, run, dag, states, tree)
            tree.close_settled()
        if questions and not asking:
            # Nobody decides now (an interrupt; a stop, after which no retry could start):
            # a resume asks again.
            if interrupt.requested or stopped_reason is not None:
                for task_id in questions:
                    _pending_again(store, dag, task_id, _failure(run, task_id))
                    logger.warning(f"{task_id} stays unfinished: the run stopped before an answer")
                questions.clear()
            else:
                task_id = questions.pop(0)
                attempts = store.session.tasks[task_id].attempts
                outcome = run.outcomes[task_id]
                ask = ask_about_failed_task(run, task_id, outcome, attempts, interrupt)
                asking[asyncio.create_task(ask)] = task_id
                if running:
                    logger.info(
                        f"no new task starts until {task_id} is answered; {len(running)} running "
                        "task(s) go on"
                    )
        await admit()
        if stopped_reason is not None and asking and not running:
            # Stopped (a budget, a usage limit) with nothing else to wait for: an answer could
            # start no task, and the run would wait up to [approval] timeout_seconds for it.
            await _end_questions(store, run, dag, asking, states, tree, logger)
            continue
        run.worktrees.drop_unclaimed(running=dag.running.__contains__)
        if run.worktrees.spares and not any(t.status.state == "pending" for t in dag.leaves()):
            run.worktrees.none_left_to_start()
        if not running and not asking:
            break
        if interrupt.requested and not interrupt.announced and not interrupt.cancel_now():
            interrupt.announced = True
            logger.warning(
                f"{interrupt.signal_name}: no new task starts; {len(running)} running task(s) "
                f"get {interrupt.grace_seconds:g} s to finish (signal again to stop them now)"
            )
        if interrupt.cancel_now():
            if running:
                await _cancel_running(store, run, dag, running, states, logger, interrupt)
            await _end_questions(store, run, dag, asking, states, tree, logger)
            for task_id in questions:
                _pending_again(store, dag, task_id, _failure(run, task_id))
            break
        done = await _wait_for_tasks({**running, **asking}, interrupt)
        answered = {t for t in done if t in asking}
        for question in answered:
            task_id = asking.pop(question)
            answer = answer_of(question)
            await _settle_answer(store, run, dag, task_id, states, tree, answer, logger)
        # Stops and failures first: a stop that came with a completion (a usage limit, a lost
        # branch) is known before that completion's dependents would start.
        finished_runs = [t for t in done if t not in answered]
        for finished in sorted(finished_runs, key=lambda t: t.result().is_completed()):
            task_id = running.pop(finished)
            state = finished.result()
            states[task_id] = state
            limit_reason = await _finish(
                store, run, dag, task_id, state, logger, interrupt, questions=questions
            )
            if limit_reason in run.cannot_serve.values():
                # One provider's: the tasks of the others go on.
                if limit_reason not in refused:
                    refused.append(limit_reason)
                    logger.warning(limit_reason)
            elif limit_reason and stopped_reason is None:
                stopped_reason = limit_reason
                stop_trigger = run.stop_triggers.get(limit_reason, "budget")
                logger.warning(f"{limit_reason}; no new task starts")
            if state.is_completed():  # its dependents start now (a group's once it closes)
                await close_groups(store, run, dag, states, recorded_skips)
                if not (asking or questions):  # skips wait for the answer, and their groups
                    tree.close_settled()
                await admit()
        progress.update(store.session.task_counts)
        completed = dag.counts().get("completed", 0)
        now = datetime.now(UTC)
        if policy.due(now, completed):
            create_checkpoint(store, trigger="auto")
            policy.mark(now, completed)

    await close_groups(store, run, dag, states, recorded_skips)
    if stopped_reason is not None and stop_trigger == "budget":
        # Every call of the run has returned now, those in flight at the stop included.
        stopped_reason = with_final_spend(stopped_reason, _spent(store))
    if stopped_reason is None and refused:
        stop_trigger = "provider"
    stopped_reason = "; ".join(filter(None, [stopped_reason, *refused])) or None
    # A cancelled flow run starts no task run, nor does one crashed from outside.
    if interrupt.signal_name != UI_CANCEL and not interrupt.flow_run_crashed:
        await run_skips(store, run, dag, states, tree)
    stuck: dict[str, str] = {}
    if interrupt.taken_over is not None and not _all_settled(dag):
        # The session goes on where it was resumed: no resume is offered here.
        stopped_reason = interrupt.taken_over
        logger.warning(stopped_reason)
        create_checkpoint(store, trigger="interrupt", description=stopped_reason)
        store.finish("interrupted", stopped_reason)
        status = "interrupted"
    elif interrupt.requested and not _all_settled(dag):
        stopped_reason = f"interrupted by {interrupt.signal_name}"
        resume = f"`{resume_of(store)}` continues"
        logger.warning(f"{stopped_reason}; {resume}")
        create_checkpoint(store, trigger="interrupt", description=stopped_reason)
        store.finish("interrupted", _with_failures(f"{stopped_reason}; {resume}", store))
        stopped_reason = _with_failures(stopped_reason, store)
        status = "interrupted"
    elif stopped_reason and not _all_settled(dag):
        stopped_reason = _with_failures(stopped_reason, store)
        create_checkpoint(store, trigger=stop_trigger, description=stopped_reason)
        store.finish("stopped", stopped_reason)
        status = "stopped"
    else:
        stopped_reason = None
        stuck = dag.stuck()
        for task_id, why in stuck.items():
            store.task_blocked(task_id, f"can never start: {why}")
            logger.error(f"{task_id} can never start: it {why}")
        if stuck:
            stopped_reason = "stalled: " + "; ".join(f"{t} {why}" for t, why in stuck.items())
        else:
            stopped_reason = failure_reason(store.session.plan.tasks)
        status = "failed" if stopped_reason else "completed"
        if budget is not None and (spent := _spent(store)) > budget:
            # The last calls in flight when the spend reached it: said, not left to the bill.
            logger.warning(
                f"the session spent ${spent:.4f}, past its budget of ${budget:g}: calls in "
                "flight when the spend reached it are paid too (docs/engine.md, Budgets)"
            )
        store.finish(status, stopped_reason)
        create_checkpoint(store, trigger="end")
    await push_session_work(store, logger)  # with a repo: the remote gets the end, too
    await publish_end(store, run, progress, status)
    run.progress = None  # its end is published
    no_change_ids = [t for t, o in run.outcomes.items() if o.completed_without_change]
    summary = run_summary(store, status, stopped_reason, stuck, no_change_ids)
    summary.taken_over = interrupt.taken_over is not None
    await tree.close(flow_state(summary))
    return summary


def _with_failures(reason: str, store: SessionStore) -> str:
    """A stop's ``reason``, with the tasks that failed before it: the run ends stopped (or
    interrupted), and its reason alone would leave them out of every view but the table."""
    failed = failure_reason(store.session.plan.tasks)
    return f"{reason}. Before the stop, {failed}" if failed else reason


async def _wait_for_tasks(
    running: dict[asyncio.Task, str], interrupt: Interrupt
) -> set[asyncio.Task]:
    """Until a task finishes, a signal arrives, or the grace period of an interrupt ends."""
    signalled = asyncio.create_task(interrupt.wait(interrupt.count))
    timeout = interrupt.grace_left() if interrupt.requested else None
    try:
        done, _ = await asyncio.wait(
            [*running, signalled], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        signalled.cancel()
    return {t for t in done if t in running}


# How long a stop lets a task run finish Prefect's own work on it (its start, its result, its
# end: a round trip or a file write, 2 s more when a busy SQLite server makes Prefect's client
# retry) before it is cancelled there all the same, and Prefect records a crash.
ENGINE_WAIT_SECONDS = 10.0


async def _cancel_running(
    store,
    run: ActiveRun,
    dag: DagProgress,
    running: dict[asyncio.Task, str],
    states,
    logger,
    interrupt: Interrupt,
) -> None:
    """Cancel the running tasks; a task that finished meanwhile is recorded, the others stay
    unfinished (``aca resume`` starts them again from a clean worktree). A task run is
    cancelled in its task function, where it ends Cancelled ("Interrupted",
    ``task_run._cancelled``); one in Prefect's engine then is left to reach its function,
    which stops at once, or its end (``ActiveRun.cut_short``)."""
    logger.warning(f"cancelling {len(running)} running task(s): {', '.join(running.values())}")
    cut = {task_id for task_id in running.values() if run.cut_short(task_id)}
    # A lost server keeps Prefect's calls in their retries, and can be told nothing anyway.
    wait = 0 if interrupt.server_lost else ENGINE_WAIT_SECONDS
    _, late = await asyncio.wait(running, timeout=wait)
    for task in late:
        # Still in Prefect's engine, before its task function. One cut there may have left it
        # already, and be in the engine reporting its end: cancelled there, it would crash.
        if running[task] not in cut and running[task] not in run.working:
            task.cancel()
    results = await asyncio.gather(*running, return_exceptions=True)
    for task_id, result in zip(list(running.values()), results, strict=True):
        if isinstance(result, State) and (result.is_completed() or result.is_cancelled()):
            states[task_id] = result
            taken_over = interrupt.taken_over is not None
            await _finish(store, run, dag, task_id, result, logger, taken_over=taken_over)
    running.clear()


def _all_settled(dag: DagProgress) -> bool:
    return all(t.status.state in ("completed", "failed", "skipped") for t in dag.leaves())


async def _run_one(run: ActiveRun, task_id: str, waits: list[State], tree: FlowTree) -> State:
    task = run.plan.task(task_id)
    runner = runner_for(run, task)
    try:
        # In the flow run of the task's group (flow_tree.py).
        return await tree.run(
            task, partial(runner, run.session_id, task_id, wait_for=waits, return_state=True)
        )
    except SLOT_REFUSED as refused:  # a tag limit, before the task run could start
        return limit_reached(run, concurrency_limit_stop(run, task, refused), "usage-limit")


async def _finish(
    store,
    run: ActiveRun,
    dag: DagProgress,
    task_id: str,
    state: State,
    logger,
    interrupt=None,
    taken_over: bool = False,
    questions: list[str] | None = None,
) -> str | None:
    """Mirror a finished task run into the session and the DAG. Returns why the run must
    stop (a budget or usage limit), if it must. ``taken_over``: the run stops because its
    session was taken over (``interrupt.taken_over`` says so too, when given). A failed task
    that asks a person goes into ``questions``, unsettled, when given."""
    if state.is_completed():
        outcome = TaskOutcome.model_validate(await state.aresult())
        run.outcomes[task_id] = outcome
        children, refused = _subtasks_taken(run, task_id, outcome)
        if refused is not None:
            # Its own part landed, and the rest of its work was left to subtasks that can
            # never run: the task is not done.
            await _fail(store, run, dag, task_id, state, refused, logger)
            return None
        if children:
            # First: its own work is in, and it completes when they all have (its group
            # closes, ``_record_settled``), then sending aca.task.completed.
            store.subtasks_added(task_id, children)
            dag.refresh()
        await store.off_loop(store.task_completed, task_id, _task_result(outcome))
        if not children:
            emit_task_event(store, task_id, "completed")
        dag.complete(task_id)
        push_landed_work(store, logger)  # with a repo: the remote gets what landed
        publish_report(store, run, task_id, state)
        return None
    if state.is_cancelled() and state.name == LIMIT_STOPPED:
        # A budget or usage limit stopped the task before it finished (task_run._limit_reached):
        # not a failure; it is pending again (its calls are on the bill), and the run stops.
        _pending_again(store, dag, task_id, state.message or "stopped by a limit")
        return state.message or "stopped by a limit"
    if state.is_cancelled():
        # Stopped by an interrupt (task_run._stopped): pending again, `aca resume` runs it.
        _pending_again(store, dag, task_id, state.message or "stopped")
        then = "`aca resume` runs it"
        if taken_over or (interrupt is not None and interrupt.taken_over is not None):
            then = "the resume that took the session over runs it"  # it goes on there
        logger.warning(f"{task_id} stays unfinished ({state.message}); {then}")
        return None
    error = await state.aresult(raise_on_failure=False)
    attempts = store.session.tasks[task_id].attempts
    if isinstance(error, TaskRunFailed):
        run.outcomes[task_id] = error.outcome
        reason = error.outcome.failure_reason or "failed"
        if error.outcome.conflict_files:
            reason += f" (gave up after {attempts} attempt(s))"
        elif questions is not None and run.config.approval.on_failure == "ask":
            # A person decides (docs/approval.md, "A stuck task asks"): the scheduler asks.
            questions.append(task_id)
            return None
    elif isinstance(error, AcaError):
        # A provider error names its fix already: say it plainly, with the attempts it took.
        reason = f"{error} (gave up after {attempts} attempt(s))"
    elif isinstance(error, OSError) and error.errno == errno.ENOSPC:
        # No bug of aca's and no verdict on the work: the machine's, and it says the fix.
        reason = (
            f"a disk is full ({error}): free space where {store.paths.workdir} (its worktrees "
            f"and session) and /tmp are, then `{resume_of(store)}` runs it again"
        )
    else:
        reason = f"{type(error).__name__}: {error}" if error else (state.message or "failed")
    await _fail(store, run, dag, task_id, state, reason, logger)


def _subtasks_taken(run: ActiveRun, task_id: str, outcome: TaskOutcome) -> tuple[list, str | None]:
    """The subtasks a completed task proposed, as they join the plan, or why they cannot.
    Each task's proposals were checked against the plan as it stood; two tasks running at
    once may still propose what cannot be taken together (a cycle through both)."""
    if not outcome.proposed_subtasks:
        return [], None
    children, refused = take_subtasks(run.plan, task_id, outcome.proposed_subtasks)
    if refused is not None:
        landed = f"in {outcome.commit_sha[:10]}" if outcome.commit_sha else "(no change)"
        return [], (
            f"{refused}. Its own part landed {landed}; the rest of its work was left to them."
        )
    get_run_logger().info(f"{task_id} proposed {len(children)} subtask(s)")
    return children, None


async def _fail(store, run: ActiveRun, dag: DagProgress, task_id: str, state, reason, logger):
    reason = readable(reason)  # a git error or an OSError may name a file that is not UTF-8
    await store.off_loop(store.task_failed, task_id, reason)
    emit_task_event(store, task_id, "failed", reason)
    logger.error(f"{task_id} failed: {first_line(reason)}")
    dag.fail(task_id, reason)
    publish_report(store, run, task_id, state)


async def _end_questions(store, run: ActiveRun, dag: DagProgress, asking, states, tree, logger):
    """End the questions being asked (the run stops): an answer that came first still counts,
    the others leave their tasks unfinished (a resume asks again)."""
    for question in asking:  # ended by a signal already, unless it came just now
        question.cancel()
    await asyncio.gather(*asking, return_exceptions=True)
    for question, task_id in asking.items():
        answer = answer_of(question)
        await _settle_answer(store, run, dag, task_id, states, tree, answer, logger)
    asking.clear()


def _failure(run: ActiveRun, task_id: str) -> str:
    """Why a task that asks a person failed."""
    return run.outcomes[task_id].failure_reason or "failed"


async def _settle_answer(
    store: SessionStore, run: ActiveRun, dag: DagProgress, task_id: str, states, tree, answer,
    logger
) -> None:  # fmt: skip
    """A failed task after a person's ``answer`` (``None``: the run stopped first)."""
    state = states[task_id]
    reason = _failure(run, task_id)
    if answer is None:
        _pending_again(store, dag, task_id, reason)
        logger.warning(f"{task_id} stays unfinished: the run stopped before an answer")
        return
    if answer.action == "retry":
        _pending_again(store, dag, task_id, reason)
        add_hint(run, task_id, answer.hint, run.outcomes[task_id].human_question)
        return
    reason = reviewed_reason(reason, answer)
    if answer.action == "skip":
        dag.release(task_id)
        why = f"skipped after it failed: {first_line(reason)}"
        run.plan.task(task_id).status = TaskStatus(state="skipped", reason=why)
        store.task_skipped(task_id, why)
        # Its failed task run is followed by one that ends Skipped, as the session says: the
        # UI showed it Failed in a Completed group.
        await record_skip(store, run, states, tree, task_id)
        return
    await _fail(store, run, dag, task_id, state, reason, logger)


def _pending_again(store: SessionStore, dag: DagProgress, task_id: str, why: str) -> None:
    """A task that ended without a verdict (stopped, or to be retried) is pending again."""
    store.task_failed(task_id, why, will_retry=True)
    dag.release(task_id)


def _task_result(outcome: TaskOutcome) -> TaskResult:
    # Its spend is on the ledger already: one ``call`` event per provider call.
    return TaskResult(
        commit=outcome.commit_sha,
        outcome=outcome.outcome,
        no_change_reason=outcome.no_change_reason,
        summary=outcome.summary,
    )


def _spent(store: SessionStore) -> float:
    """The session's spend so far, from its ledger: every call of every attempt and run."""
    return store.session.cost_usd
