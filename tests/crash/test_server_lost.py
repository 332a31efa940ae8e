"""The Prefect server goes away in the middle of a run: the run stops as an interrupt does
(exit 130, the session interrupted, one line naming the server and the fix, no traceback)
and ``aca resume`` finishes it once the server is back. A server that goes after the session
ended takes only the flow run's final state with it: the run ends as its session did. Real
``aca`` processes, aca's local server (``aca server start``) in a fresh home, real git, the
fake Anthropic server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

from tests.crash.conftest import ROOT, only_session, wait_for
from tests.crash.test_interrupt import wait_exit
from tests.crash.test_kill_and_resume import CHAIN, Agent, branch_tasks
from tests.fakes.git_repo import make_repo

WAIT = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def aca_env(home, llm) -> dict[str, str]:
    """An aca command's environment: its own home, the fake LLM server, nothing else."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "ANTHROPIC_BASE_URL": llm.url,
        "ANTHROPIC_API_KEY": "test-key",
        "ACA_SESSION__PROVIDER": "anthropic",
        "PYTHONUNBUFFERED": "1",
    }


def test_a_run_whose_server_dies_stops_interrupted_and_resumes(repo, llm, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = aca_env(home, llm)
    port = free_port()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "aca_flows", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )

    agent = Agent("b")  # b's provider call is held while the server dies
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(40):
        llm.anthropic.enqueue(agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(CHAIN)
    try:
        assert cli("server", "start", "--port", str(port)).returncode == 0
        server = json.loads((home / ".aca" / "server" / "server.json").read_text())
        run = [sys.executable, "-m", "aca_flows", "run", str(tasks), "--model", "claude-test"]
        with (tmp_path / "run.out").open("w") as out, (tmp_path / "run.err").open("w") as err:
            proc = subprocess.Popen(
                [*run, "--workdir", str(repo)], env=env, cwd=ROOT, stdout=out, stderr=err
            )
        session = only_session(repo)
        wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "b's call")
        os.killpg(server["pid"], signal.SIGKILL)  # the server dies: the machine's, or ours
        code = wait_exit(proc, WAIT)
    finally:
        agent.release.set()
        cli("server", "stop")
    out, err = (tmp_path / "run.out").read_text(), (tmp_path / "run.err").read_text()
    assert code == 130, err
    assert "Traceback" not in out + err
    # aca's one line says it all: none of Prefect's echoes of the lost server after it.
    for echo in ("ServerLost(", "Finished in state Running()", "EventsWorker", "Error logging"):
        assert echo not in err
    url = f"http://127.0.0.1:{port}/api"
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert f"the Prefect server at {url} stopped answering" in line
    assert "aca server start" in line
    assert f"`aca resume {session.name} --workdir {repo}`" in line  # run from another folder
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "interrupted"
    states = {t["id"]: t["status"]["state"] for t in data["plan"]["tasks"]}
    assert states == {"a": "completed", "b": "pending", "c": "pending"}
    branch = f"aca/{session.name}"
    assert branch_tasks(repo, branch) == ["a"]  # what landed stays landed

    try:
        assert cli("server", "start", "--port", str(port)).returncode == 0
        resumed = cli("resume", session.name, "--workdir", str(repo), "--json")
        # Each task's completion reached the server once, a's too, whose event went with the
        # server if it had not been sent yet, and which the resume only reused.
        completed = wait_for(
            lambda: (found := completed_events(url, home)) and len(found) >= 3 and found,
            WAIT,
            "the tasks' aca.task.completed events",
            interval=0.5,
        )
    finally:
        cli("server", "stop")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["status"] == "completed"
    assert branch_tasks(repo, branch) == ["a", "b", "c"]
    assert sorted(completed) == ["a", "b", "c"]


def completed_events(url: str, home) -> list[str]:
    """The task ids of the ``aca.task.completed`` events the server at ``url`` has."""
    read = (
        "import asyncio\n"
        "from prefect.client.orchestration import get_client\n"
        "from prefect.events.filters import EventFilter, EventNameFilter\n"
        "async def main():\n"
        "    async with get_client() as client:\n"
        "        page = await client.read_events(\n"
        "            EventFilter(event=EventNameFilter(name=['aca.task.completed'])), limit=50\n"
        "        )\n"
        "    for event in page.events:\n"
        "        print(event.payload['task_id'])\n"
        "asyncio.run(main())\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PREFECT_API_URL": url, "HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", read], env=env, capture_output=True, text=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


