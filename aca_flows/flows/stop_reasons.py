"""Why a task's error stops the whole run, not just the task, in words that name the fix and
the resume: a provider that cannot serve the run (``cannot_serve_stop``), one that still says
"wait" after every retry (``rate_limited_stop``), the session branch gone
(``branch_lost_stop``). The task stays pending; its task run ends "Stopped"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError as GlobalSlotRefused
from prefect.concurrency.v1._asyncio import ConcurrencySlotAcquisitionError as TagSlotRefused

from aca_flows.errors import KeyRejected, ProviderCannotServe, TransientProviderError
from aca_flows.flows.artifacts import first_line
from aca_flows.flows.secret_keys import KEY_VARIABLES
from aca_flows.plan.models import Task
from aca_flows.workspace.repository import SessionBranchLost, SessionBranchReset

if TYPE_CHECKING:
    from aca_flows.flows.task_run import ActiveRun

__all__ = [
    "SLOT_REFUSED",
    "WAIT_ANSWERS",
    "branch_lost_stop",
    "branch_reset_stop",
    "cannot_serve_stop",
    "concurrency_limit_stop",
    "rate_limited_stop",
    "resume_of_run",
]


def cannot_serve_stop(run: ActiveRun, task_: Task, error: ProviderCannotServe) -> str:
    """Why the run starts no more tasks of ``task_``'s provider, which cannot serve it (it
    refused its key, the account's credit is spent): the provider, what it said, the fix (for
    a key, the variable or Secret block), and the resume. Kept in ``run.cannot_serve``, so
    its other tasks stop with the same words."""
    name = task_.provider or run.default_provider
    if name in run.cannot_serve:
        return run.cannot_serve[name]
    said = ": ".join(str(p) for p in (error.status_code, first_line(error.detail)) if p)
    fix = error.fix
    block = run.config.provider(name).api_key_secret if name in KEY_VARIABLES else None
    # The flow reads the key from there, not from the variable (secret_keys.py).
    if block and isinstance(error, KeyRejected):
        fix = (
            f"save a valid key in the Prefect Secret block {block!r} "
            f"([providers.{name}] api_key_secret)"
        )
    resume = resume_of_run(run)
    then = f"`{resume}` continues" if resume else "resume the session"
    reason = (
        f"{name} {error.what}{f' ({said})' if said else ''}, so no {name} task "
        f"starts: {fix}, then {then}"
    )
    run.cannot_serve[name] = reason
    return reason


# A provider's "wait": rate limited (429), overloaded (529).
WAIT_ANSWERS = (429, 529)


def rate_limited_stop(run: ActiveRun, task_: Task, error: TransientProviderError) -> str:
    """Why the run stops when a task's provider still answers "wait" (429, 529) after every
    retry of the call and every attempt of the task: a limit of the account or the
    provider's load, no verdict on the task, which stays pending; later tasks would only
    wait the same way. Failed, it skipped its dependents and exited 1."""
    name = task_.provider or run.default_provider
    what = "rate limited" if error.status_code == 429 else "overloaded"
    resume = resume_of_run(run)
    then = f"`{resume}` continues" if resume else "resume the session"
    return (
        f"{name} still answered {error.status_code} ({what}) after every retry of task "
        f"{task_.id}'s call, so the run stopped (task {task_.id} did not fail: it stays "
        "pending); once the limit clears (or with a lower [rate_limiting] "
        f"max_requests_per_minute or --max-concurrent), {then}"
    )


# A Prefect concurrency limit that holds no slot for a task: a tag limit on its task run
# (``provider:<name>``, ``aca``), or the global limit ``aca limits sync`` made for its calls.
SLOT_REFUSED = (TagSlotRefused, GlobalSlotRefused)


def concurrency_limit_stop(run: ActiveRun, task_: Task, error: Exception) -> str:
    """Why the run stops when a Prefect concurrency limit can never give ``task_`` a slot (a
    limit of 0): no verdict on the task, which stays pending. It ended the run in two
    tracebacks, or failed every task as if its work were bad."""
    said = " ".join(str(error).split())[:300]
    return (
        f"a Prefect concurrency limit gives task {task_.id} no slot ({said}), so the run "
        f"stopped (task {task_.id} did not fail: it stays pending); raise the limit (the "
        "Prefect UI's Concurrency page, `prefect concurrency-limit`, or `aca limits sync` "
        f"for a provider's), then `{resume_of_run(run)}` continues"
    )


def branch_reset_stop(run: ActiveRun, error: SessionBranchReset) -> str:
    """Why the run starts no more tasks: the session branch was moved off the work that
    landed. The fix names the commit aca left it at, which holds all of that work."""
    if run.store is None:
        return str(error)
    branch = run.store.session.branch
    return (
        f"the session branch {branch} was reset while the run ran: it no longer holds "
        f"{error.seen[:12]}, where aca left it, and the work that landed there is off the "
        f"branch, so no task can start from it or land on it: restore it with `git branch -f "
        f"{branch} {error.seen}`, then `{resume_of_run(run)}` continues"
    )


def branch_lost_stop(run: ActiveRun, error: SessionBranchLost) -> str:
    """Why the run starts no more tasks: the session branch is gone. The fix is the one a
    resume would refuse with until it is done (``run_inputs.refuse_lost_work``): the branch
    restored at the last commit on record."""
    if run.store is None:
        return str(error)
    session = run.store.session
    landed = [
        record
        for task_id in session.completed_task_ids
        if (record := session.tasks.get(task_id)) is not None and record.commit
    ]
    gone = f"the session branch {session.branch} is gone (deleted or renamed while the run ran)"
    then = f"`{resume_of_run(run)}` continues"
    if not landed:
        return f"{gone}, so no task can start from it: {then}"
    last = max(landed, key=lambda record: record.finished_at or session.created_at)
    return (
        f"{gone}, so no task can start from it or land on it: restore it with "
        f"`git branch -f {session.branch} {last.commit}` (the last commit on record), "
        f"then {then}"
    )


def resume_of_run(run: ActiveRun) -> str | None:
    """The session's ``aca resume`` as the reader runs it (with the run's remote), for a task
    failure a resume undoes; ``None`` for a run without a session store."""
    from aca_flows.flows.remote_sync import resume_of

    return resume_of(run.store) if run.store is not None else None
