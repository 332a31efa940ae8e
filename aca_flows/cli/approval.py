"""``aca approve``, ``aca reject`` and ``aca answer``: answer a run that waits for a person.

``approve`` and ``reject`` decide on a plan waiting for approval; ``answer`` on a failed task
that asks what to do (``[approval] on_failure = "ask"``). They do what the forms on the paused
flow run's page in the Prefect UI do (docs/approval.md): resume the session's waiting flow run
with the answer. The session records the flow run and its server; none of them takes the
session's lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aca_flows.cli.options import ExistingWorkdir

__all__ = ["answer_command", "approve_command", "reject_command"]

SessionArg = Annotated[str, typer.Argument(help="The waiting session (id or unique prefix).")]


def approve_command(
    session: SessionArg,
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", metavar="ID", help="Tasks not to run (repeatable, or ID,ID)."),
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=1, max=64, help="Tasks run at once.")
    ] = None,
    note: Annotated[
        str, typer.Option("--note", help="A note appended to every task's prompt.")
    ] = "",
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the session).")] = "",
    workdir: ExistingWorkdir = Path("."),
) -> None:
    """Approve the plan of a waiting run, optionally with changes."""
    from aca_flows.errors import InputError

    if skip is not None and not any(part.strip() for value in skip for part in value.split(",")):
        # An empty variable (`--skip "$TASKS"`) approved the whole plan.
        raise InputError("--skip names no task; give task ids (--skip a,b), or leave it out.")
    answer = {
        "decision": "approve",
        # `--skip a,b` as task files write lists, as well as `--skip a --skip b`.
        "skip": [part.strip() for value in skip or [] for part in value.split(",") if part.strip()],
        "max_concurrent": max_concurrent,
        "note": note,
        "reason": reason,
    }
    _send(workdir, session, answer, "approved")


def reject_command(
    session: SessionArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the session).")] = "",
    workdir: ExistingWorkdir = Path("."),
) -> None:
    """Reject the plan of a waiting run: it ends Cancelled, no task runs."""
    _send(workdir, session, {"decision": "reject", "reason": reason}, "rejected")


def _send(workdir: Path, session: str, answer: dict, verb: str) -> None:
    from aca_flows.flows.approval import send_decision
    from aca_flows.session.reading import resolve_session_id

    session = resolve_session_id(workdir.resolve(), session)  # a prefix names the whole id
    flow_run_id = send_decision(workdir.resolve(), session, answer)
    typer.echo(f"Session {session}: plan {verb} (flow run {flow_run_id} resumed).")


def answer_command(
    session: SessionArg,
    task: Annotated[str, typer.Argument(help="The id of the task that waits for an answer.")],
    retry: Annotated[bool, typer.Option("--retry", help="Run the task again.")] = False,
    skip: Annotated[
        bool, typer.Option("--skip", help="Skip the task; its dependents still run.")
    ] = False,
    fail: Annotated[
        bool, typer.Option("--fail", help="Fail the task; its dependents are skipped.")
    ] = False,
    hint: Annotated[
        str, typer.Option("--hint", help="With --retry: appended to the task's prompt.")
    ] = "",
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the task's status).")] = "",
    workdir: ExistingWorkdir = Path("."),
) -> None:
    """Answer a failed task that waits for a person: --retry [--hint TEXT], --skip or --fail."""
    from aca_flows.errors import InputError

    chosen = [name for name, on in (("retry", retry), ("skip", skip), ("fail", fail)) if on]
    if len(chosen) != 1:
        raise InputError(
            "`aca answer` needs exactly one of --retry (with --hint TEXT), --skip or --fail."
        )
    action = chosen[0]
    if hint and action != "retry":
        raise InputError(f"--hint goes with --retry; --{action} takes --reason instead.")
    from aca_flows.flows.task_help import send_answer
    from aca_flows.session.reading import resolve_session_id

    session = resolve_session_id(workdir.resolve(), session)  # a prefix names the whole id
    answer = {"action": action, "hint": hint, "reason": reason}
    flow_run_id = send_answer(workdir.resolve(), session, task, answer)
    typer.echo(f"Session {session}, task {task}: {action} (flow run {flow_run_id} resumed).")
