"""aca's Prefect events reach the server as work happens, and the shipped automations
(deployments/automations.yaml, created with ``prefect automation create``) fire on them.

Everything runs against the session's Prefect test server: real flow runs, real events read
back through the events API, a real automation whose action's effect is looked for: a
notification posted to a local webhook, a flow run of the docs-refresh deployment.
"""

from __future__ import annotations

import asyncio
import json
import os
import string
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import (
    EventFilter,
    EventOccurredFilter,
    EventRelatedFilter,
    EventResourceFilter,
)
from prefect.events.worker import EventsWorker

from aca_flows.flows import run_flow
from aca_flows.session.reading import load_session
from tests.fakes.coding_agent import coding_agent
from tests.flows.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
PREFECT = Path(sys.executable).with_name("prefect")


def aca_events(flow_run_id: str, since) -> list:
    """aca's events naming the flow run ``flow_run_id``, oldest first."""
    EventsWorker.drain_all()

    async def read():
        async with get_client() as client:
            page = await client.read_events(
                EventFilter(
                    occurred=EventOccurredFilter(since=since),
                    resource=EventResourceFilter(id_prefix=["aca."]),
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                    order="ASC",
                ),
                limit=50,
            )
        return page.events

    return asyncio.run(read())


async def flow_runs_of_session(session_id: str) -> list:
    async with get_client() as client:
        runs = await client.read_flow_runs()
    # The session's flow runs, not its groups' subflow runs (tagged with the session too).
    return [r for r in runs if f"session:{session_id}" in r.tags and not r.parent_task_run_id]


async def flow_run_of_session(session_id: str):
    (run,) = await flow_runs_of_session(session_id)
    return run


def test_a_run_emits_session_and_task_events_naming_its_flow_run(tmp_path, repo, anthropic_fake):
    from prefect.types._datetime import now

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    since = now("UTC")
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# Events {uuid.uuid4().hex[:6]}\n\n"
        "- write a.txt {#a}\n"
        '- write b.txt {#b verify="false"}\n'
        "- write c.txt {#c depends_on=b}\n"
    )
    # A priced model, so the costs in the events are not all zero.
    outcome = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-sonnet-4-5")
    summary = outcome.summary
    session = load_session(repo, summary["session_id"])
    flow_run = asyncio.run(flow_run_of_session(session.id))

    expected = {
        "aca.session.started",
        "aca.task.completed",
        "aca.task.failed",
        "aca.task.skipped",
        "aca.session.failed",
    }
    events = eventually(
        lambda: (
            (found := aca_events(str(flow_run.id), since))
            and expected <= {e.event for e in found}
            and found
        ),
        "the session's events",
    )
    by_name = {e.event: e for e in events}
    assert [e.event for e in events][0] == "aca.session.started"
    assert [e.event for e in events][-1] == "aca.session.failed"

    ended = by_name["aca.session.failed"]
    assert ended.resource.id == f"aca.session.{session.id}"
    assert ended.resource.name == session.name
    assert ended.payload["session_id"] == session.id
    assert ended.payload["branch"] == f"aca/{session.id}"
    assert ended.payload["cost_usd"] == pytest.approx(summary["cost_usd"])
    assert ended.payload["counts"] == {"completed": 1, "failed": 1, "skipped": 1}
    assert ended.payload["reason"] == summary["stopped_reason"]
    (related_run,) = [r for r in ended.related if r.role == "flow-run"]
    assert related_run.id == f"prefect.flow-run.{flow_run.id}"
    assert related_run.name == flow_run.name

    done = by_name["aca.task.completed"]
    assert done.resource.id == f"aca.task.{session.id}.a"
    assert done.payload["task_id"] == "a" and done.payload["title"] == "write a.txt"
    assert done.payload["commit"] == session.tasks["a"].commit and done.payload["commit"]
    assert done.payload["cost_usd"] == pytest.approx(session.tasks["a"].cost_usd)
    assert done.payload["cost_usd"] > 0
    assert {r.role for r in done.related} >= {"flow-run", "aca-session"}

    failed = by_name["aca.task.failed"]
    assert failed.payload["task_id"] == "b" and failed.payload["commit"] is None
    assert failed.payload["reason"].startswith("verify command `false`")
    assert by_name["aca.task.skipped"].payload["task_id"] == "c"
    assert by_name["aca.task.skipped"].payload["reason"] == "dependency `b` failed"


