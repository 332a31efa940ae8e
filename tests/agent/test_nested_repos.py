"""A git repository the agent makes inside its worktree is refused: git would commit none of
its files (a link to its commit, or nothing at all)."""

from __future__ import annotations

import asyncio

import pytest

from aca_flows.plan.models import Task
from aca_flows.settings import AcaConfig
from aca_flows.workspace import session_branch_head
from tests.agent.test_execute import SESSION, execute, plan_of
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use
from tests.workspace.test_repository import make_user_repo

COMMIT = "git -c user.name=a -c user.email=a@b.c commit -qm x"


@pytest.mark.parametrize(
    "command",
    [
        # No commit yet: `git add -A` refuses the whole change ("does not have a commit").
        "mkdir -p lib/nested && git -C lib/nested init -q && echo a > a.txt",
        # A commit: the branch would get a link to a commit no remote has, and no file.
        f"mkdir nested && cd nested && git init -q && echo x > f.txt && git add f.txt && {COMMIT}"
        " && cd .. && echo a > a.txt",
    ],
    ids=["without-a-commit", "with-a-commit"],
)
def test_a_repository_made_inside_the_worktree_fails_the_task_with_the_fix(tmp_path, command):
    repo = make_user_repo(tmp_path)
    user_head = repo.head.commit.hexsha
    provider = ScriptedProvider(
        tool_calls(tool_use("run_command", command=command)),
        tool_calls(tool_use("finish", summary="wrote the files")),
    )
    task = Task(id="t1", title="Files", verify="test -f a.txt")
    outcome = asyncio.run(execute(tmp_path, plan_of(task), "t1", provider))

    assert outcome.status == "failed" and outcome.commit_sha is None
    assert "a git repository of its own" in outcome.failure_reason
    assert "nested/" in outcome.failure_reason and "Remove the .git there" in outcome.failure_reason
    assert session_branch_head(repo, SESSION) == user_head


def test_a_submodule_the_change_registers_is_committed_as_one(tmp_path):
    """`git submodule add` is deliberate: .gitmodules names the folder, and it is kept."""
    repo = make_user_repo(tmp_path)
    library = tmp_path.parent / f"{tmp_path.name}-lib"
    command = (
        f"git init -q {library} && cd {library} && echo x > x.txt && git add x.txt && {COMMIT}"
        " && cd - >/dev/null && git clone -q {library} vendor/lib"
        " && git config --file .gitmodules submodule.lib.path vendor/lib"
        f" && git config --file .gitmodules submodule.lib.url {library}"
    ).replace("{library}", str(library))
    provider = ScriptedProvider(
        tool_calls(tool_use("run_command", command=command)),
        tool_calls(tool_use("finish", summary="added the library as a submodule")),
    )
    config = AcaConfig.model_validate({"sandbox": {"mode": "off"}})  # the library: outside
    outcome = asyncio.run(
        execute(tmp_path, plan_of(Task(id="t1", title="Vendor")), "t1", provider, config=config)
    )

    assert outcome.status == "completed", outcome.failure_reason
    tree = repo.git.ls_tree("-r", f"aca/{SESSION}")
    assert "160000 commit" in tree and "vendor/lib" in tree
