"""Who can drive the warm runner: the user's own ``aca run`` and ``aca resume``, nothing else.

The runner runs what it is sent outside any sandbox, so a sandboxed command (the network
allowed or not) must neither find nor reach it, and a request without the runner's token, or
for another command, is refused before anything is forked. Real runners (no Prefect server:
the runs here end at their first check), a real bubblewrap sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aca_flows.cli.warm_runner import WarmRunner
from aca_flows.sandbox import Sandbox
from aca_flows.settings import SandboxSection
from tests.fakes.git_repo import make_repo
from tests.fakes.stand_in import stand_in
from tests.flows.test_server import fresh_env

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120


def start_runner(home: Path) -> WarmRunner:
    """A runner for the user whose home is ``home`` (its folder ``home/.aca/server``)."""
    runner = WarmRunner(home / ".aca" / "server")
    assert runner.start() is not None, runner.log_file.read_text()
    return runner


@pytest.fixture(scope="module")
def short_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("reach") / "home"
    home.mkdir()
    runner = start_runner(home)
    try:
        yield home, runner
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def long_home(tmp_path_factory):
    """A home so deep that the runner's socket path does not fit ``sun_path`` (108 bytes)."""
    home = tmp_path_factory.mktemp("reach-long") / ("a-long-home-" * 8) / "home"
    home.mkdir(parents=True)
    assert len(os.fsencode(home / ".aca" / "server" / "runner.sock")) > 108
    runner = start_runner(home)
    try:
        yield home, runner
    finally:
        runner.stop()


def runs_forked(runner: WarmRunner) -> list[str]:
    return re.findall(r"^run \d+: .*$", runner.log_file.read_text(), re.M)


@contextlib.contextmanager
def connected(address: str):
    """A connection to ``address`` (a runner's state file's ``socket``), however long."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(address)) < 108:
            conn.connect(address)
        else:
            folder = os.open(os.path.dirname(address), os.O_PATH | os.O_DIRECTORY)
            try:
                conn.connect(f"/proc/self/fd/{folder}/{os.path.basename(address)}")
            finally:
                os.close(folder)
        yield conn
    finally:
        conn.close()


def hostile_request(tmp_path: Path, argv: list[str], **extra) -> tuple[dict, Path]:
    """F4's request: aca's git set to a script that leaves a proof when it runs."""
    proof = tmp_path / "ESCAPED"
    evil = tmp_path / "evil.sh"
    evil.write_text(f'#!/bin/sh\necho "ran as $(id -u)" >> {proof}\nexec git "$@"\n')
    evil.chmod(0o755)
    request = {
        "argv": argv,
        "cwd": str(tmp_path),
        "env": {"PATH": "/usr/bin:/bin", "GIT_PYTHON_GIT_EXECUTABLE": str(evil)},
        "umask": 0o022,
        "rlimits": {},
        "stdio": [{"encoding": "utf-8", "errors": "strict", "line_buffering": False}] * 3,
        **extra,
    }
    return request, proof


def send(runner: WarmRunner, request: dict) -> dict | None:
    """``request`` sent as the client sends one (with three descriptors); the runner's answer."""
    address = json.loads(runner.state_file.read_text())["socket"]
    with connected(address) as conn, open(os.devnull, "r+b") as null:
        fd = null.fileno()
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [fd, fd, fd])
        conn.settimeout(30)
        answer = conn.makefile("rb").readline()
    return json.loads(answer) if answer else None


@pytest.mark.parametrize("token", [None, "0" * 64, ""])
def test_a_request_without_the_runner_s_token_is_refused_and_nothing_is_forked(
    token, short_home, tmp_path
):
    _, runner = short_home
    before = runs_forked(runner)
    extra = {} if token is None else {"token": token}
    request, proof = hostile_request(tmp_path, ["run", "nothing.md"], **extra)

    answer = send(runner, request)

    assert answer is not None and "pid" not in answer and "token" in answer["refused"]
    assert runs_forked(runner) == before  # no child
    assert not proof.exists()
    assert "without the runner's token" in runner.log_file.read_text().splitlines()[-1]