def test_a_resume_that_skips_a_dependent_again_sends_its_skipped_event(
    tmp_path, repo, anthropic_fake
):
    # The resume ran b again, which failed again and skipped c again: b's failed event came,
    # c's skipped one did not (the session had c skipped already, from the first run).
    from prefect.types._datetime import now

    for _ in range(30):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# Again {uuid.uuid4().hex[:6]}\n\n"
        '- write b.txt {#b verify="false"}\n- write c.txt {#c depends_on=b}\n'
    )
    first = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
    since = now("UTC")
    again = run_flow(session_id=first["session_id"], workdir=str(repo)).summary
    assert again["failed_ids"] == ["b"]
    runs = asyncio.run(flow_runs_of_session(first["session_id"]))
    resumed = max(runs, key=lambda r: r.created)

    def ends() -> list[str]:
        found = aca_events(str(resumed.id), since)
        names = [f"{e.event} {e.payload['task_id']}" for e in found if "task_id" in e.payload]
        return "aca.session.failed" in {e.event for e in found} and names

    assert eventually(ends, "the resume's task events") == [
        "aca.task.failed b",
        "aca.task.skipped c",
    ]


def test_a_task_whose_proposed_subtask_failed_sends_its_failed_event(
    tmp_path, repo, anthropic_fake
):
    """Its own work landed, then a subtask it proposed failed: it is failed in the session,
    and a pipeline listening for its events hears that alone: it never completed."""
    from prefect.types._datetime import now

    for _ in range(30):
        anthropic_fake.anthropic.enqueue(coding_agent)
    since = now("UTC")
    tasks = tmp_path / "tasks.md"
    # The subtasks inherit the verify command: base.one writes one.txt, so it fails.
    tasks.write_text(
        f"# Split {uuid.uuid4().hex[:6]}\n\n"
        '- write base.txt {#base verify="test ! -f one.txt"}\n  propose: one, two\n'
        "- write after.txt {#after depends_on=base}\n"
    )
    summary = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
    session = load_session(repo, summary["session_id"])
    assert str(session.plan.task("base").status) == "failed: subtask base.one failed"
    flow_run = asyncio.run(flow_run_of_session(session.id))

    def of_base() -> list[str]:
        found = aca_events(str(flow_run.id), since)
        names = [f"{e.event} {e.payload['task_id']}" for e in found if "task_id" in e.payload]
        ours = [n for n in names if n.endswith((" base", " after"))]
        return "aca.session.failed" in {e.event for e in found} and ours

    # In the order the DAG decided: base failed, then its dependent skipped for it.
    assert eventually(of_base, "base's events") == [
        "aca.task.failed base",
        "aca.task.skipped after",
    ]
    (failed,) = [
        e
        for e in aca_events(str(flow_run.id), since)
        if e.event == "aca.task.failed" and e.payload["task_id"] == "base"
    ]
    assert failed.payload["reason"] == "subtask base.one failed"


