"""The warm runner of ``aca server start``: runs forked from it print, exit, read their
environment and folder, and answer signals as runs on their own do. Real ``aca`` processes
with a fresh home, a real local server and runner, the fake Anthropic server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from aca_flows.cli.warm_client import run_warm
from aca_flows.cli.warm_runner import WarmRunner
from tests.crash.conftest import kill_group, only_session, wait_for
from tests.crash.test_kill_and_resume import CHAIN, Agent, branch_tasks
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.stand_in import stand_in
from tests.flows.test_server import aca, alive, fresh_env, output

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A home whose local server and warm runner are up for the module's tests."""
    home = tmp_path_factory.mktemp("warm-home")
    env = fresh_env(home, ANTHROPIC_API_KEY="the-runner-s-own-key")
    try:
        started = subprocess.run(
            [sys.executable, "-m", "aca_flows", "server", "start", "--port", str(_free_port())],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        assert "warm runner (pid" in started.stdout, started.stdout
        yield home
    finally:
        subprocess.run(
            [sys.executable, "-m", "aca_flows", "server", "stop"], env=env, timeout=60, check=True
        )


def runs_forked(home: Path) -> dict[int, str]:
    """The runs the runner started (its log): pid -> command line."""
    log = WarmRunner(home / ".aca" / "server").log_file.read_text()
    return {int(pid): line for pid, line in re.findall(r"^run (\d+): (.*)$", log, re.M)}


def readme_job(home: Path, demo: Path, **env: str) -> subprocess.CompletedProcess:
    """The README's main job, its paths relative to the project's folder."""
    return subprocess.run(
        [sys.executable, "-m", "aca_flows", "run", "tasks/examples/hello.md",
         "--workdir", str(demo), "--init-git", "--config", "tasks/examples/hello.aca.toml"],
        env=fresh_env(home, **env), cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip


def test_the_readme_main_job_runs_warm_with_its_output_and_exit_code(home, tmp_path):
    before = runs_forked(home)
    done = readme_job(home, tmp_path / "demo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 completed of 3" in done.stdout and "Traceback" not in done.stderr
    assert "no Prefect server is running" not in done.stderr  # the local server was used
    (forked,) = set(runs_forked(home)) - set(before)
    # Relative paths were the command's, in the command's folder.
    assert runs_forked(home)[forked].endswith(f"in {ROOT}")
    assert not alive(forked)


def test_the_runner_s_log_keeps_no_token_of_a_command_line(home, tmp_path):
    token = "ghs_runnerlogtoken0123456789abcdef"
    url = f"https://x-access-token:{token}@127.0.0.1:9/team/app.git"
    before = runs_forked(home)
    done = subprocess.run(
        [sys.executable, "-m", "aca_flows", "run", str(tmp_path / "t.md"), "--repo", url],
        env=fresh_env(home), cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr  # the remote cannot be fetched
    (forked,) = set(runs_forked(home)) - set(before)
    assert "--repo https://x-access-token:[REDACTED]@127.0.0.1" in runs_forked(home)[forked]
    assert token not in WarmRunner(home / ".aca" / "server").log_file.read_text()


def test_a_command_run_by_another_name_of_the_interpreter_runs_warm(home, tmp_path):
    """The runner was started by ``python -m aca_flows``; the ``aca`` script runs under
    ``python3``: one interpreter, and its runs are forked from the runner."""
    interpreter = Path(sys.executable)
    aliases = [
        path
        for path in interpreter.parent.glob("python*")
        if path.name != interpreter.name and path.resolve() == interpreter.resolve()
    ]
    assert aliases, f"no other name for {interpreter} in its folder"
    before = runs_forked(home)
    done = subprocess.run(
        [str(aliases[0]), "-m", "aca_flows", "run", "tasks/examples/hello.md",
         "--workdir", str(tmp_path / "demo"), "--init-git",
         "--config", "tasks/examples/hello.aca.toml"],
        env=fresh_env(home), cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(set(runs_forked(home)) - set(before)) == 1


def test_a_run_reads_the_command_s_environment_not_the_runner_s(home, tmp_path):
    """The runner was started with an Anthropic key; a command without one is refused."""
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n")
    before = runs_forked(home)
    done = subprocess.run(
        [sys.executable, "-m", "aca_flows", "run", str(tasks), "--provider", "anthropic",
         "--workdir", str(make_repo(tmp_path / "repo"))],
        env=fresh_env(home), capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ANTHROPIC_API_KEY" in done.stderr and "Traceback" not in done.stderr
    assert len(runs_forked(home)) == len(before) + 1


def test_aca_warm_runner_off_runs_the_command_by_itself(home, tmp_path):
    before = runs_forked(home)
    done = readme_job(home, tmp_path / "demo", ACA_WARM_RUNNER="off")
    assert done.returncode == 0, done.stdout + done.stderr
    assert runs_forked(home) == before


def test_a_command_at_another_priority_runs_by_itself(home, tmp_path):
    # `nice -n 15 aca run` (a nightly batch kept from starving the machine) ran at the
    # runner's priority: a fork has its parent's, not the command's.
    tasks = tmp_path / "tasks.toml"
    tasks.write_text('[[tasks]]\ntitle = "write a.txt"\n')
    before = runs_forked(home)
    done = subprocess.run(
        ["nice", "-n", "15", sys.executable, "-m", "aca_flows", "run", str(tasks), "--dry-run"],
        env=fresh_env(home), cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert runs_forked(home) == before  # by itself
    same = subprocess.run(
        [sys.executable, "-m", "aca_flows", "run", str(tasks), "--dry-run"],
        env=fresh_env(home), cwd=ROOT, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert same.returncode == 0 and len(runs_forked(home)) == len(before) + 1  # warm


def test_a_command_with_its_own_ca_file_still_runs_warm(home, tmp_path):
    """The runner was started without ``SSL_CERT_FILE``; a command that has one is forked all
    the same (its Prefect settings read it again: the test below)."""
    import certifi

    before = runs_forked(home)
    done = readme_job(home, tmp_path / "demo", SSL_CERT_FILE=certifi.where())
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(runs_forked(home)) == len(before) + 1


# A process of its own, as a forked run is: the flow tests' Prefect harness, when it ran
# earlier in the session, holds the settings it started with.
CA_FILE_AFTER_FORK = """
import os, sys
from prefect.context import refresh_global_settings_context
from prefect.settings import PREFECT_API_SSL_CERT_FILE
from aca_flows.flows import _ca_file_default_from_environment

for value in sys.argv[1:]:
    if value == "-":
        os.environ.pop("SSL_CERT_FILE", None)
    else:
        os.environ["SSL_CERT_FILE"] = value
    _ca_file_default_from_environment()
    refresh_global_settings_context()
    print(PREFECT_API_SSL_CERT_FILE.value())
"""


@pytest.mark.parametrize("command_s", ["/etc/ssl/the-command-s.pem", None])
def test_a_forked_run_s_prefect_takes_the_command_s_ca_file(command_s):
    """Prefect reads ``SSL_CERT_FILE`` once, at import, as the default of its server's CA
    file: a run forked from a runner started with another value verifies the command's
    server against the command's certificates, as the command run by itself would."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("SSL_CERT_FILE")}
    env["SSL_CERT_FILE"] = "/etc/ssl/the-runner-s.pem"  # the runner's, when Prefect was imported
    done = subprocess.run(
        [sys.executable, "-c", CA_FILE_AFTER_FORK, "/etc/ssl/the-runner-s.pem", command_s or "-"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.splitlines() == ["/etc/ssl/the-runner-s.pem", str(command_s)]


def start_chain(home: Path, tmp_path: Path, llm: FakeLLMServer, agent: Agent, **popen):
    """The chain a -> b -> c started; ``popen``: how its process starts, if not as ``aca``'s."""
    repo = make_repo(tmp_path / "repo")
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(20):
        llm.anthropic.enqueue(agent)
    (tmp_path / "tasks.md").write_text(CHAIN)
    env = fresh_env(
        home,
        ANTHROPIC_BASE_URL=llm.url,
        ANTHROPIC_API_KEY="test-key",
        ACA_SESSION__PROVIDER="anthropic",
    )
    args = ["run", str(tmp_path / "tasks.md"), "--model", "claude-test", "--workdir", str(repo)]
    if not popen:
        return repo, env, aca(*args, env=env, log=tmp_path / "run")
    log = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aca_flows", *args], env=env, cwd=ROOT,
        stdout=log.with_suffix(".out").open("w"), stderr=log.with_suffix(".err").open("w"),
        **popen,
    )  # fmt: skip
    return repo, env, proc


class Held(NamedTuple):
    repo: Path
    env: dict[str, str]
    proc: subprocess.Popen
    agent: Agent
    llm: FakeLLMServer
    forked: set[int]  # the runs the runner forked for it (none if it ran by itself)


@contextlib.contextmanager
def chain_held_at_b(home: Path, tmp_path: Path, **popen) -> Iterator[Held]:
    """The chain run with b's model call held: yields once the call came (the command still
    running); at the end the call is released and the command's group killed if still there."""
    agent = Agent("b")
    before = set(runs_forked(home))
    with FakeLLMServer() as llm:
        repo, env, proc = start_chain(home, tmp_path, llm, agent, **popen)
        try:
            wait_for(lambda: agent.arrived.is_set() or proc.poll() is not None, WAIT, "b's call")
            assert proc.poll() is None, output(tmp_path / "run")
            yield Held(repo, env, proc, agent, llm, set(runs_forked(home)) - before)
        finally:
            agent.release.set()
            if proc.poll() is None:
                kill_group(proc)


def resume_completes(repo: Path, env: dict[str, str]) -> None:
    """``aca resume`` of the repository's session lands the rest of the chain."""
    session = only_session(repo)
    resumed = subprocess.run(
        [sys.executable, "-m", "aca_flows", "resume", session.name, "--workdir", str(repo)],
        env=env, capture_output=True, text=True, timeout=WAIT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert branch_tasks(repo, f"aca/{session.name}") == ["a", "b", "c"]


def chain_completed(held: Held, tmp_path: Path) -> None:
    code = held.proc.wait(timeout=WAIT)
    assert code == 0, output(tmp_path / "run")
    session = only_session(held.repo)
    assert branch_tasks(held.repo, f"aca/{session.name}") == ["a", "b", "c"]


SIGNALS = {
    "ctrl-c": lambda proc: os.killpg(proc.pid, signal.SIGINT),  # a terminal's: the whole group
    "sigterm": lambda proc: proc.send_signal(signal.SIGTERM),  # kill's: the command alone
}


@pytest.mark.parametrize("how", sorted(SIGNALS))
def test_a_signal_to_the_command_stops_the_warm_run_cleanly(how, home, tmp_path):
    """As a run on its own: no new task starts, the running one finishes, exit 130."""
    with chain_held_at_b(home, tmp_path) as held:
        assert held.forked  # the run is the runner's child
        SIGNALS[how](held.proc)
        wait_for(lambda: "no new task starts" in output(tmp_path / "run"), WAIT, "the notice")
        held.agent.release.set()
        code = held.proc.wait(timeout=WAIT)
        text = output(tmp_path / "run")
        assert code == 130, text
        assert "Traceback" not in text
        session = only_session(held.repo)
        meta = json.loads((session / "meta" / "session.json").read_text())
        assert meta["status"] == "interrupted"
        assert branch_tasks(held.repo, f"aca/{session.name}") == ["a", "b"]  # b finished
        resume_completes(held.repo, held.env)


def test_a_sigkilled_command_takes_its_warm_run_with_it(home, tmp_path):
    with chain_held_at_b(home, tmp_path) as held:
        (run_pid,) = held.forked
        assert alive(run_pid)
        kill_group(held.proc)  # the command and its group, nothing else
        wait_for(lambda: not alive(run_pid), 10, "the forked run to end")
        held.agent.release.set()
        calls = len(held.llm.anthropic.requests)
        resume_completes(held.repo, held.env)
        assert len(held.llm.anthropic.requests) > calls  # b and c were done by the resume


def test_a_sigkilled_command_with_stdin_closed_leaves_no_run_behind(home, tmp_path):
    """With fd 0 closed, the command's connection to the runner would take fd 0 and be handed
    to its run as stdin: the run would hold the command's end open and outlive a SIGKILL."""
    closed_stdin = {"start_new_session": True, "preexec_fn": lambda: os.close(0)}
    with chain_held_at_b(home, tmp_path, **closed_stdin) as held:
        kill_group(held.proc)
        wait_for(lambda: not any(alive(pid) for pid in held.forked), 10, "no run left")
        held.agent.release.set()
        resume_completes(held.repo, held.env)


def test_ctrl_z_stops_the_warm_run_until_the_command_goes_on(home, tmp_path):
    """As a command run by itself, with its children, stops on a terminal's Ctrl-Z. The
    command is a job of this process's session, as a shell's job is of the shell's."""
    with chain_held_at_b(home, tmp_path, process_group=0) as held:
        (run_pid,) = held.forked
        os.killpg(held.proc.pid, signal.SIGTSTP)  # the terminal's Ctrl-Z, to the command's group
        wait_for(lambda: _state(held.proc.pid) == _state(run_pid) == "T", 30, "both stopped")
        os.killpg(held.proc.pid, signal.SIGCONT)  # the shell's ``fg``
        held.agent.release.set()
        chain_completed(held, tmp_path)


def test_a_nohup_command_s_warm_run_goes_on_after_a_hangup(home, tmp_path):
    """``nohup aca run ... &``: the command ignores SIGHUP, and so must its run."""
    nohup = {
        "start_new_session": True,
        "preexec_fn": lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    }
    with chain_held_at_b(home, tmp_path, **nohup) as held:
        assert held.forked  # the run is the runner's child
        held.proc.send_signal(signal.SIGHUP)  # the terminal closed
        held.agent.release.set()
        chain_completed(held, tmp_path)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_runner_of_another_aca_is_not_used(tmp_path, monkeypatch):
    """A runner started before aca changed (an upgrade, an edit) would run the old code."""
    monkeypatch.setenv("HOME", str(tmp_path))
    runner = WarmRunner(tmp_path / ".aca" / "server")
    runner.state_file.parent.mkdir(parents=True)
    state = {"pid": os.getpid(), "socket": str(runner.socket_path), "fingerprint": "another aca"}
    runner.state_file.write_text(json.dumps(state))
    assert runner.pid() is None
    assert run_warm(["run", "tasks.md"]) is None  # the command runs by itself
    # `aca server status` said "no warm runner" beside its process: it names it, and the fix.
    from aca_flows.cli.server import _runner_line

    old = stand_in("aca_flows.cli.warm_runner", str(runner.home), start_new_session=True)
    try:
        runner.state_file.write_text(json.dumps(state | {"pid": old.pid}))
        assert runner.pid() is None
        assert _runner_line(runner) == (
            f"warm runner pid {old.pid} runs an older aca (changed or reinstalled since it "
            "started), so runs start cold: `aca server start` replaces it"
        )
    finally:
        old.kill()
        old.wait()


def test_a_dead_runner_s_pid_taken_by_another_process_is_neither_used_nor_stopped(
    tmp_path, monkeypatch
):
    """A runner that died (a reboot, the OOM killer) leaves its state file; its pid may be
    another process's since, which ``aca server stop`` must not kill."""
    monkeypatch.setenv("HOME", str(tmp_path))
    from aca_flows.cli.warm_runner import fingerprint

    runner = WarmRunner(tmp_path / ".aca" / "server")
    runner.state_file.parent.mkdir(parents=True)
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        state = {"pid": other.pid, "socket": str(runner.socket_path), "fingerprint": fingerprint()}
        runner.state_file.write_text(json.dumps(state))
        assert runner.pid() is None
        assert runner.stop() is False
        assert other.poll() is None  # still running
    finally:
        other.kill()
        other.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_runner_that_does_not_answer_is_named_not_waited_for(home, monkeypatch, capsys):
    """A stopped (or wedged) runner held every command, a dry run too, without a word."""
    from aca_flows.cli import warm_client

    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(warm_client, "HANDSHAKE_SECONDS", 1.0)
    pid = WarmRunner(home / ".aca" / "server").pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        code = run_warm(["run", "no-such-tasks.md", "--dry-run"])
    finally:
        os.kill(pid, signal.SIGCONT)
    assert code == 2
    assert f"the warm runner (pid {pid}) did not answer within 1 s" in capsys.readouterr().err
