"""``aca sessions list|show``: what ran in a workdir, what it cost, where it stands.

Reads ``.aca/sessions/*/meta`` without taking any lock, so it is safe while a run writes.
No prefect import: these commands must answer at once.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aca_flows._words import counted, format_cost, one_line, resume_command, shown, workdir_option
from aca_flows.cli.options import ExistingWorkdir, JsonOutput

if TYPE_CHECKING:  # imported where used: `aca --help` pays for none of it
    from rich.console import Console
    from rich.table import Table

    from aca_flows.plan.models import ExecutionPlan
    from aca_flows.session.reading import SessionScan
    from aca_flows.session.record import PullRequestState, SessionRecord, TaskRun
    from aca_flows.session.usage import UsageEntry

__all__ = ["app", "console", "format_time", "no_sessions", "read_sessions"]

app = typer.Typer(no_args_is_help=True, help="List and inspect the sessions of a workdir.")


@app.command("list", short_help="List sessions, newest first, with status and cost.")
def list_command(workdir: ExistingWorkdir = Path("."), json_output: JsonOutput = False) -> None:
    """List sessions, newest first: id, name, started, status, tasks by state, tokens, cost."""
    from rich.table import Table

    from aca_flows.session.reading import display_status
    from aca_flows.session.record import describe_counts

    scan = read_sessions(workdir)
    if json_output:
        rows = [_summary(s, workdir) for s in scan.sessions]
        broken = [{"path": str(e.path), "problem": e.problem, "fix": e.fix} for e in scan.damaged]
        typer.echo(json.dumps({"sessions": rows, "damaged": broken}, indent=2))
        return
    if not scan.sessions:
        no_sessions(workdir, scan)
        return
    table = Table(title=f"Sessions of {Path(workdir).resolve()}")
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("started", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("tasks", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    for session in scan.sessions:
        status = display_status(session, workdir)
        table.add_row(
            session.id,
            one_line(shown(session.name)),
            format_time(session.created_at),
            one_line(shown(status)),  # it quotes an agent's question
            describe_counts(_counts_now(session, status)),
            f"{session.total_tokens:,}",
            format_cost(session.cost_usd, session.unpriced_calls),
        )
    console().print(table)


@app.command("show", short_help="Show one session: tasks, branch, cost, how to resume.")
def show_command(
    session_id: Annotated[str, typer.Argument(help="A session id, or a unique prefix of one.")],
    workdir: ExistingWorkdir = Path("."),
    json_output: JsonOutput = False,
) -> None:
    """Show one session: its tasks and statuses, branch, duration, last checkpoint, costs."""
    from aca_flows.session.checkpoints import list_checkpoints
    from aca_flows.session.reading import display_status
    from aca_flows.session.record import describe_counts

    session = _session_named(workdir, session_id)
    checkpoints = list_checkpoints(workdir, session.id)
    last = checkpoints[0] if checkpoints else None
    if json_output:
        now = display_status(session, workdir)
        record = session.model_dump(mode="json")
        if record["status"] == "running" and now == "interrupted":
            # Its process is gone: "running" is what its record says, not what is true.
            record["status"] = "interrupted"
        data = {
            "session": record,
            "status_now": now,
            "task_counts": _counts_now(session, now),
            "duration_seconds": int(session.duration.total_seconds()),
            "last_checkpoint": last.model_dump(mode="json") if last else None,
        }
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.text import Text

    out = console()
    out.print(Text.assemble((f"Session {session.id}", "bold"), f"  {shown(session.name)}"))
    status = display_status(session, workdir)
    # A process killed outright (SIGKILL, out of memory) recorded no end, nor a way on.
    killed = session.status == "running" and status == "interrupted"
    reason = session.status_reason
    if killed:
        resume = resume_command(session.id, workdir, getattr(session.remote, "url", None))
        reason = f"its process ended without recording its end; `{resume}` continues"
    facts = [
        ("status", status + _reason(reason)),
        ("branch", session.branch),
        ("workdir", session.workdir),
        ("provider", session.provider + (f" / {session.model}" if session.model else "")),
        ("started", format_time(session.created_at)),
        ("duration", format_duration(session.duration)),
        ("tasks", describe_counts(_counts_now(session, status))),
        (
            "last checkpoint",
            f"{last.id} ({format_time(last.created_at)}, {last.description})" if last else "none",
        ),  # fmt: skip
    ]
    if session.remote is not None:  # a run with --repo
        facts.insert(2, ("remote", _remote_fact(session, workdir)))
    if session.pull_request is not None:  # a run with --open-pr
        facts.insert(3, ("pull request", _pull_request_fact(session.pull_request)))
    for label, value in facts:
        out.print(f"  {label:<16}{shown(value)}")
    _print_waiting(out, session, status, workdir)
    out.print(_task_table(session, interrupted=killed))
    if no_change := session.completed_without_change:
        out.print("Completed without a change (the agent's reason):")
        for run in no_change:
            check = _no_change_check(session.plan, run.task_id)
            out.print(f"  {run.task_id}: {shown(run.no_change_reason or '')} ({shown(check)})")
    out.print(usage_table(session.usage, title="Cost by provider and model"))


def _no_change_check(plan: ExecutionPlan, task_id: str) -> str:
    """What confirmed a task's "no change needed": its verify command, or nothing."""
    from aca_flows.plan.models import verify_command_for
    from aca_flows.plan.vacuous_check import checks_nothing

    command = verify_command_for(plan, plan.task(task_id))  # as the agent ran it
    if not command:
        return "not checked: no verify command"
    if checks_nothing(command):
        return f"not checked: `{command}` checks nothing"
    return f"confirmed by `{command}`"


