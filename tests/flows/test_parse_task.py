"""The intelligent parse as the flow's ``parse-task-file`` task run: shown, cached, billed."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

from aca_flows.cli import main
from aca_flows.errors import TaskFileError
from aca_flows.flows import run_flow
from aca_flows.plan.intelligent import parse_cache_dir, parse_request_key
from aca_flows.providers import get_provider
from aca_flows.session.layout import AcaDir
from aca_flows.session.reading import list_sessions
from aca_flows.settings import AcaConfig
from tests.fakes.coding_agent import coding_agent
from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import llm_server  # noqa: F401  (fixture)
from tests.flows.test_run_setup import aca_run, call_events, parse_reply
from tests.plan.test_intelligent import DEPENDENCIES, TEST6, dependencies_proposal, respond
from tests.polling import last_read


def parse_task_runs(session_id: str) -> list:
    """The ``parse-task-file`` task runs of the flow run of session ``session_id``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterName,
    )

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[f"session:{session_id}"])
                ),
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="parse ")),
            )

    return asyncio.run(read())


def _named(runs: list, name: str) -> bool:
    return bool(runs) and all(run.state.name == name for run in runs)


def task_run_logs(task_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.logging.handlers import APILogHandler

    async def read():
        await APILogHandler.aflush()
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id]))
            )
            return "\n".join(log.message for log in logs)

    return asyncio.run(read())


