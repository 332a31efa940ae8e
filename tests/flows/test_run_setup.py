"""Getting a run ready: the plan's own settings (concurrency, setup commands), and resume."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import git
import pytest

from aca_flows.cli import main
from aca_flows.errors import ProviderError
from aca_flows.flows import run_flow
from aca_flows.flows.run_setup import RunRequest, open_run
from aca_flows.session.layout import AcaDir
from aca_flows.session.reading import list_sessions
from tests.fakes.coding_agent import SlowAgent, coding_agent, task_of
from tests.flows.conftest import eventually, flow_run_logs


def toml_tasks(tmp_path: Path, plan: str, setup: str = "", count: int = 3) -> Path:
    tasks = "".join(
        f'[[tasks]]\nid = "t{i}"\ntitle = "write f{i}.txt"\nverify = "test -f build/ready"\n\n'
        for i in range(count)
    )
    path = tmp_path / "tasks.toml"
    path.write_text(f"[plan]\n{plan}\n\n{setup}\n{tasks}")
    return path


def effective_limit(repo: Path, tasks: Path, **request) -> int:
    store, run = open_run(RunRequest(task_file=str(tasks), workdir=str(repo), **request))
    store.close()
    return run.config.session.max_concurrent_tasks


def test_a_plans_max_concurrent_beats_the_config_file_and_yields_to_the_command_line(
    tmp_path, repo, anthropic_fake
):
    (repo / "aca.toml").write_text("[session]\nmax_concurrent_tasks = 5\n")
    limited = toml_tasks(tmp_path, 'name = "limited"\nmax_concurrent = 1')
    (tmp_path / "free").mkdir()
    free = toml_tasks(tmp_path / "free", 'name = "free"')

    assert effective_limit(repo, limited) == 1
    assert effective_limit(repo, limited, max_concurrent=4) == 4
    assert effective_limit(repo, free) == 5


def test_plan_concurrency_and_setup_commands_apply_to_a_real_run(tmp_path, repo, anthropic_fake):
    slow_agent = SlowAgent(0.2)

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(slow_agent)
    (Path(git.Repo(repo).git_dir) / "info" / "exclude").write_text("build/\n")
    setup = (
        '[[setup_commands]]\nname = "prepare"\ncommand = "mkdir -p build && touch build/ready"\n'
    )
    tasks = toml_tasks(tmp_path, 'name = "one at a time"\nmax_concurrent = 1', setup)

    summary = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary

    # Every verify command found what setup built in its worktree; one task ran at a time.
    assert summary["status"] == "completed" and summary["counts"] == {"completed": 3}
    assert slow_agent.peak == 1
    tree = git.Repo(repo).commit(summary["branch"]).tree
    assert "build" not in {item.path for item in tree}


def test_a_resumed_session_shows_its_completed_tasks_as_cached_and_runs_none(
    tmp_path, repo, anthropic_fake
):
    """Completed tasks are settled from the session's record before any task runs: the
    resumed flow run shows each as a ``Cached`` task run and calls no provider. Prefect's
    result cache is not what keeps them from running again."""
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    name = f"resume-{tmp_path.name}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f"# {name}\n\n- write a.txt {{#a}}\n- write b.txt {{#b depends_on=a}}\n")
    first = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
    calls = len(anthropic_fake.anthropic.requests)

    again = run_flow(workdir=str(repo), session_id=first["session_id"]).summary

    assert again["status"] == "completed"
    assert len(anthropic_fake.anthropic.requests) == calls

    # The server records task runs from their events, after the run has gone on: under load
    # the last states come a moment later.
    def recorded():
        flow_runs, task_runs = asyncio.run(_runs_named(name))
        final = [t for t in task_runs if t.state and t.state.is_final()]
        return (flow_runs, task_runs) if len(final) == 4 else None

    flow_runs, task_runs = eventually(recorded, "the four task runs' final states")
    assert len(flow_runs) == 2
    resumed, original = flow_runs
    by_run = {
        run.id: sorted((t.name, t.state.name) for t in task_runs if t.flow_run_id == run.id)
        for run in flow_runs
    }
    assert by_run[original.id] == [("a write a.txt", "Completed"), ("b write b.txt", "Completed")]
    assert by_run[resumed.id] == [("a write a.txt", "Cached"), ("b write b.txt", "Cached")]
    # Their results are persisted in the session, as JSON, by the run that did the work.
    results = AcaDir(repo).session(first["session_id"]).root / "results"
    assert sorted(f.name.split("-")[0] for f in results.iterdir()) == ["a", "b"]
    assert all(json.loads(f.read_text())["result"] for f in results.iterdir())


def test_a_completed_session_resumes_without_its_provider(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    """Nothing is left to run, so nothing is asked of the provider: a resume of a finished
    session without its key (or without the config that named its cassette) ends completed
    instead of refusing the provider."""
    for _ in range(4):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n")
    first = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    calls = len(anthropic_fake.anthropic.requests)

    again = run_flow(workdir=str(repo), session_id=first["session_id"])

    assert again.summary is not None, again.error
    assert again.summary["status"] == "completed"
    assert again.summary["counts"] == {"completed": 1}
    assert len(anthropic_fake.anthropic.requests) == calls


def test_a_resume_refuses_a_session_branch_that_lost_landed_work(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    """A deleted session branch, made again from HEAD, would let the tasks left build on work
    that is gone while the session said completed: the resume refuses (exit 2), names the
    lost tasks and how to restore the branch, and writes nothing."""
    for _ in range(4):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n")
    first = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
    branch = f"aca/{first['session_id']}"
    landed = git.Repo(repo).git.rev_parse(branch)
    git.Repo(repo).git.branch("-D", branch)
    events = next((repo / ".aca" / "sessions").glob("*/meta/events.jsonl"))
    journal = events.read_text()

    again = run_flow(workdir=str(repo), session_id=first["session_id"])

    assert getattr(again.error, "exit_code", None) == 2, again.error
    message = str(again.error)
    assert (
        f"session branch {branch} no longer holds the work of 1 completed task(s) (write-a-txt)"
        in (message)
    )
    assert f"git branch -f {branch} {landed}" in message
    assert events.read_text() == journal
    assert branch not in [h.name for h in git.Repo(repo).heads]
    # `aca resume` refuses it before Prefect starts: no Failed flow run is left in the UI.
    import aca_flows.cli.run as run_cli
    from aca_flows.cli import main

    monkeypatch.setattr(run_cli, "_run_held_session", lambda *_: pytest.fail("a flow ran"))
    assert main(["resume", first["session_id"], "--workdir", str(repo)]) == 2
    assert f"git branch -f {branch} {landed}" in capsys.readouterr().err


async def _runs_named(name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        flow_filter = FlowRunFilter(name=FlowRunFilterName(like_=name))
        flow_runs = await client.read_flow_runs(
            flow_run_filter=flow_filter, sort=FlowRunSort.EXPECTED_START_TIME_DESC
        )
        task_runs = await client.read_task_runs(flow_run_filter=flow_filter)
    return flow_runs, task_runs


def test_a_tasks_provider_and_model_override_the_runs(tmp_path, repo, anthropic_fake, monkeypatch):
    monkeypatch.setenv("ACA_SESSION__MODEL", "claude-config")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{anthropic_fake.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    write = {"name": "write_file", "arguments": {"path": "c.txt", "content": "c\n"}}
    anthropic_fake.openai.enqueue(tool_calls=[write])
    anthropic_fake.openai.enqueue(tool_calls=[{"name": "finish", "arguments": {"summary": "c"}}])
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        "- write a.txt {#a}\n"
        "- write b.txt {#b model=claude-other}\n"
        "- write c.txt {#c provider=openai model=gpt-test}\n"
    )

    summary = run_flow(task_file=str(tasks), workdir=str(repo)).summary

    assert summary["status"] == "completed", summary
    models = {task_of(r)[0]: r.json["model"] for r in anthropic_fake.anthropic.requests}
    assert models == {"a": "claude-config", "b": "claude-other"}
    assert {r.json["model"] for r in anthropic_fake.openai.requests} == {"gpt-test"}
    assert len(anthropic_fake.openai.requests) == 2


def test_a_configured_prefect_concurrency_limit_is_held_around_every_call(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    limit_name = f"calls-{tmp_path.name}".replace("_", "-")

    async def create_limit():
        async with get_client() as client:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=limit_name, limit=1)
            )

    asyncio.run(create_limit())
    monkeypatch.setenv("ACA_PROVIDERS__ANTHROPIC__CONCURRENCY_LIMIT", limit_name)
    slow_agent = SlowAgent(0.2)

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(slow_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt\n- write b.txt\n- write c.txt\n")

    summary = run_flow(
        task_file=str(tasks), workdir=str(repo), model="claude-test", max_concurrent=3
    ).summary

    assert summary["counts"] == {"completed": 3}
    assert slow_agent.peak == 1  # three tasks ran at once, but one call at a time held the slot


PROPOSAL = {
    "name": "Files",
    "description": "Write a file.",
    "strategy": "sequential",
    "context": [],
    "tasks": [{"id": "a", "title": "write a.txt", "description": "", "depends_on": []}],
}


def parse_reply() -> dict:
    """The model's plan, through the forced ``respond`` tool, and what the parse cost."""
    return {
        "tool_calls": [{"name": "respond", "arguments": PROPOSAL}],
        "usage": {"input_tokens": 1000, "output_tokens": 200},
    }


