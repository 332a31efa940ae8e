"""TOML task files: the documented schema, nested subtasks, errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aca_flows.errors import PlanValidationError, TaskFileError
from aca_flows.plan import load_task_file

EXAMPLES = Path(__file__).resolve().parents[2] / "tasks" / "examples"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tasks.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_example_loads_with_every_feature():
    plan = load_task_file(EXAMPLES / "refactor.toml")
    assert plan.name == "Tidy the utils package"
    assert plan.max_concurrent == 2 and plan.verify == ".venv/bin/python -m pytest -q"
    assert plan.setup_commands[0].command == (
        "python -m venv --system-site-packages .venv"
        " && .venv/bin/pip install -q --no-index --no-build-isolation -e ."
    )
    assert plan.setup_commands[0].network is False
    assert plan.context_hints == ["Python 3.11 project; tests run with `python -m pytest -q`."]
    inventory = plan.task("inventory")
    assert inventory.metadata.priority == "high"
    assert "usage example" in inventory.metadata.file_refs[0].content
    split = plan.task("split")
    assert split.dependencies == ["inventory"]
    assert split.children == ["split-strings", "split-files"]
    assert plan.task("split-files").parent_id == "split"


def test_ids_default_to_slugs_of_titles(tmp_path):
    plan = load_task_file(
        write(tmp_path, '[[tasks]]\ntitle = "Fix the build"\n[[tasks]]\ntitle = "Fix the build"\n')
    )
    assert [t.id for t in plan.tasks] == ["fix-the-build", "fix-the-build-2"]
    assert plan.name == "tasks"


def test_done_tasks_load_completed(tmp_path):
    plan = load_task_file(write(tmp_path, '[[tasks]]\ntitle = "Old"\ndone = true\n'))
    assert plan.tasks[0].status.state == "completed"
    # A done group with a subtask to do loaded completed, shown `[x]` beside its pending
    # child (Markdown's `- [x] parent` / `  - [ ] child` loads pending since fc0f532).
    text = '[[tasks]]\ntitle = "G"\ndone = true\n[[tasks.subtasks]]\ntitle = "Child"\n'
    plan = load_task_file(write(tmp_path, text))
    assert [t.status.state for t in plan.tasks] == ["pending", "pending"]


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(TaskFileError, match=r"unknown key 'tasks\[0\].depend_on'"):
        load_task_file(write(tmp_path, '[[tasks]]\ntitle = "A"\ndepend_on = ["b"]\n'))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(TaskFileError, match=r"'tasks\[0\].subtasks\[0\].priority'"):
        load_task_file(
            write(
                tmp_path,
                '[[tasks]]\ntitle = "A"\n[[tasks.subtasks]]\ntitle = "B"\npriority = "asap"\n',
            )
        )
    # `tasks = "hello"` was told to be ["hello"], no better: the tables it must be are named.
    with pytest.raises(TaskFileError, match=re.escape("(in TOML: a [[tasks]] table per task")):
        load_task_file(write(tmp_path, 'tasks = "hello"\n'))
    # A string where a list is wanted was "Input should be a valid list": the fix is written out.
    wanted = '\'tasks[1].depends_on\' must be a list, e.g. ["a"], not the string "a"'
    with pytest.raises(TaskFileError, match=re.escape(wanted)):
        load_task_file(
            write(tmp_path, '[[tasks]]\ntitle = "A"\n[[tasks]]\ntitle = "B"\ndepends_on = "a"\n')
        )
    # `tags = "a,b"` meant two tags: ["a,b"] is one.
    wanted = '\'tasks[0].tags\' must be a list, e.g. ["a", "b"], not the string "a,b"'
    with pytest.raises(TaskFileError, match=re.escape(wanted)):
        load_task_file(write(tmp_path, '[[tasks]]\ntitle = "A"\ntags = "a,b"\n'))
    # A validator's words, without pydantic's "Value error, " before them.
    with pytest.raises(TaskFileError) as caught:
        load_task_file(write(tmp_path, '[[tasks]]\ntitle = "   "\n'))
    assert "the title is only spaces" in str(caught.value)
    assert "Value error" not in str(caught.value)


def test_a_title_of_only_spaces_is_refused(tmp_path):
    # `title = "   "` loaded, and its agent would have been asked to do "   ".
    with pytest.raises(TaskFileError, match=r"'tasks\[0\].title': .*the title is only spaces"):
        load_task_file(write(tmp_path, '[[tasks]]\ntitle = "   "\n'))
    # A plan name of spaces named the plan (and its flow) "  "; blank, it is the file's name.
    plan = load_task_file(write(tmp_path, '[plan]\nname = "  "\n[[tasks]]\ntitle = "A"\n'))
    assert plan.name == "tasks"


def test_malformed_toml_gives_line_and_column(tmp_path):
    with pytest.raises(TaskFileError, match=r"invalid TOML: .*line 2, column"):
        load_task_file(write(tmp_path, '[[tasks]]\ntitle = "A\n'))


def test_no_tasks_is_an_error(tmp_path):
    with pytest.raises(TaskFileError, match="missing key 'tasks'"):
        load_task_file(write(tmp_path, '[plan]\nname = "x"\n'))


def test_a_configuration_file_given_as_the_task_file_says_so():
    # It was "missing key 'tasks'; unknown key 'session'; ...": the fix is --config.
    config = EXAMPLES / "hello.aca.toml"
    with pytest.raises(TaskFileError) as caught:
        load_task_file(config)
    said = str(caught.value)
    assert "is a configuration file ([session], [providers]), not a task file" in said
    assert f"give it with --config {config}" in said
    original = Path(__file__).resolve().parents[1] / "fixtures" / "compat" / "default-config.toml"
    with pytest.raises(TaskFileError, match="is the original aca's configuration file"):
        load_task_file(original)


def test_bad_explicit_id(tmp_path):
    with pytest.raises(TaskFileError, match="task id 'a b' is not valid"):
        load_task_file(write(tmp_path, '[[tasks]]\nid = "a b"\ntitle = "A"\n'))


def test_keys_of_the_original_format_name_what_aca_calls_them(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text(
        '[[setup_commands]]\nname = "x"\ncommand = "echo"\nargs = ["hi"]\ntimeout = 60\n\n'
        '[[tasks]]\nid = "a"\ntitle = "write a.txt"\ndependencies = []\n'
    )
    with pytest.raises(TaskFileError) as refused:
        load_task_file(path)
    text = str(refused.value)
    assert "unknown key 'setup_commands[0].args' (write the arguments into command)" in text
    assert "unknown key 'setup_commands[0].timeout' (aca calls it timeout_seconds)" in text
    assert "unknown key 'tasks[0].dependencies' (aca calls it depends_on)" in text


def test_problems_past_a_refused_key_are_found_in_the_same_load(tmp_path):
    path = write(
        tmp_path,
        '[[tasks]]\nid = "a b"\ntitle = "A"\npriority = "asap"\n'
        '[[tasks]]\nid = "b"\ntitle = "B"\nfiles = ["gone.md"]\ndepends_on = ["nope"]\n',
    )
    with pytest.raises(PlanValidationError) as refused:
        load_task_file(path)
    # The plan's error, and the file's too: a caller may catch either.
    assert isinstance(refused.value, TaskFileError)
    problems = refused.value.problems
    assert len(problems) == 4
    assert problems[0].startswith(f"{path}: 'tasks[0].priority': Input should be")
    assert problems[1].startswith(f"{path}: task id 'a b' is not valid")
    assert problems[2].startswith(f"{path}: task 'b': referenced file 'gone.md' does not exist")
    assert problems[3] == "task 'b' depends on unknown task 'nope'"


def test_a_file_whose_tasks_cannot_be_read_stops_at_its_schema(tmp_path):
    # Without a title there is no task to check the dependencies of: only the schema is named.
    path = write(tmp_path, '[[tasks]]\nid = "a"\ncolour = 1\ndepends_on = ["nope"]\n')
    with pytest.raises(TaskFileError) as refused:
        load_task_file(path)
    # Listed as every other file's problems are, one a line (they were joined on one).
    schema = "See docs/task-files.md for the TOML schema."
    assert str(refused.value).splitlines() == [
        f"{path}: the plan has 2 problem(s):",
        f"  - {path}: missing key 'tasks[0].title'. {schema}",
        f"  - {path}: unknown key 'tasks[0].colour'. {schema}",
        "Fix these in the task file and run again.",
    ]


@pytest.mark.parametrize("folder", ["../../..", "/etc", "app/../.."])
def test_a_setup_folder_outside_the_repository_is_refused_at_load(tmp_path, folder):
    """Before, the dry run passed it and every task failed on it mid-run, a session and its
    branch made."""
    path = tmp_path / "tasks.toml"
    path.write_text(
        f'[[setup_commands]]\nname = "deps"\ncommand = "true"\nworking_dir = "{folder}"\n\n'
        '[[tasks]]\ntitle = "A"\n'
    )
    with pytest.raises(PlanValidationError, match=f"working_dir '{folder}' leads outside"):
        load_task_file(path)
    path.write_text(path.read_text().replace(folder, "app/../backend"))
    assert load_task_file(path).setup_commands[0].working_dir == "app/../backend"


@pytest.mark.parametrize(
    ("line", "key"),
    [('done = "yes"', "done"), ("done = 1", "done"), ('network = "on"', "network")]
    + [('max_attempts = "3"', "max_attempts")],
)
def test_a_value_of_the_wrong_type_is_refused_not_converted(tmp_path, line, key):
    """`done = "yes"` loaded the task as completed, never to run; TOML has real booleans."""
    path = tmp_path / "tasks.toml"
    path.write_text(f'[[tasks]]\ntitle = "A"\n{line}\n')
    with pytest.raises(TaskFileError, match=rf"'tasks\[0\].{key}': Input should be"):
        load_task_file(path)
