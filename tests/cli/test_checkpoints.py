"""``aca checkpoints list|create`` and ``aca --list-checkpoints`` on real sessions."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from aca_flows.cli import main
from aca_flows.cli.checkpoints import app, print_checkpoints
from aca_flows.errors import InputError
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.checkpoints import create_checkpoint, list_checkpoints
from aca_flows.session.errors import UnknownSessionError
from aca_flows.session.store import SessionStore

runner = CliRunner()


def make_session(workdir) -> SessionStore:
    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="A"), Task(id="b", title="B")])
    store = SessionStore.create(workdir, plan, provider="replay")
    store.task_started("a")
    store.task_completed("a")
    return store


def test_create_checkpoints_the_newest_session_by_default(tmp_path):
    with make_session(tmp_path):
        pass
    with make_session(tmp_path) as newest:
        pass
    result = runner.invoke(app, ["create", "before lunch", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (checkpoint,) = list_checkpoints(tmp_path)
    assert checkpoint.session_id == newest.session_id
    assert checkpoint.description == "before lunch"
    assert f"aca resume {checkpoint.id}" in result.output


def test_create_for_a_named_session_with_json(tmp_path):
    with make_session(tmp_path) as older:
        pass
    with make_session(tmp_path):
        pass
    result = runner.invoke(
        app, ["create", "x", "--session", older.session_id, "-w", str(tmp_path), "--json"]
    )
    data = json.loads(result.output)
    assert data["session_id"] == older.session_id
    assert (data["tasks_done"], data["tasks_total"], data["schema_version"]) == (1, 2, 1)


def test_an_empty_description_is_refused_and_no_checkpoint_made(tmp_path):
    with make_session(tmp_path):
        pass
    result = runner.invoke(app, ["create", "  ", "--workdir", str(tmp_path)])
    said = " ".join(result.output.replace("│", " ").split())  # typer's box, unwrapped
    assert result.exit_code == 2
    assert "the description is empty: say what this point of the work is" in said
    assert list_checkpoints(tmp_path) == []


def test_create_without_any_session_is_a_user_error(tmp_path):
    result = runner.invoke(app, ["create", "x", "--workdir", str(tmp_path)])
    assert isinstance(result.exception, InputError)
    assert result.exception.exit_code == 2
    # Before: "there is no session '(latest)' in ...", as if '(latest)' were an id.
    assert str(result.exception).startswith(
        f"no session to checkpoint: {tmp_path / '.aca' / 'sessions'} holds none."
    )
    assert "(latest)" not in str(result.exception)


def test_list_shows_the_newest_sessions_checkpoints_or_all(tmp_path):
    with make_session(tmp_path) as older:
        old_cp = create_checkpoint(older, "auto")
    with make_session(tmp_path) as newer:
        new_cp = create_checkpoint(newer, "manual", "my description")
    result = runner.invoke(app, ["list", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if new_cp.id in line)
    for expected in (newer.session_id, "1/2", "manual", "my description"):
        assert expected in row
    assert old_cp.id not in result.output
    every = runner.invoke(app, ["list", "--all-sessions", "--workdir", str(tmp_path)])
    assert old_cp.id in every.output and new_cp.id in every.output
    one = runner.invoke(app, ["list", "--session", older.session_id, "-w", str(tmp_path)])
    assert old_cp.id in one.output and new_cp.id not in one.output


def test_list_json_and_empty(tmp_path):
    # It offered `aca checkpoints create`, which refuses a workdir without a session.
    empty = runner.invoke(app, ["list", "-w", str(tmp_path)]).output
    assert "No checkpoints in" in empty and "no session yet" in empty
    assert "checkpoints create" not in empty
    with make_session(tmp_path) as store:
        cp = create_checkpoint(store, "end")
    result = runner.invoke(app, ["list", "-w", str(tmp_path), "--json"])
    assert [c["id"] for c in json.loads(result.output)] == [cp.id]


def test_print_checkpoints_for_the_root_flag(tmp_path, capsys):
    with make_session(tmp_path) as store:
        cp = create_checkpoint(store, "interrupt")
    print_checkpoints(tmp_path, all_sessions=True)
    out = capsys.readouterr().out
    assert cp.id in out and store.session_id in out and "interrupt" in out
    # `aca --list-checkpoints --json` printed the table: its --json was dropped.
    assert main(["--list-checkpoints", "--json", "-w", str(tmp_path)]) == 0
    assert [c["id"] for c in json.loads(capsys.readouterr().out)] == [cp.id]


def test_the_root_listing_refuses_run_options_it_would_ignore(tmp_path, capsys):
    # `aca --list-checkpoints -t tasks.md` listed the checkpoints and said nothing of the file.
    assert main(["--list-checkpoints", "-t", "tasks.md", "--dry-run", "-w", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "so --task-file, --dry-run would do nothing" in err and "Traceback" not in err


def test_an_unknown_session_is_a_user_error(tmp_path):
    result = runner.invoke(app, ["list", "--session", "nope", "-w", str(tmp_path)])
    assert isinstance(result.exception, UnknownSessionError)
    assert "aca sessions list" in str(result.exception)


def test_create_names_the_resume_that_finds_the_checkpoint_from_another_folder(
    tmp_path, monkeypatch, capsys
):
    import re
    import shlex

    from aca_flows.cli import main

    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    with make_session(repo) as store:
        pass
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["create", "before lunch", "--workdir", str(repo)])
    assert result.exit_code == 0, result.output
    (checkpoint,) = list_checkpoints(repo)
    command = re.search(r"Resume with `([^`]*)`", result.output)[1]
    assert command == f"aca resume {checkpoint.id} --workdir {repo}"
    # Run from here, it finds the checkpoint's session (held by a run: refused, naming it).
    with SessionStore.open(repo, store.session_id):
        assert main(shlex.split(command)[1:]) == 2
    assert f"session {store.session_id} is in use by pid" in capsys.readouterr().err


def test_a_description_is_listed_without_what_the_terminal_would_act_on(tmp_path):
    # The list wrote the user's ESC byte to the terminal (its screen cleared).
    with make_session(tmp_path):
        pass
    assert runner.invoke(app, ["create", "x \x1b[2J", "--workdir", str(tmp_path)]).exit_code == 0
    listed = runner.invoke(app, ["list", "--workdir", str(tmp_path)])
    assert "\x1b[2J" not in listed.output and "\\x1b[2J" in listed.output
