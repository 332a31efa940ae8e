"""The warm runner: a process kept by ``aca server start`` with Prefect, the provider SDKs and
aca already imported, which forks one child per ``aca run`` or ``aca resume``. Those imports
are most of a run's start-up (about 1.3 s of CPU on a 2-core machine); a forked child starts
with them done.

``warm_client.run_warm`` (called by ``aca`` before it imports anything heavy) hands the
runner a command, its folder, environment and standard streams; the child becomes that command:
the same output on the same terminal or pipes, the same exit code, the signals it gets passed on.

A command uses the runner only when the runner runs the same aca (package, its files,
interpreter, installed packages); otherwise, without a runner, or with ``ACA_WARM_RUNNER=off``
(a job that must run inside its own cgroup or container, say), it runs by itself as usual.
Each run it starts is a line of its log (``~/.aca/server/runner.log``). ``aca server start``
starts it beside the local Prefect server, ``aca server stop`` stops both.

The runner runs what it is sent outside any sandbox, so nothing but the user's own ``aca`` may
drive it. It listens on a file-system socket in its folder (``~/.aca/server/runner.sock``; the
folder is made 0700), which aca's sandbox never shows (the homes are empty there, and
``~/.aca`` is hidden again under any path shown read-only) and Claude Code's may not read;
never on an abstract socket, which any process of the machine's network namespace reaches,
a sandboxed command allowed the network included. Each request carries the token of
``runner.token`` beside it (0600, new at each start), compared before anything is forked; a
request without it, or for anything but ``aca run`` or ``aca resume``, is refused (a line of
the log) and its command runs by itself.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import resource
import secrets
import signal
import socket
import stat
import sys
import time
from pathlib import Path

from aca_flows._exit import exit_process
from aca_flows._files import write_json_atomic
from aca_flows._startup import ended_runs_hold_their_signals, interrupts_from_the_start
from aca_flows.flows import reload_prefect_settings
from aca_flows.flows.local_servers import server_home
from aca_flows.session.redact import redact_text

__all__ = [
    "RLIMITS",
    "WarmRunner",
    "fingerprint",
    "is_run_command",
    "message_line",
    "process_standing",
    "serve",
    "socket_address",
]

# Commands that run tasks: the ones whose start-up is worth a warm process, and the only ones
# the runner runs (``is_run_command``).
_RUN_SUBCOMMANDS = ("run", "resume")
_RUN_OPTIONS = frozenset({"--task-file", "--execution-plan"})  # the original aca's form
_NOT_RUNS = frozenset({"-h", "--help", "--version", "--list-checkpoints"})
# A request is read whole before anything is forked: its size and time are bounded.
_REQUEST_LIMIT = 8 << 20
_REQUEST_TIMEOUT = 10.0
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes, the last one its terminating NUL
# The command's resource limits hold for its run too (as far as the runner's allow).
RLIMITS = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
            "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_STACK")  # fmt: skip
_PRELOADED = (
    "aca_flows.cli.app",
    "aca_flows.cli.run",
    "aca_flows.flows.aca_run",
    "aca_flows.providers.anthropic_api",
    "aca_flows.providers.openai_api",
    "aca_flows.providers.claude_code",
    "aca_flows.providers.ollama_api",
    # Imported by a run's first flow and task run, and the SDKs' first request: about 30 ms of
    # CPU each run would otherwise pay again.
    "prefect.flow_engine",
    "prefect.task_engine",
    "anyio._backends._asyncio",
    "httpcore2._async.connection_pool",
    "anthropic",
    "openai",
    "claude_agent_sdk",
)


def process_standing() -> dict:
    """What a fork inherits from the runner and not from the command, and a command may set
    on purpose: its priority, its CPUs, its user and groups."""
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "cpus": affinity,
        "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups())],
    }


def fingerprint() -> str:
    """What a runner must share with a command to stand in for it: the interpreter, aca's
    package (where, and when its files last changed) and the installed packages' folder.
    The interpreter is its file, whatever it was called by: ``python -m aca_flows server
    start`` and the ``aca`` script (run by ``python3``) are one interpreter."""
    package = Path(__file__).resolve().parents[1]
    newest = 0
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
    import importlib.util

    prefect = importlib.util.find_spec("prefect")
    site = Path(prefect.origin).parents[1] if prefect and prefect.origin else None
    installed = site.stat().st_mtime_ns if site else 0
    interpreter = os.path.realpath(sys.executable)
    return json.dumps([interpreter, sys.version, str(package), newest, str(site), installed])


def is_run_command(argv: object) -> bool:
    """Whether ``argv`` is a command the runner is for: ``aca run`` or ``aca resume`` with
    their options, or the original form (``aca --task-file FILE ...``, ``aca --execution-plan
    FILE ...``), never a help or version request. The original form names no subcommand that
    could run: aca refuses a subcommand after an option of its own (``cli/app.py``,
    ``_refuse_misplaced_options``)."""
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return False
    options = argv[: argv.index("--")] if "--" in argv else argv
    if _NOT_RUNS.intersection(options):
        return False
    if argv[0] in _RUN_SUBCOMMANDS:
        return True
    return argv[0].startswith("-") and any(
        option.split("=", 1)[0] in _RUN_OPTIONS for option in options
    )


def message_line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


@contextlib.contextmanager
def socket_address(path: Path):
    """``path`` as an address to bind or connect to: itself when it fits ``sun_path``, else
    the same file reached through a descriptor of its folder (``/proc/self/fd/N/name``) for
    as long as the block lasts; a long home needs no other folder, and no abstract name."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


