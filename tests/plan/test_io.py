"""Dumping and loading plans: exact round trips, and bad files refused with clear messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aca_flows.errors import PlanValidationError, TaskFileError
from aca_flows.plan import load_execution_plan, load_task_file, load_task_text, plan_to_text
from aca_flows.plan.source import MAX_FILE_BYTES
from tests.fixtures import COMPAT

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted(COMPAT.glob("*/*.md")) + sorted((ROOT / "tasks").rglob("*.md"))


@pytest.mark.parametrize("source", CORPUS, ids=lambda p: p.name)
@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_dump_and_load_round_trip_exactly(source, suffix, tmp_path):
    plan = load_task_file(source)
    dumped = tmp_path / f"plan{suffix}"
    dumped.write_text(plan_to_text(plan, suffix), encoding="utf-8")
    assert load_execution_plan(dumped) == plan
    # A dumped plan is also accepted where a task file is expected.
    assert load_task_file(dumped) == plan


def test_edited_plan_is_revalidated(tmp_path):
    plan = load_task_file(ROOT / "tasks" / "examples" / "hello.md")
    data = json.loads(plan_to_text(plan, ".json"))
    data["tasks"][1]["dependencies"] = ["nope"]
    edited = tmp_path / "plan.json"
    edited.write_text(json.dumps(data))
    with pytest.raises(PlanValidationError, match="unknown task 'nope'"):
        load_execution_plan(edited)


@pytest.mark.parametrize("state", ["in_progress", "blocked", "failed"])
def test_an_edited_plan_whose_task_is_in_a_run_state_is_refused_with_the_fix(tmp_path, state):
    # A run would wait on an in_progress task for ever and never run it (it stalled, blaming
    # the dependencies), while the dry run passed the plan.
    plan = load_task_file(ROOT / "tasks" / "examples" / "hello.md")
    data = json.loads(plan_to_text(plan, ".json"))
    data["tasks"][1]["status"] = {"state": state}
    if state != "in_progress":
        data["tasks"][1]["status"]["reason"] = "edited"
    edited = tmp_path / "plan.json"
    edited.write_text(json.dumps(data))
    task_id = data["tasks"][1]["id"]
    with pytest.raises(PlanValidationError, match=f"task '{task_id}' is {state}: .*pending"):
        load_execution_plan(edited)
    data["tasks"][1]["status"] = {"state": "completed"}  # passed over: still accepted
    edited.write_text(json.dumps(data))
    assert load_execution_plan(edited).tasks[1].status.state == "completed"


def test_an_edited_plan_whose_group_is_completed_over_pending_subtasks_is_refused(tmp_path):
    """Before, the dry run passed it and the run failed with a traceback ("the flow run of
    group ... ended early"), leaving a failed session and its branch."""
    plan = load_task_file(ROOT / "tasks" / "examples" / "hello.md")
    data = json.loads(plan_to_text(plan, ".json"))
    group = next(t for t in data["tasks"] if t["children"])
    group["status"] = {"state": "completed"}
    edited = tmp_path / "plan.json"
    edited.write_text(json.dumps(data))
    with pytest.raises(PlanValidationError, match=f"group '{group['id']}' is completed but"):
        load_execution_plan(edited)
    for task in data["tasks"]:
        if task["id"] in group["children"]:
            task["status"] = {"state": "completed"}
    edited.write_text(json.dumps(data))
    assert load_execution_plan(edited).task(group["id"]).status.state == "completed"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.md", b"  \n\n", "is empty"),
        ("bin.md", b"\x00\x01\x02binary", "looks binary"),
        ("latin.md", "- caf\xe9\n".encode("latin-1"), "not valid UTF-8"),
        ("broken16.md", b"\xff\xfe- \x00\xd8", "starts as UTF-16 but is not valid UTF-16"),
        ("utf32.md", "- a\n".encode("utf-32"), "looks binary"),  # not read as UTF-16
        ("bad.json", b'{"schema_version": 1,\n  "name": }', "invalid JSON at line 2, column"),
        (
            "list.json",
            b"[1, 2]",
            "must be a JSON object .{...}, as --dump-plan writes it., not an array",
        ),
        ("null.json", b"null", "must be a JSON object .{...}, as --dump-plan writes it., not null"),
        ("old.json", b'{"schema_version": 7, "name": "x"}', "schema_version 7 is not supported"),
        # Edited by hand: not "'1' is not supported (this aca reads 1)", nor "None is not ...".
        ("text.json", b'{"schema_version": "1", "name": "x"}', '"1" is not the whole number 1'),
        ("float.json", b'{"schema_version": 1.0, "name": "x"}', "1.0 is not the whole number 1"),
        ("bool.json", b'{"schema_version": true, "name": "x"}', "true is not the whole number 1"),
        ("bare.json", b"{}", "plan has no schema_version"),
        # Not only "needs a reason": with one, it was "a plan starts its tasks pending".
        (
            "skipped.json",
            b'{"schema_version": 1, "name": "x", "tasks": [{"id": "a", "title": "A", '
            b'"status": {"state": "skipped", "reason": null}}]}',
            'needs a reason; but a plan to run starts its tasks "pending"',
        ),
        # Not "dump the plan again with this version", which its task file can do, not it.
        (
            "execplan.json",
            b'{"task_specs": [], "execution_mode": "Intelligent"}',
            r"an execution plan of the original aca \(task_specs\).*`aca run TASKS.md`",
        ),
        # A run of it made a session and a branch, did nothing, and exited 0.
        ("none.json", b'{"schema_version": 1, "name": "x", "tasks": []}', "plan has no tasks"),
        ("plan.yaml", b"tasks: []", "unknown task file type '.yaml'"),
        # Tracebacks before: a RecursionError of the JSON decoder, an int's ValueError.
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply for aca to read"),
        ("long.json", b'{"schema_version": 1' + b"0" * 5000 + b"}", "a number too long"),
    ],
)
def test_bad_files_are_explained(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TaskFileError, match=message):
        load_task_file(path)


