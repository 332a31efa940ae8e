"""aca against the peer: what a user scripts today, a `claude -p` loop, over the same work.

Eight independent tasks ("write fN.txt"), each two model calls, every call answered by the
fake LLM server after 2 s. Timed, each from a fresh repository:

1. the loop: for each task, `claude -p` (the bundled binary) in the repository, then
   `git add -A && git commit`, one task after another;
2. `aca run`, anthropic provider, 8 at once;
3. `aca run`, claude-code provider (the same bundled binary), 8 at once.

Both aca runs use a warm local Prefect server and its warm runner (`aca server start`, started
here first), as a user who runs aca often has; the account allows 8 calls in flight. Printed:
wall times, the ideal (2 calls x 2 s), and aca's speed-up over the loop next to the target (at
least 5x). Also printed: seconds from `aca run` to its first provider call (target 1.5 s), and
the CPU seconds of each claude process of the claude-code runs (its children included): on this
shared machine wall times move with other work, CPU seconds much less.
aca's figures are medians of five runs of each (RUNS=N): a figure moves by more than its
target's margin from one run to the next on this machine.

Run: .venv/bin/python bench/peer.py   (about three minutes)
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aca_flows.cli.warm_runner import WarmRunner  # noqa: E402
from aca_flows.flows.local_servers import LocalServer  # noqa: E402
from aca_flows.providers.claude_code import bundled_claude_cli  # noqa: E402
from bench.machine import print_machine  # noqa: E402
from tests.fakes.coding_agent import coding_agent  # noqa: E402
from tests.fakes.git_repo import make_repo  # noqa: E402
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest, Reply  # noqa: E402

RUNS = int(os.environ.get("RUNS", "5"))  # aca's runs, each provider; the loop runs once
TASKS = 8
LATENCY = 2.0
CALLS_PER_TASK = 2
TASK_FILE = "".join(f"- write f{i}.txt\n" for i in range(TASKS))


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))


def claude_agent(request: RecordedRequest) -> Reply:
    """Plays the model for Claude Code: Write the file the prompt names, then say done."""
    messages = request.json["messages"]
    last = messages[-1]["content"]
    if isinstance(last, list) and any(b.get("type") == "tool_result" for b in last):
        return Reply(text="Done.")
    everything = json.dumps(request.json)
    name = re.findall(r"write (f\d+\.txt)", everything)[-1]
    cwd = re.search(r"[Ww]orking directory: ([^\s\\]+)", everything).group(1)
    path = str(Path(cwd) / name)
    return Reply(tool_calls=[{"name": "Write", "arguments": {"file_path": path, "content": name}}])


def agent(request: RecordedRequest) -> Reply:
    time.sleep(LATENCY)
    names = {t.get("name") for t in request.json.get("tools", [])}
    return claude_agent(request) if "Write" in names else coding_agent(request)


def run_loop(repo: Path, env: dict[str, str]) -> float:
    claude = str(bundled_claude_cli())
    start = time.perf_counter()
    for i in range(TASKS):
        subprocess.run(
            [claude, "-p", f"write f{i}.txt", "--permission-mode", "acceptEdits"],
            cwd=repo, env=env, check=True, capture_output=True, timeout=300,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(
            [
                "git",
                "-c",
                "user.name=loop",
                "-c",
                "user.email=loop@localhost",
                "commit",
                "-qm",
                f"write f{i}.txt",
            ],
            cwd=repo,
            check=True,
        )
    return time.perf_counter() - start


def run_aca(repo: Path, tasks: Path, provider: str, env: dict[str, str]) -> tuple[float, float]:
    start_wall = time.time()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "aca_flows", "run", str(tasks), "--workdir", str(repo),
         "--provider", provider, "--model", "claude-sonnet-4-5", "--max-concurrent", str(TASKS),
         "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"aca run ({provider}) failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, start_wall


def timed_claude(folder: Path) -> Path | None:
    """A ``claude`` for ACA_CLAUDE_CLI that appends its CPU seconds (user, system, its children
    included) to ``folder / "cpu"``; ``None`` without /usr/bin/time."""
    if not Path("/usr/bin/time").is_file():
        return None
    script = folder / "claude"
    script.write_text(
        f'#!/bin/sh\nexec /usr/bin/time -a -o "{folder / "cpu"}" -f "%U %S" '
        f'"{bundled_claude_cli()}" "$@"\n'
    )
    script.chmod(0o755)
    return script


def claude_cpu(folder: Path) -> list[float]:
    """Each timed claude process's CPU seconds (``timed_claude``)."""
    log = folder / "cpu"
    lines = log.read_text().splitlines() if log.exists() else []
    return [sum(map(float, line.split())) for line in lines if line[:1].isdigit()]


