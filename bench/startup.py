"""Start-up of a run: seconds from `aca run` to its first provider call, one task, against a
warm local Prefect server (`aca server start`, started here first), for the anthropic and
claude-code providers. Target: 1.5 s. Two ways, each run three times (best and median printed;
this machine is shared, so the best says what aca costs):

- warm: the command handed to the warm runner that `aca server start` keeps
  (aca_flows/cli/warm_runner.py), what a user with a local server gets;
- cold: `ACA_WARM_RUNNER=off`, the command imports Prefect and the SDKs itself; printed with
  the CPU seconds of the whole run, aca's CPU seconds up to its first call and, from the median
  run, when each phase of the start-up was reached (bench/startup_phases.py marks them).

For warm runs, the CPU seconds are those of the forked run (found in the runner's log) up to
its first call, and of the `aca` command itself (the client) to its end.

Run: .venv/bin/python bench/startup.py   (about a minute)
"""

from __future__ import annotations

import json
import os
import re
import resource
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
from bench.machine import print_machine  # noqa: E402
from bench.peer import _free_port, agent  # noqa: E402
from tests.fakes.git_repo import make_repo  # noqa: E402
from tests.fakes.llm_server import FakeLLMServer  # noqa: E402

RUNS = int(os.environ.get("RUNS", "3"))


def main() -> None:
    print_machine("startup")
    with tempfile.TemporaryDirectory() as tmp_name, FakeLLMServer() as server:
        tmp = Path(tmp_name)
        home = tmp / "home"
        home.mkdir()
        for _ in range(100):
            server.anthropic.enqueue(_measuring_cpu(agent))
        # Claude Code's side calls (titles, quota checks) carry no tools: not the agent's turns.
        server.anthropic.scripted_for = lambda request: bool((request.json or {}).get("tools"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": server.api_key,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        tasks = tmp / "tasks.md"
        tasks.write_text("- write f0.txt\n")
        os.environ["HOME"] = str(home)
        local = LocalServer(home / ".aca" / "server")
        local.start(port=_free_port())
        runner = WarmRunner(local.home)
        if runner.start() is None:
            raise SystemExit(f"the warm runner did not start: {runner.log_file}")
        _FIRST_CALL["runner_log"] = runner.log_file
        runs: dict[tuple[str, str], list[tuple[float, float, dict[str, float]]]] = {}
        cpu_to_first: dict[tuple[str, str], list[float]] = {}
        try:
            for n in range(RUNS):
                for mode in ("warm", "cold"):
                    for provider in ("anthropic", "claude-code"):
                        seen = len(server.anthropic.requests)
                        repo = make_repo(tmp / f"{mode}-{provider}-{n}")
                        phases_file = tmp / f"phases-{mode}-{provider}-{n}.json"
                        cpu, phases = run_aca(repo, tasks, provider, env, phases_file, mode)
                        first = min(r.received_at for r in server.anthropic.requests[seen:])
                        phases["first provider call"] = first
                        start = phases.pop("start")
                        offsets = {name: at - start for name, at in phases.items()}
                        runs.setdefault((mode, provider), []).append((first - start, cpu, offsets))
                        measured = cpu_to_first.setdefault((mode, provider), [])
                        if _FIRST_CALL["cpu"] is not None:
                            measured.append(_FIRST_CALL["cpu"])
        finally:
            runner.stop()
            local.stop()
    for (mode, provider), results in runs.items():
        firsts = [first for first, _, _ in results]
        cpus = [cpu for _, cpu, _ in results]
        whose = "the aca command's (client's)" if mode == "warm" else "the whole run's"
        to_first = cpu_to_first[(mode, provider)]
        to_first_shown = f"{statistics.median(to_first):4.2f} s" if to_first else "n/a"
        print(
            f"startup: {mode} aca run -> first provider call, {provider:<11} best "
            f"{min(firsts):4.2f} s, median {statistics.median(firsts):4.2f} s (target <= 1.5 s); "
            f"CPU: {whose} {statistics.median(cpus):4.2f} s, the run's up to its first call "
            f"{to_first_shown}"
        )
        if mode == "warm" and provider == "anthropic":
            print(f"startup: warm, the first run after `aca server start`, {provider}: "
                  f"{firsts[0]:4.2f} s")  # fmt: skip
        if mode == "cold":
            median_run = sorted(results)[len(results) // 2][2]
            for name, offset in sorted(median_run.items(), key=lambda item: item[1]):
                print(f"startup:   {provider:<11} {offset:5.2f} s  {name}")


# The running aca's pid, and its CPU seconds (with its finished children's) when the fake
# server got its first call: a figure the other engineers' load on this machine moves less.
_FIRST_CALL: dict = {"pid": None, "cpu": None, "runner_log": None, "warm": False}


def _cpu_seconds_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime..cstime


def _measuring_cpu(reply):
    def measured(request):
        if _FIRST_CALL["cpu"] is None and _FIRST_CALL["pid"] is not None:
            pid = _FIRST_CALL["pid"]
            if _FIRST_CALL["warm"]:  # the run is the runner's newest child, not the command
                log = _FIRST_CALL["runner_log"].read_text()
                pid = int(re.findall(r"^run (\d+):", log, re.M)[-1])
            try:
                _FIRST_CALL["cpu"] = _cpu_seconds_of(pid)
            except OSError:  # gone already (a runner that ran it cold): no figure, still a reply
                _FIRST_CALL["pid"] = None
        return reply(request)

    return measured


def run_aca(
    repo: Path, tasks: Path, provider: str, env: dict[str, str], phases_file: Path, mode: str
) -> tuple[float, dict[str, float]]:
    """Run `aca run` (through the phase marker); its CPU seconds and its phases' times."""
    if mode == "cold":
        env = {**env, "ACA_WARM_RUNNER": "off"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    _FIRST_CALL.update(pid=None, cpu=None, warm=mode == "warm")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "startup_phases.py"), "run", str(tasks),
         "--workdir", str(repo), "--provider", provider, "--model", "claude-sonnet-4-5",
         "--json"],
        env={**env, "ACA_BENCH_PHASES": str(phases_file), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _FIRST_CALL["pid"] = process.pid
    out, err = process.communicate(timeout=600)
    done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"aca run ({provider}) failed:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, {"start": start, **json.loads(phases_file.read_text())}


if __name__ == "__main__":
    main()
