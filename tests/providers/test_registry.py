"""Building providers by name from config and the standard variables; cheap imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aca_flows.errors import ConfigError
from aca_flows.providers import Provider, get_provider
from aca_flows.providers.replay import RecordingProvider
from aca_flows.settings import AcaConfig, ClaudeCodeSection, ProviderSection


def test_every_api_provider_is_built_from_the_standard_variables(llm_server):
    for name in ("anthropic", "openai", "ollama", "claude-code"):
        provider = get_provider(name, AcaConfig())
        assert isinstance(provider, Provider)
        assert provider.name == name
    assert get_provider("anthropic").base_url == llm_server.url
    assert get_provider("openai").base_url == llm_server.url + "/v1"
    assert get_provider("ollama").host == llm_server.url


def test_config_sets_model_limits_and_claude_options():
    config = AcaConfig(
        claude_code=ClaudeCodeSection(max_turns=7, allowed_tools=["Read"]),
        providers={
            "anthropic": ProviderSection(model="claude-haiku-4-5", max_tokens=1000),
            "claude-code": ProviderSection(model="claude-opus-4-6"),
        },
    )
    anthropic = get_provider("anthropic", config)
    claude = get_provider("claude-code", config)
    assert (anthropic.model, anthropic.max_tokens) == ("claude-haiku-4-5", 1000)
    assert (claude.model, claude.max_turns, claude.allowed_tools) == (
        "claude-opus-4-6",
        7,
        ["Read"],
    )


def test_record_wraps_any_provider_without_changing_its_name(tmp_path):
    provider = get_provider("ollama", record=tmp_path / "c.json")
    assert isinstance(provider, RecordingProvider)
    assert provider.name == "ollama"


def test_an_unknown_provider_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="claude-code, anthropic, openai, ollama, replay"):
        get_provider("gemini")


def test_importing_providers_and_their_cli_loads_no_sdk_and_no_prefect():
    code = (
        "import sys, aca_flows.providers, aca_flows.cli.providers;"
        "from aca_flows.providers import anthropic_api, openai_api, ollama_api, claude_code,"
        " replay, ratelimit;"
        "heavy = [m for m in ('anthropic', 'openai', 'claude_agent_sdk', 'prefect', 'httpx')"
        " if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