def main() -> None:
    print_machine("peer")
    with tempfile.TemporaryDirectory() as tmp_name, FakeLLMServer() as server:
        tmp = Path(tmp_name)
        home = tmp / "home"
        home.mkdir()
        for _ in range(400):
            server.anthropic.enqueue(agent)
        # Claude Code's side calls (titles, quota checks) carry no tools: not the agent's turns.
        server.anthropic.scripted_for = lambda request: bool((request.json or {}).get("tools"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": server.api_key,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Offline machine: Claude Code's side traffic (telemetry, updates) has nowhere to go.
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "ACA_RATE_LIMITING__MAX_REQUESTS_PER_MINUTE": "100000",
            "ACA_RATE_LIMITING__MAX_TOKENS_PER_MINUTE": "100000000",
            # An account that allows 8 calls at once (the default holds 4 in flight).
            "ACA_RATE_LIMITING__MAX_CONCURRENT_REQUESTS": str(TASKS),
        }
        timed = timed_claude(tmp)
        tasks = tmp / "tasks.md"
        tasks.write_text(TASK_FILE)
        os.environ["HOME"] = str(home)
        local = LocalServer(home / ".aca" / "server")
        local.start(port=_free_port())
        runner = WarmRunner(local.home)
        runner.start()
        try:
            loop_s = run_loop(make_repo(tmp / "loop"), env)
            results: dict[str, list[tuple[float, float]]] = {}
            for n in range(RUNS):
                for provider in ("anthropic", "claude-code"):
                    seen = len(server.anthropic.requests)
                    repo = make_repo(tmp / f"{provider}-{n}")
                    timer = {"ACA_CLAUDE_CLI": str(timed)} if timed else {}
                    run_env = {**env, **timer} if provider == "claude-code" else env
                    elapsed, start_wall = run_aca(repo, tasks, provider, run_env)
                    first = min(r.received_at for r in server.anthropic.requests[seen:])
                    results.setdefault(provider, []).append((elapsed, first - start_wall))
            warm = runner.log_file.read_text().count("\nrun ")
            cpu = claude_cpu(tmp)
        finally:
            runner.stop()
            local.stop()
    ideal = CALLS_PER_TASK * LATENCY
    print(f"peer: {TASKS} independent tasks, {CALLS_PER_TASK} calls each, {LATENCY:g} s a call")
    print(f"peer: claude -p loop, one after another  {loop_s:7.1f} s")
    for provider, runs in results.items():
        elapsed = statistics.median(e for e, _ in runs)
        first = statistics.median(f for _, f in runs)
        spread = f"{min(e for e, _ in runs):.1f}-{max(e for e, _ in runs):.1f}"
        print(
            f"peer: aca run, {provider:<11}, 8 at once  {elapsed:7.1f} s  "
            f"speed-up {loop_s / elapsed:4.1f}x (target >= 5x); first provider call after "
            f"{first:4.1f} s (target <= 1.5 s); median of {len(runs)} ({spread} s)"
        )
    if cpu:
        print(
            f"peer: claude-code, CPU of one claude process (children included): median "
            f"{statistics.median(cpu):.2f} s, {sum(cpu) / RUNS:.1f} s a run "
            f"({len(cpu)} processes)"
        )
    print(f"peer: ideal, all 8 at once              {ideal:7.1f} s")
    print(f"peer: aca runs forked by the warm runner of `aca server start`: {warm} of {2 * RUNS}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
