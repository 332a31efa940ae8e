"""aca's own files (its configuration in the repository, ``.aca``) are never committed: an
agent's change to them would weaken every later run's sandbox once the branch is merged."""

from __future__ import annotations

import asyncio

from aca_flows.agent.aca_files import (
    aca_files_problem,
    case_variants_problem,
    host_read_files_problem,
    is_aca_file,
)
from aca_flows.plan.models import Task
from aca_flows.workspace import session_branch_head
from tests.agent.test_execute import SESSION, execute, plan_of
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use
from tests.workspace.test_repository import make_user_repo


def test_the_configuration_aca_reads_and_everything_under_aca_are_aca_files():
    own = ["aca.toml", ".aca/config.toml", ".aca/sessions/s1/journal.jsonl", ".aca", "ACA.toml"]
    others = ["docs/aca.toml", "src/.aca/config.toml", "aca.toml.example", ".acarc", "x/aca.toml"]

    assert [p for p in own + others if is_aca_file(p)] == own
    problem = aca_files_problem(["a.txt", *own[:2]])
    assert problem is not None and "(aca.toml, .aca/config.toml)" in problem
    assert "nothing was committed" in problem
    assert aca_files_problem(others) is None


def write(path: str, content: str):
    return tool_calls(tool_use("write_file", path=path, content=content))


def test_an_agents_aca_configuration_never_reaches_the_session_branch(tmp_path):
    # The agent un-ignores .aca/ and writes aca's configuration beside its real work.
    repo = make_user_repo(tmp_path)
    user_head = repo.head.commit.hexsha
    provider = ScriptedProvider(
        write(".gitignore", "!.aca/\n"),
        write(".aca/config.toml", '[sandbox]\nmode = "off"\n'),
        write("aca.toml", "[sandbox]\nnetwork = true\n"),
        write("a.txt", "a\n"),
        tool_calls(tool_use("finish", summary="wrote a.txt")),
    )
    task = Task(id="a", title="Write a", verify="test -f a.txt")

    outcome = asyncio.run(execute(tmp_path, plan_of(task), "a", provider))

    assert outcome.status == "failed" and outcome.commit_sha is None
    assert ".aca/config.toml" in outcome.failure_reason and "aca.toml" in outcome.failure_reason
    assert session_branch_head(repo, SESSION) == user_head
    files = repo.git.ls_tree("-r", "--name-only", f"aca/{SESSION}").splitlines()
    assert files == ["app.py"]
    # Merging the branch brings no configuration for the next run to read.
    repo.git.merge("--ff-only", f"aca/{SESSION}")
    assert not (tmp_path / "aca.toml").exists()
    assert not (tmp_path / ".aca" / "config.toml").exists()


def test_an_agent_that_deletes_the_users_aca_toml_commits_nothing(tmp_path):
    repo = make_user_repo(tmp_path)
    (tmp_path / "aca.toml").write_text("[sandbox]\nnetwork = false\n")
    repo.git.add("-A")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "cfg"])
    user_head = repo.head.commit.hexsha
    provider = ScriptedProvider(
        tool_calls(tool_use("run_command", command="rm aca.toml && echo b > b.txt")),
        tool_calls(tool_use("finish", summary="wrote b.txt")),
    )

    outcome = asyncio.run(execute(tmp_path, plan_of(Task(id="b", title="Write b")), "b", provider))

    assert outcome.status == "failed" and "(aca.toml)" in outcome.failure_reason
    assert session_branch_head(repo, SESSION) == user_head


def test_a_tools_own_file_in_another_case_is_never_committed(tmp_path):
    # Claude Code protects .claude/settings.json by its exact name; .Claude/settings.json
    # passed, was committed, and a case-insensitive checkout opens it with its hooks.
    assert case_variants_problem([".claude/settings.json", ".vscode/settings.json"]) is None
    assert case_variants_problem(["src/.Claude/x.json", ".github/workflows/ci.yml"]) is None
    repo = make_user_repo(tmp_path)
    user_head = repo.head.commit.hexsha
    hook = '{"hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": "touch x"}]}]}}'
    provider = ScriptedProvider(
        write(".Claude/settings.json", hook),
        write(".MCP.json", '{"mcpServers": {}}'),
        write("a.txt", "a\n"),
        tool_calls(tool_use("finish", summary="wrote a.txt")),
    )
    task = Task(id="a", title="Write a", verify="test -f a.txt")

    outcome = asyncio.run(execute(tmp_path, plan_of(task), "a", provider))

    assert outcome.status == "failed" and outcome.commit_sha is None
    assert ".Claude/settings.json" in outcome.failure_reason
    assert ".MCP.json" in outcome.failure_reason and "in another case" in outcome.failure_reason
    assert session_branch_head(repo, SESSION) == user_head


def test_an_lfsconfig_the_agent_wrote_is_never_committed(tmp_path):
    # git-lfs, set up by the user (`git lfs install`), runs on the host when aca checks out a
    # later task's worktree, and fetched from the server an agent's .lfsconfig named.
    assert host_read_files_problem(["docs/.lfsconfig", ".gitattributes"]) is None
    repo = make_user_repo(tmp_path)
    user_head = repo.head.commit.hexsha
    provider = ScriptedProvider(
        write(".gitattributes", "*.bin filter=lfs diff=lfs merge=lfs -text\n"),
        write(".lfsconfig", '[lfs]\n\turl = "http://127.0.0.1:4200/out/DATA"\n'),
        write("a.txt", "a\n"),
        tool_calls(tool_use("finish", summary="wrote a.txt")),
    )
    task = Task(id="a", title="Write a", verify="test -f a.txt")

    outcome = asyncio.run(execute(tmp_path, plan_of(task), "a", provider))

    assert outcome.status == "failed" and outcome.commit_sha is None
    assert "(.lfsconfig)" not in outcome.failure_reason  # named as itself
    assert ".lfsconfig, which git-lfs reads outside the sandbox" in outcome.failure_reason
    assert session_branch_head(repo, SESSION) == user_head