def usage(repo: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["usage", "--workdir", str(repo), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_parse_is_a_task_run_and_a_second_run_is_a_prefect_cache_hit(
    tmp_path, repo, anthropic_fake, capsys
):
    # Braces in the name: Prefect would format a string task-run name with the parameters.
    tasks = tmp_path / "tasks{0}.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    anthropic_fake.anthropic.enqueue(**parse_reply())
    for _ in range(4):
        anthropic_fake.anthropic.enqueue(coding_agent)

    assert aca_run(tasks, repo) == 0

    # The flow made the parse's call, in its task run: the command line no longer parses.
    (first,) = list_sessions(repo)
    (parse_run,) = parse_task_runs(first.id)
    assert parse_run.name == "parse tasks{0}.md" and parse_run.state.name == "Completed"
    assert set(parse_run.tags) >= {"aca", "provider:anthropic"}
    logs = task_run_logs(parse_run.id)
    assert "parsing tasks{0}.md with anthropic claude-sonnet-4-6" in logs
    assert "plan 'Files': 1 task; 1 call(s)" in logs
    assert len(anthropic_fake.model_calls) == 3  # the parse, then write and finish
    # Its cost is on the session's bill, and its result is kept with the session.
    parse, *_ = call_events(repo, first.id)
    assert (parse["purpose"], parse["calls"]) == ("parse", 1) and parse["cost_usd"] > 0
    (billed,) = usage(repo, capsys)
    assert billed["calls"] == 3 and billed["cost_usd"] == first.cost_usd
    kept = json.loads(
        (AcaDir(repo).session(first.id).results_dir / "parse-task-file.json").read_text()
    )
    assert kept["plan"]["name"] == "Files" and kept["provider_calls"] == 1

    # The same file again: Prefect serves the parse from its cache; no provider call for it.
    assert aca_run(tasks, repo) == 0
    second = next(s for s in list_sessions(repo) if s.id != first.id)
    (cached,) = parse_task_runs(second.id)
    assert cached.state.name == "Cached"
    assert len(anthropic_fake.model_calls) == 5  # write and finish only
    assert [c["purpose"] for c in call_events(repo, second.id)] == ["task", "task"]
    assert usage(repo, capsys)[0]["calls"] == 5  # the parse is billed once, to the first


def test_the_prefect_cache_survives_the_process_and_follows_the_file(
    tmp_path, repo, anthropic_fake
):
    """The cache is the folder under ~/.aca, not the process: a run in a fresh Python finds
    it; a changed task file is a new parse."""
    from prefect.settings import PREFECT_API_URL

    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    anthropic_fake.anthropic.enqueue(**parse_reply())
    for _ in range(2):
        anthropic_fake.anthropic.enqueue(coding_agent)
    assert aca_run(tasks, repo) == 0
    stored = list((parse_cache_dir() / "prefect").iterdir())
    assert len(stored) == 1

    for _ in range(2):
        anthropic_fake.anthropic.enqueue(coding_agent)
    script = (
        "import sys; from aca_flows.cli import main; "
        "sys.exit(main(['run', sys.argv[1], '--use-intelligent-parser', '--provider', "
        "'anthropic', '--model', 'claude-sonnet-4-6', '--workdir', sys.argv[2], '--json']))"
    )
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tasks), str(repo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(anthropic_fake.model_calls) == 5  # 3 of the first run, write and finish
    newest = max(list_sessions(repo), key=lambda s: s.id)
    # Once in CI it was Completed: the parser's own cache answered, Prefect's was missed. And
    # once the process's log said Cached while the server, read at once, showed Completed:
    # the last read is asserted once it shows Cached, or after 30 s.
    (cached,) = last_read(partial(parse_task_runs, newest.id), partial(_named, name="Cached"), 30)
    assert cached.state.name == "Cached", done.stderr[-3000:]

    tasks.write_text("# Files\n\n- write a.txt\n- write b.txt\n")
    anthropic_fake.anthropic.enqueue(**parse_reply())  # asked again: the file changed
    for _ in range(2):
        anthropic_fake.anthropic.enqueue(coding_agent)
    aca_run(tasks, repo)
    changed = max(list_sessions(repo), key=lambda s: s.id)
    (parsed,) = parse_task_runs(changed.id)
    assert parsed.state.name == "Completed"
    assert len(list((parse_cache_dir() / "prefect").iterdir())) == 2


class _Planted:
    """What a repository's committed cache record unpickles to: a file written, code run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_cache_record_the_repository_commits_is_never_loaded(tmp_path, repo, anthropic_fake):
    """A repository can commit files under its .aca: a Prefect record there that names the
    pickle serializer, under the key anyone can work out from the task file, ran its code as
    the user (no sandbox, aca's environment) in place of the parse."""
    from prefect.results import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    tasks = repo / "tasks.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    provider = get_provider("anthropic", AcaConfig())
    key = parse_request_key(tasks, provider, model="claude-sonnet-4-6")
    marker = tmp_path / "planted-code-ran"
    record = ResultRecord(
        metadata=ResultRecordMetadata(serializer=PickleSerializer(), storage_key=key),
        result=_Planted(marker),
    )
    planted = AcaDir(repo).root / "parse_cache" / "prefect" / key  # where aca looked
    planted.parent.mkdir(parents=True)
    planted.write_bytes(record.serialize())
    anthropic_fake.anthropic.enqueue(**parse_reply())
    for _ in range(2):
        anthropic_fake.anthropic.enqueue(coding_agent)

    assert aca_run(tasks, repo) == 0

    assert not marker.exists()
    (session,) = list_sessions(repo)
    (parse_run,) = parse_task_runs(session.id)
    assert parse_run.state.name == "Completed"  # parsed, not taken from the repository
    assert len(anthropic_fake.model_calls) == 3


def test_a_plan_holding_a_secret_is_never_cached(tmp_path, repo, anthropic_fake):
    secret = "sk-ant-api03-" + "x" * 40
    reply = copy.deepcopy(parse_reply())  # its proposal is shared with other tests
    proposal = reply["tool_calls"][0]["arguments"]
    proposal["tasks"][0]["description"] = f"use the key {secret}"
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    anthropic_fake.anthropic.enqueue(**reply)
    for _ in range(2):
        anthropic_fake.anthropic.enqueue(coding_agent)

    assert aca_run(tasks, repo) == 0

    (session,) = list_sessions(repo)
    (parse_run,) = parse_task_runs(session.id)
    assert "the plan holds a secret: its parse is not cached" in task_run_logs(parse_run.id)
    cache = parse_cache_dir()
    written = [p for p in cache.rglob("*") if p.is_file()]
    assert not any(secret in p.read_text(errors="replace") for p in written)
    assert not (cache / "prefect").exists() or not list((cache / "prefect").iterdir())


def test_a_parse_that_fails_fails_the_run_with_the_parsers_message(tmp_path, repo, anthropic_fake):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    for _ in range(3):  # the first answer and both repairs: never JSON
        anthropic_fake.anthropic.enqueue(text="no plan today")

    outcome = run_flow(
        task_file=str(tasks), workdir=str(repo), use_intelligent_parser=True, model="claude-test"
    )

    assert outcome.state_name == "Failed"
    assert isinstance(outcome.error, TaskFileError)  # the command line exits 2 with it
    # No session bills a failed parse: its message says what it spent, calls without a
    # price (claude-test has none) counted as such, never as costing nothing.
    assert (
        "gave no usable plan after 3 attempt(s) (3 calls, $0.0000 + 3 unpriced calls spent)"
        in str(outcome.error)
    )
    assert not (repo / ".aca" / "sessions").exists()
    stored = parse_cache_dir() / "prefect"
    assert not stored.exists() or not list(stored.iterdir())  # a failure is not cached


def test_a_transient_error_of_the_parse_is_retried_and_logged_in_its_task_run(
    tmp_path, repo, anthropic_fake
):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    anthropic_fake.anthropic.enqueue(status=529, error="overloaded_error", retry_after=0)
    anthropic_fake.anthropic.enqueue(**parse_reply())
    for _ in range(2):
        anthropic_fake.anthropic.enqueue(coding_agent)

    assert aca_run(tasks, repo) == 0

    (session,) = list_sessions(repo)
    (parse_run,) = parse_task_runs(session.id)
    assert parse_run.state.name == "Completed"
    assert "Retrying the parse's call in 0.0 s (retry 1 of 4)" in task_run_logs(parse_run.id)
    assert len(anthropic_fake.model_calls) == 4  # the failed call, the parse, write, finish


def test_a_parse_by_a_model_aca_has_no_price_for_is_never_shown_as_costing_nothing(
    tmp_path, repo, anthropic_fake, capsys
):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    anthropic_fake.anthropic.enqueue(**parse_reply())
    for _ in range(2):
        anthropic_fake.anthropic.enqueue(coding_agent)
    args = ["run", str(tasks), "--use-intelligent-parser", "--workdir", str(repo), "--json"]

    assert main([*args, "--model", "claude-test"]) == 0

    (session,) = list_sessions(repo)
    (parse_run,) = parse_task_runs(session.id)
    assert "plan 'Files': 1 task; 1 call(s), $0.0000 + 1 unpriced call" in task_run_logs(
        parse_run.id
    )
    parse, *task_calls = call_events(repo, session.id)
    assert (parse["purpose"], parse["cost_usd"], parse["unpriced"]) == ("parse", 0, True)
    # The session counts it with the task's two calls, in every view of its spend.
    assert session.unpriced_calls == 3
    (billed,) = usage(repo, capsys)
    assert (billed["calls"], billed["unpriced_calls"]) == (3, 3)


def test_the_flow_reuses_the_cli_parse(llm_server, tmp_path, capsys, monkeypatch):  # noqa: F811
    """A dry run's parse (or a --dump-plan's) leaves its answer in the parser's cache: the
    flow's own parse makes no second call, and bills the call the dry run made. (Here, on the
    session's test server: the parse is a Prefect task run.)"""
    from aca_flows.config_loader import load_config, run_overrides
    from aca_flows.flows.run_setup import RunRequest, _load_plan

    work = make_repo(tmp_path / "work")  # a dry run refuses a workdir the run refuses
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))
    args = ["--task-file", str(TEST6), "--use-intelligent-parser", "--context", "ctx"]
    assert main([*args, "--provider", "anthropic", "--dry-run", "-w", str(work)]) == 0
    request = RunRequest(
        task_file=str(TEST6),
        workdir=str(work),
        provider="anthropic",
        context=["ctx"],
        use_intelligent_parser=True,
    )
    config = load_config(work, None, run_overrides(request)).config

    plan, parse = _load_plan(request, config)

    assert {t.id: t.dependencies for t in plan.roots()} == DEPENDENCIES
    assert plan.context_hints[-1] == "ctx"
    assert len(llm_server.anthropic.requests) == 1
    # The dry run's parse made the call; no session has billed it yet.
    assert parse.from_cache and parse.unbilled.calls == 1
