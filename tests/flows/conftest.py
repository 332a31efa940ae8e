"""One Prefect test server for every flow test of the session, and a git repo to work on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes.git_repo import make_repo
from tests.fakes.llm_server import FakeLLMServer


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
