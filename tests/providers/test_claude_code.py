"""The claude-code provider, running the real bundled ``claude`` binary against the fake server.

The fake plays the model: it tells Claude Code to write a file with its Write tool, and the
test finds the file on disk, the usage in the result and every stream message in the events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from aca_flows.errors import (
    CreditExhausted,
    KeyRejected,
    PermanentProviderError,
    TransientProviderError,
)
from aca_flows.providers import get_provider
from aca_flows.providers.base import Message, ProviderEvent, ProviderRequest
from aca_flows.providers.claude_code import (
    bundled_claude_cli,
    find_claude_cli,
    render_prompt,
    result_error,
)
from aca_flows.providers.claude_code_results import CONTINUE_AFTER_ERROR
from aca_flows.providers.claude_code_sandbox import QUIET_ENV
from aca_flows.providers.retry import RetryingProvider
from aca_flows.settings import AcaConfig, ClaudeCodeSection, ProviderSection, SandboxSection
from tests.fakes.git_repo import make_repo
from tests.providers.conftest import run

MODEL = "claude-sonnet-4-6"


def _provider(**claude):
    config = AcaConfig(
        claude_code=ClaudeCodeSection(**claude),
        providers={"claude-code": ProviderSection(model=MODEL)},
    )
    return get_provider("claude-code", config)


def _request(worktree: Path, text: str, **options) -> ProviderRequest:
    return ProviderRequest(
        system="Commit nothing; aca commits for you.",
        messages=[Message(role="user", text=text)],
        options={"cwd": str(worktree), **options},
    )


def test_claude_code_writes_a_file_and_reports_usage_and_every_step(
    claude_env, llm_server, tmp_path
):
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    target = worktree / "hello.py"
    llm_server.anthropic.enqueue(
        tool_calls=[
            {"name": "Write", "arguments": {"file_path": str(target), "content": "print('hi')\n"}}
        ],
        usage={"input_tokens": 1000, "output_tokens": 50, "cache_write_tokens": 200},
    )
    llm_server.anthropic.enqueue(
        text="Created hello.py.",
        usage={"input_tokens": 300, "output_tokens": 20, "cache_read_tokens": 1000},
    )
    events: list[ProviderEvent] = []

    response = run(
        _provider().complete(_request(worktree, "Create hello.py"), on_event=events.append)
    )

    assert target.read_text() == "print('hi')\n"
    assert response.text == "Created hello.py."
    assert response.usage.input_tokens == 1300
    assert response.usage.output_tokens == 70
    assert response.usage.cache_read_tokens == 1000
    assert response.usage.cache_write_tokens == 200
    assert response.cost_usd > 0
    assert response.session_id
    kinds = [event.kind for event in events]
    assert kinds[0] == "system" and kinds[-1] == "result"
    assert kinds.index("tool_use") < kinds.index("tool_result") < kinds.index("assistant_text")
    tool_use = next(e for e in events if e.kind == "tool_use")
    assert tool_use.data["name"] == "Write"
    # Our system prompt is appended to Claude Code's own, which stays.
    system = str(llm_server.anthropic.requests[0].json["system"])
    assert "Commit nothing; aca commits for you." in system
    assert "Claude" in system.replace("Commit nothing; aca commits for you.", "")


def test_a_command_the_agent_starts_in_the_background_does_not_outlive_its_answer(
    claude_env, llm_server, tmp_path
):
    # Claude Code's Bash kept a background command running after the agent's answer: aca
    # waited for the claude process for good, and when the command ended claude made a turn
    # of its own whose answer replaced the agent's.
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    late = worktree / "late.txt"
    background = {"command": f"sleep 3; echo late > {late}", "run_in_background": True}
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Bash", "arguments": background}])
    llm_server.anthropic.enqueue(text="NO CHANGE NEEDED: nothing to do")
    llm_server.anthropic.enqueue(text="The background command finished.")

    response = run(_provider().complete(_request(worktree, "Look around")))

    assert response.text == "NO CHANGE NEEDED: nothing to do"
    assert len(llm_server.anthropic.requests) == 2


def test_what_claude_writes_to_stderr_is_a_step_of_the_task_not_a_line_on_the_terminal(
    claude_env, llm_server, tmp_path, capfd, monkeypatch
):
    # With the sandbox on (the default), Claude Code runs in its default mode: told another,
    # it warned on the terminal of every run that its permission mode was forced.
    llm_server.anthropic.enqueue(text="Done.")
    events: list[ProviderEvent] = []

    run(_provider().complete(_request(tmp_path, "Say done"), on_event=events.append))

    assert "Permission mode forced" not in capfd.readouterr().err
    assert not [e for e in events if "Permission mode" in str(e.data)]

    # What claude does write to stderr (here: a user's own scrub setting outside the sandbox
    # makes it warn) reaches the task's events, and not aca's terminal.
    monkeypatch.setenv("CLAUDE_CODE_SUBPROCESS_ENV_SCRUB", "1")
    unsandboxed = AcaConfig(
        claude_code=ClaudeCodeSection(),
        providers={"claude-code": ProviderSection(model=MODEL)},
        sandbox=SandboxSection(mode="off"),
    )
    llm_server.anthropic.enqueue(text="Done.")
    events.clear()

    run(
        get_provider("claude-code", unsandboxed).complete(
            _request(tmp_path, "Say done"), on_event=events.append
        )
    )

    assert "Permission mode forced" not in capfd.readouterr().err
    heard = [e.data["text"] for e in events if e.kind == "stderr"]
    assert any("Permission mode forced to default" in line for line in heard)


def test_resume_continues_the_previous_claude_session(claude_env, llm_server, tmp_path):
    llm_server.anthropic.enqueue(text="First answer.")
    llm_server.anthropic.enqueue(text="Second answer.")
    provider = _provider()

    first = run(provider.complete(_request(tmp_path, "Remember the word banana.")))
    second = run(provider.complete(_request(tmp_path, "Which word?", resume=first.session_id)))

    assert second.text == "Second answer."
    assert second.session_id == first.session_id
    history = str(llm_server.anthropic.requests[-1].json["messages"])
    assert "banana" in history and "First answer." in history


def test_a_run_over_its_budget_is_stopped_permanently(claude_env, llm_server, tmp_path):
    llm_server.anthropic.enqueue(
        tool_calls=[
            {"name": "Write", "arguments": {"file_path": str(tmp_path / "a"), "content": "a"}}
        ],
        usage={"input_tokens": 2_000_000, "output_tokens": 10},
    )

    with pytest.raises(PermanentProviderError, match="budget") as caught:
        run(_provider().complete(_request(tmp_path, "Do a lot", max_budget_usd=0.01)))

    # The turns it paid for before it stopped travel with the error, for the bill.
    billed = caught.value.billed
    assert billed.usage.input_tokens >= 2_000_000 and billed.cost_usd > 0.01


def test_an_explicit_binary_that_does_not_exist_fails_instead_of_falling_back(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("ACA_CLAUDE_CLI", str(tmp_path / "no-such-claude"))

    with pytest.raises(PermanentProviderError, match="ACA_CLAUDE_CLI"):
        run(_provider().complete(_request(tmp_path, "hi")))


def test_the_binary_is_found_in_the_documented_order(monkeypatch, tmp_path):
    on_path = tmp_path / "bin" / "claude"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    explicit = tmp_path / "explicit-claude"
    explicit.write_text("#!/bin/sh\n")
    environ = {"PATH": str(on_path.parent)}

    assert find_claude_cli(None, {"PATH": "/nonexistent"}) == (bundled_claude_cli(), "bundled")
    assert find_claude_cli(None, environ) == (on_path, "PATH")
    assert find_claude_cli(str(explicit), environ) == (explicit, "config")
    environ["ACA_CLAUDE_CLI"] = str(explicit)
    assert find_claude_cli("/other", environ) == (explicit, "ACA_CLAUDE_CLI")
    assert os.access(bundled_claude_cli(), os.X_OK)


def test_a_fresh_run_sees_the_earlier_turns_and_a_resumed_one_only_the_new_prompt():
    messages = [
        Message(role="user", text="Add a test."),
        Message(role="assistant", text="Which file?"),
        Message(role="user", text="tests/test_a.py"),
    ]
    assert render_prompt(messages, resuming=True) == "tests/test_a.py"
    fresh = render_prompt(messages, resuming=False)
    assert "Add a test." in fresh and "Which file?" in fresh and fresh.endswith("tests/test_a.py")


def test_a_run_out_of_turns_is_a_permanent_error_that_keeps_its_cost(
    claude_env, llm_server, tmp_path
):
    write = {"file_path": str(tmp_path / "a.txt"), "content": "a"}
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Write", "arguments": write}])

    with pytest.raises(PermanentProviderError, match="turn limit") as caught:
        run(_provider().complete(_request(tmp_path, "Write a.txt", max_turns=1)))

    assert "[claude_code] max_turns" in str(caught.value)
    assert caught.value.billed.cost_usd > 0 and caught.value.billed.usage.input_tokens == 10
    assert (tmp_path / "a.txt").read_text() == "a"


def test_a_run_stopped_after_one_turn_says_1_turn():
    stopped = SimpleNamespace(
        subtype="error_max_budget_usd", num_turns=1, is_error=True, api_error_status=None
    )

    message = str(result_error(stopped, ""))

    assert "after 1 turn" in message and "1 turns" not in message


def test_a_run_at_its_turn_limit_names_the_limit_not_claudes_count_of_turns():
    # With max_turns = 2, Claude Code made 2 requests and said num_turns = 3: "after 3 turns".
    stopped = SimpleNamespace(
        subtype="error_max_turns", num_turns=3, is_error=True, api_error_status=None
    )

    message = str(result_error(stopped, ""))

    assert "turn limit ([claude_code] max_turns)" in message and "3" not in message


@pytest.mark.parametrize(
    ("said", "kind"),
    [
        ("Credit balance is too low", CreditExhausted),
        ("Claude AI usage limit reached|1767225600", CreditExhausted),
        ("Invalid API key · Please run /login", KeyRejected),
        ('API Error: {"type":"authentication_error","message":"invalid x-api-key"}', KeyRejected),
    ],
    ids=["credit", "usage-limit", "login", "x-api-key"],
)
def test_spent_credit_or_a_rejected_key_without_a_status_stops_the_providers_tasks(said, kind):
    # Claude Code says so in its result's text only: no api_error_status. A 402 or 401 would
    # stop the run's claude-code tasks (exit 3, resumable); so must these.
    ended = SimpleNamespace(subtype="success", num_turns=1, is_error=True, api_error_status=None)

    error = result_error(ended, said)

    assert isinstance(error, kind), type(error)
    assert error.detail == said and error.fix


@pytest.mark.parametrize(
    ("said", "kind"),
    [
        ('API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}', "transient"),
        ("API Error: Request rejected (429) · rate limited", "transient"),
        ("API Error: 400 prompt is too long", "permanent"),
        # A gateway's own words: "Error: rate limited" was committed as the work's summary.
        ("Error: rate limited", "transient"),
        ("error 502: bad gateway", "transient"),
        # A gateway's own page, as nginx or a CDN sends it: its HTML, or its status line.
        (
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>",
            "transient",
        ),
        ("<!DOCTYPE html><html><head><title>503 Service Unavailable</title>", "transient"),
        ("502 Bad Gateway", "transient"),
        ("504 Gateway Time-out\n", "transient"),
    ],
)
def test_an_api_error_given_as_the_final_answer_is_no_answer(said, kind):
    # A gateway passes an error on in a 200's text; Claude Code ends with it as its answer,
    # not as an error: after a Write, the half-done work was committed as completed.
    answered = SimpleNamespace(
        subtype="success", num_turns=2, is_error=False, api_error_status=None
    )

    error = result_error(answered, said, tools_used=1)

    assert error is not None
    assert isinstance(error, TransientProviderError) == (kind == "transient"), type(error)
    # A real answer that mentions an error is still an answer.
    assert result_error(answered, "Fixed the API error handling in api.py.", tools_used=1) is None
    assert result_error(answered, "Error handling added: parse() raises.", tools_used=1) is None
    assert result_error(answered, "502 Bad Gateway pages are now retried.", tools_used=1) is None
    for answer in ("401 files changed", "402 tests passed", "500 tests pass", "404 Not Founds"):
        assert result_error(answered, answer, tools_used=1) is None, answer  # short answers
    page = "<html><body><h1>Report</h1><p>All 12 tests pass.</p></body></html>"
    assert result_error(answered, page, tools_used=1) is None


def test_the_real_claude_ending_with_an_api_error_as_text_after_work_raises_it(
    claude_env, llm_server, tmp_path
):
    write = {"file_path": str(tmp_path / "a.txt"), "content": "a"}
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Write", "arguments": write}])
    llm_server.anthropic.enqueue(
        text='API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}'
    )

    with pytest.raises(TransientProviderError, match="529") as caught:
        run(_provider().complete(_request(tmp_path, "Write a.txt and b.txt")))

    assert caught.value.billed is not None  # its calls were paid for all the same


def test_a_call_retried_after_work_goes_on_as_the_claude_session_that_did_it(
    claude_env, llm_server, tmp_path
):
    """A run cut off by an API error after it wrote a file is retried as its own session,
    resumed and told to go on: a new run would take over a worktree it did not change (and
    its "Done." would commit that work), and pay every turn again."""
    write = {"file_path": str(tmp_path / "a.txt"), "content": "half"}
    llm_server.anthropic.enqueue(tool_calls=[{"name": "Write", "arguments": write}])
    llm_server.anthropic.enqueue(
        text='API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}'
    )
    llm_server.anthropic.enqueue(text="Done: a.txt is written.")
    retrying = RetryingProvider(_provider(), retries=1, backoff_seconds=0)

    response = run(retrying.complete(_request(tmp_path, "Write a.txt")))

    assert response.text == "Done: a.txt is written."
    agent = [r.json for r in llm_server.anthropic.requests if (r.json or {}).get("tools")]
    assert len(agent) == 3
    retried = json.dumps(agent[2]["messages"])
    assert '"Write"' in retried and CONTINUE_AFTER_ERROR in retried  # its history, and why
    assert "Write a.txt" in json.dumps(agent[2]["messages"][0])  # one session, not a new one


def test_not_logged_in_and_no_key_is_a_permanent_error_naming_the_fix(
    claude_env, llm_server, tmp_path, monkeypatch
):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("ANTHROPIC_BASE_URL")

    with pytest.raises(PermanentProviderError, match="not logged in") as caught:
        run(_provider().complete(_request(tmp_path, "Write a.txt")))

    assert "claude auth login" in str(caught.value) and "ANTHROPIC_API_KEY" in str(caught.value)
    assert isinstance(caught.value, KeyRejected)  # a run starts no more claude-code tasks
    assert llm_server.requests == []


def test_a_rejected_key_is_an_authentication_error(claude_env, llm_server, tmp_path):
    for _ in range(2):  # an answer for Claude Code's retry too
        llm_server.anthropic.enqueue(status=401, error="invalid x-api-key")

    with pytest.raises(PermanentProviderError, match="authentication failed") as caught:
        run(_provider().complete(_request(tmp_path, "Write a.txt")))

    assert caught.value.status_code == 401 and "ANTHROPIC_API_KEY" in str(caught.value)


def test_a_refusal_is_a_permanent_error(claude_env, llm_server, tmp_path):
    for _ in range(4):  # Claude Code asks again once before it gives up
        llm_server.anthropic.enqueue(text="", stop_reason="refusal")

    with pytest.raises(PermanentProviderError, match="refused the request"):
        run(_provider().complete(_request(tmp_path, "Write a.txt")))


def test_an_empty_answer_after_doing_nothing_is_a_transient_error(claude_env, llm_server, tmp_path):
    for _ in range(4):
        llm_server.anthropic.enqueue(text="")

    with pytest.raises(TransientProviderError, match="empty answer"):
        run(_provider().complete(_request(tmp_path, "Write a.txt")))


def test_a_dropped_connection_is_a_transient_error(claude_env, llm_server, tmp_path):
    for _ in range(4):
        llm_server.anthropic.enqueue(fault="drop")

    with pytest.raises(TransientProviderError, match="connection"):
        run(_provider().complete(_request(tmp_path, "Write a.txt")))


def test_an_unrecognised_error_result_says_what_claude_code_said_not_to_log_in(
    claude_env, llm_server, tmp_path
):
    # A 200 whose body is not JSON: Claude Code ends the run with an "API Error" result that
    # has no status and names no known cause.
    for _ in range(4):
        llm_server.anthropic.enqueue(fault="malformed_json")

    with pytest.raises(TransientProviderError, match="the run ended in an error") as caught:
        run(_provider().complete(_request(tmp_path, "Write a.txt")))

    message = str(caught.value)
    assert "malformed response" in message and "aca providers check claude-code" in message
    assert "logged in" not in message and "claude auth login" not in message


def test_a_run_makes_no_side_requests_unless_the_user_asks_for_them(
    claude_env, llm_server, tmp_path, monkeypatch
):
    # A user's plain environment: none of Claude Code's quieting variables set.
    for name in ("DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "DISABLE_AUTOUPDATER"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")
    llm_server.anthropic.enqueue(text="Done.")

    response = run(_provider().complete(_request(tmp_path, "Say done")))

    # Only the agent's own turn reached the API: no paid call to title the session, no
    # connectivity check.
    assert response.text == "Done."
    assert [(r.method, bool(r.json and r.json.get("tools"))) for r in llm_server.requests] == [
        ("POST", True)
    ]
    # A value the user sets is theirs: an empty one turns the traffic back on.
    monkeypatch.setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "")
    options = _provider().build_options(_request(tmp_path, "Say done"))
    assert options.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == ""


# What aca does itself, or must not share between tasks, is off in Claude Code: its git
# instructions (commit and pull-request instructions, attribution lines, a git-status snapshot
# taken by six git processes at each start: aca commits) and its auto memory (a folder outside
# the worktree, shared by every task on the repository, that the model is told to write to).
@pytest.mark.parametrize(
    ("variable", "markers"),
    [
        ("CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS", ("# gitStatus", "Committing changes with git")),
        ("CLAUDE_CODE_DISABLE_AUTO_MEMORY", ("# auto memory",)),
    ],
)
def test_claude_code_runs_without_what_aca_does_itself_unless_the_user_asks(
    variable, markers, claude_env, llm_server, tmp_path, monkeypatch
):
    worktree = tmp_path / "worktree"
    make_repo(worktree)
    llm_server.anthropic.enqueue(text="Done.")

    run(_provider().complete(_request(worktree, "Say done")))

    prompt = llm_server.anthropic.requests[0].body.decode()
    assert "Say done" in prompt
    assert not [marker for marker in markers if marker in prompt]
    # A user who wants it sets the variable (any value; an empty one turns it back on).
    monkeypatch.setenv(variable, "")
    llm_server.anthropic.enqueue(text="Done.")

    run(_provider().complete(_request(worktree, "Say done again")))

    prompt = llm_server.anthropic.requests[-1].body.decode()
    assert all(marker in prompt for marker in markers)


@pytest.mark.parametrize("variable", ["BUN_GC_TIMER_DISABLE", "BUN_JSC_useDFGJIT"])
def test_claude_runs_without_buns_start_up_extras_unless_the_user_sets_them(
    variable, tmp_path, monkeypatch
):
    # Bun's idle GC timer (about 0.2 CPU-s of a short claude run, bench/peer.py) and its DFG
    # JIT (about 0.05 CPU-s of its start): off, unless the user's environment says otherwise.
    monkeypatch.delenv(variable, raising=False)
    options = _provider().build_options(_request(tmp_path, "Say done"))
    assert options.env[variable] == QUIET_ENV[variable]
    # The user's own value reaches claude as set: a blank engine option stops it from starting.
    monkeypatch.setenv(variable, "1")
    options = _provider().build_options(_request(tmp_path, "Say done"))
    assert options.env[variable] == "1"


def _tool_results(requests) -> list[str]:
    return [
        str(block.get("content"))
        for request in requests
        for message in request.json["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


def test_claude_code_is_offered_only_the_tools_aca_allows(claude_env, llm_server, tmp_path):
    # Claude Code's own default set holds tools that run without any approval (a subagent,
    # skills, workflows, wake-ups, a list of other local sessions): a task gets none of them
    # unless allowed_tools names them.
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Agent", "arguments": {"description": "x", "prompt": "Say hi"}}]
    )
    llm_server.anthropic.enqueue(text="Done.")

    run(_provider().complete(_request(tmp_path, "Use a subagent")))

    offered = {tool["name"] for tool in llm_server.anthropic.requests[0].json["tools"]}
    assert offered == {"Read", "Write", "Edit", "Glob", "Grep", "Bash"}
    assert "No such tool available: Agent" in _tool_results(llm_server.anthropic.requests)[0]

    # A tool allowed_tools names is offered and runs, a rule like Bash(git:*) offers Bash.
    allowed = ["Read", "Write", "Bash(git:*)", "Agent"]
    seen = len(llm_server.anthropic.requests)
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Agent", "arguments": {"description": "x", "prompt": "Say hi"}}]
    )
    llm_server.anthropic.enqueue(text="Done.")

    run(_provider(allowed_tools=allowed).complete(_request(tmp_path, "Use a subagent")))

    requests = llm_server.anthropic.requests[seen:]
    offered = {tool["name"] for tool in requests[0].json["tools"]}
    assert offered == {"Read", "Write", "Bash", "Agent"}
    assert "No such tool" not in _tool_results(requests)[0]

    # With an MCP tool allowed, the whole default set is offered (MCP tools come through
    # ToolSearch), and the unapproved tools allowed_tools does not name are denied.
    seen = len(llm_server.anthropic.requests)
    llm_server.anthropic.enqueue(
        tool_calls=[{"name": "Agent", "arguments": {"description": "x", "prompt": "Say hi"}}]
    )
    llm_server.anthropic.enqueue(text="Done.")

    run(_provider(allowed_tools=["Read", "mcp__demo"]).complete(_request(tmp_path, "Subagent")))

    requests = llm_server.anthropic.requests[seen:]
    assert "ToolSearch" in {tool["name"] for tool in requests[0].json["tools"]}
    assert "No such tool available: Agent" in _tool_results(requests)[0]
    assert len(requests) == 2  # and no subagent's request in between


def _user_mcp_server(home: Path, marker: Path) -> None:
    """A stdio MCP server in the user's Claude Code configuration that records its start."""
    start = f"open({str(marker)!r}, 'w').write('started')"
    server = {"type": "stdio", "command": sys.executable, "args": ["-c", start]}
    (home / ".claude.json").write_text(json.dumps({"mcpServers": {"demo": server}}))