# -- the runner: preloaded, it forks a child per command ----------------------------------------


class WarmRunner:
    """The runner of a local server's home (``~/.aca/server``): its state file, log, socket
    and token."""

    def __init__(self, home: Path | None = None):
        home = home or server_home()
        self.home = home
        self.state_file = home / "runner.json"
        self.log_file = home / "runner.log"
        # In the home's folder (0700), which no sandbox shows: never an abstract socket, which
        # a sandboxed command sharing the network namespace (network = true) would reach.
        self.socket_path = home / "runner.sock"
        self.token_file = home / "runner.token"  # 0600: what every request must carry

    def pid(self) -> int | None:
        """The runner's pid if it is ready and runs this aca, else ``None``."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(self.state_file.read_text())
            if state["fingerprint"] == fingerprint() and self._is_runner(state["pid"]):
                return state["pid"]
        return None

    def stale_pid(self) -> int | None:
        """The pid of a runner that runs another aca (this one changed or was reinstalled
        since it started): alive, but no run is handed to it."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(self.state_file.read_text())
            if state["fingerprint"] != fingerprint() and self._is_runner(state["pid"]):
                return state["pid"]
        return None

    def _is_runner(self, pid: int) -> bool:
        """Whether ``pid`` is this home's runner: a runner that died (a reboot, the OOM
        killer) leaves its pid behind, which another process may have since."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return cmdline[-3:-1] == [b"aca_flows.cli.warm_runner", os.fsencode(self.home)]

    def start(self) -> int | None:
        """Start the runner in the background, unless this aca's runs; a stale one (another
        aca's) is replaced. Its pid once it is ready, ``None`` if it did not start (its log
        says why; runs then start as they would without it)."""
        from aca_flows.flows.local_servers import spawn_background, startup_timeout

        if (running := self.pid()) is not None:
            return running
        self.stop()
        # -P: nothing from the folder it was started in shadows a module of the runs; the
        # aca it runs is this one, wherever it was imported from.
        command = [sys.executable, "-P", "-m", "aca_flows.cli.warm_runner", str(self.home)]
        here = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
        self.home.mkdir(parents=True, exist_ok=True)
        process = spawn_background(command, self.log_file, extra_env={"PYTHONPATH": path})
        deadline = time.monotonic() + startup_timeout()
        while self.pid() != process.pid and time.monotonic() < deadline:
            if process.poll() is not None:
                return None
            time.sleep(0.05)
        return self.pid()

    def stop(self) -> bool:
        """Stop the runner (runs it forked go on); ``False`` when none was running."""
        from aca_flows.flows.local_servers import stop_process_group

        try:
            pid = json.loads(self.state_file.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return False
        self.state_file.unlink(missing_ok=True)
        if not self._is_runner(pid):
            return False
        stop_process_group(pid, timeout=5.0)
        for path in (self.socket_path, self.token_file):
            path.unlink(missing_ok=True)
        return True

    def listen(self) -> tuple[socket.socket, str]:
        """The runner's listening socket and its new token: the folder made the user's alone
        (0700), the socket bound in it, the token written beside it (0600)."""
        self.home.mkdir(parents=True, exist_ok=True)
        info = os.lstat(self.home)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise SystemExit(f"{self.home} is not a folder of this user's: no runner")
        os.chmod(self.home, 0o700)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with socket_address(self.socket_path) as address:
            if os.path.lexists(self.socket_path):
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    probe.connect(address)
                except OSError:
                    self.socket_path.unlink()  # a runner's that ended without removing it
                else:
                    raise SystemExit(f"another runner listens on {self.socket_path}")
                finally:
                    probe.close()
            listener.bind(address)
        os.chmod(self.socket_path, 0o600)
        token = secrets.token_hex(32)
        partial = self.token_file.with_name(f".{self.token_file.name}.{os.getpid()}")
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        os.replace(partial, self.token_file)
        listener.listen(16)
        return listener, token


def serve(runner: WarmRunner) -> None:
    """Import what runs need, then fork a child for each command that connects (forever)."""
    import gc
    import importlib

    for module in _PRELOADED:
        with contextlib.suppress(ImportError):  # a provider's SDK may not be installed
            importlib.import_module(module)
    gc.collect()
    gc.freeze()  # children neither walk nor copy what was imported here
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener, token = runner.listen()
    state = {
        "pid": os.getpid(),
        "socket": str(runner.socket_path),
        "fingerprint": fingerprint(),
        "standing": process_standing(),
    }
    write_json_atomic(runner.state_file, state, durable=False)
    print(f"warm runner {os.getpid()} ready", flush=True)
    while True:
        conn, _ = listener.accept()
        request, fds = _admitted(conn, token)
        if request is None:
            conn.close()
            continue
        if os.fork() == 0:
            listener.close()
            _become_the_command(conn, request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        conn.close()


def _peer(conn: socket.socket) -> tuple[int, int]:
    """The connecting process's pid and uid (``SO_PEERCRED``, as seen from here)."""
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def _admitted(conn: socket.socket, token: str) -> tuple[dict | None, list[int]]:
    """The request on ``conn`` and its streams if the runner may run it, read here, before
    anything is forked; else ``(None, [])``, the refusal logged and sent to the client (whose
    command then runs by itself)."""
    fds: list[int] = []
    request, pid = None, 0
    try:
        conn.settimeout(_REQUEST_TIMEOUT)
        pid, uid = _peer(conn)
        if uid != os.getuid():
            reason = f"uid {uid} is not the runner's"
        else:
            data, fds = _receive(conn)
            request = json.loads(data)
            reason = _refusal(request, fds, token)
    except Exception as exc:  # a timeout, a client gone, no JSON: the runner goes on
        reason = f"an unreadable request ({type(exc).__name__})"
    if reason is None:
        conn.settimeout(None)
        del request["token"]
        return request, fds
    for fd in fds:
        os.close(fd)
    print(redact_text(f"refused a request of pid {pid}: {reason}"), flush=True)
    with contextlib.suppress(OSError):
        conn.sendall(message_line({"refused": reason}))
    return None, []


