"""Checkpoints: written, listed, found across sessions; resume targets; the automatic policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from aca_flows.errors import InputError
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.checkpoints import (
    CheckpointPolicy,
    create_checkpoint,
    create_manual_checkpoint,
    find_checkpoint,
    list_checkpoints,
    resolve_resume_target,
)
from aca_flows.session.errors import (
    NothingToResumeError,
    UnknownCheckpointError,
    UnknownSessionError,
)
from aca_flows.session.events import TaskResult
from aca_flows.session.reading import load_session
from aca_flows.session.store import SessionStore
from aca_flows.settings import AcaConfig

T0 = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def new_session(workdir, *, now=None, finish=None) -> SessionStore:
    plan = ExecutionPlan(name="p", tasks=[Task(id=i, title=i) for i in ("a", "b", "c")])
    store = SessionStore.create(workdir, plan, provider="replay", now=now)
    store.task_started("a")
    store.task_completed("a", TaskResult(commit="abc"))
    if finish:
        store.finish(finish)
    return store


def test_tasks_done_leaves_out_what_a_failure_skipped(tmp_path):
    # A resume runs b again, and c after it: they are not done, whatever "skipped" says.
    with new_session(tmp_path) as store:
        store.task_started("b")
        store.task_failed("b", "verify failed")
        store.task_skipped("c", "dependency `b` failed")
        checkpoint = create_checkpoint(store, "end", now=T0)
        assert (checkpoint.tasks_done, checkpoint.tasks_total) == (1, 3)


def test_a_checkpoint_is_a_file_and_a_journal_event(tmp_path):
    with new_session(tmp_path) as store:
        checkpoint = create_checkpoint(store, "auto", now=T0)
        path = store.paths.checkpoint(checkpoint.id)
        data = json.loads(path.read_text())
        assert data["schema_version"] == 1
        assert data["session_id"] == store.session_id
        assert (data["tasks_done"], data["tasks_total"]) == (1, 3)
        assert data["completed_task_ids"] == ["a"]
        assert data["trigger"] == "auto"
        assert data["description"] == "automatic: 1 completed, 2 pending of 3"
        assert checkpoint.id.startswith("cp-20261125-180000-")
    session = load_session(tmp_path, store.session_id)
    assert session.last_checkpoint.id == checkpoint.id
    last_event = store.paths.events_jsonl.read_text().splitlines()[-1]
    assert json.loads(last_event)["type"] == "checkpoint_created"


def test_checkpoints_are_listed_newest_first_per_session_or_all(tmp_path):
    with new_session(tmp_path, now=T0) as first:
        cp1 = create_checkpoint(first, "auto", now=T0 + timedelta(minutes=1))
        cp2 = create_checkpoint(first, "end", now=T0 + timedelta(minutes=3))
    with new_session(tmp_path) as second:
        cp3 = create_checkpoint(second, "manual", "before the refactor", now=T0 + timedelta(2))
    assert [c.id for c in list_checkpoints(tmp_path, first.session_id)] == [cp2.id, cp1.id]
    assert [c.id for c in list_checkpoints(tmp_path)] == [cp3.id, cp2.id, cp1.id]
    assert list_checkpoints(tmp_path / "elsewhere") == []


def test_a_checkpoint_is_found_by_id_or_prefix_in_any_session(tmp_path):
    with new_session(tmp_path) as first:
        pass
    with new_session(tmp_path) as second:
        wanted = create_checkpoint(second, "manual", "here", now=T0)
    assert find_checkpoint(tmp_path, wanted.id).session_id == second.session_id
    assert find_checkpoint(tmp_path, wanted.id[:-2]).id == wanted.id
    with pytest.raises(UnknownCheckpointError) as caught:
        find_checkpoint(tmp_path, "cp-nope")
    assert "aca checkpoints list --all-sessions" in str(caught.value)
    assert first.session_id != second.session_id


def test_a_manual_checkpoint_works_while_another_writer_holds_the_session(tmp_path):
    with new_session(tmp_path) as running:
        checkpoint = create_manual_checkpoint(tmp_path, "lunch break")
        assert checkpoint.session_id == running.session_id
        assert checkpoint.trigger == "manual" and checkpoint.description == "lunch break"
        assert checkpoint.tasks_done == 1
        running.task_started("b")  # the writer carries on undisturbed
    assert list_checkpoints(tmp_path)[0].id == checkpoint.id


def test_a_manual_checkpoint_needs_a_session(tmp_path):
    with pytest.raises(UnknownSessionError, match="no session to checkpoint"):
        create_manual_checkpoint(tmp_path, "nothing here")


def test_resume_target_from_a_checkpoint_id_or_a_session_id(tmp_path):
    with new_session(tmp_path) as store:
        checkpoint = create_checkpoint(store, "interrupt", now=T0)
    by_checkpoint = resolve_resume_target(tmp_path, checkpoint.id)
    assert by_checkpoint.session_id == store.session_id
    assert by_checkpoint.checkpoint == checkpoint
    by_session = resolve_resume_target(tmp_path, store.session_id)
    assert by_session.session_id == store.session_id and by_session.checkpoint is None
    # The checkpoint id without its "cp-" prefix is recognised too.
    assert resolve_resume_target(tmp_path, checkpoint.id[3:]).checkpoint == checkpoint


def test_resume_latest_picks_the_newest_unfinished_session(tmp_path):
    with new_session(tmp_path, now=T0, finish="interrupted") as older:
        pass
    with new_session(tmp_path, now=T0 + timedelta(hours=1), finish="completed"):
        pass
    assert resolve_resume_target(tmp_path, latest=True).session_id == older.session_id


def test_resume_latest_with_repo_picks_a_completed_session_whose_push_failed(tmp_path):
    # Its run exited 4 (not delivered): "start new work with `aca run`" would pay again.
    with new_session(tmp_path, now=T0, finish="completed") as undelivered:
        undelivered.branch_pushed("/srv/r.git", "abc", pushed=False, error="hook refused it")
    with new_session(tmp_path, now=T0 + timedelta(hours=1), finish="completed"):
        pass
    picked = resolve_resume_target(tmp_path, latest=True, pushes=True)
    assert picked.session_id == undelivered.session_id
    # Without --repo the resume would push nothing: nothing to resume.
    with pytest.raises(NothingToResumeError):
        resolve_resume_target(tmp_path, latest=True)


def test_resume_explains_what_it_cannot_resolve(tmp_path):
    with pytest.raises(NothingToResumeError, match="it holds none. Start new work with `aca run`"):
        resolve_resume_target(tmp_path, latest=True)
    with new_session(tmp_path, now=T0, finish="completed"):
        pass
    with pytest.raises(NothingToResumeError, match="every session there completed or is running"):
        resolve_resume_target(tmp_path, latest=True)
    with pytest.raises(InputError, match="not both"):
        resolve_resume_target(tmp_path, "x", latest=True)
    with pytest.raises(UnknownSessionError) as caught:
        resolve_resume_target(tmp_path, "20991231")
    message = str(caught.value)
    assert "no session or checkpoint" in message
    assert "aca checkpoints list --all-sessions" in message


def test_unreadable_checkpoint_files_are_left_out(tmp_path, caplog):
    with new_session(tmp_path) as store:
        good = create_checkpoint(store, "auto", now=T0)
    (store.paths.checkpoints_dir / "cp-broken.json").write_text("{half")
    (store.paths.checkpoints_dir / "cp-other.json").write_text('{"id": 1}')
    assert [c.id for c in list_checkpoints(tmp_path)] == [good.id]
    # Said for a person, with what to do: it was pydantic's report, three lines a file.
    assert "cp-broken.json: skipped, not a readable checkpoint (it is not JSON); remove it" in (
        caplog.text
    )
    assert (
        "cp-other.json: skipped, not a readable checkpoint (its JSON is not a checkpoint: id"
        in (caplog.text)
    )
    assert "pydantic" not in caplog.text


def test_policy_is_due_after_the_interval_or_after_n_tasks():
    policy = CheckpointPolicy(interval_minutes=30, every_tasks=5, now=T0, completed_count=2)
    assert not policy.due(T0 + timedelta(minutes=29), 6)
    assert policy.due(T0 + timedelta(minutes=30), 2)
    assert policy.due(T0 + timedelta(minutes=1), 7)
    policy.mark(T0 + timedelta(minutes=10), 7)
    assert not policy.due(T0 + timedelta(minutes=39), 11)
    assert policy.due(T0 + timedelta(minutes=40), 7)


def test_policy_reads_the_session_configuration():
    config = AcaConfig.model_validate(
        {"session": {"checkpoint_interval_minutes": 5, "checkpoint_every_tasks": 2}}
    )
    policy = CheckpointPolicy.from_config(config.session, now=T0)
    assert policy.due(T0, 2) and not policy.due(T0 + timedelta(minutes=4), 1)
    assert policy.due(T0 + timedelta(minutes=5), 0)
