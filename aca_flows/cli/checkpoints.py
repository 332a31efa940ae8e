"""``aca checkpoints list|create`` and ``aca --list-checkpoints``.

Listing takes no lock; ``create`` only adds a new checkpoint file. Both are safe while a run
writes the session. No prefect import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aca_flows._words import one_line, shown
from aca_flows.cli.options import ExistingWorkdir, JsonOutput
from aca_flows.cli.sessions import console, format_time

if TYPE_CHECKING:  # imported where used: `aca --help` pays for none of it
    from rich.table import Table

    from aca_flows.session.checkpoints import Checkpoint

__all__ = ["app", "print_checkpoints"]

app = typer.Typer(no_args_is_help=True, help="List and create checkpoints of sessions.")

SessionOption = Annotated[
    str | None,
    typer.Option("--session", help="A session id (or unique prefix); default: the newest."),
]


@app.command("list", short_help="List checkpoints, newest first.")
def list_command(
    all_sessions: Annotated[
        bool, typer.Option("--all-sessions", help="Checkpoints of every session, not one.")
    ] = False,
    session: SessionOption = None,
    workdir: ExistingWorkdir = Path("."),
    json_output: JsonOutput = False,
) -> None:
    """List checkpoints, newest first: id, session, time, tasks done/total, description."""
    print_checkpoints(workdir, all_sessions, session_id=session, as_json=json_output)


def _described(description: str) -> str:
    # The description is how a person picks this checkpoint out of the list later.
    if not description.strip():
        raise typer.BadParameter(
            'the description is empty: say what this point of the work is, e.g. "before the '
            'refactor"'
        )
    return description


@app.command("create", short_help="Checkpoint the newest session (or --session) now.")
def create_command(
    description: Annotated[
        str, typer.Argument(help="What this point of the work is.", callback=_described)
    ],
    session: SessionOption = None,
    workdir: ExistingWorkdir = Path("."),
    json_output: JsonOutput = False,
) -> None:
    """Checkpoint the newest session of the workdir (or --session) now; resumable by its id."""
    from aca_flows._words import resume_command
    from aca_flows.session.checkpoints import create_manual_checkpoint
    from aca_flows.session.reading import load_session

    if session is None:
        _require_a_session(workdir.resolve())
    checkpoint = create_manual_checkpoint(workdir, description, session)
    if json_output:
        typer.echo(json.dumps(checkpoint.model_dump(mode="json"), indent=2))
        return
    # From where the reader is, and with the remote a --repo session pushes to.
    remote = getattr(load_session(workdir.resolve(), checkpoint.session_id).remote, "url", None)
    typer.echo(
        f"Created checkpoint {checkpoint.id} of session {checkpoint.session_id} "
        f"({checkpoint.tasks_done}/{checkpoint.tasks_total} tasks done). "
        f"Resume with `{resume_command(checkpoint.id, workdir, remote)}`."
    )


def _require_a_session(workdir: Path) -> None:
    """Not "no session '(latest)'": a workdir without sessions is said to hold none."""
    from aca_flows.errors import InputError
    from aca_flows.session.reading import latest_session_id

    if latest_session_id(workdir) is None:
        raise InputError(
            f"no session to checkpoint: {workdir / '.aca' / 'sessions'} holds none. A checkpoint "
            "marks a point of a session's work: run a task file first (`aca run FILE`), or give "
            "--workdir the repository the session worked on."
        )


def print_checkpoints(
    workdir: Path,
    all_sessions: bool = False,
    *,
    session_id: str | None = None,
    as_json: bool = False,
) -> None:
    """Print the checkpoints of ``session_id``, of the newest session, or of all sessions.

    ``aca --list-checkpoints`` calls this with ``all_sessions=True``. Raises
    ``UnknownSessionError`` for a ``session_id`` that matches no session.
    """
    from aca_flows.session.checkpoints import list_checkpoints
    from aca_flows.session.reading import latest_session_id

    workdir = Path(workdir).resolve()
    if all_sessions:
        checkpoints = list_checkpoints(workdir)
        scope = "all sessions"
    else:
        session_id = session_id or latest_session_id(workdir)
        checkpoints = list_checkpoints(workdir, session_id) if session_id else []
        scope = f"session {session_id}" if session_id else "no session"
    if as_json:
        typer.echo(json.dumps([c.model_dump(mode="json") for c in checkpoints], indent=2))
        return
    if not checkpoints:
        where = workdir / ".aca" / "sessions"
        if latest_session_id(workdir) is None:  # `checkpoints create` needs a session too
            typer.echo(f"No checkpoints in {where}: no session yet. A run writes them as it goes.")
            return
        typer.echo(
            f"No checkpoints in {where} ({scope}). A run writes them as it goes; "
            '`aca checkpoints create "description"` adds one.'
        )
        return
    console().print(_table(checkpoints, f"Checkpoints of {workdir} ({scope})"))


def _table(checkpoints: list[Checkpoint], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    table.add_column("session", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("tasks", justify="right", no_wrap=True)
    table.add_column("trigger", no_wrap=True)
    table.add_column("description")
    for cp in checkpoints:
        table.add_row(
            cp.id,
            cp.session_id,
            format_time(cp.created_at),
            f"{cp.tasks_done}/{cp.tasks_total}",
            cp.trigger,
            one_line(shown(cp.description)),  # it may hold what the terminal would act on
        )
    return table
