"""The ``aca`` command line: the design's usage forms, exit codes, messages without tracebacks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import git
import pytest

from aca_flows.cli import main
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.store import SessionStore
from tests.fakes.git_repo import make_repo
from tests.fakes.stand_in import stand_in
from tests.fixtures import COMPAT

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "tasks" / "examples" / "hello.md"
HELLO_CONFIG = ROOT / "tasks" / "examples" / "hello.aca.toml"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dry_run_dumps_and_runs_nothing(tmp_path, capsys):
    plan_file = tmp_path / "plan.json"
    work = make_repo(tmp_path / "work")
    before = _files(work)
    code, out, _ = run(
        capsys,
        "--task-file", str(HELLO),
        "--workdir", str(work),
        "--dry-run",
        "--dump-plan", str(plan_file),
        "--provider", "anthropic",
        "--max-concurrent", "2",
        "--budget-usd", "5",
        "--require-approval",
    )  # fmt: skip
    assert code == 0
    assert "Dry run: 3 tasks in 2 groups (3 pending); nothing was run." in out
    # It said `aca --execution-plan PLAN`: run here, with the default provider, not as asked;
    # then without the budget and the approval the plan was reviewed with.
    command = (
        f"aca --execution-plan {plan_file} --workdir {work} --provider anthropic --max-concurrent 2"
        " --budget-usd 5 --require-approval"
    )
    assert f"then run `{command}`." in out
    assert json.loads(plan_file.read_text())["name"] == "Hello, aca"
    assert _files(work) == before  # no .aca/, no line added to .git/info/exclude


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
@pytest.mark.parametrize(
    ("workdir", "refused"),
    [
        ("plain", "is not a git repository"),
        ("no-commit", "has no commits yet"),
        ("work/sub", "not its top level; run aca with --workdir"),
    ],
)
def test_a_dry_run_refuses_the_workdir_the_run_refuses_and_writes_nothing(
    tmp_path, capsys, dry_run, workdir, refused
):
    """Before, the dry run passed all three (exit 0), and the run's own refusal of a
    repository with no commit wrote .aca/ into its .git/info/exclude first."""
    make_repo(tmp_path / "work")
    git.Repo.init(tmp_path / "no-commit")
    for folder in ("plain", "work/sub"):
        (tmp_path / folder).mkdir()
    before = _files(tmp_path)

    code, out, err = run(capsys, "run", str(HELLO), "-w", str(tmp_path / workdir), *dry_run)

    assert (code, out) == (2, "")
    assert refused in err and "Traceback" not in err
    assert _files(tmp_path) == before


def test_a_one_task_plan_reads_1_task_not_1_tasks(tmp_path, capsys):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# T\n\n- write a.txt {#a}\n")
    code, out, _ = run(capsys, "run", str(tasks), "--dry-run")
    assert code == 0
    assert out.startswith("T  (1 task, strategy intelligent)")
    assert "Dry run: 1 task (1 pending); nothing was run." in out


def test_a_dry_run_warns_of_dependencies_stated_in_prose(tmp_path, capsys):
    work = make_repo(tmp_path / "work")
    # The original aca's numbered phases say "Requires Storage Layer (task #1)": read
    # deterministically they would run at once, so the user is told, with the way out.
    tasks = COMPAT / "nested-complex-tasks" / "dependencies-test.md"
    code, _, err = run(capsys, "--task-file", str(tasks), "-w", str(work), "--dry-run")
    assert code == 0
    assert "4 task(s) state dependencies in prose" in err
    assert "2-service-endpoints: **Dependencies**: Requires Storage Layer (task #1)" in err
    assert "--use-intelligent-parser" in err
    # `aca plan show` says it too, on stderr: its JSON stays clean.
    code, out, err = run(capsys, "plan", "show", str(tasks), "--format", "json")
    assert code == 0 and json.loads(out)["name"] == "Release Pipeline with Dependencies"
    assert "4 task(s) state dependencies in prose" in err


def test_review_workflow_edit_then_load(tmp_path, capsys):
    work = make_repo(tmp_path / "work")
    plan_file = tmp_path / "plan.toml"
    assert run(capsys, "run", str(HELLO), "-w", str(work), "--dry-run",
               "--dump-plan", str(plan_file))[0] == 0  # fmt: skip
    edited = plan_file.read_text().replace('title = "Documentation"', 'title = "Docs, reviewed"')
    plan_file.write_text(edited)
    code, out, _ = run(capsys, "--execution-plan", str(plan_file), "-w", str(work), "--dry-run")
    assert code == 0
    assert "documentation — Docs, reviewed" in out


def test_context_and_appended_prompt_reach_the_plan(tmp_path, capsys):
    work = make_repo(tmp_path / "work")
    plan_file = tmp_path / "plan.json"
    code, _, _ = run(
        capsys,
        "--task-file", str(COMPAT / "multi-task" / "tasks.md"),
        "--context", "project context", "--context", "more",
        "--append-system-prompt", "additional instructions",
        "--dry-run", "--dump-plan", str(plan_file), "-w", str(work),
    )  # fmt: skip
    plan = json.loads(plan_file.read_text())
    assert code == 0
    assert plan["context_hints"] == ["project context", "more"]
    assert plan["append_system_prompt"] == "additional instructions"


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_contradicting_parser_switches_are_named_before_any_provider_is_asked(
    tmp_path, capsys, dry_run
):
    """Not the login error of a provider the user never meant to reach (none works here)."""
    tasks = COMPAT / "multi-task" / "tasks.md"
    code, _, err = run(capsys, "run", str(tasks), "-w", str(tmp_path), *dry_run,
                       "--use-intelligent-parser", "--force-naive-parser")  # fmt: skip
    assert code == 2
    assert "--use-intelligent-parser and --force-naive-parser contradict; pick one" in err
    assert "cannot work" not in err


def test_json_summary(tmp_path, capsys):
    work = make_repo(tmp_path / "work")
    code, out, _ = run(capsys, "run", str(HELLO), "--dry-run", "--json", "-w", str(work))
    assert code == 0
    assert json.loads(out) == {
        "dry_run": True,
        "plan": "Hello, aca",
        "tasks": 3,
        "groups": 2,
        "pending": 3,
        "dumped_to": None,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.md"], "task file missing.md does not exist; check the path."),
        (["run"], "Missing argument 'file'."),  # a usage error, typer's own
        (["sessions", "show", "nope"], "no session 'nope' in "),
        (["config", "show", "--config", "nope.toml"], "config file nope.toml does not exist"),
    ],
)
def test_json_of_an_input_error_is_an_error_object_on_stdout(tmp_path, capsys, args, message):
    # stdout was empty (the error only on stderr): a script parsing it got nothing to read.
    code, out, err = run(capsys, *args, "--json", "-w", str(tmp_path))
    assert code == 2 and message in err
    answer = json.loads(out)
    assert answer["exit_code"] == 2 and answer["error"].startswith(message)


def test_a_task_file_in_the_workdir_but_not_here_names_the_path_to_give(tmp_path, capsys):
    # It was "task file tasks-of-the-workdir.md does not exist; check the path.": it does.
    (tmp_path / "tasks-of-the-workdir.md").write_text("- write a.txt\n")
    code, out, err = run(capsys, "run", "tasks-of-the-workdir.md", "--dry-run", "-w", str(tmp_path))
    assert code == 2 and "Traceback" not in err
    assert f"is not in the current folder {Path.cwd()}, where a relative path is read from" in err
    assert f"give {tmp_path / 'tasks-of-the-workdir.md'}." in err


@pytest.mark.parametrize("fmt", ["tree", "mermaid", "json"])
def test_plan_show_formats(capsys, fmt):
    code, out, _ = run(capsys, "plan", "show", str(HELLO), "--format", fmt)
    assert code == 0
    tree = "Hello, aca  (3 tasks in 2 groups"
    first = {"tree": tree, "mermaid": "flowchart TD", "json": "{"}[fmt]
    assert out.startswith(first)


def test_plan_schema_is_json(capsys):
    code, out, _ = run(capsys, "plan", "schema")
    assert code == 0 and json.loads(out)["title"] == "aca execution plan"


def test_cycle_is_exit_2_with_path_and_nothing_written(tmp_path, capsys):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- A {#a depends_on=b}\n- B {#b depends_on=a}\n")
    dump = tmp_path / "plan.json"
    code, out, err = run(capsys, "--task-file", str(tasks), "--dry-run", "--dump-plan", str(dump))
    assert code == 2
    assert "dependency cycle: a -> b -> a" in err
    assert "Traceback" not in err + out
    assert not dump.exists()


# A task file with three problems of three stages: the schema (an unknown key or attribute), a
# referenced file, the dependencies. One run names them all, as a compiler would.
_THREE_PROBLEMS = {
    "tasks.toml": """
