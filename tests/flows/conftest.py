"""One Prefect test server for every flow test of the session, and a git repo to work on."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer
from tests.polling import wait_for


@pytest.fixture(autouse=True, scope="session")
def prefect_server():
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # Tests read lists back (flow runs, logs, artifacts) without paging; past the default 200
    # a run made by the test itself could fall off the page of a server the suite shares.
    os.environ["PREFECT_SERVER_API_DEFAULT_LIMIT"] = "100000"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository with one commit, like a user's checkout."""
    return make_repo(tmp_path / "repo")


@pytest.fixture
def anthropic_fake(monkeypatch):
    """The fake LLM server, with the anthropic provider pointed at it and quick retries."""
    with FakeLLMServer() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ACA_SESSION__PROVIDER", "anthropic")
        monkeypatch.setenv("ACA_SESSION__RETRY_BACKOFF_SECONDS", "0")
        monkeypatch.setenv("ACA_SESSION__CALL_RETRY_BACKOFF_SECONDS", "0")
        yield server


def flow_run_lines(flow_run_name: str) -> list[tuple[int, str]]:
    """(level, line) of each line of ``flow_run_logs``: a task run's lines that came together
    are one log entry (flows/log_batch.py)."""
    return [(lvl, line) for lvl, text in flow_run_logs(flow_run_name) for line in text.splitlines()]


def flow_run_logs(flow_run_name: str) -> list[tuple[int, str]]:
    """(level, message) of each log line of the one flow run whose name contains
    ``flow_run_name`` (a session id, or a plan name), read back from the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    async def read() -> list[tuple[int, str]]:
        await APILogHandler.aflush()  # the run's logs are sent in batches
        async with get_client() as client:
            (flow_run,) = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=flow_run_name))
            )
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))
            )
        return [(entry.level, entry.message) for entry in logs]

    return asyncio.run(read())


# Generous: the server persists events and evaluates triggers in batches, under load.
ARRIVAL_SECONDS = 60


def eventually(condition: Callable[[], Any], what: str, timeout: float = ARRIVAL_SECONDS) -> Any:
    """``wait_for`` what the server records: every 0.25 s, for up to ``ARRIVAL_SECONDS``."""
    return wait_for(condition, timeout, what, interval=0.25)
