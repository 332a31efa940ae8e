"""The Prefect server of a run: the README's main job on a fresh machine, aca's local server,
and a temporary server that neither a terminal's Ctrl-C nor a SIGKILL of aca leaves broken
or orphaned. Real ``aca`` processes with fresh homes and no ``PREFECT_API_URL``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import git
import httpx
import pytest

from aca_flows.flows.local_servers import LocalServer
from aca_flows.flows.server import HINT
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.store import SessionStore
from tests.crash.conftest import kill_group, only_session, wait_for
from tests.crash.test_kill_and_resume import CHAIN, Agent, branch_tasks
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.stand_in import stand_in
from tests.flows.test_readme_demo import readme_commands

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    """A machine nobody used: a new home (so a new Prefect home) and no server configured."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **extra}


def aca(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``aca ARGS`` in its own process group (as a terminal runs a command), output to files."""
    return subprocess.Popen(
        [sys.executable, "-m", "aca_flows", *args],
        env=env,
        cwd=ROOT,
        stdout=log.with_suffix(".out").open("w"),
        stderr=log.with_suffix(".err").open("w"),
        start_new_session=True,
    )


def output(log: Path) -> str:
    return log.with_suffix(".out").read_text() + log.with_suffix(".err").read_text()


def servers_of(pid: int) -> list[int]:
    """Server processes aca started: children running uvicorn or ``prefect server``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == pid and (b"uvicorn" in cmdline or b"server\0start" in cmdline):
                found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(1500)  # five cold starts of Prefect on a busy 2-core machine
def test_the_readme_main_job_works_five_times_out_of_five_on_fresh_machines(tmp_path):
    install_and_run, _ = readme_commands()
    args = shlex.split(install_and_run.split(".venv/bin/aca ", 1)[1])
    for attempt in range(5):
        demo = tmp_path / f"demo-{attempt}"
        run_args = list(args)
        run_args[run_args.index("--workdir") + 1] = str(demo)
        log = tmp_path / f"run-{attempt}"
        proc = aca(*run_args, env=fresh_env(tmp_path / f"home-{attempt}"), log=log)
        code = proc.wait(timeout=240)
        text = output(log)
        assert code == 0, text
        assert "Traceback" not in text and "database is locked" not in text
        assert "Failed to send telemetry" not in text
        assert HINT in text  # said once, how to make runs start fast
        assert text.count(HINT) == 1
        (branch,) = [h for h in git.Repo(demo).heads if h.name.startswith("aca/")]
        assert len(list(git.Repo(demo).iter_commits(branch))) == 4
        assert servers_of(proc.pid) == []


def start_chain(tmp_path: Path, llm: FakeLLMServer, agent: Agent) -> tuple[Path, subprocess.Popen]:
    repo = make_repo(tmp_path / "repo")
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(20):
        llm.anthropic.enqueue(agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(CHAIN)
    env = fresh_env(
        tmp_path / "home",
        ANTHROPIC_BASE_URL=llm.url,
        ANTHROPIC_API_KEY="test-key",
        ACA_SESSION__PROVIDER="anthropic",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "run"
    proc = aca(
        "run", str(tasks), "--model", "claude-test", "--workdir", str(repo), env=env, log=log
    )
    return repo, proc


def test_ctrl_c_reaching_the_whole_process_group_ends_the_run_cleanly(tmp_path):
    agent = Agent("b")
    with FakeLLMServer() as llm:
        repo, proc = start_chain(tmp_path, llm, agent)
        try:
            wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "b's call")
            assert proc.poll() is None, output(tmp_path / "run")
            (server,) = servers_of(proc.pid)
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            wait_for(lambda: "no new task starts" in output(tmp_path / "run"), WAIT, "the notice")
            agent.release.set()  # b's call returns within the grace period
            code = proc.wait(timeout=WAIT)
        finally:
            agent.release.set()
            if proc.poll() is None:
                kill_group(proc)
    text = output(tmp_path / "run")
    assert code == 130, text
    assert "Traceback" not in text and "Error logging to API" not in text
    session = only_session(repo)
    assert json.loads((session / "meta" / "session.json").read_text())["status"] == "interrupted"
    assert branch_tasks(repo, f"aca/{session.name}") == ["a", "b"]
    wait_for(lambda: not alive(server), 10, "the temporary server to stop")


def test_a_sigkilled_aca_leaves_no_server_behind(tmp_path):
    agent = Agent("a")
    with FakeLLMServer() as llm:
        _, proc = start_chain(tmp_path, llm, agent)
        try:
            wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "a's call")
            (server,) = servers_of(proc.pid)
            proc.send_signal(signal.SIGKILL)  # aca alone: the server is in a group of its own
            proc.wait(timeout=10)
            wait_for(lambda: not alive(server), 10, "the orphaned server to stop")
        finally:
            agent.release.set()
            if proc.poll() is None:
                kill_group(proc)


def test_aca_server_start_status_stop_and_runs_use_it(tmp_path):
    env = fresh_env(tmp_path / "home")
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "aca_flows", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )

    assert cli("server", "status").returncode == 1
    started = cli("server", "start", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        assert f"UI at http://127.0.0.1:{port}" in started.stdout
        # Its UI asks this server, not one at Prefect's default port.
        settings = httpx.get(f"http://127.0.0.1:{port}/ui-settings").json()
        assert settings["api_url"] == f"http://127.0.0.1:{port}/api"
        status = cli("server", "status", "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["healthy"] is True
        pid = json.loads(status.stdout)["pid"]

        install_and_run, _ = readme_commands()
        args = shlex.split(install_and_run.split(".venv/bin/aca ", 1)[1])
        args[args.index("--workdir") + 1] = str(tmp_path / "demo")
        run = cli(*args)
        assert run.returncode == 0, run.stderr
        assert HINT not in run.stderr  # the local server was used: no temporary one
        flow_runs = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}).json()
        # One run (the plan's), and its groups' subflow runs, all on this server.
        assert {r["state"]["type"] for r in flow_runs} == {"COMPLETED"}
        assert len([r for r in flow_runs if r["parent_task_run_id"] is None]) == 1
    finally:
        stopped = cli("server", "stop")  # at once: task runs' last states are still in batches
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    wait_for(lambda: not alive(pid), 15, "the local server to stop")
    assert cli("server", "status").returncode == 1
    # The server wrote them before it stopped: started again, its UI shows every task done.
    assert cli("server", "start", "--port", str(port)).returncode == 0
    try:
        task_runs = httpx.post(f"http://127.0.0.1:{port}/api/task_runs/filter", json={}).json()
    finally:
        cli("server", "stop")
    states = {r["name"].split()[0]: r["state"]["type"] for r in task_runs}
    assert {states.get(task) for task in ("greet", "tests", "readme")} == {"COMPLETED"}, states


