"""The settings: one model (``AcaConfig``), a section per table of the config file, each key
with its default. ``config_loader.load_config`` reads them from a file, the environment and
the command line, and says where each value came from.
Secrets never live here: provider keys are read from their standard environment variables, or
from a Prefect Secret block this file names (``[providers.<name>] api_key_secret``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aca_flows.prices import ModelPrice, with_cache_prices
from aca_flows.session.secret_names import PROVIDER_KEY_VARIABLES

__all__ = ["AcaConfig", "ModelPrice"]

# The longest wait a setting may ask for: it becomes a date, and "1e12 s" was none.
YEAR_SECONDS = 366 * 86_400


class Section(BaseModel):
    # inf passed validation and the dry run, then ended the run in a traceback.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SessionSection(Section):
    provider: str = "claude-code"
    model: str | None = Field(default=None, min_length=1)
    max_concurrent_tasks: int = Field(default=3, ge=1, le=64)
    budget_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_attempts: int = Field(
        default=3, ge=1, le=20, description="Attempts of a whole task, each from a clean worktree."
    )
    retry_backoff_seconds: float = Field(
        default=10, ge=0, description="First delay before a task's next attempt."
    )
    call_retries: int = Field(
        default=4, ge=0, le=20, description="Retries of one provider call on a transient error."
    )
    call_retry_backoff_seconds: float = Field(
        default=2, ge=0, description="First (jittered) wait before retrying a call."
    )
    call_retry_max_wait_seconds: float = Field(
        default=120,
        ge=0,
        description="Longest wait before retrying a call (retry-after too), and longest "
        "a server's pause holds the provider's other calls.",
    )
    checkpoint_interval_minutes: float = Field(default=30, gt=0, le=YEAR_SECONDS / 60)
    checkpoint_every_tasks: int = Field(default=5, ge=1)
    interrupt_grace_seconds: float = Field(default=30, ge=0)


class AgentSection(Section):
    max_turns: int = Field(default=50, ge=1)
    max_fix_attempts: int = Field(default=2, ge=0)
    command_timeout_seconds: float = Field(default=600, gt=0)
    command_output_limit_bytes: int = Field(default=50_000, ge=1_000)
    deny_commands: list[str] = Field(
        default_factory=lambda: [
            "git push",
            "sudo",
            "curl",
            "wget",
            "ssh",
            "scp",
            "nc",
            "rm -rf /",
        ]
    )


class ClaudeCodeSection(Section):
    cli_path: str | None = None
    permission_mode: Literal["default", "acceptEdits", "bypassPermissions"] = "acceptEdits"
    # At least one: an empty list would leave Claude Code's defaults in force, not no tools.
    allowed_tools: list[str] = Field(
        default_factory=lambda: ["Read", "Write", "Edit", "Glob", "Grep", "Bash"], min_length=1
    )
    max_turns: int = Field(default=50, ge=1)
    max_budget_usd_per_task: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class RateLimitingSection(Section):
    max_requests_per_minute: int = Field(default=50, ge=1)
    max_tokens_per_minute: int = Field(default=40_000, ge=1)
    burst_allowance: int = Field(default=5, ge=0)
    max_concurrent_requests: int = Field(default=4, ge=1)
    max_tokens_per_session: int | None = Field(
        default=None, ge=1, description="Token budget per 5-hour usage block."
    )
    on_session_limit: Literal["wait", "stop"] = "wait"
    prefect_limits: Literal["auto", "require", "off"] = Field(
        default="auto",
        description="auto: hold calls to the aca-<provider>-* global concurrency limits of the "
        "run's Prefect server when they exist (`aca limits sync`); require: fail a run whose "
        "server lacks them; off: this process's limiter only.",
    )


# Where a provider's published limits differ from the [rate_limiting] defaults (Anthropic's
# Tier 1, which claude-code and anthropic share): OpenAI's Tier 1 for its GPT-4o-class models
# (https://platform.openai.com/docs/guides/rate-limits); ollama is a local server with no
# published limits, so only its calls in flight are held. A key set in [rate_limiting] wins.
PUBLISHED_RATE_LIMITS: dict[str, dict[str, int]] = {
    "openai": {"max_requests_per_minute": 500, "max_tokens_per_minute": 30_000},
    "ollama": {"max_requests_per_minute": 100_000, "max_tokens_per_minute": 100_000_000},
}

# The credentials aca itself uses never enter a sandbox, even when listed in [sandbox] env:
# the providers' keys, Claude Code's login and Bedrock token, the GitHub token of --open-pr
# and the Prefect server's key (whose API runs flows as the user).
SANDBOX_FORBIDDEN_ENV = frozenset(PROVIDER_KEY_VARIABLES) | {
    "AWS_BEARER_TOKEN_BEDROCK",
    "PREFECT_API_AUTH_STRING",
}


class SandboxSection(Section):
    """Where agent and verify commands run (docs/security.md)."""

    mode: Literal["bwrap", "off"] = Field(
        default="bwrap", description='"off" runs commands unsandboxed (warned on every run).'
    )
    network: bool = Field(default=False, description="Let sandboxed commands use the network.")
    env: list[str] = Field(
        default_factory=list,
        description="Names of variables passed into the sandbox besides PATH, LANG and TERM.",
    )
    read_only_paths: list[str] = Field(
        default_factory=list,
        description="Paths shown read-only inside the sandbox (a toolchain in a home, a "
        "virtualenv in the checkout).",
    )
    cpu_seconds: int = Field(default=600, ge=1, description="CPU time per process.")
    memory_mb: int = Field(default=8192, ge=64, description="Address space per process.")
    file_size_mb: int = Field(default=1024, ge=1, description="Largest file a command writes.")
    tmp_size_mb: int = Field(
        default=2048,
        ge=16,
        description="Most a command's own /tmp (and /var/tmp, /dev/shm) holds: in memory.",
    )
    max_processes: int = Field(default=512, ge=8, description="Processes and threads.")

    @field_validator("env")
    @classmethod
    def _no_provider_keys(cls, names: list[str]) -> list[str]:
        forbidden = sorted(set(names) & SANDBOX_FORBIDDEN_ENV)
        if forbidden:
            raise ValueError(
                f"{', '.join(forbidden)} may not be passed into the sandbox: agent commands "
                "never see aca's own credentials. Remove them from [sandbox] env; a command "
                "that needs a credential gets one of its own, under another name, with only "
                "the rights it needs"
            )
        return names


class LoggingSection(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_tool_calls: bool = True


class DeploymentsSection(Section):
    allowed_workdirs: list[str] = Field(
        default_factory=list,
        description="Folders deployment runs may work in (read from the worker's environment "
        "or ~/.aca/config.toml only); a deployment run elsewhere is refused.",
    )
    allowed_repos: list[str] = Field(
        default_factory=list,
        description="Repository URL prefixes deployment runs given repo may clone and push to "
        "(read like allowed_workdirs); another repository is refused.",
    )


class ApprovalSection(Section):
    timeout_seconds: float = Field(
        default=86_400,
        gt=0,
        le=YEAR_SECONDS,
        description="How long a run waits for approval of its plan (at most a year).",
    )
    on_timeout: Literal["reject", "approve"] = Field(
        default="reject", description="The decision taken when nobody answered in time."
    )
    on_failure: Literal["fail", "ask"] = Field(
        default="fail",
        description="ask: a task that fails verification waits for retry-with-hint/skip/fail.",
    )


class GitHubSection(Section):
    token_secret: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the GitHub token for --open-pr "
        "(default: the GITHUB_TOKEN variable).",
    )
    base_branch: str | None = Field(
        default=None,
        description="The branch pull requests merge into (default: the repository's default).",
    )


class ProviderSection(Section):
    model: str | None = Field(default=None, min_length=1)
    base_url: str | None = None
    timeout_seconds: float = Field(default=600, gt=0)
    max_tokens: int = Field(default=8192, ge=1)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    concurrency_limit: str | None = Field(
        default=None, description="Name of a Prefect global concurrency limit held per call."
    )
    rate_limiting: RateLimitingSection | None = None
    cassette: str | None = Field(
        default=None, description="replay provider only: the cassette file to play back."
    )
    api_key_secret: str | None = Field(
        default=None,
        description="anthropic and openai: name of a Prefect Secret block holding the key, "
        "read when a run starts (instead of the key variable).",
    )

    @field_validator("prices")
    @classmethod
    def _cache_prices_given(cls, prices: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        return {model: with_cache_prices(model, price) for model, price in prices.items()}


class AcaConfig(Section):
    session: SessionSection = Field(default_factory=SessionSection)
    agent: AgentSection = Field(default_factory=AgentSection)
    claude_code: ClaudeCodeSection = Field(default_factory=ClaudeCodeSection)
    rate_limiting: RateLimitingSection = Field(default_factory=RateLimitingSection)
    sandbox: SandboxSection = Field(default_factory=SandboxSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    deployments: DeploymentsSection = Field(default_factory=DeploymentsSection)
    approval: ApprovalSection = Field(default_factory=ApprovalSection)
    github: GitHubSection = Field(default_factory=GitHubSection)
    providers: dict[str, ProviderSection] = Field(default_factory=dict)

    def provider(self, name: str) -> ProviderSection:
        return self.providers.get(name) or ProviderSection()

    def model_for(self, provider: str, task_model: str | None = None) -> str | None:
        """The model a task of ``provider`` runs with: its own (``model=``), else the run's
        (``--model``, ``[session] model``) when the task runs on the run's provider, else the
        provider's ``[providers.<name>] model``; ``None`` leaves it to the provider's default.
        The run's model is one of its provider's: a task on another provider never gets it."""
        if task_model:
            return task_model
        if provider == self.session.provider and self.session.model:
            return self.session.model
        return self.provider(provider).model

    def rate_limits(self, name: str) -> RateLimitingSection:
        """Provider ``name``'s limits: the keys set in ``[providers.<name>.rate_limiting]`` if
        it is there, else in ``[rate_limiting]``, over the provider's published limits
        (``PUBLISHED_RATE_LIMITS``), over the defaults."""
        section = self.provider(name).rate_limiting or self.rate_limiting
        chosen = section.model_dump(include=section.model_fields_set)
        return RateLimitingSection(**{**PUBLISHED_RATE_LIMITS.get(name, {}), **chosen})
