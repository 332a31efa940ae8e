"""A task's change lands only if the checks of the tasks that landed before it, in the files it
changes too, still pass: on its own worktree, and on the branch's new head when that work
landed while it ran."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from aca_flows.plan.models import Task
from aca_flows.session.layout import AcaDir
from aca_flows.workspace import session_branch_head
from tests.agent.test_execute import SESSION, barrier_then, execute, plan_of
from tests.fakes.scripted_provider import ScriptedProvider, tool_calls, tool_use
from tests.workspace.test_repository import make_user_repo

ONE = Task(id="t1", title="One", verify="grep -q one notes.txt")
TWO = Task(id="t2", title="Two", verify="grep -q two notes.txt")


@pytest.fixture
def repo(tmp_path):
    return make_user_repo(tmp_path)


def writes(content: str, summary: str) -> list:
    return [
        tool_calls(tool_use("write_file", path="notes.txt", content=content)),
        tool_calls(tool_use("finish", summary=summary)),
    ]


def log_of(tmp_path, task_id: str) -> list[dict]:
    text = AcaDir(tmp_path).session(SESSION).task_log(task_id).read_text()
    return [json.loads(line) for line in text.splitlines()]


def land_one_then_run_two(tmp_path, *two_responses):
    plan = plan_of(ONE, TWO)
    first = asyncio.run(execute(tmp_path, plan, "t1", ScriptedProvider(*writes("one\n", "one"))))
    assert first.status == "completed"
    two = ScriptedProvider(*two_responses)
    return first, asyncio.run(execute(tmp_path, plan, "t2", two)), two


def test_a_change_that_breaks_an_earlier_tasks_check_goes_back_to_the_agent(tmp_path, repo):
    # t2's own check passes with "two" alone, but it overwrote t1's line: t1's check fails.
    first, second, two = land_one_then_run_two(
        tmp_path, *writes("two\n", "two"), *writes("one\ntwo\n", "two, keeping one")
    )

    assert second.status == "completed" and second.attempts == 2
    feedback = two.history[2].messages[-1].text
    assert "task t1" in feedback and "`grep -q one notes.txt`" in feedback
    assert repo.git.show(f"aca/{SESSION}:notes.txt") == "one\ntwo"
    checks = [(r["command"], r["of_task"], r["passed"]) for r in log_of(tmp_path, "t2")
              if r["kind"] == "verify"]  # fmt: skip
    assert checks == [
        ("grep -q two notes.txt", None, True),
        ("grep -q one notes.txt", "t1", False),
        ("grep -q two notes.txt", None, True),
        ("grep -q one notes.txt", "t1", True),
    ]


def test_a_change_that_keeps_breaking_an_earlier_check_fails_and_lands_nothing(tmp_path, repo):
    first, second, _ = land_one_then_run_two(
        tmp_path, *writes("two\n", "two"), *writes("two\n", "two"), *writes("two\n", "two")
    )

    assert second.status == "failed" and second.commit_sha is None
    assert "`grep -q one notes.txt` of task t1 (landed earlier)" in second.failure_reason
    assert session_branch_head(repo, SESSION) == first.commit_sha
    assert repo.git.show(f"aca/{SESSION}:notes.txt") == "one"


def test_a_task_whose_files_it_shares_with_no_landed_task_runs_only_its_own_check(tmp_path, repo):
    plan = plan_of(ONE, Task(id="t2", title="Two", verify="test -f other.txt"))
    asyncio.run(execute(tmp_path, plan, "t1", ScriptedProvider(*writes("one\n", "one"))))
    other = ScriptedProvider(
        tool_calls(tool_use("write_file", path="other.txt", content="x\n")),
        tool_calls(tool_use("finish", summary="other")),
    )
    assert asyncio.run(execute(tmp_path, plan, "t2", other)).status == "completed"
    assert [r["command"] for r in log_of(tmp_path, "t2") if r["kind"] == "verify"] == [
        "test -f other.txt"
    ]


# -- work that landed while the task ran, in the same file, without a textual conflict --------

LINES = [f"line {i}\n" for i in range(1, 10)]


def with_line(index: int, text: str, lines: list[str] = LINES) -> str:
    return "".join(text if i == index else line for i, line in enumerate(lines))


def side_by_side(
    tmp_path, repo, one: Task, two: Task, two_first_write: str, *two_retry, one_also=(), config=None
):
    """t1 and t2 edit notes.txt far apart from the same base; t2 finishes after t1 landed.
    ``one_also``: more of t1's first writes; ``config``: t2's."""
    (tmp_path / "notes.txt").write_text("".join(LINES))
    repo.git.add("-A")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "notes"])

    async def scenario():
        barrier = asyncio.Barrier(2)
        t1_merged = asyncio.Event()

        def watch(record):
            if record["kind"] == "merged":
                t1_merged.set()

        async def finish_after_t1(request):
            await t1_merged.wait()
            return tool_calls(tool_use("finish", summary="two"))

        first = ScriptedProvider(
            barrier_then(
                barrier,
                tool_calls(
                    tool_use("write_file", path="notes.txt", content=with_line(0, "new\n")),
                    *one_also,
                ),
            ),
            tool_calls(tool_use("finish", summary="renamed old to new on line 1")),
        )
        second = ScriptedProvider(
            barrier_then(
                barrier,
                tool_calls(tool_use("write_file", path="notes.txt", content=two_first_write)),
            ),
            finish_after_t1,
            *two_retry,
        )
        plan = plan_of(one, two)
        return await asyncio.gather(
            execute(tmp_path, plan, "t1", first, on_log=watch),
            execute(tmp_path, plan, "t2", second, config=config),
        )

    return asyncio.run(scenario())


def test_work_landed_meanwhile_in_the_same_file_is_checked_together_before_landing(tmp_path, repo):
    one = Task(id="t1", title="One", verify="grep -q new notes.txt")
    two = Task(id="t2", title="Two", verify="grep -q call notes.txt")
    first, second = side_by_side(tmp_path, repo, one, two, with_line(8, "call it\n"))

    assert first.status == second.status == "completed"
    assert second.runs == 1  # the combination passed: no second agent run was paid for
    caught_up = [r for r in log_of(tmp_path, "t2") if r["kind"] == "caught_up"]
    assert caught_up and caught_up[0]["files"] == ["notes.txt"]
    landed = repo.git.show(f"aca/{SESSION}:notes.txt").splitlines()
    assert landed[0] == "new" and landed[8] == "call it"


def test_a_task_whose_very_change_landed_meanwhile_completes_with_no_change(tmp_path, repo):
    """t1 and t2 make the same edit side by side; t1 lands first. t2's work is on the branch
    then: it completes (no change of its own, saying why), not "changed nothing" and failed."""
    one = Task(id="t1", title="One", verify="grep -q new notes.txt")
    two = Task(id="t2", title="Two", verify="grep -q new notes.txt")
    first, second = side_by_side(tmp_path, repo, one, two, with_line(0, "new\n"))

    assert first.status == second.status == "completed", second.failure_reason
    assert second.outcome == "no_change" and second.commit_sha is None
    assert second.no_change_reason == (
        "its change is on the session branch already: work that landed meanwhile made the "
        "same change (in notes.txt)"
    )
    assert repo.git.log("--format=%s", f"aca/{SESSION}").splitlines()[0].startswith("aca(t1)")


def test_a_task_whose_very_change_landed_meanwhile_is_still_checked_on_the_new_head(tmp_path, repo):
    """As above, but t1 also added lib.txt, which t2's check refuses: "no change" is never
    taken on trust. t2 fails on its check there; it is not completed."""
    from aca_flows.settings import AcaConfig

    one = Task(id="t1", title="One", verify="grep -q new notes.txt")
    two = Task(id="t2", title="Two", verify="grep -q new notes.txt && ! test -e lib.txt")
    first, second = side_by_side(
        tmp_path,
        repo,
        one,
        two,
        with_line(0, "new\n"),
        # Started again on the new head, it says no change is needed; its check says no.
        tool_calls(tool_use("report_no_change", reason="notes.txt says new already")),
        one_also=[tool_use("write_file", path="lib.txt", content="x\n")],
        config=AcaConfig.model_validate({"agent": {"max_fix_attempts": 0}}),
    )

    assert first.status == "completed"
    assert second.status == "failed" and second.no_change_reason is None
    assert "! test -e lib.txt" in second.failure_reason


def test_a_combination_that_fails_a_check_starts_the_task_again_on_the_new_head(tmp_path, repo):
    # t1 renames line 1's "line 1" away and checks no "line 1" is used; t2, from the old
    # base, adds a use of it on line 9: each passes alone, together t1's check fails.
    one = Task(
        id="t1", title="One", verify="! grep -q 'use line 1' notes.txt && grep -q new notes.txt"
    )
    two = Task(id="t2", title="Two", verify="grep -q '^use' notes.txt")
    retry = with_line(8, "use new\n", [with_line(0, "new\n").splitlines(True)[i] for i in range(9)])
    first, second = side_by_side(
        tmp_path, repo, one, two, with_line(8, "use line 1\n"),
        tool_calls(tool_use("write_file", path="notes.txt", content=retry)),
        tool_calls(tool_use("finish", summary="two, on the new name")),
    )  # fmt: skip

    assert first.status == second.status == "completed"
    assert second.runs == 2
    records = log_of(tmp_path, "t2")
    failed = [r for r in records if r["kind"] == "verify" and not r["passed"]]
    assert failed and failed[0]["of_task"] == "t1"
    conflict = next(r for r in records if r["kind"] == "merge_conflict")
    assert conflict["files"] == ["notes.txt"]
    # Its change is not kept for a hand merge: it applies, and would land failing t1's check.
    assert conflict["kept"] is None and repo.git.for_each_ref("refs/aca/conflicts") == ""
    landed = repo.git.show(f"aca/{SESSION}:notes.txt").splitlines()
    assert landed[0] == "new" and landed[8] == "use new" and "use line 1" not in landed


@pytest.mark.parametrize(("network", "reached"), [(True, True), (None, False), (False, False)])
def test_an_earlier_tasks_check_has_the_network_only_where_both_tasks_have_it(
    tmp_path, repo, network, reached
):
    # t1's check reaches a service on this machine (t1 has the network). In t2's worktree it
    # runs t2's code: with the network only if t2 has it too, or t2's code would reach out.
    with socket.socket() as service:
        service.bind(("127.0.0.1", 0))
        service.listen()
        port = service.getsockname()[1]
        reach = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}))\""
        one = Task(id="t1", title="One", verify=f"grep -q one notes.txt && {reach}", network=True)
        two = Task(id="t2", title="Two", verify="grep -q two notes.txt", network=network)
        plan = plan_of(one, two)
        asyncio.run(execute(tmp_path, plan, "t1", ScriptedProvider(*writes("one\n", "one"))))
        agent = ScriptedProvider(*writes("one\ntwo\n", "two") * 3)
        outcome = asyncio.run(execute(tmp_path, plan, "t2", agent))

    checks = [r for r in log_of(tmp_path, "t2") if r["kind"] == "verify" and r["of_task"] == "t1"]
    assert checks[0]["passed"] is reached, checks[0]["output"]
    assert (outcome.status == "completed") is reached


def test_a_task_cancelled_while_its_work_lands_ends_completed_as_its_work_did(
    tmp_path, repo, monkeypatch
):
    # Cancelled (twice) while the merge runs in its thread: the thread merges all the same,
    # so the task must say it landed (it was recorded pending, its commit on the branch).
    from aca_flows.agent import landing

    real = landing._land

    async def cancelled_while_landing():
        loop, merging = asyncio.get_running_loop(), asyncio.Event()

        def slow_land(*args):
            loop.call_soon_threadsafe(merging.set)
            time.sleep(0.3)  # the merge lock's turn, or the merge itself
            return real(*args)

        monkeypatch.setattr(landing, "_land", slow_land)
        provider = ScriptedProvider(*writes("one\n", "one"))
        task = asyncio.create_task(execute(tmp_path, plan_of(ONE), "t1", provider))
        await merging.wait()
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()  # again: a UI cancel, then the worker's SIGTERM
        return await task

    outcome = asyncio.run(cancelled_while_landing())

    assert outcome.status == "completed" and outcome.commit_sha
    assert session_branch_head(repo, SESSION) == outcome.commit_sha
