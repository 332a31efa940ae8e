"""The Prefect server processes aca starts: its local server and a run's temporary server.

- ``aca server start`` starts ``prefect server start`` (with its UI) in the background, in its
  own process group, with a state file and a log under ``~/.aca/server/`` (``LocalServer``);
  ``aca run`` uses it whenever it answers (``server.py``).
- Without one, a run starts a temporary server (``temporary_server``). Unlike Prefect's own, it
  runs in its own session (a terminal's Ctrl-C reaches aca, which stops the run cleanly, not
  the server under the run), it dies with aca even on SIGKILL (Linux: a parent-death signal),
  its output goes to a log file instead of the terminal, and a fresh Prefect home gets its
  database before the server starts (a server that creates it while its services write to it
  can answer "database is locked" until the client gives up).

Nothing here imports prefect at module level: ``aca server status`` stays instant.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from aca_flows.errors import AcaError, InputError

__all__ = [
    "BATCHED_RECORDER_ENV",
    "DEFAULT_PORT",
    "RECORDER_FLUSH_SECONDS",
    "LocalServer",
    "ServerError",
    "ServerState",
    "healthy",
    "prepare_database",
    "server_home",
    "spawn_background",
    "startup_timeout",
    "stop_process_group",
    "temporary_server",
]

DEFAULT_PORT = 4200


# The server's own telemetry would try the internet at every start and log a failure.
_QUIET_SERVER_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


# Prefect's task-run recorder writes each of a task run's three states in a transaction of its
# own by default: about 25 ms of the server's CPU a task, on the two cores the tasks' git and
# aca need too. Written in batches, flushed every second, a task costs it a third of that; the
# UI shows a task run's state up to a second later. A user's own setting wins.
RECORDER_FLUSH_SECONDS = 1


BATCHED_RECORDER_ENV = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": str(RECORDER_FLUSH_SECONDS),
}


def _batched_recorder() -> dict[str, str]:
    """``BATCHED_RECORDER_ENV`` but what the user set."""
    return {name: value for name, value in BATCHED_RECORDER_ENV.items() if name not in os.environ}


def startup_timeout() -> float:
    """Seconds to wait for a server to answer: a fresh database on a busy 2-core machine takes
    tens of seconds (Prefect's default is 20 s). Read at each start, not at import: a run
    forked by the warm runner has the command's environment."""
    return float(os.environ.get("ACA_SERVER_STARTUP_TIMEOUT", "180"))


def server_home() -> Path:
    """``~/.aca/server``: the local server's (and its warm runner's) state files and logs."""
    return Path.home() / ".aca" / "server"


class ServerError(AcaError):
    """A Prefect server could not be started or reached; the message says where its log is."""

    exit_code = 1


@dataclass
class ServerState:
    pid: int
    url: str
    port: int
    log: str
    started_at: float


class LocalServer:
    """The long-lived local server that ``aca server start`` runs."""

    def __init__(self, home: Path | None = None):
        self.home = home or server_home()
        self.state_file = self.home / "server.json"
        self.log_file = self.home / "server.log"
        self.start_lock = self.home / "start.lock"  # held while a server or runner starts

    def state(self) -> ServerState | None:
        """The recorded server if its process is alive, else ``None`` (a stale file is removed)."""
        try:
            state = ServerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if not _alive(state.pid) or not _is_local_server(state.pid):
            self.state_file.unlink(missing_ok=True)
            return None
        return state

    def api_url(self) -> str | None:
        """The API URL of a running, healthy local server."""
        state = self.state()
        if state is not None and healthy(state.url, timeout=2.0):
            return state.url
        return None

    def start(self, port: int | None = None, host: str = "127.0.0.1") -> tuple[ServerState, bool]:
        """The server, started unless one runs (on ``port``, else the default), and whether
        this call started it. One running on another port than ``port`` is refused."""
        from aca_flows.workspace.file_lock import FileLock

        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only HOME: a traceback
            raise InputError(
                f"aca keeps its server's state in {self.home}, which cannot be written "
                f"({exc.strerror}): set HOME to a writable folder."
            ) from None
        # Two `aca server start` at once both found none and started one each: the second's
        # server.json named a server that could not bind, and the first's ran on, orphaned
        # (`aca server stop` missed it; the next start called the port another program's).
        with FileLock(self.start_lock):
            running = self.state()
            if running is not None and port is not None and port != running.port:
                # Under the lock: two starts at once on two ports both passed the command's
                # own check, and the loser said "already running" on a port it never asked.
                raise InputError(
                    f"aca's local Prefect server already runs on port {running.port} (pid "
                    f"{running.pid}), not {port}: `aca server stop` first to move it."
                )
            if running is not None:
                return running, False
            return self._start(port or DEFAULT_PORT, host), True

    def _start(self, port: int, host: str) -> ServerState:
        if not _port_free(host, port):
            raise InputError(  # the port is the user's to choose: exit 2, as any bad option
                f"port {port} on {host} is in use by another program; choose another with "
                f"`aca server start --port N`."
            )
        prepare_database()
        url = f"http://{host}:{port}/api"
        # `prefect server start`, its SQLite writes begun at once (flows/server_app.py).
        command = [sys.executable, "-m", "aca_flows.flows.server_app", "server", "start"]
        command += ["--host", host, "--port", str(port)]
        # Its UI asks the API where ``PREFECT_UI_API_URL`` says, else at the default port:
        # the UI of a server on another port showed another server's runs, or none.
        ui = {} if "PREFECT_UI_API_URL" in os.environ else {"PREFECT_UI_API_URL": url}
        process = spawn_background(
            command, self.log_file, die_with_parent=False, extra_env={**_batched_recorder(), **ui}
        )
        state = ServerState(process.pid, url, port, str(self.log_file), time.time())
        _write_json(self.state_file, asdict(state))
        try:
            _wait_healthy(url, process, self.log_file)
        except ServerError:
            self.stop()
            raise
        # FastAPI builds a route's request models when a request first reaches it, and the
        # routes before it on the way: the first run would wait about a second for that (on
        # a 2-core machine). A path that no route matches builds them all now.
        _status_of(f"{url}/aca-warm-up", timeout=startup_timeout())
        return state

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server and its process group; ``False`` when none was running."""
        state = self.state()
        self.state_file.unlink(missing_ok=True)
        if state is None:
            return False
        stop_process_group(state.pid, timeout)
        return True


@contextlib.contextmanager
def temporary_server() -> Iterator[str]:
    """A server for one run: its API URL within the block; stopped, with everything it
    started, when the block ends."""
    prepare_database()
    log_dir = server_home()
    log_dir.mkdir(parents=True, exist_ok=True)
    _remove_logs_of_dead_runs(log_dir)
    log_file = log_dir / f"temporary-{os.getpid()}.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    # Prefect's app, its SQLite writes begun at once (flows/server_app.py).
    command = [sys.executable, "-m", "uvicorn", "--factory"]
    command += ["aca_flows.flows.server_app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "error"]
    command += ["--lifespan", "on"]
    # As Prefect's own temporary server: no UI, only the services a single run needs.
    env = {
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **_batched_recorder(),
    }
    process = spawn_background(command, log_file, die_with_parent=True, extra_env=env)
    try:
        _wait_healthy(url, process, log_file)
        yield url
    finally:
        _drain_to_server()
        stop_process_group(process.pid, timeout=5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)
    log_file.unlink(missing_ok=True)


def _remove_logs_of_dead_runs(log_dir: Path) -> None:
    """The temporary servers' logs of runs that are gone: a run killed outright (SIGKILL, a
    crash) never removed its own, and they piled up, one a run."""
    for log in log_dir.glob("temporary-*.log"):
        pid = log.stem.removeprefix("temporary-")
        if pid.isdigit() and not _alive(int(pid)):
            log.unlink(missing_ok=True)


def _drain_to_server(timeout: float = 15.0) -> None:
    """Send the logs and events still queued before the server goes: otherwise Prefect's
    workers retry against a stopped server at exit, for a minute, and print an error."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # a lost log line is no reason to fail the run
            worker.drain_all(timeout=timeout)