def refused_writes(api: str) -> list[int]:
    """The status codes of the writes refused when 60 reach the server at once: task runs
    (each reads its flow run before it writes, as every subflow run's creation does) and
    artifacts. Prefect's client retries a refused write (503) 2 s later: the README's job
    had its second group start 2 s late, after work it should have overlapped."""

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=api, timeout=WAIT) as client:
            flow = (await client.post("/flows/", json={"name": "burst"})).json()
            run = (await client.post("/flow_runs/", json={"flow_id": flow["id"]})).json()
            task_runs = [
                client.post(
                    "/task_runs/",
                    json={"flow_run_id": run["id"], "task_key": "t", "dynamic_key": str(i)},
                )
                for i in range(30)
            ]
            artifacts = [
                client.post("/artifacts/", json={"type": "markdown", "data": str(i)})
                for i in range(30)
            ]
            answers = await asyncio.gather(*task_runs, *artifacts)
        return [a.status_code for a in answers if a.status_code != 201]

    return asyncio.run(burst())


def test_acas_servers_queue_concurrent_writes_instead_of_refusing_them(tmp_path):
    env = fresh_env(tmp_path / "home")
    # Logs of temporary servers: a killed run's (its pid gone) is removed when the next run
    # starts one; a running one's is kept.
    logs = tmp_path / "home" / ".aca" / "server"
    logs.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for pid in (gone.pid, os.getpid()):
        (logs / f"temporary-{pid}.log").write_text("a run's server log\n")
    # The temporary server a run starts, held open until told to stop.
    hold = (
        "import sys\n"
        "from aca_flows.flows.server import prefect_api_for_run, runs_on_acas_server\n"
        "from aca_flows.flows.server import runs_on_a_temporary_server\n"
        "with prefect_api_for_run(announce=lambda _: None) as url:\n"
        "    print(url, runs_on_acas_server(), runs_on_a_temporary_server(), flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", hold],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "temporary.err").open("w"),
        text=True,
        start_new_session=True,
    )
    try:
        api, _, flags = proc.stdout.readline().strip().partition(" ")
        assert api, (tmp_path / "temporary.err").read_text()
        # So the run starts its first tasks without waiting for its plan's artifacts; and its
        # pull request links no page of a server gone once the run ends.
        assert flags == "True True"
        assert refused_writes(api) == []
        left = sorted(p.name for p in logs.glob("temporary-*.log"))
        assert left == sorted(f"temporary-{pid}.log" for pid in (os.getpid(), proc.pid))
    finally:
        proc.communicate("\n", timeout=WAIT)
    # aca's local server.
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    aca_server = [sys.executable, "-m", "aca_flows", "server"]
    started = subprocess.run(
        [*aca_server, "start", "--port", str(port)], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=240,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        assert refused_writes(f"http://127.0.0.1:{port}/api") == []
    finally:
        subprocess.run([*aca_server, "stop"], env=env, cwd=ROOT, timeout=60)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:4200/api", "http://localhost:4200/api", "http://[::1]:4200/api"]
)
def test_prefect_clients_of_a_server_on_this_machine_load_no_ca_bundle(url):
    """Each Prefect client loads a CA bundle (about 50 ms of CPU), and a run opens seven
    before its first task. A plain-HTTP server on this machine has nothing to verify: its
    clients get one certificate, whose key nobody has."""
    import ssl

    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_URL, temporary_settings

    from aca_flows.flows.server import _client_settings

    with temporary_settings(updates=_client_settings(url)):
        assert PREFECT_API_URL.value() == url
        context = ssl.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value())
    assert context.cert_store_stats()["x509_ca"] == 1
    assert not list((ROOT / "aca_flows").rglob("*.key"))