def test_the_users_mcp_servers_start_only_when_an_mcp_tool_is_allowed(
    claude_env, llm_server, tmp_path
):
    marker = tmp_path / "mcp-started"
    _user_mcp_server(Path(claude_env["HOME"]), marker)
    llm_server.anthropic.enqueue(text="Done.")

    response = run(_provider().complete(_request(tmp_path, "Say done")))

    assert response.text == "Done." and not marker.exists()

    llm_server.anthropic.enqueue(text="Done.")
    tools = ["Read", "Write", "Edit", "Glob", "Grep", "Bash", "mcp__demo"]
    run(_provider(allowed_tools=tools).complete(_request(tmp_path, "Say done")))

    assert marker.read_text() == "started"


def test_claudes_npm_root_question_is_answered_without_starting_npm(tmp_path, monkeypatch):
    """Claude Code's sandbox runs `npm root -g` at every start (node, about 0.2 s): aca puts
    an npm first on claude's PATH that answers it from npm's own answer, asked once."""
    from aca_flows.providers.claude_code_sandbox import npm_root_answered
    from aca_flows.settings import SandboxSection

    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "npm-calls"
    fake_npm = tools / "npm"
    fake_npm.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        'if [ "$*" = "root -g" ]; then echo /opt/npm/lib/node_modules; fi\n'
    )
    fake_npm.chmod(0o755)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")

    provider = _provider()
    provider.sandbox = SandboxSection(mode="bwrap")
    options = provider.build_options(_request(tmp_path, "hi"))
    path = options.env["PATH"]
    assert path.endswith(f"{tools}:/usr/bin:/bin") and path != f"{tools}:/usr/bin:/bin"
    # claude runs that npm outside its sandbox: no command inside may rewrite it.
    shim = path.split(":")[0]
    assert shim in options.sandbox["filesystem"]["denyWrite"]

    def npm(*args: str) -> str:
        done = subprocess.run(["sh", "-c", f"npm {' '.join(args)}"], env={"PATH": path},
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout

    assert npm("root", "-g") == npm("root", "-g") == "/opt/npm/lib/node_modules\n"
    npm("install", "left-pad")  # anything else is npm's own
    assert calls.read_text().splitlines() == ["root -g", "install left-pad"]
    # Without npm on the PATH there is nothing to answer; with the sandbox off, nothing asks.
    assert npm_root_answered({"PATH": str(tmp_path / "nowhere")}) is None
    provider.sandbox = SandboxSection(mode="off")
    assert provider.build_options(_request(tmp_path, "hi")).env.get("PATH") is None


def test_file_tools_are_approved_in_the_worktree_only_and_read_nothing_outside(tmp_path):
    # Claude Code's sandbox confines Bash alone: its file tools run in the claude process.
    worktree = tmp_path / "repo [1]" / "wt*"
    worktree.mkdir(parents=True)
    provider = _provider(allowed_tools=["Read", "Write", "Edit", "Bash", "Edit(docs/**)"])
    provider.sandbox = SandboxSection(mode="bwrap")
    options = provider.build_options(_request(worktree, "hi"))
    # Permission paths are gitignore patterns: the folder's own [ ] * are escaped.
    escaped = str(worktree.resolve()).translate({ord(c): "\\" + c for c in "[]*"})
    scope = f"Edit(/{escaped}/**)"
    # A bare Write or Edit is approved inside the worktree only; a rule the user scoped stays.
    assert options.allowed_tools == ["Read", scope, "Bash", "Edit(docs/**)"]
    assert options.tools == ["Read", "Write", "Edit", "Bash"]  # still offered
    assert json.loads(options.settings) == {
        "permissions": {"blockReadsOutsideWorkingDirectories": True}
    }
    # With the sandbox off the user chose Claude Code's own rules: nothing is changed.
    provider.sandbox = SandboxSection(mode="off")
    options = provider.build_options(_request(worktree, "hi"))
    assert options.allowed_tools == ["Read", "Write", "Edit", "Bash", "Edit(docs/**)"]
    assert options.settings is None


def test_a_timeout_set_for_claude_code_bounds_each_of_its_api_requests(tmp_path):
    def options_with(section: dict):
        config = AcaConfig.model_validate({"providers": {"claude-code": section}})
        return get_provider("claude-code", config).build_options(_request(tmp_path, "hi"))

    assert options_with({"timeout_seconds": 90}).env["API_TIMEOUT_MS"] == "90000"
    assert "API_TIMEOUT_MS" not in options_with({}).env  # Claude Code's own default


def test_a_rate_limit_claude_code_reports_is_waited_out_not_tried_again_at_once():
    from aca_flows.errors import TransientProviderError
    from aca_flows.providers.claude_code_results import RATE_LIMIT_WAIT_SECONDS, result_error

    limited = SimpleNamespace(subtype="success", num_turns=1, is_error=True, api_error_status=429)
    error = result_error(limited, "API Error: Request rejected (429) · rate_limit_error")
    assert isinstance(error, TransientProviderError)
    assert error.retry_after == RATE_LIMIT_WAIT_SECONDS == 30
    overloaded = SimpleNamespace(**{**vars(limited), "api_error_status": 529})
    assert result_error(overloaded, "API Error: 529 overloaded").retry_after is None


def test_a_claude_that_crashes_is_reported_once_by_aca_not_by_the_sdk_too(
    monkeypatch, tmp_path, caplog
):
    from aca_flows.errors import TransientProviderError

    crashing = tmp_path / "claude"
    # It reads its first message, as claude does, then dies.
    crashing.write_text("#!/bin/sh\nread line\necho 'claude crashed: segfault' >&2\nexit 139\n")
    crashing.chmod(0o755)
    monkeypatch.setenv("ACA_CLAUDE_CLI", str(crashing))
    with pytest.raises(TransientProviderError) as caught:
        run(_provider().complete(_request(tmp_path, "hi")))
    assert "claude crashed: segfault" in str(caught.value)
    assert "Fatal error in message reader" not in caplog.text
    # A resumed call (a fix attempt's "the check failed") that died before it started goes
    # again as it was: "go on with the task" in its place lost what the check said.
    fix = _request(tmp_path, "The check failed: fix it.", resume="0b6c7f6e-session")
    with pytest.raises(TransientProviderError) as caught:
        run(_provider().complete(fix))
    assert caught.value.retry_request is None


def test_a_claude_killed_after_its_success_result_answers_with_that_result(
    claude_env, llm_server, monkeypatch, tmp_path
):
    # A claude killed as it shut down (exit 137) after a success result: the run was taken as
    # failed, its result thrown away and the run paid again.
    dying = tmp_path / "claude"
    dying.write_text(f'#!/bin/sh\n"{bundled_claude_cli()}" "$@"\nexit 137\n')
    dying.chmod(0o755)
    monkeypatch.setenv("ACA_CLAUDE_CLI", str(dying))
    llm_server.anthropic.enqueue(text="All done.")
    events: list[ProviderEvent] = []

    response = run(_provider().complete(_request(tmp_path, "hi"), on_event=events.append))

    assert response.text == "All done." and response.cost_usd > 0
    assert len(llm_server.anthropic.requests) == 1
    said = [e.data["text"] for e in events if e.kind == "stderr"]
    assert any("exited after its result" in line and "137" in line for line in said), said


@pytest.mark.parametrize(
    ("said", "status", "wait"),
    [("Error: rate limited", 429, 30.0), ("Error: Overloaded", 529, None)],
)
def test_an_error_answer_that_names_its_status_in_words_is_waited_out_as_that_status(
    said, status, wait
):
    # "Error: rate limited" was taken for a failed connection: tried again after 1.4 s, and
    # the task failed once its retries ran out, where a 429 stops the run, resumable.
    answered = SimpleNamespace(
        subtype="success", num_turns=2, is_error=False, api_error_status=None
    )

    error = result_error(answered, said, tools_used=1)

    assert isinstance(error, TransientProviderError) and error.status_code == status
    assert error.retry_after == wait