def prepare_database() -> None:
    """Create Prefect's SQLite database before any server needs it, once, atomically.

    A server that creates its database at start while its services already write to it can
    stay "locked" past the client's patience on a slow machine. Creating it first, in a
    separate process and under a different name that is renamed into place, means a server
    only ever opens a complete database, and a crash leaves none half-made."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return  # PostgreSQL and friends are the user's to prepare
    database = Path(url[len(prefix) :])
    if database.exists():
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.parent / ".aca-database.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if database.exists():  # another aca made it while we waited
            return
        partial = database.with_name(f".{database.name}.aca-{os.getpid()}")
        env = {**os.environ, **_QUIET_SERVER_ENV}
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefix + str(partial)
        script = (
            "import asyncio\n"
            "from prefect.server.database import provide_database_interface\n"
            "asyncio.run(provide_database_interface().create_db())\n"
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", script],
                env=env,
                capture_output=True,
                text=True,
                timeout=startup_timeout(),
            )
            if done.returncode != 0:
                raise ServerError(
                    f"could not create Prefect's database at {database}: "
                    f"{done.stderr.strip().splitlines()[-1:] or done.returncode}"
                )
            os.replace(partial, database)
        finally:
            partial.unlink(missing_ok=True)


def spawn_background(
    command: list[str],
    log_file: Path,
    *,
    die_with_parent: bool = False,
    extra_env: dict | None = None,
) -> subprocess.Popen:
    """Start ``command`` in a session of its own (a terminal's Ctrl-C does not reach it), its
    output appended to ``log_file``."""
    env = {**os.environ, **_QUIET_SERVER_ENV, **(extra_env or {})}
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when aca dies, SIGKILL included (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # aca died before the call above: nobody will stop us
        os._exit(1)


def _wait_healthy(url: str, process: subprocess.Popen, log_file: Path) -> None:
    timeout = startup_timeout()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if "address already in use" in _tail(log_file, 200).lower():
                # Taken while Prefect loaded (another server started at the same moment): the
                # port's message and exit 2, as when it was taken before, not a traceback.
                from urllib.parse import urlsplit

                host, port = urlsplit(url).hostname, _port_of(url)
                raise InputError(
                    f"port {port} on {host} was taken by another program while the server "
                    f"started; choose another with `aca server start --port N`."
                )
            raise ServerError(
                f"the Prefect server exited with code {process.returncode} while starting; "
                f"its log: {log_file}\n{_tail(log_file)}"
            )
        # Another program's server on the port answers too, while this one is still loading
        # (it then fails to bind and exits): it is up once a process of its own listens.
        if healthy(url, timeout=1.0) and _listens(process.pid, _port_of(url)):
            return
        time.sleep(0.1)
    raise ServerError(
        f"the Prefect server did not answer within {timeout:.0f} s "
        f"(ACA_SERVER_STARTUP_TIMEOUT sets the wait); its log: {log_file}\n{_tail(log_file)}"
    )


def _port_of(url: str) -> int:
    from urllib.parse import urlsplit

    return urlsplit(url).port or 80


def _listens(group: int, port: int) -> bool:
    """Whether a process of the process group ``group`` listens on TCP ``port``; ``True`` where
    ``/proc`` cannot tell (not Linux, or a kernel that lists no socket on the port at all:
    the program that took the port is listed, where it can be)."""
    sockets: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local address "ADDR:PORT" in hex; state 0A is LISTEN; the inode is field 9
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    sockets.add(f"socket:[{fields[9]}]")
    if not sockets:
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(") ", 1)[1].split()[2]) != group:
                continue
            for fd in (stat.parent / "fd").iterdir():
                if os.readlink(fd) in sockets:
                    return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def healthy(url: str, timeout: float) -> bool:
    """Whether the Prefect server at ``url`` answers its health check within ``timeout``."""
    return _status_of(f"{url}/health", timeout) == 200


def _status_of(url: str, timeout: float) -> int | None:
    """The status code of a GET of ``url``; ``None`` when nothing answers."""
    # The standard library's client: an httpx client costs about 20 ms of CPU to make (a TLS
    # context with every CA certificate), and every `aca run` asks for the server's health.
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.netloc, timeout=timeout)
    try:
        connection.request("GET", parts.path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def stop_process_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL what is left after ``timeout``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # A zombie leader still counts for killpg; reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    return _alive(pgid)


def _is_local_server(pid: int) -> bool:
    """Whether ``pid`` runs the server ``aca server start`` starts: one that died (a reboot, the
    OOM killer, ``kill -9``) leaves its pid in server.json, which another program may have
    since; taken for the server, it was reported running and ``aca server stop`` killed it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc (not Linux): the pid is all there is
    except OSError:
        return True
    return b"aca_flows.flows.server_app" in cmdline


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As the server binds: connections of a server that just died (TIME_WAIT) do not
        # hold the port, a program listening on it does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)