def aca_run(tasks: Path, repo: Path) -> int:
    args = ["run", str(tasks), "--use-intelligent-parser", "--provider", "anthropic"]
    return main([*args, "--model", "claude-sonnet-4-6", "--workdir", str(repo), "--json"])


def call_events(repo: Path, session_id: str) -> list[dict]:
    path = AcaDir(repo).session(session_id).events_jsonl
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in events if e["type"] == "call"]


def test_the_parse_is_billed_once_to_the_session_made_from_it(tmp_path, repo, anthropic_fake):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    anthropic_fake.anthropic.enqueue(**parse_reply())
    for _ in range(4):
        anthropic_fake.anthropic.enqueue(coding_agent)

    # The flow parses (its parse-task-file task run) before the session exists.
    assert aca_run(tasks, repo) == 0
    assert len(anthropic_fake.model_calls) == 3  # the parse, then write and finish
    (first,) = list_sessions(repo)
    parse, *task_calls = call_events(repo, first.id)
    assert (parse["purpose"], parse["task_id"], parse["calls"]) == ("parse", None, 1)
    assert (parse["usage"]["input_tokens"], parse["usage"]["output_tokens"]) == (1000, 200)
    assert parse["cost_usd"] > 0
    assert [c["task_id"] for c in task_calls] == ["a", "a"]
    assert first.usage[0].calls == 3
    assert first.cost_usd == sum(c["cost_usd"] for c in [parse, *task_calls])

    # The same file again: the cached parse costs nothing and is not billed again.
    assert aca_run(tasks, repo) == 0
    assert len(anthropic_fake.model_calls) == 5
    second = next(s for s in list_sessions(repo) if s.id != first.id)
    assert [c["purpose"] for c in call_events(repo, second.id)] == ["task", "task"]
    assert sum(s.usage[0].calls for s in list_sessions(repo)) == len(anthropic_fake.model_calls)


