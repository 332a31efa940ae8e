"""Running commands in the sandbox (real bubblewrap): environment, confinement, limits, modes."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aca_flows.errors import AcaError
from aca_flows.sandbox import OFF_WARNING, Sandbox, SandboxUnavailable, check_sandbox
from aca_flows.sandbox import process as sandbox_process
from aca_flows.sandbox.cgroups import CommandCgroups
from aca_flows.settings import SandboxSection
from tests.sandbox.test_bwrap import task_worktree
from tests.security.hostile import Listener


def run(sandbox: Sandbox, command: str, timeout: float = 30, limit: int = 20_000):
    return asyncio.run(sandbox.run(command, timeout_seconds=timeout, output_limit_bytes=limit))


@pytest.fixture
def worktree(tmp_path) -> Path:
    return task_worktree(tmp_path)[1]


def test_the_environment_is_built_from_the_allow_list(worktree, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-planted")
    monkeypatch.setenv("UNLISTED", "not-passed")
    monkeypatch.setenv("WANTED", "passed")
    sandbox = Sandbox.for_worktree(worktree, SandboxSection(env=["WANTED"]))

    result = run(sandbox, "env")

    names = {line.split("=", 1)[0] for line in result.output.splitlines()}
    assert names <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "HOME", "TMPDIR",
                     "WANTED", "PWD", "SHLVL", "_", "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
    assert "WANTED=passed" in result.output and "HOME=/tmp/home" in result.output
    assert "sk-ant-planted" not in result.output and "not-passed" not in result.output


@pytest.mark.parametrize(
    "name",
    [
        "ANTHROPIC_API_KEY",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "AWS_BEARER_TOKEN_BEDROCK",
    ],
)
def test_acas_own_credentials_cannot_be_configured_into_the_sandbox(name, tmp_path, capsys):
    from aca_flows.cli import main

    (tmp_path / "aca.toml").write_text(f'[sandbox]\nenv = ["NPM_TOKEN", "{name}"]\n')

    assert main(["config", "show", "--workdir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"{name} may not be passed into the sandbox" in error
    assert "Remove them from [sandbox] env" in error


def test_only_the_worktree_and_a_private_tmp_are_writable(worktree, tmp_path):
    repo = worktree.parents[3]
    result = run(
        Sandbox.for_worktree(worktree),
        f"echo a > inside.txt && echo b > /tmp/private.txt && cat /tmp/private.txt; "
        f"echo c > {repo}/README.md; echo d > {repo}/.git/hooks/post-commit; "
        f"echo e > {tmp_path}/beside.txt; echo f > $HOME/x && git status --short",
    )
    assert (worktree / "inside.txt").read_text() == "a\n"
    assert result.output.count("Read-only file system") == 2
    assert "?? inside.txt" in result.output  # git works, read-only, in the worktree
    assert (repo / "README.md").read_text() == "demo\n"
    assert not (repo / ".git" / "hooks" / "post-commit").exists()
    assert not (tmp_path / "beside.txt").exists() and not Path("/tmp/private.txt").exists()


def test_the_hosts_var_tmp_is_not_shown(worktree, tmp_path):
    # Other programs' temporary files, kept across boots (the private /tmp is no help there).
    kept = Path("/var/tmp", f"aca-test-{tmp_path.name}.txt")
    kept.write_text("the host's\n")
    try:
        result = run(Sandbox.for_worktree(worktree), f"cat {kept}; ls /var/tmp | wc -l")
    finally:
        kept.unlink()
    assert "the host's" not in result.output and "No such file" in result.output
    assert result.output.strip().endswith("0")


def test_what_a_command_writes_to_its_private_folders_is_held_to_their_size(worktree):
    # A tmpfs is half the machine's memory unless sized, and what is written there is in no
    # process's address space: three 1 GB files in /tmp took 3 GB of the host's memory.
    # So is bwrap's own /dev and its /dev/shm: 1.5 GB held there with memory_mb = 256.
    settings = SandboxSection(tmp_size_mb=16)
    result = run(
        Sandbox.for_worktree(worktree, settings),
        "for folder in /tmp /var/tmp /root /dev/shm; do "
        "head -c 40000000 /dev/zero > $folder/fill 2>/dev/null; "
        'echo "$folder $(stat -c %s $folder/fill)"; done; '
        "touch /dev/fill 2>/dev/null || echo /dev refused",
    )
    written = dict(line.split() for line in result.output.splitlines())
    assert written.keys() == {"/tmp", "/var/tmp", "/root", "/dev/shm", "/dev"}, result.output
    assert written.pop("/dev") == "refused"
    assert all(int(size) <= 16 * 1024 * 1024 for size in written.values()), written


def test_memory_no_address_space_counts_is_held_to_the_sandboxs(worktree):
    # A memfd is in no process's address space (nor is SysV shared memory): 60 x 16 MB were
    # held with memory_mb = 256, until the command's timeout. Its own memory cgroup holds
    # all its processes to memory_mb and what its private folders may hold (3 x 16 MB).
    settings = SandboxSection(memory_mb=256, tmp_size_mb=16)
    hold = (
        "python3 -c 'import os\nheld = []\nfor i in range(60):\n"
        '    fd = os.memfd_create("x"); os.write(fd, bytes(16 << 20)); held.append(fd)\n'
        "    print(i + 1, flush=True)'"
    )

    result = run(Sandbox.for_worktree(worktree, settings), hold)

    assert result.out_of_memory and result.exit_code != 0, result
    assert int(result.output.split()[-2]) * 16 <= 256 + 3 * 16  # then "Killed"
    assert "used all the memory the sandbox allows" in result.describe()
    assert run(Sandbox.for_worktree(worktree, settings), "echo fine").output == "fine\n"
    # A command that passes though one of its processes was killed says both.
    passed = run(Sandbox.for_worktree(worktree, settings), f"({hold}) >/dev/null 2>&1; true")
    assert passed.ok and passed.out_of_memory
    assert passed.describe().startswith("exit code 0 (one of its processes was killed")


def test_a_timeout_kills_everything_the_command_started(worktree):
    started = time.monotonic()
    result = run(
        Sandbox.for_worktree(worktree),
        "(sleep 3; echo late > late.txt) & (setsid sh -c 'sleep 3; echo late > late2.txt' &); "
        "sleep 60",
        timeout=1,
    )
    assert result.timed_out and result.exit_code is None
    assert "timed out after" in result.describe()
    time.sleep(max(0.0, 4 - (time.monotonic() - started)))
    assert not (worktree / "late.txt").exists() and not (worktree / "late2.txt").exists()


def test_a_kill_reaches_a_shell_before_the_command_it_waits_for(tmp_path, monkeypatch):
    # A timed-out command's `sh -c 'sleep 3; echo late > late.txt'` wrote its file (CI, 4 of 72
    # runs of six at once here): its sleep was killed first, and the shell ran on to the echo
    # before its own kill came. A command's pids come in no order; the kill takes parents first.
    late = tmp_path / "late.txt"
    shell = subprocess.Popen(["sh", "-c", f"sleep 60; echo late > {late}"], start_new_session=True)
    children = Path(f"/proc/{shell.pid}/task/{shell.pid}/children")
    while not children.read_text().split():
        time.sleep(0.01)
    sleep = int(children.read_text().split()[0])
    monkeypatch.setattr(CommandCgroups, "_pids", lambda self: [sleep, shell.pid])
    killed = []
    kill = os.kill
    monkeypatch.setattr(os, "kill", lambda pid, signal: (killed.append(pid), kill(pid, signal)))

    CommandCgroups([]).kill_all()

    shell.wait()
    assert killed == [shell.pid, sleep]
    assert not late.exists()


def test_a_command_flooding_output_is_timed_out_not_hung(worktree):
    # Once a reader stopped at the timeout, output left in the pipe filled asyncio's buffer and
    # wait() waited forever for an end of output. A 1 MiB pipe leaves more than that buffer
    # holds at every kill; the outer bound makes a regression fail instead of hanging.
    grow_pipe = "python3 -c 'import fcntl; fcntl.fcntl(1, fcntl.F_SETPIPE_SZ, 1 << 20)'"
    sandbox = Sandbox.for_worktree(worktree)

    async def flood():
        command = sandbox.run(f"{grow_pipe}; yes", timeout_seconds=2, output_limit_bytes=2000)
        return await asyncio.wait_for(command, timeout=20)

    started = time.monotonic()
    result = asyncio.run(flood())
    assert result.timed_out and "timed out after 2s" in result.describe()
    assert time.monotonic() - started < 10
    assert result.truncated_bytes > 0 and len(result.output) < 2100


def test_a_timeout_returns_though_a_process_outside_the_group_holds_the_output(
    worktree, monkeypatch
):
    # Mode "off" cannot kill a daemonized child; its open end of the pipe must not hold aca.
    monkeypatch.setattr(sandbox_process, "_AFTER_KILL_SECONDS", 0.5)
    sandbox = Sandbox.for_worktree(worktree, SandboxSection(mode="off"))
    started = time.monotonic()
    result = run(sandbox, "(setsid sh -c 'sleep 4' &); echo started; sleep 60", timeout=1)
    assert result.timed_out and result.output == "started\n"
    assert time.monotonic() - started < 3


def test_output_is_capped_head_and_tail(worktree):
    result = run(Sandbox.for_worktree(worktree), "seq 1 200000; echo THE-END", limit=2000)
    assert result.truncated_bytes > 1_000_000
    assert result.output.startswith("1\n2\n") and result.output.rstrip().endswith("THE-END")
    assert len(result.output) < 2200


def test_mode_off_runs_unsandboxed_with_a_warning_and_a_scrubbed_environment(
    worktree, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted")
    monkeypatch.setenv("GH_PAT", "ghp_planted0123456789")
    # Named like credentials, holding a place or a pattern: no secret, and a test needs it.
    monkeypatch.setenv("TEST_FILE_PAT", "tests/**/test_*.py")
    monkeypatch.setenv("SSH_KEY_PATH", "/home/me/.ssh/id_ed25519")
    with caplog.at_level(logging.WARNING, logger="aca.sandbox"):
        sandbox = Sandbox.for_worktree(worktree, SandboxSection(mode="off"))
    result = run(sandbox, f"echo out > {tmp_path}/beside.txt; env")

    assert OFF_WARNING in caplog.text
    assert (tmp_path / "beside.txt").exists()  # nothing confines it
    assert "sk-planted" not in result.output and "ghp_planted" not in result.output
    assert "TEST_FILE_PAT=tests/**/test_*.py" in result.output
    assert "SSH_KEY_PATH=/home/me/.ssh/id_ed25519" in result.output


def test_no_bubblewrap_is_refused_naming_what_to_install(worktree, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(SandboxUnavailable) as caught:
        run(Sandbox.for_worktree(worktree), "true")
    message = str(caught.value)
    assert isinstance(caught.value, AcaError)
    assert "apt-get install bubblewrap" in message and 'mode = "off"' in message
    check_sandbox(SandboxSection(mode="off"))  # opting out is allowed


def test_paths_shown_on_request_are_read_only_and_never_reveal_aca(worktree, tmp_path):
    repo = worktree.parents[3]
    (repo / ".aca" / "sessions").mkdir()
    (repo / ".aca" / "sessions" / "journal").write_text("private\n")
    (tmp_path / "shown.txt").write_text("shown\n")
    sandbox = Sandbox.for_worktree(worktree, SandboxSection(read_only_paths=[str(tmp_path)]))

    result = run(sandbox, f"cat {tmp_path}/shown.txt {repo}/.aca/sessions/journal; "
                          f"echo x > {tmp_path}/shown.txt")  # fmt: skip

    assert "shown" in result.output and "private" not in result.output
    assert "Read-only file system" in result.output
    assert (tmp_path / "shown.txt").read_text() == "shown\n"


def test_the_network_is_off_unless_the_task_or_config_allows_it(worktree):
    listener = Listener()
    connect = (
        f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {listener.port}), 3)"
        "; print('connected')\""
    )
    try:
        off = run(Sandbox.for_worktree(worktree), connect)
        by_task = run(Sandbox.for_worktree(worktree, network=True), connect)
        by_config = run(Sandbox.for_worktree(worktree, SandboxSection(network=True)), connect)
    finally:
        listener.close()
    assert "Connection refused" in off.output and "connected" not in off.output
    assert by_task.output.strip() == by_config.output.strip() == "connected"
    assert listener.connections == 2


# -- what of the user's checkout a command sees: its git directory, not its files --------------


def test_the_checkouts_own_files_are_not_shown_only_what_git_needs(worktree):
    repo = worktree.parents[3]
    (repo / ".env").write_text("STRIPE_SECRET=sk_live_CHECKOUT\n")  # untracked, in the checkout
    (repo / "notes.txt").write_text("the user's own work\n")
    (worktree / "new.txt").write_text("the agent's\n")
    sandbox = Sandbox.for_worktree(worktree)

    result = run(
        sandbox,
        f"cat {repo}/.env {repo}/notes.txt {repo}/README.md; ls -A {repo}; "
        f"ls -A {repo}/.aca/worktrees/s1; echo x > {repo}/planted.txt; "
        "echo ---; git status --short; git log --format=%s; git diff HEAD --stat",
    )

    assert "sk_live_CHECKOUT" not in result.output and "the user's own" not in result.output
    assert result.output.count("No such file or directory") == 3
    shown, _, git = result.output.partition("---\n")
    assert ".aca\n.git\n" in shown and "t1\n" in shown  # no other entry of the checkout
    assert "Read-only file system" in shown and not (repo / "planted.txt").exists()
    assert git.splitlines() == ["?? new.txt", "init"]


def test_git_works_in_a_task_of_a_run_in_the_users_linked_worktree(tmp_path):
    # aca run in `git worktree add ../hotfix`: the task's worktree is made from hotfix, its
    # git directories are the main checkout's; git in the sandbox found no repository.
    repo = task_worktree(tmp_path)[0]
    hotfix = tmp_path / "hotfix"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", str(hotfix)], check=True)
    task = hotfix / ".aca" / "worktrees" / "s2" / "t2"
    subprocess.run(["git", "-C", str(hotfix), "worktree", "add", "-q", "--detach", str(task)],
                   check=True)  # fmt: skip
    (task / "new.txt").write_text("the agent's\n")

    result = run(Sandbox.for_worktree(task, repository=hotfix), "git status --short")

    assert result.exit_code == 0 and result.output.splitlines() == ["?? new.txt"]


def test_git_in_the_worktree_reads_the_repositorys_config_without_its_credentials(worktree):
    repo = worktree.parents[3]
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2
    git = ["git", "-C", str(repo), "config"]
    subprocess.run([*git, "remote.origin.url", f"https://user:{token}@example.com/r.git"],
                   check=True)  # fmt: skip
    subprocess.run([*git, "http.https://example.com/.extraheader", "AUTHORIZATION: basic eDp5"],
                   check=True)  # fmt: skip
    subprocess.run([*git, "core.abbrev", "12"], check=True)

    result = run(
        Sandbox.for_worktree(worktree),
        f"cat {repo}/.git/config; git config --get-regexp 'remote|extraheader|abbrev'; "
        "git log -1 --format=%h",
    )

    assert token not in result.output and "eDp5" not in result.output
    assert "remote.origin.url https://[REDACTED]@example.com/r.git" in result.output
    assert "core.abbrev 12" in result.output  # the rest of the config is git's as it was
    assert len(result.output.splitlines()[-1]) == 12
    assert token in (repo / ".git" / "config").read_text()  # the user's file is untouched


def test_a_config_file_the_repositorys_config_includes_is_shown_without_its_credentials(
    worktree, tmp_path
):
    # The copy of .git/config was redacted, the file it includes read as it is: by git, by cat.
    repo = worktree.parents[3]
    secret = "INCLUDEDSECRET-" + "a1b2c3d4e5" * 3
    (repo / ".git" / "creds.inc").write_text(f"[http]\n\textraHeader = X-Auth: {secret}\n")
    elsewhere = tmp_path / "shared.gitconfig"
    elsewhere.write_text(f"[hub]\n\toauthtoken = {secret}\n[core]\n\tabbrev = 12\n")
    git = ["git", "-C", str(repo), "config"]
    subprocess.run([*git, "include.path", "creds.inc"], check=True)
    subprocess.run([*git, f"includeIf.gitdir:{repo}/.git/.path", str(elsewhere)], check=True)

    result = run(
        Sandbox.for_worktree(worktree),
        f"cat {repo}/.git/creds.inc {elsewhere}; git config --list --show-origin; "
        "git log -1 --format=%h",
    )

    assert secret not in result.output and "extraHeader = [REDACTED]" in result.output
    assert len(result.output.splitlines()[-1]) == 12  # the included settings still apply
    assert secret in (repo / ".git" / "creds.inc").read_text()  # the user's file is untouched


def test_submodule_and_worktree_configs_are_shown_without_their_credentials(worktree):
    """A CI checkout with submodules writes its token into each submodule's config too
    (``.git/modules/<name>/config``); ``config.worktree`` files are git's config as well."""
    repo = worktree.parents[3]
    token = "ghs_" + "S9u8B7m6O5d4U3l2E1t0" * 2
    git_dir = repo / ".git"
    configs = {
        git_dir / "modules" / "lib" / "config": (
            f'[remote "origin"]\n\turl = https://x-access-token:{token}@github.com/o/lib\n'
            f'[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic {token}\n'
        ),
        git_dir / "modules" / "lib" / "modules" / "deep" / "config": (
            f'[core]\n\tbare = false\n[remote "o"]\n\turl = https://{token}@github.com/d\n'
        ),
        git_dir / "config.worktree": f"[http]\n\textraheader = Authorization: bearer {token}\n",
        git_dir / "worktrees" / "t1" / "config.worktree": f"[hub]\n\toauthtoken = {token}\n",
    }
    for path, text in configs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    result = run(
        Sandbox.for_worktree(worktree),
        " ; ".join(f"cat {path}" for path in configs)
        + f"; git config --file {git_dir}/modules/lib/modules/deep/config core.bare",
    )

    assert token not in result.output, result.output
    assert "url = https://[REDACTED]@github.com/o/lib" in result.output
    assert result.output.splitlines()[-1] == "false"  # the rest is git's config as it was
    assert all(token in path.read_text() for path in configs)  # the user's files untouched


