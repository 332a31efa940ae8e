"""Providers: one module per LLM vendor behind the interface in ``base``.

Providers know nothing of tasks, sessions or Prefect.

Build a provider from configuration with ``get_provider(name, config)``; vendor modules and
SDKs are imported only when that provider is built, so importing this package is cheap.

    provider = get_provider("anthropic", config)                    # ANTHROPIC_API_KEY etc.
    provider = get_provider("claude-code", config, record=Path("run.cassette.json"))
    provider = get_provider("replay", config, cassette=Path("run.cassette.json"))
    limiter = rate_limiter_for("anthropic", config, state_file=paths.rate_limit_state_json)
    provider = RateLimitedProvider(provider, limiter)
    response = await provider.complete(ProviderRequest(...), on_event=log_event)

``provider_status(name, config)`` says, without any network call, whether a provider's
credentials or binary are present and which model it will use (for ``aca providers list``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aca_flows.errors import ConfigError
from aca_flows.providers.base import Provider
from aca_flows.providers.ratelimit import RateLimitedProvider, RateLimiter
from aca_flows.settings import AcaConfig

__all__ = [
    "DEFAULT_PROVIDER",
    "PROVIDER_NAMES",
    "ProviderStatus",
    "RateLimitedProvider",
    "get_provider",
    "provider_status",
    "rate_limiter_for",
]

DEFAULT_PROVIDER = "claude-code"
PROVIDER_NAMES: tuple[str, ...] = ("claude-code", "anthropic", "openai", "ollama", "replay")


def _check_name(name: str) -> None:
    if name not in PROVIDER_NAMES:
        raise ConfigError(
            f"unknown provider '{name}'; choose one of {', '.join(PROVIDER_NAMES)} "
            "(--provider or [session] provider)."
        )


def get_provider(
    name: str,
    config: AcaConfig | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    record: Path | None = None,
    cassette: Path | None = None,
) -> Provider:
    """The provider ``name`` configured from ``config`` and the standard variables.

    ``record``: also write every call into this cassette file (``--record FILE``).
    ``cassette``: for ``replay``, the file to play (else ``[providers.replay] cassette``).
    Building never touches the network; a missing key is reported by the first call.
    """
    _check_name(name)
    config = config or AcaConfig()
    section = config.provider(name)
    provider: Provider
    if name == "anthropic":
        from aca_flows.providers.anthropic_api import AnthropicProvider

        provider = AnthropicProvider.from_config(section, environ)
    elif name == "openai":
        from aca_flows.providers.openai_api import OpenAIProvider

        provider = OpenAIProvider.from_config(section, environ)
    elif name == "ollama":
        from aca_flows.providers.ollama_api import OllamaProvider

        provider = OllamaProvider.from_config(section, environ)
    elif name == "claude-code":
        from aca_flows.providers.claude_code import ClaudeCodeProvider

        provider = ClaudeCodeProvider.from_config(
            config.claude_code, section, environ, config.sandbox, config.agent.deny_commands
        )
    else:
        from aca_flows.providers.replay import ReplayProvider

        chosen = cassette or (Path(section.cassette) if section.cassette else None)
        if chosen is None:
            raise ConfigError(
                "the replay provider needs a cassette: set [providers.replay] cassette = "
                '"FILE" (recorded earlier with --record FILE).'
            )
        provider = ReplayProvider(chosen)
    if record is not None:
        from aca_flows.providers.replay import RecordingProvider

        provider = RecordingProvider(provider, record)
    return provider


def rate_limiter_for(
    name: str, config: AcaConfig | None = None, *, state_file: Path | None = None
) -> RateLimiter:
    """The rate limiter for provider ``name``: ``[providers.<name>.rate_limiting]`` if set,
    else ``[rate_limiting]``; state restored from ``state_file`` when it exists, and saved
    there after every call."""
    _check_name(name)
    config = config or AcaConfig()
    limits = config.provider(name).rate_limiting or config.rate_limiting
    return RateLimiter(limits, state_file=state_file, state_key=name)


@dataclass(frozen=True)
class ProviderStatus:
    """What ``aca providers list`` shows for one provider."""

    name: str
    ready: bool
    detail: str
    model: str


def provider_status(
    name: str, config: AcaConfig | None = None, environ: Mapping[str, str] | None = None
) -> ProviderStatus:
    """Whether ``name`` has what it needs (key, binary, cassette), without importing SDKs."""
    _check_name(name)
    config = config or AcaConfig()
    env = os.environ if environ is None else environ
    section = config.provider(name)
    # These modules import their SDKs lazily, so importing them here stays cheap.
    from aca_flows.providers import anthropic_api, openai_api

    if name == "anthropic":
        ready = bool(env.get("ANTHROPIC_API_KEY"))
        where = section.base_url or env.get("ANTHROPIC_BASE_URL") or "api.anthropic.com"
        detail = f"ANTHROPIC_API_KEY {'set' if ready else 'missing'}; endpoint {where}"
        model = section.model or anthropic_api.DEFAULT_MODEL
    elif name == "openai":
        ready = bool(env.get("OPENAI_API_KEY"))
        where = section.base_url or env.get("OPENAI_BASE_URL") or "api.openai.com"
        detail = f"OPENAI_API_KEY {'set' if ready else 'missing'}; endpoint {where}"
        model = section.model or openai_api.DEFAULT_MODEL
    elif name == "ollama":
        from aca_flows.providers.ollama_api import DEFAULT_MODEL, normalize_host

        ready = True
        detail = (
            f"no key needed; server {normalize_host(section.base_url or env.get('OLLAMA_HOST'))}"
        )
        model = section.model or DEFAULT_MODEL
    elif name == "claude-code":
        from aca_flows.providers.claude_code import find_claude_cli

        cli, source = find_claude_cli(config.claude_code.cli_path, env)
        ready = cli is not None and cli.is_file()
        if cli is not None and not ready:
            source += ", missing"
        credentials = Path(env.get("HOME", "~")).expanduser() / ".claude" / ".credentials.json"
        logged_in = credentials.is_file() or bool(env.get("CLAUDE_CODE_OAUTH_TOKEN"))
        auth = (
            "ANTHROPIC_API_KEY set"
            if env.get("ANTHROPIC_API_KEY")
            else ("claude login found" if logged_in else "no ANTHROPIC_API_KEY and no claude login")
        )
        detail = f"binary {cli} ({source}); {auth}" if cli else f"{source}; {auth}"
        model = section.model or "Claude Code's default"
    else:
        cassette = section.cassette
        ready = bool(cassette) and Path(cassette).is_file()
        detail = f"cassette {cassette}" if cassette else "no cassette configured"
        if cassette and not ready:
            detail += " (missing)"
        model = "as recorded"
    return ProviderStatus(name=name, ready=ready, detail=detail, model=model)