@pytest.mark.parametrize(
    "url", ["https://prefect.example.com/api", "http://prefect.internal:4200/api"]
)
def test_prefect_clients_of_another_machine_s_server_keep_their_ca_bundle(url):
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, temporary_settings

    from aca_flows.flows.server import _client_settings

    before = PREFECT_API_SSL_CERT_FILE.value()
    with temporary_settings(updates=_client_settings(url)):
        assert PREFECT_API_SSL_CERT_FILE.value() == before


def test_a_stale_server_pid_taken_by_another_program_is_neither_reported_nor_killed(tmp_path):
    """After a reboot (or ``kill -9``) server.json names a pid another program may have since:
    ``aca server start`` said "already running" and started nothing, ``stop`` killed it."""
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        server = LocalServer(home=tmp_path)
        tmp_path.mkdir(exist_ok=True)
        state = {"pid": other.pid, "url": "http://127.0.0.1:4200/api", "port": 4200}
        server.state_file.write_text(json.dumps(state | {"log": "x", "started_at": 1.0}))
        assert server.state() is None
        assert server.stop() is False
        assert other.poll() is None, "aca server stop killed another program"
    finally:
        other.kill()
        other.wait()


def test_a_run_beside_a_local_server_that_does_not_answer_says_so(tmp_path, monkeypatch):
    """It said "no Prefect server is running" while ``aca server status`` showed one: the user
    looked for the run in that server's UI."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from aca_flows.flows import server as server_module

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(
        server_module, "temporary_server", lambda: contextlib.nullcontext("http://127.0.0.1:9/api")
    )
    hung = stand_in("aca_flows.flows.server_app")
    try:
        home = tmp_path / ".aca" / "server"
        home.mkdir(parents=True)
        state = {"pid": hung.pid, "url": "http://127.0.0.1:9/api", "port": 9, "log": "s.log"}
        (home / "server.json").write_text(json.dumps(state | {"started_at": 1.0}))
        said = []
        # No PREFECT_API_URL (the tests' server is given in the settings).
        with (
            temporary_settings(restore_defaults={PREFECT_API_URL}),
            server_module.prefect_api_for_run(announce=said.append),
        ):
            pass
    finally:
        hung.kill()
        hung.wait()
    assert said != [HINT]
    assert f"local Prefect server (pid {hung.pid}) does not answer" in said[0]


def test_aca_server_stop_names_the_sessions_whose_runs_it_cuts_off(tmp_path, monkeypatch, capsys):
    """It stopped a server a run was using with a bare "Prefect server stopped."."""
    from prefect.settings import PREFECT_API_URL

    from aca_flows.cli import main

    api = PREFECT_API_URL.value()  # the tests' server stands in for the local one
    flow = httpx.post(f"{api}/flows/", json={"name": "stop-cuts-off"}).json()
    session = "20261204-205500-5709ff"
    running = {"type": "RUNNING", "name": "Running"}
    tags = ["aca", f"session:{session}"]
    httpx.post(f"{api}/flow_runs/", json={"flow_id": flow["id"], "tags": tags, "state": running})
    # One whose process is gone: its session's lock, in the workdir it names, is not held.
    gone = {"tags": ["aca", "session:20261204-205500-90e5e1"], "state": running}
    gone |= {"flow_id": flow["id"], "parameters": {"workdir": str(tmp_path)}}
    httpx.post(f"{api}/flow_runs/", json=gone)
    # One whose session ended (its flow run left RUNNING by a lost server) though the process
    # that ran it lives on (a warm runner's): it was named, "`aca resume ID` continues it".
    ended = SessionStore.create(
        make_repo(tmp_path / "repo"), ExecutionPlan(name="x", tasks=[Task(id="a", title="A")]),
        provider="replay", session_id="20261204-205500-e0dede",
    )  # fmt: skip
    ended.finish("completed")
    done = {"tags": ["aca", "session:20261204-205500-e0dede"], "state": running}
    done |= {"flow_id": flow["id"], "parameters": {"workdir": str(tmp_path / "repo")}}
    httpx.post(f"{api}/flow_runs/", json=done)
    # A deployment run suspended for approval has no process to cut off: it was told to be
    # Retried, though it still waited and `aca approve` went on with it.
    waiting = {"tags": ["aca", "session:20261204-205500-5a5a5a"], "flow_id": flow["id"]}
    waiting |= {"state": {"type": "PAUSED", "name": "Suspended"}}
    httpx.post(f"{api}/flow_runs/", json=waiting)
    monkeypatch.setenv("HOME", str(tmp_path))
    home = tmp_path / ".aca" / "server"
    home.mkdir(parents=True)
    server = stand_in("aca_flows.flows.server_app", start_new_session=True)
    try:
        state = {"pid": server.pid, "url": api, "port": 1, "log": "s.log", "started_at": 1.0}
        (home / "server.json").write_text(json.dumps(state))
        assert main(["server", "stop"]) == 0
        out = capsys.readouterr().out
    finally:
        server.kill()
        server.wait()
        ended.close()
    assert "Prefect server stopped." in out
    # The server is the test session's: runs other tests left waiting are named too.
    (named,) = [line for line in out.splitlines() if "were running or waiting on it" in line]
    assert session in named
    assert "90e5e1" not in named and "e0dede" not in named and "5a5a5a" not in named
    (still,) = [line for line in out.splitlines() if "wait for an answer, suspended" in line]
    assert "20261204-205500-5a5a5a" in still and "`aca approve ID`" in still


def test_two_server_starts_at_once_start_one_server(tmp_path, monkeypatch):
    """Both found none and started one each: server.json named the one that could not bind,
    and the other ran on, orphaned (``aca server stop`` missed it)."""
    import threading
    import time

    from aca_flows.flows import local_servers

    spawned = []

    def spawn(command, log_file, **_):
        time.sleep(0.5)  # as a real start takes a while: long enough for the other to look
        spawned.append(stand_in("aca_flows.flows.server_app"))
        return spawned[-1]

    monkeypatch.setattr(local_servers, "spawn_background", spawn)
    monkeypatch.setattr(local_servers, "prepare_database", lambda: None)
    monkeypatch.setattr(local_servers, "_wait_healthy", lambda *_: None)
    monkeypatch.setattr(local_servers, "_status_of", lambda *_, **__: None)
    results = []
    starts = [
        threading.Thread(target=lambda: results.append(LocalServer(tmp_path).start(port=9)))
        for _ in range(2)
    ]
    try:
        for start in starts:
            start.start()
        for start in starts:
            start.join()
        assert len(spawned) == 1
        assert sorted(started for _, started in results) == [False, True]
        # One asking for another port at once: refused, not told "already running" on 9.
        from aca_flows.errors import InputError

        with pytest.raises(InputError, match="already runs on port 9 .*not 10"):
            LocalServer(tmp_path).start(port=10)
    finally:
        for process in spawned:
            process.kill()
            process.wait()


def test_a_run_on_a_server_aca_did_not_start_keeps_its_first_writes_apart(tmp_path, monkeypatch):
    """A server ``PREFECT_API_URL`` names may be a stock SQLite one, which refuses a write that
    comes while another is under way ("database is locked"): a run there waits for its
    plan's artifacts before its first task runs (aca's own servers queue writes, above)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from aca_flows.flows.server import (
        prefect_api_for_run,
        runs_on_a_temporary_server,
        runs_on_acas_server,
    )

    monkeypatch.setenv("HOME", str(tmp_path))
    with (
        temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}),
        prefect_api_for_run(announce=print),
    ):
        assert not runs_on_acas_server() and not runs_on_a_temporary_server()