def _session_named(workdir: Path, session_id: str) -> SessionRecord:
    """The session ``session_id`` names; a checkpoint id (which `aca resume` takes) is told
    apart from a mistyped session id, with the command that shows its session."""
    from aca_flows.errors import InputError
    from aca_flows.session.checkpoints import CHECKPOINT_PREFIX, find_checkpoint
    from aca_flows.session.errors import UnknownCheckpointError, UnknownSessionError
    from aca_flows.session.reading import load_session

    try:
        return load_session(workdir, session_id)
    except UnknownSessionError as unknown:
        if not session_id.startswith(CHECKPOINT_PREFIX):
            raise
        try:
            checkpoint = find_checkpoint(workdir, session_id)
        except UnknownCheckpointError:
            raise unknown from None
    where = workdir_option(workdir)
    raise InputError(
        f"{checkpoint.id} is a checkpoint of session {checkpoint.session_id}: `aca sessions "
        f"show {checkpoint.session_id}{where}` shows the session, "
        f"`{resume_command(checkpoint.id, workdir)}` resumes from the checkpoint."
    )


def _print_waiting(out: Console, session: SessionRecord, status: str, workdir: Path) -> None:
    """What a waiting run asks, whole, and how to answer it (from the reader's folder)."""
    where = workdir_option(workdir)
    if status == "waiting for approval":
        out.print(
            f"The plan waits for approval: `aca approve {session.id}{where}` or "
            f"`aca reject {session.id}{where} --reason TEXT`, or the form of flow run "
            f"{session.approval.flow_run_id} in the Prefect UI."
        )
    elif status.startswith("waiting: task") and session.question is not None:
        asked = session.question
        out.print(f"Task {asked.task_id} waits for an answer:")
        out.print(f"  {shown(asked.question)}")
        out.print(
            f"  `aca answer {session.id} {asked.task_id}{where} --retry --hint TEXT` (or "
            f"--skip, --fail), or the form of flow run {asked.flow_run_id} in the Prefect UI."
        )


def _remote_fact(session: SessionRecord, workdir: Path) -> str:
    from aca_flows.flows.summary import unpushed_work

    remote = session.remote
    unpushed = unpushed_work(remote, workdir.resolve(), session.id)
    if unpushed:
        return f"{remote.url} (NOT pushed: {unpushed})"
    return f"{remote.url} (pushed {(remote.pushed_head or '')[:10]})"


def _pull_request_fact(pull: PullRequestState) -> str:
    return pull.url or f"NOT delivered: {one_line(pull.error or 'no reason given')}"


def read_sessions(workdir: Path) -> SessionScan:
    """The sessions of ``workdir``; each that cannot be read is warned of on stderr, its
    problem and its fix (a view without it would leave its work and spend out unsaid)."""
    from aca_flows.session.reading import scan_sessions

    scan = scan_sessions(workdir)
    for damaged in scan.damaged:
        typer.echo(f"warning: {damaged}", err=True)
    return scan


def no_sessions(workdir: Path, scan: SessionScan) -> None:
    """Say that ``workdir`` has no readable session (a table of nothing reads as a wrong
    folder), and how many there are that cannot be read."""
    where = Path(workdir).resolve() / ".aca" / "sessions"
    if scan.damaged:  # they are there, only unreadable: the warnings above say why
        damaged = counted(len(scan.damaged), "damaged session")
        typer.echo(f"No readable sessions in {where}; {damaged} (see above).")
    else:
        typer.echo(f"No sessions in {where}.")


def usage_table(entries: list[UsageEntry], title: str) -> Table:
    """Tokens and USD per provider and model, with a total row (also for ``aca usage``)."""
    from rich.table import Table

    from aca_flows.session.usage import total_cost, total_tokens, unpriced_calls

    table = Table(title=title)
    for name in ("provider", "model"):
        table.add_column(name, no_wrap=True)
    for name in ("calls", "input", "output", "cache read", "cache write", "cost"):
        table.add_column(name, justify="right", no_wrap=True)
    for e in entries:
        u = e.usage
        table.add_row(
            e.provider,
            e.model or "-",
            str(e.calls),
            f"{u.input_tokens:,}",
            f"{u.output_tokens:,}",
            f"{u.cache_read_tokens:,}",
            f"{u.cache_write_tokens:,}",
            format_cost(e.cost_usd, e.unpriced_calls),
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        str(sum(e.calls for e in entries)),
        *(
            f"{sum(getattr(e.usage, field) for e in entries):,}"
            for field in (
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
            )
        ),
        format_cost(total_cost(entries), unpriced_calls(entries)),
    )
    table.caption = f"{total_tokens(entries):,} tokens in all"
    return table


