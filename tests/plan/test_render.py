"""Rendering plans for people: tree, Mermaid, JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aca_flows.errors import TaskFileError
from aca_flows.plan import ExecutionPlan, load_task_file
from aca_flows.plan.render import plan_json_schema, render_mermaid, render_tree

HELLO = Path(__file__).resolve().parents[2] / "tasks" / "examples" / "hello.md"


def test_tree_shows_hierarchy_dependencies_and_verify():
    lines = render_tree(load_task_file(HELLO)).splitlines()
    assert lines[0] == "Hello, aca  (3 tasks in 2 groups, strategy intelligent)"
    assert lines[1] == "├── [ ] greeting-module — Greeting module"
    assert lines[3].startswith("│   └── [ ] tests — Add `test_greet.py`")
    assert "(after greet; verify: python3 test_greet.py)" in lines[3]
    assert lines[-1].endswith("files: specs/readme-outline.md)")


def test_tree_shows_what_a_task_sets_unlike_the_others(tmp_path):
    # A reviewer saw `a — x` for a task with the network on another provider's model.
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(
        '[[tasks]]\nid = "a"\ntitle = "x"\nprovider = "openai"\nmodel = "gpt-4o"\n'
        'network = true\nmax_attempts = 5\n[[tasks]]\nid = "b"\ntitle = "y"\n'
        "network = false\n"
    )
    lines = render_tree(load_task_file(tasks)).splitlines()
    assert lines[1] == "├── [ ] a — x  (on openai/gpt-4o; network; at most 5 attempt(s))"
    assert lines[2] == "└── [ ] b — y  (no network)"


def test_a_dependency_named_twice_is_shown_once(tmp_path):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- [ ] a {#a}\n- [ ] b {#b depends_on=a,a}\n")
    assert render_tree(load_task_file(tasks)).splitlines()[2] == "└── [ ] b — b  (after a)"


def test_mermaid_has_nodes_and_dependency_edges():
    text = render_mermaid(load_task_file(HELLO))
    assert text.startswith("flowchart TD")
    assert '["greet: Create `greet.py`' in text
    ids = {line.split("[")[0].strip(): line for line in text.splitlines() if '["' in line}
    greet = next(k for k, v in ids.items() if '"greet:' in v)
    tests = next(k for k, v in ids.items() if '"tests:' in v)
    assert f"{greet} --> {tests}" in text


def test_mermaid_draws_the_order_a_sequential_plan_runs_in(tmp_path):
    # The graph of `strategy = sequential` showed three unrelated tasks: they run one by one.
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(
        '[plan]\nstrategy = "sequential"\n[[tasks]]\nid = "a"\ntitle = "x"\n[[tasks]]\n'
        'id = "g"\ntitle = "group"\n  [[tasks.subtasks]]\n  id = "b"\n  title = "y"\n'
        '[[tasks]]\nid = "c"\ntitle = "z"\ndepends_on = ["b"]\n'
    )
    lines = render_mermaid(load_task_file(tasks)).splitlines()
    node = {line.split('["')[1].split(":")[0]: line.split("[")[0].strip() for line in lines[1:5]}
    assert f"    {node['a']} ==> {node['b']}" in lines  # a, then the group's b
    assert f"    {node['b']} --> {node['c']}" in lines  # said by the dependency already
    assert [line for line in lines if "==>" in line] == [f"    {node['a']} ==> {node['b']}"]


def test_mermaid_labels_keep_quotes_and_hashes_as_written(tmp_path):
    # The original aca's test4: `Create ... that prints "Hello World"` showed 'Hello World'.
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- Print "Hello World" {#hello}\n- Fix issue #3; then #quot; {#fix}\n')
    text = render_mermaid(load_task_file(tasks))
    assert 't0["hello: Print #quot;Hello World#quot;"]' in text
    assert 't1["fix: Fix issue #35;3; then #35;quot;"]' in text


def test_schema_is_generated_from_the_models():
    schema = plan_json_schema()
    assert schema["title"] == "aca execution plan"
    assert set(schema["required"]) == {"name"}
    task = schema["$defs"]["Task"]["properties"]
    assert {"id", "dependencies", "verify", "max_attempts"} <= set(task)
    assert json.loads(json.dumps(schema)) == schema
    assert ExecutionPlan.model_json_schema()["properties"].keys() == schema["properties"].keys()


def test_tree_shows_the_plans_default_verify(tmp_path):
    # `# Nightly {verify="pytest -q"}` checks every task naming none; the tree used to hide it.
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        '# Nightly {verify="pytest -q"}\n\n- Fix it {#fix}\n- Lint {#lint verify="ruff ."}\n'
    )
    lines = render_tree(load_task_file(tasks)).splitlines()
    assert lines[:2] == ["Nightly  (2 tasks, strategy intelligent)", "default verify: pytest -q"]
    # So were the setup commands, run in every task's worktree before its agent.
    toml = tmp_path / "tasks.toml"
    toml.write_text(
        '[[setup_commands]]\nname = "deps"\ncommand = "make deps"\n[[tasks]]\ntitle = "A"\n'
    )
    assert render_tree(load_task_file(toml)).splitlines()[1] == (
        "setup, before every task: deps: make deps"
    )
    assert lines[2] == "├── [ ] fix — Fix it"


def test_tree_shows_the_headings_read_as_context_not_tasks(tmp_path):
    # `## Deploy` with prose and no list item runs no task; the tree gave no trace of it, so a
    # reviewer could not tell that the work it states would never be done.
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# P\n\n## Build\n- Build it\n\n## Deploy\nDeploy it all.\n")
    lines = render_tree(load_task_file(tasks)).splitlines()
    assert lines[1] == "context, given to every task (no task of its own): Deploy"
    # With attributes, the heading was surely meant as a task: refused, not context.
    tasks.write_text("# P\n\n## Build {#b}\n- Build it\n\n## Deploy {depends_on=b}\nDo it.\n")
    with pytest.raises(TaskFileError, match=r"tasks.md:6: heading 'Deploy \{depends_on=b\}' has"):
        load_task_file(tasks)


def test_a_title_cannot_draw_on_the_terminal_what_the_plan_does_not_hold(tmp_path):
    # A task file's title is printed for review: an escape sequence in it cleared the screen
    # and wrote over it, a bidirectional override reordered it, a line break drew a task of
    # its own ("[x] ... done") that the plan does not have.
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(
        '[[tasks]]\nid = "a"\ntitle = "safe \\u001b[2J\\u001b[31mRED\\u001b[0m title\\u0007"\n'
        '[[tasks]]\nid = "b"\ntitle = "bidi \\u202eevil\\u202c"\nverify = "true\\rrm -rf x"\n'
        '[[tasks]]\nid = "c"\ntitle = """first line\n└── [x] fake — done"""\n'
    )
    plan = load_task_file(tasks)

    lines = render_tree(plan).splitlines()

    assert lines[1:] == [
        "├── [ ] a — safe \\x1b[2J\\x1b[31mRED\\x1b[0m title\\x07",
        "├── [ ] b — bidi \\u202eevil\\u202c  (verify: true rm -rf x)",
        "└── [ ] c — first line └── [x] fake — done",
    ]
    assert "\x1b" not in render_mermaid(plan) and "\u202e" not in render_mermaid(plan)
