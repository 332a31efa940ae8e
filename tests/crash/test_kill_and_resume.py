"""A crash loses nothing and repeats nothing: ``aca run`` killed with SIGKILL, then resumed.

Each case starts a real ``aca run`` of a three-task chain (a -> b -> c) against the fake
Anthropic server, holds it at one point, kills its whole process group with SIGKILL, and runs
``aca resume <session-id>``. At the kill point ``meta/session.json`` parses; after the resume
every task is complete, each task's commit is on the session branch exactly once, and no
provider call is made for a task whose commit was on the branch before the kill.

Points are reached deterministically: a ``git`` wrapper that stops where the session branch
ref is written (created, or moved by a merge; aca's git runs no hooks), a provider reply that
does not come, or the journal entry of a finished task.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.crash.conftest import (
    flow_runs_of,
    journal,
    kill_group,
    none_running,
    only_session,
    task_runs_of,
    wait_for,
)
from tests.fakes.coding_agent import coding_agent, task_of
from tests.fakes.llm_server import RecordedRequest, Reply

CHAIN = """# Chain

- write a.txt {#a}
- write b.txt {#b depends_on=a}
- write c.txt {#c depends_on=b}
"""
HOLD_SECONDS = 300
WAIT = 60

# aca's git runs no hooks (workspace/hardened_git.py), so a git wrapper holds it instead:
# GitPython runs it as ``git`` (GIT_PYTHON_GIT_EXECUTABLE) for the aca process under test.
GIT_WRAPPER = """#!/bin/sh
# Holds the Nth write of a session branch ref, as "$hold/at" says: "N STATE". "prepared": the
# ref is locked (the lock file git would hold), not moved; "committed": the ref moved.
hold='{hold}'
real='{real}'
update=''
ref=''
for arg in "$@"; do
  case "$arg" in
    update-ref) update=1 ;;
    refs/heads/aca/*) ref="$arg" ;;
  esac
done
if [ -z "$update" ] || [ -z "$ref" ] || [ ! -f "$hold/at" ]; then exec "$real" "$@"; fi
read n state < "$hold/at"
c=$(( $(cat "$hold/count" 2>/dev/null || echo 0) + 1 ))
echo "$c" > "$hold/count"
if [ "$c" != "$n" ]; then exec "$real" "$@"; fi
if [ "$state" = prepared ]; then
  : > "$("$real" rev-parse --git-common-dir)/$ref.lock"
  echo "$ref" > "$hold/held"; sleep {seconds}; exit 1
fi
"$real" "$@"
status=$?
echo "$ref" > "$hold/held"; sleep {seconds}; exit $status
"""


class Agent:
    """The scripted coding agent; the first request of each task in ``block`` gets no answer
    until released (provider calls in flight). ``arrived`` is set once all of them came."""

    def __init__(self, block: str | tuple[str, ...] = ()):
        self.block = {block} if isinstance(block, str) else set(block)
        self.arrived = threading.Event()
        self.release = threading.Event()
        self._blocked: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Reply:
        task_id = task_of(request)[0]
        with self._lock:
            block = task_id in self.block and task_id not in self._blocked
            if block:
                self._blocked.add(task_id)
                if self._blocked == self.block:
                    self.arrived.set()
        if block:
            self.release.wait(HOLD_SECONDS)
        return coding_agent(request)


def install_git_wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """The hold folder, and the git wrapper that holds at the point it names."""
    hold = tmp_path / "hold"
    hold.mkdir()
    wrapper = tmp_path / "git-holding"
    real = shutil.which("git")
    wrapper.write_text(GIT_WRAPPER.format(hold=hold, real=real, seconds=HOLD_SECONDS))
    wrapper.chmod(0o755)
    return hold, wrapper


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def branch_tasks(repo: Path, branch: str) -> list[str]:
    """Task ids of the branch's commits (their ``Aca-Task:`` trailers), oldest first."""
    log = git(repo, "log", "--reverse", "--format=%(trailers:key=Aca-Task,valueonly)", branch)
    return [line.strip() for line in log.splitlines() if line.strip()]


def agent_task_ids(requests: list[RecordedRequest]) -> list[str]:
    return [task_of(r)[0] for r in requests if r.json and r.json.get("tools")]


def completed_in_journal(session: Path, task_id: str) -> bool:
    return any(
        e["type"] == "task_completed" and e.get("task_id") == task_id for e in journal(session)
    )


@dataclass(frozen=True)
class KillPoint:
    plan: str = CHAIN
    hook_at: str | None = None  # "N STATE": git is held at the Nth session-branch ref write
    block: tuple[str, ...] = ()  # tasks whose first provider call is held
    journalled: str | None = None  # kill once this task's task_completed is in the journal
    # (before those in ``block`` arrive, if they do)
    landed: frozenset[str] = frozenset()  # task commits on the branch at the kill


FAN = """# Fan

- write a.txt {#a}
- write b.txt {#b}
- write c.txt {#c depends_on=a,b}
"""
DEPENDENCIES = {CHAIN: {"b": "a", "c": "b"}, FAN: {"c": "ab"}}

KILL_POINTS = {
    # the session exists, its branch was just created, no task has started
    "before-first-task": KillPoint(hook_at="1 committed"),
    # b's first provider call in flight
    "mid-task": KillPoint(block=("b",), landed=frozenset("a")),
    # a recorded complete in the journal; b about to start (its first call held, should it get
    # that far before the kill: b landing first made the point one after b)
    "between-tasks": KillPoint(journalled="a", block=("b",), landed=frozenset("a")),
    # b's merge: the branch ref is locked by git, not moved yet
    "during-merge": KillPoint(hook_at="3 prepared", landed=frozenset("a")),
    # b's merge: the branch ref moved, the journal does not know yet
    "after-merge": KillPoint(hook_at="3 committed", landed=frozenset("ab")),
    # a and b run at once, both provider calls in flight
    "two-tasks-in-flight": KillPoint(plan=FAN, block=("a", "b")),
}


@pytest.mark.parametrize("name", list(KILL_POINTS))
def test_sigkill_then_resume_completes_without_repeating_work(
    name, aca, repo, llm, tmp_path, prefect_api
):
    point = KILL_POINTS[name]
    hold, git_wrapper = install_git_wrapper(tmp_path)
    if point.hook_at:
        (hold / "at").write_text(point.hook_at + "\n")
    agent = Agent(point.block)
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(40):
        llm.anthropic.enqueue(agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(point.plan)

    try:
        proc = aca.start(
            "run", str(tasks), "--model", "claude-test", name="run",
            GIT_PYTHON_GIT_EXECUTABLE=str(git_wrapper),
        )  # fmt: skip
        session = only_session(repo)
        if point.hook_at:
            reached = (hold / "held").exists
        elif point.journalled:
            reached = lambda: completed_in_journal(session, point.journalled)  # noqa: E731
        else:
            reached = agent.arrived.is_set
        wait_for(lambda: reached() or proc.poll() is not None, WAIT, name)
        assert proc.poll() is None, f"aca ended before the kill point:\n{aca.err('run')}"
        kill_group(proc)
    finally:
        agent.release.set()
    (hold / "at").unlink(missing_ok=True)

    # At the kill point: session.json is whole.
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["schema_version"] >= 1 and data["id"] == session.name
    branch = f"aca/{session.name}"
    landed_before = set(branch_tasks(repo, branch))
    assert landed_before == point.landed
    calls_before = len(llm.anthropic.requests)

    code, out, err = aca.run("resume", session.name, "--json", name="resume")
    assert code == 0, f"resume exited {code}:\n{err}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["counts"] == {"completed": 3}
    assert "Traceback" not in err

    # Every task's commit is on the branch exactly once, after its dependencies'.
    order = branch_tasks(repo, branch)
    assert sorted(order) == ["a", "b", "c"], order
    for task_id, deps in DEPENDENCIES[point.plan].items():
        assert all(order.index(d) < order.index(task_id) for d in deps), order
    files = git(repo, "ls-tree", "-r", "--name-only", branch).split()
    assert sorted(files) == ["README.md", "a.txt", "b.txt", "c.txt"]
    # No provider call for a task that had landed before the kill.
    resumed_calls = agent_task_ids(llm.anthropic.requests[calls_before:])
    assert not landed_before & set(resumed_calls), resumed_calls
    assert set(resumed_calls) == {"a", "b", "c"} - landed_before
    # The session says so too, and no task worktree is left behind.
    data = json.loads((session / "meta" / "session.json").read_text())
    assert data["status"] == "completed" and data["resumes"] == 1
    assert {t["id"]: t["status"]["state"] for t in data["plan"]["tasks"]} == {
        "a": "completed",
        "b": "completed",
        "c": "completed",
    }
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    # The change log names every task's commit, one landed just before the kill included.
    change_log = json.loads((session / "file_changes" / "change_log.json").read_text())
    commits = git(repo, "log", "--format=%H", branch).split()
    assert sorted(change_log["tasks"]) == ["a", "b", "c"]
    assert all(entry["commit"] in commits for entry in change_log["tasks"].values())
    # The resumed run kept the session's model.
    assert {r.json["model"] for r in llm.anthropic.requests[calls_before:]} == {"claude-test"}
    # The user's checkout is untouched.
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert not (repo / "a.txt").exists()
    # The killed run is no longer Running on the server: the resume ended it Crashed.
    flow_runs = flow_runs_of(prefect_api, session.name)
    assert sorted(r.state.type.value for r in flow_runs) == ["COMPLETED", "CRASHED"]
    task_runs = task_runs_of(prefect_api, session.name, none_running)
    assert not [r for r in task_runs if r.state.is_running()]


def approval_requests(session: Path) -> int:
    return sum(e["type"] == "approval_requested" for e in journal(session))


def test_a_run_killed_while_it_waits_for_approval_is_crashed_on_resume(
    aca, repo, llm, tmp_path, prefect_api
):
    for _ in range(10):
        llm.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Approve me\n\n- write a.txt {#a}\n")
    proc = aca.start("run", str(tasks), "--model", "claude-test", "--require-approval", name="run")
    session = only_session(repo)

    def paused_runs() -> list:
        return [r for r in flow_runs_of(prefect_api, session.name) if r.state.is_paused()]

    (waiting,) = wait_for(lambda: paused_runs() or proc.poll(), WAIT, "the paused flow run")
    assert proc.poll() is None, f"aca ended instead of waiting:\n{aca.err('run')}"
    kill_group(proc)

    # The resume asks for approval again (nobody approved the plan); approved, it completes.
    resume = aca.start("resume", session.name, "--json", name="resume")
    wait_for(lambda: approval_requests(session) == 2 or resume.poll(), WAIT, "the second ask")
    code, _, err = aca.run("approve", session.name, name="approve")
    assert code == 0, err
    assert resume.wait(timeout=WAIT) == 0, aca.err("resume")
    assert json.loads(aca.out("resume").strip().splitlines()[-1])["status"] == "completed"

    # The killed run no longer waits in the UI (no Resume on it): the resume ended it Crashed.
    states = {r.id: r.state for r in flow_runs_of(prefect_api, session.name)}
    assert states[waiting.id].type.value == "CRASHED"
    assert states[waiting.id].message.startswith("its process ended without finishing")
    assert sorted(s.type.value for s in states.values()) == ["COMPLETED", "CRASHED"]


@pytest.mark.parametrize("action", ["retry", "fail", "skip"])
def test_an_answer_given_in_the_ui_to_a_run_killed_while_it_waited_is_taken_by_the_resume(
    action, aca, repo, llm, tmp_path, prefect_api
):
    # Prefect takes the answer (the flow run goes Running) with nothing left to act on it: the
    # resume paid for the task again without the hint, and asked the same question again.
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.flows.test_task_help import asking_agent, plan_file

    llm.anthropic.default = asking_agent
    asks = {"ACA_APPROVAL__ON_FAILURE": "ask", "ACA_APPROVAL__TIMEOUT_SECONDS": "30"}
    tasks = plan_file(tmp_path, "Asks")
    proc = aca.start("run", tasks, "--model", "claude-test", name="run", **asks)
    session = only_session(repo)

    def paused_runs() -> list:
        return [r for r in flow_runs_of(prefect_api, session.name) if r.state.is_paused()]

    (waiting,) = wait_for(lambda: paused_runs() or proc.poll(), WAIT, "the paused flow run")
    kill_group(proc)
    with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as c:
        c.resume_flow_run(waiting.id, run_input={"action": action, "hint": "use tabs"})

    code, out, err = aca.run("resume", session.name, "--json", name="resume", **asks)

    assert "the answer given in the Prefect UI to the run that died" in err
    answered = [e for e in journal(session) if e["type"] == "task_answered"]
    assert [(e["task_id"], e["action"]) for e in answered] == [("a", action)]
    summary = json.loads(out.strip().splitlines()[-1])
    if action == "retry":
        assert code == 0 and summary["status"] == "completed", err
        hinted = [
            r for r in llm.anthropic.requests if "Hint from a reviewer: use tabs" in task_of(r)[2]
        ]
        assert hinted and sum(e["type"] == "task_question" for e in journal(session)) == 1
        return
    # Settled as a live answer settles it: a failed task's dependent is skipped in the
    # session as in Prefect (it stayed pending), and each says so on Prefect's events.
    skipped = [e["task_id"] for e in journal(session) if e["type"] == "task_skipped"]
    if action == "fail":
        assert code == 1 and summary["counts"] == {"failed": 1, "skipped": 1}, summary
        assert skipped == ["b"]
        expected = {("aca.task.failed", "a"), ("aca.task.skipped", "b")}
    else:
        assert code == 0 and summary["counts"] == {"skipped": 1, "completed": 1}, summary
        assert skipped == ["a"]
        expected = {("aca.task.skipped", "a")}

        # A task run Skipped in the resumed run, as a live answer makes: the UI showed Failed.
        def skipped_run(runs: list) -> bool:
            return any(r.name.startswith("a ") and r.state_name == "Skipped" for r in runs)

        runs = task_runs_of(prefect_api, session.name, skipped_run)
        assert skipped_run(runs), [(r.name, r.state_name) for r in runs]
    told = wait_for(lambda: expected <= task_events(prefect_api, session.name), WAIT, "events")
    assert told


def task_events(api: str, session_id: str) -> set[tuple[str, str]]:
    """aca's task events of the session on the server: (event, task id)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventResourceFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    prefix = f"aca.task.{session_id}."

    async def read():
        async with get_client() as client:
            page = await client.read_events(
                EventFilter(resource=EventResourceFilter(id_prefix=[prefix])), limit=50
            )
        return page.events

    with temporary_settings({PREFECT_API_URL: api}):
        events = asyncio.run(read())
    return {(e.event, e.resource.id.removeprefix(prefix)) for e in events}


def test_a_reviewers_hint_outlives_a_run_killed_while_the_task_retried_with_it(
    aca, repo, llm, tmp_path, prefect_api
):
    # The hint lived in the run's memory: the resume ran the task without it, so it failed
    # (or asked again) and the person's answer was lost.
    from tests.flows.test_task_help import asking_agent, plan_file

    hint, retrying, released = (
        "Hint from a reviewer: use tabs",
        threading.Event(),
        threading.Event(),
    )

    def agent(request):
        if hint in task_of(request)[2] and not released.is_set():
            retrying.set()
            released.wait(WAIT)  # the run is killed while this call is under way
        return asking_agent(request)

    llm.anthropic.default = agent
    tasks = plan_file(tmp_path, "Hinted")
    asks = {"ACA_APPROVAL__ON_FAILURE": "ask", "ACA_APPROVAL__TIMEOUT_SECONDS": "60"}
    proc = aca.start("run", tasks, "--model", "claude-test", name="run", **asks)
    session = only_session(repo)
    wait_for(lambda: flow_runs_of(prefect_api, session.name) and any(
        r.state.is_paused() for r in flow_runs_of(prefect_api, session.name)) or proc.poll(),
        WAIT, "the question")  # fmt: skip
    code, _, err = aca.run("answer", session.name, "a", "--retry", "--hint", "use tabs", name="a")
    assert code == 0, err
    wait_for(retrying.is_set, WAIT, "the retry with the hint")
    kill_group(proc)
    released.set()

    code, out, err = aca.run("resume", session.name, "--json", name="resume")  # asks nobody

    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "completed"
    resumed = [r for r in llm.anthropic.requests if task_of(r)[0] == "a"][-1]
    assert hint in task_of(resumed)[2]


def test_an_answer_acted_on_before_the_kill_is_not_taken_again_by_the_resume(
    aca, repo, llm, tmp_path, prefect_api
):
    # Answered "retry, H1", the task asked again and the run was killed waiting: the resume
    # took H1, already used, as the answer to the question nobody answered.
    from tests.flows.test_task_help import QUESTION, plan_file

    def asks_until_h2(request):
        task_id, _, first = task_of(request)
        if task_id != "a" or "Hint from a reviewer: H2" in first:
            return coding_agent(request)
        turn = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
        write = {"name": "write_file", "arguments": {"path": "a.txt", "content": "x\n"}}
        ask = {"name": "ask_human", "arguments": {"question": QUESTION}}
        return Reply(tool_calls=[ask if turn else write])

    llm.anthropic.default = asks_until_h2
    asks = {"ACA_APPROVAL__ON_FAILURE": "ask", "ACA_APPROVAL__TIMEOUT_SECONDS": "120"}
    proc = aca.start("run", plan_file(tmp_path, "Stale"), "--model", "claude-test", name="run",
                     **asks)  # fmt: skip
    session = only_session(repo)

    def questions() -> int:
        return sum(e["type"] == "task_question" for e in journal(session))

    wait_for(lambda: questions() >= 1 or proc.poll(), WAIT, "the first question")
    code, _, err = aca.run("answer", session.name, "a", "--retry", "--hint", "H1", name="a1")
    assert code == 0, err
    wait_for(lambda: questions() >= 2 or proc.poll(), WAIT, "the second question")
    kill_group(proc)
    asks["ACA_APPROVAL__TIMEOUT_SECONDS"] = "5"
    code, _, err = aca.run("resume", session.name, "--json", name="resume", timeout=150, **asks)

    assert "the answer given in the Prefect UI" not in err
    answered = [(e["action"], e["hint"]) for e in journal(session) if e["type"] == "task_answered"]
    assert answered == [("retry", "H1"), ("fail", "")]  # the resume's own question timed out


def test_subtasks_of_a_task_that_landed_as_aca_was_killed_run_on_resume(
    aca, repo, llm, tmp_path, prefect_api
):
    # Killed once the work landed and before the run journalled the subtasks it proposed:
    # the resume found the task done on the branch, the subtasks were never made, exit 0.
    hold, git_wrapper = install_git_wrapper(tmp_path)
    (hold / "at").write_text("2 committed\n")  # 1: the session branch made; 2: base lands
    llm.anthropic.scripted_for = lambda r: bool(r.json and r.json.get("tools"))
    for _ in range(20):
        llm.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Split\n\n- write base.txt {#base}\n  propose: one\n")

    proc = aca.start(
        "run", str(tasks), "--model", "claude-test", name="run",
        GIT_PYTHON_GIT_EXECUTABLE=str(git_wrapper),
    )  # fmt: skip
    session = only_session(repo)
    wait_for(lambda: (hold / "held").exists() or proc.poll() is not None, WAIT, "landed")
    assert proc.poll() is None, f"aca ended before the kill point:\n{aca.err('run')}"
    kill_group(proc)
    (hold / "at").unlink()
    branch = f"aca/{session.name}"
    assert branch_tasks(repo, branch) == ["base"]
    assert not any(e["type"] == "subtasks_added" for e in journal(session))

    code, out, err = aca.run("resume", session.name, "--json", name="resume")

    assert code == 0, f"resume exited {code}:\n{err}"
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed"
    assert branch_tasks(repo, branch) == ["base", "base.one"]
    assert "one.txt" in git(repo, "ls-tree", "-r", "--name-only", branch).split()
