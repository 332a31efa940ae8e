"""A Claude Code run's private scratch folder and the count of its refusals outside the
worktree, with the real bundled ``claude`` binary against the fake server.

Sandboxed, Claude Code refuses any path outside its working directories, the host's /tmp
too: each run gets its own folder for temporary files (``TMPDIR``), and a run whose calls
were refused anyway says how many.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aca_flows.errors import PermanentProviderError
from aca_flows.providers.claude_code_sandbox import Scratch, _remove_unheld_scratch
from tests.fakes.llm_server import Reply
from tests.providers.conftest import run
from tests.providers.test_claude_code import _provider, _request, _tool_results

REFUSED = "refused_outside_worktree"


@pytest.fixture
def scratch_folders(monkeypatch) -> list[str]:
    """The folders the provider makes with ``tempfile.mkdtemp``, as they are made."""
    made: list[str] = []

    def recorded(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", recorded)
    return made


def test_a_run_writes_its_temporary_files_to_a_private_scratch_folder_removed_after(
    claude_env, llm_server, tmp_path, scratch_folders
):
    seen = {}

    def in_scratch(tool: str, arguments):
        def reply(request) -> Reply:
            folder = scratch_folders[0] if scratch_folders else "/no/scratch/folder"
            seen.setdefault(
                "mode", stat.S_IMODE(os.stat(folder).st_mode) if scratch_folders else None
            )
            return Reply(tool_calls=[{"name": tool, "arguments": arguments(folder)}])

        return reply

    python = "import tempfile; print('py', tempfile.mkdtemp())"
    shell = f'echo hi > "$TMPDIR/x" && cat "$TMPDIR/x" && mktemp && python3 -c "{python}"'
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Bash", "arguments": {"command": shell}}])
    llm_server.anthropic.enqueue(
        in_scratch("Bash", lambda folder: {"command": f"echo top > {folder}/y && cat {folder}/y"})
    )
    llm_server.anthropic.enqueue(
        in_scratch("Write", lambda folder: {"file_path": f"{folder}/w.txt", "content": "w"})
    )
    llm_server.anthropic.enqueue(
        in_scratch("Read", lambda folder: {"file_path": f"{folder}/w.txt"})
    )
    llm_server.anthropic.enqueue(text="Done.")
    events = []

    run(_provider().complete(_request(tmp_path, "Use scratch files"), on_event=events.append))

    assert len(scratch_folders) == 1, "no scratch folder was made for the run"
    folder = scratch_folders[0]
    bash, top, write, read = _tool_results(llm_server.anthropic.requests[-1:])
    lines = bash.splitlines()
    assert lines[0] == "hi" and lines[1].startswith(folder), bash
    assert lines[2].startswith(f"py {folder}"), bash
    assert top.startswith("top\n"), top
    assert "created successfully" in write, write
    assert "1\tw" in read and "blocked" not in read, read
    assert seen["mode"] == 0o700  # private: the host's /tmp is shared with other users
    assert not os.path.exists(folder)  # removed after the run
    assert not [e for e in events if e.data.get("subtype") == REFUSED]  # nothing refused


def test_refusals_outside_the_worktree_are_counted_in_one_line_and_in_a_failure(
    claude_env, llm_server, tmp_path, scratch_folders
):
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Bash", "arguments": {"command": "cat /etc/hostname"}}]
    )
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Bash", "arguments": {"command": "cd .. && ls"}}]
    )
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Read", "arguments": {"file_path": "/etc/hostname"}}]
    )
    beside = tmp_path.parent / "escaped.txt"
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Write", "arguments": {"file_path": str(beside), "content": "x"}}]
    )
    llm_server.anthropic.enqueue(text="Done.")
    events = []

    run(_provider().complete(_request(tmp_path, "Look around"), on_event=events.append))

    *reads, write = _tool_results(llm_server.anthropic.requests[-1:])
    assert all("blockReadsOutsideWorkingDirectories" in result for result in reads), reads
    assert "haven't granted it" in write and not beside.exists(), write
    (line,) = [e.data for e in events if e.data.get("subtype") == REFUSED]
    assert line["refused"] == 4
    assert line["text"] == (
        "Claude Code refused 4 commands reaching outside the worktree (see docs/security.md)."
    )
    assert events[-1].data is line  # after the run's own result

    # A run that fails says it too: the refusals may be why it ran out of turns.
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Bash", "arguments": {"command": "ls /usr/lib | head -2"}}]
    )
    with pytest.raises(PermanentProviderError, match="turn limit") as caught:
        run(_provider().complete(_request(tmp_path, "Look", max_turns=1)))
    assert str(caught.value).endswith(
        "Claude Code refused 1 command reaching outside the worktree (see docs/security.md)."
    )
    assert len(scratch_folders) == 2 and not any(
        os.path.exists(folder) for folder in scratch_folders
    )


def test_a_task_that_fails_after_refusals_says_so_in_its_reason(claude_env, llm_server, tmp_path):
    from aca_flows.agent.execute import execute_task
    from aca_flows.plan.models import ExecutionPlan, Task
    from tests.fakes.git_repo import make_repo

    repo = make_repo(tmp_path / "repo")
    beside = tmp_path / "notes.txt"  # the agent writes its work beside the worktree
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Write", "arguments": {"file_path": str(beside), "content": "x"}}]
    )
    llm_server.anthropic.enqueue(text="Done: the notes are written.")
    plan = ExecutionPlan(name="p", tasks=[Task(id="t1", title="Write the notes")])
    provider = _provider()
    outcome = run(execute_task(plan, "t1", workdir=repo, session_id="s1", provider=provider))
    assert outcome.status == "failed" and not beside.exists()
    # The task changed nothing because Claude Code refused its write: the reason says both.
    first_line = outcome.failure_reason.splitlines()[0]
    assert first_line.startswith("the agent stopped without changing anything")
    assert first_line.endswith(
        "Claude Code refused 1 command reaching outside the worktree (see docs/security.md)."
    )


# Run by the agent's Bash from a file of the worktree, the paths written in it: Claude Code
# refuses a command naming a path outside the worktree to read, not one a program reads.
PROBE = """import os
name, others = {name!r}, {others!r}
if os.environ.get("ACA_CLAUDE_TMP"):
    print("private folder named")
