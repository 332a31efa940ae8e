"""aca's own files in a task's work: the configuration it reads from the repository, and ``.aca``.

aca reads its configuration from the repository it runs in (``<workdir>/aca.toml``,
``<workdir>/.aca/config.toml``: ``config_loader.config_candidates``) and keeps its sessions, jobs
and locks in ``.aca/``. An agent that commits one of them — ``.aca/`` is ignored only through
``.git/info/exclude``, which a committed ``.gitignore`` with ``!.aca/`` overrides — changes
every later run on the branch once it is merged: ``[sandbox] mode = "off"``,
``network = true``, another permission mode for Claude Code. As with a link out of the
repository (``links.py``), such a change is never committed: the task fails, naming the files.
Any change counts (a new file, an edit, a deletion), and names are compared without case, as a
case-insensitive file system (macOS) would open them.
"""

from __future__ import annotations

from pathlib import Path

from aca_flows._words import listed
from aca_flows.config_loader import config_candidates

__all__ = [
    "aca_files_problem",
    "case_variants_problem",
    "host_read_files_problem",
    "is_aca_file",
]

ACA_FOLDER = ".aca"
_SHOWN = 5


def is_aca_file(path: str) -> bool:
    """Whether ``path`` (relative to the repository's root, as git names it) is one of aca's
    own files: a configuration file aca reads from the repository, or under ``.aca``."""
    name = path.strip("/").lower()
    return name == ACA_FOLDER or name.startswith(f"{ACA_FOLDER}/") or name in _config_names()


def aca_files_problem(changed_files: list[str]) -> str | None:
    """Why the changed files cannot be committed, when some are aca's own; ``None`` when none
    is."""
    own = [path for path in changed_files if is_aca_file(path)]
    if not own:
        return None
    shown = listed(own, _SHOWN)
    return (
        f"the agent changed aca's own files ({shown}); aca commits none of them, since aca "
        "reads its configuration (its sandbox, the network, permissions) and its sessions from "
        "them in every later run once the branch is merged; nothing was committed. Leave "
        "aca.toml and .aca/ out of the task (change them yourself if they need a change) and "
        "run it again."
    )


# What Claude Code protects in a worktree (its settings and hooks, MCP servers, direnv's and
# the editor's files run on opening the folder), in the case it reads them on Linux. An agent's
# ``.Claude/settings.json`` passes that protection, and a case-insensitive checkout (macOS,
# Windows) opens it as ``.claude/settings.json``, hooks and all.
_TOOL_FILES = (".claude", ".mcp.json", ".envrc", ".vscode")


def case_variants_problem(changed_files: list[str]) -> str | None:
    """Why the changed files cannot be committed, when some spell a tool's own file or folder
    (``_TOOL_FILES``) in another case; ``None`` when none does."""
    variants = [
        path
        for path in changed_files
        if (first := path.strip("/").split("/", 1)[0]).lower() in _TOOL_FILES
        and first not in _TOOL_FILES
    ]
    if not variants:
        return None
    return (
        f"the agent wrote {listed(variants, _SHOWN)}: a tool's own file in another case "
        "(a case-insensitive checkout, on macOS or Windows, opens it as that file, with the "
        "settings or hooks it holds); nothing was committed. Spell it as the tool does, or "
        "leave it out, and run the task again."
    )


# What a driver you configured reads from the worktree when aca's own git checks a later
# task's work out, on the host, outside every sandbox: git-lfs's `.lfsconfig` names the server
# it fetches from (an agent's URL there took data out through the host's network).
_HOST_READ_FILES = (".lfsconfig",)


def host_read_files_problem(changed_files: list[str]) -> str | None:
    """Why the changed files cannot be committed, when some configure a program aca's git
    runs on the host (``_HOST_READ_FILES``); ``None`` when none does."""
    found = [path for path in changed_files if path.strip("/").lower() in _HOST_READ_FILES]
    if not found:
        return None
    return (
        f"the agent changed {listed(found, _SHOWN)}, which git-lfs reads outside the sandbox "
        "when aca checks out the work of later tasks (it names the server LFS fetches from); "
        "nothing was committed. Leave it out of the task (change it yourself if it needs a "
        "change) and run it again."
    )


def _config_names() -> set[str]:
    """The configuration files aca reads from a repository, relative to its root."""
    root = Path("/repository")
    return {
        path.relative_to(root).as_posix().lower()
        for path in config_candidates(root)
        if path.is_relative_to(root)
    }
