"""The Aca Config block: settings and provider keys from the Prefect server, nothing on disk."""

from __future__ import annotations

import json
import os

import git
import pytest
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from aca_flows.flows import run_flow
from aca_flows.flows.blocks import AcaConfigBlock
from tests.fakes.coding_agent import coding_agent
from tests.fakes.llm_server import FakeLLMServer

# Not shaped like any known key: only the Secret block can supply it.
BLOCK_KEY = "blockvalue0123456789ABCDEFabcdef"


class TestAcaConfigBlockFollowsPrefectsConventions(BlockStandardTestSuite):
    @pytest.fixture
    def block(self):
        return AcaConfigBlock

    # Prefect's logo check downloads the image from the internet, which tests never reach,
    # and the block has no logo (the UI shows Prefect's default).
    test_has_a_valid_image = None


def test_a_block_with_invalid_settings_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="'session.max_concurrent_tasks'.*'bogus'"):
        AcaConfigBlock(settings={"session": {"max_concurrent_tasks": 0}, "bogus": 1})
    with pytest.raises(ValueError, match="named twice"):
        AcaConfigBlock(
            settings={"providers": {"anthropic": {"api_key_secret": "a"}}},
            api_key_secrets={"anthropic": "b"},
        )


def test_a_run_configured_only_by_blocks_completes(tmp_path, repo, monkeypatch):
    """The worker's side has no aca.toml, no key and no ACA_ variable: the Aca Config block
    names the provider, its server and the Secret block holding the key."""
    from prefect.blocks.system import Secret

    monkeypatch.chdir(tmp_path)
    assert not any(name.startswith(("ACA_", "ANTHROPIC_")) for name in os.environ)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n- write b.txt {#b depends_on=a}\n")
    with FakeLLMServer(api_key=BLOCK_KEY) as server:
        for _ in range(6):
            server.anthropic.enqueue(coding_agent)
        Secret(value=BLOCK_KEY).save("aca-blocks-test-key", overwrite=True)
        settings = f"""
            [session]
            provider = "anthropic"
            model = "claude-test"
            max_concurrent_tasks = 1

            [providers.anthropic]
            base_url = "{server.url}"
        """
        block = AcaConfigBlock.from_toml(
            "\n".join(line.strip() for line in settings.splitlines()),
            api_key_secrets={"anthropic": "aca-blocks-test-key"},
        )
        block.save("aca-blocks-test", overwrite=True)

        outcome = run_flow(task_file=str(tasks), workdir=str(repo), config_block="aca-blocks-test")

        assert outcome.summary and outcome.summary["status"] == "completed", outcome.error
        assert len(server.model_calls) == 4  # two turns per task, all with the block's key
    branch = outcome.summary["branch"]
    assert git.Repo(repo).git.show(f"{branch}:b.txt") == "b.txt"
    # The block's settings reached the session: its provider and model.
    meta = repo / ".aca" / "sessions" / outcome.summary["session_id"] / "meta"
    session = json.loads((meta / "session.json").read_text())
    assert (session["provider"], session["model"]) == ("anthropic", "claude-test")
    aca = "".join(p.read_text(errors="replace") for p in (repo / ".aca").rglob("*") if p.is_file())
    assert BLOCK_KEY not in aca


def test_a_missing_config_block_fails_the_run_naming_the_fix(tmp_path, repo):
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")

    outcome = run_flow(task_file=str(tasks), workdir=str(repo), config_block="no-such-config")

    assert outcome.state_name == "Failed" and outcome.summary is None
    message = str(outcome.error)
    assert "no Aca Config block" in message and "prefect block register -m aca_flows" in message
    assert not (repo / ".aca" / "sessions").exists()


def test_a_config_block_and_a_config_file_together_are_refused(tmp_path, repo):
    AcaConfigBlock(settings={}).save("aca-blocks-empty", overwrite=True)
    config = tmp_path / "aca.toml"
    config.write_text("[session]\nprovider = 'replay'\n")
    tasks = tmp_path / "tasks.md"
    tasks.write_text("- write a.txt {#a}\n")

    outcome = run_flow(
        task_file=str(tasks),
        workdir=str(repo),
        config_block="aca-blocks-empty",
        config_file=str(config),
    )

    assert outcome.state_name == "Failed"
    assert "not both" in str(outcome.error)


def test_prefect_block_register_finds_the_block_in_aca_flows(tmp_path):
    """The command the docs give, run as a user would, against the test server."""
    import asyncio
    import subprocess
    import sys
    from pathlib import Path

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    prefect = Path(sys.executable).parent / "prefect"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [str(prefect), "block", "register", "-m", "aca_flows"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully registered 1 block" in done.stdout
    assert "Aca Config" in done.stdout

    async def read():
        async with get_client() as client:
            return await client.read_block_type_by_slug("aca-config")

    block_type = asyncio.run(read())
    assert block_type.name == "Aca Config" and "aca.toml" in block_type.description
    assert 'AcaConfigBlock.load("BLOCK_NAME")' in block_type.code_example