[[tasks]]
id = "a"
title = "First"
colour = "red"

[[tasks]]
id = "b"
title = "Second"
files = ["missing.md"]
depends_on = ["c"]

[[tasks]]
id = "c"
title = "Third"
depends_on = ["b"]
""",
    "tasks.md": """# Plan

- [ ] First {#a colour=red}
- [ ] Second -> missing.md {#b depends_on=c}
- [ ] Third {#c depends_on=b}
""",
}
# Each as it starts its line of the list; the loader's name the file, and the line or task.
_THE_PROBLEMS = {
    "tasks.toml": [
        "{file}: unknown key 'tasks[0].colour'",
        "{file}: task 'b': referenced file 'missing.md' does not exist",
        "dependency cycle: b -> c -> b",
    ],
    "tasks.md": [
        "{file}:3: unknown attribute 'colour'",
        "{file}:4: referenced file 'missing.md' does not exist",
        "dependency cycle: b -> c -> b",
    ],
}


@pytest.mark.parametrize("name", list(_THREE_PROBLEMS))
@pytest.mark.parametrize("command", [["run", "{file}", "--dry-run"], ["plan", "show", "{file}"]])
def test_every_problem_of_a_task_file_is_named_in_one_run(tmp_path, capsys, name, command):
    tasks = tmp_path / name
    tasks.write_text(_THREE_PROBLEMS[name])

    code, out, err = run(capsys, *(a.format(file=tasks) for a in command))

    assert code == 2 and out == ""
    assert "Traceback" not in err
    assert f"{tasks}: the plan has 3 problem(s):" in err
    for problem in _THE_PROBLEMS[name]:
        assert "\n  - " + problem.format(file=tasks) in err
    assert "Fix these in the task file and run again." in err


@pytest.mark.parametrize("command", [["run", "{file}", "--dry-run"], ["plan", "show", "{file}"]])
def test_a_task_s_unknown_provider_is_refused_by_every_look_at_the_plan(tmp_path, capsys, command):
    # `aca plan show` showed it (exit 0); the dry run refused it (exit 2).
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- [ ] a {#a provider=bogus}\n- [ ] b {#b}\n- [ ] c {#c provider=bogus}\n")

    code, out, err = run(capsys, *(a.format(file=tasks) for a in command))

    # Named with its tasks and its file: in a plan of hundreds, which task was left unsaid.
    assert code == 2 and out == "" and f"{tasks}: the plan names 1 unknown provider" in err
    assert "provider 'bogus' of task(s) a, c is none aca knows" in err
    assert "Choose one of claude-code, anthropic, openai, ollama, replay" in err


@pytest.mark.parametrize(
    "command",
    [["--execution-plan", "{file}", "--dry-run"], ["run", "{file}", "--dry-run"]],
)
def test_problems_of_an_execution_plan_are_fixed_in_the_plan_not_a_task_file(
    tmp_path, capsys, command
):
    plan_file = tmp_path / "plan.json"
    assert run(capsys, "run", str(HELLO), "--dry-run", "--dump-plan", str(plan_file))[0] == 0
    plan = json.loads(plan_file.read_text())
    plan["tasks"][1]["dependencies"] = ["nosuch"]
    plan_file.write_text(json.dumps(plan))

    code, out, err = run(capsys, *(a.format(file=plan_file) for a in command))

    assert code == 2 and out == ""
    assert "depends on unknown task 'nosuch'" in err
    assert "Fix these in the execution plan and run again." in err
    assert "task file" not in err


_CAFE = {
    "tasks.md": "- [ ] brew {#café}\n- [ ] serve {#serve depends_on=café}\n",
    "tasks.toml": '[[tasks]]\nid = "café"\ntitle = "brew"\n\n'
    '[[tasks]]\nid = "serve"\ntitle = "serve"\ndepends_on = ["café"]\n',
    "plan.json": json.dumps(
        {"schema_version": 1, "name": "p", "tasks": [{"id": "café", "title": "brew"}]}
    ),
}


@pytest.mark.parametrize("name", list(_CAFE))
def test_a_non_ascii_task_id_is_explained_not_given_as_a_regex(tmp_path, capsys, name):
    tasks = tmp_path / name
    tasks.write_text(_CAFE[name])

    code, out, err = run(capsys, "plan", "show", str(tasks))

    assert code == 2 and out == ""
    assert "task id 'café' is not valid; use at most 80 ASCII letters" in err
    assert "e.g. 'cafe'" in err
    assert "pattern" not in err
    # The refused id is one problem, not again as an unknown dependency.
    assert "unknown task" not in err


_EMPTY_VERIFY = {
    "tasks.md": '- [ ] write a.txt {#a verify=""}\n',
    "tasks.toml": '[[tasks]]\nid = "a"\ntitle = "write a.txt"\nverify = "  "\n',
    "plan.json": json.dumps(
        {"schema_version": 1, "name": "p", "tasks": [{"id": "a", "title": "a", "verify": ""}]}
    ),
}


@pytest.mark.parametrize("name", list(_EMPTY_VERIFY))
def test_an_empty_verify_is_refused_naming_the_task_and_both_ways_out(tmp_path, capsys, name):
    # Neither "no check" nor "the plan's default" is what an empty check plainly says.
    repo = make_repo(tmp_path / "repo")
    tasks = tmp_path / name
    tasks.write_text(_EMPTY_VERIFY[name])

    code, out, err = run(capsys, "run", str(tasks), "-w", str(repo), "--provider", "replay")

    assert code == 2 and out == ""
    assert "task 'a' has an empty verify; write the command its work must pass" in err
    assert "or leave verify out for the plan's default" in err
    assert not (repo / ".aca").exists()
    assert [h.name for h in git.Repo(repo).heads] == ["main"]


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (["run", "{dir}", "--dry-run"], "task file"),
        (["plan", "show", "{dir}"], "task file"),
        (["plan", "parse", "{dir}"], "task file"),
        (["--execution-plan", "{dir}", "--dry-run"], "execution plan"),
    ],
)
def test_a_folder_given_as_the_task_file_is_called_a_folder(tmp_path, capsys, command, what):
    """Not "unknown task file type '(none)'": the user gave a folder where a file belongs."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    code, _, err = run(capsys, *(arg.format(dir=folder) for arg in command))
    assert code == 2
    assert f"{what} {folder} is a folder, not a file; give the path of the {what} itself" in err


def test_dump_to_unknown_format_is_refused_before_anything(tmp_path, capsys):
    code, _, err = run(capsys, "run", str(HELLO), "--dry-run", "--dump-plan", str(tmp_path / "p.x"))
    assert code == 2 and "name the file .json or .toml" in err


def test_a_dump_over_the_task_file_itself_is_refused_and_the_file_kept(tmp_path, capsys):
    tasks = tmp_path / "tasks.toml"
    text = '[[tasks]]\nid = "a"\ntitle = "write a.txt"\n'
    tasks.write_text(text)
    code, _, err = run(capsys, "run", str(tasks), "--dry-run", "--dump-plan", str(tasks))
    assert code == 2 and "is the task file itself" in err
    assert tasks.read_text() == text


def test_a_dump_over_a_file_that_is_no_plan_is_refused_and_a_plan_replaced(tmp_path, capsys):
    """Before, the configuration in use was replaced by the plan, and the next run refused it
    as a task file; a cassette, a pyproject.toml or a package.json went the same way."""
    config = tmp_path / "cfg.toml"
    config.write_text(HELLO_CONFIG.read_text())
    plan = tmp_path / "plan.json"

    code, _, err = run(
        capsys, "run", str(HELLO), "-n", "-c", str(config), "--dump-plan", str(config)
    )
    assert code == 2 and "the file exists and is not a plan aca wrote" in err
    assert config.read_text() == HELLO_CONFIG.read_text()

    assert run(capsys, "run", str(HELLO), "-n", "--dump-plan", str(plan))[0] == 0
    plan.write_text(plan.read_text().replace('"Hello, aca"', '"Hello again"'))
    assert run(capsys, "run", str(HELLO), "-n", "--dump-plan", str(plan))[0] == 0  # a review redone
    assert "Hello again" not in plan.read_text()


@pytest.mark.parametrize(
    ("option", "what"), [("--task-file", "task file"), ("--execution-plan", "execution plan")]
)
def test_a_cassette_over_the_task_file_itself_is_refused_and_the_file_kept(
    tmp_path, capsys, option, what
):
    """Before, the run went ahead and the cassette, rewritten after each call, replaced it."""
    tasks = tmp_path / ("tasks.json" if option == "--execution-plan" else "tasks.md")
    written = tmp_path / "written.json"
    run(capsys, "run", str(HELLO), "--dry-run", "--dump-plan", str(written))
    tasks.write_text(written.read_text() if option == "--execution-plan" else "- a {#a}\n")
    before = tasks.read_text()
    code, out, err = run(capsys, option, str(tasks), "--dry-run", "--record", str(tasks))
    assert code == 2 and "Dry run" not in out
    assert f"--record {tasks} is the {what} itself: the cassette would replace" in err
    assert tasks.read_text() == before


def test_a_cassette_only_replaces_a_cassette_in_a_folder_that_takes_files(tmp_path, capsys):
    # As root, --record /dev/null replaced the machine's /dev/null with the cassette; it
    # replaced the run's own --config, or a tracked file, without a word; in /proc's folders
    # the task failed after its first paid call.
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    config = tmp_path / "aca.toml"
    config.write_text('[session]\nprovider = "anthropic"\n')
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for record, said in (
        (device, "exists and is not a cassette aca wrote"),
        (notes, "exists and is not a cassette aca wrote"),
        (config, "is the --config file itself"),
        (Path("/proc/self/x.json"), "is not a folder aca can write a file in"),
    ):
        code, out, err = run(capsys, "run", str(HELLO), "--dry-run", "-c", str(config),
                             "--record", str(record))  # fmt: skip
        assert code == 2 and "Dry run" not in out and said in err, (record, err)
    assert stat.S_ISCHR(device.stat().st_mode) and notes.read_text() == "mine\n"
    cassette = tmp_path / "c.json"  # a cassette aca wrote is rewritten, as every call does
    cassette.write_text('{"version": 1, "interactions": []}\n')
    assert run(capsys, "run", str(HELLO), "--dry-run", "--record", str(cassette))[0] == 0


@pytest.mark.parametrize("budget", ["-5", "0", "nan", "inf"])
def test_a_budget_of_nothing_is_refused_with_one_message(capsys, budget):
    # Before, -5 was "greater than or equal to 0" and then 0 "greater than 0"; nan was the
    # config's "'session.budget_usd' (from command line)", and inf capped nothing.
    code, _, err = run(capsys, "run", str(HELLO), "--dry-run", "--budget-usd", budget)
    assert code == 2 and f"{budget} is no budget: give the dollars to spend at most" in err


@pytest.mark.parametrize("command", [["run", str(HELLO), "--dry-run"], ["plan", "parse", "x.md"]])
def test_an_empty_model_name_is_refused_not_taken_for_the_default(capsys, command):
    """``--model "$MODEL"`` with the variable unset: the run would drop the configured model."""
    code, out, err = run(capsys, *command, "--model", " ")
    assert code == 2 and "Dry run" not in out
    assert "the model name is empty: name a model" in err and "Traceback" not in err


def test_run_in_a_folder_that_is_not_a_repository_names_the_fix(tmp_path, capsys):
    code, _, err = run(capsys, "run", str(HELLO), "-w", str(tmp_path))
    assert code == 2 and "pass --init-git" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["run", str(HELLO)], ["resume", "--latest"]])
def test_an_empty_repo_url_is_refused_not_read_as_the_current_folder(tmp_path, capsys, command):
    """``--repo "$URL"`` with the variable unset: the run worked on the workdir, pushing nothing."""
    repo = make_repo(tmp_path / "repo")
    code, _, err = run(
        capsys, *command, "--repo", "", "-w", str(repo), "--config", str(HELLO_CONFIG)
    )
    assert code == 2 and "Traceback" not in err
    assert "the repository is empty: give a git URL or the path of a bare repository" in err
    assert [h.name for h in git.Repo(repo).heads] == ["main"]
    assert not (repo / ".aca").exists()


def test_a_dry_run_with_repo_clones_nothing_and_says_where_a_run_would(tmp_path, capsys):
    """Before, the dry run cloned the repository into ~/.aca/repos and left it there."""
    bare = tmp_path / "app.git"
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(make_repo(tmp_path / "src")), str(bare)], check=True
    )
    code, out, err = run(
        capsys, "run", str(HELLO), "--repo", str(bare), "--dry-run", "--config", str(HELLO_CONFIG)
    )
    assert code == 0 and "Traceback" not in err
    assert "Dry run: 3 tasks in 2 groups (3 pending); nothing was run." in out
    area = Path.home() / ".aca" / "repos"
    assert f"--repo {bare} was not cloned; a run clones it into {area}" in out
    assert not (Path.home() / ".aca").exists()


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["run", str(HELLO), "--strict"], "--strict checks the plan of the intelligent parser: "
         "add --use-intelligent-parser, or leave --strict out."),
        (["run", str(HELLO), "--repo", "{remote}", "--init-git"], "--init-git makes a new "
         "repository in --workdir, but --repo clones one: leave --init-git out."),
        (["run", str(HELLO), "--github-repo", "me/app"], "--github-repo me/app names where "
         "--open-pr opens the pull request: add --open-pr, or leave --github-repo out."),
        (["resume", "--latest", "--github-repo", "me/app"], "--github-repo me/app names where "
         "--open-pr opens the pull request"),
    ],
    ids=["strict", "repo-init-git", "github-repo", "resume-github-repo"],
)  # fmt: skip
def test_an_option_that_would_do_nothing_is_refused_naming_both(tmp_path, capsys, command, message):
    repo = make_repo(tmp_path / "repo")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(remote)], check=True)
    args = [a.format(remote=remote) for a in command]

    code, out, err = run(capsys, *args, "-w", str(repo), "--config", str(HELLO_CONFIG))

    assert code == 2 and out == "" and "Traceback" not in err
    assert message in err
    assert not (repo / ".aca").exists() and not (Path.home() / ".aca").exists()
    assert [h.name for h in git.Repo(repo).heads] == ["main"]


