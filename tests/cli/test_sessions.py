"""``aca sessions list|show`` on sessions written by the store."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest
from typer.testing import CliRunner

from aca_flows.cli.sessions import app
from aca_flows.errors import AcaError
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers.base import Usage
from aca_flows.session.checkpoints import create_checkpoint
from aca_flows.session.events import TaskResult
from aca_flows.session.store import SessionStore

runner = CliRunner()


def make_session(workdir, name="Nightly fixes") -> SessionStore:
    plan = ExecutionPlan(
        name=name,
        tasks=[
            Task(id="setup", title="Set up the project"),
            Task(id="feature", title="Add the feature", dependencies=["setup"]),
        ],
    )
    store = SessionStore.create(workdir, plan, provider="anthropic", model="claude-x")
    store.task_started("setup", provider="anthropic", model="claude-x")
    store.call_recorded(
        provider="anthropic",
        model="claude-x",
        usage=Usage(input_tokens=1200, output_tokens=300),
        cost_usd=0.042,
        task_id="setup",
        attempt=1,
    )
    store.task_completed("setup", TaskResult(commit="1234567890abcdef", summary="ok"))
    store.subtasks_added("feature", [Task(id="feature.api", title="API part")])
    return store


def ended(store: SessionStore, status: str, **extra) -> dict:
    """The summary a run that ended ``status`` hands ``show_summary``."""
    session = store.session
    return {
        "session_id": session.id,
        "status": status,
        "branch": session.branch,
        "tasks": {},
        "stopped_reason": session.status_reason,
        **extra,
    }


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=True)


def test_list_shows_each_session_with_progress_tokens_and_cost(tmp_path):
    with make_session(tmp_path) as store:
        store.finish("completed")
    result = invoke("list", "--workdir", str(tmp_path))
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if store.session_id in line)
    # feature got a subtask: it is a group now, and the subtask is what runs and is counted.
    for expected in ("Nightly fixes", "1 completed, 1 pending of 2", "1,500", "$0.0420"):
        assert expected in row


def test_a_spend_with_calls_aca_has_no_price_for_says_so_in_every_table(tmp_path):
    from aca_flows.cli.sessions import console, usage_table

    with make_session(tmp_path) as store:
        for _ in range(2):
            store.call_recorded(
                provider="ollama", model="llama-x", usage=Usage(input_tokens=9), cost_usd=0,
                task_id="setup", attempt=1, unpriced=True,
            )  # fmt: skip
    listed = invoke("list", "--workdir", str(tmp_path)).output
    assert "$0.0420 + 2 unpriced calls" in next(r for r in listed.splitlines() if "Nightly" in r)
    out = console()
    with out.capture() as table:
        out.print(usage_table(store.session.usage, title="usage"))
    lines = table.get().splitlines()
    assert "$0.0000 + 2 unpriced calls" in next(line for line in lines if "llama-x" in line)
    assert "$0.0420 + 2 unpriced calls" in next(line for line in lines if "total" in line)


def test_list_json(tmp_path):
    with make_session(tmp_path) as store:
        pass
    result = invoke("list", "--workdir", str(tmp_path), "--json")
    data = json.loads(result.output)
    (session,) = data["sessions"]
    assert session["id"] == store.session_id
    assert session["status"] == "interrupted"  # "running" on disk, but its process is gone
    assert (session["tasks_done"], session["tasks_total"], session["tokens"]) == (1, 2, 1500)
    assert session["branch"] == f"aca/{store.session_id}"


def test_list_of_an_empty_workdir_says_so(tmp_path):
    result = invoke("list", "--workdir", str(tmp_path))
    assert result.exit_code == 0
    assert "No sessions in" in result.output


def test_a_subfolder_of_the_repository_is_refused_naming_its_top_level(tmp_path):
    # Read as a workdir of its own, it said "No sessions" beside a repository full of them.
    (tmp_path / ".git").mkdir()
    with make_session(tmp_path) as store:
        store.finish("completed")
    (tmp_path / "src").mkdir()
    result = invoke("list", "--workdir", str(tmp_path / "src"))
    assert isinstance(result.exception, AcaError) and result.exception.exit_code == 2
    assert f"is inside the git repository {tmp_path}, not its top level" in str(result.exception)
    assert f"run aca with --workdir {tmp_path}." in str(result.exception)
    # A home kept in git holds ~/.aca (the server's, the clones) and no sessions: not refused.
    home = tmp_path / "home"
    (home / ".git").mkdir(parents=True)
    (home / ".aca" / "server").mkdir(parents=True)
    (home / "notes").mkdir()
    assert invoke("list", "--workdir", str(home / "notes")).exit_code == 0


def test_list_reports_a_damaged_session_and_still_lists_the_others(tmp_path):
    with make_session(tmp_path) as good:
        pass
    with make_session(tmp_path, name="broken") as bad:
        pass
    bad.paths.events_jsonl.unlink()
    result = runner.invoke(app, ["list", "--workdir", str(tmp_path)])
    assert result.exit_code == 0
    assert good.session_id in result.stdout
    assert "journal is missing" in result.stderr
    # With no readable session left, the list does not claim there are none.
    good.paths.events_jsonl.unlink()
    result = runner.invoke(app, ["list", "--workdir", str(tmp_path)])
    assert "No sessions in" not in result.stdout
    assert "No readable sessions in" in result.stdout and "2 damaged sessions" in result.stdout


def test_usage_and_resume_latest_name_a_damaged_session_not_none(tmp_path):
    # `aca usage` said "No sessions" (its spend left out unsaid) and `aca resume --latest`
    # that the folder "holds none", beside an unfinished session with a damaged journal.
    from aca_flows.cli.app import app as aca
    from aca_flows.session.checkpoints import resolve_resume_target
    from aca_flows.session.errors import NothingToResumeError

    with make_session(tmp_path) as store:
        pass
    store.paths.events_jsonl.unlink()
    result = runner.invoke(aca, ["usage", "--workdir", str(tmp_path)])
    assert result.exit_code == 0
    assert "journal is missing" in result.stderr
    assert "No readable sessions in" in result.stdout and "1 damaged session" in result.stdout
    with pytest.raises(NothingToResumeError) as refused:
        resolve_resume_target(tmp_path, None, latest=True)
    assert "none of them, and 1 session cannot be read: `aca sessions list` says" in str(
        refused.value
    )


def test_show_has_tasks_branch_checkpoint_and_costs(tmp_path):
    with make_session(tmp_path) as store:
        checkpoint = create_checkpoint(store, "auto")
    result = invoke("show", store.session_id, "--workdir", str(tmp_path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"aca/{store.session_id}" in out
    assert checkpoint.id in out
    assert "1 completed, 1 pending of 2" in out
    setup = next(line for line in out.splitlines() if "Set up the project" in line)
    assert "completed" in setup and "1234567890" in setup and "1,500" in setup
    assert any("feature.api" in line and "pending" in line for line in out.splitlines())
    costs = next(line for line in out.splitlines() if "claude-x" in line and "1,200" in line)
    assert "anthropic" in costs and "$0.0420" in costs


def test_a_task_the_task_file_marked_done_reads_as_done_before_not_as_work(tmp_path):
    from aca_flows.plan.models import TaskStatus

    done = TaskStatus(state="completed")  # as `- [x]` or `done = true` loads it
    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="Old", status=done)])
    with SessionStore.create(tmp_path, plan, provider="anthropic") as store:
        pass
    result = invoke("show", store.session_id, "--workdir", str(tmp_path))
    row = next(line for line in result.output.splitlines() if "Old" in line)
    assert "completed before (in the task file)" in row


def test_a_failed_checks_output_shows_its_last_lines_not_a_screenful(tmp_path):
    output = "\n".join(f"line {n}" for n in range(1, 801))
    with make_session(tmp_path) as store:
        store.task_failed(
            "feature.api",
            f"verify command `pytest` failed (exit code 1); nothing was merged. Output:\n{output}",
        )
    result = invoke("show", store.session_id, "--workdir", str(tmp_path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "line 800" in out and "line 796" in out and "line 795" not in out
    assert "Output, its last 5 lines" in out
    assert len(out.splitlines()) < 60  # before: one table row of 800 lines


def test_names_and_titles_are_printed_as_written_not_as_markup(tmp_path):
    # "[/]" and "[red]" are rich markup: printed as markup, "[/]" crashed the run's summary.
    with make_session(tmp_path, name="Fix [/] and [red]parsing") as store:
        store.subtasks_added("feature", [Task(id="b", title="Handle [bold] in `--opt[=x]`")])
        store.finish("completed")
    listed = invoke("list", "--workdir", str(tmp_path))
    shown = invoke("show", store.session_id, "--workdir", str(tmp_path))
    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        assert "Fix [/] and [red]parsing" in result.output
    assert "Handle [bold] in `--opt[=x]`" in shown.output


def test_show_accepts_a_prefix_and_prints_json(tmp_path):
    with make_session(tmp_path) as store:
        pass
    result = invoke("show", store.session_id[:15], "--workdir", str(tmp_path), "--json")
    data = json.loads(result.output)
    assert data["session"]["id"] == store.session_id
    assert data["session"]["tasks"]["setup"]["commit"] == "1234567890abcdef"
    # Its process is gone: the record's "running" is not shown as the session's status.
    assert data["status_now"] == data["session"]["status"] == "interrupted"
    assert data["last_checkpoint"] is None


def test_show_of_an_unknown_id_is_a_user_error_that_says_how_to_find_ids(tmp_path):
    result = invoke("show", "nope", "--workdir", str(tmp_path))
    assert isinstance(result.exception, AcaError)
    assert result.exception.exit_code == 2
    assert "aca sessions list" in str(result.exception)


def test_show_of_a_checkpoint_id_names_its_session_and_the_commands(tmp_path):
    with make_session(tmp_path) as store:
        checkpoint = create_checkpoint(store, "manual", "before lunch")
    result = runner.invoke(app, ["show", checkpoint.id, "-w", str(tmp_path)])
    assert isinstance(result.exception, AcaError) and result.exception.exit_code == 2
    said = str(result.exception)
    assert f"{checkpoint.id} is a checkpoint of session {store.session_id}" in said
    assert f"`aca sessions show {store.session_id} --workdir {tmp_path}`" in said
    assert f"`aca resume {checkpoint.id} --workdir {tmp_path}`" in said


def test_sessions_commands_do_not_import_prefect():
    import subprocess
    import sys

    code = (
        "import sys, aca_flows.cli.sessions, aca_flows.cli.checkpoints;"
        "print('prefect' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_show_tells_a_no_change_completion_apart_from_committed_work(tmp_path):
    with make_session(tmp_path) as store:
        store.task_started("feature.api", provider="anthropic", model="claude-x")
        store.task_completed(
            "feature.api",
            TaskResult(
                outcome="no_change",
                no_change_reason="the API already exists",
                summary="the API already exists",
            ),
        )
    result = invoke("show", store.session_id, "--workdir", str(tmp_path))

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    api = next(line for line in lines if "API part" in line)
    assert "completed, no change" in api
    setup = next(line for line in lines if "Set up the project" in line)
    assert "no change" not in setup
    assert any("feature.api: the API already exists" in line for line in lines)
    data = json.loads(invoke("show", store.session_id, "--workdir", str(tmp_path), "--json").output)
    task = data["session"]["tasks"]["feature.api"]
    assert task["outcome"] == "no_change" and task["commit"] is None


def test_names_titles_and_reasons_cannot_write_over_the_terminal(tmp_path):
    # A task file's name and titles, an agent's or a check's words in a reason: an escape
    # sequence in them cleared the screen of `aca sessions show` and wrote what it liked.
    with make_session(tmp_path, name="Nightly\x1b[2J") as store:
        store.subtasks_added("feature", [Task(id="b", title="Fix\x1b[8m hidden\nline")])
        store.task_failed("b", "verify command `pytest` failed. Output:\n\x1b[1A\x1b[2Kall passed")
        store.finish("failed")
    listed = invoke("list", "--workdir", str(tmp_path))
    shown = invoke("show", store.session_id, "--workdir", str(tmp_path))
    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output
        assert "Nightly\\x1b[2J" in result.output
    assert "Fix\\x1b[8m hidden line" in shown.output
    assert "\\x1b[1A\\x1b[2Kall passed" in shown.output


def test_an_agents_question_cannot_write_over_the_terminal_of_the_list_or_the_log(tmp_path):
    import logging

    from aca_flows.flows import task_run  # noqa: F401  (its filters on Prefect's loggers)
    from aca_flows.session.events import TaskQuestion

    store = make_session(tmp_path)
    question = "\x1b]0;PWNED\x07Tabs?\x1b[2J"
    store.record(TaskQuestion(task_id="feature", question=question, flow_run_id=str(uuid4())))

    listed = invoke("list", "--workdir", str(tmp_path))
    assert "\x1b" not in listed.output and "asks: \\x1b]0;PWNED\\x07Tabs?" in listed.output
    # The run's log lines quote it too ("task failed: the agent needs a person ...").
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("prefect.task_runs")
    logger.addHandler(handler)
    try:
        said = "task failed: the agent needs a person to decide: %s"
        logger.error(said, question, extra={"send_to_api": False})
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage().endswith("decide: \\x1b]0;PWNED\\x07Tabs?\\x1b[2J")


def test_the_runs_last_line_cannot_write_over_the_terminal(tmp_path, capsys):
    # The line a run ends with quotes why it stopped: a server's or an agent's words.
    from aca_flows.cli.options import RunOptions
    from aca_flows.cli.run_summary import show_summary

    with make_session(tmp_path) as store:
        store.finish("failed", "provider said \x1b[2Jall done")

    show_summary(ended(store, "failed"), RunOptions(workdir=tmp_path))

    out = capsys.readouterr().out
    assert "\x1b" not in out and "Why: provider said \\x1b[2Jall done." in out


def test_a_budget_stops_resume_leaves_room_for_each_task_it_starts_at_once(tmp_path, capsys):
    # "N leaves room for about one more" was room for none: the resume started two tasks at
    # once, each paid its first calls, and the budget stopped both.
    from aca_flows.cli.options import RunOptions
    from aca_flows.cli.run_summary import show_summary

    plan = ExecutionPlan(
        name="Nightly",
        tasks=[Task(id=name, title=f"Task {name}") for name in ("a", "b", "c")],
    )
    with SessionStore.create(tmp_path, plan, provider="anthropic", model="claude-x") as store:
        store.task_started("a", provider="anthropic", model="claude-x")
        usage = Usage(input_tokens=1200, output_tokens=300)
        store.call_recorded(
            provider="anthropic",
            model="claude-x",
            usage=usage,
            cost_usd=0.012,
            task_id="a",
            attempt=1,
        )
        store.task_completed("a", TaskResult(commit="1234567890abcdef", summary="ok"))
        store.finish("stopped", "budget of $0.01 reached")
    summary = ended(store, "stopped", budget_usd=0.01, cost_usd=0.012)

    show_summary(summary, RunOptions(workdir=tmp_path))

    out = capsys.readouterr().out
    assert "so N = 0.036 leaves room for the 2 tasks the resume starts at once." in out


def test_a_budget_stop_before_any_task_finished_names_no_room_from_a_cut_task(tmp_path, capsys):
    # The one task that had cost anything was cut short by the budget: "N leaves room" from
    # its $0.0006 was room for half a task, and the resume stopped again.
    from aca_flows.cli.options import RunOptions
    from aca_flows.cli.run_summary import show_summary

    plan = ExecutionPlan(name="Nightly", tasks=[Task(id="a", title="Task a")])
    with SessionStore.create(tmp_path, plan, provider="anthropic", model="claude-x") as store:
        store.task_started("a", provider="anthropic", model="claude-x")
        store.call_recorded(
            provider="anthropic",
            model="claude-x",
            usage=Usage(input_tokens=100, output_tokens=20),
            cost_usd=0.0006,
            task_id="a",
            attempt=1,
        )
        store.finish("stopped", "budget of $0.0001 reached")
    summary = ended(store, "stopped", budget_usd=0.0001, cost_usd=0.0006)

    show_summary(summary, RunOptions(workdir=tmp_path))

    out = capsys.readouterr().out
    assert "no task of this session has finished yet, and one had cost $0.0006 when the" in out
    assert "leaves room" not in out


def test_a_session_whose_process_was_killed_names_its_resume_and_runs_no_task(tmp_path):
    # Killed outright (SIGKILL), a run records no end: "interrupted" with no way on, and its
    # task "in progress" though nothing ran it any more.
    plan = ExecutionPlan(name="Nightly", tasks=[Task(id="a", title="A"), Task(id="b", title="B")])
    with SessionStore.create(tmp_path, plan, provider="replay") as store:
        store.task_started("a", provider="replay", model="m")
    shown = invoke("show", store.session_id, "--workdir", str(tmp_path))
    assert shown.exit_code == 0, shown.output
    assert (
        "interrupted (its process ended without recording its end; "
        f"`aca resume {store.session_id} --workdir {tmp_path}` continues)"
    ) in " ".join(shown.output.split())
    assert "interrupted (starts again on resume)" in " ".join(shown.output.split())
    assert "in_progress" not in shown.output
    # Its counts say so too: nothing is in progress, in show and in list.
    assert "1 interrupted, 1 pending of 2" in shown.output
    listed = invoke("list", "--workdir", str(tmp_path))
    assert "1 interrupted, 1 pending of 2" in listed.output and "progress" not in listed.output
    counts = {"interrupted": 1, "pending": 1}
    (row,) = json.loads(invoke("list", "--workdir", str(tmp_path), "--json").output)["sessions"]
    assert row["task_counts"] == counts
    shown = invoke("show", store.session_id, "--workdir", str(tmp_path), "--json").output
    assert json.loads(shown)["task_counts"] == counts


def test_a_killed_split_lists_its_parent_as_waiting_for_its_subtasks_not_completed(tmp_path):
    # Its own work landed, then it proposed subtasks; killed while one ran, the parent was
    # listed "completed" above its interrupted subtask.
    plan = ExecutionPlan(name="Nightly", tasks=[Task(id="p", title="Split")])
    with SessionStore.create(tmp_path, plan, provider="replay") as store:
        store.task_started("p", provider="replay", model="m")
        store.subtasks_added("p", [Task(id="p.x", title="X"), Task(id="p.y", title="Y")])
        store.task_completed("p", TaskResult(commit="c0ffee", summary="split"))
        store.task_started("p.x", provider="replay", model="m")
    shown = " ".join(invoke("show", store.session_id, "--workdir", str(tmp_path)).output.split())
    assert "its own work landed; it ends with its subtasks" in shown
    assert "interrupted (starts again on resume)" in shown and " completed" not in shown
    assert "1 interrupted, 1 pending of 2" in shown