@pytest.mark.parametrize(
    "argv",
    [["sessions", "list"], ["plan", "show", "run"], ["run", "--help"], ["--version"], []],
)
def test_the_runner_runs_only_run_and_resume(argv, short_home, tmp_path):
    """Even with the token (read by the user's own process), nothing but a run is forked."""
    _, runner = short_home
    before = runs_forked(runner)
    token = runner.token_file.read_text().strip()
    request, proof = hostile_request(tmp_path, argv, token=token)

    answer = send(runner, request)

    assert answer is not None and "not a run or resume command" in answer["refused"]
    assert runs_forked(runner) == before and not proof.exists()


def test_the_runner_s_folder_socket_and_token_are_the_user_s_alone(short_home):
    home, runner = short_home
    assert (home / ".aca" / "server").stat().st_mode & 0o777 == 0o700
    assert runner.token_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(runner.state_file.read_text())["socket"] == str(runner.socket_path)
    # Its sockets, as /proc/net/unix lists them (by inode): the one path, no abstract name.
    # A connection it accepted and has not yet closed is listed under the same path.
    fds = Path(f"/proc/{runner.pid()}/fd")
    inodes = {os.readlink(fd)[8:-1] for fd in fds.iterdir() if "socket:" in os.readlink(fd)}
    lines = [line.split() for line in Path("/proc/net/unix").read_text().splitlines()[1:]]
    names = [line[7] for line in lines if line[6] in inodes and len(line) > 7]
    assert set(names) == {str(runner.socket_path)}


def aca_run_missing(home: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``aca run missing.md``: the runner forks it (when it may), and it ends at once, exit 2."""
    return subprocess.run(
        [sys.executable, "-m", "aca_flows", "run", str(tmp_path / "missing.md")],
        env=fresh_env(home, **env), cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip


def test_a_long_home_s_runner_is_reached_through_its_folder(long_home, tmp_path):
    """The socket's path is longer than ``sun_path``: bound and reached all the same (no other
    folder, no abstract name), and the command forked with its exit code."""
    home, runner = long_home
    before = runs_forked(runner)
    done = aca_run_missing(home, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "missing.md" in done.stderr
    assert len(runs_forked(runner)) == len(before) + 1
    assert runner.socket_path.is_socket()


def test_a_command_refused_by_the_runner_runs_by_itself(long_home, tmp_path):
    """A token that is not the runner's (a runner restarted in between, say): the runner
    refuses, and the command runs on its own, with the same result."""
    home, runner = long_home
    token = runner.token_file.read_text()
    before = runs_forked(runner)
    try:
        runner.token_file.write_text("0" * 64 + "\n")
        done = aca_run_missing(home, tmp_path)
    finally:
        runner.token_file.write_text(token)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "missing.md" in done.stderr
    assert runs_forked(runner) == before
    assert "without the runner's token" in runner.log_file.read_text().splitlines()[-1]


# Inside the sandbox: the Unix sockets /proc/net/unix lists (the network namespace is the
# host's when the network is allowed) that could be this runner's: the abstract name it had
# (``@aca-runner-`` and a hash of its folder: other sessions' runners of the machine are
# listed too, and are not this test's), any path in its folder; and its folder's files.
PROBE = r"""
import hashlib, json, os, socket, sys
folder = sys.argv[1]
abstract = "@aca-runner-" + hashlib.sha256(folder.encode()).hexdigest()[:16]
names = [line.split()[7] for line in open("/proc/net/unix").read().splitlines()[1:]
         if len(line.split()) > 7]
print("LISTED", json.dumps([n for n in names if "aca" in n or "runner" in n]))
candidates = [n for n in names if n == abstract or n.startswith(folder)]
print("THIS RUNNER'S", json.dumps(candidates))
for name in candidates + [folder + "/runner.sock"]:
    address = "\0" + name[1:] if name.startswith("@") else name
    s = socket.socket(socket.AF_UNIX)
    try:
        if len(address) < 108:
            s.connect(address)
        else:
            fd = os.open(os.path.dirname(address), os.O_PATH)
            s.connect("/proc/self/fd/%d/%s" % (fd, os.path.basename(address)))
        print("CONNECTED", repr(name))
    except OSError as exc:
        print("unreachable", repr(name), exc)