for path in others:
    try:
        print("read", path, open(path).read())
    except OSError as error:
        print("unread", path, type(error).__name__)
try:
    open(os.path.join(os.path.dirname(others[0]), "planted"), "w").write("x")
    print("planted in", others[0])
except OSError as error:
    print("not planted", type(error).__name__)
mine = os.path.join("/tmp", name)
if os.path.exists(mine):
    print("kept", open(mine).read())
else:
    open(mine, "w").write("mine")
    print("wrote", mine)
print("entries", sorted(os.listdir("/tmp")))
"""


def test_commands_see_a_tmp_of_their_own_not_the_hosts(
    claude_env, llm_server, tmp_path, scratch_folders
):
    # Another run's scratch folder and another process's file in the host's /tmp.
    name = f"aca-test-{os.getpid()}-{id(tmp_path):x}"
    other = Path("/tmp", f"aca-scratch-{name}")
    other.mkdir(mode=0o700)
    host_file = Path("/tmp", f"{name}.txt")
    host_file.write_text("the host's")
    kept_file = Path("/var/tmp", f"{name}.txt")  # /var/tmp too
    kept_file.write_text("the host's")
    (other / "notes").write_text("another run's")
    probe = PROBE.format(
        name=f"{name}.mine", others=[f"{other}/notes", str(host_file), str(kept_file)]
    )
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Write",
                     "arguments": {"file_path": str(tmp_path / "probe.py"), "content": probe}}]
    )  # fmt: skip
    for _ in range(2):
        llm_server.anthropic.enqueue(
            tool_calls=[{"name": "Bash", "arguments": {"command": "python3 probe.py"}}]
        )
    # Claude Code's Bash still follows the command's folder (a file it writes in the scratch).
    (tmp_path / "sub").mkdir()
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Bash", "arguments": {"command": f"cd {tmp_path}/sub"}}]
    )
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Bash", "arguments": {"command": "pwd"}}])
    llm_server.anthropic.enqueue(text="Done.")
    try:
        run(_provider().complete(_request(tmp_path, "Look around /tmp")))
        planted = (other / "planted").exists()
        mine_on_host = Path("/tmp", f"{name}.mine").exists()
    finally:
        shutil.rmtree(other, ignore_errors=True)
        host_file.unlink(missing_ok=True)
        kept_file.unlink(missing_ok=True)
        Path("/tmp", f"{name}.mine").unlink(missing_ok=True)

    _, first, second, _, pwd = _tool_results(llm_server.anthropic.requests[-1:])
    assert pwd.startswith(f"{tmp_path.resolve()}/sub\n"), pwd
    for said in (first, second):
        assert f"unread {other}/notes FileNotFoundError" in said, said
        assert f"unread {host_file} FileNotFoundError" in said, said
        assert f"unread {kept_file} FileNotFoundError" in said, said
        assert "another run's" not in said and "the host's" not in said, said
        assert "planted in" not in said and "private folder named" not in said, said
    # The run's own /tmp: what a command writes there, the next one finds; the host does not.
    assert f"wrote /tmp/{name}.mine" in first and "kept mine" in second, (first, second)
    assert not mine_on_host and not planted
    entries = second.split("entries ")[-1]
    assert other.name not in entries and host_file.name not in entries, entries
    (scratch,) = scratch_folders
    assert not os.path.exists(scratch) and not os.path.exists(f"{scratch}.tmp")


def test_a_temporary_folder_the_sandbox_keeps_from_writes_is_not_where_the_scratch_goes(
    claude_env, llm_server, tmp_path, scratch_folders, monkeypatch
):
    # A TMPDIR under /var (/var/tmp, macOS's /var/folders), which the sandbox keeps from writes.
    users_tmp = Path("/var/tmp", f"aca-test-{os.getpid()}-{id(tmp_path):x}")
    users_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(users_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read again from TMPDIR
    shell = 'echo hi > "$TMPDIR/x" && cat "$TMPDIR/x"'
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Bash", "arguments": {"command": shell}}])
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Bash", "arguments": {"command": "pwd"}}])
    llm_server.anthropic.enqueue(text="Done.")
    try:
        run(_provider().complete(_request(tmp_path, "Use scratch files")))
    finally:
        shutil.rmtree(users_tmp, ignore_errors=True)

    written, pwd = _tool_results(llm_server.anthropic.requests[-1:])
    assert written.startswith("hi\n"), written
    assert pwd.startswith(f"{tmp_path.resolve()}\n"), pwd
    (folder,) = scratch_folders
    assert not folder.startswith("/var/") and not os.path.exists(folder)


MAKE_SCRATCH = """
import os, signal, sys
from aca_flows.providers.claude_code_sandbox import Scratch
scratch = Scratch()
os.mkdir(scratch.path + ".tmp")
print(scratch.path, flush=True)
if sys.argv[1] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def test_the_scratch_folders_of_a_run_killed_outright_are_removed_by_a_later_run(
    tmp_path, monkeypatch
):
    # A claude-code run killed outright (SIGKILL, the machine's OOM killer) left its scratch
    # folder and its commands' /tmp in the temporary folder, for good.
    def scratch_of(how: str) -> tuple[subprocess.Popen, Path]:
        process = subprocess.Popen(
            [sys.executable, "-c", MAKE_SCRATCH, how],
            env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": os.getcwd()},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        folder = Path(process.stdout.readline().strip())
        two_days_ago = time.time() - 2 * 86_400
        os.utime(folder, (two_days_ago, two_days_ago))
        return process, folder

    killed, left = scratch_of("killed")
    killed.wait()
    running, held = scratch_of("running")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _remove_unheld_scratch.cache_clear()
    try:
        scratch = Scratch()
        assert not left.exists() and not Path(f"{left}.tmp").exists()
        assert held.is_dir() and Path(f"{held}.tmp").is_dir()  # its run lives
        scratch.remove()
        assert not Path(scratch.path).exists()
    finally:
        running.communicate("")
