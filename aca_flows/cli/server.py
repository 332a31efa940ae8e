"""``aca server start|status|stop``: a local Prefect server (with its UI) that outlives runs,
and the warm runner beside it (cli/warm_runner.py).

While it is up, ``aca run`` uses it: runs start at once and can be watched in the UI.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from aca_flows.cli.options import JsonOutput
from aca_flows.cli.warm_runner import WarmRunner
from aca_flows.errors import InputError

app = typer.Typer(no_args_is_help=True)


@app.command("start", short_help="Start the server and the warm runner in the background.")
def start(
    # 0 would let the server pick a port aca does not know (and wait for it 180 s in vain).
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port of the server and its UI [4200]."),
    ] = None,
) -> None:
    """Start the server and the warm runner in the background (they keep running after this
    command ends)."""
    from aca_flows.flows.local_servers import LocalServer, ServerError
    from aca_flows.workspace.file_lock import FileLock

    server = LocalServer()
    already = server.state()
    if already is not None:
        # "already running" is true only of a server that answers, where it was asked for.
        if port is not None and port != already.port:
            raise InputError(
                f"aca's local Prefect server already runs on port {already.port} (pid "
                f"{already.pid}), not {port}: `aca server stop` first to move it."
            )
        if server.api_url() is None:
            raise ServerError(
                f"aca's local Prefect server (pid {already.pid}) runs but does NOT answer at "
                f"{already.url}; its log: {already.log}. `aca server stop`, then `aca server "
                "start`, starts it again."
            )
    state, started = server.start(port=port)
    with FileLock(server.start_lock):  # one runner, however many starts at once
        runner = WarmRunner().start()
    ui = state.url.removesuffix("/api")
    verb = "started" if started else "already running"
    typer.echo(f"Prefect server {verb} (pid {state.pid}): UI at {ui}, API at {state.url}")
    typer.echo(f"log: {state.log}; `aca run` uses it while it is up; `aca server stop` ends it.")
    if runner is not None:
        typer.echo(f"warm runner (pid {runner}): runs start with Prefect and the SDKs loaded.")
    else:
        log = WarmRunner().log_file
        typer.echo(f"the warm runner did not start (runs start cold); its log: {log}")


@app.command("status")
def status(json_output: JsonOutput = False) -> None:
    """Whether the local server runs, and where. Exit code 1 when it does not."""
    from aca_flows.flows.local_servers import LocalServer

    server = LocalServer()
    state = server.state()
    healthy = state is not None and server.api_url() is not None
    if json_output:
        info = {"running": state is not None, "healthy": healthy}
        if state is not None:
            info |= {"pid": state.pid, "url": state.url, "log": state.log}
            info["runner_pid"] = WarmRunner().pid()
        typer.echo(json.dumps(info))
    elif state is None:
        typer.echo("no local Prefect server is running; `aca server start` starts one.")
        if (runner := WarmRunner().pid()) is not None:  # the server was killed, not stopped
            typer.echo(f"Its warm runner (pid {runner}) still runs: `aca server stop` ends it.")
    else:
        answer = "answering" if healthy else "NOT answering (see its log)"
        typer.echo(f"Prefect server pid {state.pid} at {state.url}: {answer}; log: {state.log}")
        typer.echo(_runner_line(WarmRunner()))
    if not healthy:
        raise typer.Exit(1)


def _runner_line(runner: WarmRunner) -> str:
    if (pid := runner.pid()) is not None:
        return f"warm runner pid {pid}: runs start warm"
    if (stale := runner.stale_pid()) is not None:  # it was "no warm runner" beside its process
        return (
            f"warm runner pid {stale} runs an older aca (changed or reinstalled since it "
            "started), so runs start cold: `aca server start` replaces it"
        )
    return "no warm runner (runs start cold): `aca server start` starts one"


@app.command("stop")
def stop() -> None:
    """Stop the local server, everything it started, and the warm runner."""
    from aca_flows.flows.local_servers import LocalServer

    server = LocalServer()
    state = server.state()
    cut_off, suspended = _sessions_running_on(state.url) if state is not None else ([], [])
    WarmRunner().stop()
    if server.stop():
        typer.echo("Prefect server stopped.")
    else:
        typer.echo("no local Prefect server was running.")
    if cut_off:
        # A run that uses it stops when it stops, interrupted: say which, and how to go on.
        typer.echo(
            f"Runs of {len(cut_off)} session(s) were running or waiting on it: "
            f"{', '.join(cut_off)}. Any still going stops, interrupted; start the server "
            "again and `aca resume ID` continues it (in its workdir, or with --repo URL for "
            "a run that had one; a deployment run: Retry it in the UI)."
        )
    if suspended:
        # No process to cut off: they wait in the server's database, and go on when answered.
        typer.echo(
            f"Runs of {len(suspended)} session(s) wait for an answer, suspended: "
            f"{', '.join(suspended)}. They still wait once the server is started again: "
            "`aca approve ID` (or `aca answer`, or the UI's form) goes on with each."
        )


def _sessions_running_on(url: str) -> tuple[list[str], list[str]]:
    """The sessions whose flow runs are running, pending or paused on the server at ``url``,
    and apart, those whose flow runs are suspended (a deployment run waiting for approval or
    an answer, with no process to stop)."""
    import httpx

    live = {"type": {"any_": ["RUNNING", "PENDING", "PAUSED"]}}
    body = {"flow_runs": {"state": live, "tags": {"all_": ["aca"]}}}
    try:
        runs = httpx.post(f"{url}/flow_runs/filter", json=body, timeout=5.0).json()
    except (httpx.HTTPError, ValueError):
        return [], []  # a server that does not answer tells nothing
    sessions: set[str] = set()
    suspended: set[str] = set()
    for run in runs:
        waits = (run.get("state") or {}).get("name") == "Suspended"
        for tag in run.get("tags", []):
            if tag.startswith("session:") and _may_run(tag.removeprefix("session:"), run):
                (suspended if waits else sessions).add(tag.removeprefix("session:"))
    return sorted(sessions), sorted(suspended - sessions)


def _may_run(session_id: str, flow_run: dict) -> bool:
    """Whether the flow run's session may still run or wait on the server: a killed run's
    flow run, or one that lost the server after its session ended, stays RUNNING there, but
    its session, in the workdir it names, shows it ended (its lock has no live holder)."""
    from pathlib import Path

    from aca_flows.errors import AcaError
    from aca_flows.session.layout import AcaDir
    from aca_flows.session.lock import read_lock_holder
    from aca_flows.session.reading import display_status, load_session

    workdir = (flow_run.get("parameters") or {}).get("workdir")
    if not workdir:  # a deployment run's clone, or another machine's: cannot tell
        return True
    try:
        status = display_status(load_session(Path(workdir), session_id), Path(workdir))
    except AcaError:  # no record there, or one that cannot be read: its lock tells
        return read_lock_holder(AcaDir(Path(workdir)).session(session_id).lock_file) is not None
    return status.startswith(("running", "waiting"))
