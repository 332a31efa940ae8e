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
# (section, key) -> what a value above the user's (or the default) would do; a lower one is
# stricter, kept. A budget nobody set (None) is no limit: any value is stricter.
CEILINGS: dict[tuple[str, str], str] = {
    ("session", "budget_usd"): "raise your budget for the run",
    ("claude_code", "max_budget_usd_per_task"): "raise your budget for a task",
    ("rate_limiting", "max_tokens_per_session"): "raise your token budget per usage block",
    ("sandbox", "cpu_seconds"): "raise the CPU time an agent command may take",
    ("sandbox", "memory_mb"): "raise the memory an agent command may take",
    ("sandbox", "file_size_mb"): "raise the size of a file an agent command may write",
    ("sandbox", "max_processes"): "raise the processes an agent command may start",
    ("agent", "command_timeout_seconds"): "raise how long an agent command may run",
    ("agent", "command_output_limit_bytes"): "raise how much output an agent command may send "
    "the model",
}
# The deny list: dropping an entry is weaker; adding one is stricter, kept.
_DENY = ("agent", "deny_commands")
# [providers.<name>]: base_url is where the provider's key is sent, api_key_secret which
# Secret block is sent there (another of yours: a GitHub token, another team's key).
_BASE_URL = "send your provider key to another server"
_KEY_SECRET = "choose which of your Prefect Secret blocks is sent as your provider key"
# A price below the published one makes a budget (--budget) count less than is spent.
_PRICE = "price a model below its published price (a budget would count less than is spent)"


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
    settings), each limit or budget raised above it, a deny list missing one of its commands,
    and a price below a published one; return one line for each, saying how to allow it."""
    ignored = []
    for (section, key), effect in GUARDED.items():
        table = data.get(section)
        default = getattr(getattr(defaults, section), key)
        if isinstance(table, dict) and key in table and table[key] != default:
            value = table.pop(key)
            ignored.append(_line(f"[{section}] {key} = {json.dumps(value)}", effect, section, key))
    for (section, key), effect in CEILINGS.items():
        table = data.get(section)
        value = table.get(key) if isinstance(table, dict) else None
        limit = getattr(getattr(defaults, section), key)
        if _is_number(value) and limit is not None and value > limit:
            ignored.append(_line(f"[{section}] {key} = {table.pop(key)}", effect, section, key))
    ignored += _drop_shorter_deny_list(data, getattr(defaults, _DENY[0]))
    for name, table in (data.get("providers") or {}).items():
        if not isinstance(table, dict):
            continue
        for key, effect in (("base_url", _BASE_URL), ("api_key_secret", _KEY_SECRET)):
            if table.get(key) is not None:
                setting = f"[providers.{name}] {key} = {json.dumps(table.pop(key))}"
                ignored.append(_line(setting, effect, f"providers__{name}", key))
        ignored += _drop_lower_prices(name, table)
    return [f"{file}: {line}" for line in ignored]


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


def _drop_lower_prices(name: str, provider: dict[str, Any]) -> list[str]:
    """Take out of ``provider`` each price below the published price of a model it would
    price: that model itself, a dated version of it, or (a prefix) every model it begins."""
    # Imported here: pricing's table lives with the providers, which import the settings.
    from aca_flows.providers.pricing import DEFAULT_PRICES

    prices = provider.get("prices")
    lines = []
    for model, price in list(prices.items()) if isinstance(prices, dict) else []:
        covered = [
            published
            for known, published in DEFAULT_PRICES.items()
            if known.startswith(model) or model.startswith(known)
        ]
        # A field left out is 0 (cache_read, cache_write): below a published one too.
        given = price if isinstance(price, dict) else {}
        if any(
            _is_number(v := given.get(field, 0)) and v < getattr(published, field)
            for published in covered
            for field in type(published).model_fields
        ):
            del prices[model]
            setting = f"[providers.{name}.prices] {json.dumps(model)} = {json.dumps(price)}"
            lines.append(_line(setting, _PRICE))
    return lines


def _line(setting: str, effect: str, section: str = "", key: str = "") -> str:
    # A price has no variable of its own (a model's name is not one): only a file of yours.
    variable = f"ACA_{section.upper()}__{key.upper()}, or " if section else ""
    return (
        f"ignored {setting}: a cloned repository's config may not {effect}. To allow it, set "
        f"it yourself: {variable}--config naming a file of yours, outside the clone."
    )
