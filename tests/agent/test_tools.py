"""The tools: confined to the worktree, refusals as results, edits that must match once."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from aca_flows.agent.tools import TaskTools, ToolRefused, resolve_inside
from aca_flows.sandbox import Sandbox
from aca_flows.settings import AgentSection, SandboxSection
from tests.fakes.scripted_provider import tool_use


@pytest.fixture
def tools(tmp_path):
    root = tmp_path / "wt"
    root.mkdir()
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("a = 1\nb = 1\nprint(a)\n")
    (root / "README.md").write_text("# demo\n")
    (root / ".git").write_text("gitdir: elsewhere\n")
    return TaskTools(root, AgentSection(command_timeout_seconds=5, command_output_limit_bytes=1000))


def call(tools: TaskTools, name: str, **arguments):
    return asyncio.run(tools.call(tool_use(name, **arguments)))


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "~/x", "../x", "src/../../x", ".git", ".git/config", ""]
)
def test_paths_outside_the_worktree_are_refused(tools, path):
    with pytest.raises(ToolRefused):
        resolve_inside(tools.root, path)


def test_paths_inside_resolve_even_through_dotdot(tools):
    assert resolve_inside(tools.root, "src/../README.md") == (tools.root / "README.md").resolve()


def test_a_symlink_inside_pointing_inside_is_allowed(tools):
    (tools.root / "alias.py").symlink_to(tools.root / "src" / "app.py")
    assert call(tools, "read_file", path="alias.py").content.startswith("a = 1")


@pytest.mark.parametrize("tool", ["read_file", "write_file", "edit_file"])
def test_a_symlink_loop_is_a_refusal_the_model_reads_not_the_task_s_end(tools, tool):
    # Path.resolve raised RuntimeError, which failed the task (with the path, which a model
    # could make of a secret, in the task run's state).
    (tools.root / "loop").symlink_to("loop")
    arguments = {"content": "x"} if tool == "write_file" else {}
    if tool == "edit_file":
        arguments = {"old_string": "a", "new_string": "b"}
    result = call(tools, tool, path="loop", **arguments)
    assert result.is_error and "'loop' cannot be resolved" in result.content


def test_edit_file_replaces_a_string_that_occurs_once(tools):
    result = call(
        tools, "edit_file", path="src/app.py", old_string="print(a)", new_string="print(b)"
    )
    assert not result.is_error
    assert (tools.root / "src" / "app.py").read_text() == "a = 1\nb = 1\nprint(b)\n"


@pytest.mark.parametrize(("old", "says"), [("= 1", "occurs 2 times"), ("zzz", "does not occur")])
def test_edit_file_refuses_ambiguous_or_missing_text(tools, old, says):
    result = call(tools, "edit_file", path="src/app.py", old_string=old, new_string="x")
    assert result.is_error and says in result.content
    assert (tools.root / "src" / "app.py").read_text() == "a = 1\nb = 1\nprint(a)\n"


def test_write_file_creates_folders(tools):
    assert not call(tools, "write_file", path="pkg/sub/mod.py", content="x = 2\n").is_error
    assert (tools.root / "pkg" / "sub" / "mod.py").read_text() == "x = 2\n"


def test_list_files_globs_and_hides_git(tools):
    assert call(tools, "list_files").content.splitlines() == ["README.md", "src/app.py"]
    assert call(tools, "list_files", pattern="**/*.py").content == "src/app.py"


@pytest.mark.parametrize(
    ("pattern", "listed"),
    [
        ("**/*", ["README.md", "docs/a/b/deep.md", "src/app.py", "src/lib/util.py"]),
        ("*", ["README.md"]),
        ("*.md", ["README.md"]),
        ("**/*.md", ["README.md", "docs/a/b/deep.md"]),
        ("**/**/*.md", ["README.md", "docs/a/b/deep.md"]),
        ("src/*.py", ["src/app.py"]),
        ("src/**", ["src/app.py", "src/lib/util.py"]),
        ("src/**/*.py", ["src/app.py", "src/lib/util.py"]),
        ("docs/*/b/*.md", ["docs/a/b/deep.md"]),
        ("src/[a-c]pp.py", ["src/app.py"]),
        ("src/[!a]pp.py", []),
        ("?EADME.md", ["README.md"]),
    ],
)
def test_list_files_matches_as_a_glob_does(tools, pattern, listed):
    (tools.root / "src" / "lib").mkdir()
    (tools.root / "src" / "lib" / "util.py").write_text("u = 1\n")
    (tools.root / "docs" / "a" / "b").mkdir(parents=True)
    (tools.root / "docs" / "a" / "b" / "deep.md").write_text("# deep\n")
    shown = call(tools, "list_files", pattern=pattern).content
    assert shown.splitlines() == listed if listed else shown.startswith("no files match")


def test_links_to_folders_make_no_glob_take_longer(tools):
    # `ln -s . a; ln -s . b` made `*/*/.../x` cost 2**n in aca's own process, holding every
    # task of the run (Path.glob followed them; n = 20 took minutes).
    (tools.root / "a").symlink_to(".")
    (tools.root / "b").symlink_to(".")
    (tools.root / "out").symlink_to("/etc")
    (tools.root / "passwd").symlink_to("/etc/passwd")
    started = time.monotonic()

    result = call(tools, "list_files", pattern="*/" * 24 + "zz")
    everything = call(tools, "list_files").content.splitlines()

    assert time.monotonic() - started < 5 and "no files match" in result.content
    assert everything == ["README.md", "src/app.py"]  # no link out, no path through a link


def test_no_pattern_backtracks_without_end(tools):
    # Matched as one regular expression, `*a` ten times took 22 s on one 40-letter name, and
    # `**/a/` eight times 79 s on a path 60 folders deep: the tool call held its task.
    (tools.root / ("a" * 39 + "b")).write_text("x\n")
    deep = tools.root.joinpath(*["a"] * 60)
    deep.mkdir(parents=True)
    (deep / "f").write_text("x\n")
    started = time.monotonic()

    names = call(tools, "list_files", pattern="*a" * 10 + "c")
    paths = call(tools, "list_files", pattern="**/a/" * 8 + "zz")

    assert time.monotonic() - started < 5
    assert "no files match" in names.content and "no files match" in paths.content
    assert call(tools, "list_files", pattern="**/a/**/f").content == "/".join(["a"] * 60 + ["f"])


def test_search_finds_lines_by_regex(tools):
    assert call(tools, "search", pattern=r"^b =").content == "src/app.py:2: b = 1"
    assert call(tools, "search", pattern="nothing here").content.startswith("no matches")
    assert call(tools, "search", pattern="(").is_error


def test_a_large_file_is_never_read_whole_into_acas_memory(tools, monkeypatch):
    # A 1 GB file the agent wrote took 2.7 GB of aca's own memory to read_file (shown capped
    # after it was read whole), and search and edit_file read it whole too.
    import tracemalloc

    monkeypatch.setattr("aca_flows.agent.tools.MAX_WHOLE_FILE_BYTES", 1_000_000)
    big = tools.root / "big.txt"
    big.write_text("needle\n" + "x" * 8_000_000 + "\n")
    tracemalloc.start()
    try:
        shown = call(tools, "read_file", path="big.txt").content
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shown.startswith("needle\nxxx")
    assert shown.endswith("\n[... 7999008 more bytes not shown]")
    assert peak < 1_000_000  # the limit shown, not the file's 8 MB
    assert call(tools, "search", pattern="needle").content.startswith("no matches")
    refused = call(tools, "edit_file", path="big.txt", old_string="needle", new_string="pin")
    assert refused.is_error
    assert "big.txt has 8,000,008 bytes, more than edit_file rewrites (1,000,000)" in (
        refused.content
    )


def test_missing_files_unknown_tools_and_bad_arguments_are_results(tools):
    assert call(tools, "read_file", path="nope.py").is_error
    assert "unknown tool" in call(tools, "delete_everything").content
    assert call(tools, "write_file", path="a.txt").is_error  # content missing


def test_a_write_refused_for_its_arguments_leaves_the_file_as_it_was(tools):
    # A JSON file's text sent as an object: the file was emptied before the write failed, the
    # model was told it was refused, and the empty file was committed ("completed", exit 0).
    config = tools.root / "config.json"
    config.write_text('{"name": "demo", "version": 1}\n')
    for content in ({"name": "demo", "version": 2}, ["line one", "line two"], None):
        result = call(tools, "write_file", path="config.json", content=content)
        assert result.is_error, content
        assert config.read_text() == '{"name": "demo", "version": 1}\n'
    said = call(tools, "write_file", path="new.json", content={"a": 1}).content
    assert said == (
        "bad arguments for write_file: content must be a string (the file's text, as one "
        "string), not an object"
    )
    assert not (tools.root / "new.json").exists()
    assert call(tools, "edit_file", path="README.md", old_string=1, new_string="x").is_error
    # A command or a question that is not text is told so, not run as "empty" or asked as
    # "None"; a summary is taken as it comes, as ever.
    assert (
        "command must be a string, not an array"
        in call(tools, "run_command", command=["ls", "-l"]).content
    )
    assert call(tools, "ask_human", question=None).content.endswith("must be a string, not null")
    assert not call(tools, "finish", summary=["did a", "did b"]).is_error


def test_edits_and_writes_keep_a_files_crlf_line_endings(tools):
    # read_file shows CRLF lines with LF: a one-line edit made every line of the file LF,
    # a commit changing all of it, and the agent had no way to keep them.
    script = tools.root / "app.bat"
    script.write_bytes(b"@echo off\r\necho one\r\necho two\r\n")
    assert call(tools, "read_file", path="app.bat").content == "@echo off\necho one\necho two\n"

    edit = call(tools, "edit_file", path="app.bat", old_string="one\necho two", new_string="1\n")
    assert not edit.is_error, edit.content
    assert script.read_bytes() == b"@echo off\r\necho 1\r\n\r\n"
    # A one-line anchor and lines added after it: the added lines end as the file's do.
    assert not call(
        tools, "edit_file", path="app.bat", old_string="echo 1", new_string="a\nb"
    ).is_error
    assert script.read_bytes() == b"@echo off\r\na\r\nb\r\n\r\n"
    call(tools, "write_file", path="app.bat", content="@echo off\necho three\n")
    assert script.read_bytes() == b"@echo off\r\necho three\r\n"
    old_mac = tools.root / "old.txt"  # lone CR lines: editable, and kept
    old_mac.write_bytes(b"one\rtwo\r")
    assert not call(
        tools, "edit_file", path="old.txt", old_string="one\ntwo", new_string="1\n2"
    ).is_error
    assert old_mac.read_bytes() == b"1\r2\r"
    # One stray CR (or CRLF) in an LF file: the lines an edit adds stay LF, as given.
    script_sh = tools.root / "run.sh"
    script_sh.write_bytes(b"echo 'a\rb'\necho one\n")
    call(tools, "edit_file", path="run.sh", old_string="echo one", new_string="echo 2\necho 3")
    assert script_sh.read_bytes() == b"echo 'a\rb'\necho 2\necho 3\n"
    call(tools, "write_file", path="unix.sh", content="echo a\n")  # a new file: as given
    assert (tools.root / "unix.sh").read_bytes() == b"echo a\n"


def test_arguments_a_provider_could_not_read_are_named_to_the_model_as_such(tools):
    # openai_api/ollama_api hand back arguments that are not JSON unparsed: the model is told
    # what to fix, not about a Python keyword argument.
    from aca_flows.flows.log_lines import describe_record

    result = call(tools, "write_file", _unparsed_arguments='{"path": "a.txt", "content": "x')
    assert result.is_error
    assert result.content == (
        'the arguments of write_file were not a JSON object (\'{"path": "a.txt", '
        '"content": "x\'): call it again with its arguments as one JSON object'
    )
    record = {"kind": "tool_call", "name": "write_file", "arguments": {"_unparsed_arguments": "{"}}
    assert describe_record(record) == "write_file (arguments not a JSON object)"


def test_run_command_runs_in_the_worktree_with_only_allowed_variables(tools, monkeypatch):
    monkeypatch.setenv("MY_API_KEY", "sk-123")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp")
    monkeypatch.setenv("DB_PASSWORD", "pw")
    monkeypatch.setenv("HARMLESS", "visible")
    monkeypatch.setenv("UNLISTED", "hidden-value")
    tools.sandbox = Sandbox.for_worktree(tools.root, SandboxSection(env=["HARMLESS"]))
    result = call(tools, "run_command", command="pwd; env")
    assert result.content.startswith("exit code 0")
    assert str(tools.root.resolve()) in result.content
    assert "HARMLESS=visible" in result.content and "HOME=/tmp/home" in result.content
    assert "hidden-value" not in result.content
    for secret in ("sk-123", "ghp", "pw\n"):
        assert secret not in result.content


def test_run_command_reports_failure_timeout_and_caps_output(tools):
    assert call(tools, "run_command", command="exit 4").content.startswith("exit code 4")
    tools.settings = AgentSection(command_timeout_seconds=0.5, command_output_limit_bytes=1000)
    slow = call(tools, "run_command", command="sleep 5")
    assert "timed out" in slow.content
    loud = call(tools, "run_command", command="yes line | head -c 100000; echo THE-END")
    assert "bytes omitted" in loud.content and loud.content.rstrip().endswith("THE-END")
    assert len(loud.content) < 2000


def test_finish_and_proposed_subtasks_are_kept(tools):
    call(tools, "propose_subtasks", subtasks=[{"id": "a", "title": "A"}])
    call(tools, "propose_subtasks", subtasks='[{"id": "b", "title": "B", "dependencies": ["a"]}]')
    bad = call(
        tools, "propose_subtasks", subtasks=[{"id": "c", "title": "C", "dependencies": ["x"]}]
    )
    assert bad.is_error and "unknown task 'x'" in bad.content
    call(tools, "finish", summary=" did it ")
    assert tools.finished and tools.summary == "did it"
    assert [p.id for p in tools.proposed_subtasks] == ["a", "b"]


def test_a_proposal_that_could_never_start_is_refused_so_the_agent_can_correct_it(tmp_path):
    from aca_flows.agent.subtasks import placement_problems
    from aca_flows.plan.models import ExecutionPlan, Task

    plan = ExecutionPlan(
        name="p",
        tasks=[Task(id="api", title="API", status="in_progress"), Task(id="setup", title="S")],
    )
    tools = TaskTools(
        tmp_path,
        AgentSection(),
        existing_task_ids={"api", "setup"},
        plan_check=lambda proposals: placement_problems(plan, "api", proposals),
    )
    refused = call(
        tools, "propose_subtasks", subtasks=[{"id": "t", "title": "T", "dependencies": ["api"]}]
    )
    assert refused.is_error and "can never start: api.t -> api -> api.t" in refused.content
    ok = call(
        tools, "propose_subtasks", subtasks=[{"id": "t", "title": "T", "dependencies": ["setup"]}]
    )
    assert not ok.is_error and [p.id for p in tools.proposed_subtasks] == ["t"]
    assert plan.task("api").children == []  # checking changed nothing


def test_run_command_tells_the_model_whether_it_has_network(tools):
    def described() -> str:
        return next(d.description for d in tools.definitions() if d.name == "run_command")

    assert "the network is off" in described() and "sandbox" in described()
    tools.sandbox = Sandbox.for_worktree(tools.root, network=True)
    assert "the network is on" in described()


# A hostile model must not be able to stop the run: every tool call ends, as a result.
@pytest.mark.timeout(30)
def test_writing_to_a_fifo_or_a_device_is_refused_without_waiting(tools):
    import os

    os.mkfifo(tools.root / "pipe")
    for name, arguments in [
        ("write_file", {"path": "pipe", "content": "x"}),
        ("edit_file", {"path": "pipe", "old_string": "a", "new_string": "b"}),
    ]:
        result = call(tools, name, **arguments)
        assert result.is_error, result.content
    assert call(tools, "write_file", path="src/app.py", content="c = 3\n").is_error is False
    assert (tools.root / "src" / "app.py").read_text() == "c = 3\n"  # truncated, then written


def test_a_nul_byte_in_an_argument_is_a_result_the_model_can_correct(tools):
    for name, arguments in [
        ("write_file", {"path": "a\x00b.txt", "content": "x"}),
        ("read_file", {"path": "a\x00b.txt"}),
        ("run_command", {"command": "echo hi\x00there"}),
    ]:
        result = call(tools, name, **arguments)
        assert result.is_error and "null byte" in result.content, result.content


@pytest.mark.timeout(60)
def test_a_search_that_backtracks_without_end_is_stopped(tools, monkeypatch):
    import time

    import aca_flows.agent.tools as tools_module

    monkeypatch.setattr(tools_module, "SEARCH_SECONDS", 0.5)
    (tools.root / "slow.txt").write_text("a" * 40 + "!\n")
    started = time.monotonic()
    result = call(tools, "search", pattern="(a|aa)+$", glob="slow.txt")
    assert result.is_error and "simplify it" in result.content, result.content
    assert time.monotonic() - started < 5
    # An ordinary search is unchanged.
    assert call(tools, "search", pattern=r"print\(", glob="src/*.py").content == (
        "src/app.py:3: print(a)"
    )


def test_a_file_name_that_is_not_utf8_reaches_the_model_as_json_can_take_it(tools):
    # A legacy repository may hold one; the provider sends every tool result as JSON.
    (tools.root / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"x\n")
    listed = call(tools, "list_files")
    found = call(tools, "search", pattern="^x$")

    assert "caf\ufffd.txt" in listed.content.splitlines()
    assert found.content == "caf\ufffd.txt:1: x"
    assert "caf\ufffd.txt" in listed.model_dump_json() + found.model_dump_json()
