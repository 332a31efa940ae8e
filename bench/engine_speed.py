"""Engine benchmarks, against a warm Prefect server started here; prints figures next to the
targets of the speed issue:

1. Per-task overhead: 30 independent tasks played back by the replay provider (a cassette
   recorded here first), one at a time, so a task's whole cycle is on the clock: from the
   start of its task run to the end of its bookkeeping, divided by the tasks. Next to it, its
   unavoidable parts, measured in the same process against the same server: a git cycle as
   the engine makes it (aca's own ``TaskWorktree.create``, ``land_task`` — commit, merge into
   the session branch, change log — and ``TaskWorktree.remove``), a bare Prefect task run,
   and the journal writes of one task (``task_started``, its ``call`` events,
   ``task_completed``). Target: overhead at most 1.5 x the sum of the parts. A profile says
   where the time goes (time inside aca's functions per task; nested ones are indented) and
   how many git commands a task runs. CPU seconds per task are printed too: this process and
   its git children, and the Prefect server's processes, which answer each task's API calls
   (task run, states, tag slots, logs, report artifact, events) on the same cores, next to
   what the server spends on a bare task run, and how many cores the run kept busy.
2. Parallel efficiency: a 40-task DAG (8 chains of 5), fake LLM latency 1 s per call, two
   calls a task, 8 at once: makespan divided by the lower bound max(critical path, total
   work / 8). Target at most 1.15. Where the time beyond the calls goes follows: the run's
   start, the gaps between a task's calls, the links between tasks, the run's end.

Each figure is the median of ``ACA_BENCH_REPEATS`` runs (default 5), the spread (lowest to
highest) beside it; the profile adds up all runs.

Run: .venv/bin/python bench/engine_speed.py   (about four minutes)
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import print_machine  # noqa: E402

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# The scheduler is measured here, not the provider rate limits (bench those separately).
os.environ["ACA_RATE_LIMITING__MAX_REQUESTS_PER_MINUTE"] = "100000"
os.environ["ACA_RATE_LIMITING__MAX_TOKENS_PER_MINUTE"] = "100000000"
os.environ["ACA_RATE_LIMITING__MAX_CONCURRENT_REQUESTS"] = "64"

TASKS = 30
CONCURRENCY = 8
SAMPLES = 20
# Each figure is the median of this many runs, its spread beside it: on a shared machine one
# sample can be noise.
REPEATS = int(os.environ.get("ACA_BENCH_REPEATS", "5"))


# -- the profile: time spent inside aca's functions, and git commands run ---------------------


class Profile:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.first_start: float | None = None
        self.last_end = 0.0
        self.git_commands = 0
        self._span = 0.0  # of merged profiles
        self.on = False
        self._undo: list = []

    def wrap(self, owner, attr: str, label: str, *, kind: str = "function") -> None:
        original = owner.__dict__[attr]
        inner = original.__func__ if isinstance(original, classmethod) else original
        profile = self

        if asyncio.iscoroutinefunction(inner):

            @functools.wraps(inner)
            async def timed(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return await inner(*args, **kwargs)
                finally:
                    profile.add(label, start)
        else:

            @functools.wraps(inner)
            def timed(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return inner(*args, **kwargs)
                finally:
                    profile.add(label, start)

        setattr(owner, attr, classmethod(timed) if isinstance(original, classmethod) else timed)
        self._undo.append((owner, attr, original))

    def add(self, label: str, start: float) -> None:
        if self.on:
            self.seconds[label] += time.perf_counter() - start
            self.calls[label] += 1

    @property
    def span(self) -> float:
        """Seconds from the first task run's start to the last task's bookkeeping end."""
        return self._span + (self.last_end - self.first_start if self.first_start else 0.0)

    def merge(self, other: Profile) -> None:
        """Add another run's profile to this one (a profile of all repeats)."""
        for label, seconds in other.seconds.items():
            self.seconds[label] += seconds
            self.calls[label] += other.calls[label]
        self._span += other.span
        self.git_commands += other.git_commands

    def count_git(self) -> None:
        import git

        original = git.cmd.Git.execute
        profile = self

        @functools.wraps(original)
        def execute(self, command, *args, **kwargs):
            if profile.on:
                profile.git_commands += 1
            return original(self, command, *args, **kwargs)

        git.cmd.Git.execute = execute
        self._undo.append((git.cmd.Git, "execute", original))

    def undo(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


# What the profile looks inside, in the order printed; indented ones run inside the one above.
PROFILED = [
    ("aca_flows.flows.scheduler", "_run_one", "task run (Prefect task engine + all below)", 0),
    ("aca_flows.flows.task_run", "_run_attempt", "aca's task function (execute_plan_task)", 1),
    ("aca_flows.flows.task_run", "execute_task", "agent: execute_task", 2),
    ("aca_flows.agent.execute", "_open_session_repo", "git: open repo, session branch", 3),
    ("aca_flows.agent.execute", "_record_landed", "git: landed already?", 3),
    ("aca_flows.agent.execute", "commit_identity", "git: commit identity", 3),
    ("aca_flows.workspace.worktree:TaskWorktree", "create", "git: worktree add", 3),
    ("aca_flows.providers.replay:ReplayProvider", "complete", "provider calls (replay)", 3),
    ("aca_flows.workspace.worktree:TaskWorktree", "changed_files", "git: changed files", 3),
    ("aca_flows.agent.landing", "_land", "git: commit, merge, change log", 3),
    ("aca_flows.workspace.worktree:TaskWorktree", "remove", "git: worktree remove", 3),
    ("aca_flows.agent.transcript:TaskLog", "write", "task log lines", 3),
    ("aca_flows.agent.transcript:ConversationStore", "save", "conversation saves", 3),
    ("aca_flows.session.store:SessionStore", "record", "session journal (all events)", 0),
    ("aca_flows.flows.scheduler", "_finish", "flow: finish a task (journal, report)", 0),
    ("aca_flows.flows.scheduler", "publish_report", "report artifact", 1),
    ("aca_flows.flows.publishing", "aupdate_progress_artifact", "progress artifact (overlaps)", 0),
]


def install_profile() -> Profile:
    import importlib

    profile = Profile()
    for where, attr, label, _ in PROFILED:
        module, _, cls = where.partition(":")
        owner = importlib.import_module(module)
        if cls:
            owner = getattr(owner, cls)
        profile.wrap(owner, attr, label)
    # The span of the tasks: from the first task run's start to the last task's bookkeeping.
    import aca_flows.flows.scheduler as scheduler

    run_one, finish = scheduler._run_one, scheduler._finish

    async def first(*args, **kwargs):
        if profile.on and profile.first_start is None:
            profile.first_start = time.perf_counter()
        return await run_one(*args, **kwargs)

    async def last(*args, **kwargs):
        try:
            return await finish(*args, **kwargs)
        finally:
            profile.last_end = time.perf_counter()

    scheduler._run_one, scheduler._finish = first, last
    profile._undo += [(scheduler, "_run_one", run_one), (scheduler, "_finish", finish)]
    profile.count_git()
    return profile


# -- the unavoidable parts ---------------------------------------------------------------


def git_cycle(tmp: Path) -> tuple[float, float]:
    """Seconds and git commands of one worktree add, commit, merge, remove, as the engine
    does them (aca's workspace functions)."""
    import git

    from aca_flows.workspace import (
        DEFAULT_IDENTITY,
        TaskWorktree,
        ensure_session_branch,
        land_task,
        open_repository,
    )
    from tests.fakes.git_repo import make_repo

    root = make_repo(tmp / "git-cycle")
    repo = open_repository(root)
    ensure_session_branch(repo, "bench")
    commands = 0
    original = git.cmd.Git.execute

    def counted(self, command, *args, **kwargs):
        nonlocal commands
        commands += 1
        return original(self, command, *args, **kwargs)

    git.cmd.Git.execute = counted
    try:
        start = time.perf_counter()
        for i in range(SAMPLES):
            worktree = TaskWorktree.create(repo, "bench", f"t{i}")
            (worktree.path / f"f{i}.txt").write_text(f"f{i}\n")
            land_task(
                git.Repo(root), worktree, title=f"write f{i}", summary="", identity=DEFAULT_IDENTITY
            )
            worktree.remove()
        seconds = (time.perf_counter() - start) / SAMPLES
    finally:
        git.cmd.Git.execute = original
    return seconds, commands / SAMPLES


def bare_task_run(tmp: Path) -> tuple[float, float, float]:
    """Seconds of one Prefect task run (async, no-op) on the same server, in a flow, and the
    CPU seconds the server spends on it: it records a task run's states from the events the
    run sends, after the run has gone on, so its share is read once the server is idle again
    (its own idle use, measured first, taken off). Third, the seconds of a no-op task run with
    the options aca's task runs need (``task_run.options_for``): three tags, for which Prefect
    asks the server for tag concurrency slots before the run, and a result persisted as JSON."""
    from prefect import flow, task

    @task
    async def noop(i: int) -> int:
        return i

    as_aca = noop.with_options(
        tags=["aca", "session:bench", "provider:replay"],
        persist_result=True,
        result_serializer="json",
        result_storage=tmp / "results",
        result_storage_key="{parameters[i]}-{task_run.id}.json",
        refresh_cache=True,
    )

    @flow
    async def bare(n: int, runner) -> float:
        await runner(-1)  # the first task run pays for one-off set-up
        start = time.perf_counter()
        for i in range(n):
            await runner(i)
        return (time.perf_counter() - start) / n

    idle = _server_cpu_while_idle(1.0)
    before = server_cpu_seconds()
    waited = time.perf_counter()
    seconds = asyncio.run(bare(SAMPLES * 2, noop))
    _wait_for_idle_server()
    waited = time.perf_counter() - waited
    server_cpu = server_cpu_seconds() - before - idle * waited
    with_options = asyncio.run(bare(SAMPLES * 2, as_aca))
    return seconds, max(server_cpu, 0.0) / (SAMPLES * 2 + 1), with_options


def _server_cpu_while_idle(seconds: float) -> float:
    """The server's CPU seconds per second when nothing is sent to it (its loop services)."""
    before = server_cpu_seconds()
    time.sleep(seconds)
    return (server_cpu_seconds() - before) / seconds


def _wait_for_idle_server(quiet: float = 0.02, most: float = 10.0) -> None:
    """Until the server used less than ``quiet`` CPU seconds over the last half second."""
    deadline = time.monotonic() + most
    last = server_cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server_cpu_seconds()
        if now - last < quiet:
            return
        last = now


def journal_writes(tmp: Path, calls_per_task: float) -> float:
    """Seconds of the session writes of one task: started, its calls, completed."""
    from aca_flows.plan import load_task_file
    from aca_flows.providers.base import Usage
    from aca_flows.session.store import SessionStore

    tmp.mkdir(parents=True)
    tasks = tmp / "journal.md"
    tasks.write_text("".join(f"- write f{i}.txt\n" for i in range(TASKS)))
    plan = load_task_file(tasks)
    with SessionStore.create(tmp, plan, provider="replay") as store:
        usage = Usage(input_tokens=1000, output_tokens=100)
        start = time.perf_counter()
        for task in plan.tasks:
            store.task_started(task.id, provider="replay")
            for _ in range(round(calls_per_task)):
                store.call_recorded(
                    provider="replay", model="claude-sonnet-4-5", usage=usage, cost_usd=0.001,
                    task_id=task.id, attempt=1,
                )  # fmt: skip
            store.task_completed(task.id)
        return (time.perf_counter() - start) / len(plan.tasks)


# -- the runs ----------------------------------------------------------------------------


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# The Prefect server's process group, set by main(): its CPU competes with aca and git for
# the machine's cores, and each task's API calls (task run, states, logs, artifact) cost it.
SERVER_GROUP: int | None = None


def server_cpu_seconds() -> float:
    """CPU seconds used so far by the processes of the server's group (0 if unknown)."""
    if SERVER_GROUP is None:
        return 0.0
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == SERVER_GROUP:  # pgrp; then utime, stime at 11, 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def record_cassette(tmp: Path) -> tuple[Path, Path]:
    """The task file and a replay config whose cassette holds its tasks' calls."""
    from aca_flows.flows import run_flow
    from tests.fakes.coding_agent import coding_agent
    from tests.fakes.git_repo import make_repo
    from tests.fakes.llm_server import FakeLLMServer

    tasks = tmp / "independent.md"
    tasks.write_text("".join(f"- write f{i}.txt\n" for i in range(TASKS)))
    cassette = tmp / "independent.cassette.json"
    config = tmp / "replay.toml"
    config.write_text(
        f'[session]\nprovider = "replay"\nmodel = "claude-sonnet-4-5"\n'
        f'[providers.replay]\ncassette = "{cassette}"\n'
    )
    with FakeLLMServer() as server:
        for _ in range(TASKS * 4):
            server.anthropic.enqueue(coding_agent)
        os.environ.update(ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY=server.api_key)
        run_flow(quiet_console=True,
            task_file=str(tasks), workdir=str(make_repo(tmp / "record")), provider="anthropic",
            model="claude-sonnet-4-5", max_concurrent=CONCURRENCY, record=str(cassette),
        )  # fmt: skip
    return tasks, config


def overhead(tmp: Path, tasks: Path, config: Path, profile_total: Profile) -> dict[str, float]:
    """One replayed run of the tasks, one at a time, and the parts measured after it."""
    from aca_flows.flows import run_flow
    from tests.fakes.git_repo import make_repo

    profile = install_profile()
    workdir = make_repo(tmp / "replay")
    profile.on = True
    server_before = server_cpu_seconds()
    cpu_before, start = cpu_seconds(), time.perf_counter()
    outcome = run_flow(
        quiet_console=True,
        task_file=str(tasks),
        workdir=str(workdir),
        config_file=str(config),
        max_concurrent=1,
    )
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_before
    server_cpu = server_cpu_seconds() - server_before
    profile.on = False
    profile.undo()
    assert outcome.summary and outcome.summary["counts"] == {"completed": TASKS}, outcome.summary
    journal = next((workdir / ".aca" / "sessions").glob("*/meta/events.jsonl")).read_text()
    calls_per_task = journal.count('"type":"call"') / TASKS
    profile_total.merge(profile)

    per_task = (profile.last_end - profile.first_start) / TASKS
    git_s, git_commands = git_cycle(tmp)
    prefect_s, prefect_server_cpu, prefect_as_aca_s = bare_task_run(tmp / "bare")
    journal_s = journal_writes(tmp / "journal", calls_per_task)
    parts = git_s + prefect_s + journal_s
    parts_as_aca = git_s + prefect_as_aca_s + journal_s
    return {
        "wall": wall,
        "per_task": per_task,
        "git": git_s,
        "git_commands": git_commands,
        "prefect": prefect_s,
        "journal": journal_s,
        "events": 2 + calls_per_task,
        "parts": parts,
        "beyond": per_task - parts,
        "ratio": per_task / parts,
        "prefect_as_aca": prefect_as_aca_s,
        "ratio_as_aca": per_task / parts_as_aca,
        "cpu": cpu / TASKS,
        "server_cpu": server_cpu / TASKS,
        "prefect_server_cpu": prefect_server_cpu,
        "cores_busy": (cpu + server_cpu) / wall,
        "run_git_commands": profile.git_commands / TASKS,
    }


def parallel_efficiency(tmp: Path) -> dict[str, float]:
    from aca_flows.flows import run_flow
    from tests.fakes.coding_agent import coding_agent
    from tests.fakes.git_repo import make_repo
    from tests.fakes.llm_server import FakeLLMServer

    # 40 tasks: 8 chains of 5 (each task depends on the previous one in its chain).
    lines = []
    for chain in range(8):
        for step in range(5):
            dep = f" depends_on=c{chain}s{step - 1}" if step else ""
            lines.append(f"- write c{chain}s{step}.txt {{#c{chain}s{step}{dep}}}\n")
    tmp.mkdir(parents=True)
    tasks = tmp / "dag.md"
    tasks.write_text("".join(lines))
    calls_per_task, latency = 2, 1.0

    def slow(request):
        time.sleep(latency)
        return coding_agent(request)

    with FakeLLMServer() as server:
        for _ in range(200):
            server.anthropic.enqueue(slow)
        os.environ.update(ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY=server.api_key)
        server_before = server_cpu_seconds()
        cpu_before, start = cpu_seconds(), time.perf_counter()
        started_at = time.time()
        outcome = run_flow(quiet_console=True,
            task_file=str(tasks), workdir=str(make_repo(tmp / "repo")), provider="anthropic",
            model="claude-sonnet-4-5", max_concurrent=CONCURRENCY,
        )  # fmt: skip
        makespan, cpu = time.perf_counter() - start, cpu_seconds() - cpu_before
        server_cpu = server_cpu_seconds() - server_before
    assert outcome.summary and outcome.summary["counts"] == {"completed": 40}, outcome.summary
    per_task = calls_per_task * latency
    bound = max(5 * per_task, 40 * per_task / CONCURRENCY)
    return {
        "makespan": makespan,
        "bound": bound,
        "ratio": makespan / bound,
        "cpu": cpu / 40,
        "server_cpu": server_cpu / 40,
        **timeline(server.anthropic.requests, started_at, started_at + makespan),
    }


def timeline(requests: list, started_at: float, ended_at: float) -> dict[str, float]:
    """Where the DAG's time beyond its calls goes, from when the fake server saw each call:
    the run's start (to its first call), its end (from the last call's answer), a task's
    calls (the gap between its answer and its next call: aca's work between them) and the
    links (a task's last answer to its dependent's first call, median and longest)."""
    from tests.fakes.coding_agent import task_of

    calls: dict[str, list] = defaultdict(list)
    for request in requests:
        calls[task_of(request)[0]].append(request)
    gaps, links = [], []
    for task_id, made in calls.items():
        gaps += [b.received_at - a.answered_at for a, b in zip(made, made[1:], strict=False)]
        chain, step = task_id[1:].split("s")
        if int(step):
            before = calls[f"c{chain}s{int(step) - 1}"][-1]
            links.append(made[0].received_at - before.answered_at)
    return {
        "to_first_call": min(r.received_at for r in requests) - started_at,
        "after_last_answer": ended_at - max(r.answered_at for r in requests),
        "gap": statistics.median(gaps),
        "link": statistics.median(links),
        "longest_link": max(links),
    }


# -- the report: medians of the repeats, their spread, next to the targets ---------------


def _figure(runs: list[dict[str, float]], key: str, scale: float = 1.0) -> str:
    values = sorted(run[key] * scale for run in runs)
    median = statistics.median(values)
    digits = 3 if median < 1 else 2 if median < 10 else 1
    if len(values) == 1:
        return f"{median:7.{digits}f}"
    return f"{median:7.{digits}f}  ({values[0]:.{digits}f}-{values[-1]:.{digits}f})"


def report_overhead(runs: list[dict[str, float]], profile: Profile) -> None:
    ms = 1000
    n = len(runs)
    print(f"overhead: {TASKS} replayed tasks, one at a time, warm server; median of {n} "
          f"(spread)")  # fmt: skip
    rows = [
        ("run wall, s", "wall", 1),
        ("per task, task run start to bookkeeping end, ms", "per_task", ms),
        (f"part: git cycle (add, commit, merge, remove), ms; "
         f"{runs[0]['git_commands']:.0f} git commands", "git", ms),
        ("part: bare Prefect task run, ms", "prefect", ms),
        (f"part: journal writes of a task ({runs[0]['events']:.0f} events), ms", "journal", ms),
        ("sum of the parts, ms", "parts", ms),
        ("per task beyond the parts, ms", "beyond", ms),
        ("ratio, per task / parts (target <= 1.5)", "ratio", 1),
        ("part: Prefect task run with aca's options (3 tags, persisted result), ms",
         "prefect_as_aca", ms),
        ("  ratio with that task run in the parts", "ratio_as_aca", 1),
        ("CPU seconds per task (aca + git children)", "cpu", 1),
        ("CPU seconds per task of the Prefect server (its API calls)", "server_cpu", 1),
        ("  of which a bare Prefect task run costs it", "prefect_server_cpu", 1),
        (f"cores busy in the run (aca, git, server; {os.cpu_count()} here)", "cores_busy", 1),
        ("git commands per task in the run", "run_git_commands", 1),
    ]  # fmt: skip
    for label, key, scale in rows:
        print(f"overhead: {label:<62} {_figure(runs, key, scale)}")
    tasks = TASKS * n
    print(f"profile: ms per task inside aca's functions, all {n} runs (indented: inside the "
          "line above)")  # fmt: skip
    for _, _, label, depth in PROFILED:
        if profile.calls.get(label):
            shown = "  " * depth + label
            print(f"profile:   {shown:<52} {profile.seconds[label] / tasks * ms:6.1f} ms "
                  f"({profile.calls[label] / tasks:.1f} calls)")  # fmt: skip
    run_one = profile.seconds["task run (Prefect task engine + all below)"]
    agent = profile.seconds["aca's task function (execute_plan_task)"]
    finish = profile.seconds["flow: finish a task (journal, report)"]
    scheduler = profile.span - run_one - finish
    print(f"profile:   {'Prefect task engine (task run minus aca function)':<52} "
          f"{(run_one - agent) / tasks * ms:6.1f} ms")  # fmt: skip
    print(f"profile:   {'flow scheduler, the rest (awaited API calls incl.)':<52} "
          f"{scheduler / tasks * ms:6.1f} ms")  # fmt: skip


def report_parallel(runs: list[dict[str, float]]) -> None:
    print(f"parallel: 40 tasks (8 chains of 5), 1 s per call, 8 at once, warm server; median of "
          f"{len(runs)} (spread)")  # fmt: skip
    rows = [
        ("makespan, s", "makespan"),
        ("lower bound, s", "bound"),
        ("efficiency ratio (target <= 1.15)", "ratio"),
        ("CPU seconds per task (aca + git)", "cpu"),
        ("CPU seconds per task of the Prefect server", "server_cpu"),
        ("where beyond the calls: run start to its first call, s", "to_first_call"),
        ("  a task's answer to its next call, median, s", "gap"),
        ("  a link, last answer to the dependent's first call, median, s", "link"),
        ("  the longest link, s", "longest_link"),
        ("  the last answer to the run's end, s", "after_last_answer"),
    ]
    for label, key in rows:
        print(f"parallel: {label:<62} {_figure(runs, key)}")


def main() -> None:
    print_machine("engine")
    from aca_flows._startup import collect_as_usual, collect_less
    from aca_flows.flows.local_servers import LocalServer, _drain_to_server
    from aca_flows.flows.server import prefect_api_for_run

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["HOME"] = str(tmp / "home")
        server = LocalServer(tmp / "home" / ".aca" / "server")
        global SERVER_GROUP
        state, _ = server.start(port=_free_port())
        SERVER_GROUP = state.pid  # it leads its own group
        try:
            # Every flow here, aca's and the bare one, talks to this server.
            with prefect_api_for_run():
                collect_less()  # as `aca run` starts: its imports done, start-up frozen
                tasks, config = record_cassette(tmp)
                collect_as_usual()
                profile = Profile()
                overheads = [
                    overhead(tmp / f"overhead-{i}", tasks, config, profile) for i in _repeats()
                ]
                report_overhead(overheads, profile)
                parallel = [parallel_efficiency(tmp / f"dag-{i}") for i in _repeats()]
                report_parallel(parallel)
                _drain_to_server()  # the last log lines, before the server goes
        finally:
            server.stop()


def _repeats() -> range:
    return range(REPEATS)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