def test_another_programs_server_on_the_port_is_not_taken_for_the_one_started(
    tmp_path, monkeypatch
):
    """A server that took the port between aca's look and its own server's bind answers the
    health check while aca's server still loads, which then cannot bind and exits: `aca server
    start` said "started" and named a process that was gone."""
    import http.server
    import threading

    from aca_flows.flows import local_servers

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=other.serve_forever, daemon=True).start()

    def spawn(command, log_file, **_):  # loads for a while, cannot bind, exits
        code = "import time; time.sleep(1.5); raise SystemExit(1)"
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)

    monkeypatch.setattr(local_servers, "_port_free", lambda *_: True)  # the race, lost
    monkeypatch.setattr(local_servers, "spawn_background", spawn)
    monkeypatch.setattr(local_servers, "prepare_database", lambda: None)
    try:
        with pytest.raises(local_servers.ServerError, match="exited with code 1"):
            LocalServer(tmp_path).start(port=other.server_address[1])
        assert LocalServer(tmp_path).state() is None
    finally:
        other.shutdown()


def test_a_port_taken_while_the_server_starts_is_told_as_the_port_not_a_traceback(tmp_path):
    # Two `aca server start` of two homes at one moment: the second's Prefect lost the bind
    # while it loaded and exited; aca said "exited with code 3" with uvicorn's traceback, exit 1.
    from aca_flows.errors import InputError
    from aca_flows.flows.local_servers import _wait_healthy

    log = tmp_path / "server.log"
    log.write_text(
        "10:49:44.345 | ERROR   | uvicorn.error - [Errno 98] error while attempting to bind on "
        "address ('127.0.0.1', 4299): address already in use\n"
        + "AssertionError: Reactive triggers not started\n"
        * 20
    )
    exited = subprocess.Popen(["false"])
    exited.wait()
    with pytest.raises(InputError, match="port 4299 on 127.0.0.1 was taken by another program"):
        _wait_healthy("http://127.0.0.1:4299/api", exited, log)
