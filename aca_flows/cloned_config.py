"""What a cloned repository's own config may not set: the sandbox's reach, and what runs or
where keys go outside it.

A run of ``--repo URL`` (and a deployment run given ``repo``) works in a checkout aca cloned
(``aca.workingarea = true`` in its git config) and reads that checkout's ``aca.toml`` or
``.aca/config.toml`` like any other, for the project's own settings. Whoever can push to the
URL writes that file, so there it may not weaken what confines the agent: such a value is left
out, and said (``LoadedConfig.ignored``). So it is from any file of the clone, however named:
``--config`` and a deployment run's ``config_file`` (whoever requests the run chooses it, and
aca's working area is an allowed folder). The user's own settings are untouched: an ``ACA_*``
variable, a flag, ``--config`` naming a file outside the clone, and ``~/.aca/config.toml``
(read when the clone has no config) set these keys as ever.
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
}
# [providers.<name>] base_url: where the provider's key is sent.
_BASE_URL = "send your provider key to another server"


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
    key set to anything but its value in ``defaults`` (an ``AcaConfig``); return one line for
    each, saying how to allow it."""
    ignored = []
    for (section, key), effect in GUARDED.items():
        table = data.get(section)
        default = getattr(getattr(defaults, section), key)
        if isinstance(table, dict) and key in table and table[key] != default:
            value = table.pop(key)
            ignored.append(_line(f"[{section}] {key} = {json.dumps(value)}", effect, section, key))
    for name, table in (data.get("providers") or {}).items():
        if isinstance(table, dict) and table.get("base_url") is not None:
            setting = f"[providers.{name}] base_url = {json.dumps(table.pop('base_url'))}"
            ignored.append(_line(setting, _BASE_URL, f"providers__{name}", "base_url"))
    return [f"{file}: {line}" for line in ignored]


def _line(setting: str, effect: str, section: str, key: str) -> str:
    return (
        f"ignored {setting}: a cloned repository's config may not {effect}. To allow it, set "
        f"it yourself: ACA_{section.upper()}__{key.upper()}, or --config naming a file of "
        "yours, outside the clone."
    )
