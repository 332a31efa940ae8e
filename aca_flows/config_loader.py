"""Configuration: the settings (``settings.AcaConfig``) read from a TOML file and
``ACA_<SECTION>__<KEY>`` variables.

Precedence, lowest first: built-in defaults, the config file, environment variables, command
line flags. The file is ``--config FILE`` if given, else the first that exists of
``<workdir>/aca.toml``, ``<workdir>/.aca/config.toml`` and ``~/.aca/config.toml``; in a
checkout aca cloned for ``--repo``, ``~/.aca/config.toml`` is read under the clone's own file,
which may not weaken it or the sandbox (``cloned_config.py``).
Every effective value remembers where it came from, for ``aca config show``.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from aca_flows.cloned_config import drop_weakening_keys, in_cloned_working_area
from aca_flows.errors import ConfigError
from aca_flows.settings import AcaConfig, ProviderSection

__all__ = [
    "LoadedConfig",
    "config_candidates",
    "load_config",
    "run_overrides",
    "source_of",
]

ENV_PREFIX = "ACA_"
ENV_NESTING = "__"


class LoadedConfig(BaseModel):
    config: AcaConfig
    file: Path | None
    sources: dict[str, str] = Field(
        default_factory=dict, description="dotted key -> where its value came from"
    )
    ignored: list[str] = Field(
        default_factory=list,
        description="Settings left out, each with why and how to set them: a cloned "
        "repository's that would weaken the user's (cloned_config.py), and [deployments] "
        "anywhere but the user's own file. To be shown to the user.",
    )


def config_candidates(workdir: Path) -> list[Path]:
    return [workdir / "aca.toml", workdir / ".aca" / "config.toml", users_config_file()]


def users_config_file() -> Path:
    """``~/.aca/config.toml``: the user's own settings, and the only file a worker's
    ``[deployments]`` allow-lists are read from."""
    return Path.home() / ".aca" / "config.toml"


# The settings a run's own options override: setting key -> the option's attribute.
_RUN_OVERRIDES = {
    "session.provider": "provider",
    "session.model": "model",
    "session.max_concurrent_tasks": "max_concurrent",
    "session.budget_usd": "budget_usd",
}


def run_overrides(run: Any) -> dict[str, Any]:
    """``load_config``'s ``overrides`` from a run's options (``aca run``'s ``RunOptions`` or
    the flow's ``RunRequest``); ``None`` is an option not given."""
    return {key: getattr(run, attribute) for key, attribute in _RUN_OVERRIDES.items()}


def load_config(
    workdir: Path,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    block: tuple[str, dict[str, Any]] | None = None,
) -> LoadedConfig:
    """Read the effective configuration. ``overrides`` maps dotted keys to CLI flag values.

    ``block``: ``(name, settings)`` of a Prefect block (flows/blocks.py), read in place of
    any config file; its relative paths stay relative to the run's current folder.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    loose: dict[str, str] = {}  # values of the wrong type, by key
    if block is not None:
        if config_file is not None:
            raise ConfigError(
                f"give a config file or a config block ({block[0]!r}), not both: the block "
                "takes the place of the file."
            )
        file = None
        settings = dict(block[1])
        ignored = _drop_worker_settings(settings, f"block {block[0]}")
        loose |= _loose_types(settings, f"block {block[0]}")
        _merge(data, settings, sources, f"block {block[0]}", relative_paths=False)
    else:
        file = _pick_file(workdir, config_file)
        ignored = []
    if file is not None:
        file_data = _read_toml(file)
        if isinstance(file_data.get("tasks"), list):
            raise ConfigError(_task_file_as_config(file, given=file == config_file))
        if file.resolve() != users_config_file().resolve():
            ignored += _drop_worker_settings(file_data, str(file))
        if in_cloned_working_area(file):
            # The user's own file under the clone's: a repository that brings an aca.toml
            # would otherwise drop the user's budget and limits, and may only tighten them.
            users = _users_own_settings(data, sources)
            ignored += drop_weakening_keys(file_data, file, users)
        loose |= _loose_types(file_data, str(file))
        _merge(data, file_data, sources, str(file))
    env_data = _env_overrides(environ)
    for key, value in env_data.items():
        _set_dotted(data, key, value)
        sources[key] = f"env {ENV_PREFIX}{key.upper().replace('.', ENV_NESTING)}"
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
            sources[key] = "command line"
    try:
        config = AcaConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file, sources, loose)) from None
    if loose:
        raise ConfigError(_describe(None, file, sources, loose))
    return LoadedConfig(config=config, file=file, sources=sources, ignored=ignored)


def _drop_worker_settings(data: dict[str, Any], origin: str) -> list[str]:
    """Take ``[deployments]`` out of ``data`` (a project's file, a --config file, a block):
    a worker's allow-lists are its own, and a list here would be shown as in effect."""
    table = data.pop("deployments", None)
    if not isinstance(table, dict):
        return [] if table is None else [f"{origin}: [deployments] is not read from here."]
    return [
        f"{origin}: [deployments] {key} = {json.dumps(value)} is not read from here: a worker "
        f"reads it only from its own {users_config_file()} or "
        f"{ENV_PREFIX}DEPLOYMENTS{ENV_NESTING}{key.upper()} (docs/deployments.md)."
        for key, value in table.items()
    ]


def _users_own_settings(data: dict[str, Any], sources: dict[str, str]) -> AcaConfig:
    """Merge ``~/.aca/config.toml`` (when there is one) into ``data``; return the settings it
    makes: what a cloned repository's config is judged against."""
    file = users_config_file()
    if not file.is_file():
        return AcaConfig()
    users: dict[str, Any] = {}
    values = _read_toml(file)
    _merge(users, values, {}, str(file))
    loose = _loose_types(values, str(file))
    try:
        config = AcaConfig.model_validate(users)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file, {}, loose)) from None
    if loose:
        raise ConfigError(_describe(None, file, {}, loose))
    _merge(data, users, sources, str(file), relative_paths=False)
    return config


