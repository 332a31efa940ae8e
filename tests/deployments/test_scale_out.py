"""Scale-out, end to end: one Prefect server on PostgreSQL, two workers, a remote repository.

What production looks like, on loopback: a PostgreSQL cluster (Debian's package, started here
with initdb/pg_ctl in a temporary folder), ``prefect server start`` on it, the project's
prefect.yaml deployed from a clone that is deleted right after, and two process workers, each
started in an empty folder with its own HOME (so each has its own ``~/.aca/repos`` working
area). The repository worked on is a local bare repository (the remote); pull requests go to
the fake GitHub, model calls to the fake Anthropic server, which counts the calls in flight.

Provider calls in flight are bounded across both workers by the Prefect global concurrency
limits ``aca limits sync`` writes from aca's ``[rate_limiting]`` (``aca-anthropic-in-flight``:
2 calls at once); the workers require them (``prefect_limits = "require"``).

Slow (minutes): a real server, database and workers. Everything is stopped in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import git
import pytest

from tests.deployments.test_deployed_runs import (
    BIN,
    POOL,
    _clean_env,
    _copy_clone,
    _free_port,
    _prefect,
    _start,
    _stop,
    _wait_healthy,
)
from tests.fakes.coding_agent import coding_agent, task_of
from tests.fakes.github_server import FakeGitHub
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest, Reply

CALLS_LIMIT = 2  # provider calls in flight, across every worker
# aca's [rate_limiting], as the workers and `aca limits sync` read it: 2 calls in flight, and
# rates high enough that only the calls in flight are the limit here.
RATE_LIMITS = {
    "ACA_RATE_LIMITING__MAX_CONCURRENT_REQUESTS": str(CALLS_LIMIT),
    "ACA_RATE_LIMITING__MAX_REQUESTS_PER_MINUTE": "6000",
    "ACA_RATE_LIMITING__MAX_TOKENS_PER_MINUTE": "100000000",
}
TOKEN = "ghp_scaleouttoken0123456789abcdefABCD"
GITHUB_REPO = "octo/service"
RUN_SECONDS = 420
pytestmark = pytest.mark.timeout(1800)


# --- PostgreSQL, as a production Prefect server runs on -------------------------------------


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does)")
    return found[-1].parent


def _as_postgres(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: root runs it as the package's own user.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class Postgres:
    url: str
    port: int
    folder: Path

    def query(self, sql: str) -> str:
        psql = str(_pg_bin() / "psql")
        args = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "prefect", "-d", "prefect"]
        done = subprocess.run(
            _as_postgres([*args, "-tAc", sql]), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pg = _pg_bin()
    folder = Path(tempfile.mkdtemp(prefix="aca-postgres-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    data, port = folder / "data", _free_port()
    ctl = [str(pg / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            _as_postgres(
                [str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "prefect", "-E", "UTF8",
                 "--no-sync"]
            ),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(
            _as_postgres([*ctl, "-o", options, "-l", str(folder / "log"), "-w", "start"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            _as_postgres(
                [str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect",
                 "prefect"]
            ),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        url = f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
        yield Postgres(url=url, port=port, folder=folder)
    finally:
        subprocess.run(
            _as_postgres([*ctl, "-m", "immediate", "-w", "stop"]), capture_output=True, timeout=60
        )
        shutil.rmtree(folder, ignore_errors=True)


# --- the fake model: counts calls in flight; one task waits for a gate ----------------------


@dataclass
class CountingAgent:
    """``coding_agent`` behind a counter of calls in flight (held a moment, so calls that the
    limit would let overlap do overlap). Calls for ``write slow-*`` wait for ``gate``."""

    in_flight: int = 0
    max_in_flight: int = 0
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: RecordedRequest) -> Reply:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if task_of(request)[1].startswith("write slow-"):
                self.gate.wait(RUN_SECONDS)
            time.sleep(0.4)
            return coding_agent(request)
        finally:
            with self.lock:
                self.in_flight -= 1


def calls_for(server: FakeLLMServer, title: str) -> int:
    return sum(1 for r in server.anthropic.requests if r.json and task_of(r)[1] == title)


# --- the cluster -----------------------------------------------------------------------------


@dataclass
class Cluster:
    base: Path
    api_url: str
    remote: Path
    llm: FakeLLMServer
    agent: CountingAgent
    github: FakeGitHub
    workers: dict[str, subprocess.Popen]
    postgres: Postgres

    def worker_log(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")

    def ran(self, worker: str, flow_run) -> bool:
        """Whether ``worker`` started ``flow_run`` (a worker may also log a submission it
        then aborts, when the other worker took the run first)."""
        return f"Flow run '{flow_run.name}' submitted to infrastructure" in self.worker_log(worker)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.worker_log(n)[-3000:]}" for n in self.workers)


def _make_remote(base: Path) -> Path:
    """A bare repository with one commit on main: the remote the sessions push to."""
    remote = base / "remotes" / "service.git"
    remote.parent.mkdir()
    git.Repo.init(remote, bare=True, initial_branch="main")
    seed = git.Repo.init(base / "seed", initial_branch="main")
    (base / "seed" / "README.md").write_text("service\n")
    seed.index.add(["README.md"])
    author = git.Actor("u", "u@example.com")
    seed.index.commit("init", author=author, committer=author)
    seed.git.push(str(remote), "main")
    return remote


@pytest.fixture(scope="module")
def cluster(postgres: Postgres) -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="aca-scale-out-"))
    api_url = f"http://127.0.0.1:{_free_port()}/api"
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    server_env = _clean_env(
        HOME=str(base / "server-home"),
        PREFECT_HOME=str(base / "server-home" / ".prefect"),
        PREFECT_API_URL=api_url,
        PREFECT_API_DATABASE_CONNECTION_URL=postgres.url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
    )
    processes: list[subprocess.Popen] = []
    agent = CountingAgent()
    remote = _make_remote(base)
    with FakeLLMServer() as llm, FakeGitHub(token=TOKEN) as github:
        for _ in range(400):  # every model call of every session
            llm.anthropic.enqueue(agent)
        github.add_repo(GITHUB_REPO)
        try:
            log = base / "server.log"
            args = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port]
            processes.append(_start(args, server_env, base, log))
            _wait_healthy(api_url, processes[0], log)
            _prefect(server_env, base, "work-pool", "create", POOL, "--type", "process")
            synced = subprocess.run(
                [sys.executable, "-m", "aca_flows", "limits", "sync", "--provider", "anthropic",
                 "--workdir", str(base), "--json"],
                env={**server_env, **RATE_LIMITS}, cwd=base, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            assert synced.returncode == 0, synced.stdout + synced.stderr
            limits = {row["name"]: row["limit"] for row in json.loads(synced.stdout)["limits"]}
            assert limits["aca-anthropic-in-flight"] == CALLS_LIMIT
            # Deploy from a clone, then delete it: the workers never see it.
            clone = _copy_clone(base / "clone")
            _prefect(server_env, clone, "deploy", "--all", "--no-prompt")
            shutil.rmtree(clone)
            workers = {}
            for name in ("worker-1", "worker-2"):
                folder = base / name
                folder.mkdir()
                env = _clean_env(
                    HOME=str(folder / "home"),
                    PREFECT_HOME=str(folder / "home" / ".prefect"),
                    PREFECT_API_URL=api_url,
                    PREFECT_WORKER_QUERY_SECONDS="1",
                    PREFECT_WORKER_PREFETCH_SECONDS="5",
                    ANTHROPIC_BASE_URL=llm.url,
                    ANTHROPIC_API_KEY="test-key",
                    ACA_CLAUDE_CLI=str(base / "no-claude-here"),
                    ACA_SESSION__PROVIDER="anthropic",
                    ACA_SESSION__RETRY_BACKOFF_SECONDS="0",
                    ACA_SESSION__CALL_RETRY_BACKOFF_SECONDS="0",
                    ACA_RATE_LIMITING__PREFECT_LIMITS="require",
                    **RATE_LIMITS,
                    ACA_DEPLOYMENTS__ALLOWED_WORKDIRS=str(remote.parent),
                    GITHUB_API_URL=github.url,
                    GITHUB_TOKEN=TOKEN,
                )
                (folder / "home").mkdir()
                worker = [str(BIN / "prefect"), "worker", "start", "--pool", POOL,
                          "--type", "process", "--name", name, "--limit", "2"]  # fmt: skip
                workers[name] = _start(worker, env, folder, base / f"{name}.log")
                processes.append(workers[name])
            yield Cluster(base, api_url, remote, llm, agent, github, workers, postgres)
        finally:
            agent.gate.set()
            for process in reversed(processes):
                _stop(process)
            shutil.rmtree(base, ignore_errors=True)


# --- Prefect calls ---------------------------------------------------------------------------


def prefect_call(cluster: Cluster, fn):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def main():
        with temporary_settings({PREFECT_API_URL: cluster.api_url}):
            async with get_client() as client:
                return await fn(client)

    return asyncio.run(main())


def start_session(cluster: Cluster, plan_text: str):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    parameters = {
        "repo": str(cluster.remote),
        "plan_text": plan_text,
        "plan_format": "markdown",
        "model": "claude-test",
        "max_concurrent": 2,
        "open_pr": True,
        "github_repo": GITHUB_REPO,
    }
    with temporary_settings({PREFECT_API_URL: cluster.api_url}):
        return run_deployment("aca-run/on-demand", parameters=parameters, timeout=0)


def wait_final(cluster: Cluster, flow_run_id, timeout: float = RUN_SECONDS):
    async def poll(client):
        deadline = time.monotonic() + timeout
        while True:
            run = await client.read_flow_run(flow_run_id)
            if (run.state and run.state.is_final()) or time.monotonic() > deadline:
                return run
            await asyncio.sleep(1)

    return prefect_call(cluster, poll)


def remote_task_commits(remote: Path, branch: str) -> list[str]:
    repo = git.Repo(remote)
    log = repo.git.log(
        "--reverse", "--format=%(trailers:key=Aca-Task,valueonly)", f"main..{branch}"
    )
    return [line.strip() for line in log.splitlines() if line.strip()]


def remote_has(remote: Path, ref: str) -> bool:
    try:
        git.Repo(remote).git.rev_parse("--verify", "--quiet", ref)
        return True
    except git.GitCommandError:
        return False


def pull_for(cluster: Cluster, branch: str) -> dict | None:
    pulls = [p for p in cluster.github.pulls(GITHUB_REPO) if p["head"]["ref"] == branch]
    assert len(pulls) <= 1, pulls
    return pulls[0] if pulls else None


# --- the tests -------------------------------------------------------------------------------


def test_three_sessions_at_once_on_two_workers_land_on_the_remote_with_pull_requests(cluster):
    from aca_flows.flows.aca_run import deployment_session_id

    plans = {
        n: f"# Session {n}\n\n- write s{n}-a.txt {{#a}}\n- write s{n}-b.txt {{#b}}\n"
        for n in (1, 2, 3)
    }
    flow_runs = {n: start_session(cluster, text) for n, text in plans.items()}
    finished = {n: wait_final(cluster, run.id) for n, run in flow_runs.items()}
    for n, run in finished.items():
        assert run.state.is_completed(), f"session {n}: {run.state}\n{cluster.logs()}"

    for n, flow_run in flow_runs.items():
        session_id = deployment_session_id(flow_run)
        branch = f"aca/{session_id}"
        # The remote holds the work, one commit per task, and the session's record.
        assert sorted(remote_task_commits(cluster.remote, branch)) == ["a", "b"]
        assert remote_has(cluster.remote, f"refs/aca/sessions/{session_id}")
        files = git.Repo(cluster.remote).git.ls_tree("--name-only", branch).split()
        assert {f"s{n}-a.txt", f"s{n}-b.txt"} <= set(files)
        # One pull request per session branch, listing the tasks and the cost.
        pull = pull_for(cluster, branch)
        assert pull is not None, f"no pull request for {branch}"
        assert pull["title"] == f"aca: Session {n}"
        body = pull["body"]
        assert f"| `a` write s{n}-a.txt | changed" in body
        assert f"| `b` write s{n}-b.txt | changed" in body
        assert "**Total cost:** $" in body and "completed" in body

    # The limit held across both workers, and both took part.
    assert 1 <= cluster.agent.max_in_flight <= CALLS_LIMIT, cluster.agent.max_in_flight
    ran_on = {n for n in cluster.workers if any(cluster.ran(n, r) for r in flow_runs.values())}
    assert ran_on == set(cluster.workers), cluster.logs()
    # The runs are the server's, in PostgreSQL.
    stored = int(cluster.postgres.query("select count(*) from flow_run"))
    assert stored >= 3


def test_a_killed_workers_run_retried_finishes_on_the_other_without_repeating_calls(cluster):
    from prefect.states import AwaitingRetry

    from aca_flows.flows.aca_run import deployment_session_id

    plan = "# Session 4\n\n- write s4-a.txt {#a}\n- write slow-b.txt {#b depends_on=a}\n"
    flow_run = start_session(cluster, plan)
    session_id = deployment_session_id(flow_run)
    branch = f"aca/{session_id}"

    # Mid-run: a is done and pushed, b's provider call is in flight (held by the gate).
    deadline = time.monotonic() + RUN_SECONDS
    while not (
        remote_task_commits_safe(cluster.remote, branch) == ["a"]
        and calls_for(cluster.llm, "write slow-b.txt") >= 1
    ):
        assert time.monotonic() < deadline, "session 4 never got to b\n" + cluster.logs()
        time.sleep(0.5)
    calls_for_a = calls_for(cluster.llm, "write s4-a.txt")
    assert calls_for_a >= 1

    # Kill the worker running it (and the flow run's process with it).
    running = prefect_call(cluster, lambda c: c.read_flow_run(flow_run.id))
    victim = next(n for n in cluster.workers if cluster.ran(n, flow_run))
    survivor = next(n for n in cluster.workers if n != victim)
    pid = int(str(running.infrastructure_pid).rsplit(":", 1)[-1])
    for kill in (lambda: os.killpg(cluster.workers[victim].pid, 9), lambda: os.kill(pid, 9)):
        with contextlib.suppress(ProcessLookupError):
            kill()
    cluster.workers[victim].wait(30)
    cluster.agent.gate.set()

    # Retried (the UI's Retry): the flow run goes to the worker still running.
    prefect_call(cluster, lambda c: c.set_flow_run_state(flow_run.id, AwaitingRetry(), force=True))
    retried = wait_final(cluster, flow_run.id)
    assert retried.state.is_completed(), f"{retried.state}\n{cluster.logs()}"
    assert retried.run_count >= 2
    assert cluster.ran(survivor, flow_run)

    # a, recorded done, was never asked again; b finished; the remote has both.
    assert calls_for(cluster.llm, "write s4-a.txt") == calls_for_a
    assert remote_task_commits(cluster.remote, branch) == ["a", "b"]
    events = git.Repo(cluster.remote).git.show(f"refs/aca/sessions/{session_id}:meta/events.jsonl")
    events = [json.loads(line) for line in events.splitlines() if line.strip()]
    started = [e.get("task_id") for e in events if e["type"] == "task_started"]
    assert started.count("a") == 1 and "b" in started
    assert any(e["type"] == "session_resumed" for e in events)
    pull = pull_for(cluster, branch)
    assert pull is not None and "| `b` write slow-b.txt | changed" in pull["body"]
    assert cluster.agent.max_in_flight <= CALLS_LIMIT
    # Nothing the killed attempt left shows as still working: the retry ended its task run of
    # b (and the group's subflow run it was in) Crashed, beside its own Completed one.
    task_runs = session_task_runs(cluster, session_id)
    assert not [r.name for r in task_runs if r.state.is_running()], task_runs
    assert sorted(r.state.type.value for r in task_runs if r.name.startswith("b ")) == [
        "COMPLETED",
        "CRASHED",
    ]
    # The deployment's flow run, the killed attempt's plan subflow run, the retry's new one.
    subflows = [r for r in session_flow_runs(cluster, session_id) if r.id != flow_run.id]
    assert sorted(r.state.type.value for r in subflows) == ["COMPLETED", "CRASHED"]


def session_task_runs(cluster, session_id: str) -> list:
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterTags

    only = TaskRunFilter(tags=TaskRunFilterTags(all_=[f"session:{session_id}"]))
    return prefect_call(cluster, lambda c: c.read_task_runs(task_run_filter=only))


def session_flow_runs(cluster, session_id: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    only = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"session:{session_id}"]))
    return prefect_call(cluster, lambda c: c.read_flow_runs(flow_run_filter=only))


def remote_task_commits_safe(remote: Path, branch: str) -> list[str]:
    """The task commits of ``branch`` on the remote, or [] while it does not exist yet."""
    return remote_task_commits(remote, branch) if remote_has(remote, branch) else []
