"""Engine benchmarks; prints figures (targets from the engine issue):

1. Overhead: 100 independent trivial tasks played by the replay provider, against a bare
   Prefect flow of 100 no-op tasks run the same way (async tasks, 8 at a time, one process,
   one Prefect server). Target: ratio at most 1.2.
2. Parallel efficiency: a 40-task DAG, fake LLM latency 1 s per call, max_concurrent 8:
   makespan divided by the lower bound max(critical path, total work / 8). Target at most 1.15.

Run: .venv/bin/python bench/engine_speed.py   (about two minutes)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The scheduler is measured here, not the provider rate limits (bench those separately).
os.environ["ACA_RATE_LIMITING__MAX_REQUESTS_PER_MINUTE"] = "100000"
os.environ["ACA_RATE_LIMITING__MAX_TOKENS_PER_MINUTE"] = "100000000"
os.environ["ACA_RATE_LIMITING__MAX_CONCURRENT_REQUESTS"] = "64"

from prefect import flow, task  # noqa: E402

from aca_flows.flows import run_flow  # noqa: E402
from tests.fakes.coding_agent import coding_agent  # noqa: E402
from tests.fakes.git_repo import make_repo  # noqa: E402
from tests.fakes.llm_server import FakeLLMServer  # noqa: E402

CONCURRENCY = 8


@task
async def noop(i: int) -> int:
    return i


@flow
async def bare_flow(n: int) -> int:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> int:
        async with gate:
            return await noop(i)

    return sum(await asyncio.gather(*(one(i) for i in range(n))))


def overhead(tmp: Path) -> None:
    tasks = tmp / "hundred.md"
    tasks.write_text("".join(f"- write f{i}.txt\n" for i in range(100)))
    cassette = tmp / "hundred.cassette.json"
    config = tmp / "replay.toml"
    config.write_text(
        f'[session]\nprovider = "replay"\nmodel = "claude-test"\n'
        f'[providers.replay]\ncassette = "{cassette}"\n'
    )
    with FakeLLMServer() as server:
        for _ in range(400):
            server.anthropic.enqueue(coding_agent)
        os.environ.update(ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY="test-key")
        run_flow(
            task_file=str(tasks), workdir=str(make_repo(tmp / "record")), provider="anthropic",
            model="claude-test", max_concurrent=CONCURRENCY, record=str(cassette),
        )  # fmt: skip
    start = time.perf_counter()
    outcome = run_flow(
        task_file=str(tasks), workdir=str(make_repo(tmp / "replay")), config_file=str(config),
        max_concurrent=CONCURRENCY,
    )  # fmt: skip
    aca_s = time.perf_counter() - start
    assert outcome.summary and outcome.summary["counts"] == {"completed": 100}, outcome.summary
    start = time.perf_counter()
    asyncio.run(bare_flow(100))
    bare_s = time.perf_counter() - start
    print(f"overhead: aca 100 replayed tasks      {aca_s:7.2f} s")
    print(f"overhead: bare flow, 100 no-op tasks   {bare_s:7.2f} s")
    print(f"overhead: ratio (target <= 1.2)        {aca_s / bare_s:7.2f}")
    print(f"overhead: per task, aca minus bare     {(aca_s - bare_s) / 100 * 1000:7.0f} ms")


def parallel_efficiency(tmp: Path) -> None:
    # 40 tasks: 8 chains of 5 (each task depends on the previous one in its chain).
    lines = []
    for chain in range(8):
        for step in range(5):
            dep = f" depends_on=c{chain}s{step - 1}" if step else ""
            lines.append(f"- write c{chain}s{step}.txt {{#c{chain}s{step}{dep}}}\n")
    tasks = tmp / "dag.md"
    tasks.write_text("".join(lines))
    calls_per_task, latency = 2, 1.0

    def slow(request):
        time.sleep(latency)
        return coding_agent(request)

    with FakeLLMServer() as server:
        for _ in range(200):
            server.anthropic.enqueue(slow)
        os.environ.update(ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY="test-key")
        start = time.perf_counter()
        outcome = run_flow(
            task_file=str(tasks), workdir=str(make_repo(tmp / "dag")), provider="anthropic",
            model="claude-test", max_concurrent=CONCURRENCY,
        )  # fmt: skip
        makespan = time.perf_counter() - start
    assert outcome.summary and outcome.summary["counts"] == {"completed": 40}, outcome.summary
    per_task = calls_per_task * latency
    bound = max(5 * per_task, 40 * per_task / CONCURRENCY)
    print(f"parallel: makespan, 40 tasks, 8 at once {makespan:7.2f} s")
    print(f"parallel: lower bound                   {bound:7.2f} s")
    print(f"parallel: efficiency ratio (<= 1.15)    {makespan / bound:7.2f}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=90):
            overhead(Path(tmp))
            parallel_efficiency(Path(tmp))


if __name__ == "__main__":
    main()