for name in ("runner.token", "runner.json"):
    try:
        print("READ", name, open(os.path.join(folder, name)).read()[:80])
    except OSError as exc:
        print("unreadable", name, exc)
"""


@pytest.mark.parametrize("home_shown", [False, True], ids=["repository-in-home", "home-shown"])
def test_a_sandboxed_command_with_the_network_cannot_find_or_reach_the_runner(
    home_shown, short_home, tmp_path, monkeypatch
):
    """F4: a task allowed the network shares the host's network namespace. Whether the
    repository lives in the home, or the whole home is shown read-only (``read_only_paths``),
    the runner's socket and token are out of reach."""
    home, runner = short_home
    monkeypatch.setenv("HOME", str(home))  # the user's home: the sandbox hides it
    repo = make_repo(home / f"repo-{home_shown}")
    worktree = repo / ".aca" / "worktrees" / "s1" / "t1"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(worktree)],
                   check=True)  # fmt: skip
    (worktree / "probe.py").write_text(PROBE)
    settings = SandboxSection(read_only_paths=[str(home)] if home_shown else [])
    sandbox = Sandbox.for_worktree(worktree, settings, network=True)
    before = runs_forked(runner)

    (home / "shown.txt").write_text("the home is shown\n")
    command = f"python3 probe.py {runner.home}; cat {home}/shown.txt"
    result = asyncio.run(sandbox.run(command, timeout_seconds=60, output_limit_bytes=50_000))

    out = result.output
    assert "LISTED" in out and "unreadable runner.token" in out, out
    assert "CONNECTED" not in out and "READ " not in out, out
    (found,) = [line for line in out.splitlines() if line.startswith("THIS RUNNER'S ")]
    assert not [name for name in json.loads(found[14:]) if name.startswith("@")], out
    assert runs_forked(runner) == before
    assert ("the home is shown" in out) == home_shown, out


def test_claude_code_s_bash_may_not_read_the_runner_s_folder(tmp_path, monkeypatch):
    """Claude Code's sandbox reads the home that holds the worktree: not aca's server folder."""
    from aca_flows.providers.claude_code_sandbox import claude_sandbox_settings

    home = tmp_path / "home"
    (home / "repo").mkdir(parents=True)
    (home / ".aca" / "server").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    settings = claude_sandbox_settings(True, str(home / "repo"))
    assert str(home / ".aca") in settings["filesystem"]["denyRead"]


def test_a_runner_of_an_earlier_aca_on_an_abstract_socket_is_stopped(tmp_path):
    """Before this fix, a runner listened on an abstract socket, reachable from a sandbox with
    the network, and ran any request of the user's uid: a command that finds one stops it (not
    the runs it forked) and runs by itself."""
    home = tmp_path / "home"
    runner = WarmRunner(home / ".aca" / "server")
    runner.home.mkdir(parents=True)
    earlier = stand_in("aca_flows.cli.warm_runner", str(runner.home), start_new_session=True)
    try:
        state = {"pid": earlier.pid, "socket": "\0aca-runner-0123456789abcdef", "fingerprint": "x"}
        runner.state_file.write_text(json.dumps(state))
        done = aca_run_missing(home, tmp_path)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "stopped the warm runner of an earlier aca" in done.stderr
        assert earlier.wait(timeout=30) is not None
        assert not runner.state_file.exists()
    finally:
        earlier.kill()
        earlier.wait()


@pytest.mark.parametrize(
    ("argv", "is_run"),
    [
        (["run", "tasks.md", "--workdir", "w"], True),
        (["resume", "--latest"], True),
        (["--task-file", "tasks.md"], True),
        (["--workdir", "w", "--execution-plan=plan.json"], True),
        (["run", "tasks.md", "--help"], False),
        (["--version", "--task-file", "x"], False),
        (["--list-checkpoints", "--task-file", "x"], False),
        (["plan", "show", "run"], False),
        (["sessions", "list", "--task-file", "x"], False),
        (["--", "--task-file"], False),
        ([], False),
        ("run", False),
        ([["run"]], False),
    ],
)
def test_what_counts_as_a_run(argv, is_run):
    from aca_flows.cli.warm_runner import is_run_command

    assert is_run_command(argv) is is_run
