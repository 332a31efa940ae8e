"""prefect.yaml end to end: a real Prefect server, a process worker, and runs started the ways
the deployments are meant to be used.

One ``prefect server start`` (SQLite in a temporary folder, loopback, a free port) serves the
whole module: the work pool is created, a copy of the repository is deployed with
``prefect deploy --all --no-prompt``, and a ``prefect worker`` runs the flow runs. Runs use
the replay provider with a cassette recorded at the start against the fake Anthropic server,
so no run needs a key or the network. Everything is stopped in ``finally``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
import httpx
import pytest

from tests.fakes.coding_agent import coding_agent
from tests.fakes.llm_server import FakeLLMServer

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "aca-process"
# What a clone needs to deploy and run: the project file, the flow's code, the task files.
CLONE_PARTS = ("prefect.yaml", "aca_flows", "tasks", "deployments")
STARTUP_SECONDS = 90
RUN_SECONDS = 90


@dataclass
class Stack:
    """The running Prefect server and worker, and where things are."""

    base: Path
    clone: Path
    api_url: str
    env: dict[str, str]

    def python(self, *args: str, timeout: float = RUN_SECONDS, **extra_env: str):
        return subprocess.run(
            [sys.executable, *args],
            env={**self.env, **extra_env},
            cwd=self.clone,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@dataclass
class Recorded:
    """Task files and the cassette that answers their provider calls."""

    tasks: Path
    slow_tasks: Path
    release: Path
    cassette: Path


# --- the module's Prefect server and worker -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without provider keys or Prefect/aca settings."""
    drop = ("ANTHROPIC_", "OPENAI_", "OLLAMA_", "ACA_", "PREFECT_", "CLAUDE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **extra}


def _start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    out = log.open("w")
    return subprocess.Popen(
        args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (flow-run children included), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_healthy(api_url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {STARTUP_SECONDS}s:\n{log.read_text()[-3000:]}")


def _prefect(stack_env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args],
        env=stack_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _copy_clone(target: Path) -> Path:
    """A clean copy of the repository's deployable parts (what a fresh clone holds)."""
    target.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", ".aca", "*.pyc")
    for part in CLONE_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=ignore)
        else:
            shutil.copy2(source, target / part)
    return target


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("prefect-stack")
    (base / "home").mkdir()
    api_url = f"http://127.0.0.1:{_free_port()}/api"
    env = _clean_env(
        HOME=str(base / "home"),
        PREFECT_HOME=str(base / "prefect-home"),
        PREFECT_API_URL=api_url,
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{base / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        # A run that fell back to Claude Code would fail at once instead of reaching anything.
        ACA_CLAUDE_CLI=str(base / "no-claude-here"),
        # The worker's allow-list: the repositories and task files of these tests live here.
        ACA_DEPLOYMENTS__ALLOWED_WORKDIRS=str(base),
        # Verify commands run sandboxed: the gate script and its release file are shown to them.
        ACA_SANDBOX__READ_ONLY_PATHS=str(base / "recording"),
    )
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    processes: list[subprocess.Popen] = []
    try:
        server_log = base / "server.log"
        server_args = ["server", "start", "--host", "127.0.0.1", "--port", port]
        processes.append(_start([str(BIN / "prefect"), *server_args], env, base, server_log))
        _wait_healthy(api_url, processes[0], server_log)
        _prefect(env, base, "work-pool", "create", POOL, "--type", "process")
        clone = _copy_clone(base / "clone")
        _prefect(env, clone, "deploy", "--all", "--no-prompt")
        worker_args = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"]
        # The worker starts in an empty folder: it needs aca installed, nothing of the clone.
        (base / "worker").mkdir()
        processes.append(_start(worker_args, env, base / "worker", base / "worker.log"))
        yield Stack(base=base, clone=clone, api_url=api_url, env=env)
    finally:
        for process in reversed(processes):
            _stop(process)


# --- a cassette and repositories for the runs ----------------------------------------------

RECORD_SCRIPT = """
import sys
from aca_flows.flows import run_flow
for task_file, workdir, cassette in zip(*[iter(sys.argv[1:])] * 3):
    outcome = run_flow(task_file=task_file, workdir=workdir, model="claude-test", record=cassette)
    assert outcome.state_name == "Completed", (outcome.state_name, outcome.error)
"""


def make_repo(path: Path, cassette: Path | None = None) -> Path:
    """A git repository with one commit; with a cassette, configured to replay it."""
    path.mkdir(parents=True)
    repo = git.Repo.init(path, initial_branch="main")
    (path / "README.md").write_text("demo\n")
    repo.index.add(["README.md"])
    author = git.Actor("u", "u@example.com")
    repo.index.commit("init", author=author, committer=author)
    if cassette is not None:
        (path / ".aca").mkdir()
        (path / ".aca" / "config.toml").write_text(
            '[session]\nprovider = "replay"\nmodel = "claude-test"\n\n'
            f'[providers.replay]\ncassette = "{cassette}"\n'
        )
    return path


@pytest.fixture(scope="module")
def recorded(stack: Stack) -> Recorded:
    """Record every provider call the test task files make, once, against the fake server."""
    base = stack.base / "recording"
    base.mkdir()
    tasks = base / "tasks.md"
    tasks.write_text("# Demo\n\n- write a.txt {#a}\n- write b.txt {#b depends_on=a}\n")
    # b's verify waits (then fails) until the release file exists: a run to interrupt.
    release = base / "release"
    gate = base / "gate.sh"
    gate.write_text(f"test -f {release} || {{ sleep 20; exit 1; }}\n")
    slow_tasks = base / "slow.md"
    slow_tasks.write_text(
        f"# Slow\n\n- write a.txt {{#a}}\n- write b.txt {{#b depends_on=a verify='sh {gate}'}}\n"
    )
    release.write_text("go\n")
    cassettes = [base / "tasks.json", base / "slow.json"]
    with FakeLLMServer() as server:
        for _ in range(20):
            server.anthropic.enqueue(coding_agent)
        args = [
            str(tasks), str(make_repo(base / "rec1")), str(cassettes[0]),
            str(slow_tasks), str(make_repo(base / "rec2")), str(cassettes[1]),
        ]  # fmt: skip
        done = stack.python(
            "-c",
            RECORD_SCRIPT,
            *args,
            ANTHROPIC_BASE_URL=server.url,
            ANTHROPIC_API_KEY="test-key",
            ACA_SESSION__PROVIDER="anthropic",
            ACA_SESSION__RETRY_BACKOFF_SECONDS="0",
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    release.unlink()
    interactions = [i for c in cassettes for i in json.loads(c.read_text())["interactions"]]
    cassette = base / "cassette.json"
    cassette.write_text(json.dumps({"version": 1, "interactions": interactions}))
    return Recorded(tasks=tasks, slow_tasks=slow_tasks, release=release, cassette=cassette)


# --- reading what happened ----------------------------------------------------------------


def prefect_call(stack: Stack, fn) -> Any:
    """Run ``await fn(client)`` against the module's server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def main():
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            async with get_client() as client:
                return await fn(client)

    return asyncio.run(main())


def wait_final(stack: Stack, flow_run_id, timeout: float = RUN_SECONDS):
    async def poll(client):
        deadline = time.monotonic() + timeout
        while True:
            run = await client.read_flow_run(flow_run_id)
            if run.state and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                return run
            await asyncio.sleep(0.5)

    return prefect_call(stack, poll)


def runs_of(stack: Stack, deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async def read(client):
        names = DeploymentFilterName(any_=[deployment])
        return await client.read_flow_runs(deployment_filter=DeploymentFilter(name=names))

    return prefect_call(stack, read)


def start_run(stack: Stack, deployment: str, **parameters):
    """Create a flow run of ``aca-run/<deployment>`` without waiting for it."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        return run_deployment(f"aca-run/{deployment}", parameters=parameters, timeout=0)


def task_run_states(stack: Stack, session_id: str) -> dict[str, tuple[str, str]]:
    """The session's task runs, by name: their state's name and message."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterTags

    async def read(client):
        tagged = TaskRunFilter(tags=TaskRunFilterTags(all_=[f"session:{session_id}"]))
        return await client.read_task_runs(task_run_filter=tagged)

    runs = prefect_call(stack, read)
    return {r.name: (r.state.name, r.state.message) for r in runs}


def latest_artifacts(stack: Stack, session_id: str) -> dict[str, Any]:
    """The session's artifacts, newest version of each, by kind (``aca-<kind>-<session>``)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = ArtifactFilterKey(like_=f"%{session_id.lower()}%")
    found = prefect_call(
        stack, lambda c: c.read_latest_artifacts(artifact_filter=ArtifactFilter(key=key))
    )
    return {a.key.split("-")[1]: a for a in found}


def runs_under(stack: Stack, flow_run_id) -> list:
    """The flow run's subflow runs, nested ones too, and the task runs of all of them
    (read by flow run, not by tag: the task run standing for a subflow run carries none)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    async def read(client):
        found, ids = [], [flow_run_id]
        while ids:
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
            )
            parents = FlowRunFilterParentFlowRunId(any_=ids)
            subflows = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=parents)
            )
            found += [*task_runs, *subflows]
            ids = [r.id for r in subflows]
        return found

    return prefect_call(stack, read)


def task_commits(repo: Path, branch: str) -> list[str]:
    log = git.Repo(repo).git.log("--reverse", "--format=%(trailers:key=Aca-Task,valueonly)", branch)
    return [line.strip() for line in log.splitlines() if line.strip()]


def journal(repo: Path, session_id: str) -> list[dict]:
    path = repo / ".aca" / "sessions" / session_id / "meta" / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sessions_listed(stack: Stack, repo: Path) -> list[dict]:
    done = stack.python("-m", "aca_flows", "sessions", "list", "--json", "--workdir", str(repo))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)["sessions"]


def worker_log(stack: Stack) -> str:
    return (stack.base / "worker.log").read_text()[-4000:]


# --- the tests ------------------------------------------------------------------------------


def test_deploy_creates_the_schedules_and_the_trigger(stack):
    async def read(client):
        deployments = {d.name: d for d in await client.read_deployments()}
        automations = await client.read_automations()
        return deployments, automations

    deployments, automations = prefect_call(stack, read)
    assert set(deployments) == {"nightly-fix-tests", "docs-refresh", "on-demand", "on-ci-build"}
    assert {d.work_pool_name for d in deployments.values()} == {POOL}
    nightly = deployments["nightly-fix-tests"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly.parameters == {"task_file": "nightly-fix-tests.md", "open_pr": True}
    # Nothing of the clone `prefect deploy` ran in: a module entrypoint and no pull step.
    assert nightly.entrypoint == "aca_flows.flows.aca_run.aca_run"
    assert not nightly.pull_steps and str(stack.clone) not in nightly.model_dump_json()
    (trigger,) = [a for a in automations if a.name.startswith("on-ci-build")]
    assert trigger.trigger.expect == {"ci.build.finished"}
    # Shipped schedules are inactive until the user points them at a repository.
    for name in ("nightly-fix-tests", "docs-refresh"):
        assert [s.active for s in deployments[name].schedules] == [False]


def test_run_deployment_and_the_ci_event_each_land_commits(stack, recorded):
    by_pipeline = make_repo(stack.base / "by-pipeline", recorded.cassette)
    by_event = make_repo(stack.base / "by-event", recorded.cassette)

    emitted = stack.python(
        "deployments/emit_ci_event.py",
        "--workdir", str(by_event), "--task-file", str(recorded.tasks), "--build-id", "417",
    )  # fmt: skip
    assert emitted.returncode == 0, emitted.stderr[-2000:]

    # The other pipeline's flow: run_deployment, wait, get the session and branch back.
    handed = stack.python(
        "deployments/run_from_pipeline.py",
        "--workdir", str(by_pipeline), "--task-file", str(recorded.tasks), "--timeout", "80",
    )  # fmt: skip
    assert handed.returncode == 0, handed.stdout[-3000:] + handed.stderr[-3000:] + worker_log(stack)
    summary = json.loads(handed.stdout[handed.stdout.index("{") :])
    assert summary["state"] == "Completed"
    assert task_commits(by_pipeline, summary["branch"]) == ["a", "b"]
    # The run's own summary, read by the pipeline from the flow run's persisted result.
    assert summary["summary"]["status"] == "completed"
    assert summary["summary"]["session_id"] == summary["session_id"]
    assert summary["summary"]["counts"] == {"completed": 2}
    (listed,) = sessions_listed(stack, by_pipeline)
    assert listed["id"] == summary["session_id"]
    assert listed["name"] == summary["flow_run_name"]

    # The event's run: created by the trigger with the payload's fields as parameters.
    deadline = time.monotonic() + RUN_SECONDS
    while not (runs := runs_of(stack, "on-ci-build")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert runs, "the ci.build.finished event started no run\n" + worker_log(stack)
    (run,) = runs
    given = {"repo": "", "workdir": str(by_event), "task_file": str(recorded.tasks)}
    assert run.parameters == given
    run = wait_final(stack, run.id)
    assert run.state.is_completed(), f"{run.state}\n{worker_log(stack)}"
    (listed,) = sessions_listed(stack, by_event)
    assert listed["name"] == run.name
    assert task_commits(by_event, f"aca/{listed['id']}") == ["a", "b"]
    # The user's checkouts are untouched.
    for repo in (by_pipeline, by_event):
        assert git.Repo(repo).active_branch.name == "main" and not (repo / "a.txt").exists()


def test_bad_parameters_fail_at_once_naming_the_parameter(stack, recorded):
    from prefect.exceptions import PrefectHTTPStatusError

    repo = make_repo(stack.base / "bad-params", recorded.cassette)
    # A wrong type is refused by the server before any run exists.
    with pytest.raises(PrefectHTTPStatusError, match="max_concurrent"):
        start_run(stack, "on-demand", workdir=str(repo), task_file=str(recorded.tasks),
                  max_concurrent="lots")  # fmt: skip
    # A value the flow refuses fails the run as soon as it starts, naming the parameter.
    zero = start_run(stack, "on-demand", workdir=str(repo), task_file=str(recorded.tasks),
                     max_concurrent=0)  # fmt: skip
    empty = start_run(stack, "on-demand", workdir="", task_file=str(recorded.tasks))
    # session_id continues a session: one that names none made a new session of that id,
    # which paid for all the work again while the session meant stayed interrupted.
    unknown = start_run(stack, "on-demand", workdir=str(repo), task_file=str(recorded.tasks),
                        session_id="20261207-111611")  # fmt: skip
    for flow_run, said in (
        (zero, "refused: max_concurrent: Input should be greater than or equal to 1"),
        (empty, "workdir"),
        (unknown, "refused: session_id continues a session of the workdir: no session"),
    ):
        run = wait_final(stack, flow_run.id)
        assert run.state.is_failed(), f"{run.state}\n{worker_log(stack)}"
        assert said in run.state.message and "ValidationError" not in run.state.message
    assert not (repo / ".aca" / "sessions").exists()
    assert not (stack.clone / ".aca").exists()  # "" never meant the clone itself


def test_a_retried_flow_run_resumes_its_session(stack, recorded):
    from prefect.states import AwaitingRetry, Cancelling

    from aca_flows.flows.aca_run import deployment_session_id

    repo = make_repo(stack.base / "retried", recorded.cassette)
    flow_run = start_run(stack, "on-demand", workdir=str(repo), task_file=str(recorded.slow_tasks))
    session_id = deployment_session_id(flow_run)

    # Interrupt the run while b's verify command waits: a is done, b is running.
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        started = [
            e.get("task_id") for e in journal(repo, session_id) if e["type"] == "task_started"
        ]
        if "b" in started:
            break
        time.sleep(0.3)
    else:
        pytest.fail("b never started\n" + worker_log(stack))
    logged_before = len((stack.base / "worker.log").read_text())
    prefect_call(stack, lambda c: c.set_flow_run_state(flow_run.id, Cancelling(), force=True))
    cancelled = wait_final(stack, flow_run.id, timeout=60)
    assert cancelled.state.is_cancelled(), f"{cancelled.state}\n{worker_log(stack)}"
    assert task_commits(repo, f"aca/{session_id}") == ["a"]
    # The session says what ended it: the worker's SIGTERM often came before the run's own
    # look saw the cancel, and it said only "interrupted".
    (end,) = [e for e in journal(repo, session_id) if e["type"] == "session_finished"]
    assert end["reason"].startswith("interrupted by a cancel from the Prefect UI; "), end
    # The task run the worker's cancel cut short ends as aca's own stops end one, not Crashed.
    states = task_run_states(stack, session_id)
    assert states["b write b.txt"][0] == "Interrupted", f"{states}\n{worker_log(stack)}"
    assert "Crashed" not in {name for name, _ in states.values()}, states
    # Every run under it ends too: each group's subflow run and the task run standing for it
    # in its parent (no session tag), not left Running or Cancelling on the server.
    unfinished = [r for r in runs_under(stack, flow_run.id) if not r.state.is_final()]
    assert not unfinished, [(r.name, r.state) for r in unfinished]
    # The worker's log: no subflow run ends "Running", and no traceback of aca's subflow
    # calls (the flow run's own, run_flow_async's, is Prefect's: see docs/deployments.md).
    log = (stack.base / "worker.log").read_text()[logged_before:]
    assert "Finished in state Cancelled(" in log, log[-4000:]  # the plan's subflow run
    own = f"Flow run '{flow_run.name}' - Finished in state Running()"
    assert "Finished in state Running()" not in log.replace(own, ""), log[-4000:]
    assert log.count("unhandled exception during asyncio.run() shutdown") <= 1, log[-4000:]
    # The Artifacts tab says where it stopped, as the session does: the worker's SIGTERM left
    # "1 in progress" and no summary of what was paid.
    artifacts = latest_artifacts(stack, session_id)
    assert artifacts["progress"].description == "Tasks completed: 1 completed, 1 pending of 2"
    assert "summary" in artifacts and "interrupted" in artifacts["plan"].description

    # Retry it, as the UI's Retry does: the same flow run goes back to the worker.
    recorded.release.write_text("go\n")
    try:
        prefect_call(
            stack, lambda c: c.set_flow_run_state(flow_run.id, AwaitingRetry(), force=True)
        )
        retried = wait_final(stack, flow_run.id)
    finally:
        recorded.release.unlink()
    assert retried.state.is_completed(), f"{retried.state}\n{worker_log(stack)}"
    assert retried.run_count >= 2
    # One session, resumed: a ran once, b finished, one commit each.
    assert [p.name for p in (repo / ".aca" / "sessions").iterdir()] == [session_id]
    events = journal(repo, session_id)
    assert [e["task_id"] for e in events if e["type"] == "task_started"].count("a") == 1
    assert any(e["type"] == "session_resumed" for e in events)
    assert task_commits(repo, f"aca/{session_id}") == ["a", "b"]
    (listed,) = sessions_listed(stack, repo)
    assert listed["name"] == flow_run.name and listed["status"] == "completed"
    # A prefix of its id continues it too, as everywhere an id is asked for: nothing is left.
    again = start_run(stack, "on-demand", workdir=str(repo), session_id=session_id[:15])
    assert wait_final(stack, again.id).state.is_completed(), worker_log(stack)
    assert [p.name for p in (repo / ".aca" / "sessions").iterdir()] == [session_id]
    assert task_commits(repo, f"aca/{session_id}") == ["a", "b"]


def test_serve_runs_the_deployments_without_a_worker(stack, recorded):
    from prefect.exceptions import ObjectNotFound

    repo = make_repo(stack.base / "served", recorded.cassette)
    # Served, a deployment belongs to no work pool: drop the worker's on-demand deployment so
    # that serve.py creates its own, and deploy it again afterwards.
    _prefect(stack.env, stack.clone, "deployment", "delete", "aca-run/on-demand")
    serve_log = stack.base / "serve.log"
    served = _start(
        [sys.executable, "deployments/serve.py", "--name", "on-demand"],
        stack.env,
        stack.clone,
        serve_log,
    )
    try:

        async def served_deployment(client):
            deadline = time.monotonic() + STARTUP_SECONDS
            while time.monotonic() < deadline:
                try:
                    return await client.read_deployment_by_name("aca-run/on-demand")
                except ObjectNotFound:
                    await asyncio.sleep(0.5)
            return None

        deployment = prefect_call(stack, served_deployment)
        assert deployment is not None, serve_log.read_text()[-3000:]
        assert deployment.work_pool_name is None
        flow_run = start_run(stack, "on-demand", workdir=str(repo), task_file=str(recorded.tasks))
        run = wait_final(stack, flow_run.id)
        assert run.state.is_completed(), f"{run.state}\n{serve_log.read_text()[-3000:]}"
        assert flow_run.name in serve_log.read_text()
        (listed,) = sessions_listed(stack, repo)
        assert task_commits(repo, listed["branch"]) == ["a", "b"]
    finally:
        _stop(served)
        _prefect(stack.env, stack.clone, "deploy", "--name", "on-demand", "--no-prompt")


def test_a_ci_event_naming_a_workdir_outside_the_allow_list_starts_nothing(
    stack, recorded, tmp_path_factory
):
    outside = make_repo(tmp_path_factory.mktemp("not-allowed") / "repo", recorded.cassette)
    emitted = stack.python(
        "deployments/emit_ci_event.py",
        "--workdir", str(outside), "--task-file", str(recorded.tasks), "--build-id", "666",
    )  # fmt: skip
    assert emitted.returncode == 0, emitted.stderr[-2000:]

    def refused_run():
        runs = [r for r in runs_of(stack, "on-ci-build") if r.parameters["workdir"] == str(outside)]
        return runs[0] if runs else None

    deadline = time.monotonic() + RUN_SECONDS
    while (run := refused_run()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run is not None, "the event started no flow run\n" + worker_log(stack)
    run = wait_final(stack, run.id)
    assert run.state.is_failed(), f"{run.state}\n{worker_log(stack)}"
    assert f"workdir {outside} is not inside the worker's allowed workdirs" in run.state.message
    # Nothing started: no session, no branch; the reason is in the run's logs.
    assert not (outside / ".aca" / "sessions").exists()
    assert [h.name for h in git.Repo(outside).heads] == ["main"]

    async def logs(client):
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        found = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
        )
        return "\n".join(log.message for log in found)

    # Logs reach the server shortly after the state does: wait for them.
    deadline = time.monotonic() + 30
    while "refused: workdir" not in (text := prefect_call(stack, logs)):
        assert time.monotonic() < deadline, text
        time.sleep(0.5)


def test_a_run_configured_only_by_blocks_needs_nothing_on_the_worker(stack):
    """No aca.toml, no key in the worker's environment: the Aca Config block (registered with
    the documented command) names the provider, its server and the Secret block with the key."""
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from aca_flows import AcaConfigBlock

    key = "workerlessvalue0123456789ABCDEF"
    registered = _prefect(stack.env, stack.clone, "block", "register", "-m", "aca_flows")
    assert "Aca Config" in registered
    repo = make_repo(stack.base / "by-blocks" / "repo")
    tasks = stack.base / "by-blocks" / "tasks.md"
    tasks.write_text("# Blocks\n\n- write a.txt {#a}\n")
    with FakeLLMServer(api_key=key) as server:
        for _ in range(4):
            server.anthropic.enqueue(coding_agent)
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            Secret(value=key).save("workerless-key", overwrite=True)
            AcaConfigBlock(
                settings={
                    "session": {"provider": "anthropic", "model": "claude-test"},
                    "providers": {"anthropic": {"base_url": server.url}},
                },
                api_key_secrets={"anthropic": "workerless-key"},
            ).save("workerless", overwrite=True)
        flow_run = start_run(
            stack, "on-demand", workdir=str(repo), task_file=str(tasks), config_block="workerless"
        )
        run = wait_final(stack, flow_run.id)
        assert run.state.is_completed(), f"{run.state}\n{worker_log(stack)}"
        assert len(server.model_calls) == 2  # write and finish, with the block's key
    assert not any(name.startswith("ANTHROPIC_") for name in stack.env)
    assert not (repo / "aca.toml").exists() and not (repo / ".aca" / "config.toml").exists()
    (listed,) = sessions_listed(stack, repo)
    assert task_commits(repo, listed["branch"]) == ["a"]


def test_runs_a_schedule_makes_for_one_minute_get_sessions_of_their_own():
    # Prefect's scheduler ids are time-ordered (UUIDv7): their first digits are the time.
    import uuid
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from aca_flows.flows.aca_run import deployment_session_id

    def scheduled(ms: int):
        bits = (ms << 80) | (0x7 << 76) | (0b10 << 62) | uuid.uuid4().int & ((1 << 62) - 1)
        return SimpleNamespace(id=uuid.UUID(int=bits), expected_start_time=start, created=start)

    start = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    runs = [scheduled(1_796_000_000_000 + n) for n in range(20)]
    ids = {deployment_session_id(run) for run in runs}

    assert len(ids) == 20
    assert deployment_session_id(runs[0]) == deployment_session_id(runs[0])  # its retries
