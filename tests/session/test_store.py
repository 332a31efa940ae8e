"""The session store: session.json follows the journal, survives crashes, is rebuilt from it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from aca_flows.errors import AcaError
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.providers.base import Usage
from aca_flows.session.errors import SessionFileError, UnknownSessionError
from aca_flows.session.events import (
    SessionFinished,
    SessionResumed,
    SessionStarted,
    TaskResult,
    TaskStarted,
)
from aca_flows.session.fold import fold_events
from aca_flows.session.layout import AcaDir
from aca_flows.session.reading import latest_session_id, list_sessions, load_session, scan_sessions
from aca_flows.session.store import SessionStore


def make_plan(*ids: str, name: str = "Demo plan") -> ExecutionPlan:
    return ExecutionPlan(name=name, tasks=[Task(id=i, title=f"Task {i}") for i in ids])


def pay(
    store: SessionStore,
    tokens: int,
    cost: float,
    provider: str = "anthropic",
    model: str = "m-1",
    **owner,
) -> None:
    """One provider call on the ledger."""
    store.call_recorded(
        provider=provider,
        model=model,
        usage=Usage(input_tokens=tokens, output_tokens=tokens // 2),
        cost_usd=cost,
        **owner,
    )


def finish_task(store: SessionStore, task_id: str, tokens: int = 100, cost: float = 0.5) -> None:
    store.task_started(task_id, provider="anthropic", model="m-1")
    pay(store, tokens, cost, task_id=task_id, attempt=1)
    store.task_completed(task_id, TaskResult(commit=f"c0ffee-{task_id}", summary="done"))


def read_json(path):
    return json.loads(path.read_text())


def test_create_writes_the_layout_with_schema_versions(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay", model="m") as store:
        paths = store.paths
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", store.session_id)
        assert paths.root == tmp_path / ".aca" / "sessions" / store.session_id
        assert store.branch == f"aca/{store.session_id}"
        session = read_json(paths.session_json)
        assert session["schema_version"] == 1
        assert session["name"] == "Demo plan"
        assert session["status"] == "running"
        assert [t["id"] for t in session["plan"]["tasks"]] == ["a", "b"]
        config = read_json(paths.session_config_json)
        assert config == {"schema_version": 1, "provider": "replay", "model": "m", "options": {}}
        (line,) = paths.events_jsonl.read_text().splitlines()
        assert json.loads(line)["type"] == "session_started"
        assert json.loads(line)["schema_version"] == 1


def test_a_given_name_wins_over_the_plans(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay", name="nightly") as s:
        assert s.session.name == "nightly"


def test_events_update_statuses_usage_and_totals(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a", "b", "c"), provider="anthropic") as store:
        finish_task(store, "a", tokens=100, cost=0.25)
        store.task_started("b", provider="openai", model="gpt")
        pay(store, 40, 0.1, "openai", "gpt", task_id="b", attempt=1)
        store.task_failed("b", "tests failed")
        store.task_skipped("c", "not needed")
        pay(store, 10, 0.05, purpose="parse")  # planning, outside any task
        store.finish("failed", "1 task failed")
    session = load_session(tmp_path, store.session_id)
    assert [str(t.status) for t in session.plan.tasks] == [
        "completed",
        "failed: tests failed",
        "skipped: not needed",
    ]
    assert session.tasks["a"].commit == "c0ffee-a"
    assert session.tasks["a"].attempts == 1
    assert session.tasks_done == 2 and session.tasks_total == 3
    assert session.status == "failed" and session.status_reason == "1 task failed"
    by_model = {(e.provider, e.model): (e.total_tokens, e.cost_usd) for e in session.usage}
    assert by_model == {("anthropic", "m-1"): (165, 0.3), ("openai", "gpt"): (60, 0.1)}
    assert session.cost_usd == pytest.approx(0.4)
    assert session.tasks["b"].cost_usd == pytest.approx(0.1)
    assert session.tasks["a"].usage[0].calls == 1


def test_spend_of_failed_and_retried_attempts_stays_on_the_bill(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a"), provider="anthropic") as store:
        store.task_started("a")
        for _ in range(3):
            pay(store, 10, 0.01, task_id="a", attempt=1)
        store.task_failed("a", "anthropic: temporarily unavailable (529)", will_retry=True)
        store.task_started("a")
        pay(store, 10, 0.01, task_id="a", attempt=2)
        store.task_completed("a", TaskResult(commit="c0ffee"))
        session_id = store.session_id
    session = load_session(tmp_path, session_id)
    assert session.tasks["a"].attempts == 2
    assert session.tasks["a"].usage[0].calls == 4
    assert session.cost_usd == pytest.approx(0.04)
    lines = (AcaDir(tmp_path).session(session_id).events_jsonl).read_text().splitlines()
    calls = [json.loads(line) for line in lines if json.loads(line)["type"] == "call"]
    assert [(c["task_id"], c["attempt"]) for c in calls] == [("a", 1)] * 3 + [("a", 2)]


def test_completing_a_task_twice_counts_it_once(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        finish_task(store, "a", cost=1.0)
        lines = store.paths.events_jsonl.read_text().count("\n")
        again = store.task_completed("a", TaskResult(commit="other"))
        assert again is False
        assert store.paths.events_jsonl.read_text().count("\n") == lines
    session = load_session(tmp_path, store.session_id)
    assert session.cost_usd == 1.0
    assert session.tasks["a"].commit == "c0ffee-a"


def test_a_completed_task_cannot_start_again(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        finish_task(store, "a")
        before = store.paths.events_jsonl.read_bytes()
        with pytest.raises(ValueError, match="never runs again"):
            store.task_started("a")
        with pytest.raises(ValueError, match="not in the session's plan"):
            store.task_started("nope")
        assert store.paths.events_jsonl.read_bytes() == before


def test_a_refused_event_leaves_the_record_as_the_journal_has_it(tmp_path):
    # Events are applied in place: one the session cannot take must change nothing.
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        finish_task(store, "a")
        before = store.session.model_dump(mode="json")
        with pytest.raises(ValueError):
            store.task_started("a")
        with pytest.raises(ValueError):
            store.task_failed("nope", "no such task")
        assert store.session.model_dump(mode="json") == before
        store.task_started("b")
        assert store.session.tasks["b"].attempts == 1
    assert load_session(tmp_path, store.session_id).model_dump(mode="json") == read_json(
        store.paths.session_json
    )


def test_resumed_puts_running_tasks_back_to_pending(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        finish_task(store, "a")
        store.task_started("b")
        session_id = store.session_id
    # The process died with "b" running; the next one takes over.
    with SessionStore.open(tmp_path, session_id) as store:
        store.resumed()
        session = store.session
    assert [t.status.state for t in session.plan.tasks] == ["completed", "pending"]
    assert session.status == "running" and session.resumes == 1
    assert session.tasks["b"].attempts == 1


@pytest.mark.parametrize("end", ["failed", "interrupted", "stopped"])
def test_a_session_that_ended_has_no_task_running(tmp_path, end):
    """An error that failed the run (a crash inside aca) left the task it cut short
    in_progress in a finished session; nothing runs then, and a resume runs it again."""
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        finish_task(store, "a")
        store.task_started("b")
        store.finish(end, "TypeError: ...")
        session = store.session
    assert [t.status.state for t in session.plan.tasks] == ["completed", "pending"]
    assert session.task_counts == {"completed": 1, "pending": 1}


def test_a_session_resumed_in_another_working_area_says_it_works_there(tmp_path):
    """A ``--repo`` session fetched on another machine: its record came from the first one,
    whose working area the ending and `aca sessions show` named after the resume."""
    import shutil

    first, second = tmp_path / "first", tmp_path / "second"
    with SessionStore.create(first, make_plan("a"), provider="replay") as store:
        session_id = store.session_id
    shutil.copytree(first / ".aca", second / ".aca")  # what restoring the pushed record does

    with SessionStore.open(second, session_id) as store:
        store.resumed()
    assert load_session(second, session_id).workdir == str(second.resolve())
    with SessionStore.open(second, session_id) as store:
        store.resumed()  # resumed where it works: nothing to say
        assert store.session.workdir == str(second.resolve())


def test_duration_counts_the_runs_not_the_days_between_them():
    """Interrupted after 10 s, resumed a day later, done 5 s after: it ran for 15 s."""
    start = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
    plan = make_plan("a")
    events = [
        SessionStarted(
            seq=1,
            at=start,
            session_id="s-1",
            name="n",
            workdir="/w",
            branch="aca/s-1",
            provider="replay",
            plan=plan,
        ),
        SessionFinished(seq=2, at=start + timedelta(seconds=10), status="interrupted"),
        SessionResumed(seq=3, at=start + timedelta(days=1)),
        TaskStarted(seq=4, at=start + timedelta(days=1, seconds=1), task_id="a"),
        # The second run crashed after its last event; the third one finished.
        SessionResumed(seq=5, at=start + timedelta(days=2)),
        SessionFinished(seq=6, at=start + timedelta(days=2, seconds=4), status="completed"),
    ]
    assert fold_events(events).duration == timedelta(seconds=15)
    assert fold_events(events[:4]).duration == timedelta(seconds=11)  # running: to its last event


def test_subtasks_join_the_tree_once(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        subtasks = [Task(id="a.1", title="first half"), Task(id="a.2", title="second half")]
        assert store.subtasks_added("a", subtasks) is True
        assert store.subtasks_added("a", subtasks) is False  # repeated after a crash
    session = load_session(tmp_path, store.session_id)
    assert session.plan.task("a").children == ["a.1", "a.2"]
    assert session.plan.task("a.2").parent_id == "a"
    assert session.tasks_total == 2  # a.1 and a.2 run; a, their group now, is not counted


def test_a_task_that_proposed_subtasks_completes_only_when_they_have(tmp_path):
    # Recorded completed when its own work landed, it was listed completed over an
    # interrupted subtask after a kill, and sent aca.task.completed before a subtask failed.
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        store.task_started("a", provider="anthropic", model="m-1")
        store.subtasks_added("a", [Task(id="a.1", title="one"), Task(id="a.2", title="two")])
        store.task_completed("a", TaskResult(commit="c0ffee-a", summary="split"))
        assert str(store.session.plan.task("a").status) == "in_progress"
        finish_task(store, "a.1")
        store.task_started("a.2")
    killed = load_session(tmp_path, store.session_id)
    assert str(killed.plan.task("a").status) == "in_progress"  # shown interrupted, not done
    assert "a" not in killed.completed_task_ids

    with SessionStore.open(tmp_path, store.session_id) as store:
        store.resumed()
        finish_task(store, "a.2")
        store.task_completed("a", TaskResult())  # its group closes
    done = load_session(tmp_path, store.session_id)
    assert str(done.plan.task("a").status) == "completed"
    assert done.tasks["a"].commit == "c0ffee-a" and done.tasks["a"].summary == "split"


def test_session_json_is_rebuilt_from_the_journal_alone(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        finish_task(store, "a")
        store.task_started("b")
    written = read_json(store.paths.session_json)
    store.paths.session_json.unlink()
    rebuilt = load_session(tmp_path, store.session_id)
    assert rebuilt.model_dump(mode="json") == written


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated mid-write by a crash
        lambda text: "",  # empty
        lambda text: "\x00" * 64,  # filesystem garbage after a power cut
        lambda text: '{"schema_version": 1, "id": 3}',  # JSON, but not a session
    ],
)
def test_damaged_session_json_is_rebuilt_and_repaired_on_open(tmp_path, damage):
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        finish_task(store, "a")
    good = read_json(store.paths.session_json)
    path = store.paths.session_json
    path.write_text(damage(path.read_text()))
    assert load_session(tmp_path, store.session_id).model_dump(mode="json") == good
    with SessionStore.open(tmp_path, store.session_id) as reopened:
        assert any("rebuilt from the journal" in r for r in reopened.repairs)
    assert read_json(path) == good


def test_session_json_follows_the_journal_within_its_delay_and_is_whole_at_close(tmp_path):
    # Events close together share one write of session.json; it catches up on its own a
    # moment later, and a reader that is not the writer sees every event at once.
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        finish_task(store, "a")
        store.task_started("b")
        assert load_session(tmp_path, store.session_id).tasks["b"].attempts == 1
        deadline = time.monotonic() + 10
        while read_json(store.paths.session_json)["last_seq"] != store.session.last_seq:
            assert time.monotonic() < deadline, "session.json never caught up with the journal"
            time.sleep(0.02)
        store.task_completed("b", TaskResult(commit="abc"))
    assert read_json(store.paths.session_json)["last_seq"] == store.session.last_seq
    assert read_json(store.paths.session_json)["tasks"]["b"]["commit"] == "abc"


def test_a_store_keeps_one_thread_for_session_json_however_many_events_and_none_after_close(
    tmp_path,
):
    # Each thread started costs the process memory for good (the allocator's arenas): the
    # delayed writes of a whole run share one thread, and closing the store ends it.
    before = set(threading.enumerate())
    seen: set[threading.Thread] = set()
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        for _ in range(4):  # several delays, each with events close together
            for _ in range(3):
                pay(store, 10, 0.001, task_id="a")
                seen |= set(threading.enumerate()) - before
            deadline = time.monotonic() + 10
            while read_json(store.paths.session_json)["last_seq"] != store.session.last_seq:
                assert time.monotonic() < deadline, "session.json never caught up"
                time.sleep(0.02)
    assert len(seen) == 1
    assert not any(thread.is_alive() for thread in seen)
    assert read_json(store.paths.session_json)["last_seq"] == store.session.last_seq


def test_events_recorded_off_the_event_loop_are_journalled_in_call_order_and_on_disk(tmp_path):
    # Many tasks' calls return at once; each is in the journal when its await returns, and
    # the journal keeps the order the calls returned in.
    async def run(store):
        async def call(n):
            await store.off_loop(
                store.call_recorded, provider="anthropic", model="m-1",
                usage=Usage(input_tokens=n, output_tokens=1), cost_usd=0.01, task_id="a",
            )  # fmt: skip
            journal = store.paths.events_jsonl.read_text()
            assert f'"input_tokens":{n},' in journal

        await asyncio.gather(*(call(n) for n in range(1, 41)))

    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        asyncio.run(run(store))
    lines = [json.loads(line) for line in store.paths.events_jsonl.read_text().splitlines()]
    calls = [line["usage"]["input_tokens"] for line in lines if line["type"] == "call"]
    assert calls == list(range(1, 41))
    assert load_session(tmp_path, store.session_id).cost_usd == pytest.approx(0.4)


def test_session_json_one_event_behind_is_caught_up(tmp_path):
    # A crash after the journal append and before session.json was replaced.
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        store.task_started("a")
        behind = store.paths.session_json.read_text()
        store.task_completed("a", TaskResult(commit="abc"))
    store.paths.session_json.write_text(behind)
    session = load_session(tmp_path, store.session_id)
    assert session.plan.task("a").status.state == "completed"
    assert session.tasks["a"].commit == "abc"


def test_a_torn_last_journal_line_is_dropped_and_cut_before_appending(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        finish_task(store, "a")
    journal = store.paths.events_jsonl
    with open(journal, "a") as handle:
        handle.write('{"schema_version":1,"seq":5,"type":"task_sta')  # killed mid-append
    assert load_session(tmp_path, store.session_id).tasks_done == 1
    with SessionStore.open(tmp_path, store.session_id) as reopened:
        assert any("unfinished last line 5" in r for r in reopened.repairs)
        finish_task(reopened, "b")
    lines = journal.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5, 6, 7]
    assert load_session(tmp_path, store.session_id).tasks_done == 2


def test_a_corrupt_line_before_the_last_names_the_file_line_and_fix(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        finish_task(store, "a")
    journal = store.paths.events_jsonl
    lines = journal.read_text().splitlines()
    lines[1] = lines[1][:20]
    journal.write_text("\n".join(lines) + "\n")
    with pytest.raises(SessionFileError) as caught:
        SessionStore.open(tmp_path, store.session_id)
    message = str(caught.value)
    assert str(journal) in message
    assert "line 2" in message and "delete line 2" in message
    assert caught.value.exit_code == 2
    # The failed open released its lock: the session can be opened once repaired.
    journal.write_text(lines[0] + "\n")
    with SessionStore.open(tmp_path, store.session_id) as reopened:
        assert reopened.session.tasks_done == 0


def test_a_missing_event_is_reported(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        finish_task(store, "a")
        finish_task(store, "b")
    journal = store.paths.events_jsonl
    lines = journal.read_text().splitlines()
    del lines[2]
    journal.write_text("\n".join(lines) + "\n")
    with pytest.raises(SessionFileError, match="expected 3"):
        load_session(tmp_path, store.session_id)


def test_files_from_a_newer_aca_ask_for_an_upgrade(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        pass
    path = store.paths.session_json
    data = read_json(path)
    data["schema_version"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(SessionFileError, match="newer aca.*Upgrade aca"):
        load_session(tmp_path, store.session_id)


def test_a_missing_journal_is_reported_not_guessed(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        pass
    store.paths.events_jsonl.unlink()
    with pytest.raises(SessionFileError, match="journal is missing"):
        load_session(tmp_path, store.session_id)
    scan = scan_sessions(tmp_path)
    assert scan.sessions == [] and len(scan.damaged) == 1


def test_sessions_are_listed_newest_first_and_found_by_prefix(tmp_path):
    from datetime import UTC, datetime

    old = SessionStore.create(
        tmp_path, make_plan("a"), provider="replay", now=datetime(2026, 1, 1, tzinfo=UTC)
    )
    old.close()
    new = SessionStore.create(tmp_path, make_plan("a"), provider="replay")
    new.close()
    assert [s.id for s in list_sessions(tmp_path)] == [new.session_id, old.session_id]
    assert latest_session_id(tmp_path) == new.session_id
    assert old.session_id.startswith("20260101-")
    assert load_session(tmp_path, "20260101").id == old.session_id


def test_an_unknown_session_id_says_how_to_find_ids(tmp_path):
    with pytest.raises(UnknownSessionError) as caught:
        load_session(tmp_path, "nope")
    assert isinstance(caught.value, AcaError)
    assert "aca sessions list" in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_concurrent_events_are_journalled_whole_and_in_sequence(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:

        def spend_some():
            for _ in range(10):
                pay(store, 10, 0.01)

        threads = [threading.Thread(target=spend_some) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seqs = [json.loads(line)["seq"] for line in store.paths.events_jsonl.read_text().splitlines()]
    assert seqs == list(range(1, 62))
    assert load_session(tmp_path, store.session_id).usage[0].calls == 60


def test_a_closed_store_records_nothing(tmp_path):
    store = SessionStore.create(tmp_path, make_plan("a"), provider="replay")
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.task_started("a")
    assert not AcaDir(tmp_path).session(store.session_id).lock_file.exists()


def test_an_ambiguous_prefix_is_refused_not_guessed(tmp_path):
    from datetime import UTC, datetime

    now = datetime(2026, 3, 1, tzinfo=UTC)
    for _ in range(2):
        SessionStore.create(tmp_path, make_plan("a"), provider="replay", now=now).close()
    with pytest.raises(UnknownSessionError, match="ambiguous session id") as caught:
        load_session(tmp_path, "20260301")
    assert caught.value.ambiguous
    # It names the ids it could mean, to copy the right one from.
    ids = sorted((p.name for p in (tmp_path / ".aca" / "sessions").iterdir()), reverse=True)
    assert f": it begins {ids[0]}, {ids[1]}." in str(caught.value)


def test_a_failure_without_a_message_still_reads_well(tmp_path):
    with SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay") as store:
        store.task_failed("a", str(RuntimeError()))
        store.task_skipped("b", "  ")
    statuses = [str(t.status) for t in load_session(tmp_path, store.session_id).plan.tasks]
    assert statuses == ["failed: failed (no reason given)", "skipped: skipped (no reason given)"]


def test_a_failure_naming_a_file_that_is_not_utf8_is_recorded_readably(tmp_path):
    # A git error or an OSError names such a file as the system gave it: as surrogates.
    name = os.fsdecode(b"na\xefve.txt")
    with SessionStore.create(tmp_path, make_plan("a"), provider="replay") as store:
        store.task_started("a")
        store.task_failed("a", f"PermissionError: [Errno 13] Permission denied: '{name}'")
        store.finish("failed", f"GitCommandError: {name}")
    session = load_session(tmp_path, store.session_id)
    assert str(session.plan.tasks[0].status).endswith("Permission denied: 'na\ufffdve.txt'")
    assert session.status_reason == "GitCommandError: na\ufffdve.txt"
    journal = store.paths.events_jsonl.read_text(encoding="utf-8").splitlines()
    ends = [json.loads(line)["type"] for line in journal][-2:]
    assert ends == ["task_failed", "session_finished"]


def test_a_task_question_shows_as_waiting_while_its_run_lives(tmp_path):
    from aca_flows.session.events import TaskAnswered, TaskQuestion
    from aca_flows.session.reading import display_status

    long = "Which of the two storage engines should the new cache use, given the old one leaks?"
    asked = TaskQuestion(task_id="a", question=long, flow_run_id="f1")
    store = SessionStore.create(tmp_path, make_plan("a", "b"), provider="replay")
    store.task_started("a")
    store.record(asked)
    status = display_status(load_session(tmp_path, store.session_id))
    assert status == (
        "waiting: task a asks: Which of the two storage engines should the new cache use,…"
    )
    store.record(TaskAnswered(task_id="a", action="retry", hint="the new one"))
    assert display_status(load_session(tmp_path, store.session_id)) == "running"

    store.record(asked)
    store.close()  # the waiting process died: nobody waits any more
    assert display_status(load_session(tmp_path, store.session_id)) == "interrupted"
    with SessionStore.open(tmp_path, store.session_id) as again:
        again.resumed()  # the task runs again and may ask again, from a new flow run
        assert again.session.question is None
