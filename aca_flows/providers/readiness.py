"""Whether a provider can work here, checked without spending tokens.

``check_provider(name, config)`` answers for one provider, with what it found and, when the
provider cannot work, the fix. ``require_providers(names, config)`` raises one
``PermanentProviderError`` naming every provider of a run that cannot work (the CLI exits 2;
the flow ends Failed), before any task starts. The checks are free:

- ``anthropic``: ``ANTHROPIC_API_KEY`` set and accepted by ``GET /v1/models/{model}`` at the
  base URL, for each model the run uses with it, which the server knows (a typo in
  ``--model`` is named here, not by every task's failure);
- ``openai``: ``OPENAI_API_KEY`` set and accepted by ``GET /models/{model}`` at the base URL,
  likewise;
- ``ollama``: the server answers ``GET /api/tags`` and lists every model the run uses with
  it (the run's, and each task's own ``model=``);
- ``claude-code``: the ``claude`` binary is found, and either ``ANTHROPIC_API_KEY`` /
  ``ANTHROPIC_AUTH_TOKEN`` is set and accepted (checked like ``anthropic``, against
  ``ANTHROPIC_BASE_URL``), or ``claude auth status`` says it is logged in (a local check; a
  ``claude`` without that command is trusted when ``~/.claude/.credentials.json`` or
  ``CLAUDE_CODE_OAUTH_TOKEN`` is there). Bedrock and Vertex set-ups are not checked;
- ``replay``: the cassette file exists and reads as a cassette.

A server that answers the check with 404, 429 or 5xx is reachable: it counts as ready (the key
is then not verified; a 404 that is no "model not found" is a server without the model's page,
asked for its list instead), since the run's own calls will retry or report it. A rejected key or an
unreachable server is not ready. Ready results are cached in the process for ten minutes, so
the CLI and the flow it starts check once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from aca_flows.errors import PermanentProviderError
from aca_flows.settings import AcaConfig

__all__ = ["ProviderReadiness", "check_provider", "default_model", "require_providers"]

CHECK_TIMEOUT_SECONDS = 10.0
CHECK_RETRY_PAUSES = (0.5, 1.5)  # then a last try
AUTH_STATUS_TIMEOUT_SECONDS = 30.0
CACHE_SECONDS = 600.0
ANTHROPIC_URL = "https://api.anthropic.com"
OPENAI_URL = "https://api.openai.com/v1"
_CLOUD_SWITCHES = ("CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY")
# What a check depends on besides the configuration: a change of any of these checks again.
_ENV_INPUTS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OLLAMA_HOST",
    "ACA_CLAUDE_CLI",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "HOME",
    "PATH",
    *_CLOUD_SWITCHES,
)


@dataclass(frozen=True)
class ProviderReadiness:
    """One provider's answer: ``ready``, what was found (``detail``), the ``fix`` if not."""

    name: str
    ready: bool
    detail: str
    model: str
    fix: str = ""


_CACHE: dict[str, tuple[float, ProviderReadiness]] = {}


def default_model(provider: str) -> str | None:
    """The model a provider's calls use when neither a task, the run nor the config names
    one; ``None`` where the provider decides itself (claude-code) or has none (replay)."""
    if provider == "anthropic":
        from aca_flows.providers.anthropic_api import DEFAULT_MODEL
    elif provider == "openai":
        from aca_flows.providers.openai_api import DEFAULT_MODEL
    elif provider == "ollama":
        from aca_flows.providers.ollama_api import DEFAULT_MODEL
    else:
        return None
    return DEFAULT_MODEL


