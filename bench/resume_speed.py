"""Resume benchmark; prints figures (targets from the engine issue):

A real ``aca run`` of 20 independent tasks (fake LLM, 0.5 s per call, 4 at once) is killed
with SIGKILL at about half; ``aca resume`` then finishes it. Printed: the seconds from
starting ``aca resume`` to its first provider call, and the number of provider calls repeated
for tasks that had completed before the kill (target 0).

Both processes talk to one ``prefect server`` started here, as a user with PREFECT_API_URL set.
Run: .venv/bin/python bench/resume_speed.py   (about a minute)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import git  # noqa: E402

from bench.machine import print_machine  # noqa: E402
from tests.fakes.coding_agent import coding_agent, task_of  # noqa: E402
from tests.fakes.git_repo import make_repo  # noqa: E402
from tests.fakes.llm_server import FakeLLMServer  # noqa: E402

BIN = Path(sys.executable).parent
TASKS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def completed_in_journal(journal: Path) -> int:
    if not journal.exists():
        return 0
    return sum('"type":"task_completed"' in line for line in journal.read_text().splitlines())


def main() -> None:
    print_machine("resume")
    tmp = Path(tempfile.mkdtemp(prefix="aca-resume-bench-"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = dict(
        os.environ,
        PREFECT_HOME=str(tmp / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
    )
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    calls: list[tuple[float, str]] = []

    def agent(request):
        calls.append((time.monotonic(), task_of(request)[0]))
        time.sleep(0.5)
        return coding_agent(request)

    try:
        wait_for(lambda: healthy(api), 90, "the Prefect server")
        repo = make_repo(tmp / "repo")
        tasks = tmp / "tasks.md"
        tasks.write_text("".join(f"- write f{i}.txt {{#t{i}}}\n" for i in range(TASKS)))
        with FakeLLMServer() as fake:
            for _ in range(TASKS * 4):
                fake.anthropic.enqueue(agent)
            env = dict(
                os.environ,
                PREFECT_API_URL=api,
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
                ANTHROPIC_BASE_URL=fake.url,
                ANTHROPIC_API_KEY="test-key",
                ACA_SESSION__PROVIDER="anthropic",
            )
            run = subprocess.Popen(
                [str(BIN / "aca"), "run", str(tasks), "--workdir", str(repo),
                 "--model", "claude-sonnet-4-5", "--max-concurrent", "4", "--json"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            sessions = repo / ".aca" / "sessions"
            session = wait_for(
                lambda: next(iter(sessions.iterdir()), None) if sessions.is_dir() else None,
                60,
                "the session",
            )
            journal = session / "meta" / "events.jsonl"
            wait_for(lambda: completed_in_journal(journal) >= TASKS // 2, 120, "half the tasks")
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
            branch = git.Repo(repo).git.log(
                "--format=%(trailers:key=Aca-Task,valueonly)", f"aca/{session.name}"
            )
            landed = {line.strip() for line in branch.splitlines() if line.strip()}
            before = len(calls)

            started = time.monotonic()
            resume = subprocess.run(
                [str(BIN / "aca"), "resume", session.name, "--workdir", str(repo), "--json"],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            summary = json.loads(resume.stdout.strip().splitlines()[-1])
            new_calls = calls[before:]
            first = new_calls[0][0] - started if new_calls else float("nan")
            repeated = sum(1 for _, task_id in new_calls if task_id in landed)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    print(f"resume: tasks landed before the kill         {len(landed)} of {TASKS}")
    print(f"resume: exit code of aca resume              {resume.returncode} ({summary['status']})")
    print(f"resume: seconds to the first new call        {first:.2f}")
    print(f"resume: provider calls repeated (target 0)   {repeated}")


if __name__ == "__main__":
    main()
