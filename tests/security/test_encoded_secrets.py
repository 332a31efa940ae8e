"""A secret a check can see, printed encoded: base64 (at any alignment, wrapped or not) and hex
reach no record, nor the secret itself folded across lines.

A user passes a token into the sandbox (``[sandbox] env = ["NPM_TOKEN"]``, for a private
registry); a careless or hostile check prints it encoded, so the plain value is nowhere in
its output. The failed check's output goes to the task log, the transcript and the failure
reason: none may hold an encoding of it.
"""

from __future__ import annotations

import asyncio
import base64

import pytest

from aca_flows.agent import execute_task
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.sandbox import check_sandbox
from aca_flows.session.redact import redact_text
from aca_flows.settings import AcaConfig
from tests.fakes.git_repo import make_repo
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use

TOKEN = "npm_" + "Q7pLx2Rv9WcN4tYb8KfZ" * 2
CONFIG = AcaConfig.model_validate(
    {
        "session": {"model": "claude-test"},
        "agent": {"max_fix_attempts": 0},
        "sandbox": {"env": ["NPM_TOKEN"]},
    }
)
# The token as base64 at each of the three alignments (after 0, 1 and 2 other bytes, as in
# base64 of "user:" + token), and as hex: what the check prints, cut to what the token alone
# decides (the groups it shares with its neighbours vary).
ENCODED = {
    "base64": base64.b64encode(TOKEN.encode()).decode()[:52],
    "base64 after 1 byte": base64.b64encode(b"x" + TOKEN.encode()).decode()[4:52],
    "base64 after 2 bytes": base64.b64encode(b"x:" + TOKEN.encode()).decode()[4:52],
    "hex": TOKEN.encode().hex(),
    "plain, folded across lines": TOKEN,
}
CHECK = (
    'printf %s "$NPM_TOKEN" | base64 -w0; echo; printf x%s "$NPM_TOKEN" | base64 -w0; echo; '
    'printf x:%s "$NPM_TOKEN" | base64 -w0; echo; printf %s "$NPM_TOKEN" | od -An -tx1 | '
    "tr -d ' \\n'; echo; "
    # Folded, as `fold` or a terminal's copy cuts a long line.
    'printf %s "$NPM_TOKEN" | fold -w 10; echo; '
    # Wrapped at 76 characters, the second token cut by the line break (it starts after 49
    # bytes: the alignment of "base64 after 1 byte").
    """printf 'user:%s%s' "$NPM_TOKEN" "$NPM_TOKEN" | base64; exit 1"""
)


@pytest.fixture(scope="module")
def failed_check(tmp_path_factory):
    check_sandbox(CONFIG.sandbox)
    repo = make_repo(tmp_path_factory.mktemp("encoded") / "repo")
    provider = ScriptedProvider(
        tool_calls(tool_use("write_file", path="a.txt", content="a")),
        tool_calls(tool_use("finish", summary="a")),
    )
    plan = ExecutionPlan(name="encoded", tasks=[Task(id="t1", title="Add a", verify=CHECK)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NPM_TOKEN", TOKEN)
        outcome = asyncio.run(
            execute_task(plan, "t1", workdir=repo, session_id="s1", provider=provider,
                         config=CONFIG)
        )  # fmt: skip
        # The outcome leaves aca through the flow, which redacts it (flows/task_run.py).
        reason = redact_text(outcome.failure_reason or "")
    return repo, outcome, reason


def test_the_check_printed_the_token_encoded(failed_check):
    _, outcome, _ = failed_check
    assert outcome.status == "failed"
    assert "exit code 1" in outcome.failure_reason


def test_no_encoding_of_the_token_is_in_the_failure_reason_or_in_aca(failed_check):
    repo, _, reason = failed_check
    written = {
        str(path): path.read_text(errors="replace")
        for path in (repo / ".aca").rglob("*")
        if path.is_file() and "/worktrees/" not in str(path)
    }
    written["failure reason"] = reason
    assert any("task_logs" in name for name in written)  # the check's output was logged
    leaks = [
        (name, form)
        for name, text in written.items()
        for form, encoded in ENCODED.items()
        if encoded in joined(text) or TOKEN in text
    ]
    assert leaks == []


def joined(text: str) -> str:
    # Line breaks out, written or escaped (JSON): an encoding wrapped across lines is whole.
    return text.replace("\\n", "").replace("\n", "")