def check_provider(
    name: str,
    config: AcaConfig | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    use_cache: bool = True,
    models: Iterable[str | None] | None = None,
) -> ProviderReadiness:
    """Whether provider ``name`` can work with ``config`` and ``environ`` (default: the
    process environment). Makes at most one free network request or one local command.
    ``models``: those a run uses with it (a task's ``model=``, or ``None`` for the one the
    configuration gives, ``AcaConfig.model_for``); default: the provider's configured one.
    Only Ollama can tell which models it has: the other checks are of the key."""
    from aca_flows.providers import check_provider_name

    check_provider_name(name)
    config = config or AcaConfig()
    env = os.environ if environ is None else environ
    wanted = _wanted_models(name, config, models)
    key = _cache_key(name, config, env, wanted)
    cached = _CACHE.get(key)
    if use_cache and cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    result = _CHECKS[name](config, env, wanted)
    if result.ready:  # a failure is checked again next time: the user may have fixed it
        _CACHE[key] = (time.monotonic(), result)
    return result


def require_providers(
    names: Iterable[str],
    config: AcaConfig,
    environ: Mapping[str, str] | None = None,
    models: Mapping[str, Iterable[str | None]] | None = None,
    another: str | None = None,
) -> None:
    """Raise ``PermanentProviderError`` naming each provider of ``names`` that cannot work,
    with its fix; nothing has been spent or committed when it does. ``models``: those the run
    uses with each provider (``ExecutionPlan.models_by_provider``); default: the run's.
    ``another``: how the caller picks another provider, where it can (a resume cannot)."""
    checked = [
        check_provider(name, config, environ, models=(models or {}).get(name, {None}))
        for name in sorted(set(names))
    ]
    failing = [result for result in checked if not result.ready]
    if not failing:
        return
    lines = [f"the {r.name} provider cannot work: {r.detail}. To fix it, {r.fix}." for r in failing]
    raise PermanentProviderError(
        "\n".join(lines) + "\nNo task was started. `aca providers list` shows what each "
        f"provider has{f'; {another}' if another else ''}.",
        provider=failing[0].name,
    )


def _wanted_models(
    name: str, config: AcaConfig, models: Iterable[str | None] | None
) -> list[str | None]:
    """The models to check, as the run resolves them (``None``: the provider's default)."""
    if models is None:
        return [config.model_for(name)]
    return sorted({config.model_for(name, model) for model in models}, key=lambda m: m or "")


