"""Providers: one module per LLM vendor behind the interface in ``base``.

Providers know nothing of tasks, sessions or Prefect.

Build a provider from configuration with ``get_provider(name, config)``; vendor modules and
SDKs are imported only when that provider is built, so importing this package is cheap.

    provider = get_provider("anthropic", config)                    # ANTHROPIC_API_KEY etc.
    provider = get_provider("claude-code", config, record=Path("run.cassette.json"))
    provider = get_provider("replay", config, cassette=Path("run.cassette.json"))
    limiter = rate_limiter_for("anthropic", config, state_file=account_state_file("anthropic"))
    provider = RateLimitedProvider(provider, limiter)
    provider = RetryingProvider(provider, retries=4)   # a transient error is retried on the call
    response = await provider.complete(ProviderRequest(...), on_event=log_event)

``check_provider(name, config)`` says, without spending tokens, whether a provider can work
here (key accepted, server reachable, ``claude`` found and logged in) and the fix if not;
``require_providers(names, config)`` raises for a run that would fail (see ``readiness``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aca_flows.errors import ConfigError
from aca_flows.providers.base import Provider
from aca_flows.providers.ratelimit import NoticeCallback, RateLimitedProvider, RateLimiter
from aca_flows.providers.readiness import ProviderReadiness, check_provider, require_providers
from aca_flows.providers.retry import RetryingProvider
from aca_flows.settings import AcaConfig

__all__ = [
    "PROVIDER_NAMES",
    "ProviderReadiness",
    "RateLimitedProvider",
    "RetryingProvider",
    "check_provider",
    "check_provider_name",
    "get_provider",
    "rate_limiter_for",
    "require_providers",
]

PROVIDER_NAMES: tuple[str, ...] = ("claude-code", "anthropic", "openai", "ollama", "replay")


def check_provider_name(name: str) -> None:
    """Raise ``ConfigError`` naming the known providers if ``name`` is not one of them."""
    if name not in PROVIDER_NAMES:
        raise ConfigError(
            f"unknown provider '{name}'; choose one of {', '.join(PROVIDER_NAMES)} "
            "(--provider, [session] provider, or a task's provider)."
        )


def get_provider(
    name: str,
    config: AcaConfig | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    record: Path | None = None,
    cassette: Path | None = None,
    scrub: Callable[[Any], Any] | None = None,
) -> Provider:
    """The provider ``name`` configured from ``config`` and the standard variables.

    ``record``: also write every call into this cassette file (``--record FILE``).
    ``cassette``: for ``replay``, the file to play (else ``[providers.replay] cassette``).
    ``scrub``: what cassettes pass through, written or compared (the session's redactor).
    Building never touches the network; a missing key is reported by the first call.
    """
    check_provider_name(name)
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
        provider = ReplayProvider(chosen, scrub)
    if record is not None:
        from aca_flows.providers.replay import RecordingProvider

        provider = RecordingProvider(provider, record, scrub)
    return provider


def rate_limiter_for(
    name: str,
    config: AcaConfig | None = None,
    *,
    state_file: Path | None = None,
    local_rates: bool = True,
    on_notice: NoticeCallback | None = None,
    stopping: Callable[[], bool] | None = None,
) -> RateLimiter:
    """The rate limiter for provider ``name``, with its limits (``AcaConfig.rate_limits``);
    state restored from ``state_file`` when it exists, and saved there after every call.
    ``local_rates=False``: rates and calls in flight are held by shared limits, this limiter
    keeps the pauses and the 5-hour blocks. Long waits are told to ``on_notice``. A server's
    pause is held at most ``[session] call_retry_max_wait_seconds``, as a call's retry is."""
    check_provider_name(name)
    config = config or AcaConfig()
    return RateLimiter(
        config.rate_limits(name),
        state_file=state_file,
        state_key=name,
        local_rates=local_rates,
        on_notice=on_notice,
        max_pause_seconds=config.session.call_retry_max_wait_seconds,
        stopping=stopping,
    )
