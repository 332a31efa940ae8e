"""The warm runner: a process kept by ``aca server start`` with Prefect, the provider SDKs and
aca already imported, which forks one child per ``aca run`` or ``aca resume``. Those imports
are most of a run's start-up (about 1.3 s of CPU on a 2-core machine); a forked child starts
with them done.

``run_warm`` (the client, called by ``aca`` before it imports anything heavy) hands the runner
its arguments, current folder, environment, umask and standard streams (passed as file
descriptors); the child becomes that command: the same output on the same terminal or pipes,
the same exit code. Signals the command gets are passed on: a terminal's Ctrl-C to the child's
process group, as it would have reached a command that ran by itself and its children; a
SIGTERM, SIGHUP or SIGQUIT to the child; a Ctrl-Z stops the child's group until the command
goes on. If the command is killed outright (SIGKILL), the child's group is killed too.

A command uses the runner only when the runner runs the same aca (package, its files,
interpreter, installed packages); otherwise, without a runner, or with ``ACA_WARM_RUNNER=off``
(a job that must run inside its own cgroup or container, say), it runs by itself as usual.
Each run it starts is a line of its log (``~/.aca/server/runner.log``). ``aca server start``
starts it beside the local Prefect server, ``aca server stop`` stops both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

from aca_flows._exit import exit_process
from aca_flows._files import write_json_atomic
from aca_flows.flows import reload_prefect_settings
from aca_flows.flows.server import server_home

__all__ = ["WarmRunner", "fingerprint", "run_warm", "serve"]

# Commands that run tasks: the ones whose start-up is worth a warm process.
_RUN_COMMANDS = frozenset({"run", "resume", "--task-file", "--execution-plan"})
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Signals aca does not handle itself: a command that ignores them (``nohup``) would run on.
_KEPT_IF_IGNORED = (signal.SIGHUP, signal.SIGQUIT)
# The command's resource limits hold for its run too (as far as the runner's allow).
_RLIMITS = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
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


# -- the client: ``aca`` hands its command over -------------------------------------------------


def run_warm(argv: list[str]) -> int | None:
    """Run ``aca argv`` in the warm runner and return its exit code; ``None`` when there is no
    runner to use (the caller runs the command itself)."""
    if not _RUN_COMMANDS.intersection(argv) or {"-h", "--help"}.intersection(argv):
        return None
    if os.environ.get("ACA_WARM_RUNNER", "").lower() in ("0", "off", "false", "no"):
        return None
    try:
        state = json.loads(WarmRunner().state_file.read_text())
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != fingerprint():
        return None
    if not all(_is_open(fd) for fd in (0, 1, 2)):
        # A closed standard stream (``<&-``): the connection would take its number and be
        # handed over as that stream, the run's own connection as its stdin, say.
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(state["socket"])
        request = {
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _umask(),
            "rlimits": {name: resource.getrlimit(getattr(resource, name)) for name in _RLIMITS},
            "stdio": [_stream_settings(s) for s in (sys.stdin, sys.stdout, sys.stderr)],
        }
        socket.send_fds(conn, [_line(request)], [0, 1, 2])
        reader = conn.makefile("rb")
        started = json.loads(reader.readline() or b"null")
    except (OSError, KeyError, ValueError):
        conn.close()
        return None
    if not isinstance(started, dict) or "pid" not in started:
        conn.close()
        return None
    return _wait_for(started["pid"], reader)


def _wait_for(pid: int, reader) -> int:
    """Pass signals on to the child until it ends; its exit code. SIGINT goes to the child's
    group, as a terminal's Ctrl-C reaches a command's children too; the others, sent by
    ``kill`` or a supervisor to a pid, to the child alone."""

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if signum == signal.SIGINT:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)

    def suspend(_signum, _frame):
        # Ctrl-Z stops the command's group, not the run (a group of the runner's session): it
        # stops alongside, as a command's children would, and goes on when the command does.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGSTOP)  # SIGTSTP is dropped in a group without a shell
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # returns once continued (``fg``, ``bg``)
        signal.signal(signal.SIGTSTP, suspend)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGCONT)

    for signum in _FORWARDED_SIGNALS:
        if signum in _KEPT_IF_IGNORED and signal.getsignal(signum) == signal.SIG_IGN:
            continue  # ``nohup aca run``: a hangup would not have stopped the command
        signal.signal(signum, forward)
    signal.signal(signal.SIGTSTP, suspend)
    code = None
    for line in reader:  # until the child's end closes the connection
        with contextlib.suppress(ValueError):
            code = json.loads(line).get("exit", code)
    if code is None:
        print("aca: the run's process ended without an exit code (killed?)", file=sys.stderr)
        return 1
    return code


def _stream_settings(stream) -> dict:
    return {
        "encoding": stream.encoding,
        "errors": stream.errors,
        "line_buffering": stream.line_buffering,
    }


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


# -- the runner: preloaded, it forks a child per command ----------------------------------------


class WarmRunner:
    """The runner of a local server's home (``~/.aca/server``): its state file and log."""

    def __init__(self, home: Path | None = None):
        home = home or server_home()
        self.home = home
        self.state_file = home / "runner.json"
        self.log_file = home / "runner.log"
        # An abstract socket (Linux): no path length limit, nothing left behind on a crash.
        self.address = "\0aca-runner-" + hashlib.sha256(str(home).encode()).hexdigest()[:16]

    def pid(self) -> int | None:
        """The runner's pid if it is ready and runs this aca, else ``None``."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(self.state_file.read_text())
            if state["fingerprint"] == fingerprint() and self._is_runner(state["pid"]):
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
        from aca_flows.flows.server import spawn_background, startup_timeout

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
        from aca_flows.flows.server import stop_process_group

        try:
            pid = json.loads(self.state_file.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return False
        self.state_file.unlink(missing_ok=True)
        if not self._is_runner(pid):
            return False
        stop_process_group(pid, timeout=5.0)
        return True


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
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(runner.address)
    listener.listen(16)
    state = {"pid": os.getpid(), "socket": runner.address, "fingerprint": fingerprint()}
    write_json_atomic(runner.state_file, state, durable=False)
    print(f"warm runner {os.getpid()} ready", flush=True)
    while True:
        conn, _ = listener.accept()
        if not _same_user(conn):
            conn.close()
            continue
        if os.fork() == 0:
            listener.close()
            _become_the_command(conn)  # never returns
        conn.close()


def _same_user(conn: socket.socket) -> bool:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _become_the_command(conn: socket.socket) -> None:
    """In the forked child: take on the command's folder, environment and streams, run it,
    report its exit code, and exit as the command would."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setpgid(0, 0)  # a group of its own: the client signals it, and its children, at once
    request, fds = _receive(conn)
    print(f"run {os.getpid()}: aca {' '.join(request['argv'])} in {request['cwd']}", flush=True)
    try:
        _take_on(request, fds)
        conn.sendall(_line({"pid": os.getpid()}))
    except BaseException:
        # Say nothing and end: without a pid, the command runs by itself, and whatever went
        # wrong here (a folder gone, settings Prefect refuses) is reported as it would be.
        os._exit(1)
    import threading

    threading.Thread(target=_die_with_client, args=(conn,), daemon=True).start()
    from aca_flows.cli import main

    code = 1
    try:
        code = main(request["argv"])
    finally:
        # The client waits for the connection to close, at the process's end, before it
        # exits: the output below is flushed by then.
        with contextlib.suppress(OSError):
            conn.sendall(_line({"exit": code}))
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


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            os._exit(1)  # the client is gone before it said what to run
        data += more
    if len(fds) != 3:
        os._exit(1)
    return json.loads(data), fds


def _die_with_client(conn: socket.socket) -> None:
    """The client only closes the connection after the child ends; if it closes first, it was
    killed: so is the command it stood for."""
    with contextlib.suppress(OSError):
        while conn.recv(4096):
            pass
    os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    serve(WarmRunner(Path(sys.argv[1])))