def _cache_key(
    name: str, config: AcaConfig, env: Mapping[str, str], models: list[str | None]
) -> str:
    # Hashed, so no key sits in the cache as text.
    inputs = {
        "name": name,
        "models": models,
        "provider": config.provider(name).model_dump(mode="json"),
        "claude_code": config.claude_code.model_dump(mode="json"),
        "sandbox_mode": config.sandbox.mode,
        "env": {k: env.get(k) for k in _ENV_INPUTS},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- the checks


def _check_anthropic(
    config: AcaConfig, env: Mapping[str, str], models: list[str | None]
) -> ProviderReadiness:
    section = config.provider("anthropic")
    wanted = [model or default_model("anthropic") for model in models]
    where = "https://console.anthropic.com/settings/keys"
    if problem := _key_problem("anthropic", wanted[0], env, "ANTHROPIC_API_KEY", where):
        return problem
    key = env["ANTHROPIC_API_KEY"]
    base = section.base_url or env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL
    base_name = _base_name("anthropic", section.base_url, "ANTHROPIC_BASE_URL")
    auth = {"x-api-key": key}
    return _first_not_ready(
        _probe_anthropic("anthropic", base, model, auth, "ANTHROPIC_API_KEY", base_name, True)
        for model in wanted
    )


def _first_not_ready(results: Iterable[ProviderReadiness]) -> ProviderReadiness:
    """The first result that is not ready (the later ones are not asked), else the first."""
    first = None
    for result in results:
        if not result.ready:
            return result
        first = first or result
    assert first is not None
    return first


def _probe_anthropic(
    name: str,
    base: str,
    model: str,
    auth: dict[str, str],
    key_name: str,
    base_name: str = "ANTHROPIC_BASE_URL",
    check_model: bool = False,
) -> ProviderReadiness:
    """``check_model``: ask for the model's own page, which also checks the key (Claude
    Code's model names, such as ``sonnet``, are its own, not the API's: not asked)."""
    headers = {"anthropic-version": "2023-06-01", **auth}
    url = f"{base.rstrip('/')}/v1/models"
    page = f"{url}/{quote(model, safe='')}" if check_model else None
    return _probe(name, f"{url}?limit=1", headers, model, key_name, base_name, page)


def _base_name(provider: str, configured: str | None, variable: str) -> str:
    """Where the base URL came from, as the user would fix it."""
    return f"[providers.{provider}] base_url" if configured else variable


def _key_problem(
    name: str, model: str, env: Mapping[str, str], variable: str, where: str
) -> ProviderReadiness | None:
    """Why the key in ``variable`` cannot work (not set, or blank), with where to get one."""
    if not env.get(variable):
        return ProviderReadiness(
            name, False, f"{variable} is not set", model, f"set {variable} ({where})"
        )
    return _blank_key(name, model, env, variable)


def _blank_key(
    name: str, model: str, env: Mapping[str, str], *variables: str
) -> ProviderReadiness | None:
    """A key of only spaces is set, so it would be sent: the check would read "cannot reach"
    offline and "rejected" online, neither naming the mistake. (An empty one is not set.)"""
    for variable in variables:
        value = env.get(variable)
        if value and not value.strip():
            return ProviderReadiness(
                name,
                False,
                f"{variable} is set but blank",
                model,
                f"set {variable} to the {'token' if 'TOKEN' in variable else 'key'} itself, "
                "or unset it",
            )
    return None


def _not_a_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme not in ("http", "https") or not parts.hostname
    except ValueError:  # "https://[x": a host that cannot be read
        return True


def _check_openai(
    config: AcaConfig, env: Mapping[str, str], models: list[str | None]
) -> ProviderReadiness:
    section = config.provider("openai")
    wanted = [model or default_model("openai") for model in models]
    where = (
        "https://platform.openai.com/api-keys; for a local OpenAI-compatible server set "
        "OPENAI_BASE_URL and any non-empty key"
    )
    if problem := _key_problem("openai", wanted[0], env, "OPENAI_API_KEY", where):
        return problem
    key = env["OPENAI_API_KEY"]
    base = section.base_url or env.get("OPENAI_BASE_URL") or OPENAI_URL
    url = f"{base.rstrip('/')}/models"
    headers = {"authorization": f"Bearer {key}"}
    base_name = _base_name("openai", section.base_url, "OPENAI_BASE_URL")
    return _first_not_ready(
        _probe("openai", url, headers, m, "OPENAI_API_KEY", base_name, f"{url}/{quote(m, safe='')}")
        for m in wanted
    )


def _probe(
    name: str,
    url: str,
    headers: dict[str, str],
    model: str,
    key_name: str,
    base_name: str,
    model_page: str | None = None,
) -> ProviderReadiness:
    """One free GET that needs the key: accepted, rejected, or the server out of reach. With
    ``model_page`` (``GET .../models/{model}``) that one, which also says whether the server
    knows the model; a server without such pages (a plain 404) is asked ``url``, its list."""
    import httpx

    if _not_a_url(url):  # it was "cannot reach ://None (UnsupportedProtocol)"
        return ProviderReadiness(
            name,
            False,
            f"{base_name} is not an http(s) URL",
            model,
            f"set {base_name} to the API's address (http://host:port or https://host), or "
            "leave it out for the default",
        )
    where = _host(url)
    try:
        reply = _get(model_page or url, headers)
        if model_page and reply.status_code == 404:
            if _model_not_found(reply, model):
                return ProviderReadiness(
                    name,
                    False,
                    f"{where} does not know the model '{model}' (404{_said(reply.text)})",
                    model,
                    f"name a model it has (--model, [providers.{name}] model, or the task's "
                    "model=)",
                )
            reply = _get(url, headers)
    except httpx.HTTPError as exc:
        return ProviderReadiness(
            name,
            False,
            f"cannot reach {where} ({type(exc).__name__})",
            model,
            f"check {base_name} and the network",
        )
    if reply.status_code in (401, 403):
        return ProviderReadiness(
            name,
            False,
            f"{where} rejected {key_name} ({reply.status_code}{_said(reply.text)})",
            model,
            f"set a valid {key_name}",
        )
    if reply.status_code < 400:
        return ProviderReadiness(name, True, f"{key_name} accepted by {where}", model)
    return ProviderReadiness(
        name,
        True,
        f"{where} answered the key check with {reply.status_code}; {key_name} is set but "
        "not verified",
        model,
    )


def _model_not_found(reply, model: str) -> bool:
    """Whether a 404 says the model is unknown, in OpenAI's words (``model_not_found``) or
    Anthropic's (``not_found_error``, "model: <id>"), not that the page is (a server or
    gateway without model pages)."""
    try:
        error = reply.json().get("error")
    except (ValueError, AttributeError):
        return False
    if not isinstance(error, dict):
        return False
    message = str(error.get("message") or "")
    if error.get("code") == "model_not_found":
        return True
    return error.get("type") == "not_found_error" and model in message and "/" not in message


def _get(url: str, headers: dict[str, str]):
    """A GET of a free, idempotent endpoint, tried again after a dropped connection: one
    blip must not fail an unattended run before it starts."""
    import httpx

    for pause in CHECK_RETRY_PAUSES:
        try:
            return httpx.get(url, headers=headers, timeout=CHECK_TIMEOUT_SECONDS)
        except httpx.TransportError:
            time.sleep(pause)
    return httpx.get(url, headers=headers, timeout=CHECK_TIMEOUT_SECONDS)


def _check_ollama(
    config: AcaConfig, env: Mapping[str, str], models: list[str | None]
) -> ProviderReadiness:
    import httpx

    from aca_flows.providers.ollama_api import host_of

    wanted = sorted({model or default_model("ollama") for model in models})
    model = ", ".join(wanted)
    host = host_of(config.provider("ollama"), env)
    try:
        reply = _get(f"{host}/api/tags", {})
        reply.raise_for_status()
        listed = reply.json().get("models") or []
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return ProviderReadiness(
            "ollama",
            False,
            f"the Ollama server at {host} does not answer ({type(exc).__name__})",
            model,
            "start Ollama there (`ollama serve`), or set OLLAMA_HOST to where it runs",
        )
    names = {str(m.get("name") or m.get("model")) for m in listed if isinstance(m, dict)}
    missing = [m for m in wanted if not names & ({m} if ":" in m else {m, f"{m}:latest"})]
    if missing:
        quoted = ", ".join(f"'{m}'" for m in missing)
        pulls = " and ".join(f"`ollama pull {m}`" for m in missing)
        return ProviderReadiness(
            "ollama",
            False,
            f"the Ollama server at {host} does not have the model{'s' * (len(missing) > 1)} "
            f"{quoted}",
            model,
            f"run {pulls} there, or name a model it has (--model, [providers.ollama] model, "
            f"or the task's model=; it has: {', '.join(sorted(names)) or 'no models'})",
        )
    return ProviderReadiness("ollama", True, f"server {host} has {model}", model)


def _check_claude_code(
    config: AcaConfig, env: Mapping[str, str], models: list[str | None]
) -> ProviderReadiness:
    from aca_flows.providers.claude_code import find_claude_cli
    from aca_flows.providers.claude_code_results import login_fix

    model = config.provider("claude-code").model or "Claude Code's default"
    cli, source = find_claude_cli(config.claude_code.cli_path, env)
    if cli is None or not cli.is_file() or not os.access(cli, os.X_OK):
        fix = (
            "install Claude Code, set ACA_CLAUDE_CLI to a claude binary, or unset it to use "
            "the one bundled with claude-agent-sdk"
        )
        if cli is None:
            found = source
        elif cli.is_dir():
            found = f"the claude binary {cli} ({source}) is a folder"
            fix = f"name the claude binary in it ({cli / 'claude'}?), not the folder"
        elif cli.is_file():
            found = f"the claude binary {cli} ({source}) is not executable"
            fix = f"make it executable (chmod +x {cli}), or name another claude binary"
        else:
            found = f"the claude binary {cli} ({source}) does not exist"
        return ProviderReadiness("claude-code", False, found, model, fix)
    binary = f"binary {cli} ({source})"
    if config.claude_code.permission_mode == "bypassPermissions" and config.sandbox.mode != "off":
        return ProviderReadiness(
            "claude-code",
            False,
            '[claude_code] permission_mode = "bypassPermissions" has no effect with the sandbox '
            "on: Claude Code keeps its default mode while it scrubs API keys from its commands' "
            "environment, so tools allowed_tools does not name would be refused mid-task",
            model,
            "name the tools the agent may use in [claude_code] allowed_tools and drop "
            'permission_mode, or set [sandbox] mode = "off" to run unsandboxed',
        )
    switch = next((s for s in _CLOUD_SWITCHES if env.get(s)), None)
    if switch:
        return ProviderReadiness(
            "claude-code", True, f"{binary}; {switch} set (cloud credentials not checked)", model
        )
    if blank := _blank_key("claude-code", model, env, "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        return blank
    key, token = env.get("ANTHROPIC_API_KEY"), env.get("ANTHROPIC_AUTH_TOKEN")
    if key or token:
        auth = {"x-api-key": key} if key else {"authorization": f"Bearer {token}"}
        key_name = "ANTHROPIC_API_KEY" if key else "ANTHROPIC_AUTH_TOKEN"
        base = env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL
        probed = _probe_anthropic("claude-code", base, model, auth, key_name)
        return ProviderReadiness(
            "claude-code", probed.ready, f"{binary}; {probed.detail}", model, probed.fix
        )
    logged_in, how = _claude_login(cli, env)
    if logged_in:
        return ProviderReadiness("claude-code", True, f"{binary}; {how}", model)
    return ProviderReadiness(
        "claude-code",
        False,
        f"{binary}; Claude Code is not logged in and neither ANTHROPIC_API_KEY nor "
        "ANTHROPIC_AUTH_TOKEN is set",
        model,
        # The bundled claude is on no PATH: the fix names it as it can be run.
        login_fix("claude" if shutil.which("claude") == str(cli) else shlex.quote(str(cli))),
    )


def _claude_login(cli: Path, env: Mapping[str, str]) -> tuple[bool, str]:
    """Whether Claude Code has a login, from ``claude auth status`` (local, no tokens)."""
    try:
        done = subprocess.run(
            [str(cli), "auth", "status", "--json"],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=AUTH_STATUS_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
        status = json.loads(done.stdout)
        if isinstance(status, dict) and "loggedIn" in status:
            method = status.get("authMethod") or "a login"
            return bool(status["loggedIn"]), f"logged in ({method})"
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    # An older claude without `auth status`: trust what a login leaves behind.
    credentials = Path(env.get("HOME", "~")).expanduser() / ".claude" / ".credentials.json"
    if env.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return True, "CLAUDE_CODE_OAUTH_TOKEN set (not verified)"
    if credentials.is_file():
        return True, f"login found in {credentials} (not verified)"
    return False, ""


def _check_replay(
    config: AcaConfig, env: Mapping[str, str], models: list[str | None]
) -> ProviderReadiness:
    from aca_flows._words import counted
    from aca_flows.providers.replay import cassette_problem

    cassette = config.provider("replay").cassette
    if not cassette:
        return ProviderReadiness(
            "replay",
            False,
            "no cassette configured",
            "as recorded",
            'set [providers.replay] cassette = "FILE" to a cassette recorded with --record FILE',
        )
    interactions, problem, fix = cassette_problem(Path(cassette))
    if problem:
        return ProviderReadiness("replay", False, problem, "as recorded", fix)
    return ProviderReadiness(
        "replay", True, f"cassette {cassette} ({counted(len(interactions), 'call')})", "as recorded"
    )


_CHECKS = {
    "anthropic": _check_anthropic,
    "openai": _check_openai,
    "ollama": _check_ollama,
    "claude-code": _check_claude_code,
    "replay": _check_replay,
}


def _host(url: str) -> str:
    """Scheme, host and port only: a URL may carry credentials, which are never shown."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _said(body: str) -> str:
    from aca_flows.providers.failures import server_message

    message = server_message(body)
    return f": {message}" if message else ""