def _pick_file(workdir: Path, config_file: Path | None) -> Path | None:
    if config_file is not None:
        if config_file.is_dir():
            raise ConfigError(
                f"config file {config_file} is a folder, not a file; give the path of the "
                "config file itself to --config."
            )
        if config_file.exists() and not config_file.is_file():  # /dev/null, a pipe
            raise ConfigError(
                f"config file {config_file} is not a file; give --config the path of a TOML "
                "file (an empty one for no settings)."
            )
        if not config_file.is_file():
            raise ConfigError(
                f"config file {config_file} does not exist; check the path given to --config."
            )
        if config_file.suffix.lower() in (".md", ".markdown"):
            raise ConfigError(_task_file_as_config(config_file))
        if config_file.suffix.lower() == ".json":  # as TOML it was "invalid TOML" at line 1
            raise ConfigError(
                f"{config_file} is JSON, not a configuration: an execution plan (a dumped plan) "
                f"runs with `--execution-plan {config_file}`; --config takes a TOML file of "
                "settings (aca.toml, docs/configuration.md)."
            )
        return config_file
    return next((p for p in config_candidates(workdir) if p.is_file()), None)


def _task_file_as_config(file: Path, given: bool = True) -> str:
    # Its Markdown read as TOML said "invalid TOML", its tasks "unknown key 'tasks'".
    if not given:  # found where aca looks for its configuration: "remove these keys" misled
        return (
            f"{file} is read as aca's configuration, but it is a task file: rename it (e.g. "
            f"tasks.toml) and run that; aca.toml holds settings (docs/configuration.md)."
        )
    return (
        f"{file} is a task file, not a configuration: give it as the task file (`aca run "
        f"{file}`); --config takes a TOML file of settings (aca.toml, docs/configuration.md)."
    )


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        # utf-8-sig: the byte-order mark Windows editors write was "invalid statement".
        return tomllib.loads(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text; save the config file as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}. Fix the syntax there.") from None
    except OSError as exc:  # no read permission (chmod 000, another user's file)
        raise ConfigError(
            f"config file {file} cannot be read ({exc.strerror}); check its permissions."
        ) from None