def test_a_resume_sends_again_the_task_events_a_lost_server_dropped(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    """A server lost mid-run drops the events not yet sent (a's ``aca.task.completed``); a
    resume, whose task run of a is only Cached, sends it again, once, as it was."""
    from prefect.events import emit_event
    from prefect.types._datetime import now

    from aca_flows.flows import events

    for _ in range(30):
        anthropic_fake.anthropic.enqueue(coding_agent)
    since = now("UTC")
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        f"# Lost {uuid.uuid4().hex[:6]}\n\n- write a.txt {{#a}}\n"
        '- write b.txt {#b verify="false"}\n'
    )
    sent: list[str] = []

    def lost_with_the_server(*, event: str, **fields):
        sent.append(f"{event} {fields['payload'].get('task_id')}")
        if event != "aca.task.completed":
            return emit_event(event=event, **fields)

    monkeypatch.setattr(events, "emit_event", lost_with_the_server)
    first = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
    session_id = first["session_id"]
    assert "aca.task.completed a" in sent  # sent, and lost
    monkeypatch.setattr(events, "emit_event", emit_event)  # the server is back

    run_flow(session_id=session_id, workdir=str(repo))  # b fails again; a is done

    session = load_session(repo, session_id)

    def a_completed() -> list:
        EventsWorker.drain_all()

        async def read():
            async with get_client() as client:
                page = await client.read_events(
                    EventFilter(
                        occurred=EventOccurredFilter(since=since),
                        resource=EventResourceFilter(id=[f"aca.task.{session_id}.a"]),
                    ),
                    limit=50,
                )
            return [e for e in page.events if e.event == "aca.task.completed"]

        return asyncio.run(read())

    (event,) = eventually(a_completed, "a's aca.task.completed, sent again")
    assert event.id == events.task_event_id(session, "a", "completed")
    assert event.occurred == session.tasks["a"].finished_at  # when a completed, not now
    assert event.payload["commit"] == session.tasks["a"].commit and event.payload["commit"]
    # The next resume finds it on the server: it is not sent a third time.
    sent.clear()
    monkeypatch.setattr(events, "emit_event", lost_with_the_server)
    run_flow(session_id=session_id, workdir=str(repo))
    assert "aca.task.failed b" in sent and "aca.task.completed a" not in sent