def test_a_dry_run_names_the_run_options_it_ignores(tmp_path, capsys):
    # Not refused: a dry run is often the run's own command line with --dry-run added.
    code, out, err = run(
        capsys, "run", str(HELLO), "--dry-run", "--json", "--budget-usd", "5", "--open-pr",
        "--require-approval", "--record", str(tmp_path / "c.json"), "--init-git",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["tasks"] == 3
    assert (
        "warning: --dry-run runs no task, so these do nothing here: --init-git, --open-pr, "
        "--record, --require-approval (the run command --dump-plan prints keeps them)." in err
    )


def test_a_dry_run_refuses_what_the_run_refuses_without_asking_a_server(tmp_path, capsys):
    """It passed (exit 0) a budget on a model aca has no price for, and a missing cassette:
    the run refused both (exit 2)."""
    repo = make_repo(tmp_path / "repo")
    args = ("run", str(HELLO), "--dry-run", "-w", str(repo))
    code, _, err = run(
        capsys, *args, "--provider", "anthropic", "--model", "claude-test", "--budget-usd", "5"
    )
    assert code == 2 and "a budget of $5 cannot be kept: aca has no price for claude-test" in err
    config = tmp_path / "replay.toml"
    config.write_text('[session]\nprovider = "replay"\n[providers.replay]\ncassette = "no.json"\n')
    code, _, err = run(capsys, *args, "--config", str(config))
    assert code == 2 and "the cassette no.json does not exist" in err


def test_a_file_named_aca_in_the_workdir_is_named_not_a_traceback(tmp_path, capsys):
    """Before, Prefect started and the run crashed making .aca/sessions/ (exit 1)."""
    repo = make_repo(tmp_path / "repo")
    (repo / ".aca").write_text("notes\n")
    code, _, err = run(capsys, "run", str(HELLO), "-w", str(repo), "--config", str(HELLO_CONFIG))
    assert code == 2 and "Traceback" not in err
    assert f"{repo / '.aca'} is a file, but aca keeps its sessions in a folder" in err
    assert (repo / ".aca").read_text() == "notes\n"
    assert [h.name for h in git.Repo(repo).heads] == ["main"]


@pytest.mark.parametrize("command", ["run", "resume"])
def test_a_read_only_workdir_is_refused_before_the_run(tmp_path, capsys, monkeypatch, command):
    """Before, writing .git/info/exclude (run) or the session's lock (resume) was a traceback
    and exit 1. (A read-only mount in real life; os.access says so, even to root.)"""
    repo = make_repo(tmp_path / "repo")
    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="A")])
    with SessionStore.create(repo, plan, provider="replay") as store:
        pass
    access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: access(p, mode) and not (mode & os.W_OK and p == repo)
    )
    target = str(HELLO) if command == "run" else store.session_id
    code, _, err = run(capsys, command, target, "-w", str(repo), "--config", str(HELLO_CONFIG))
    assert code == 2 and "Traceback" not in err
    assert f"{repo} is read-only; aca writes its session (.aca/) and a branch" in err
    assert [h.name for h in git.Repo(repo).heads] == ["main"]
    assert not (repo / ".git" / "info" / "exclude").read_text().count(".aca")