def _merge(
    into: dict,
    data: dict,
    sources: dict[str, str],
    origin: str,
    prefix: str = "",
    relative_paths: bool = True,
) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not _is_leaf_table(dotted):
            _merge(into.setdefault(key, {}), value, sources, origin, dotted + ".", relative_paths)
        else:
            into[key] = _relative_to_file(key, value, origin) if relative_paths else value
            sources[dotted] = origin


# Keys that name files: relative paths in a config file are relative to that file.
PATH_KEYS = frozenset({"cassette", "cli_path"})


def _relative_to_file(key: str, value: Any, origin: str) -> Any:
    if key in PATH_KEYS and isinstance(value, str) and value and not Path(value).is_absolute():
        candidate = Path(origin).parent / value
        if "/" in value or candidate.exists():
            return str(candidate.resolve())
    return value


def _is_leaf_table(dotted: str) -> bool:
    # A model's price table is one value, not a section to merge key by key.
    parts = dotted.split(".")
    return len(parts) == 4 and parts[0] == "providers" and parts[2] == "prices"


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``ACA_SESSION__MAX_CONCURRENT_TASKS=5`` -> ``{"session.max_concurrent_tasks": "5"}``.

    Only variables with the nesting separator are config; ``ACA_CLAUDE_CLI`` and friends are not.
    List values are comma-separated.
    """
    found: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and ENV_NESTING not in name:
            _refuse_a_setting_with_one_underscore(name)
        if not name.startswith(ENV_PREFIX) or ENV_NESTING not in name:
            continue
        dotted = name[len(ENV_PREFIX) :].lower().replace(ENV_NESTING, ".")
        found[dotted] = _env_value(dotted, value)
    return found


def _refuse_a_setting_with_one_underscore(name: str) -> None:
    """``ACA_SESSION_BUDGET_USD`` (one underscore where two go) was read as no setting at
    all: the nightly run had no budget, and nothing said so."""
    rest = name[len(ENV_PREFIX) :].lower()
    for at in (i for i, c in enumerate(rest) if c == "_"):  # sections hold "_" too
        section, key = rest[:at], rest[at + 1 :]
        if _field_for(f"{section}.{key}") is not None:
            meant = f"{ENV_PREFIX}{section.upper()}{ENV_NESTING}{key.upper()}"
            raise ConfigError(
                f"{name} is no setting: a section and its key are joined by two underscores "
                f"({meant})."
            )


def _env_value(dotted: str, value: str) -> Any:
    field = _field_for(dotted)
    if field is not None and "list" in str(field.annotation):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _field_for(dotted: str):
    model: type[BaseModel] = AcaConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        if i == len(parts) - 1:
            return field
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return None


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


# Keys that older versions of this documentation listed but that never did anything.
REMOVED_KEYS = {
    "docker": "aca never ran tasks in Docker; delete the [docker] section",
    # The original aca's default-config.toml (docs/configuration.md, "The original aca's
    # configuration"): each section named with where its settings went.
    "workspace_path": "the original aca's workspace; aca works on the repository given with "
    "--workdir (default: the current directory)",
    "task_config": "the original aca's section; its max_concurrent_tasks is now [session] "
    "max_concurrent_tasks, its max_retry_attempts [session] max_attempts (attempts in all, the "
    "first included; auto_retry_failed_tasks = false is max_attempts = 1), its "
    "retry_delay_minutes [session] retry_backoff_seconds; auto_cleanup_completed, "
    "cleanup_after_hours and enable_task_metrics have no setting (aca keeps every session and "
    "always counts)",
    "session_config": "the original aca's section; its auto_checkpoint_interval_minutes is now "
    "[session] checkpoint_interval_minutes, checkpoint_on_significant_progress and "
    "significant_progress_threshold [session] checkpoint_every_tasks (finished tasks); "
    "auto_save_interval_minutes, enable_crash_recovery and validate_on_save have no setting "
    "(aca journals every event and always recovers), nor have max_session_duration_hours and "
    "compress_checkpoints",
    "claude_config": "the original aca's section; its rate_limits are now [rate_limiting] "
    "(max_tokens_per_minute, max_requests_per_minute) but not its burst_allowance: aca's "
    "counts extra requests (default 5), so do not copy the original's 5000; "
    "error_config.max_retries is [session] call_retries, rate_limits.max_backoff_delay "
    "[session] call_retry_max_wait_seconds, session_config.max_concurrent_sessions "
    "[rate_limiting] max_concurrent_requests, session_config.auto_checkpoint_interval "
    "[session] checkpoint_interval_minutes; track_tokens, track_costs and track_performance "
    "are always on; session_timeout, context_window_size, compression_threshold, "
    "max_history_length, relevance_threshold, history_retention, backoff_multiplier, "
    "circuit_breaker_threshold, circuit_breaker_timeout and enable_fallback_models have no "
    "setting",
    "setup_commands": "setup commands belong to a TOML task file's [[setup_commands]] "
    "(timeout is timeout_seconds there, and args are written into command)",
}


def _did_you_mean(key: str) -> str | None:
    """The valid key closest to a misspelt one, at its depth (``session.modle``:
    ``session.model``; ``sesion``: ``session``)."""
    import difflib

    known: list[str] = []

    def walk(data: dict, prefix: str) -> None:
        for name, value in data.items():
            known.append(prefix + name)
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}.")

    walk(AcaConfig().model_dump(), "")
    if key.startswith("providers.") and key.count(".") == 2:  # a provider's own keys
        walk(ProviderSection().model_dump(), f"providers.{key.split('.')[1]}.")
    same_depth = [k for k in known if k.count(".") == key.count(".")]
    # A key with its unit left off (`approval.timeout`) is that key, not a lookalike.
    with_unit = [k for k in same_depth if k.startswith(f"{key}_")]
    close = with_unit or difflib.get_close_matches(key, same_depth, n=1, cutoff=0.8)
    return f"did you mean '{close[0]}'?" if close else None


def source_of(key: str, sources: dict[str, str]) -> str | None:
    """Where ``key``'s value came from: its own entry in ``sources``, the table it is part of
    (a price table), or the keys set under it: a misspelt section (``[sesion]``,
    ``ACA_SESION__MAX_PARALLEL``) is no key of its own."""
    if key in sources:
        return sources[key]
    related = (s for k, s in sources.items() if key.startswith(k + ".") or k.startswith(key + "."))
    return ", ".join(dict.fromkeys(related)) or None  # each source once, in order


# What pydantic converts but a file must not hold: a value of another type.
_LOOSE_TYPE_ERRORS = ("int_type", "float_type", "bool_type", "string_type")


def _loose_types(values: dict[str, Any], origin: str) -> dict[str, str]:
    """The values of a file (or block) of the wrong type, by key, described: pydantic read
    `network = "yes"` as true and `max_turns = true` as 1. Environment variables are text,
    and converted: they are not read here."""
    try:
        AcaConfig.model_validate(values, strict=True)
    except ValidationError as exc:
        return {
            ".".join(map(str, err["loc"])): (
                f"'{'.'.join(map(str, err['loc']))}' (from {origin}): {err['msg']}, not "
                f"{json.dumps(err['input'], default=str)}"
            )
            for err in exc.errors()
            if err["type"] in _LOOSE_TYPE_ERRORS
        }
    return {}


def _describe(
    exc: ValidationError | None,
    file: Path | None,
    sources: dict[str, str],
    loose: dict[str, str] | None = None,
) -> str:
    lines = []
    told: set[str] = set()
    for err in exc.errors() if exc is not None else ():
        key = ".".join(str(p) for p in err["loc"])
        told.add(key)
        origin = source_of(key, sources) or (str(file) if file else "defaults")
        if err["type"] == "extra_forbidden":
            if key in REMOVED_KEYS:
                lines.append(f"unknown key '{key}' (from {origin}): {REMOVED_KEYS[key]}")
            else:
                guess = _did_you_mean(key)
                lines.append(
                    f"unknown key '{key}' (from {origin}" + (f"; {guess})" if guess else ")")
                )
        else:
            lines.append(f"'{key}' (from {origin}): {err['msg']}")
    lines += [said for key, said in (loose or {}).items() if key not in told]
    listed = "; ".join(lines)
    return (
        f"configuration is invalid: {listed}. Remove or correct these keys; "
        # Not `aca config show`: it reads the same configuration, and refuses it the same way.
        "docs/configuration.md lists every valid key."
    )
