"""The screenshots of docs/ui.md, taken from a real Prefect UI in headless Chromium.

Starts ``prefect server start`` on a free port (its own PREFECT_HOME), runs ``aca run`` on a
plan with two groups against it (the coding agent is the tests' fake LLM server: nothing
leaves the machine), then opens the UI's pages in headless Chromium through the DevTools
protocol and saves them under docs/images/ui-*.png.

    PYTHONPATH=. .venv/bin/python docs/ui_screenshots.py

Needs ``chromium`` on PATH (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
PLAN = """\
# Split the parser

The parser module grew too big: split it, keep its tests green.

## Tokenizer {#tokenizer}

- write tokenizer.py {#lexer}
- write test_tokenizer.py {#lexer-tests depends_on=lexer verify="test -f tokenizer.py"}

## Grammar {#grammar}

- write grammar.py {#rules depends_on=lexer}
- write docs.md {#docs}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def run_demo(work: Path, api: str) -> str:
    """``aca run`` on PLAN; returns the session id."""
    from tests.fakes.coding_agent import coding_agent
    from tests.fakes.git_repo import make_repo
    from tests.fakes.llm_server import FakeLLMServer

    repo = make_repo(work / "repo")
    tasks = work / "tasks.md"
    tasks.write_text(PLAN)
    with FakeLLMServer() as server:
        for _ in range(40):
            server.anthropic.enqueue(coding_agent)
        os.environ.update(
            ANTHROPIC_BASE_URL=server.url,
            ANTHROPIC_API_KEY="test-key",
            ACA_SESSION__PROVIDER="anthropic",
            PREFECT_API_URL=api,
        )
        from aca_flows.cli import main

        out = work / "summary.json"
        stdout = sys.stdout
        with out.open("w") as sys.stdout:
            code = main(["run", str(tasks), "--workdir", str(repo), "--json",
                         "--model", "claude-sonnet-4-5", "--max-concurrent", "2"])  # fmt: skip
        sys.stdout = stdout
    summary = json.loads(out.read_text().strip().splitlines()[-1])
    print("aca run exit", code, summary["status"])
    return summary["session_id"]


async def pages(session_id: str) -> dict[str, tuple[str, str | None]]:
    """The UI paths to shoot, and the tab to open on each, by image name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterParentTaskRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    async with get_client() as client:
        runs = await client.read_flow_runs()
        (top,) = [r for r in runs if f"session:{session_id}" in r.tags and not r.parent_task_run_id]
        wrappers = await client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[top.id]))
        )
        groups = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in wrappers])
            )
        )
        tokenizer = next(g for g in groups if g.name.startswith("tokenizer"))
        inside = await client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[tokenizer.id]))
        )
        lexer = next(t for t in inside if t.name.startswith("lexer "))
        versions = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"aca-tree-{session_id}"]))
        )
        tree = max(versions, key=lambda a: a.created)  # the final one
    return {
        "ui-flows": ("/flows", None),
        "ui-plan-run": (f"/runs/flow-run/{top.id}", "Subflow Runs"),
        "ui-artifacts": (f"/runs/flow-run/{top.id}", "Artifacts"),
        "ui-group-run": (f"/runs/flow-run/{tokenizer.id}", "Task Runs"),
        "ui-task-logs": (f"/runs/task-run/{lexer.id}", None),
        "ui-tree": (f"/artifacts/artifact/{tree.id}", None),
    }


# Where the page's tab named TAB is: [x, y] of its middle (it is clicked there, as a person
# would), or null.
FIND_TAB = """(() => {
  const tab = [...document.querySelectorAll("*")].reverse()
    .find(e => e.children.length == 0 && e.textContent.trim() == "TAB");
  if (!tab) return null;
  const box = tab.getBoundingClientRect();
  return [box.x + box.width / 2, box.y + box.height / 2];
})()"""


async def shoot(base: str, shots: dict[str, str], profile: Path) -> None:
    import websockets

    port = free_port()
    browser = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
         f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(f"http://127.0.0.1:{port}/json", 60)
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
        page = next(t for t in targets if t["type"] == "page")
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=50_000_000) as ws:
            counter = 0

            async def call(method: str, **params):
                nonlocal counter
                counter += 1
                await ws.send(json.dumps({"id": counter, "method": method, "params": params}))
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("id") == counter:
                        return message.get("result", message.get("error"))

            await call("Emulation.setDeviceMetricsOverride", width=1440, height=1000,
                       deviceScaleFactor=1, mobile=False)  # fmt: skip
            for name, (path, tab) in shots.items():
                try:
                    await call("Page.navigate", url=base + path)
                    await asyncio.sleep(10)  # the UI loads its data and draws the graph
                    if tab:
                        found = await call("Runtime.evaluate", returnByValue=True,
                                           expression=FIND_TAB.replace("TAB", tab))  # fmt: skip
                        x, y = found["result"]["value"]
                        for kind in ("mousePressed", "mouseReleased"):
                            await call("Input.dispatchMouseEvent", type=kind, x=x, y=y,
                                       button="left", clickCount=1)  # fmt: skip
                        await asyncio.sleep(4)
                    shot = await call("Page.captureScreenshot", format="png")
                    (IMAGES / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
                    print("wrote", IMAGES / f"{name}.png", flush=True)
                except Exception:
                    traceback.print_exc(file=sys.__stderr__)
    finally:
        browser.terminate()
        browser.wait()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="aca-ui-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PREFECT_API_URL": base + "/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    prefect = Path(sys.executable).with_name("prefect")
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=(work / "server.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(base + "/api/health")
        os.environ.update(PREFECT_HOME=env["PREFECT_HOME"], PREFECT_API_URL=env["PREFECT_API_URL"])
        session_id = run_demo(work, env["PREFECT_API_URL"])
        shots = asyncio.run(pages(session_id))
        asyncio.run(shoot(base, shots, work / "chrome"))
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
