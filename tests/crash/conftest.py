"""Real ``aca`` processes against one Prefect server, real git and the fake Anthropic server.

One ``prefect server start`` (SQLite in a temporary folder, a free loopback port) serves the
whole package: each ``aca`` process then starts in ~4 s instead of ~14 s with its own
ephemeral server. Processes run in their own process group, so a SIGKILL of the group also
kills the git commands (and hooks) they are running: a crash of the whole process tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from aca_flows.flows.local_servers import BATCHED_RECORDER_ENV, RECORDER_FLUSH_SECONDS
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer
from tests.polling import last_read, wait_for

ROOT = Path(__file__).resolve().parents[2]
PREFECT = Path(sys.executable).with_name("prefect")
SERVER_START_TIMEOUT = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="package")
def prefect_api(tmp_path_factory) -> Iterator[str]:
    """The API URL of a Prefect server started for these tests."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PREFECT_HOME": str(home / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        # As aca's own servers record task runs: in batches, a second apart.
        **BATCHED_RECORDER_ENV,
        # Prefect cancels the task runs of a cancelled flow run that it has not seen end, with
        # its own message: every half second here instead of every 20, so a stop whose task
        # runs it had not recorded ended yet shows it at once.
        "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS": "0.5",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(
            lambda: _healthy(url) or server.poll() is not None,
            SERVER_START_TIMEOUT,
            "the Prefect server to start",
            interval=0.2,
        )
        if server.poll() is not None:
            raise AssertionError(f"prefect server exited: {(home / 'server.log').read_text()}")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture
def llm():
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with one commit, like a user's checkout."""
    return make_repo(tmp_path / "repo")


class Aca:
    """Starts ``aca`` processes for one repository, with the environment built explicitly."""

    def __init__(self, repo: Path, home: Path, api_url: str, llm: FakeLLMServer):
        self.repo = repo
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "PREFECT_HOME": str(home / ".prefect"),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "ANTHROPIC_BASE_URL": llm.url,
            "ANTHROPIC_API_KEY": "test-key",
            "ACA_SESSION__PROVIDER": "anthropic",
            "ACA_SESSION__RETRY_BACKOFF_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        self.logs = home / "logs"
        self.logs.mkdir(exist_ok=True)
        self._procs: list[subprocess.Popen] = []

    def start(self, *args: str, name: str, piped: bool = False, **env: str) -> subprocess.Popen:
        """``aca ARGS --workdir REPO`` in its own process group; output to ``logs/NAME``, or
        with ``piped`` both to one pipe (``2>&1 | tee``), ``proc.stdout``."""
        out = subprocess.PIPE if piped else (self.logs / f"{name}.out").open("w")
        err = subprocess.STDOUT if piped else (self.logs / f"{name}.err").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "aca_flows", *args, "--workdir", str(self.repo)],
            env={**self.env, **env},
            cwd=ROOT,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=_hangup_as_from_a_terminal,
        )
        proc.log_name = name  # type: ignore[attr-defined]
        self._procs.append(proc)
        return proc

    def run(self, *args: str, name: str, timeout: float = 90, **env: str):
        """Run ``aca`` to its end; (exit code, stdout, stderr)."""
        proc = self.start(*args, name=name, **env)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise AssertionError(
                f"aca {' '.join(args)} did not end in {timeout} s:\n{self.err(name)}"
            ) from None
        return code, self.out(name), self.err(name)

    def out(self, name: str) -> str:
        return (self.logs / f"{name}.out").read_text()

    def err(self, name: str) -> str:
        return (self.logs / f"{name}.err").read_text()

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                kill_group(proc)


def _hangup_as_from_a_terminal() -> None:
    """SIGHUP at its default, as a command started in a terminal has it. A test process that
    ignores it (started under ``nohup``, or by a supervisor that ignores it) would pass that on,
    and aca rightly runs on through a hangup then: the hangup test waited 60 s for a stop."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (git, hooks, commands)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture
def aca(repo, tmp_path, prefect_api, llm) -> Iterator[Aca]:
    home = tmp_path / "home"
    home.mkdir()
    runner = Aca(repo, home, prefect_api, llm)
    yield runner
    runner.close()


def session_dirs(repo: Path) -> list[Path]:
    root = repo / ".aca" / "sessions"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def only_session(repo: Path) -> Path:
    (session,) = wait_for(lambda: session_dirs(repo), 60, "the session folder")
    return session


def journal(session: Path) -> list[dict]:
    """The journal's complete lines (a line being appended right now is left out)."""
    path = session / "meta" / "events.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            break
    return events


def task_runs_of(api_url: str, session_id: str, until: Callable[[list], bool]) -> list:
    """The session's task runs, as the Prefect server has them once ``until`` holds for them.
    The server records task runs from their events in batches a second apart (local_servers.py), and
    later when a write of a batch waits for SQLite or is retried: a test waits for the state
    it expects (at most ``RECORDER_WAIT`` seconds), then asserts on the last read, which shows
    what the server has when the state never comes."""
    read = partial(_runs_of, api_url, session_id, task_runs=True)
    return last_read(read, until, RECORDER_WAIT, interval=RECORDER_FLUSH_SECONDS / 2)


RECORDER_WAIT = 60


def task_ended(task_id: str) -> Callable[[list], bool]:
    """``until`` for ``task_runs_of``: a task run of ``task_id`` is in a final state."""
    return lambda runs: any(
        r.name.startswith(f"{task_id} ") and r.state is not None and r.state.is_final()
        for r in runs
    )


def none_running(runs: list) -> bool:
    """``until`` for ``task_runs_of``: the session has task runs, none of them Running. One
    the server made from an event before its state (``state`` None) is not settled yet."""
    return bool(runs) and all(r.state is not None and not r.state.is_running() for r in runs)


def flow_runs_of(api_url: str, session_id: str) -> list:
    """The session's flow runs, as the Prefect server has them."""
    return _runs_of(api_url, session_id, task_runs=False)


def _runs_of(api_url: str, session_id: str, *, task_runs: bool) -> list:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas import filters
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tag = [f"session:{session_id}"]

    async def read():
        async with get_client() as client:
            if task_runs:
                by_tag = filters.TaskRunFilter(tags=filters.TaskRunFilterTags(all_=tag))
                return await client.read_task_runs(task_run_filter=by_tag)
            by_tag = filters.FlowRunFilter(tags=filters.FlowRunFilterTags(all_=tag))
            return await client.read_flow_runs(flow_run_filter=by_tag)

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return asyncio.run(read())