# The server dies as the run pushes its end (--repo): every task completed, the session's end
# in its journal, only the flow run's final state still to send. aca's git runs no hooks, so
# a ``git`` first on PATH kills it at that push.
KILL_AT_THE_END = """#!/bin/sh
case " $* " in
  *" push "*)
    if grep -qs session_finished {area}/.aca/sessions/*/meta/events.jsonl; then
      kill -9 -{server_pid} 2>/dev/null && : > {area}.killed
    fi ;;
esac
exec '{real}' "$@"
"""


def test_a_run_whose_server_dies_after_its_last_task_ends_completed(llm, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    area = tmp_path / "area"
    remote = tmp_path / "remote.git"
    source = make_repo(tmp_path / "source")
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(remote)], check=True)
    env = aca_env(home, llm)

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "aca_flows", *args],
            env={**env, **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )

    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(40):
        llm.anthropic.enqueue(Agent())
    tasks = tmp_path / "tasks.md"
    tasks.write_text(CHAIN)
    try:
        assert cli("server", "start", "--port", str(free_port())).returncode == 0
        server = json.loads((home / ".aca" / "server" / "server.json").read_text())
        (tmp_path / "bin").mkdir()
        wrapper = tmp_path / "bin" / "git"
        wrapper.write_text(
            KILL_AT_THE_END.format(area=area, server_pid=server["pid"], real=shutil.which("git"))
        )
        wrapper.chmod(0o755)
        run = ["run", str(tasks), "--model", "claude-test", "--repo", str(remote), "--json"]
        done = cli(*run, "--workdir", str(area), PATH=f"{wrapper.parent}:{env['PATH']}")
        assert (tmp_path / "area.killed").exists(), done.stderr  # the server did die
    finally:
        cli("server", "stop")
    # The outcome is the session's: completed (exit 0), and one note says what was lost.
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("error:")]
    (note,) = [line for line in done.stderr.splitlines() if line.startswith("aca: note:")]
    assert "stopped answering after session" in note and "final state" in note
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["counts"] == {"completed": 3}
    session = only_session(area)
    assert json.loads((session / "meta" / "session.json").read_text())["status"] == "completed"
    shown = cli("sessions", "show", session.name, "--workdir", str(area), "--json")
    assert json.loads(shown.stdout)["status_now"] == "completed", shown.stderr
    assert branch_tasks(remote, f"aca/{session.name}") == ["a", "b", "c"]


def test_the_events_a_dead_server_never_got_are_dropped_not_sent_at_exit(repo, llm, tmp_path):
    # The server dies as b's call is answered: b and c end, then the run finds its server
    # gone. Its queued events each tried ten connections (7 s) before the run could exit,
    # "Still processing items", and each was written whole on the terminal.
    home = tmp_path / "home"
    home.mkdir()
    env = aca_env(home, llm)
    agent = Agent("b")
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(40):
        llm.anthropic.enqueue(agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(CHAIN)
    start = [sys.executable, "-m", "aca_flows", "server", "start", "--port", str(free_port())]
    try:
        assert subprocess.run(start, env=env, cwd=ROOT, timeout=WAIT).returncode == 0
        server = json.loads((home / ".aca" / "server" / "server.json").read_text())
        run = [sys.executable, "-m", "aca_flows", "run", str(tasks), "--model", "claude-test"]
        proc = subprocess.Popen(
            [*run, "--workdir", str(repo)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "b's call")
        os.killpg(server["pid"], signal.SIGKILL)
        agent.release.set()
        _, err = proc.communicate(timeout=WAIT)
    finally:
        agent.release.set()
        subprocess.run([*start[:4], "stop"], env=env, cwd=ROOT, timeout=WAIT)
    assert proc.returncode == 0, err  # the session completed: its outcome is the run's
    assert "stopped answering after session" in err
    assert "Still processing items" not in err and "Event(occurred=" not in err