def test_a_verify_command_runs_python_tests_in_the_worktree(worktree):
    (worktree / "test_it.py").write_text("def test_it():\n    assert True\n")
    # This interpreter (a virtualenv, its Python maybe in a home) shown as a user would.
    shown = [str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix}]
    sandbox = Sandbox.for_worktree(worktree, SandboxSection(read_only_paths=shown))
    result = run(sandbox, f"{sys.executable} -m pytest -q -p no:cacheprovider", timeout=120)
    assert result.exit_code == 0, result.output
    assert "1 passed" in result.output


def test_paths_of_the_checkout_shown_on_request_are_shown_but_never_aca(worktree):
    repo = worktree.parents[3]
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "tool").write_text("echo the-venv-tool\n")
    (repo / ".aca" / "sessions").mkdir()
    (repo / ".aca" / "sessions" / "journal").write_text("private\n")
    (repo / ".env").write_text("SECRET=1\n")

    venv = SandboxSection(read_only_paths=[str(repo / ".venv")])
    result = run(Sandbox.for_worktree(worktree, venv), f"sh {repo}/.venv/bin/tool; cat {repo}/.env")
    assert "the-venv-tool" in result.output and "SECRET" not in result.output

    whole = SandboxSection(read_only_paths=[str(repo)])  # the user shows the checkout
    result = run(
        Sandbox.for_worktree(worktree, whole),
        f"cat {repo}/.env {repo}/.aca/sessions/journal; echo ---; ls {repo}/.aca",
    )
    assert "SECRET=1" in result.output and "private" not in result.output
    assert result.output.split("---\n")[1] == "worktrees\n"  # the task's own, no sessions