def test_a_file_without_read_permission_is_named_not_a_traceback(tmp_path, monkeypatch):
    # chmod 000 does not stop root, who runs these tests in containers: the refusal is faked.
    path = tmp_path / "tasks.md"
    path.write_text("- a {#a}\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(TaskFileError, match="cannot be read \\(Permission denied\\); check its"):
        load_task_file(path)


def test_file_over_5_mb_is_refused(tmp_path):
    path = tmp_path / "huge.md"
    path.write_text("- a\n" * (MAX_FILE_BYTES // 4 + 1))
    with pytest.raises(TaskFileError, match="over the 5 MB limit"):
        load_task_file(path)


def test_execution_plan_flag_refuses_task_files(tmp_path):
    path = tmp_path / "tasks.toml"
    path.write_text('[[tasks]]\ntitle = "A"\n')
    with pytest.raises(TaskFileError, match="not an execution plan"):
        load_execution_plan(path)
    markdown = tmp_path / "tasks.md"
    markdown.write_text("- A\n")
    with pytest.raises(TaskFileError, match="use --task-file"):
        load_execution_plan(markdown)


TOML_TEXT = """\
# a TOML task file, as a program writes it
[plan]
name = "from toml"

[[tasks]]
id = "a"
title = "write a.txt"

[[tasks]]
title = "write b.txt"
depends_on = ["a"]
"""

MARKDOWN_TEXT = """\
# From markdown

- write a.txt {#a}
- write b.txt {depends_on=a}
"""


@pytest.mark.parametrize(
    ("text", "name"), [(TOML_TEXT, "from toml"), (MARKDOWN_TEXT, "From markdown")]
)
def test_task_text_is_read_as_toml_or_markdown_as_its_first_line_says(tmp_path, text, name):
    plan = load_task_text(text, tmp_path)
    assert plan.name == name
    assert [(t.id, t.dependencies) for t in plan.tasks] == [("a", []), ("write-b-txt", ["a"])]
    # The same plan as the same text saved to a file gives.
    suffix = ".toml" if name == "from toml" else ".md"
    saved = tmp_path / f"tasks{suffix}"
    saved.write_text(text)
    assert load_task_text(text, tmp_path).model_dump(exclude={"tasks"}) == load_task_file(
        saved
    ).model_dump(exclude={"tasks"})
    # And as a file without a suffix (`TODO`), which the original aca read as a task list.
    bare = tmp_path / "TODO"
    bare.write_text(text)
    assert load_task_file(bare) == load_task_text(text, tmp_path)


def test_task_text_reads_referenced_files_from_the_base_folder_only(tmp_path):
    (tmp_path / "spec.md").write_text("the spec")
    plan = load_task_text("- write a.txt -> spec.md\n", tmp_path)
    assert plan.tasks[0].metadata.file_refs[0].content == "the spec"
    with pytest.raises(TaskFileError, match="points outside"):
        load_task_text("- write it -> ../outside.md\n", tmp_path)


def test_task_text_format_can_be_named_and_bad_text_is_explained(tmp_path):
    # Told it is TOML, a Markdown list is a TOML syntax error, named as such.
    with pytest.raises(TaskFileError, match="plan_text: invalid TOML"):
        load_task_text(MARKDOWN_TEXT, tmp_path, "toml")
    # A TOML start with broken syntax is reported as TOML, not run as a one-task Markdown plan.
    with pytest.raises(TaskFileError, match="plan_text: invalid TOML"):
        load_task_text('[[tasks]]\ntitle = "x\n', tmp_path)
    with pytest.raises(TaskFileError, match="plan_format 'yaml' is not known"):
        load_task_text(TOML_TEXT, tmp_path, "yaml")
    with pytest.raises(TaskFileError, match="plan_text is empty"):
        load_task_text(" \n", tmp_path)
    with pytest.raises(PlanValidationError, match="unknown task 'zz'"):
        load_task_text("- write a.txt {#a depends_on=zz}\n", tmp_path)


def test_a_task_list_without_a_suffix_read_as_toml_says_how_to_have_it_read_as_markdown(
    tmp_path,
):
    path = tmp_path / "TODO"
    path.write_text("Goal = ship v2 by friday\n- [ ] write a.txt\n")
    with pytest.raises(TaskFileError, match="invalid TOML.*a Markdown task list is read as one"):
        load_task_file(path)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_task_file_windows_saved_as_unicode_is_read(tmp_path, encoding):
    # PowerShell's `>` and Notepad's "Unicode" write UTF-16 with a byte order mark: it was
    # refused as binary ("it contains NUL bytes").
    path = tmp_path / "tasks.md"
    text = "- [ ] Write a café guide {#guide}\n- [ ] Test it {#test depends_on=guide}\n"
    bom = b"\xfe\xff" if encoding == "utf-16-be" else b""
    path.write_bytes(bom + text.encode(encoding))

    plan = load_task_file(path)

    assert [t.id for t in plan.tasks] == ["guide", "test"]
    assert plan.task("guide").title == "Write a café guide"


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("t.toml", '[[tasks]]\nid = "t"\ntitle = "fix \\u0000 bug"\n', "task 't': its title"),
        (
            "v.toml",
            '[[tasks]]\nid = "t"\ntitle = "fix"\nverify = "ls \\u0000"\n',
            "task 't': its verify",
        ),
        (
            "s.toml",
            '[[setup_commands]]\nname = "s"\ncommand = "make \\u0000"\n[[tasks]]\ntitle = "fix"\n',
            "setup command 's'",
        ),
        (
            "p.json",
            '{"schema_version": 1, "name": "x", "tasks": [{"id": "t", "title": "a", '
            '"verify": "ls \\u0000"}]}',
            "task 't': its verify",
        ),
    ],
)
def test_a_nul_character_where_a_command_or_commit_takes_it_is_refused_at_load(
    tmp_path, name, text, said
):
    # An escape held one: the plan loaded, the paid task failed at its commit or command
    # ("embedded null byte"), and every resume paid and failed again.
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PlanValidationError) as refused:
        load_task_file(path)
    assert f"{said} holds a NUL character" in str(refused.value)


def test_a_session_recorded_with_a_nul_in_its_plan_is_still_read(tmp_path):
    # The check is the loader's: a session an older aca recorded from such a plan was refused
    # whole ("the journal looks edited; delete it"), its landed work unreadable.
    from aca_flows.plan.models import ExecutionPlan, Task
    from aca_flows.session.reading import load_session
    from aca_flows.session.store import SessionStore

    plan = ExecutionPlan(name="x", tasks=[Task(id="t", title="fix \x00 bug", verify="ls \x00")])
    with SessionStore.create(tmp_path, plan, provider="replay") as store:
        pass
    assert load_session(tmp_path, store.session_id).plan.task("t").title == "fix \x00 bug"