def console() -> Console:
    """A rich console that prints text as it is: names, titles and reasons are the user's
    and the agent's ("[/]" in a title is no markup). When output is not a terminal (pipes,
    tests) it is wide enough that ids are never cut."""
    from rich.console import Console

    out = Console(highlight=False, markup=False)
    if not out.is_terminal:
        out = Console(highlight=False, markup=False, width=200)
    return out


def format_time(moment: datetime) -> str:
    """In the machine's local time zone, to the second."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_duration(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def _task_table(session: SessionRecord, interrupted: bool = False) -> Table:
    """``interrupted``: the session's process is gone, so none of its tasks is running."""
    from rich.table import Table

    table = Table(title="Tasks")
    table.add_column("task", no_wrap=True)
    table.add_column("title")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("commit", no_wrap=True)
    table.add_column("tokens", justify="right")
    table.add_column("cost", justify="right")
    for task, depth in _tree_order(session):
        run = session.tasks.get(task.id)
        table.add_row(
            "  " * depth + task.id,
            one_line(shown(task.title)),
            shown(_status_text(task, run, interrupted)),
            str(run.attempts if run else 0),
            (run.commit or "")[:10] if run else "",
            f"{run.total_tokens:,}" if run else "0",
            format_cost(run.cost_usd, run.unpriced_calls) if run else format_cost(0),
        )
    return table


def _counts_now(session, status: str) -> dict[str, int]:
    """The session's task counts; a killed one's (its record says running, its process is
    gone) count no task in progress, as its task table says none is."""
    from aca_flows.session.record import counts_after_a_kill

    killed = session.status == "running" and status == "interrupted"
    return counts_after_a_kill(session.task_counts) if killed else session.task_counts


def _status_text(task, run: TaskRun | None, interrupted: bool = False) -> str:
    """The task's status; a completed task says "completed, no change" when that was its
    evidence, and "completed before" when the task file marked it done, so neither reads like
    committed work; one "in progress" when its session's process is gone says it was
    interrupted; one that proposed subtasks, that it ends with them."""
    if task.children and task.status.state == "in_progress":
        return "its own work landed; it ends with its subtasks"
    if interrupted and task.status.state == "in_progress":
        return "interrupted (starts again on resume)"
    if task.status.state == "completed" and run is not None and run.no_change:
        return "completed, no change"
    if task.status.state == "completed" and not task.children and (run is None or run.never_ran):
        return "completed before (in the task file)"
    return _with_short_output(str(task.status))


# A failed check's output, as a reason holds it (up to 4,000 characters), would fill the
# screen from one table cell: its last lines say why.
_SHOWN_OUTPUT_LINES = 5


def _with_short_output(text: str) -> str:
    reason, marker, output = text.partition(" Output:\n")
    lines = output.splitlines()
    if not marker or len(lines) <= _SHOWN_OUTPUT_LINES:
        return text
    shown = "\n".join(lines[-_SHOWN_OUTPUT_LINES:])
    return (
        f"{reason} Output, its last {_SHOWN_OUTPUT_LINES} lines (the task log holds more):\n{shown}"
    )


def _tree_order(session: SessionRecord):
    """Tasks depth-first from the roots, children under their parent, each once."""
    by_id = {task.id: task for task in session.plan.tasks}
    seen: set[str] = set()

    def walk(task_id: str, depth: int):
        if task_id in seen or task_id not in by_id:
            return
        seen.add(task_id)
        yield by_id[task_id], depth
        for child in by_id[task_id].children:
            yield from walk(child, depth + 1)

    for task in session.plan.tasks:
        if task.parent_id is None or task.parent_id not in by_id:
            yield from walk(task.id, 0)
    for task in session.plan.tasks:  # a cycle in parent links would leave some unvisited
        yield from walk(task.id, 0)


def _summary(session: SessionRecord, workdir: Path) -> dict[str, Any]:
    from aca_flows.session.reading import display_status

    status = display_status(session, workdir)
    return {
        "id": session.id,
        "name": session.name,
        "started": session.created_at.isoformat(),
        "status": status,
        "tasks_done": session.tasks_done,
        "task_counts": _counts_now(session, status),
        "tasks_total": session.tasks_total,
        "tokens": session.total_tokens,
        "cost_usd": session.cost_usd,
        "unpriced_calls": session.unpriced_calls,
        "branch": session.branch,
    }


def _reason(reason: str | None) -> str:
    return f" ({reason})" if reason else ""
