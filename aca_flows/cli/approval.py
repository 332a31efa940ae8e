"""``aca approve`` and ``aca reject``: answer a run that waits for approval of its plan.

They do what the form on the paused flow run's page in the Prefect UI does (docs/approval.md):
resume the session's waiting flow run with a decision. The session records the flow run and
its server; neither command takes the session's lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aca_flows.cli.options import Workdir

__all__ = ["approve_command", "reject_command"]

SessionArg = Annotated[str, typer.Argument(help="The waiting session (id or unique prefix).")]


def approve_command(
    session: SessionArg,
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", metavar="ID", help="A task not to run (repeatable)."),
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=1, max=64, help="Tasks run at once.")
    ] = None,
    note: Annotated[
        str, typer.Option("--note", help="A note appended to every task's prompt.")
    ] = "",
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the session).")] = "",
    workdir: Workdir = Path("."),
) -> None:
    """Approve the plan of a waiting run, optionally with changes."""
    answer = {
        "decision": "approve",
        "skip": skip or [],
        "max_concurrent": max_concurrent,
        "note": note,
        "reason": reason,
    }
    _send(workdir, session, answer, "approved")


def reject_command(
    session: SessionArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the session).")],
    workdir: Workdir = Path("."),
) -> None:
    """Reject the plan of a waiting run: it ends Cancelled, no task runs."""
    _send(workdir, session, {"decision": "reject", "reason": reason}, "rejected")


def _send(workdir: Path, session: str, answer: dict, verb: str) -> None:
    from aca_flows.flows.approval import send_decision

    flow_run_id = send_decision(workdir.resolve(), session, answer)
    typer.echo(f"Session {session}: plan {verb} (flow run {flow_run_id} resumed).")
