"""What a cloned repository's own config may not set: the sandbox's reach, and what runs or
where keys go outside it.

A run of ``--repo URL`` (and a deployment run given ``repo``) works in a checkout aca cloned
(``aca.workingarea = true`` in its git config) and reads that checkout's ``aca.toml`` or
``.aca/config.toml`` like any other, for the project's own settings. Whoever can push to the
URL writes that file, so there it may not weaken what confines the agent: such a value is left
out, and said (``LoadedConfig.ignored``). So it is from any file of the clone, however named:
``--config`` and a deployment run's ``config_file`` (whoever requests the run chooses it, and
aca's working area is an allowed folder). The user's own settings are untouched: an ``ACA_*``
variable, a flag, ``--config`` naming a file outside the clone set these keys as ever, and
``~/.aca/config.toml`` is read under the clone's file, which may only tighten what it sets
(a budget, a limit, the deny list).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aca_flows.prices import DEFAULT_PRICES, PRICED_BY_TABLE, price_for

__all__ = [
    "WORKING_AREA_KEY",
    "drop_weakening_keys",
    "in_cloned_working_area",
    "is_cloned_working_area",
]

# Set by aca in the git config of a checkout it cloned for --repo (workspace/remote.py).
WORKING_AREA_KEY = "aca.workingarea"
_MARKED = re.compile(r"(?im)^\s*\[aca\]\s*$(?:(?!^\s*\[)[\s\S])*?^\s*workingarea\s*=\s*true\s*$")

# (section, key) -> what the repository's value, other than the default, would do.
GUARDED: dict[tuple[str, str], str] = {
    ("sandbox", "mode"): "run agent commands unsandboxed",
    ("sandbox", "network"): "give agent commands the network",
    ("sandbox", "env"): "pass your environment's variables into the sandbox",
    ("sandbox", "read_only_paths"): "show your files inside the sandbox",
    ("claude_code", "cli_path"): "run a program of its choosing as claude",
    ("claude_code", "permission_mode"): "change Claude Code's permissions",
    ("claude_code", "allowed_tools"): "offer Claude Code other tools",
    ("approval", "on_timeout"): "approve a plan nobody approved (--require-approval)",
    # A block name: which of the Prefect server's secrets aca reads and sends where it goes.
    ("github", "token_secret"): "choose which of your Prefect Secret blocks is sent as your "
    "GitHub token",
}
# The rate limits, in [rate_limiting] and in a provider's own [providers.<name>.rate_limiting].
RATE_LIMITS = (
    "max_requests_per_minute",
    "max_tokens_per_minute",
    "burst_allowance",
    "max_concurrent_requests",
)
# (section, key) -> what a value above the user's (or the default) would do; a lower one is
# stricter, kept. A budget nobody set (None) is no limit: any value is stricter.
CEILINGS: dict[tuple[str, str], str] = {
    ("session", "budget_usd"): "raise your budget for the run",
    ("claude_code", "max_budget_usd_per_task"): "raise your budget for a task",
    ("rate_limiting", "max_tokens_per_session"): "raise your token budget per usage block",
    ("sandbox", "cpu_seconds"): "raise the CPU time an agent command may take",
    ("sandbox", "memory_mb"): "raise the memory an agent command may take",
    ("sandbox", "file_size_mb"): "raise the size of a file an agent command may write",
    ("sandbox", "tmp_size_mb"): "raise the memory an agent command's /tmp may take",
    ("sandbox", "max_processes"): "raise the processes an agent command may start",
    ("agent", "command_timeout_seconds"): "raise how long an agent command may run",
    ("agent", "command_output_limit_bytes"): "raise how much output an agent command may send "
    "the model",
    # Each of these multiplies the paid calls a task may make, or how fast they are made.
    ("session", "max_attempts"): "raise how many times a task is attempted",
    ("session", "max_concurrent_tasks"): "raise how many tasks (agents, paid calls) run at once",
    ("session", "call_retries"): "raise how many times a failed provider call is made again",
    ("agent", "max_turns"): "raise how many turns (paid calls) an agent may take",
    ("agent", "max_fix_attempts"): "raise how many times an agent may fix a failed check",
    ("claude_code", "max_turns"): "raise how many turns Claude Code may take",
    **{("rate_limiting", key): f"raise your rate limit ({key})" for key in RATE_LIMITS},
    # [providers.<name>]: the output a call may ask for, paid by the token.
    ("providers", "max_tokens"): "raise the output (paid tokens) a call may ask for",
}
# (section, key) -> its values, strictest first: a value looser than the user's is left out.
ORDERED: dict[tuple[str, str], tuple[str, ...]] = {
    ("rate_limiting", "on_session_limit"): ("stop", "wait"),
    ("rate_limiting", "prefect_limits"): ("require", "auto", "off"),
}
# The deny list: dropping an entry is weaker; adding one is stricter, kept.
_DENY = ("agent", "deny_commands")
# [providers.<name>]: base_url is where the provider's key is sent, api_key_secret which
# Secret block is sent there (another of yours: a GitHub token, another team's key).
_BASE_URL = "send your provider key to another server"
_KEY_SECRET = "choose which of your Prefect Secret blocks is sent as your provider key"
# A price below the published one (or the user's own) makes a budget (--budget) count less
# than is spent; a price for a model with none published, whatever the repository says.
_PRICE = "price a model below its published price (a budget would count less than is spent)"
_YOUR_PRICE = "price a model below your price (a budget would count less than is spent)"
_NEW_PRICE = (
    "price a model with no published price (a budget would count what the repository says "
    "its calls cost)"
)
# A model nobody priced: its calls count $0, so a run with a budget would be refused.
_MODEL = "choose a model with no published price (its calls cannot be counted against a budget)"


def in_cloned_working_area(file: Path) -> bool:
    """Whether ``file`` is inside a checkout aca cloned for ``--repo``: the repository's, by
    whatever path it is named (its ``aca.toml``, or ``--config`` or a deployment run's
    ``config_file`` naming a file of the clone)."""
    # By the path as named and the path it resolves to: a link in the clone, or to it.
    named, real = Path(file).absolute(), Path(file).resolve()
    return any(is_cloned_working_area(folder) for folder in {*named.parents, *real.parents})


def is_cloned_working_area(workdir: Path) -> bool:
    """Whether ``workdir`` is a checkout aca cloned for ``--repo`` (its own git config says
    so: a clone's files cannot)."""
    try:
        return _MARKED.search((workdir / ".git" / "config").read_text(errors="replace")) is not None
    except OSError:  # no .git folder: a plain folder, or a worktree's .git file
        return False


def drop_weakening_keys(data: dict[str, Any], file: Path, defaults: Any) -> list[str]:
    """Take out of ``data`` (the TOML of ``file``, a cloned repository's config) each guarded
    key set to anything but its value in ``defaults`` (an ``AcaConfig``: the user's own
    settings), each limit or budget raised above it (a rate limit, turns, attempts included),
    a deny list missing one of its commands, a model with no price, and a price below a
    published one or the user's, or of a model with none; return one line for each, saying
    how to allow it."""
    ignored = []
    for (section, key), effect in GUARDED.items():
        table = data.get(section)
        default = getattr(getattr(defaults, section), key)
        if isinstance(table, dict) and key in table and table[key] != default:
            value = table.pop(key)
            ignored.append(_line(f"[{section}] {key} = {json.dumps(value)}", effect, section, key))
    for section in dict.fromkeys(section for section, _ in [*CEILINGS, *ORDERED]):
        if section != "providers":  # each provider's own table, below
            ignored += _drop_loosened(data.get(section), section, getattr(defaults, section))
    ignored += _drop_shorter_deny_list(data, getattr(defaults, _DENY[0]))
    session = data.get("session")
    if isinstance(session, dict):
        provider = session.get("provider", defaults.session.provider)
        ignored += _drop_unpriced_model(session, "session", provider, defaults)
    for name, table in (data.get("providers") or {}).items():
        if not isinstance(table, dict):
            continue
        for key, effect in (("base_url", _BASE_URL), ("api_key_secret", _KEY_SECRET)):
            if table.get(key) is not None:
                setting = f"[providers.{name}] {key} = {json.dumps(table.pop(key))}"
                ignored.append(_line(setting, effect, f"providers__{name}", key))
        ignored += _drop_unpriced_model(table, f"providers.{name}", name, defaults)
        ignored += _drop_loosened(table, f"providers.{name}", defaults.provider(name))
        ignored += _drop_loosened_provider_limits(table.get("rate_limiting"), name, defaults)
        ignored += _drop_lower_prices(name, table, defaults.provider(name).prices)
    return [f"{file}: {line}" for line in ignored]


def _drop_loosened(table: Any, section: str, users: Any) -> list[str]:
    """Take out of ``table`` (the clone's ``[section]``) each limit of ``CEILINGS`` raised
    above ``users`` (the user's section), and each value of ``ORDERED`` looser than theirs."""
    if not isinstance(table, dict):
        return []
    kind = "rate_limiting" if section.endswith("rate_limiting") else section.split(".")[0]
    variable = section.replace(".", "__")
    ignored = []
    for (of, key), effect in CEILINGS.items():
        value, limit = table.get(key), getattr(users, key, None)
        if of == kind and _is_number(value) and limit is not None and value > limit:
            ignored.append(_line(f"[{section}] {key} = {table.pop(key)}", effect, variable, key))
    for (of, key), values in ORDERED.items():
        value, users_value = table.get(key), getattr(users, key, None)
        if of == kind and value in values and values.index(value) > values.index(users_value):
            setting = f"[{section}] {key} = {json.dumps(table.pop(key))}"
            effect = f"loosen your {key} ({json.dumps(users_value)})"
            ignored.append(_line(setting, effect, variable, key))
    return ignored


def _drop_loosened_provider_limits(limits: Any, name: str, defaults: Any) -> list[str]:
    """A provider's own ``[providers.<name>.rate_limiting]`` is the one its calls keep, in
    place of ``[rate_limiting]``: judged against the user's limits for that provider, and
    given the ones the user set that it leaves out (else they would be lost, not tightened)."""
    if not isinstance(limits, dict):
        return []
    users = defaults.rate_limits(name)
    ignored = _drop_loosened(limits, f"providers.{name}.rate_limiting", users)
    for key in (defaults.provider(name).rate_limiting or defaults.rate_limiting).model_fields_set:
        limits.setdefault(key, getattr(users, key))
    return ignored


def _is_number(value: Any) -> bool:
    # Anything else is left for the config's validation to name.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _drop_shorter_deny_list(data: dict[str, Any], section_defaults: Any) -> list[str]:
    section, key = _DENY
    table = data.get(section)
    value = table.get(key) if isinstance(table, dict) else None
    if not isinstance(value, list):
        return []
    missing = set(getattr(section_defaults, key)) - {str(entry).strip() for entry in value}
    if not missing:
        return []
    table.pop(key)
    effect = f"take commands off the deny list ({', '.join(sorted(missing))})"
    return [_line(f"[{section}] {key} = {json.dumps(value)}", effect, section, key)]


def _drop_unpriced_model(
    table: dict[str, Any], section: str, provider: Any, defaults: Any
) -> list[str]:
    """Take ``model`` out of ``table`` (``[session]`` or ``[providers.<provider>]``) when it
    is not the user's, and ``provider`` prices its calls from aca's table, which has no price
    for it, nor has the user: its calls would count $0, a run with a budget is refused."""
    model = table.get("model")
    users = defaults.session.model if section == "session" else defaults.provider(provider).model
    if not isinstance(model, str) or model == users or provider not in PRICED_BY_TABLE:
        return []
    if price_for(model, defaults.provider(provider).prices) is not None:
        return []
    del table["model"]
    setting = f"[{section}] model = {json.dumps(model)}"
    return [_line(setting, _MODEL, section.replace(".", "__"), "model")]


def _drop_lower_prices(name: str, provider: dict[str, Any], users: dict[str, Any]) -> list[str]:
    """Take out of ``provider`` each price below the published price, or the user's own
    (``users``), of a model it would price: that model itself, a dated version of it, or (a
    prefix) every model it begins; and each price of a model that has neither."""
    prices = provider.get("prices")
    lines = []
    for model, price in list(prices.items()) if isinstance(prices, dict) else []:
        covered = {
            effect: [
                known_price
                for known, known_price in table.items()
                if known.startswith(model) or model.startswith(known)
            ]
            for effect, table in ((_PRICE, DEFAULT_PRICES), (_YOUR_PRICE, users))
        }
        # A field left out is 0 (cache_read, cache_write): below a published one too.
        given = price if isinstance(price, dict) else {}
        below = [
            effect
            for effect, known_prices in covered.items()
            if any(
                _is_number(v := given.get(field, 0)) and v < getattr(known, field)
                for known in known_prices
                for field in type(known).model_fields
            )
        ]
        if below or not any(covered.values()):
            del prices[model]
            setting = f"[providers.{name}.prices] {json.dumps(model)} = {json.dumps(price)}"
            lines.append(_line(setting, below[0] if below else _NEW_PRICE))
    return lines


def _line(setting: str, effect: str, section: str = "", key: str = "") -> str:
    # A price has no variable of its own (a model's name is not one): only a file of yours.
    variable = f"ACA_{section.upper()}__{key.upper()}, or " if section else ""
    return (
        f"ignored {setting}: a cloned repository's config may not {effect}. To allow it, set "
        f"it yourself: {variable}--config naming a file of yours, outside the clone."
    )