def test_a_refused_run_writes_no_dumped_plan(tmp_path, capsys):
    """--dump-plan writes the plan of a run that goes ahead, not of one refused at the start."""
    dump = tmp_path / "plan.json"
    workdir = tmp_path / "not-a-repo"
    workdir.mkdir()
    code, _, err = run(capsys, "run", str(HELLO), "-w", str(workdir), "--dump-plan", str(dump))
    assert code == 2 and "pass --init-git" in err
    assert not dump.exists()


def test_a_dumped_plan_with_nowhere_to_go_is_refused_before_anything_runs(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    dump = tmp_path / "file" / "plan.json"
    code, out, err = run(capsys, "run", str(HELLO), "--dry-run", "--dump-plan", str(dump))
    assert code == 2 and "Dry run" not in out and "Traceback" not in err
    assert "is not a folder aca can write to" in err


def test_a_dumped_plan_that_cannot_be_written_names_its_path_not_a_temporary_file(capsys):
    code, _, err = run(capsys, "run", str(HELLO), "--dry-run", "--dump-plan", "/proc/plan.json")
    assert code == 2 and "Traceback" not in err
    assert "--dump-plan /proc/plan.json: the plan cannot be written there (" in err
    assert ".tmp" not in err and "name a file in a folder you can write to" in err


def test_a_dumped_plan_makes_its_missing_folder_as_record_does(tmp_path, capsys):
    # Refused before ("not a folder aca can write to"), while --record made its folder.
    dump = tmp_path / "review" / "today" / "plan.json"
    code, _, err = run(capsys, "run", str(HELLO), "--dry-run", "--dump-plan", str(dump))
    assert code == 0, err
    assert json.loads(dump.read_text())["name"] == "Hello, aca"


@pytest.mark.parametrize(
    ("flag", "example"), [("--dump-plan", "plan.json"), ("--record", "cassette.json")]
)
def test_a_folder_named_as_the_file_to_write_is_refused_before_anything(
    tmp_path, capsys, flag, example
):
    """Before, --dump-plan failed on a temporary file's name; --record made a session and
    failed its first task (exit 1)."""
    folder = tmp_path / "out.json"
    folder.mkdir()
    code, out, err = run(capsys, "run", str(HELLO), "--dry-run", flag, str(folder))
    assert code == 2 and "Dry run" not in out and "Traceback" not in err
    assert f"{flag} {folder} is a folder; name a file in it, e.g. {folder}/{example}" in err


def test_unknown_provider_is_refused_before_anything_runs(tmp_path, capsys):
    code, _, err = run(capsys, "run", str(HELLO), "-w", str(tmp_path), "--provider", "gpt")
    assert code == 2 and "unknown provider 'gpt'" in err


@pytest.mark.parametrize(
    ("task_line", "option"),
    [("- x {#z}", ["--provider", "bogus"]), ("- x {#z provider=bogus}", [])],
)
def test_a_dry_run_refuses_an_unknown_provider_as_the_run_does(tmp_path, capsys, task_line, option):
    """The dry run is the review before the run: it must not pass a plan the run refuses."""
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# T\n\n{task_line}\n")
    dump = tmp_path / "plan.json"
    code, out, err = run(capsys, "run", str(tasks), "--dry-run", "--dump-plan", str(dump), *option)
    assert code == 2 and "Dry run" not in out
    assert "'bogus'" in err and "one of claude-code, anthropic" in err
    assert not dump.exists()


def test_provider_without_its_key_is_refused_before_anything_runs(tmp_path, capsys):
    repo = tmp_path / "repo"
    code, _, err = run(
        capsys, "run", str(HELLO), "-w", str(repo), "--init-git", "--provider", "anthropic"
    )
    assert code == 2
    assert "the anthropic provider cannot work: ANTHROPIC_API_KEY is not set" in err
    assert "To fix it, set ANTHROPIC_API_KEY" in err
    assert not repo.exists()  # --init-git created nothing


_SECRET = "sk-ant-api03-readinesssecret0123456789"
_CLOSED_PORT = "http://127.0.0.1:9"  # offline: what a key check there would answer


@pytest.mark.parametrize(
    ("provider", "environ", "message"),
    [
        ("anthropic", {"ANTHROPIC_API_KEY": _SECRET, "ANTHROPIC_BASE_URL": "notaurl"},
         "ANTHROPIC_BASE_URL is not an http(s) URL. To fix it, set ANTHROPIC_BASE_URL to the "
         "API's address"),
        ("anthropic", {"ANTHROPIC_API_KEY": "  ", "ANTHROPIC_BASE_URL": _CLOSED_PORT},
         "ANTHROPIC_API_KEY is set but blank. To fix it, set ANTHROPIC_API_KEY to the key "
         "itself, or unset it."),
        ("claude-code", {"ANTHROPIC_API_KEY": "\t", "ANTHROPIC_BASE_URL": _CLOSED_PORT},
         "ANTHROPIC_API_KEY is set but blank"),
        ("openai", {"OPENAI_API_KEY": _SECRET, "OPENAI_BASE_URL": "localhost:8000/v1"},
         "OPENAI_BASE_URL is not an http(s) URL"),
    ],
    ids=["anthropic-url", "anthropic-blank-key", "claude-code-blank-key", "openai-url"],
)  # fmt: skip
def test_a_provider_variable_that_cannot_work_is_named_before_anything_runs(
    tmp_path, capsys, monkeypatch, provider, environ, message
):
    claude = tmp_path / "claude"  # found and runnable: the variables are what is checked
    claude.write_text("#!/bin/sh\nexit 0\n")
    claude.chmod(0o755)
    monkeypatch.setenv("ACA_CLAUDE_CLI", str(claude))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    repo = make_repo(tmp_path / "repo")

    code, out, err = run(capsys, "run", str(HELLO), "-w", str(repo), "--provider", provider)

    assert code == 2 and out == "" and "Traceback" not in err
    assert f"the {provider} provider cannot work: " in err and message in err
    assert "No task was started" in err and _SECRET not in err
    assert "--provider picks another" in err  # `aca run` has one
    assert not (repo / ".aca").exists()
    assert [h.name for h in git.Repo(repo).heads] == ["main"]


def test_replay_without_a_cassette_is_refused(tmp_path, capsys):
    code, _, err = run(
        capsys, "run", str(HELLO), "-w", str(tmp_path), "--init-git", "--provider", "replay"
    )
    assert code == 2 and "no cassette configured" in err


def test_usage_errors_exit_2(capsys):
    assert run(capsys, "run")[0] == 2
    assert run(capsys, "--no-such-flag")[0] == 2


def test_options_before_a_subcommand_are_not_silently_dropped(capsys):
    code, _, err = run(capsys, "--workdir", ".", "plan", "schema")
    assert code == 2 and "put it after the command that takes it" in err


def test_a_task_file_s_text_in_an_error_prints_as_escapes(tmp_path, capsys):
    # The tree escaped it; the problem list wrote the escape sequence to the terminal.
    tasks = tmp_path / "tasks.md"
    tasks.write_text('- [ ] one {#a}\n- [ ] two {#b depends_on="a\x1b[31m"}\n')

    code, _, err = run(capsys, "plan", "show", str(tasks))

    assert code == 2 and "depends on unknown task 'a\\x1b[31m'" in err and "\x1b" not in err


def test_a_misplaced_option_is_pointed_where_it_works(capsys):
    # `aca -t tasks.md run` used to suggest `aca run ... --task-file ...`, an option `aca run`
    # does not have; `aca --dry-run usage` suggested `aca usage ... --dry-run ...`, ditto.
    code, _, err = run(capsys, "-t", "tasks.md", "run", "tasks.md")
    assert code == 2 and "`aca run` takes the file itself: `aca run FILE`" in err
    assert "--task-file ...`" not in err
    code, _, err = run(capsys, "--dry-run", "usage")
    assert code == 2 and "'usage', which takes no --dry-run; see `aca usage --help`" in err
    code, _, err = run(capsys, "--json", "sessions", "list")
    assert code == 2 and "takes it: `aca sessions list ... --json ...` or `aca sessions show" in err
    # Of a group's commands, those that take it: `plan show` has no --dump-plan.
    code, _, err = run(capsys, "--dump-plan", "x.json", "plan", "show", "tasks.md")
    assert code == 2 and "takes it: `aca plan parse ... --dump-plan ...`." in err


@pytest.mark.parametrize("port", ["0", "99999", "taken"])
def test_server_start_refuses_a_port_it_cannot_use_at_once(tmp_path, capsys, monkeypatch, port):
    # 0 waited 180 s for a server on "port 0", then exit 1; 99999 was an OverflowError traceback;
    # a port another program listens on was exit 1, as if aca had failed.
    monkeypatch.setenv("HOME", str(tmp_path))
    with contextlib.closing(socket.socket()) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        if port == "taken":
            port = str(other.getsockname()[1])
        code, out, err = run(capsys, "server", "start", "--port", port)
    assert code == 2 and "Traceback" not in err
    assert "Invalid value for '--port'" in err or f"port {port} on 127.0.0.1 is in use" in err
    assert not (tmp_path / ".aca" / "server" / "server.json").exists()


def test_server_start_says_already_running_only_of_a_server_that_answers_where_asked(
    tmp_path, capsys, monkeypatch
):
    # A hung server, or one on another port than --port asked, was "already running", exit 0.
    from aca_flows.cli.warm_runner import WarmRunner

    monkeypatch.setenv("HOME", str(tmp_path))
    home = tmp_path / ".aca" / "server"
    home.mkdir(parents=True)
    hung = stand_in("aca_flows.flows.server_app")
    try:
        state = {"pid": hung.pid, "url": "http://127.0.0.1:9/api", "port": 9, "log": "x.log"}
        (home / "server.json").write_text(json.dumps(state | {"started_at": 1.0}))
        code, out, err = run(capsys, "server", "start")
        assert code == 1 and "does NOT answer at http://127.0.0.1:9/api" in err
        assert "already running" not in out
        code, out, err = run(capsys, "server", "start", "--port", "4300")
        assert code == 2 and "already runs on port 9" in err and "not 4300" in err
    finally:
        hung.kill()
        hung.wait()
        WarmRunner(home).stop()  # started by the "already running" of an aca without the fix


def test_config_show_masks_secrets(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value-1234")
    (tmp_path / "aca.toml").write_text("[session]\nmax_concurrent_tasks = 4\n")
    code, out, _ = run(capsys, "config", "show", "-w", str(tmp_path), "--json")
    shown = json.loads(out)
    assert code == 0
    assert shown["values"]["session.max_concurrent_tasks"] == {
        "value": 4,
        "source": str(tmp_path / "aca.toml"),
    }
    assert shown["credentials"]["ANTHROPIC_API_KEY"] == "****1234"
    assert "sk-ant-secret" not in out


def test_config_show_redacts_a_password_in_the_file_and_keeps_secret_block_names(tmp_path, capsys):
    (tmp_path / "aca.toml").write_text(
        "[providers.anthropic]\n"
        'base_url = "https://user:h4cfgBaseUrlPw99@proxy.example/v1"\n'
        'api_key_secret = "anthropic-key"\n'
    )
    for extra in ([], ["--json"]):
        code, out, _ = run(capsys, "config", "show", "-w", str(tmp_path), *extra)
        assert code == 0
        assert "h4cfgBaseUrlPw99" not in out and "user:[REDACTED]@proxy.example" in out
        assert "anthropic-key" in out  # the Secret block's name, to find it by


def test_config_show_in_a_pipe_prints_every_key_whole(tmp_path, capsys):
    """The list an unknown-key error sends a user to: no key cut short ("session.max_co…")."""
    code, out, _ = run(capsys, "config", "show", "--workdir", str(tmp_path))
    assert code == 0
    assert "…" not in out
    for key in ("session.max_concurrent_tasks", "rate_limiting.max_concurrent_requests"):
        assert key in out


@pytest.mark.parametrize(
    "command",
    [
        ["sessions", "list"],
        ["sessions", "show", "s-1"],
        ["usage"],
        ["checkpoints", "list"],
        ["--list-checkpoints"],
        ["resume", "--latest"],
        ["config", "show"],
        ["providers", "list"],
    ],
)
def test_a_workdir_that_does_not_exist_is_refused(tmp_path, capsys, command):
    """Not "no sessions", "no checkpoints", an empty usage table or the default configuration:
    a mistyped path is named, exit 2, and nothing is created."""
    missing = tmp_path / "not-here"
    code, out, err = run(capsys, *command, "--workdir", str(missing))
    assert code == 2 and f"{missing} does not exist; pass an existing folder" in err
    assert "Traceback" not in err and not missing.exists()


def test_usage_of_a_folder_without_sessions_says_so_not_a_table_of_zeros(tmp_path, capsys):
    code, out, _ = run(capsys, "usage", "--workdir", str(tmp_path))
    assert code == 0 and out == f"No sessions in {tmp_path / '.aca' / 'sessions'}.\n"
    assert run(capsys, "usage", "--workdir", str(tmp_path), "--json")[1] == "[]\n"


@pytest.mark.parametrize(
    "command", [["run", str(HELLO), "--dry-run"], ["sessions", "list"], ["resume", "--latest"]]
)
def test_an_empty_or_file_workdir_is_refused_not_read_as_the_current_folder(
    tmp_path, capsys, command
):
    """``--workdir "$DIR"`` with the variable unset was read as ".": the run worked on, and
    the listing reported about, whatever folder the command was started in."""
    code, out, err = run(capsys, *command, "--workdir", "")
    assert code == 2 and "Dry run" not in out and "Traceback" not in err
    assert "the folder is empty: name the repository's folder, or leave --workdir out" in err
    code, _, err = run(capsys, *command, "--workdir", str(HELLO))
    assert code == 2 and f"{HELLO} is a file: name the repository's folder" in err


def test_original_config_is_rejected_naming_keys(tmp_path, capsys):
    code, _, err = run(capsys, "config", "show", "--config", str(COMPAT / "default-config.toml"))
    assert code == 2 and "unknown key 'claude_config'" in err
    # The original's short flags, `aca run FILE -n -c CONFIG`, were "No such option: -n".
    work = make_repo(tmp_path / "work")
    code, out, err = run(capsys, "run", str(HELLO), "-n", "-c", str(HELLO_CONFIG), "-w", str(work))
    assert code == 0 and "nothing was run" in out, err


@pytest.mark.parametrize("name", ["tasks.md", "tasks.toml"])
def test_a_task_file_given_as_the_config_is_called_one(tmp_path, capsys, name):
    """``aca run --config tasks.md`` said "invalid TOML", and a TOML task file "unknown key
    'tasks'": neither said the file was a task file in the wrong place."""
    work = make_repo(tmp_path / "work")
    tasks = tmp_path / name
    tasks.write_text("- write a.txt\n" if name.endswith(".md") else '[[tasks]]\ntitle = "a"\n')
    code, out, err = run(capsys, "run", str(tasks), "--config", str(tasks), "-w", str(work), "-n")
    assert code == 2 and "Traceback" not in err and "nothing was run" not in out
    assert f"{tasks} is a task file, not a configuration: give it as the task file" in err


def test_a_task_file_named_aca_toml_in_the_workdir_is_called_one(tmp_path, capsys):
    # Found where aca looks for its configuration, it was "unknown key 'tasks' ... remove or
    # correct these keys": the user's tasks.
    work = make_repo(tmp_path / "work")
    (work / "aca.toml").write_text('[[tasks]]\ntitle = "a"\n')
    code, _, err = run(capsys, "run", str(HELLO), "-w", str(work), "-n")
    assert code == 2 and "remove" not in err.lower()
    assert f"{work / 'aca.toml'} is read as aca's configuration, but it is a task file" in err


def test_a_plan_given_as_the_config_is_called_one(tmp_path, capsys):
    # A dumped plan given with -c said "invalid TOML: Invalid statement (at line 1, column 1)".
    work = make_repo(tmp_path / "work")
    plan = tmp_path / "plan.json"
    code, _, err = run(capsys, "run", str(HELLO), "-n", "--dump-plan", str(plan), "-w", str(work))
    assert code == 0, err
    code, out, err = run(capsys, "run", str(HELLO), "-c", str(plan), "-w", str(work), "-n")
    assert code == 2 and "Traceback" not in err and "nothing was run" not in out
    assert f"runs with `--execution-plan {plan}`" in err


def _python(*code_lines: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "\n".join(code_lines)], capture_output=True, text=True, check=True
    )


def test_help_and_dry_run_never_import_prefect_or_vendor_sdks():
    result = _python(
        "import sys",
        "from aca_flows.cli import main",
        f"main(['--task-file', {str(HELLO)!r}, '--dry-run'])",
        "main(['--help'])",
        "heavy = [m for m in ('prefect', 'anthropic', 'openai', 'claude_agent_sdk')"
        " if m in sys.modules]",
        "print('HEAVY', heavy)",
    )
    assert "HEAVY []" in result.stdout


def test_help_imports_only_what_it_shows():
    # `aca --help` must start at once: no models, tables, event loop or HTTP client.
    result = _python(
        "import sys",
        "from aca_flows.cli import main",
        "main(['--help'])",
        "heavy = [m for m in ('pydantic', 'rich.table', 'asyncio', 'httpx', 'git')"
        " if m in sys.modules]",
        "print('HEAVY', heavy)",
    )
    assert "HEAVY []" in result.stdout


def test_python_dash_m_and_console_script_exit_codes(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "aca_flows", "--version"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and ok.stdout.startswith("aca ")
    bad = tmp_path / "tasks.toml"
    bad.write_text("[[tasks]]\ntitle = \n")
    aca = Path(sys.executable).with_name("aca")
    result = subprocess.run([str(aca), "--task-file", str(bad), "--dry-run"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert "invalid TOML" in result.stderr and "Traceback" not in result.stderr


def test_a_plan_that_can_never_progress_is_exit_2_before_anything_runs(tmp_path, capsys):
    tasks = tmp_path / "tasks.toml"
    tasks.write_text(
        '[plan]\nstrategy = "sequential"\n\n'
        '[[tasks]]\nid = "deploy"\ntitle = "Deploy"\ndepends_on = ["build"]\n\n'
        '[[tasks]]\nid = "build"\ntitle = "Build"\n'
    )
    code, out, err = run(capsys, "run", str(tasks), "--workdir", str(tmp_path))
    assert code == 2
    assert "'deploy' depends on 'build', which comes after it" in err
    assert "move 'build' above 'deploy'" in err
    assert "Traceback" not in err + out
    assert not (tmp_path / ".aca").exists()


def test_ctrl_c_inside_a_library_callback_while_prefect_starts_is_an_interrupt(
    monkeypatch, tmp_path, capsys
):
    """Before the flow handles signals, Ctrl-C raises KeyboardInterrupt wherever Python is,
    also inside pydantic's serializer callbacks, which re-raise it as their own error."""
    from pydantic import BaseModel, field_serializer

    import aca_flows.cli.run as run_cli

    class Parameters(BaseModel):
        task_file: str

        @field_serializer("task_file")
        def _hit_by_ctrl_c(self, value):
            raise KeyboardInterrupt

    def starting_prefect(options, session_id=None):
        Parameters(task_file="tasks.md").model_dump_json()

    monkeypatch.setattr(run_cli, "run_session", starting_prefect)
    monkeypatch.setattr(run_cli, "preflight", lambda *args: None)  # no provider to reach
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n")
    workdir = make_repo(tmp_path / "repo")
    code = main(["run", str(tasks), "--workdir", str(workdir), "--provider", "anthropic"])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize(
    "group", ["", "plan", "config", "sessions", "checkpoints", "providers", "server", "limits"]
)
def test_every_command_is_described_whole_in_help(capsys, group):
    """Click cuts a long first sentence to fit 80 columns ("it ends Cancelled, no..."): each
    command's line in a listing says all it has to say."""
    code, out, _ = run(capsys, *group.split(), "--help")
    listing = out.split("Commands:", 1)[1]
    assert code == 0 and listing.strip()
    assert "..." not in listing, listing


@pytest.mark.parametrize("options", [["--dry-run"], ["--json", "--budget-usd", "5"]])
def test_run_options_without_a_task_file_are_refused_not_answered_with_help(capsys, options):
    """`aca --dry-run` in a script that lost its file argument: exit 2 naming what is
    missing, not the help and exit 0 (a nightly job would count that as done)."""
    code, out, err = run(capsys, *options)
    assert code == 2 and "nothing to run: give a task file" in err and "Usage" not in out
    code, out, _ = run(capsys)
    assert code == 0 and "Usage: aca" in out  # plain `aca` still shows its help


@pytest.mark.parametrize("closed", [1, 2])
def test_a_command_started_with_stdout_or_stderr_closed_runs(tmp_path, closed):
    # Python gave the closed stream as None: the first write ended the run in a traceback
    # (stdout closed) or without a word and without --json's answer (stderr closed).
    done = subprocess.run(
        [sys.executable, "-m", "aca_flows", "run", str(HELLO), "--json", "--init-git",
         "--config", str(HELLO_CONFIG)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "ACA_WARM_RUNNER": "off"},
        preexec_fn=lambda: os.close(closed),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    if closed == 2:  # a script still reads its answer
        assert json.loads(done.stdout.splitlines()[-1])["status"] == "completed"


def test_a_home_folder_written_after_an_equals_sign_is_the_home(tmp_path, capsys, monkeypatch):
    # `--dump-plan=~/plan.json`: the shell leaves `~` as it is; aca made a folder named `~`.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys, "run", str(HELLO), "--dry-run", "--init-git", "--dump-plan=~/plan.json"
    )
    assert code == 0, err
    assert (tmp_path / "home" / "plan.json").is_file() and not (tmp_path / "~").exists()


def test_an_empty_skip_is_refused_not_read_as_approving_the_whole_plan(tmp_path, capsys):
    # `aca approve ID --skip "$TASKS"` with an empty variable approved every task.
    assert main(["approve", "20261207", "--skip", "", "-w", str(tmp_path)]) == 2
    assert "--skip names no task" in capsys.readouterr().err
