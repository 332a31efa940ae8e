"""Scale of one run; prints figures (targets from the speed issue):

A 500-task plan (50 chains of 10) runs with the replay provider (a cassette recorded here
first, against the fake LLM server), 8 at once, against a warm Prefect server started here.
Printed: wall time, per-task time and CPU seconds, the wall time per task in each quarter of
the run (each task adds a file, so the tree every later worktree checks out grows), and the
resident memory of the run's process sampled as tasks finish (target: flat in the number of
finished tasks), with its peak.

Run: .venv/bin/python bench/scale.py   (several minutes; CHAINS=10 for a quick look)
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import print_machine  # noqa: E402

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["ACA_RATE_LIMITING__MAX_REQUESTS_PER_MINUTE"] = "1000000"
os.environ["ACA_RATE_LIMITING__MAX_TOKENS_PER_MINUTE"] = "1000000000"
os.environ["ACA_RATE_LIMITING__MAX_CONCURRENT_REQUESTS"] = "64"

CHAINS = int(os.environ.get("CHAINS", "50"))
LENGTH = 10
CONCURRENCY = 8


def task_file(path: Path) -> Path:
    lines = []
    for chain in range(CHAINS):
        for step in range(LENGTH):
            dep = f" depends_on=c{chain}s{step - 1}" if step else ""
            lines.append(f"- write c{chain}s{step}.txt {{#c{chain}s{step}{dep}}}\n")
    path.write_text("".join(lines))
    return path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def finished_tasks(workdir: Path) -> int:
    journals = list((workdir / ".aca" / "sessions").glob("*/meta/events.jsonl"))
    if not journals:
        return 0
    return journals[0].read_bytes().count(b'"task_completed"')


def main() -> None:
    print_machine("scale")
    from aca_flows.flows import run_flow
    from aca_flows.flows.local_servers import LocalServer, _drain_to_server
    from tests.fakes.coding_agent import coding_agent
    from tests.fakes.git_repo import make_repo
    from tests.fakes.llm_server import FakeLLMServer

    total = CHAINS * LENGTH
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["HOME"] = str(tmp / "home")
        server = LocalServer(tmp / "home" / ".aca" / "server")
        server.start(port=_free_port())
        try:
            tasks = task_file(tmp / "scale.md")
            cassette = tmp / "scale.cassette.json"
            with FakeLLMServer() as llm:
                for _ in range(total * 2 + 10):
                    llm.anthropic.enqueue(coding_agent)
                os.environ.update(ANTHROPIC_BASE_URL=llm.url, ANTHROPIC_API_KEY=llm.api_key)
                recorded = run_flow(
                    task_file=str(tasks), workdir=str(make_repo(tmp / "record")),
                    provider="anthropic", model="claude-sonnet-4-5", max_concurrent=CONCURRENCY,
                    record=str(cassette),
                )  # fmt: skip
            assert recorded.summary and recorded.summary["status"] == "completed", recorded
            config = tmp / "replay.toml"
            config.write_text(
                f'[session]\nprovider = "replay"\nmodel = "claude-sonnet-4-5"\n'
                f'[providers.replay]\ncassette = "{cassette}"\n'
            )
            workdir = make_repo(tmp / "replay")
            samples: list[tuple[float, int, float]] = []  # seconds in, finished, RSS
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.5):
                    seconds = time.perf_counter() - start
                    samples.append((seconds, finished_tasks(workdir), rss_mb()))

            sampler = threading.Thread(target=sample, daemon=True)
            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            sampler.start()
            outcome = run_flow(
                task_file=str(tasks), workdir=str(workdir), config_file=str(config),
                max_concurrent=CONCURRENCY,
            )  # fmt: skip
            wall = time.perf_counter() - start
            stop.set()
            cpu_after = resource.getrusage(resource.RUSAGE_SELF)
            _drain_to_server()  # the last log lines, before the server goes
        finally:
            server.stop()
    assert outcome.summary and outcome.summary["status"] == "completed", outcome.summary
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    print(f"scale: {total} tasks ({CHAINS} chains of {LENGTH}), replayed, {CONCURRENCY} at once")
    print(f"scale: wall time                    {wall:8.1f} s")
    print(f"scale: wall per task (wall / tasks)  {wall / total * 1000:8.0f} ms")
    print(f"scale: CPU seconds per task (aca)   {cpu / total * 1000:8.0f} ms")
    # Wall per task in each quarter of the run: flat if a task costs the same at the end as at
    # the start (each task adds a file, so the tree a worktree checks out grows).
    reached = [0.0]
    for quarter in (1, 2, 3):
        times = [seconds for seconds, done, _ in samples if done >= total * quarter // 4]
        reached.append(times[0] if times else wall)
    reached.append(wall)
    for quarter in range(4):
        per_task = (reached[quarter + 1] - reached[quarter]) / (total / 4)
        first, last = total * quarter // 4 + 1, total * (quarter + 1) // 4
        print(f"scale: wall per task, tasks {first:3d}-{last:3d}    {per_task * 1000:8.0f} ms")
    for share in (0.1, 0.25, 0.5, 0.75, 1.0):
        wanted = int(total * share)
        after = [rss for _, done, rss in samples if done >= wanted]
        if after:
            print(f"scale: RSS after {wanted:4d} finished     {after[0]:8.0f} MB")
    print(f"scale: peak RSS                      {max(r for _, _, r in samples):8.0f} MB")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