def test_the_plan_name_is_read_before_the_flow_starts_when_it_can_be(
    tmp_path, repo, anthropic_fake
):
    from aca_flows.flows.run_setup import plan_name_of

    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Nightly fixes\n\n- write a.txt {#a}\n")
    assert plan_name_of({"task_file": str(tasks), "workdir": str(repo)}) == "Nightly fixes"
    assert plan_name_of({"plan_text": "# From text\n\n- write a.txt\n"}) == "From text"
    # A resumed session: its record's plan (the file may have changed since).
    store, _ = open_run(RunRequest(task_file=str(tasks), workdir=str(repo)))
    store.close()
    tasks.write_text("# Renamed\n\n- write a.txt {#a}\n")
    resume = {"workdir": str(repo), "session_id": store.session_id}
    assert plan_name_of(resume) == "Nightly fixes"
    # Only the flow can tell: the model names the plan; bad input is the flow's to refuse.
    assert plan_name_of({"task_file": str(tasks), "use_intelligent_parser": True}) is None
    assert plan_name_of({"task_file": str(tmp_path / "missing.md")}) is None
    assert plan_name_of({"task_file": str(tasks), "plan_text": "# Two plans"}) is None


def test_a_run_that_cannot_start_after_its_session_exists_ends_it_and_frees_it(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    import aca_flows.flows.run_setup as run_setup

    def broken(*args, **kwargs):
        raise ProviderError("the provider could not be built")

    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    built = run_setup.build_providers
    monkeypatch.setattr(run_setup, "build_providers", broken)
    with pytest.raises(ProviderError, match="could not be built"):
        open_run(RunRequest(task_file=str(tasks), workdir=str(repo)))
    (session,) = list_sessions(repo)
    assert session.status == "failed" and "could not be built" in session.status_reason
    # Its lock is free: the session resumes at once.
    monkeypatch.setattr(run_setup, "build_providers", built)
    store, _ = open_run(RunRequest(workdir=str(repo), session_id=session.id))
    store.close()


@pytest.mark.parametrize("signal", ["SIGTERM", "Ctrl-C"])
def test_a_signal_while_the_run_is_set_up_ends_its_session_interrupted(
    tmp_path, repo, anthropic_fake, monkeypatch, signal
):
    # A `git status` of a big checkout takes seconds: a SIGTERM then recorded the session
    # "failed", its reason "TerminationSignal", and a Ctrl-C gave no way on.
    from prefect.exceptions import TerminationSignal

    import aca_flows.flows.run_setup as run_setup

    def stopped(*args, **kwargs):
        raise TerminationSignal(15) if signal == "SIGTERM" else KeyboardInterrupt

    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    monkeypatch.setattr(run_setup, "build_providers", stopped)
    with pytest.raises((TerminationSignal, KeyboardInterrupt)):
        open_run(RunRequest(task_file=str(tasks), workdir=str(repo)))
    (session,) = list_sessions(repo)
    how = "SIGTERM" if signal == "SIGTERM" else "an interrupt"
    assert session.status == "interrupted"
    assert session.status_reason == (
        f"interrupted by {how} before its first task; `aca resume {session.id} --workdir {repo}`"
        " continues"
    )


def test_a_run_on_a_checkout_with_uncommitted_changes_says_the_tasks_do_not_see_them(
    tmp_path, repo, anthropic_fake, caplog
):
    tasks = repo / "tasks.md"  # aca's input, not the tasks': not worth a warning
    tasks.write_text("- write a.txt {#a}\n")
    store, _ = open_run(RunRequest(task_file=str(tasks), workdir=str(repo)))
    store.close()
    assert "uncommitted" not in caplog.text  # a clean checkout (aca's .aca/ is excluded)

    (repo / "README.md").write_text("edited, not committed\n")
    (repo / "notes.txt").write_text("new\n")
    store, _ = open_run(RunRequest(task_file=str(tasks), workdir=str(repo)))
    store.close()
    assert "uncommitted changes (README.md, notes.txt)" in caplog.text
    assert "the tasks start from its last commit and do not see them" in caplog.text
    assert "staged" not in caplog.text
    # Staged, its content is in git's object store, which the sandbox shows: said so.
    git.Repo(repo).git.add("README.md")
    caplog.clear()
    store, _ = open_run(RunRequest(task_file=str(tasks), workdir=str(repo)))
    store.close()
    assert "Those staged (README.md) are in git's object store, which the tasks' commands can" in (
        caplog.text
    )


def test_a_budget_on_a_model_without_a_price_is_refused_before_anything_is_written(
    tmp_path, repo, anthropic_fake
):
    from aca_flows.errors import InputError

    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    request = {"task_file": str(tasks), "workdir": str(repo), "budget_usd": 0.5}
    with pytest.raises(InputError, match=r"no price for claude-fake \(anthropic\)") as refused:
        open_run(RunRequest(model="claude-fake", **request))
    assert '[providers.anthropic.prices."claude-fake"]' in str(refused.value)
    assert not (repo / ".aca" / "sessions").exists()

    # With its price given, the budget can be kept.
    (repo / "aca.toml").write_text(
        '[providers.anthropic.prices."claude-fake"]\ninput = 1.0\noutput = 2.0\n'
    )
    store, run = open_run(RunRequest(model="claude-fake", **request))
    store.close()
    assert run.config.session.budget_usd == 0.5


def test_a_budget_on_a_hosted_ollama_without_a_price_is_refused(monkeypatch):
    # An Ollama server elsewhere may bill its calls: with no price they counted $0, unsaid.
    from aca_flows.errors import InputError
    from aca_flows.flows.unpriced import refuse_a_budget_without_prices
    from aca_flows.plan import ExecutionPlan, Task
    from aca_flows.settings import AcaConfig

    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    plan = ExecutionPlan(name="p", tasks=[Task(id="a", title="write a.txt")])

    def config(base_url: str, **prices) -> AcaConfig:
        section = {"base_url": base_url, "prices": prices}
        session = {"provider": "ollama", "budget_usd": 0.5}
        return AcaConfig(session=session, providers={"ollama": section})

    with pytest.raises(InputError, match=r"no price for llama3.1 \(ollama\)") as refused:
        refuse_a_budget_without_prices(plan, config("https://ollama.example.com"))
    assert "the Ollama server at https://ollama.example.com is not on this machine" in str(
        refused.value
    )
    assert '[providers.ollama.prices."llama3.1"]' in str(refused.value)
    # On this machine its calls are free; elsewhere, a price (0 too) keeps the budget.
    for local in ("http://localhost:11434", "http://127.0.0.1:11434", "http://[::1]:11434"):
        refuse_a_budget_without_prices(plan, config(local))
    free = {"llama3.1": {"input": 0, "output": 0}}
    refuse_a_budget_without_prices(plan, config("https://ollama.example.com", **free))


def test_a_resume_says_when_its_task_file_changed_since_the_session_started(
    tmp_path, repo, anthropic_fake, caplog
):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    store, _ = open_run(RunRequest(task_file=str(tasks), workdir=str(repo)))
    store.close()
    session_id = store.session_id

    def resume() -> str:
        caplog.clear()
        store, run = open_run(RunRequest(workdir=str(repo), session_id=session_id))
        store.close()
        assert [t.id for t in run.plan.tasks] == ["a"]  # the recorded plan runs, either way
        return caplog.text

    assert "changed since" not in resume()
    tasks.write_text("- write a.txt {#a}\n- write b.txt {#b}\n")
    said = resume()
    assert f"{tasks} changed since session {session_id} started" in said
    assert f"start a new run (aca run {tasks})" in said
    tasks.unlink()  # gone: nothing to compare, nothing to say
    assert "changed since" not in resume()


def test_a_resume_removes_the_claude_transcripts_a_killed_run_left(tmp_path, repo, anthropic_fake):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")
    store, _ = open_run(RunRequest(task_file=str(tasks), workdir=str(repo)))
    store.close()
    # What claude keeps of a task's run that SIGKILL cut short (its cleanup never ran), as it
    # names it: ~/.claude/projects/<the worktree's path, every other character a dash>/.
    projects = Path.home() / ".claude" / "projects"
    worktree = repo.resolve() / ".aca" / "worktrees" / store.session_id / "a"
    killed = projects / re.sub(r"[^a-zA-Z0-9]", "-", str(worktree)) / "4f1c.jsonl"
    users = projects / re.sub(r"[^a-zA-Z0-9]", "-", str(repo.resolve())) / "mine.jsonl"
    for transcript in (killed, users):
        transcript.parent.mkdir(parents=True)
        transcript.write_text('{"content": "cat .env"}\n')

    store, _ = open_run(RunRequest(workdir=str(repo), session_id=store.session_id))
    store.close()
    assert not killed.parent.exists() and users.exists()  # the user's own sessions stay


def test_a_resume_refuses_a_session_branch_checked_out_in_the_users_checkout(
    tmp_path, repo, anthropic_fake
):
    """ "The work is on branch aca/<id>": a user who checks it out and resumes would see the
    next task's files as staged deletions once aca moved the branch under the checkout. The
    resume refuses (exit 2), names the checkout and the fix, and writes nothing; after the
    fix it runs."""
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n- tidy up {#b}\n")  # b changes nothing: it fails
    first = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
    assert first["status"] == "failed"
    branch, session_id = first["branch"], first["session_id"]
    user = git.Repo(repo)
    user.git.checkout(branch)
    head = user.git.rev_parse(branch)
    events = AcaDir(repo).session(session_id).root / "meta" / "events.jsonl"
    journal = events.read_text()

    again = run_flow(workdir=str(repo), session_id=session_id)

    assert getattr(again.error, "exit_code", None) == 2, again.error
    message = str(again.error)
    assert f"the session branch {branch} is checked out in {repo}:" in message
    assert f"git -C {repo} checkout -" in message and "run again" in message
    assert events.read_text() == journal
    assert user.git.rev_parse(branch) == head and user.git.status("--porcelain") == ""

    user.git.checkout("-")
    fixed = run_flow(workdir=str(repo), session_id=session_id)
    assert fixed.summary is not None, fixed.error
    assert fixed.summary["failed_ids"] == ["b"]  # it ran (and failed again, changing nothing)


def test_a_session_branch_checked_out_mid_run_stops_the_landing_and_a_resume_lands_it(
    tmp_path, repo, anthropic_fake, monkeypatch, capsys
):
    """The user checks the session branch out in a worktree of theirs while a task runs: the
    task does not land (the branch is not moved under that checkout), it fails naming the
    checkout and the fix; after the fix, the resume it names lands it, run from where the
    reader is."""
    import shlex

    view = tmp_path / "view"
    monkeypatch.chdir(tmp_path)  # not the repository: the resume must name it

    def checks_out_then_works(request):
        if not view.exists():
            git.Repo(repo).git.worktree("add", str(view), "aca/mid")
        return coding_agent(request)

    for _ in range(3):
        anthropic_fake.anthropic.enqueue(checks_out_then_works)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write b.txt {#b}\n- write c.txt {#c}\n")
    start = git.Repo(repo).git.rev_parse("HEAD")

    first = run_flow(
        task_file=str(tasks), workdir=str(repo), session_id="mid", max_concurrent=1
    ).summary

    # No verdict on b, and no later task could land: the run stops (it failed b and went
    # on starting tasks whose work was bound to be thrown away).
    assert first["status"] == "stopped" and first["failed_ids"] == []
    assert first["counts"] == {"pending": 2}  # c never started
    reason = first["stopped_reason"]
    assert "task b did not land (aca/mid is unchanged)" in reason
    assert f"the session branch aca/mid is checked out in {view}:" in reason
    assert f"git -C {view} checkout -" in reason
    resume = reason.split(" runs it again")[0].rsplit("`", 2)[1]
    assert resume == f"aca resume mid --workdir {repo}"
    assert git.Repo(repo).git.rev_parse("aca/mid") == start
    assert git.Repo(view).git.status("--porcelain") == ""

    git.Repo(view).git.switch("--detach")
    for _ in range(6):
        anthropic_fake.anthropic.enqueue(coding_agent)
    assert main([*shlex.split(resume)[1:], "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["status"] == "completed", again
    assert git.Repo(repo).git.show("aca/mid:b.txt") == "b.txt"
    assert git.Repo(view).git.status("--porcelain") == ""


def test_the_flow_refuses_a_model_the_ollama_server_lacks_as_the_cli_does(
    tmp_path, repo, monkeypatch
):
    """A deployment run has no CLI before it: the flow checks every model it would use."""
    from aca_flows.errors import PermanentProviderError
    from tests.fakes.llm_server import FakeLLMServer

    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n- write b.txt {#b model=nosuch5}\n")
    with FakeLLMServer() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        server.ollama_models = ["llama3.1:latest"]
        request = {"task_file": str(tasks), "workdir": str(repo), "provider": "ollama"}
        with pytest.raises(PermanentProviderError) as refused:
            open_run(RunRequest(model="nosuch", **request))
    assert "does not have the models 'nosuch', 'nosuch5'" in str(refused.value)
    assert "`ollama pull nosuch` and `ollama pull nosuch5`" in str(refused.value)
    assert not (repo / ".aca" / "sessions").exists()


def test_a_runs_providers_retry_no_call_once_the_run_is_stopping(tmp_path, repo, anthropic_fake):
    from aca_flows.flows.task_run import ACTIVE_RUNS

    tasks = toml_tasks(tmp_path, 'name = "stop"', count=1)
    store, run = open_run(RunRequest(task_file=str(tasks), workdir=str(repo)))
    store.close()
    provider = run.providers[run.default_provider]
    ACTIVE_RUNS[run.session_id] = run
    try:
        assert provider.stopping() is False
        run.stopping = lambda: True  # the flow's Interrupt, set once the run started
        assert provider.stopping() is True
    finally:
        ACTIVE_RUNS.pop(run.session_id)


def flow_run_warnings(session_id: str) -> list[str]:
    """The WARNING lines of the session's flow run, read back from the server."""
    return [text for level, text in flow_run_logs(session_id) if level == logging.WARNING]


def test_every_run_the_cli_did_not_start_warns_of_dependencies_stated_in_prose(
    tmp_path, repo, anthropic_fake, capsys
):
    # Every call answered for its own task: three runs of two tasks make 12 calls, and a
    # queue of 10 answers left the last two to the default "ok", which under load could be a
    # task's first call (no file written: the task failed, and so did `aca run`).
    anthropic_fake.anthropic.default = coding_agent
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        "# Login\n\n- write a.txt {#a}\n- write b.txt {#b}\n"
        "  **Dependencies**: Requires Database Setup (task #1)\n"
    )
    # A dry run says it on the terminal and starts no flow: the next flow run still says it.
    assert main(["run", str(tasks), "--workdir", str(repo), "--dry-run"]) == 0
    assert "state dependencies in prose" in capsys.readouterr().err
    for _ in range(2):  # the same plan, twice in one process: each flow run says it
        summary = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
        (warning,) = [w for w in flow_run_warnings(summary["session_id"]) if "in prose" in w]
        assert warning.startswith(f"{tasks}: 1 task(s) state dependencies in prose")
        assert "b: **Dependencies**: Requires Database Setup (task #1)" in warning

    # `aca run` says it as it loads the file: the flow it starts does not say it again.
    capsys.readouterr()
    args = ["run", str(tasks), "--workdir", str(repo), "--model", "claude-test", "--json"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "state dependencies in prose" in err
    session_id = json.loads(out)["session_id"]
    assert not [w for w in flow_run_warnings(session_id) if "in prose" in w]
