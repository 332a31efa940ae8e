"""What an agent's model is sent holds no secret aca knows: not a token in the task's own
text, nor one a command it was given printed (``[sandbox] env``). The provider's servers
keep what they are sent; only the code as it is, not a key, needs to reach them."""

from __future__ import annotations

import subprocess

from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.settings import AcaConfig
from tests.fakes.git_repo import commit_file, make_repo
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use
from tests.security.test_secrets_in_work import run_task

TOKEN = "npm_" + "R5tYq2Wz8KcL1vBx7NmP" * 2
CONFIG = AcaConfig.model_validate(
    {"session": {"model": "claude-test"}, "sandbox": {"env": ["NPM_TOKEN"]}}
)


def test_a_token_in_the_task_or_printed_by_a_command_never_reaches_the_model(tmp_path):
    repo = make_repo(tmp_path / "repo")
    fixture = 'password = "hunter2-fixture"'  # code as it is: no secret aca knows
    provider = ScriptedProvider(
        tool_calls(
            tool_use("run_command", command='printf "%s\\n" "$NPM_TOKEN" | base64 -w 20; env'),
            tool_use("write_file", path="conf.py", content=fixture),
        ),
        tool_calls(tool_use("read_file", path="conf.py")),
        tool_calls(tool_use("finish", summary="done")),
    )
    plan = ExecutionPlan(
        name="npm", tasks=[Task(id="t1", title=f"log in to npm with {TOKEN}", verify="true")]
    )
    outcome = run_task(repo, provider, plan, CONFIG, NPM_TOKEN=TOKEN)

    assert outcome.status == "completed", outcome.failure_reason
    sent = [r.model_dump_json() for r in provider.history]
    assert all(TOKEN not in request for request in sent)
    assert "[REDACTED]" in sent[0]  # the title
    printed = "".join(r.content for m in provider.history[1].messages for r in m.tool_results)
    assert "NPM_TOKEN=[REDACTED]" in printed and printed.split("\n")[1].startswith("[REDACTED]")
    read = "".join(r.content for m in provider.history[-1].messages for r in m.tool_results)
    assert fixture in read  # the file as it is


def _run(repo, provider, **environ):
    plan = ExecutionPlan(name="p", tasks=[Task(id="t1", title="tidy up", verify="true")])
    return run_task(repo, provider, plan, CONFIG, NPM_TOKEN=TOKEN, **environ)


def test_a_secret_that_is_a_word_leaves_the_code_the_model_reads_as_it_is(tmp_path):
    """MYSQL_PWD=password is redacted from records, but "password" in code is no secret:
    the model read `def check_[REDACTED](user, [REDACTED])` and edited that."""
    repo = make_repo(tmp_path / "repo")
    code = "def check_password(user, password):\n    return user.password_hash\n"
    commit_file(repo, "auth.py", code)
    provider = ScriptedProvider(
        tool_calls(tool_use("read_file", path="auth.py")),
        tool_calls(tool_use("finish", summary="nothing to do")),
    )

    _run(repo, provider, MYSQL_PWD="password")

    read = "".join(r.content for m in provider.history[1].messages for r in m.tool_results)
    assert code in read


def test_a_write_that_would_put_the_marker_in_place_of_a_hidden_secret_is_refused(tmp_path):
    """The model reads the file's token as [REDACTED]; writing the file back as it read it
    would replace the token with the marker, and commit that."""
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, ".npmrc", f"//registry.example.com/:_authToken={TOKEN}\nfund=false\n")
    shown = "//registry.example.com/:_authToken=[REDACTED]\nfund=false\n"
    provider = ScriptedProvider(
        tool_calls(tool_use("write_file", path=".npmrc", content=shown + "audit=false\n")),
        tool_calls(
            tool_use(
                "edit_file",
                path=".npmrc",
                old_string="fund=false",
                new_string="fund=false\naudit=false",
            )
        ),  # fmt: skip
        tool_calls(tool_use("finish", summary="audit off")),
    )

    outcome = _run(repo, provider)

    refused = "".join(r.content for m in provider.history[1].messages for r in m.tool_results)
    assert "holds a secret aca keeps from you" in refused
    assert outcome.status == "completed", outcome.failure_reason
    landed = subprocess.run(
        ["git", "-C", str(repo), "show", "aca/s1:.npmrc"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert landed == f"//registry.example.com/:_authToken={TOKEN}\nfund=false\naudit=false\n"


def test_no_part_of_a_token_reaches_the_model_where_long_output_is_cut(tmp_path):
    """Cut first, the token at the cut was never whole for the redactor: its first 20
    characters reached the model, before "[... bytes omitted ...]"."""
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, "big.log", "x" * 1990 + TOKEN + "y" * 100)  # read_file keeps 2000
    config = CONFIG.model_copy(
        update={"agent": CONFIG.agent.model_copy(update={"command_output_limit_bytes": 2000})}
    )
    # The command's output keeps its first and last 1000 bytes: the token starts 10 before.
    long_output = (
        """printf '%990s' | tr ' ' x; printf %s "$NPM_TOKEN"; printf '%3000s' | tr ' ' y"""
    )
    provider = ScriptedProvider(
        tool_calls(tool_use("run_command", command=long_output)),
        tool_calls(tool_use("read_file", path="big.log")),
        tool_calls(tool_use("finish", summary="looked")),
    )
    plan = ExecutionPlan(name="p", tasks=[Task(id="t1", title="look", verify="true")])
    run_task(repo, provider, plan, config, NPM_TOKEN=TOKEN)

    shown = [r.content for m in provider.history[-1].messages for r in m.tool_results]
    assert len(shown) == 2 and all("[REDACTED]\n[... " in text for text in shown), shown
    assert not any(TOKEN[:6] in text for text in shown)


def test_a_setting_named_with_a_secret_word_is_no_credential_for_the_model(tmp_path):
    """PYTHON_KEYRING_BACKEND holds KEY: its value is redacted from records, but it is a
    setting the code names, not a credential; the model read ENV ...=[REDACTED]."""
    repo = make_repo(tmp_path / "repo")
    backend = "keyring.backends.null.Keyring"
    commit_file(repo, "Dockerfile", f"ENV PYTHON_KEYRING_BACKEND={backend}\n")
    provider = ScriptedProvider(
        tool_calls(tool_use("read_file", path="Dockerfile")),
        tool_calls(tool_use("finish", summary="nothing to do")),
    )

    _run(repo, provider, PYTHON_KEYRING_BACKEND=backend)

    read = "".join(r.content for m in provider.history[1].messages for r in m.tool_results)
    assert backend in read


def test_a_write_back_of_a_token_wrapped_across_lines_is_refused_too(tmp_path):
    """The redactor finds a token that base64 wrapped across two lines; the write check
    looked for it whole, and let [REDACTED] be committed in its place."""
    import base64

    repo = make_repo(tmp_path / "repo")
    encoded = base64.encodebytes(b"0" * 40 + TOKEN.encode()).decode()  # 76 a line: cut
    commit_file(repo, "auth.b64", encoded)

    def write_back(request):  # the file as the model read it, and a line more
        read = "".join(r.content for m in request.messages for r in m.tool_results)
        return tool_calls(tool_use("write_file", path="auth.b64", content=read + "x\n"))

    provider = ScriptedProvider(
        tool_calls(tool_use("read_file", path="auth.b64")),
        write_back,
        tool_calls(tool_use("finish", summary="done")),
    )

    _run(repo, provider)

    refused = "".join(r.content for m in provider.history[2].messages for r in m.tool_results)
    assert "holds a secret aca keeps from you" in refused
