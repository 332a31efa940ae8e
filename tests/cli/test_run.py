"""``aca run`` as a user starts it: a provider that cannot work, or agent commands that could
not be sandboxed, end the run before any task."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import git
import pytest

import aca_flows.cli.run as run_cli
from aca_flows._startup import signals_remembered
from aca_flows.cli import main
from aca_flows.plan import load_task_file
from aca_flows.session.store import SessionStore
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "tasks" / "examples" / "hello.md"
HELLO_CONFIG = ROOT / "tasks" / "examples" / "hello.aca.toml"
NOTHING_RAN = "interrupted before the run started: no session was created, no task ran."


def aca(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m aca_flows ARGS`` with only the environment given: no key, no login."""
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PREFECT_HOME": str(home / ".prefect"),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "aca_flows", *args],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def untouched(repo: Path, head: str) -> None:
    checkout = git.Repo(repo)
    assert checkout.head.commit.hexsha == head
    assert [h.name for h in checkout.heads] == ["main"]  # no session branch, no commit
    assert not (repo / ".aca" / "sessions").exists()


def test_claude_code_with_no_login_and_no_key_exits_2_before_any_task(tmp_path):
    repo = make_repo(tmp_path / "repo")
    head = git.Repo(repo).head.commit.hexsha
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- Add a greeting to README.md {#greet}\n")
    home = tmp_path / "home"
    home.mkdir()

    # The real bundled claude binary: the default provider, nothing configured.
    done = aca("run", str(tasks), "--workdir", str(repo), home=home)

    assert done.returncode == 2, done.stderr
    assert "the claude-code provider cannot work" in done.stderr
    assert "not logged in" in done.stderr and "claude auth login" in done.stderr
    assert "ANTHROPIC_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    untouched(repo, head)
    assert not (home / ".prefect").exists()  # Prefect never started


def test_an_unreadable_cassette_exits_2_before_the_session_exists(tmp_path):
    repo = make_repo(tmp_path / "repo")
    head = git.Repo(repo).head.commit.hexsha
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    cassette = tmp_path / "tasks.cassette.json"
    cassette.write_text('{"version": 1, "interactions": [')  # cut short
    home = tmp_path / "home"
    home.mkdir()

    done = aca(
        "run",
        str(tasks),
        "--workdir",
        str(repo),
        "--provider",
        "replay",
        home=home,
        ACA_PROVIDERS__REPLAY__CASSETTE=str(cassette),
    )

    assert done.returncode == 2, done.stderr
    assert f"the cassette {cassette} cannot be read" in done.stderr
    assert "record it again with --record FILE" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    untouched(repo, head)  # no session left running with its lock held


def test_a_rejected_key_exits_2_before_any_task_and_spends_nothing(tmp_path):
    repo = make_repo(tmp_path / "repo")
    head = git.Repo(repo).head.commit.hexsha
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    home = tmp_path / "home"
    home.mkdir()

    with FakeLLMServer() as server:
        done = aca(
            "run",
            str(tasks),
            "--workdir",
            str(repo),
            "--provider",
            "anthropic",
            home=home,
            ANTHROPIC_BASE_URL=server.url,
            ANTHROPIC_API_KEY="sk-ant-revoked",
        )

    assert done.returncode == 2, done.stderr
    assert "rejected ANTHROPIC_API_KEY (401" in done.stderr
    assert "set a valid ANTHROPIC_API_KEY" in done.stderr
    assert "sk-ant-revoked" not in done.stderr + done.stdout
    # One free key check, no call: the model's page, which the rejected key was refused.
    assert [(r.method, r.path.rsplit("/", 1)[0]) for r in server.requests] == [
        ("GET", "/v1/models")
    ]
    untouched(repo, head)


def test_a_model_the_provider_does_not_know_exits_2_before_any_task(tmp_path):
    repo = make_repo(tmp_path / "repo")
    head = git.Repo(repo).head.commit.hexsha
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n- write b.txt {#b model=claude-opus-typo}\n")
    home = tmp_path / "home"
    home.mkdir()

    with FakeLLMServer() as server:
        server.unknown_models = {"claude-opus-typo"}
        done = aca(
            "run",
            str(tasks),
            "--workdir",
            str(repo),
            "--provider",
            "anthropic",
            home=home,
            ANTHROPIC_BASE_URL=server.url,
            ANTHROPIC_API_KEY=server.api_key,
        )

    assert done.returncode == 2, done.stderr
    assert "does not know the model 'claude-opus-typo'" in done.stderr
    assert "name a model it has (--model, [providers.anthropic] model, or the task's" in (
        done.stderr.replace("\n", " ")
    )
    assert "Traceback" not in done.stderr + done.stdout
    assert server.model_calls == []  # nothing was paid for
    untouched(repo, head)


def test_a_missing_task_file_is_named_before_the_intelligent_parser_s_provider(tmp_path):
    repo = make_repo(tmp_path / "repo")
    home = tmp_path / "home"
    home.mkdir()
    missing = tmp_path / "tasks.md"

    # No ANTHROPIC_API_KEY: the provider could not work either; the file is what to fix first.
    args = ("run", str(missing), "--use-intelligent-parser", "--provider", "anthropic")
    done = aca(*args, "--workdir", str(repo), home=home)

    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: task file {missing} does not exist; check the path.\n"


def test_with_repo_a_missing_task_file_or_provider_is_named_before_the_remote_is_cloned(
    tmp_path,
):
    remote = tmp_path / "remote.git"
    git.Repo(make_repo(tmp_path / "repo")).clone(remote, bare=True)
    home = tmp_path / "home"
    home.mkdir()
    missing = tmp_path / "tasks.md"

    done = aca("run", str(missing), "--repo", str(remote), home=home)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: task file {missing} does not exist; check the path.\n"

    done = aca("run", str(HELLO), "--repo", str(remote), "--provider", "nonsense", home=home)
    assert done.returncode == 2 and "nonsense" in done.stderr, done.stderr
    assert not (home / ".aca" / "repos").exists()  # nothing cloned


def test_with_repo_a_run_or_resume_refused_after_the_clone_leaves_no_clone_behind(tmp_path):
    remote = tmp_path / "remote.git"
    git.Repo(make_repo(tmp_path / "repo")).clone(remote, bare=True)
    home = tmp_path / "home"
    home.mkdir()
    cycle = tmp_path / "cycle.md"
    cycle.write_text("- write a.txt {#a depends_on=b}\n- write b.txt {#b depends_on=a}\n")
    typo = tmp_path / "typo.toml"
    typo.write_text("[session]\nprovder = 'replay'\n")

    refused = [
        aca("run", str(cycle), "--repo", str(remote), home=home),  # read after the clone
        aca("run", str(HELLO), "--repo", str(remote), "--config", str(typo), home=home),
        aca("resume", "20260101-000000-abcdef", "--repo", str(remote), home=home),
        aca("resume", "--latest", "--repo", str(remote), home=home),
    ]

    for done in refused:
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "a -> b -> a" in refused[0].stderr and "provder" in refused[1].stderr
    # The resume names where the session is not: the remote, not the clone that is gone.
    assert f"{remote} holds no record of session '20260101-000000-abcdef'" in refused[2].stderr
    assert "resume it there" in refused[2].stderr
    assert f"no unfinished session of {remote} on this machine" in refused[3].stderr
    assert not any((home / ".aca" / "repos").glob("remote-*"))  # no clone left behind
    # A working area that was there before is kept: only what the command made goes.
    area = tmp_path / "mine"
    subprocess.run(["git", "clone", "-q", str(remote), str(area)], check=True)
    done = aca("run", str(cycle), "--repo", str(remote), "-w", str(area), home=home)
    assert done.returncode == 2 and (area / ".git").is_dir()


def test_a_machine_without_bubblewrap_is_refused_naming_the_package(tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("git"), bin_dir / "git")  # git, but no bwrap
    monkeypatch.setenv("PATH", str(bin_dir))
    repo = tmp_path / "repo"

    code = main(["run", str(HELLO), "-w", str(repo), "--init-git", "--config", str(HELLO_CONFIG)])

    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "bubblewrap ('bwrap') is not installed" in err
    assert "apt-get install bubblewrap" in err and '[sandbox] mode = "off"' in err
    assert not repo.exists()  # --init-git made nothing: the run was refused first


def test_a_resume_reads_the_config_file_its_session_was_started_with(tmp_path, capsys):
    """The resume a budget stop prints names no --config: it was refused (the replay
    provider's cassette is in the config file), exit 2."""
    repo = tmp_path / "repo"
    args = ["run", str(HELLO), "-w", str(repo), "--init-git", "--config", str(HELLO_CONFIG)]
    assert main([*args, "--budget-usd", "0.02"]) == 3
    printed = capsys.readouterr().out
    resume = re.search(r"`aca (resume \S+ --workdir \S+) --budget-usd N`", printed)
    assert resume, printed

    assert main([*resume.group(1).split(), "--budget-usd", "1"]) == 0, capsys.readouterr().err
    assert len(list(git.Repo(repo).iter_commits(f"aca/{resume.group(1).split()[1]}"))) == 4


def test_open_pr_without_a_token_is_refused_before_init_git_makes_the_repository(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    repo = tmp_path / "repo"
    args = ["run", str(HELLO), "-w", str(repo), "--init-git", "--config", str(HELLO_CONFIG)]

    code = main([*args, "--open-pr"])

    assert code == 2
    assert "--open-pr needs a GitHub token" in capsys.readouterr().err
    assert not repo.exists()


def test_a_prefect_server_that_does_not_answer_is_refused_before_init_git(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    repo = tmp_path / "repo"
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    args = ("run", str(HELLO), "-w", str(repo), "--init-git", "--config", str(HELLO_CONFIG))

    done = aca(*args, home=home, PREFECT_API_URL=url)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"the Prefect server at {url} (PREFECT_API_URL) does not answer" in done.stderr
    assert not repo.exists()  # before, the repository was made and committed, then refused


def test_open_pr_without_a_token_or_a_github_repository_exits_2_before_any_task(tmp_path):
    repo = make_repo(tmp_path / "repo")
    head = git.Repo(repo).head.commit.hexsha
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    home = tmp_path / "home"
    home.mkdir()

    with FakeLLMServer() as server:
        env = {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "test-key"}
        args = ("run", str(tasks), "--workdir", str(repo), "--provider", "anthropic", "--open-pr")
        no_token = aca(*args, home=home, **env)
        # A token, but the repository has no github.com remote and none is named.
        no_repo = aca(*args, home=home, GITHUB_TOKEN="ghp_" + "x" * 36, **env)

    assert no_token.returncode == 2, no_token.stderr
    assert "--open-pr needs a GitHub token: set GITHUB_TOKEN" in no_token.stderr
    assert no_repo.returncode == 2, no_repo.stderr
    assert "--github-repo OWNER/NAME" in no_repo.stderr
    assert "Traceback" not in no_token.stderr + no_repo.stderr
    assert [r for r in server.requests if r.method == "POST"] == []
    untouched(repo, head)


def test_a_repo_that_cannot_be_fetched_exits_2_naming_it(tmp_path, capsys):
    not_a_repo = tmp_path / "plain-folder"
    not_a_repo.mkdir()
    empty = tmp_path / "empty.git"
    git.Repo.init(empty, bare=True)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    cases = {
        str(not_a_repo): f"{not_a_repo} cannot be fetched",
        "https://someone:hunter2secret@127.0.0.1:9/team/app.git": (
            "https://127.0.0.1:9/team/app.git cannot be fetched"
        ),
        str(empty): f"the repository {empty} has no commits",
        # A host Python's URL parser refuses: its error quotes the host part, token and all.
        "https://hunter2secret\uff03@github.com/team/app.git": "repo is not a URL git can use",
    }
    for url, message in cases.items():
        code = main(["run", str(tasks), "--repo", url, "--provider", "anthropic"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert message in err and "Traceback" not in err
        assert "hunter2secret" not in err
    # No half-made clone is left where the next run would look.
    assert [p.name for p in (Path.home() / ".aca" / "repos").iterdir()] == [".locks"]


def test_ctrl_c_while_prefect_starts_ends_the_command_even_if_start_up_swallows_a_cancel():
    """Under Python's own SIGINT handler `asyncio.run` turns Ctrl-C into a cancel of its main
    task; start-up code that swallows the cancel (Prefect's, waiting for its temporary server)
    went on, and the run finished with exit 0. Before the flow takes over its signals, a
    Ctrl-C must end the command (exit 130 via KeyboardInterrupt)."""

    async def start_up_that_swallows_a_cancel() -> str:
        os.kill(os.getpid(), signal.SIGINT)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
        return "went on"

    # Python's own handler, as in a terminal (a test run started in the background of a
    # script inherits SIGINT ignored, and Python then leaves it so).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with signals_remembered(), pytest.raises(KeyboardInterrupt):
            asyncio.run(start_up_that_swallows_a_cancel())
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_as_the_run_records_its_end_is_let_pass_once(capfd):
    """After the run's body (its session has its end): Prefect records the flow run's end,
    the command prints its summary. A signal then crashed the flow run, or gave an exit code
    that contradicted the session; the first is let pass, a second stops the command."""
    from aca_flows.flows.interrupt import Interrupt, interrupt_on_signals

    async def run(signal_after_the_body: bool) -> Interrupt:
        interrupt = Interrupt(grace_seconds=1)
        with interrupt.installed():
            await asyncio.sleep(0)
        if signal_after_the_body:
            signal.raise_signal(signal.SIGTERM)  # as Prefect records the flow run's end
        await asyncio.sleep(0)
        return interrupt

    for inside_the_loop in (True, False):
        with signals_remembered(), interrupt_on_signals():
            try:
                interrupt = asyncio.run(run(inside_the_loop))
                if not inside_the_loop:
                    signal.raise_signal(signal.SIGTERM)  # as the command prints the summary
            except KeyboardInterrupt:
                pytest.fail(f"the first signal stopped the command ({inside_the_loop=})")
            assert not interrupt.requested
            assert "press Ctrl-C again to stop at once" in capfd.readouterr().err
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)  # a second one stops the command


def test_the_signal_let_pass_holds_until_the_command_process_ends():
    """Past the run's block (the summary's print, Prefect's last logs at exit, the warm
    child's exit line) the handlers were put back: a SIGTERM killed a completed run (143, no
    --json), a Ctrl-C printed a traceback. In the process that is the command they hold."""
    script = """if True:
        import signal
        from aca_flows._startup import ended_runs_hold_their_signals, run_ended
        from aca_flows._startup import signals_remembered
        ended_runs_hold_their_signals()
        with signals_remembered():
            run_ended()
        signal.raise_signal(signal.SIGTERM)  # as the summary is printed
        print("summary printed", flush=True)
        signal.raise_signal(signal.SIGINT)  # a second: at once
        print("not reached", flush=True)
    """
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert done.stdout == "summary printed\n"
    assert "press Ctrl-C again to stop at once" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.returncode == 128 + signal.SIGINT


def test_a_sigterm_as_the_command_starts_is_an_interrupt_said_as_one():
    """Before the run's handlers were in (its first ~0.3 s: imports, the warm runner's
    handshake), a SIGTERM killed the command without a word: 143, no --json."""
    script = """if True:
        import os, signal, sys
        import aca_flows.cli as cli
        def starting(argv):  # as the command looks for a warm runner
            os.kill(os.getpid(), signal.SIGTERM)
            return None
        cli._run_warm = starting
        sys.argv = ["aca", "run", "tasks.md", "--json"]
        cli.main()
    """
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 130, done.stderr
    assert json.loads(done.stdout) == {"error": "interrupted", "exit_code": 130}
    assert done.stderr == "interrupted\n"


def test_tasks_whose_work_no_check_can_fail_are_named_before_anything_runs(tmp_path, capsys):
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- [ ] A {#a}\n- [ ] B {#b verify="pytest -q"}\n- [ ] C {#c verify="true"}\n')
    repo = make_repo(tmp_path / "repo")

    assert main(["run", str(tasks), "--dry-run", "--workdir", str(repo)]) == 0
    assert capsys.readouterr().err.startswith(
        "warning: 2 task(s) have no verify command that can fail (a, c): their changes are "
        "committed on the agent's word alone."
    )
    # The README's example checks each task: not a word.
    assert main(["run", str(HELLO), "--dry-run", "--config", str(HELLO_CONFIG)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_ctrl_c_before_prefect_starts_says_that_nothing_ran(tmp_path, capsys, monkeypatch):
    """Typer ends a KeyboardInterrupt with exit 130 and not a word: the user must be told."""

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_cli, "preflight", interrupted)  # Ctrl-C while aca looks around
    repo = make_repo(tmp_path / "repo")
    head = git.Repo(repo).head.commit.hexsha

    code = main(["run", str(HELLO), "-w", str(repo), "--config", str(HELLO_CONFIG)])

    assert code == 130
    assert capsys.readouterr().err == f"aca: {NOTHING_RAN}\n"
    untouched(repo, head)
    # With --json, stdout says it too (it was empty).
    assert (
        main(["run", str(HELLO), "-w", str(repo), "--json", "--config", str(HELLO_CONFIG)]) == 130
    )
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": NOTHING_RAN, "exit_code": 130}
    assert err == f"aca: {NOTHING_RAN}\n"


@pytest.mark.parametrize("session_made", [False, True])
def test_ctrl_c_while_prefect_starts_says_whether_a_session_can_be_resumed(
    tmp_path, capsys, monkeypatch, session_made
):
    def prefect_starting(run_flow, options, session_id, quiet_console):
        if session_made:  # the flow made the session, and had not yet taken over the signals
            SessionStore.create(
                options.workdir, load_task_file(HELLO), provider="replay", model="m",
                session_id=session_id,
            ).close()  # fmt: skip
        raise KeyboardInterrupt

    monkeypatch.setattr(run_cli, "_run_flow", prefect_starting)
    monkeypatch.setattr(run_cli, "preflight", lambda *args: None)  # no provider to reach
    repo = make_repo(tmp_path / "repo")

    code = main(["run", str(HELLO), "-w", str(repo), "--config", str(HELLO_CONFIG)])

    err = capsys.readouterr().err
    assert code == 130
    if session_made:
        [session] = [p.name for p in (repo / ".aca" / "sessions").iterdir()]
        assert err == (
            f"aca: interrupted before session {session} finished: "
            f"`aca resume {session} --workdir {repo}` continues.\n"
        )
    else:
        assert err == f"aca: {NOTHING_RAN}\n"
        assert not (repo / ".aca" / "sessions").exists()


def test_ctrl_c_in_any_command_says_interrupted(tmp_path, capsys, monkeypatch):
    import aca_flows.session.checkpoints as checkpoints

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "resolve_resume_target", interrupted)

    code = main(["resume", "--latest", "-w", str(tmp_path)])

    assert code == 130
    assert capsys.readouterr().err == "interrupted\n"
    # With --json, stdout says it too, as every other error with --json: a script reading
    # it got nothing.
    assert main(["resume", "--latest", "-w", str(tmp_path), "--json"]) == 130
    out, err = capsys.readouterr()
    assert json.loads(out) == {"error": "interrupted", "exit_code": 130}
    assert err == "interrupted\n"


def test_a_prefect_server_that_does_not_answer_is_named_not_a_traceback(tmp_path):
    repo = make_repo(tmp_path / "repo")
    head = git.Repo(repo).head.commit.hexsha
    home = tmp_path / "home"
    home.mkdir()
    unanswered = "http://127.0.0.1:9/api"  # the discard port: nothing listens there

    done = aca(
        "run", str(HELLO), "--workdir", str(repo), "--config", str(HELLO_CONFIG),
        home=home, PREFECT_API_URL=unanswered,
    )  # fmt: skip

    assert done.returncode == 2, done.stderr
    assert f"the Prefect server at {unanswered} (PREFECT_API_URL) does not answer" in done.stderr
    assert "unset PREFECT_API_URL" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    untouched(repo, head)


class _Answers(http.server.BaseHTTPRequestHandler):
    """A web server that is no Prefect API (404), one that wants credentials (401), or a
    Prefect server of another major version (200)."""

    status = 404

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if self.status == 200:  # a Prefect 2 server
            self.wfile.write(b'"2.14.21"' if self.path.endswith("/version") else b"true")
            return
        self.wfile.write(b'{"exception_message": "Unauthorized"}' if self.status == 401 else b"{}")

    do_POST = do_PATCH = do_GET

    def log_message(self, *args):  # quiet
        pass


@pytest.mark.parametrize(
    ("status", "path", "says"),
    [
        (404, "", "is not a Prefect server's API (HTTP 404 for /admin/version): set "
         "PREFECT_API_URL to name its API, {url}/api"),
        (404, "/api", "is not a Prefect server's API (HTTP 404 for /api/admin/version)"),
        (401, "/api", "refused aca's requests (HTTP 401): set PREFECT_API_AUTH_STRING"),
        (200, "/api", "is of another version (Found incompatible versions: client: 3."),
    ],
)  # fmt: skip
def test_a_prefect_api_url_that_answers_but_serves_no_run_is_named_not_a_traceback(
    tmp_path, status, path, says
):
    # The UI's address (no /api), another web server, a server that wants a password: each
    # once ended the run with Prefect's traceback and exit code 1.
    repo = make_repo(tmp_path / "repo")
    head = git.Repo(repo).head.commit.hexsha
    home = tmp_path / "home"
    home.mkdir()
    handler = type("Answers", (_Answers,), {"status": status})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        root = f"http://127.0.0.1:{web.server_port}"
        done = aca(
            "run", str(HELLO), "--workdir", str(repo), "--config", str(HELLO_CONFIG),
            home=home, PREFECT_API_URL=root + path,
        )  # fmt: skip
        web.shutdown()

    assert done.returncode == 2, done.stderr
    assert says.format(url=root) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    untouched(repo, head)


@pytest.mark.parametrize(
    ("tasks", "options", "missing"),
    [
        ("- write a.txt {#a}\n", ["--model", "nosuch"], "nosuch"),
        # A task's own model: the run's is on the server, this one is not.
        ("- write a.txt {#a}\n- write b.txt {#b model=nosuch5}\n", [], "nosuch5"),
    ],
)
def test_a_model_the_ollama_server_lacks_is_refused_before_the_run(
    tmp_path, capsys, monkeypatch, tasks, options, missing
):
    with FakeLLMServer() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        server.ollama_models = ["llama3.1:latest", "qwen2.5-coder:latest"]
        repo = make_repo(tmp_path / "repo")
        (tmp_path / "tasks.md").write_text(tasks)

        code = main(
            ["run", str(tmp_path / "tasks.md"), "-w", str(repo), "--provider", "ollama", *options]
        )

    err = capsys.readouterr().err
    assert code == 2
    assert f"does not have the model '{missing}'" in err
    assert f"To fix it, run `ollama pull {missing}`" in err
    assert not (repo / ".aca" / "sessions").exists()  # nothing ran, nothing was made


@pytest.fixture
def no_prefect(monkeypatch):
    """Fails the test if the command starts Prefect: what it refuses, or has nothing to run
    for, is answered before the flow (a temporary server alone costs ten seconds)."""

    def prefect_starting(*args):
        pytest.fail("Prefect was started")

    monkeypatch.setattr(run_cli, "_run_flow", prefect_starting)


def hello_session(tmp_path) -> tuple[Path, SessionStore]:
    """A repository and the open store of session ``s1`` of the hello plan in it."""
    repo = make_repo(tmp_path / "repo")
    store = SessionStore.create(
        repo, load_task_file(HELLO), provider="replay", model="m", session_id="s1"
    )
    return repo, store


def test_a_resume_whose_branch_is_checked_out_is_refused_before_prefect_starts(
    tmp_path, capsys, no_prefect
):
    """Before, the flow refused it once Prefect had started (~10 s), its flow run Failed."""
    repo, store = hello_session(tmp_path)
    store.close()
    git.Repo(repo).git.checkout("-q", "-b", "aca/s1")  # "the work is on branch aca/s1"

    code = main(["resume", "s1", "-w", str(repo), "--config", str(HELLO_CONFIG)])

    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"the session branch aca/s1 is checked out in {repo}" in err
    assert f"git -C {repo} checkout -" in err and "and run again." in err


def test_a_resume_of_a_completed_session_says_so_and_starts_no_flow(tmp_path, capsys, no_prefect):
    """Before, it ran a flow of cached tasks: ten seconds of temporary server for nothing."""
    repo, store = hello_session(tmp_path)
    for task in store.session.plan.leaves():
        store.task_completed(task.id)
    store.finish("completed")
    store.close()

    code = main(["resume", "s1", "-w", str(repo), "--json"])

    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err
    assert "session s1 completed in an earlier run: nothing to resume." in err
    summary = json.loads(out)
    assert summary["status"] == "completed" and summary["counts"] == {"completed": 3}


def test_a_resume_given_a_config_file_that_does_not_exist_is_refused_before_prefect_starts(
    tmp_path, capsys, no_prefect
):
    """Before, it made a Failed flow run; for a completed session, it said nothing of it."""
    repo, store = hello_session(tmp_path)
    store.close()

    code = main(["resume", "s1", "-w", str(repo), "--config", str(tmp_path / "nope.toml")])

    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"config file {tmp_path / 'nope.toml'} does not exist" in err


def test_a_branch_named_aca_is_refused_before_anything_is_made(tmp_path, capsys):
    # It leaves git no room for aca/<id>: every run ended in a traceback and a failed session.
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- [ ] A {#a verify="test -f a.txt"}\n')
    repo = make_repo(tmp_path / "repo")
    subprocess.run(["git", "-C", str(repo), "branch", "aca"], check=True)

    for args in (["--dry-run"], []):
        assert main(["run", str(tasks), *args, "--workdir", str(repo)]) == 2
        err = capsys.readouterr().err
        assert "the branch `aca` exists" in err and "git branch -m aca" in err
        assert "Traceback" not in err
    assert not (repo / ".aca" / "sessions").exists()


def test_a_terminal_without_utf_8_gets_escapes_not_a_traceback(tmp_path):
    # An em dash in a title on an ASCII or latin-1 terminal: the summary of a completed run
    # raised, and the run exited 1 with a traceback (a dry run too).
    repo = make_repo(tmp_path / "repo")
    tasks = tmp_path / "tasks.md"
    tasks.write_text('# Plain\n\n- [ ] make it \u2014 with a dash {#x verify="true"}\n')
    ran = subprocess.run(
        [sys.executable, "-m", "aca_flows", "run", str(tasks), "--dry-run", "-w", str(repo)],
        env={**os.environ, "PYTHONIOENCODING": "ascii", "ACA_WARM_RUNNER": "off"},
        capture_output=True,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert b"Traceback" not in ran.stderr and b"make it \\u2014 with a dash" in ran.stdout


def test_a_home_aca_cannot_write_in_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    # The run paid for its first call, then failed the task writing ~/.aca/rate_limits;
    # `aca server start` ended in a traceback.
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- [ ] A {#a verify="test -f a.txt"}\n')
    repo = make_repo(tmp_path / "repo")
    home = tmp_path / "home"
    home.write_text("a file, not a folder")
    monkeypatch.setenv("HOME", str(home))

    for args in (["run", str(tasks), "--dry-run", "-w", str(repo)], ["server", "start"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"{home}/.aca" in err and "set HOME to a writable folder" in err, err


@pytest.mark.parametrize("folder", ["sessions", "worktrees"])
def test_a_file_where_aca_keeps_a_folder_is_named(tmp_path, capsys, folder):
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- [ ] A {#a verify="test -f a.txt"}\n')
    repo = make_repo(tmp_path / "repo")
    (repo / ".aca").mkdir()
    (repo / ".aca" / folder).write_text("")

    assert main(["run", str(tasks), "--dry-run", "-w", str(repo)]) == 2
    assert f".aca/{folder} is a file" in capsys.readouterr().err
