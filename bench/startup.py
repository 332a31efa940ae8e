"""Start-up of a run: seconds from `aca run` to its first provider call, one task, against a
warm local Prefect server (`aca server start`, started here first), for the anthropic and
claude-code providers. Target: 1.5 s. Each is run three times; the best and the median are
printed (this machine is shared, so the best says what aca costs).

Run: .venv/bin/python bench/startup.py   (about a minute)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aca_flows.flows.server import LocalServer  # noqa: E402
from bench.peer import _free_port, agent, run_aca  # noqa: E402
from tests.fakes.git_repo import make_repo  # noqa: E402
from tests.fakes.llm_server import FakeLLMServer  # noqa: E402

RUNS = 3


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name, FakeLLMServer() as server:
        tmp = Path(tmp_name)
        home = tmp / "home"
        home.mkdir()
        for _ in range(100):
            server.anthropic.enqueue(agent)
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
        firsts: dict[str, list[float]] = {}
        try:
            for n in range(RUNS):
                for provider in ("anthropic", "claude-code"):
                    seen = len(server.anthropic.requests)
                    repo = make_repo(tmp / f"{provider}-{n}")
                    _, start_wall = run_aca(repo, tasks, provider, env)
                    first = [r.received_at for r in server.anthropic.requests[seen:]]
                    firsts.setdefault(provider, []).append(min(first) - start_wall)
        finally:
            local.stop()
    for provider, seconds in firsts.items():
        print(
            f"startup: aca run -> first provider call, {provider:<11} best {min(seconds):4.2f} s, "
            f"median {statistics.median(seconds):4.2f} s (target <= 1.5 s)"
        )


if __name__ == "__main__":
    main()
