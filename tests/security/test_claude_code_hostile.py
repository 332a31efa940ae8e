"""The same escapes through the real ``claude`` binary's Bash tool, and its file tools, in a
real run.

``execute_task`` drives the claude-code provider (the bundled binary, against the fake
server, which scripts one Bash call per turn) in a task worktree. Claude Code's own sandbox
(bubblewrap + socat) must keep every command inside: no key in any result, nothing written
outside the worktree, no connection to the listener, and none of its empty placeholder files
in the commit.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers import get_provider
from aca_flows.sandbox import check_sandbox
from aca_flows.session.layout import AcaDir
from aca_flows.settings import AcaConfig
from tests.fakes.llm_server import FakeLLMServer
from tests.security.hostile import HOSTILE, READ_ONLY, HostileWorld

MODEL = "claude-sonnet-4-6"
# Claude Code refuses a command naming a path outside the worktree before its sandbox would.
BLOCKED = "Reads outside the working directories are blocked"
THROUGH_CLAUDE = {
    "ssh-key-by-tilde": ("No such file", "Permission denied", "Operation not permitted", BLOCKED),
    "ssh-key-by-path": ("No such file", "Permission denied", "Operation not permitted", BLOCKED),
    "aws-credentials": ("No such file", "Permission denied", "Operation not permitted", BLOCKED),
    "env-dump": ("end-of-env",),
    "proc-every-environ": ("read-done", BLOCKED),
    "proc-of-aca": ("No such file", "Permission denied", BLOCKED),
    "hook-through-dotdot": ("Read-only file system", "sensitive file"),
    "hook-by-path": ("Read-only file system", "sensitive file"),
    "git-config-fsmonitor": ("rc=4", "rc=255", "rc=1", "rc=2"),
    "git-config-append": ("Read-only file system", "sensitive file"),
    # The checkout is unreadable but for the worktree and git's folders (allowRead): Claude
    # Code's sandbox puts an empty folder in its place, where a write lands and is gone with
    # the command (``changes_outside_the_worktree`` below finds nothing).
    # Claude Code binds the homes back writable over their denied read: aca's bwrap hides
    # them again, read-only (claude_code_sandbox.bwrap_with_homes_read_only).
    "root-home-write": (READ_ONLY,),
    "homes-write": (READ_ONLY,),
    # ... and hidden, but for what it binds inside them (PATH's folders, its own).
    "homes-are-empty": ("entries=0",),
    "root-dotfile": ("hidden-dotfile",),
    # The host's /tmp is not theirs: a write lands in the run's own /tmp
    # (claude_code_sandbox.private_tmp), gone with the run.
    "host-tmp": ("wrote=0",),
    "users-checkout": ("Bash completed with no output",),
    "new-aca-config": ("Bash completed with no output",),
    "another-tasks-worktree": ("No such file",),
    "session-journal": ("Read-only file system", "No such file"),
    "aca-npm-shim": ("No such file", "Read-only file system", "Operation not permitted"),
    "connect-local-listener": ("Connection refused", "Network is unreachable", "Error"),
    "denied-curl": ("denied",),
    "denied-sudo": ("denied",),
}
# Claude Code's own file tools, which run in the claude process, outside its Bash sandbox:
# a read outside the worktree is blocked, a write outside it is never approved.
READ_REFUSED = ("outside the working directories", "blockReadsOutsideWorkingDirectories")
WRITE_REFUSED = ("haven't granted it",)
THROUGH_FILE_TOOLS = {
    "file-read-ssh-key": ("Read", {"file_path": "{home}/.ssh/id_rsa"}, READ_REFUSED),
    "file-read-claude-credentials": (
        "Read", {"file_path": "{home}/.claude/.credentials.json"}, READ_REFUSED
    ),
    "file-read-users-checkout": ("Read", {"file_path": "{repo}/README.md"}, READ_REFUSED),
    "file-grep-home": (
        "Grep", {"pattern": "PLANTED", "path": "{home}", "output_mode": "content"}, READ_REFUSED
    ),
    "file-glob-ssh": ("Glob", {"pattern": "*", "path": "{home}/.ssh"}, READ_REFUSED),
    "file-write-users-checkout": (
        "Write", {"file_path": "{repo}/escaped.txt", "content": "escaped"}, WRITE_REFUSED
    ),
    "file-write-dotdot": (
        "Write", {"file_path": "../../../../escaped.txt", "content": "escaped"}, WRITE_REFUSED
    ),
    "file-write-path-hijack": (
        "Write", {"file_path": "{home}/.local/bin/git", "content": "#!/bin/sh\ntouch {marker}\n"},
        WRITE_REFUSED,
    ),
    "file-write-beside": (
        "Write", {"file_path": "{outside}/escaped.txt", "content": "escaped"}, WRITE_REFUSED
    ),
}  # fmt: skip
# What Claude Code writes into its HOME for itself.
CLAUDE_STATE = ("home/.claude/", "home/.claude.json", "home/.cache/", "home/.config/", "home/.npm/")


@pytest.fixture(scope="module")
def claude_run(tmp_path_factory):
    check_sandbox(AcaConfig().sandbox, claude_code=True)
    world = HostileWorld.create(tmp_path_factory.mktemp("claude-hostile"))
    hostile = [h for h in HOSTILE if h.id in THROUGH_CLAUDE]
    with FakeLLMServer(api_key=world.key) as server, pytest.MonkeyPatch.context() as patch:
        env = {
            **world.environment(),
            "ANTHROPIC_BASE_URL": server.url,
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "1",  # a spurious reset is retried
        }
        for name, value in env.items():
            patch.setenv(name, value)
        server.anthropic.scripted_for = lambda request: bool((request.json or {}).get("tools"))
        for h in hostile:
            server.anthropic.enqueue(
                tool_calls=[{"id": f"toolu_{h.id}", "name": "Bash",
                             "arguments": {"command": world.command(h), "description": h.id}}]
            )  # fmt: skip
        for probe, (tool, arguments, _) in THROUGH_FILE_TOOLS.items():
            arguments = {
                name: value.format(home=world.home, repo=world.repo, outside=world.outside,
                                   marker=world.marker)
                for name, value in arguments.items()
            }  # fmt: skip
            server.anthropic.enqueue(
                tool_calls=[{"id": f"toolu_{probe}", "name": tool, "arguments": arguments}]
            )
        # Nothing to change: the agent says so, as aca asks (the worktree must be untouched).
        server.anthropic.enqueue(text="Tried everything.\nNO CHANGE NEEDED: the task only probes")
        config = AcaConfig.model_validate(
            {"session": {"model": MODEL}, "providers": {"claude-code": {"model": MODEL}}}
        )
        plan = ExecutionPlan(name="hostile", tasks=[Task(id="t1", title="Be hostile")])
        outcome = asyncio.run(
            execute_task(plan, "t1", workdir=world.repo, session_id="s1",
                         provider=get_provider("claude-code", config), config=config)
        )  # fmt: skip
        scripted = [r for r in server.anthropic.requests if (r.json or {}).get("tools")]
    results = {
        block["tool_use_id"].removeprefix("toolu_"): block
        for request in scripted
        for message in request.json["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    }
    yield world, outcome, results, scripted
    world.listener.close()


def text_of(result: dict) -> str:
    content = result["content"]
    return content if isinstance(content, str) else json.dumps(content)


@pytest.mark.parametrize("hostile_id", sorted(THROUGH_CLAUDE))
def test_each_escape_through_claudes_bash_is_contained(claude_run, hostile_id):
    world, _, results, _ = claude_run
    text = text_of(results[hostile_id])
    assert any(expected in text for expected in THROUGH_CLAUDE[hostile_id]), text[:2000]
    assert world.key not in text and "PLANTED" not in text


@pytest.mark.parametrize("probe", sorted(THROUGH_FILE_TOOLS))
def test_claudes_file_tools_read_and_write_only_the_worktree(claude_run, probe):
    world, _, results, _ = claude_run
    text = text_of(results[probe])
    assert results[probe].get("is_error"), text[:2000]
    assert any(expected in text for expected in THROUGH_FILE_TOOLS[probe][2]), text[:2000]
    assert world.key not in text and "PLANTED" not in text


def test_the_claude_run_completes_and_changes_nothing_outside_its_worktree(claude_run):
    world, outcome, _, scripted = claude_run
    assert outcome.status == "completed", outcome.failure_reason
    assert world.changes_outside_the_worktree(new_allowed=CLAUDE_STATE) == []
    # The npm claude runs outside its sandbox is aca's as it wrote it.
    (shim,) = world.home.glob(".aca/npm-shim/*/npm")
    assert shim.read_text().startswith("#!/bin/sh\n# Written by aca")
    assert "touch" not in shim.read_text()
    assert world.listener.connections == 0
    assert not Path("/root", world.escape_name).exists()
    assert not Path("/home", world.escape_name).exists()
    assert not (world.repo / ".aca" / "worktrees" / "s1" / "t0" / "planted.txt").exists()
    assert not (world.home / ".local").exists()  # no program planted on the user's PATH
    files = subprocess.run(
        ["git", "-C", str(world.repo), "ls-tree", "-r", "--name-only", "aca/s1"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert files == ["README.md"]  # no sandbox placeholder (.env, package.json, ...) committed
    sent = json.dumps([r.json for r in scripted])
    assert world.key not in sent


def test_the_task_log_says_how_many_calls_claude_code_refused_outside_the_worktree(claude_run):
    world, _, results, scripted = claude_run
    refused = [
        probe for probe, result in results.items()
        if any(said in text_of(result) for said in (BLOCKED, *READ_REFUSED, *WRITE_REFUSED))
    ]  # fmt: skip
    log = AcaDir(world.repo).session("s1").task_log("t1").read_text().splitlines()
    (line,) = [json.loads(record) for record in log if "refused_outside_worktree" in record]
    assert line["data"]["refused"] == len(refused) >= len(THROUGH_FILE_TOOLS)
    assert line["data"]["text"] == (
        f"Claude Code refused {len(refused)} commands reaching outside the worktree "
        "(see docs/security.md)."
    )
    # The model is told where its temporary files go.
    assert "Put temporary files in $TMPDIR" in json.dumps(scripted[0].json["system"])
