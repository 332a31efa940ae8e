"""The warm runner's client: ``aca`` hands a run over to the runner of ``aca server start``
(``warm_runner.py``) before it imports anything heavy.

``run_warm`` hands the runner its arguments, current folder, environment, umask, resource
limits and standard streams (passed as file descriptors); the child the runner forks becomes
that command: the same output on the same terminal or pipes, the same exit code. Signals the
command gets are passed on: a terminal's Ctrl-C to the child's process group, as it would have
reached a command that ran by itself and its children; a SIGTERM, SIGHUP or SIGQUIT to the
child; a Ctrl-Z stops the child's group until the command goes on. Without a runner of the
same aca, with a command whose priority, CPUs, user or groups differ from the runner's, or with
``ACA_WARM_RUNNER=off``, the command runs by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import sys

from aca_flows.cli.warm_runner import (
    RLIMITS,
    WarmRunner,
    fingerprint,
    is_run_command,
    message_line,
    process_standing,
    socket_address,
)

__all__ = ["HANDSHAKE_SECONDS", "run_warm"]

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Signals aca does not handle itself: a command that ignores them (``nohup``) would run on.
KEPT_IF_IGNORED = (signal.SIGHUP, signal.SIGQUIT)

HANDSHAKE_SECONDS = 30.0


def run_warm(argv: list[str]) -> int | None:
    """Run ``aca argv`` in the warm runner and return its exit code; ``None`` when there is no
    runner to use (the caller runs the command itself)."""
    if not is_run_command(argv):
        return None
    if os.environ.get("ACA_WARM_RUNNER", "").lower() in ("0", "off", "false", "no"):
        return None
    runner = WarmRunner()
    try:
        state = json.loads(runner.state_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    if str(state.get("socket", "")).startswith("\0"):
        _stop_exposed(runner)
        return None
    try:
        token = runner.token_file.read_text().strip()
    except (OSError, ValueError):
        return None
    if state.get("fingerprint") != fingerprint() or not token:
        return None
    if state.get("standing") != process_standing():
        # `nice -n 15 taskset -c 0 aca run`, `sg GROUP`, a unit's Group=: a fork of the runner
        # would run at its priority, on its CPUs, with its groups. The command runs by itself.
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with socket_address(runner.socket_path) as address:
            conn.connect(address)
        request = {
            "token": token,
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "umask": _umask(),
            "rlimits": {name: resource.getrlimit(getattr(resource, name)) for name in RLIMITS},
            "stdio": [_stream_settings(s) for s in (sys.stdin, sys.stdout, sys.stderr)],
        }
        socket.send_fds(conn, [message_line(request)], [0, 1, 2])
        reader = conn.makefile("rb")
        # A runner that does not answer (stopped, wedged) held every command, a dry run too,
        # without a word. Not run here instead: the runner may yet start it.
        conn.settimeout(HANDSHAKE_SECONDS)
        started = json.loads(reader.readline() or b"null")
        conn.settimeout(None)
    except TimeoutError:
        conn.close()
        print(
            f"aca: the warm runner (pid {state.get('pid')}) did not answer within "
            f"{HANDSHAKE_SECONDS:g} s; `aca server stop` then `aca server start` starts a new "
            "one, or ACA_WARM_RUNNER=off runs commands by themselves.",
            file=sys.stderr,
        )
        return 2
    except (OSError, ValueError):
        conn.close()
        return None
    if not isinstance(started, dict) or "pid" not in started:  # refused: the command runs itself
        conn.close()
        return None
    return _wait_for(started["pid"], reader)


def _stop_exposed(runner: WarmRunner) -> None:
    """A runner of an aca before this one listens on an abstract socket, which a sandboxed
    command allowed the network reaches, and runs whatever it is sent: it is stopped (the runs
    it forked go on), and the command runs by itself."""
    if runner.stop():
        print(
            "aca: stopped the warm runner of an earlier aca: sandboxed commands allowed the "
            "network could reach it. `aca server start` starts a new one.",
            file=sys.stderr,
        )


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

    for signum in FORWARDED_SIGNALS:
        if signum in KEPT_IF_IGNORED and signal.getsignal(signum) == signal.SIG_IGN:
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