def _refusal(request: object, fds: list[int], token: str) -> str | None:
    """Why the runner will not run ``request``, or ``None``: it carries the token, names
    ``aca run`` or ``aca resume`` and has the shape the client sends."""
    if not isinstance(request, dict):
        return "not a request"
    given = request.get("token")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        return "without the runner's token"
    argv = request.get("argv")
    if not is_run_command(argv):
        what = argv[0] if isinstance(argv, list) and argv and isinstance(argv[0], str) else "?"
        return f"not a run or resume command ({what[:40]!r})"
    env, stdio, rlimits = request.get("env"), request.get("stdio"), request.get("rlimits")
    well_formed = (
        isinstance(request.get("cwd"), str)
        and isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        and type(request.get("umask")) is int
        and isinstance(rlimits, dict)
        and set(rlimits) <= set(RLIMITS)
        and isinstance(stdio, list)
        and len(stdio) == 3
        and all(isinstance(s, dict) for s in stdio)
    )
    if not well_formed:
        return "a malformed request"
    if len(fds) != 3:
        return "without its three standard streams"
    return None


def _become_the_command(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: take on the command's folder, environment and streams, run it,
    report its exit code, and exit as the command would."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    interrupts_from_the_start()  # a signal the client passes on before main's handlers
    os.setpgid(0, 0)  # a group of its own: the client signals it, and its children, at once
    # Redacted: an argv may hold a secret (--repo https://x-access-token:TOKEN@github.com/...).
    line = f"run {os.getpid()}: aca {' '.join(request['argv'])} in {request['cwd']}"
    print(redact_text(line), flush=True)
    try:
        _take_on(request, fds)
        conn.sendall(message_line({"pid": os.getpid()}))
    except BaseException:
        # Say nothing and end: without a pid, the command runs by itself, and whatever went
        # wrong here (a folder gone, settings Prefect refuses) is reported as it would be.
        os._exit(1)
    import threading

    threading.Thread(target=_die_with_client, args=(conn,), daemon=True).start()
    from aca_flows.cli import main

    ended_runs_hold_their_signals()  # this process is the command
    code = 1
    try:
        code = main(request["argv"])
    finally:
        # The client waits for the connection to close, at the process's end, before it
        # exits: the output below is flushed by then.
        with contextlib.suppress(OSError):
            conn.sendall(message_line({"exit": code}))
    # As the command would: threads joined, exit handlers (Prefect's last logs and events)
    # run, output flushed; the connection closes with the process, and the client exits.
    exit_process(code)


def _take_on(request: dict, fds: list[int]) -> None:
    """The command's folder, environment, umask, limits and streams, and what the runner's own
    start fixed from its environment fixed again from the command's: the locale and time
    zone, the values modules read at import, Prefect's settings and logging."""
    import io
    import locale

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    for name, limits in request["rlimits"].items():
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(getattr(resource, name), tuple(limits))
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_CTYPE, "")
    time.tzset()
    for target, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    streams = []
    for fd, settings, mode in zip((0, 1, 2), request["stdio"], ("r", "w", "w"), strict=True):
        raw = open(fd, mode + "b", closefd=False)  # noqa: SIM115 (the stream outlives this)
        streams.append(
            io.TextIOWrapper(
                raw,
                encoding=settings["encoding"],
                errors=settings["errors"],
                line_buffering=settings["line_buffering"],
            )
        )
    sys.stdin, sys.stdout, sys.stderr = streams
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams
    _refresh_git()
    reload_prefect_settings()  # its default CA file, SSL_CERT_FILE at import, included


def _refresh_git() -> None:
    """GitPython's git is ``GIT_PYTHON_GIT_EXECUTABLE`` as it was at import: the command's."""
    import git

    git_executable = os.environ.get("GIT_PYTHON_GIT_EXECUTABLE", "git")
    if git_executable != git.Git.GIT_PYTHON_GIT_EXECUTABLE:
        git.refresh()


def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    """The request's line and the descriptors sent with it; ``ValueError`` (the descriptors
    closed) when the client is gone before the line's end or sends too much."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    try:
        while not data.endswith(b"\n"):
            more = conn.recv(1 << 20)
            if not more or len(data) > _REQUEST_LIMIT:
                raise ValueError("no whole request")
            data += more
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return data, fds


def _die_with_client(conn: socket.socket) -> None:
    """The client only closes the connection after the child ends; if it closes first, it was
    killed: so is the command it stood for."""
    with contextlib.suppress(OSError):
        while conn.recv(4096):
            pass
    os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    serve(WarmRunner(Path(sys.argv[1])))
