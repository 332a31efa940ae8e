"""A secret the agent was given, written into its work, is never committed (nor pushed).

The user passes a token into the sandbox (``[sandbox] env = ["NPM_TOKEN"]``); the agent's
command copies it into the worktree, plain and in base64. No redactor runs on a commit, which
``--repo`` pushes and a pull request shows: the task must fail, naming the files and not the
token, and no commit of any ref may hold it. A file that held the token before the task
started is the repository's own content and does not stop the task.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess

import pytest

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.sandbox import check_sandbox
from aca_flows.settings import AcaConfig
from tests.fakes.git_repo import commit_file, make_repo
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use

TOKEN = "npm_" + "W3kTz8Hq1LmV6cXp0RbN" * 2
CONFIG = AcaConfig.model_validate(
    {"session": {"model": "claude-test"}, "sandbox": {"env": ["NPM_TOKEN"]}}
)
LEAK = 'printf %s "$NPM_TOKEN" > token.txt && printf x:%s "$NPM_TOKEN" | base64 -w0 > auth.txt'


def run_agent(repo, command: str, **environ: str):
    """One task whose agent runs ``command``, then finishes."""
    provider = ScriptedProvider(
        tool_calls(tool_use("run_command", command=command)),
        tool_calls(tool_use("finish", summary="ok")),
    )
    plan = ExecutionPlan(name="secrets", tasks=[Task(id="t1", title="Configure npm")])
    return run_task(repo, provider, plan, **environ)


def run_task(repo, provider, plan, config=CONFIG, **environ: str):
    """Task t1 of ``plan`` with the token in the environment (and ``environ``)."""
    check_sandbox(config.sandbox)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"NPM_TOKEN": TOKEN, **environ}.items():
            patch.setenv(name, value)
        return asyncio.run(
            execute_task(plan, "t1", workdir=repo, session_id="s1", provider=provider,
                         config=config)
        )  # fmt: skip


def every_commit_holds(repo, text: str) -> bool:
    found = subprocess.run(
        ["git", "-C", str(repo), "log", "--all", "-p", "--format=%B"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return text in found


def test_a_token_written_into_the_work_fails_the_task_and_is_never_committed(tmp_path):
    repo = make_repo(tmp_path / "repo")

    outcome = run_agent(repo, LEAK)

    assert outcome.status == "failed"
    assert "writes a secret aca knows" in outcome.failure_reason
    assert "token.txt" in outcome.failure_reason and "auth.txt" in outcome.failure_reason
    assert TOKEN not in outcome.failure_reason
    encoded = base64.b64encode(b"x:" + TOKEN.encode()).decode()[4:52]
    assert not every_commit_holds(repo, TOKEN) and not every_commit_holds(repo, encoded)


def test_a_token_written_in_base64_wrapped_across_lines_is_never_committed(tmp_path):
    repo = make_repo(tmp_path / "repo")
    # 40 bytes before it: base64 wraps at 76 characters (57 bytes), cutting its encoding.
    wrapped = 'printf %040d%s 0 "$NPM_TOKEN" | base64 > auth.txt && test $(wc -l < auth.txt) = 2'

    outcome = run_agent(repo, wrapped)

    assert outcome.status == "failed"
    assert "writes a secret aca knows" in outcome.failure_reason
    assert "auth.txt" in outcome.failure_reason


def test_a_token_the_repository_held_already_does_not_stop_the_task(tmp_path):
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, "token.txt", TOKEN)

    outcome = run_agent(repo, "echo more >> token.txt")

    assert outcome.status == "completed", outcome.failure_reason


def test_a_url_under_a_secret_sounding_name_may_be_written(tmp_path):
    """The redactor takes KEYCLOAK_URL's value out of records (its name holds KEY); a URL is
    no credential to refuse in the work."""
    repo = make_repo(tmp_path / "repo")
    url = "https://auth.example.com/realms/main"

    encoded = "https%3A%2F%2Fauth.example.com%2Frealms%2Fmain"  # as a redirect_uri has it
    command = f"echo 'issuer: {url}' > auth.yml && echo 'redirect={encoded}' >> auth.yml"

    outcome = run_agent(repo, command, KEYCLOAK_URL=url)

    assert outcome.status == "completed", outcome.failure_reason


def test_a_token_as_a_link_target_or_a_file_name_is_never_committed(tmp_path):
    """git commits a symbolic link's target as its content, and every file's name."""
    repo = make_repo(tmp_path / "repo")

    outcome = run_agent(repo, 'ln -s "$NPM_TOKEN" link && touch "name-$NPM_TOKEN.txt"')

    assert outcome.status == "failed"
    assert "writes a secret aca knows" in outcome.failure_reason
    assert "link" in outcome.failure_reason and "name-[REDACTED].txt" in outcome.failure_reason
    assert TOKEN not in outcome.failure_reason
    assert not every_commit_holds(repo, TOKEN)
    names = subprocess.run(
        ["git", "-C", str(repo), "log", "--all", "--name-only", "--format="],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert TOKEN not in names


def test_a_token_url_encoded_into_the_work_is_never_committed(tmp_path):
    repo = make_repo(tmp_path / "repo")
    token = TOKEN[:10] + "/+" + TOKEN[10:]  # as an AWS secret key holds them
    encode = """printf %s "$NPM_TOKEN" | sed 's|/|%2F|; s|+|%2B|'"""

    outcome = run_agent(repo, f"{encode} > url.txt", NPM_TOKEN=token)

    assert outcome.status == "failed", outcome.failure_reason
    assert "url.txt" in outcome.failure_reason


@pytest.mark.parametrize(
    "command",
    [
        # The file as the model read it, moved elsewhere; the original removed.
        "sed 's/_authToken=.*/_authToken=[REDACTED]/' .npmrc > npmrc.new && rm .npmrc",
        # Written over by a command, not a tool.
        "printf '//r.example.com/:_authToken=[REDACTED]\\n' > .npmrc",
    ],
)
def test_the_mark_for_a_hidden_secret_never_replaces_the_secret_in_a_commit(tmp_path, command):
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, ".npmrc", f"//r.example.com/:_authToken={TOKEN}\n")

    outcome = run_agent(repo, command)

    assert outcome.status == "failed"
    assert "puts [REDACTED] into" in outcome.failure_reason, outcome.failure_reason


def test_a_file_holding_the_repositorys_own_token_may_be_moved(tmp_path):
    """`mv .npmrc config/.npmrc` moves what the repository held: no secret the agent added."""
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, ".npmrc", f"//r.example.com/:_authToken={TOKEN}\n")

    outcome = run_agent(repo, "mkdir -p config && mv .npmrc config/.npmrc")

    assert outcome.status == "completed", outcome.failure_reason


@pytest.mark.parametrize(
    ("name", "command"),
    [
        # git stores a working-tree-encoding file converted to UTF-8: the token, plain.
        (
            "s16.txt",
            "printf 's16.txt working-tree-encoding=UTF-16LE\\n' > .gitattributes && "
            'printf %s "$NPM_TOKEN" | iconv -f UTF-8 -t UTF-16LE > s16.txt',
        ),
        # An encoding git knows and Python does not (PowerShell's), converted by git.
        (
            "x.ps1",
            "printf '*.ps1 working-tree-encoding=UTF-16LE-BOM\\n' > .gitattributes && "
            "printf '\\377\\376' > x.ps1 && "
            'printf %s "$NPM_TOKEN" | iconv -f UTF-8 -t UTF-16LE >> x.ps1',
        ),
        # A hex dump: the token's bytes as hex groups, 16 of its characters a line.
        ("key.od", 'printf %s "$NPM_TOKEN" | od -tx1 > key.od'),
        ("key.hex", 'printf %s "$NPM_TOKEN" | od -An -tx1 > key.hex'),
        # Escapes in a literal, a URL every byte of which is percent-encoded, a byte array.
        (
            "token.py",
            """python3 -c 'import os; t = os.environ["NPM_TOKEN"].encode(); """
            """print("T = b\\"" + "".join("\\\\x%02x" % b for b in t) + "\\"")' > token.py""",
        ),
        (
            "url.txt",
            """python3 -c 'import os; t = os.environ["NPM_TOKEN"].encode(); """
            """print("https://r.example.com/?t=" + "".join("%%%02X" % b for b in t))' > url.txt""",
        ),
        ("key.c", 'printf %s "$NPM_TOKEN" | od -An -tx1 -v | sed "s/ / 0x/g;s/$/,/" > key.c'),
        # Past the first 16 MB of a file.
        (
            "big.txt",
            'head -c 17000000 /dev/zero | tr "\\0" "#" > big.txt && echo "$NPM_TOKEN" >> big.txt',
        ),
    ],
)
def test_a_token_git_would_store_readable_is_never_committed(tmp_path, name, command):
    repo = make_repo(tmp_path / "repo")

    outcome = run_agent(repo, command)

    assert outcome.status == "failed", name
    assert "writes a secret aca knows" in outcome.failure_reason and name in outcome.failure_reason
    assert not every_commit_holds(repo, TOKEN)