def test_a_run_stopped_by_its_budget_says_so_and_why(tmp_path, repo, anthropic_fake):
    from prefect.types._datetime import now

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    since = now("UTC")
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n- write b.txt {#b}\n")
    # $0.0012 a task at this model's price: the budget stops the run after the first.
    summary = run_flow(
        task_file=str(tasks), workdir=str(repo), model="claude-sonnet-4-6",
        max_concurrent=1, budget_usd=0.001,
    ).summary  # fmt: skip
    assert summary["status"] == "stopped"
    flow_run = asyncio.run(flow_run_of_session(summary["session_id"]))

    def stopped() -> list:
        return [e for e in aca_events(str(flow_run.id), since) if e.event == "aca.session.stopped"]

    events = eventually(stopped, "aca.session.stopped")
    assert events[0].payload["reason"] == summary["stopped_reason"]
    assert events[0].payload["reason"].startswith("budget of $0.001 reached")
    assert events[0].payload["cost_usd"] == pytest.approx(summary["cost_usd"])
    names = {e.event for e in aca_events(str(flow_run.id), since)}
    assert "aca.session.failed" not in names and "aca.task.failed" not in names


# --- The shipped automations -----------------------------------------------------------------


class Webhook:
    """A local HTTP endpoint that keeps the JSON bodies posted to it."""

    def __init__(self):
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length", 0))
                bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


async def _setup_targets(webhook_url: str) -> dict[str, str]:
    """A notification block posting to ``webhook_url``, and the two deployments the
    automations name: ids by placeholder name."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from aca_flows.flows.aca_run import aca_run

    block = CustomWebhookNotificationBlock(
        name="aca-test",
        url=webhook_url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,  # the test's own local endpoint
    )
    block_id = await block.save(f"aca-test-{uuid.uuid4().hex[:8]}")
    async with get_client() as client:
        flow_id = await client.create_flow(aca_run)
        ids = {
            name: await client.create_deployment(flow_id=flow_id, name=name)
            for name in ("nightly-fix-tests", "docs-refresh")
        }
    return {
        "ACA_NOTIFICATION_BLOCK_ID": str(block_id),
        "ACA_DOCS_REFRESH_DEPLOYMENT_ID": str(ids["docs-refresh"]),
        "nightly": str(ids["nightly-fix-tests"]),
    }


def _create_shipped_automations(tmp_path: Path, ids: dict[str, str]) -> list[str]:
    """What docs/deployments.md says to do: fill in the ids, ``prefect automation create``."""
    from prefect.settings import PREFECT_API_URL

    text = (ROOT / "deployments" / "automations.yaml").read_text()
    filled = tmp_path / "aca-automations.yaml"
    # What envsubst does: ${NAME} becomes the variable's value; nothing else changes.
    filled.write_text(string.Template(text).safe_substitute(ids))
    assert "${ACA_" not in filled.read_text()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [str(PREFECT), "automation", "create", "--from-file", str(filled)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Created 2 automation(s)" in done.stdout, done.stdout

    async def names() -> dict[str, str]:
        async with get_client() as client:
            return {str(a.id): a.name for a in await client.read_automations()}

    return [i for i, n in asyncio.run(names()).items() if n.startswith("aca - ")]


def _delete_automations(ids: list[str]) -> None:
    async def delete():
        async with get_client() as client:
            for automation_id in ids:
                await client.delete_automation(uuid.UUID(automation_id))

    asyncio.run(delete())


def _docs_refresh_runs(deployment_id: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )

    return asyncio.run(read())


def _nightly_run(deployment_id: str, **parameters: Any):
    """A flow run of the nightly-fix-tests deployment, run here as a worker would run it."""
    from prefect.flow_engine import run_flow_async

    from aca_flows.flows.aca_run import aca_run

    async def main():
        async with get_client() as client:
            flow_run = await client.create_flow_run_from_deployment(
                uuid.UUID(deployment_id), parameters=parameters
            )
        return await run_flow_async(
            aca_run, flow_run=flow_run, parameters=parameters, return_type="state"
        )

    return asyncio.run(main())


def test_the_shipped_automations_fire_on_acas_events(
    tmp_path, repo, anthropic_fake, webhook, monkeypatch
):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    ids = asyncio.run(_setup_targets(webhook.url))
    automations = _create_shipped_automations(tmp_path, ids)
    try:
        # A failed session: a notification names it and its reason.
        failing = tmp_path / "failing.md"
        failing.write_text('# Broken build\n\n- write a.txt {#a verify="false"}\n')
        failed = run_flow(task_file=str(failing), workdir=str(repo), model="claude-test")
        session_id = failed.summary["session_id"]
        assert failed.summary["status"] == "failed"
        EventsWorker.drain_all()
        note = eventually(
            lambda: [b for b in webhook.bodies if session_id in b.get("subject", "")],
            "the failed-session notification",
        )[0]
        assert note["subject"] == f"aca session {session_id} failed"
        assert f"aca session {session_id} (Broken build) failed: 1 task failed: a" in (note["body"])
        assert f"aca resume {session_id}" in note["body"]
        assert _docs_refresh_runs(ids["ACA_DOCS_REFRESH_DEPLOYMENT_ID"]) == []

        # A nightly-fix-tests run that completes starts the docs refresh.
        monkeypatch.setenv("ACA_DEPLOYMENTS__ALLOWED_WORKDIRS", str(tmp_path))
        nightly = tmp_path / "nightly.md"
        nightly.write_text("# Nightly fix\n\n- write fixed.txt {#fix}\n")
        state = _nightly_run(
            ids["nightly"], task_file=str(nightly), workdir=str(repo), model="claude-test"
        )
        assert state.is_completed(), state.message
        EventsWorker.drain_all()
        (started,) = eventually(
            lambda: _docs_refresh_runs(ids["ACA_DOCS_REFRESH_DEPLOYMENT_ID"]),
            "a flow run of the docs-refresh deployment",
        )
        assert started.deployment_id == uuid.UUID(ids["ACA_DOCS_REFRESH_DEPLOYMENT_ID"])
        # Only the failed session was announced: the nightly one completed.
        assert all(session_id in b["subject"] for b in webhook.bodies)
    finally:
        _delete_automations(automations)