def test_a_file_in_an_encoding_git_converts_is_committed_when_it_holds_no_secret(tmp_path):
    # An encoding Python has no codec for refused every task that touched such a file.
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, ".gitattributes", "*.ps1 working-tree-encoding=UTF-16LE-BOM\n")

    outcome = run_agent(
        repo, "printf '\\377\\376' > x.ps1 && printf hi | iconv -t UTF-16LE >> x.ps1"
    )

    assert outcome.status == "completed", outcome.failure_reason
    stored = subprocess.run(
        ["git", "-C", str(repo), "show", f"{outcome.commit_sha}:x.ps1"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert stored == b"hi"


def test_a_change_of_more_paths_than_a_command_line_holds_is_looked_through(tmp_path):
    # Vendoring a library in a repository with a .gitattributes: every changed path went on
    # one `git check-attr` command line, past the kernel's limit, and the task always failed.
    from aca_flows.agent.secrets_in_work import secrets_problem
    from tests.workspace.test_worktree import TaskWorktree, session_repo

    repo = session_repo(tmp_path)
    worktree = TaskWorktree.create(repo, "s1", "t1")
    (worktree.path / ".gitattributes").write_text("*.png binary\n")
    (worktree.path / "token.txt").write_text(TOKEN)
    vendored = [f"vendor/lib/{'deep/' * 8}module_{n:06d}.py" for n in range(40_000)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NPM_TOKEN", TOKEN)
        assert secrets_problem(worktree, vendored) is None  # 2.6 MB of paths
        found = secrets_problem(worktree, [*vendored, "token.txt"])
    assert found is not None and "into token.txt" in found
